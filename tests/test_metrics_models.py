"""The real OWL-ViT / open_clip loading and inference path, on tiny random models built in code,
and the `score: clip` backend end to end."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from PIL import Image

from stages.metrics.evaluate import ConceptReference, ImageToScore, evaluate
from stages.metrics.models import ModelMissing, OpenClipEmbedder, OwlVitDetector
from tests.conftest import TINY_RECIPE, build_in_process, write_recipe
from tests.tiny_models import save_tiny_open_clip, save_tiny_owlvit


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    owlvit = save_tiny_owlvit(root / "owlvit")
    config, checkpoint = save_tiny_open_clip(root / "clip")
    return {"detector": str(owlvit), "embedder": "tiny-clip", "embedder_weights": str(checkpoint),
            "embedder_config": str(config)}


def images(count, size=(80, 64)):
    return [Image.fromarray(np.random.default_rng(i).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
            for i in range(count)]


def test_detector_returns_pixel_boxes_per_image(tiny_models):
    detector = OwlVitDetector(tiny_models["detector"], threshold=0.0)
    found = detector.detect(images(3), ["cat", "dog"])
    assert len(found) == 3
    for detections in found:
        assert detections and {d.label for d in detections} <= {"cat", "dog"}
        for d in detections:
            assert len(d.box) == 4 and 0.0 <= d.score <= 1.0


def test_embeddings_are_normalised_and_batched(tiny_models):
    embedder = OpenClipEmbedder(tiny_models["embedder"], tiny_models["embedder_weights"],
                                config=tiny_models["embedder_config"])
    vectors = embedder.embed_images(images(3))
    assert vectors.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(embedder.embed_images(images(3)[1:2])[0], vectors[1], atol=1e-5)
    assert embedder.embed_texts(["in the garden", "on the street"]).shape == (2, 16)


def test_metrics_do_not_depend_on_the_batch_an_image_falls_in(tiny_models):
    detector = OwlVitDetector(tiny_models["detector"], threshold=0.0)
    embedder = OpenClipEmbedder(tiny_models["embedder"], tiny_models["embedder_weights"],
                                config=tiny_models["embedder_config"])
    refs = embedder.embed_images(images(4, (40, 40)))
    concepts = [ConceptReference("tabby", "cat", refs[:2]), ConceptReference("rex", "dog", refs[2:])]
    batch = [ImageToScore(image, concepts, "in the garden") for image in images(3)]
    together = evaluate(batch, detector, embedder)
    alone = [evaluate([item], detector, embedder)[0] for item in batch]
    for a, b in zip(together, alone):
        assert a["cp_clip"] == pytest.approx(b["cp_clip"], abs=1e-3)
        assert a["cp_clip_assigned"] == pytest.approx(b["cp_clip_assigned"], abs=1e-3)
        assert set(a["concepts"]) == {"tabby", "rex"}
    assert -1 <= together[0]["ti_clip"] <= 1


def test_missing_weights_say_what_to_download(tmp_path):
    with pytest.raises(ModelMissing, match=r"huggingface-cli download google/owlvit-base-patch32"):
        OwlVitDetector("google/owlvit-base-patch32")
    with pytest.raises(ModelMissing, match=r"open_clip ViT-B-32 weights 'openai'"):
        OpenClipEmbedder("ViT-B-32", "openai")
    with pytest.raises(ModelMissing, match=r"no model 'nonexistent-arch'"):
        OpenClipEmbedder("nonexistent-arch", None)


def clip_recipe(tiny_models, **options):
    recipe = copy.deepcopy(TINY_RECIPE)
    recipe["backends"] = {"score": {"name": "clip", **tiny_models, "detection_threshold": 0.0, **options}}
    return recipe


def test_score_stage_with_clip_writes_metrics_and_keep_rates(project, tiny_models):
    write_recipe(project, clip_recipe(tiny_models, min_identity=-1.0))
    reports = build_in_process(project)
    score = reports["score"]
    assert score["computed"] == 10 and score["failed"] == 0
    assert set(score["keep_rate_by_concepts"]) == {"<=3"}
    assert score["keep_rate_by_concepts"]["<=3"]["paper_manual"] == 0.53
    import json

    scores = json.loads((project / "build/scores.json").read_text())["scores"]
    first = scores[0]
    assert {"cp_clip", "cp_clip_assigned", "identity_mixing", "ti_clip"} <= set(first["metrics"])
    for measures in first["concepts"].values():
        assert "visible" in measures and "detected" in measures
        if measures["detected"]:
            assert {"identity", "identity_cutout", "detection_score", "box"} <= set(measures)


def test_strict_identity_threshold_rejects_with_reasons(project, tiny_models):
    write_recipe(project, clip_recipe(tiny_models, min_identity=1.0))
    reports = build_in_process(project)
    assert reports["score"]["kept"] == 0
    assert reports["score"]["rejections_by_check"].get("identity", 0) > 0
    assert reports["pack"]["packed"] == 0


def test_score_stage_without_weights_fails_with_the_helpful_message(project, tiny_models):
    write_recipe(project, clip_recipe({**tiny_models, "detector": "google/owlvit-base-patch32"}))
    with pytest.raises(ModelMissing, match="huggingface-cli download"):
        build_in_process(project)
