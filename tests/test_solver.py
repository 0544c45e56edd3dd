"""The embedded layout solver: the paper's geometric rules, determinism, unplaceable scenes."""

from __future__ import annotations

import pytest

from base.errors import ItemError
from stages.backends.plan.solver import Backend, Params, box_sizes
from stages.layout import iou, minimum_side, overlap, paste_order_by_overlap


def request(seed: int, count: int = 3, canvas: int = 1024, aspects=None) -> dict:
    aspects = aspects or [1.5, 0.5, 1.0, 2.0, 0.8][:count]
    return {
        "seed": seed, "canvas": [canvas, canvas],
        "concepts": [{"id": f"c{i}", "size": 1.0 - 0.15 * i, "views": [{"id": f"c{i}/v", "aspect": a}]}
                     for i, a in enumerate(aspects)],
        "backgrounds": [{"id": "garden", "photos": 3}, {"id": "street", "photos": 1}],
    }


@pytest.mark.parametrize("count", [2, 3, 4, 5])
@pytest.mark.parametrize("seed", range(5))
def test_layouts_respect_canvas_aspect_overlap_and_minimum_area(seed, count):
    params = Params(max_overlap=0.2)
    layout = Backend(params).plan(request(seed, count))
    boxes = {o["concept"]: o["box"] for o in layout["objects"]}
    assert sorted(boxes) == [f"c{i}" for i in range(count)]
    aspects = {c["id"]: c["views"][0]["aspect"] for c in request(seed, count)["concepts"]}
    floor = minimum_side(1024, count) ** 2
    for cid, (x, y, w, h) in boxes.items():
        assert 0 <= x and x + w <= 1024 and 0 <= y and y + h <= 1024
        assert w / h == pytest.approx(aspects[cid], rel=0.02)
        assert w * h >= floor * 0.98  # rounding to whole pixels
        assert y + h >= params.ground * 1024
    values = list(boxes.values())
    for i in range(len(values)):
        for j in range(i + 1, len(values)):
            assert overlap(values[i], values[j]) <= 0.2


def test_same_seed_same_layout_and_different_seed_differs():
    planner = Backend(Params())
    assert planner.plan(request(3)) == planner.plan(request(3))
    assert planner.plan(request(3)) != planner.plan(request(4))


def test_background_and_photo_are_chosen_from_the_allowed_ones():
    chosen = {(l["background"]["id"], l["background"]["photo"])
              for l in (Backend(Params()).plan(request(seed)) for seed in range(40))}
    assert chosen <= {("garden", 0), ("garden", 1), ("garden", 2), ("street", 0)}
    assert len(chosen) == 4


def test_minimum_area_scales_sides_by_the_square_root_of_the_area_ratio():
    (w, h), = box_sizes([1.0], [1.0], coverage=0.001, width=1000, height=1000, max_side=0.9)
    assert (w, h) == (200, 200)  # (H/5)^2 area, not H/5 * ratio per side
    assert minimum_side(1000, 4) == pytest.approx(1000 / 6)
    assert minimum_side(1000, 7) == pytest.approx(1000 / 8)


def test_relative_sizes_set_relative_longer_sides():
    small, large = box_sizes([1.0, 1.0], [0.5, 1.0], coverage=0.5, width=1000, height=1000, max_side=0.9)
    assert large[0] == pytest.approx(2 * small[0], abs=2)
    assert small[0] ** 2 + large[0] ** 2 == pytest.approx(0.5 * 1000 * 1000, rel=0.01)


def test_unplaceable_composition_is_an_item_error_with_advice():
    planner = Backend(Params(coverage=[0.9, 0.95], max_overlap=0.0, attempts=5))
    with pytest.raises(ItemError, match=r"cannot place 4 concepts \(c0, c1, c2, c3\).*lower backends.plan.coverage"):
        planner.plan(request(0, 4))


def test_paste_order_puts_the_most_overlapped_box_first():
    boxes = [[0, 0, 10, 10], [5, 5, 10, 10], [100, 100, 10, 10]]
    order = paste_order_by_overlap(boxes)
    assert order[-1] == 2  # overlaps nothing: pasted last
    assert iou(boxes[0], boxes[1]) > 0


def test_invalid_params_are_rejected():
    for bad in ({"coverage": [0.5, 0.2]}, {"max_overlap": 2}, {"paste_order": "random"}, {"attempts": 0}):
        with pytest.raises(ValueError):
            Params(**bad)
