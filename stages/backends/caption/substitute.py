"""A VLM's description of an image -> a caption with the personal tokens in it.

The rule (Gen4Gen replaced class nouns by tokens but never said how):
- a concept is mentioned by its class noun or one of its recipe `aliases`, in any case, singular
  or plural (`cat`, `Cats`, `puppies` for `puppy`; irregular plurals are aliases), the longest
  word first (`coffee mug` before `mug`), never inside another word, a hyphenated compound
  (`dog-shaped`) or a token;
- each mention becomes the concept's name in the recipe's token style (`<cat1>` or `<cat1> cat`);
- when several concepts share a word, the layout decides: a position word in the mention's
  clause (`the cat on the left`, `the right cat`, `stages.backends.caption.cues`) picks the
  concept standing there; a group mention (`two cats`, `both cats`, `cats`) names all of them;
  otherwise a mention takes the leftmost concept not yet named (one a position word elsewhere
  names waits for that mention), or once all are named the one named last. A mention that no
  position word decides counts as ambiguous (reported) when several concepts could be meant, or
  when it may point back to one named before ("the dog", not "another dog");
- a concept never mentioned is added in a short clause (`..., with <mug1>.`), never dropped;
- the caption must fit CLIP's context (77 tokens with start and end, the real CLIP BPE): when
  it does not, it is cut after its last whole sentence that fits, and a concept cut away is
  added by the clause like one never mentioned.
"""

from __future__ import annotations

import bisect
import os
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import regex

from base.untrusted import ESCAPED_CATEGORIES
from stages.backends.caption.clip_bpe import tokenizer
from stages.backends.caption.cues import introduces, mention_cue, place

CLIP_CONTEXT = 77  # tokens, with the start and end tokens
COUNT_WORDS = r"two|three|four|five|both|2|3|4|5"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
HYPHENS = "-\u2010\u2011"
INVISIBLE = regex.compile("[" + "".join(rf"\p{{{category}}}" for category in ESCAPED_CATEGORIES) + "]")
QUOTES = {'"': '"', "'": "'", "`": "`", "\u201c": "\u201d", "\u2018": "\u2019"}


@dataclass
class Recaption:
    caption: str
    not_mentioned: list[str] = field(default_factory=list)  # concepts the reply never named
    added: list[str] = field(default_factory=list)  # concepts named by the clause (not mentioned, or cut away)
    ambiguous: int = 0  # mentions of a shared word no position word placed
    cut: bool = False  # text dropped to fit CLIP's context
    clip_tokens: int = 0


def clip_token_count(text: str) -> int:
    """Tokens CLIP's text encoder sees for `text`, start and end included (the real CLIP BPE; a
    personal token counts as the word pieces it is spelled with, as a tokenizer that has not
    learnt it reads it)."""
    return len(tokenizer().encode(text)) + 2


def clean(reply: str) -> str:
    """One line of plain text: compatibility forms folded (NFKC: full-width letters), control and
    format characters dropped, whitespace collapsed, one pair of quotes around the whole reply
    removed."""
    text = " ".join(unicodedata.normalize("NFKC", reply).split())
    text = " ".join(INVISIBLE.sub("", text).split())
    if len(text) > 1 and QUOTES.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    return text


def _word_pattern(word: str) -> str:
    """`word` (one or more words) with its last word in singular or plural form."""
    *head, last = word.lower().split()
    if len(last) > 1 and last.endswith("y") and last[-2] not in "aeiou":
        plural = re.escape(last[:-1]) + "(?:y|ies)"
    else:
        plural = re.escape(last) + "(?:es|s)?"
    return r"\s+".join([re.escape(w) for w in head] + [plural])


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


Span = tuple[int, str]  # (where a substituted name ends in the text, concept id)


