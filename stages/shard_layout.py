"""Where a composition's shards begin and end: boundaries that follow the sample keys.

Counting samples into shards (every `shard_size`, or evenly) moves every later boundary when
one sample is added or removed, so an edit at 20,000 images rewrites every shard of its
composition. Here, as in content-defined chunking (rsync, restic), a shard ends after a
sample whose key hashes under a threshold (one key in `shard_size / 2`). Whether a key ends a
shard depends on that key alone, so adding, removing, changing or flipping one sample touches
the shard that holds it (and its neighbour when the sample itself ends a shard). A run of
keys longer than `shard_size` with no such boundary is cut after its lowest-hashing key
(never its last), again in each part until every part fits: these cuts too are chosen by the
keys, not by counting, so they stay where they are when a sample comes or goes elsewhere.
Measured over every one-sample insertion and removal in 2,000 keys (shard_size 20 and 100),
more than 99% rewrite at most two shards, the worst six: a boundary key removed joins two runs
into one longer than `shard_size`, which is then cut anew (tests/test_pack_layout.py checks a
200-key case position by position). Shards hold about 0.4 `shard_size` samples on average.

The layout depends on the keys and `shard_size` only: the same recipe gives the same shards
whatever the throughput settings. A shard is named by its first sample's index
(`<composition>-NNNNNN.tar`), so a new shard renames none of the others.
"""

from __future__ import annotations

import hashlib
from typing import Callable, TypeVar

T = TypeVar("T")
HASH_BYTES = 8


def key_hash(key: str) -> int:
    """A sample key's blake2b as a 64-bit number: where it may end a shard."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=HASH_BYTES).digest(), "big")


def ends_shard(hash_value: int, shard_size: int) -> bool:
    """Whether a sample whose key hashes to `hash_value` closes its shard: the lowest
    2 / `shard_size` of the range do (every key, for shard sizes of 1 and 2)."""
    return hash_value * shard_size < 2 << (8 * HASH_BYTES)


def split_long(run: list[T], hashes: list[int], most: int) -> list[list[T]]:
    """`run` cut after its lowest-hashing sample (never the last) until every part holds at
    most `most` samples; `hashes` are the samples' key hashes, in order."""
    parts, todo = [], [(0, len(run))]
    while todo:
        start, end = todo.pop()
        if end - start <= most:
            parts.append(run[start:end])
            continue
        cut = min(range(start, end - 1), key=lambda index: (hashes[index], index)) + 1
        todo += [(cut, end), (start, cut)]  # the left part is popped, and so listed, first
    return parts


def chunks(samples: list[T], shard_size: int, key: Callable[[T], str]) -> list[list[T]]:
    """`samples` (in key order) cut into shards of at most `shard_size` samples: after each
    sample whose key `ends_shard`, and runs longer than `shard_size` by `split_long`."""
    out: list[list[T]] = []
    run: list[T] = []
    hashes: list[int] = []
    for sample in samples:
        run.append(sample)
        hashes.append(key_hash(key(sample)))
        if ends_shard(hashes[-1], shard_size):
            out += split_long(run, hashes, shard_size)
            run, hashes = [], []
    return out + (split_long(run, hashes, shard_size) if run else [])


def shard_name(composition: str, first_index: int) -> str:
    """`<composition>-NNNNNN.tar`, NNNNNN the index of the shard's first sample (below the
    recipe's 1,000,000 images, so the glob `<composition>-??????.tar` matches a composition's
    shards and never a longer name's)."""
    return f"{composition}-{first_index:06d}.tar"
