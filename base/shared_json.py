"""JSON of many values that share parts: a shared list or dict is encoded twice, not per holder.

A compiled document repeats the same objects in every item (the concepts and backgrounds of a
composition, a stage's code fingerprint in every key's parts); json's encoder writes each copy
again, which at 20,000 items is most of a compile and of a stage's keying. `SharedEncoder`
joins the top `depth` levels of a value itself, exactly as `json.dumps` with sorted keys would
join them, and remembers, by identity, the text of each list and dict below the top that it
meets a second time, so a value held by many items is encoded twice, not once per item (and
one held once costs no memory). Below `depth` levels json's C encoder writes the rest.
"""

from __future__ import annotations

import json
from json.encoder import c_make_encoder, encode_basestring
from typing import Any, Callable


def compact_encoder(separators: tuple[str, str]) -> Callable[[Any], str]:
    """`json.dumps(value, sort_keys=True, ensure_ascii=False, separators=separators)` as one
    encoder made once: with those options `json.dumps` builds a new encoder on every call, which
    for a document of 100,000 small entries (a stamp, a record) costs five times the encoding.
    No circular check: these are values parsed from JSON or built as such."""
    if c_make_encoder is None:  # an interpreter without json's C accelerator
        return json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=separators).encode
    item_separator, key_separator = separators
    encoder = c_make_encoder(None, _not_serializable, encode_basestring, None, key_separator, item_separator,
                             True, False, True)  # no markers or indent; sort_keys, not skipkeys, allow_nan
    return lambda value: "".join(encoder(value, 0))


def _not_serializable(value: Any) -> Any:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


class SharedEncoder:
    """`json.dumps(value, sort_keys=True, ensure_ascii=False, separators=separators)`, for many
    values in a row; an instance lives for one document (it keeps what it encoded alive, so
    an identity always names the same value)."""

    def __init__(self, separators: tuple[str, str], depth: int) -> None:
        self.item_separator, self.key_separator = separators
        self.depth = depth
        self.seen: set[int] = set()  # identities met once: a value is remembered when met again
        self.done: dict[int, tuple[Any, str]] = {}  # id -> (the value, kept alive; its text)
        self.plain = compact_encoder(separators)

    def encode(self, value: Any) -> str:
        return self._encode(value, self.depth)

    def _encode(self, value: Any, depth: int) -> str:
        kind = type(value)
        if kind is str:
            return encode_basestring(value)  # what json.dumps does with ensure_ascii=False
        if kind is int:
            return int.__repr__(value)
        if (kind is not dict and kind is not list) or not value:
            return self.plain(value)
        known = self.done.get(id(value))
        if known is not None:
            return known[1]
        if depth == 0 or (kind is dict and not all(type(k) is str for k in value)):
            text = self.plain(value)
        elif kind is dict:
            text = "{" + self.item_separator.join(
                encode_basestring(k) + self.key_separator + self._encode(value[k], depth - 1)
                for k in sorted(value)) + "}"
        else:
            text = "[" + self.item_separator.join(self._encode(v, depth - 1) for v in value) + "]"
        if depth < self.depth:  # the top value is each call's own (an item, or a list made for it)
            if id(value) in self.seen:
                self.done[id(value)] = (value, text)
            else:
                self.seen.add(id(value))
        return text
