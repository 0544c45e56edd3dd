"""`base.keys.without`: key parts less what a backend ignores, with shared values pruned once."""

from __future__ import annotations

import json

import pytest

from base.keys import Pruned, content_keys, without

SCENE = {"ground": [[0, 400], [640, 400]], "phrase": "a path", "occluders": [{"phrase": "a post", "front": 0.9}]}


def test_ignored_names_go_at_any_depth_and_the_rest_stays():
    value = {"layout": {"objects": [{"box": [1, 2, 3, 4], "phrase": "cat"}], "phrase": "x"}, "phrase": "y",
             "scene": SCENE, "n": 3}
    assert without(value, {"phrase"}) == {"layout": {"objects": [{"box": [1, 2, 3, 4]}]}, "n": 3,
                                          "scene": {"ground": [[0, 400], [640, 400]], "occluders": [{"front": 0.9}]}}
    assert without(value, []) is value  # nothing ignored: the value itself
    assert value["scene"]["phrase"] == "a path"  # the value is left as it was


def test_a_dict_many_items_share_is_pruned_once_and_keyed_once():
    items = [{"scene": SCENE, "layout": {"box": [i, i, i + 1, i + 1], "phrase": "cat"}} for i in range(5)]
    memo = Pruned()
    pruned = [without(item, {"phrase"}, memo) for item in items]
    assert pruned == [without(item, {"phrase"}) for item in items]  # the same parts as one by one
    assert all(p["scene"] is pruned[1]["scene"] for p in pruned[1:])  # one object from the second on
    written = [json.loads(json.dumps(p)) for p in pruned]  # nothing shared
    assert content_keys("score", pruned) == content_keys("score", written)
    with pytest.raises(ValueError, match=r"serves one set of names: \['phrase'\], not \['seed'\]"):
        without(items[0], {"seed"}, memo)  # its results hold what another set would prune
