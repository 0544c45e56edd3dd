"""A VLM's description of an image -> a caption with the personal tokens in it.

The rule (Gen4Gen replaced class nouns by tokens but never said how):
- a concept is mentioned by its class noun or one of its recipe `aliases`, in any case, singular
  or plural (`cat`, `Cats`, `puppies` for `puppy`; irregular plurals are aliases), the longest
  word first (`coffee mug` before `mug`), never inside another word or a token;
- each mention becomes the concept's name in the recipe's token style (`<cat1>` or `<cat1> cat`);
- when several concepts share a word, the layout decides: a position word beside the mention
  (`the cat on the left`, `the right cat`) picks the concept standing there; otherwise mentions
  take the concepts left to right in the order they are first mentioned; a plural mention
  (`two cats`) names all of them not yet mentioned; a later mention with no cue goes to the
  last one named and is counted as ambiguous;
- a concept never mentioned is added in a short clause (`..., with <mug1>.`), never dropped;
- the caption must fit CLIP's context (77 tokens with start and end, the real CLIP BPE): when
  it does not, it is cut after its last whole sentence that fits, and a concept cut away is
  added by the clause like one never mentioned.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from stages.runtime.untrusted import ESCAPED_CATEGORIES

CLIP_CONTEXT = 77  # tokens, with the start and end tokens
COUNT_WORDS = r"two|three|four|five|both|2|3|4|5"
CUE_WORDS = {"left": "left", "leftmost": "left", "right": "right", "rightmost": "right",
             "center": "center", "centre": "center", "middle": "center", "central": "center"}
CUE_AFTER_CHARS = 40  # how far after a mention a position word still describes it
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class Recaption:
    caption: str
    not_mentioned: list[str] = field(default_factory=list)  # concepts the reply never named
    added: list[str] = field(default_factory=list)  # concepts named by the clause (not mentioned, or cut away)
    ambiguous: int = 0  # mentions of a shared word the layout could not place
    cut: bool = False  # text dropped to fit CLIP's context
    clip_tokens: int = 0


@functools.lru_cache(maxsize=1)
def _clip_tokenizer() -> Any:
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def clip_token_count(text: str) -> int:
    """Tokens CLIP's text encoder sees for `text`, start and end included (open_clip's copy of
    the real CLIP BPE; a personal token counts as the word pieces it is spelled with, as a
    tokenizer that has not learnt it reads it)."""
    return len(_clip_tokenizer().encode(text)) + 2


def clean(reply: str) -> str:
    """One line of plain text: control and format characters dropped, whitespace collapsed,
    quotes around the whole reply removed."""
    text = "".join(" " if ch.isspace() else ch for ch in reply
                   if ch.isspace() or unicodedata.category(ch) not in ESCAPED_CATEGORIES)
    return " ".join(text.split()).strip("\"'` ")


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


def _cue(text: str, start: int, end: int, next_start: int) -> str | None:
    """The position a mention's neighbourhood names: up to two words before it, or its own
    clause after it (until the next mention, a sentence end or CUE_AFTER_CHARS)."""
    before = re.findall(r"[a-z]+", text[max(0, start - 30):start].lower())[-2:]
    for word in reversed(before):
        if word in CUE_WORDS:
            return CUE_WORDS[word]
    after = text[end:min(next_start, end + CUE_AFTER_CHARS)]
    after = re.split(r"[.;!?]", after)[0].lower()
    for word in re.findall(r"[a-z]+", after):
        if word in CUE_WORDS:
            return CUE_WORDS[word]
    return None


Span = tuple[int, str]  # (where a substituted name ends in the text, concept id)


def substitute(reply: str, concepts: list[dict[str, Any]]) -> tuple[str, list[Span], int]:
    """(text with every mention replaced, where each concept was named, ambiguous mentions).
    `concepts` are left to right, each with `id`, `name` (its token-style name), `class_noun`,
    `aliases`, `position`."""
    words: dict[str, list[dict[str, Any]]] = {}
    for concept in concepts:
        for word in [concept["class_noun"], *concept.get("aliases", [])]:
            key = " ".join(word.lower().split())
            if key and concept not in words.setdefault(key, []):
                words[key].append(concept)
    ordered = sorted(words, key=lambda w: (-len(w), w))
    if not ordered:
        return reply, [], 0
    patterns = {w: re.compile(_word_pattern(w) + r"\Z", re.IGNORECASE) for w in ordered}
    mention = re.compile(r"(?<![\w<])(?:(?P<count>" + COUNT_WORDS + r")\s+)?(?P<noun>"
                         + "|".join(_word_pattern(w) for w in ordered) + r")(?![\w>])", re.IGNORECASE)
    matches = list(mention.finditer(reply))
    mentioned: set[str] = set()
    last: dict[str, dict[str, Any]] = {}
    ambiguous = 0
    out, spans, done = "", [], 0
    for index, match in enumerate(matches):
        noun = match.group("noun")
        word = next(w for w in ordered if patterns[w].match(noun))
        group = words[word]
        plural = noun.lower().split()[-1] != word.split()[-1]
        targets = group
        if len(group) > 1:
            next_start = matches[index + 1].start() if index + 1 < len(matches) else len(reply)
            cue = _cue(reply, match.start(), match.end(), next_start)
            placed = [c for c in group if c["position"] == cue]
            unnamed = [c for c in group if c["id"] not in mentioned]
            if cue and len(placed) == 1:
                targets = placed
            elif plural:
                targets = unnamed or group
            elif unnamed:
                targets = unnamed[:1]
            else:
                targets = [last.get(word, group[0])]
                ambiguous += 1
        keep_count = match.group("count") and len(targets) == 1 and not plural
        out += reply[done:match.start("noun") if keep_count else match.start()]
        for position, concept in enumerate(targets):
            if position:
                out += " and " if position == len(targets) - 1 else ", "
            out += concept["name"]
            spans.append((len(out), concept["id"]))
            mentioned.add(concept["id"])
            last[word] = concept
        done = match.end()
    return out + reply[done:], spans, ambiguous


def _with_clause(text: str, missing: list[dict[str, Any]]) -> str:
    if not missing:
        return text
    body = text.rstrip().rstrip(".!?,;:").rstrip()
    clause = f"with {_join([c['name'] for c in missing])}."
    return f"{body}, {clause}" if body else clause[0].upper() + clause[1:]


def recaption(reply: str, concepts: list[dict[str, Any]]) -> Recaption:
    """The caption for a VLM reply: tokens substituted, every concept present, within CLIP's
    context (see the module docstring)."""
    text, spans, ambiguous = substitute(clean(reply), concepts)
    not_mentioned = [c["id"] for c in concepts if c["id"] not in {i for _, i in spans}]
    ends = [m.end() for m in SENTENCE_END.finditer(text)] + [len(text)]  # after each sentence (and its space)
    cuts = [end for end in reversed(ends)]  # whole text first, then fewer sentences
    words = [m.start() for m in re.finditer(r"\s\S", text)][::-1]  # then the first sentence, word by word
    for length in cuts + [w for w in words if w < ends[0]] + [0]:
        kept = text[:length].rstrip()
        named = {i for end, i in spans if end <= len(kept)}
        added = [c for c in concepts if c["id"] not in named]
        if length < ends[0] and kept:  # inside the first sentence: end it cleanly
            kept = kept.rstrip(",;:") + "."
        caption = _with_clause(kept, added)
        tokens = clip_token_count(caption)
        if tokens <= CLIP_CONTEXT:
            return Recaption(caption, not_mentioned, [c["id"] for c in added], ambiguous, length < len(text), tokens)
    raise ValueError(f"the concepts' names alone take more than CLIP's {CLIP_CONTEXT} tokens")
