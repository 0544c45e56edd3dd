"""Position words that say where a mentioned object stands, read in the mention's own clause:
the words right after it (`the dog on the left`), then the word right before it (`the right
dog`), then the clause's start when no other mention stands between (`On the right is a dog`).
A window never crosses clause punctuation, and the adverb `right` (`right next to`) is no cue.
"""

from __future__ import annotations

import re
from typing import Any

POSITIONS = {"left": "left", "leftmost": "left", "right": "right", "rightmost": "right",
             "center": "center", "centre": "center", "middle": "center", "central": "center"}
CLAUSE_END = re.compile(r"[,;:.!?()\[\]\u2013\u2014]")  # , ; : . ! ? ( ) [ ] – —
WORD = re.compile(r"[^\W\d_]+")
POSITION_WORD = re.compile(r"\b(?:" + "|".join(POSITIONS) + r")\b", re.IGNORECASE)
AFTER_CHARS = 40  # how far after a mention its clause still describes it
BEFORE_CHARS = 40
# `right`/`left` followed by one of these and not preceded by a determiner is an adverb or a verb
# ("right next to", "left behind"), not a side
NOT_A_SIDE_BEFORE = {"next", "behind", "beside", "besides", "by", "in", "on", "at", "above", "below", "under", "over",
                     "near", "there", "here", "against", "up", "down", "into", "onto", "beneath", "underneath",
                     "alongside", "atop", "between", "before", "after", "away", "now", "across", "along",
                     "outside", "inside", "around", "through", "to", "toward", "towards", "out", "off", "alone"}
DETERMINERS = {"the", "a", "an", "its", "their", "his", "her", "far", "top", "bottom", "upper", "lower"}
NEW_ONE = {"a", "an", "another", "other", "second", "third", "one"}  # "another dog": not one named before
MARGIN = 30  # characters read around a position word to find its neighbours


def _cues(text: str, start: int, end: int) -> list[tuple[str, int, int]]:
    """(side, word start, word end) of every position word inside text[start:end]."""
    found = []
    for match in POSITION_WORD.finditer(text, start, end):
        word = match.group().lower()
        if word in ("left", "right"):
            following = WORD.search(text, match.end(), min(len(text), match.end() + MARGIN))
            preceding = WORD.findall(text, max(0, match.start() - MARGIN), match.start())
            if following and following.group().lower() in NOT_A_SIDE_BEFORE and \
                    (not preceding or preceding[-1].lower() not in DETERMINERS):
                continue
        found.append((POSITIONS[word], match.start(), match.end()))
    return found


def mention_cue(text: str, mentions: list[tuple[int, int]], index: int) -> str | None:
    """The side the clause of mention `index` gives it, or None."""
    start, end = mentions[index]
    followed = index + 1 < len(mentions)
    next_start = mentions[index + 1][0] if followed else len(text)
    previous_end = mentions[index - 1][1] if index else 0
    stop = min(next_start, end + AFTER_CHARS)
    punctuation = CLAUSE_END.search(text, end, stop)
    after_end = punctuation.start() if punctuation else stop
    for side, _, word_end in _cues(text, end, after_end):
        if followed and after_end == next_start and not text[word_end:next_start].strip():
            continue  # the next mention's own adjective ("... next to the right dog")
        return side
    begin = max(0, start - BEFORE_CHARS)
    clause = [m.end() for m in CLAUSE_END.finditer(text, begin, start)]
    begin = max([begin, *clause])
    before = _cues(text, begin, start)
    if before and not text[before[-1][2]:start].strip():
        return before[-1][0]  # right before it: "the right dog"
    if before and previous_end <= begin:
        return before[-1][0]  # no other mention in its clause before it: "On the right is a dog"
    return None


def place(side: str | None, group: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The one concept of `group` (left to right) that `side` names: the one standing there, or
    where none or several do, the leftmost, rightmost or (of an odd group) middle one."""
    if side is None:
        return None
    standing = [c for c in group if c["position"] == side]
    if len(standing) == 1:
        return standing[0]
    if side == "center":
        return group[len(group) // 2] if len(group) % 2 and len(group) > 1 else None
    return group[0] if side == "left" else group[-1]


def introduces(text: str, start: int) -> bool:
    """Whether the word before a mention at `start` introduces a new one ("a dog", "the other
    dog"), where "the dog" may point back to one already named."""
    before = WORD.findall(text, max(0, start - MARGIN), start)
    return bool(before) and before[-1].lower() in NEW_ONE