def _shared_words(concepts: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each naming word (lower case, spaces collapsed) -> the concepts it names, left to right."""
    words: dict[str, list[dict[str, Any]]] = {}
    for concept in concepts:
        for word in [concept["class_noun"], *concept.get("aliases", [])]:
            key = " ".join(word.lower().split())
            if key and concept not in words.setdefault(key, []):
                words[key].append(concept)
    return words


def substitute(reply: str, concepts: list[dict[str, Any]]) -> tuple[str, list[Span], int]:
    """(text with every mention replaced, where each concept was named, ambiguous mentions).
    `concepts` are left to right, each with `id`, `name` (its token-style name), `class_noun`,
    `aliases`, `position`."""
    words = _shared_words(concepts)
    ordered = sorted(words, key=lambda w: (-len(w), w))
    if not ordered:
        return reply, [], 0
    patterns = {w: re.compile(_word_pattern(w) + r"\Z", re.IGNORECASE) for w in ordered}
    mention = re.compile(rf"(?<![\w<])(?<!\w[{HYPHENS}])(?:(?P<count>{COUNT_WORDS})\s+)?(?P<noun>"
                         + "|".join(_word_pattern(w) for w in ordered) + rf")(?![\w>])(?![{HYPHENS}]\w)",
                         re.IGNORECASE)
    matches = list(mention.finditer(reply))
    said = [next(w for w in ordered if patterns[w].match(m.group("noun"))) for m in matches]
    groups = [words[word] for word in said]
    bounds = [(m.start("noun"), m.end()) for m in matches]
    placed = [place(mention_cue(reply, bounds, i), group) if len(group) > 1 else None
              for i, group in enumerate(groups)]
    claimed = {c["id"] for c in placed if c}  # a concept some position word names waits for that mention
    recent: dict[str, int] = {}  # concept id -> the mention that named it last
    ambiguous = 0
    out: list[str] = []
    length, done, spans = 0, 0, []
    for index, (match, word, group, here) in enumerate(zip(matches, said, groups, placed)):
        plural = match.group("noun").lower().split()[-1] != word.split()[-1]
        targets = group
        if len(group) > 1 and not plural:
            unnamed = [c for c in group if c["id"] not in recent]
            pool = [c for c in unnamed if c["id"] not in claimed] or unnamed
            targets = [here or (pool[0] if pool else max(group, key=lambda c: recent[c["id"]]))]
            named_before = any(c["id"] in recent for c in group)
            ambiguous += not here and (len(pool) != 1 or named_before and not introduces(reply, match.start()))
        keep_count = match.group("count") and len(targets) == 1 and not plural
        piece = reply[done:match.start("noun") if keep_count else match.start()]
        for position, concept in enumerate(targets):
            if position:
                piece += " and " if position == len(targets) - 1 else ", "
            piece += concept["name"]
            spans.append((length + len(piece), concept["id"]))
            recent[concept["id"]] = index
        out.append(piece)
        length += len(piece)
        done = match.end()
    out.append(reply[done:])
    return "".join(out), spans, ambiguous


def _with_clause(text: str, missing: list[dict[str, Any]]) -> str:
    if not missing:
        return text
    body = text.rstrip().rstrip(".!?,;:").rstrip()
    clause = f"with {_join([c['name'] for c in missing])}."
    return f"{body}, {clause}" if body else clause[0].upper() + clause[1:]


def _cuts(text: str) -> tuple[list[int], int]:
    """(where the caption may end, longest first: the whole text, after each sentence, then
    inside the first sentence before each word, then nothing; where the first sentence ends)."""
    ends = [m.end() for m in SENTENCE_END.finditer(text)] + [len(text)]
    words = [m.start() for m in re.finditer(r"\s\S", text[:ends[0]])]
    return sorted(set(ends), reverse=True) + words[::-1] + [0], ends[0]


def recaption(reply: str, concepts: list[dict[str, Any]]) -> Recaption:
    """The caption for a VLM reply: tokens substituted, every concept present, within CLIP's
    context (see the module docstring). The text is tokenised once, as far as the context
    reaches; a cut is counted as the tokens before its last space plus its short tail."""
    text, spans, ambiguous = substitute(clean(reply), concepts)
    not_mentioned = [c["id"] for c in concepts if c["id"] not in {i for _, i in spans}]
    budget = CLIP_CONTEXT - 2
    chunks = list(tokenizer().chunk_counts(text, budget))  # (where a chunk ends, tokens up to there)
    chunk_ends = [end for end, _ in chunks]
    span_ends = [end for end, _ in spans]
    counted_to = chunk_ends[-1] + 1 if chunks and chunks[-1][1] > budget else len(text)  # past it: too long
    cuts, first_end = _cuts(text)
    for length in cuts:
        whole = bisect.bisect_right(chunk_ends, length) - 1  # chunks of text[:length] less its last: all kept
        if length > counted_to or whole > 0 and chunks[whole - 1][1] > budget:
            continue
        kept = text[:length].rstrip()
        named = {i for _, i in spans[:bisect.bisect_right(span_ends, len(kept))]}
        added = [c for c in concepts if c["id"] not in named]
        if length < first_end and kept:  # inside the first sentence: end it cleanly
            kept = kept.rstrip(",;:") + "."
        caption = _with_clause(kept, added)
        space = caption.rfind(" ", 0, len(os.path.commonprefix([caption, text]))) + 1
        before = bisect.bisect_right(chunk_ends, space)
        prefix = chunks[before - 1][1] if before else 0
        if prefix > budget or prefix + tokenizer().count(caption[space:], budget) > budget:
            continue
        tokens = clip_token_count(caption)
        if tokens <= CLIP_CONTEXT:
            return Recaption(caption, not_mentioned, [c["id"] for c in added], ambiguous, length < len(text), tokens)
    raise ValueError(f"the concepts' names alone take more than CLIP's {CLIP_CONTEXT} tokens")
