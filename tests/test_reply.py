"""LLM replies: strict parsing, the paper's rules and post-processing, examples, prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stages.backends.plan.examples import import_coco, load_examples, sample_examples
from stages.backends.plan.reply import ReplyRejected, parse_background, parse_layout, parse_sizes, postprocess
from stages.templating import Templates
from tests.conftest import REPO

NAMES = ["cat", "mug"]


def reply(objects, **extra):
    return json.dumps({"objects": objects, **extra})


def test_prose_and_code_fences_around_the_json_are_tolerated():
    text = 'Sure!\n```json\n' + reply([{"name": "cat", "box": [0, 0, 100, 100]},
                                        {"name": "mug", "box": [200, 200, 50, 60]}]) + "\n```\nEnjoy."
    assert parse_layout(text, NAMES, 512) == {"cat": [0, 0, 100, 100], "mug": [200, 200, 50, 60]}


def test_objects_are_matched_by_name_not_order():
    text = reply([{"name": "Mug", "box": [1, 2, 30, 40]}, {"name": "cat", "box": [5, 6, 70, 80]}])
    assert parse_layout(text, NAMES, 512) == {"cat": [5, 6, 70, 80], "mug": [1, 2, 30, 40]}


@pytest.mark.parametrize(("text", "kind"), [
    ("I cannot draw boxes.", "malformed_json"),
    ('{"objects": [{"name": "cat", "box": [0, 0, 10', "malformed_json"),
    (json.dumps({"boxes": []}), "schema"),
    (reply([{"name": "cat", "box": [0, 0, 10]}, {"name": "mug", "box": [0, 0, 1, 1]}]), "schema"),
    (reply([{"name": "cat", "box": [0, 0, 10, 10]}]), "too_few_boxes"),
    (reply([{"name": "cat", "box": [0, 0, 10, 10]}, {"name": "dog", "box": [0, 0, 5, 5]}]), "unknown_object"),
    (reply([{"name": "cat", "box": [0, 0, 10, 10]}, {"name": "cat", "box": [0, 0, 5, 5]}]), "duplicate_object"),
    (reply([{"name": "cat", "box": [0, 0, 10, 10]}, {"name": "mug", "box": [500, 0, 50, 5]}]), "box_outside_canvas"),
    (reply([{"name": "cat", "box": [-1, 0, 10, 10]}, {"name": "mug", "box": [0, 0, 5, 5]}]), "box_outside_canvas"),
    (reply([{"name": "cat", "box": [0, 0, 0, 0]}, {"name": "mug", "box": [0, 0, 5, 5]}]), "zero_box"),
])
def test_bad_replies_are_rejected_with_a_kind(text, kind):
    with pytest.raises(ReplyRejected) as rejected:
        parse_layout(text, NAMES, 512)
    assert rejected.value.kind == kind and str(rejected.value).startswith(f"[{kind}]")


def test_missing_objects_are_rejected():
    with pytest.raises(ReplyRejected, match=r"\[missing_objects\] no box for \['plant'\]"):
        parse_layout(reply([{"name": "cat", "box": [0, 0, 9, 9]}, {"name": "mug", "box": [0, 0, 9, 9]}]),
                     ["cat", "mug", "plant"], 512)


def test_background_and_sizes_replies():
    assert parse_background('{"background": "In the garden"}', ["on the street", "in the garden"]) == "in the garden"
    with pytest.raises(ReplyRejected, match="unknown_background"):
        parse_background('{"background": "on the moon"}', ["in the garden"])
    assert parse_sizes('{"sizes": {"cat": 0.5, "mug": 0.25}}', NAMES) == {"cat": 1.0, "mug": 0.5}


def test_postprocess_rescales_enforces_minimum_area_and_fits_the_aspect():
    boxes, order = postprocess([[0, 0, 256, 256], [300, 300, 20, 20]], [2.0, 1.0], 512, [1024, 1024])
    x, y, w, h = boxes[1]
    assert w == h == round(1024 / 5)  # (H/5)^2 minimum area for <=3 objects: sides scaled by sqrt
    # Every box grows by that factor (5.12): 512 -> 2621, clamped to the canvas, then the 2:1
    # cut-out gets longer side = min(w, h), centred.
    assert boxes[0] == [0, 256, 1024, 512]
    assert (x + w / 2, y + h / 2) == pytest.approx((620, 620), abs=1)  # about the same centre
    assert sorted(order) == [0, 1]


def test_postprocess_clamps_into_the_canvas_and_applies_ratios():
    boxes, _ = postprocess([[0, 0, 400, 400], [400, 400, 100, 100]], [1.0, 1.0], 512, [512, 512], ratios=[1.0, 0.5])
    assert boxes[1][2] == 200  # half the longest side of the largest object
    assert all(0 <= b[0] and b[0] + b[2] <= 512 and 0 <= b[1] and b[1] + b[3] <= 512 for b in boxes)


def test_coco_import_rescales_boxes_and_keeps_3_to_25_percent(tmp_path):
    instances = {"images": [{"id": 1, "width": 640, "height": 480}, {"id": 2, "width": 100, "height": 100}],
                 "categories": [{"id": 17, "name": "cat"}, {"id": 18, "name": "dog"}],
                 "annotations": [
                     {"id": 10, "image_id": 1, "category_id": 17, "bbox": [64, 48, 160, 120]},   # 6.25%
                     {"id": 11, "image_id": 1, "category_id": 18, "bbox": [320, 240, 192, 192]},  # 12%
                     {"id": 12, "image_id": 1, "category_id": 18, "bbox": [0, 0, 600, 400]},     # 78%: dropped
                     {"id": 13, "image_id": 1, "category_id": 17, "bbox": [0, 0, 10, 10]},       # tiny: dropped
                     {"id": 14, "image_id": 2, "category_id": 17, "bbox": [0, 0, 30, 30]}]}      # one box only
    captions = {"annotations": [{"id": 5, "image_id": 1, "caption": "A cat and a dog. "},
                                {"id": 3, "image_id": 1, "caption": "Two pets on a sofa."}]}
    (tmp_path / "i.json").write_text(json.dumps(instances))
    (tmp_path / "c.json").write_text(json.dumps(captions))
    examples = import_coco(tmp_path / "i.json", tmp_path / "c.json", canvas=512)
    assert examples == [{"caption": "Two pets on a sofa.", "objects": [
        {"name": "cat", "box": [51, 51, 128, 128]}, {"name": "dog", "box": [256, 256, 154, 205]}]}]


def test_examples_are_sampled_without_replacement_by_a_seeded_sampler(tmp_path):
    path = tmp_path / "examples.jsonl"
    path.write_text("\n".join(json.dumps({"caption": f"photo {i}", "objects": []}) for i in range(20)))
    loaded = load_examples(path)
    draws = {seed: [e["caption"] for e in sample_examples(loaded, 5, seed)] for seed in range(4)}
    assert draws[1] == [e["caption"] for e in sample_examples(loaded, 5, 1)]  # same seed, same draw
    assert all(len(set(d)) == 5 for d in draws.values())  # no example twice
    assert len({tuple(d) for d in draws.values()}) > 1  # seeds differ, draws differ
    assert len(sample_examples(loaded, 50, 0)) == 20 and sample_examples([], 5, 0) == []


def test_bad_examples_file_names_the_line(tmp_path):
    path = tmp_path / "examples.jsonl"
    path.write_text('{"caption": "ok", "objects": []}\n{"caption": 3}\n')
    with pytest.raises(ValueError, match=r"examples.jsonl, line 2"):
        load_examples(path)


GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("template, context", [
    ("prompts/layout.j2", {"objects": ["cat", "mug"], "canvas": 512, "examples": [
        {"caption": "A dog on a bed.", "objects": [{"name": "dog", "box": [10, 20, 200, 150]},
                                                   {"name": "bed", "box": [0, 100, 500, 400]}]}]}),
    ("prompts/background.j2", {"objects": ["cat", "mug"], "backgrounds": ["in the garden", "on the street"]}),
    ("prompts/sizes.j2", {"objects": ["cat", "mug"]}),
])
def test_rendered_prompts_match_the_golden_files(template, context):
    rendered = Templates(REPO / "templates").render(template, **context)
    golden = GOLDEN / (Path(template).stem + ".txt")
    assert rendered == golden.read_text()
