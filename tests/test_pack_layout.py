"""Pack's shard layout: boundaries chosen by the sample keys, so one sample added, removed or
flipped rewrites one or two shards, not every shard of its composition (issue 36)."""

from __future__ import annotations

from collections import Counter

from stages.shard_layout import chunks, shard_name

SHARD_SIZE = 20


def layout(keys: list[str], shard_size: int = SHARD_SIZE) -> set[tuple[str, ...]]:
    return {tuple(chunk) for chunk in chunks(sorted(keys), shard_size, key=lambda k: k)}


def written(before: list[str], after: list[str]) -> int:
    """Shards of `after` that `before` has not got byte for byte (same samples): the ones to write."""
    return len(layout(after) - layout(before))


KEYS = [f"cat_mug-{2 * i:05d}" for i in range(200)]  # even indexes; an odd one is inserted between


def test_one_sample_inserted_or_removed_rewrites_at_most_two_shards_almost_everywhere():
    inserted = [written(KEYS, KEYS + [f"cat_mug-{2 * i + 1:05d}"]) for i in range(-1, 200)]
    removed = [written(KEYS, KEYS[:i] + KEYS[i + 1:]) for i in range(200)]
    counts = Counter(inserted + removed)
    # 401 insertions and removals: 2 of them (a boundary key removed, joining two runs into one
    # longer than SHARD_SIZE) rewrite 3 and 5 shards; of the rest, most rewrite only their own
    assert sum(n for shards, n in counts.items() if shards > 2) <= 2 and max(counts) <= 6, counts
    assert counts[0] + counts[1] > 0.85 * sum(counts.values()), counts
    assert written(KEYS, KEYS + ["cat_mug-00400"]) == 1  # appended: the last shard only


def test_the_layout_is_deterministic_bounded_and_keeps_key_order():
    shards = chunks(KEYS, SHARD_SIZE, key=lambda k: k)
    assert shards == chunks(list(KEYS), SHARD_SIZE, key=lambda k: k)
    assert sum(shards, []) == KEYS
    assert max(map(len, shards)) <= SHARD_SIZE and len(shards) > len(KEYS) / SHARD_SIZE
    assert all(len(shard) <= 3 for shard in chunks(KEYS, 3, key=lambda k: k))
    assert chunks(KEYS[:5], 1, key=lambda k: k) == [[k] for k in KEYS[:5]]
    assert chunks([], SHARD_SIZE, key=lambda k: k) == []


def test_a_run_without_boundaries_is_cut_by_its_keys_not_by_counting():
    run = [key for key in KEYS if len(layout([key], 10 ** 9)) == 1][:100]  # with shard_size 1e9, no key ends
    pieces = chunks(run, 30, key=lambda k: k)
    assert max(map(len, pieces)) <= 30 and sum(pieces, []) == run
    grown = chunks(run + ["cat_mug-99999"], 30, key=lambda k: k)
    assert len({tuple(p) for p in grown} - {tuple(p) for p in pieces}) <= 2


def test_a_shard_is_named_by_its_first_sample_index():
    assert shard_name("cat_mug", 42) == "cat_mug-000042.tar"
    assert shard_name("cat_mug", 999_999) == "cat_mug-999999.tar"
