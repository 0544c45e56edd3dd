"""LLM layout post-processing against Gen4Gen's s2_llm_guided_object_composition.py: hand-computed
replies through `parse_layout` + `postprocess` (size ratios, the minimum size, paste order), and
no finite reply that crashes it or the plan stage."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from stages.backends.plan.reply import ReplyRejected, parse_layout, postprocess
from tests.conftest import TINY_RECIPE, build_in_process, write_recipe
from tests.llm_server import ChatServer

NAMES = ["cat", "mug"]


def layout(boxes: dict[str, list[float]], names: list[str] = NAMES) -> list[list[float]]:
    """A reply with these boxes on the 512 prompt canvas, parsed, in `names` order."""
    text = json.dumps({"objects": [{"name": name, "box": box} for name, box in boxes.items()]})
    parsed = parse_layout(text, names, 512)
    return [parsed[name] for name in names]


def paper_paste_order(boxes: list[list[float]]) -> list[int]:
    """s2's paste order, ported: torchvision's box_iou of the rescaled LLM boxes with
    themselves, diagonal zeroed, summed per box, sorted descending."""
    corners = np.array(boxes, dtype=np.float64)
    corners[:, 2:] += corners[:, :2]
    low = np.maximum(corners[:, None, :2], corners[None, :, :2])
    high = np.minimum(corners[:, None, 2:], corners[None, :, 2:])
    inter = np.clip(high - low, 0, None).prod(axis=-1)
    areas = (corners[:, 2:] - corners[:, :2]).prod(axis=-1)
    iou = inter / (areas[:, None] + areas[None, :] - inter) * (1 - np.eye(len(boxes)))
    return np.argsort(-iou.sum(axis=-1), kind="stable").tolist()


def test_size_ratio_gives_each_box_the_largest_objects_box_times_its_ratio_then_the_floor():
    # On the 1024 canvas: cat [100, 100, 400, 400]; mug [600, 600, 80, 120], tall, ratio 0.4.
    # The paper: mug = the cat's (w, h) x 0.4 = 160 x 160 about its own centre (640, 660).
    # Then the floor: the smallest box (the mug, 160^2) is under (1024/5)^2 = 204.8^2, so every
    # box grows by 204.8 / 160 = 1.28 about its centre: cat 512 (centre 300), mug 204.8.
    boxes, _ = postprocess(layout({"cat": [50, 50, 200, 200], "mug": [300, 300, 40, 60]}), [1.0, 1.0], 512,
                           [1024, 1024], ratios=[1.0, 0.4])
    assert boxes == [[44, 44, 512, 512], [538, 558, 205, 205]]  # 537.6, 557.6, 204.8 rounded


def test_minimum_size_scales_every_box_by_one_factor():
    # cat 200 x 200 and mug 80 x 80 on the 1024 canvas: the smallest (the mug) is under 204.8^2,
    # so both sides of both boxes grow by 204.8 / 80 = 2.56 (the square root of the paper's area
    # ratio 6.5536): the LLM's 2.5 : 1 between cat and mug is kept.
    boxes, _ = postprocess(layout({"cat": [100, 100, 100, 100], "mug": [400, 400, 40, 40]}), [1.0, 1.0], 512,
                           [1024, 1024])
    assert boxes == [[44, 44, 512, 512], [738, 738, 205, 205]]  # mug 737.6, 204.8 rounded


def test_the_minimum_size_holds_on_the_pasted_cut_out():
    # Issue 25's mug: a 2:3 cut-out in the box [300, 300, 40, 60], i.e. [600, 600, 80, 120] on 1024.
    # Pasted it would be 53.3 x 80 (4,266.7 px), under 204.8^2 = 41,943 px: every box grows by
    # sqrt(41,943 / 4,266.7) = 3.1354 about its centre. The mug's box becomes 250.8 x 376.2 at
    # (514.6, 471.9), its cut-out 167.2 x 250.8 centred in it; the cat's 1,254 px box is clamped
    # to the canvas.
    boxes, _ = postprocess(layout({"cat": [50, 50, 200, 200], "mug": [300, 300, 40, 60]}), [1.0, 2 / 3], 512,
                           [1024, 1024])
    assert boxes == [[0, 0, 1024, 1024], [556, 535, 167, 251]]


@pytest.mark.parametrize("count", [2, 3, 4, 5])
def test_no_pasted_cut_out_is_under_the_minimum_area(count):
    from stages.layout import minimum_side

    rng = np.random.default_rng(count)
    floor = minimum_side(1024, count) ** 2
    for _ in range(200):
        sides = rng.uniform(10, 60, size=(count, 2))
        llm = [[float(rng.uniform(0, 400)), float(rng.uniform(0, 400)), *map(float, side)] for side in sides]
        aspects = rng.uniform(0.4, 2.5, size=count).tolist()
        boxes, _ = postprocess(llm, aspects, 512, [1024, 1024])
        assert min(w * h for _, _, w, h in boxes) >= 0.98 * floor  # whole pixels: a little under at most


def test_paste_order_is_computed_on_the_rescaled_llm_boxes():
    names = ["cat", "mug", "plant"]
    llm = {"cat": [0, 0, 200, 200], "mug": [150, 0, 200, 200], "plant": [320, 0, 180, 200]}
    boxes, order = postprocess(layout(llm, names), [0.5, 1.0, 2.0], 512, [1024, 1024])
    rescaled = [[2 * v for v in box] for box in llm.values()]
    assert order == paper_paste_order(rescaled) == [1, 0, 2]  # summed IoU 0.229, 0.143, 0.086
    # The fitted cat (100 x 200, centred) no longer touches the mug: on these final boxes the
    # order would have been plant, mug, cat.
    assert boxes == [[100, 0, 200, 400], [300, 0, 400, 400], [640, 110, 360, 180]]


def test_a_box_under_one_pixel_is_rejected_not_a_crash():
    with pytest.raises(ReplyRejected, match=r"\[zero_box\] box 2 .* under one pixel on the 1024x1024 canvas"):
        postprocess(layout({"cat": [0, 0, 100, 100], "mug": [10, 10, 0.2, 30]}), [1.0, 1.0], 512, [1024, 1024])
    with pytest.raises(ReplyRejected, match=r"\[zero_box\] box 2 .* at size ratio 1e-300"):
        postprocess(layout({"cat": [0, 0, 100, 100], "mug": [10, 10, 30, 30]}), [1.0, 1.0], 512, [1024, 1024],
                    ratios=[1.0, 1e-300])


def test_no_finite_input_raises_anything_but_a_rejection():
    rng = np.random.default_rng(0)
    tiny = [5e-324, 1e-300, 1e-12, 0.4, 1.0]
    outcomes = {"kept": 0, "rejected": 0}
    for _ in range(3000):
        count = int(rng.integers(2, 6))
        side = int(rng.choice([64, 512, 1024]))
        canvas = [side, side] if rng.random() < 0.8 else [side, int(rng.choice([64, 480, 2048]))]
        boxes = []
        for _ in range(count):
            x, y = rng.uniform(0, 511, 2)
            w = rng.choice(tiny) if rng.random() < 0.2 else rng.uniform(0, 512 - x)
            h = rng.choice(tiny) if rng.random() < 0.2 else rng.uniform(0, 512 - y)
            boxes.append([float(x), float(y), float(min(max(w, 5e-324), 512 - x)), float(min(max(h, 5e-324), 512 - y))])
        aspects = (10 ** rng.uniform(-3, 3, count)).tolist()
        ratios = None
        if rng.random() < 0.5:
            ratios = [float(v) for v in rng.choice([*tiny, 0.7, 1.0], count)]
            ratios[int(rng.integers(count))] = 1.0
        try:
            final, order = postprocess(boxes, aspects, 512, canvas, ratios)
        except ReplyRejected as rejection:
            assert rejection.kind == "zero_box"
            outcomes["rejected"] += 1
            continue
        outcomes["kept"] += 1
        assert sorted(order) == list(range(count))
        for x, y, w, h in final:
            assert all(isinstance(v, int) for v in (x, y, w, h)) and w >= 1 and h >= 1
            assert 0 <= x and x + w <= canvas[0] and 0 <= y and y + h <= canvas[1]
    assert min(outcomes.values()) > 100, outcomes


def test_floor_is_met_when_the_canvas_allows_it():
    for count, divisor in [(2, 5), (4, 6), (5, 8)]:
        names = [f"object {i}" for i in range(count)]
        llm = {name: [60 * i, 60 * i, 20, 20] for i, name in enumerate(names)}
        boxes, _ = postprocess(layout(llm, names), [1.0] * count, 512, [1024, 1024])
        assert all(w * h >= math.floor(1024 / divisor) ** 2 for _, _, w, h in boxes)


def test_a_layout_that_collapses_fails_its_item_and_the_stage_goes_on(project, monkeypatch):
    monkeypatch.setenv("G4G_LLM_ENDPOINTS", "http://127.0.0.1")
    monkeypatch.setenv("G4G_LLM_API_KEY_ENV", "G4G_TEST_KEY")
    monkeypatch.setenv("G4G_TEST_KEY", "local")

    def script(prompt, n):  # valid on the 512 prompt canvas, half a pixel wide on the 256 canvas
        boxes = {"cat": [40, 250, 140, 180], "mug": [300, 250, 1, 180] if n == 1 else [300, 250, 100, 180]}
        return 200, json.dumps({"objects": [{"name": name, "box": box} for name, box in boxes.items()]})

    recipe = copy.deepcopy(TINY_RECIPE)
    recipe["compositions"] = {"cat_mug": {"concepts": ["cat", "mug"], "backgrounds": ["grass"], "num_images": 2}}
    recipe["backends"] = {"plan": {"name": "openai", "model": "test-model", "max_retries": 0, "concurrency": 1}}
    with ChatServer(script) as server:
        recipe["backends"]["plan"]["base_url"] = server.url
        write_recipe(project, recipe)
        plan = build_in_process(project)["plan"]
    assert plan["computed"] == 1 and plan["failed"] == 1
    failure, = plan["failures"].values()
    assert failure.startswith("[zero_box] box 2 [300.0, 250.0, 1.0, 180.0] is under one pixel on the 256x256 canvas")
