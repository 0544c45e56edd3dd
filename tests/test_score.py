"""The geometric filter and the score report's keep rates."""

from __future__ import annotations

import pytest

from stages.backends.score.geometric import Backend, Params, measure
from stages.score import keep_rates


def test_measure_separates_truncation_and_occlusion():
    m = measure({"full": 1000, "inside": 800, "visible": 400}, canvas_area=10_000)
    assert m == {"truncated": 0.2, "occluded": 0.5, "visible": 0.4, "area": 0.04}


def test_images_with_a_hidden_or_tiny_concept_are_rejected_with_reasons():
    scorer = Backend(Params(min_visible=0.6, min_area=0.01))
    sample = {"canvas": [100, 100], "concepts": [
        {"concept": "cat", "full": 1000, "inside": 1000, "visible": 900},
        {"concept": "dog", "full": 1000, "inside": 1000, "visible": 300},
        {"concept": "mug", "full": 50, "inside": 50, "visible": 50},
    ]}
    result = scorer.score(sample)
    assert not result["keep"]
    assert [(r["check"], r["concept"]) for r in result["reasons"]] == [("visible", "dog"), ("area", "mug")]
    assert "dog: 30% visible (occluded 70%, truncated 0%)" in result["reasons"][0]["message"]


def test_a_clean_image_is_kept():
    sample = {"canvas": [100, 100], "concepts": [{"concept": "cat", "full": 900, "inside": 900, "visible": 900}]}
    assert Backend(Params()).score(sample) == {"keep": True, "reasons": [], "concepts": {
        "cat": {"truncated": 0.0, "occluded": 0.0, "visible": 1.0, "area": 0.09}}}


def test_keep_rates_are_binned_like_the_paper():
    def score(count, keep):
        reasons = [] if keep else [{"check": "visible"}]
        return {"keep": keep, "reasons": reasons, "concepts": {f"c{i}": {} for i in range(count)}}

    rates = keep_rates([score(2, True), score(3, False), score(4, True), score(4, True), score(5, False)])
    assert rates["keep_rate"] == pytest.approx(0.6)
    assert rates["keep_rate_by_concepts"]["<=3"] == {"images": 2, "keep_rate": 0.5, "paper_manual": 0.53}
    assert rates["keep_rate_by_concepts"]["4"]["keep_rate"] == 1.0
    assert rates["keep_rate_by_concepts"]["5"]["paper_manual"] == 0.22
    assert rates["rejections_by_check"] == {"visible": 2}
