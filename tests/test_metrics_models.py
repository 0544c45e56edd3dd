"""The real OWL-ViT / open_clip loading and inference path, on tiny random models built in code,
and the `score: clip` backend end to end."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from stages.backends.score import clip
from stages.metrics import clip_weights
from stages.metrics.clip_weights import ActivationError
from stages.metrics.evaluate import ConceptReference, ImageToScore, evaluate
from stages.metrics.models import ModelMismatch, ModelMissing, OpenClipEmbedder, OwlVitDetector
from stages.metrics.pixels import crop, crop_box, flatten_alpha
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


def forced_outputs(boxes, logits):
    """A stand-in for the OWL-ViT network that returns the given (cx, cy, w, h) boxes and logits."""
    from transformers.models.owlvit.modeling_owlvit import OwlViTObjectDetectionOutput

    def model(**inputs):
        batch = inputs["pixel_values"].shape[0]
        return OwlViTObjectDetectionOutput(logits=torch.tensor([logits] * batch, dtype=torch.float32),
                                           pred_boxes=torch.tensor([boxes] * batch, dtype=torch.float32))
    return model


@pytest.mark.parametrize("size", [(64, 64), (80, 48), (48, 80)])
def test_detector_boxes_are_in_pixels_of_the_original_image(tiny_models, size):
    detector = OwlVitDetector(tiny_models["detector"], threshold=0.5)
    boxes = [(0.5, 0.25, 0.5, 0.25), (0.2, 0.7, 0.2, 0.4), (0.9, 0.9, 0.1, 0.1)]
    logits = [(-9.0, 4.0), (3.0, -9.0), (-9.0, -9.0)]  # query 1, query 0, below the threshold
    detector.model = forced_outputs(boxes, logits)
    width, height = size
    found = detector.detect(images(2, size), ["cat", "dog"])
    expected = [("dog", boxes[0], 4.0), ("cat", boxes[1], 3.0)]
    for detections in found:
        assert [d.label for d in detections] == [label for label, _, _ in expected]
        for detection, (_, (cx, cy, w, h), logit) in zip(detections, expected):
            corners = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
            np.testing.assert_allclose(detection.box, corners, atol=1e-3)
            assert detection.score == pytest.approx(1 / (1 + np.exp(-logit)), abs=1e-6)


def test_a_detector_checkpoint_of_another_type_is_refused(tmp_path):
    from transformers import Owlv2Config

    Owlv2Config().save_pretrained(tmp_path / "owlv2")
    with pytest.raises(ModelMismatch, match=r"owlv2.*holds a 'owlv2' checkpoint.*model_type 'owlvit'"):
        OwlVitDetector(str(tmp_path / "owlv2"))


def test_quick_gelu_and_gelu_builds_of_one_checkpoint_embed_differently(tiny_models):
    from open_clip.transformer import QuickGELU

    built = {activation: OpenClipEmbedder(tiny_models["embedder"], tiny_models["embedder_weights"],
                                          config=tiny_models["embedder_config"], activation=activation)
             for activation in ("quickgelu", "gelu")}
    quick_modules = [m for m in built["quickgelu"].model.modules() if isinstance(m, QuickGELU)]
    gelu_modules = [m for m in built["gelu"].model.modules() if isinstance(m, torch.nn.GELU)]
    assert quick_modules and gelu_modules
    assert not any(isinstance(m, QuickGELU) for m in built["gelu"].model.modules())
    assert built["quickgelu"].describe()["activation"] == "quickgelu"
    assert built["gelu"].describe()["activation"] == "gelu"
    vectors = {activation: embedder.embed_images(images(2)) for activation, embedder in built.items()}
    assert not np.allclose(vectors["quickgelu"], vectors["gelu"], atol=1e-4)


@pytest.fixture
def tiny_openai_release(tiny_models, monkeypatch):
    """tiny-clip given an 'openai' release in open_clip's table, as ViT-B-32 has: a hub id, a
    QuickGELU flag and a download URL carrying the checkpoint's sha256 (OpenAI's scheme)."""
    import open_clip
    from open_clip.pretrained import _PRETRAINED, _pcfg

    sha256 = clip_weights.file_sha256(tiny_models["embedder_weights"])
    OpenClipEmbedder(tiny_models["embedder"], None, config=tiny_models["embedder_config"])  # registers the config
    monkeypatch.setitem(_PRETRAINED, "tiny-clip", {"openai": _pcfg(
        url=f"https://openaipublic.azureedge.net/clip/models/{sha256}/tiny-clip.pt",
        hf_hub="example/tiny-clip.openai/", file=tiny_models["embedder_weights"], quick_gelu=True)})
    assert open_clip.list_pretrained_tags_by_model("tiny-clip") == ["openai"]
    return sha256


@pytest.mark.parametrize("source", ["tag", "hub id", "renamed local file"])
def test_openai_weights_load_with_quick_gelu_from_every_source(tiny_models, tiny_openai_release, tmp_path, source):
    from open_clip.transformer import QuickGELU

    renamed = tmp_path / "vit-b-32-openai.bin"
    shutil.copyfile(tiny_models["embedder_weights"], renamed)
    weights = {"tag": "openai", "hub id": "example/tiny-clip.openai", "renamed local file": str(renamed)}[source]
    embedder = OpenClipEmbedder("tiny-clip", weights)
    assert any(isinstance(m, QuickGELU) for m in embedder.model.modules())
    assert not any(isinstance(m, torch.nn.GELU) for m in embedder.model.modules())
    description = embedder.describe()
    assert description["activation"] == "quickgelu" and description["architecture"] == "tiny-clip"
    assert description["weights_sha256"] == tiny_openai_release
    assert "openai" in description["weights_identified_by"]


def test_unidentified_weights_of_an_openai_architecture_need_the_activation_named(
        tiny_models, tiny_openai_release, tmp_path):
    from open_clip.transformer import QuickGELU

    other = tmp_path / "other.pt"
    state = torch.load(tiny_models["embedder_weights"])
    torch.save({k: v + 0.01 for k, v in state.items()}, other)
    with pytest.raises(ActivationError, match=r"embedder_activation: quickgelu for OpenAI weights.*gelu otherwise"):
        OpenClipEmbedder("tiny-clip", str(other))
    embedder = OpenClipEmbedder("tiny-clip", str(other), activation="quickgelu")
    assert any(isinstance(m, QuickGELU) for m in embedder.model.modules())
    assert embedder.describe()["weights_identified_by"] is None
    with pytest.raises(ActivationError, match=r"gelu contradicts .* trained with QuickGELU"):
        OpenClipEmbedder("tiny-clip", "openai", activation="gelu")


def test_default_and_documented_embedder_settings_choose_quick_gelu():
    defaults = clip.Params()
    assert defaults.embedder_activation == "auto"
    assert clip_weights.choose_quick_gelu(defaults.embedder, defaults.embedder_weights, None, "auto")[0]
    assert clip_weights.choose_quick_gelu("ViT-B-32", "timm/vit_base_patch32_clip_224.openai", None, "auto")[0]
    assert not clip_weights.choose_quick_gelu("ViT-B-32", "laion2b_s34b_b79k", None, "auto")[0]
    openai_jit = "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"  # in OpenAI's URL
    assert clip_weights.choose_quick_gelu("ViT-B-32", "models/ViT-B-32.pt", openai_jit, "auto")[0]
    readme_file = "models/vit_base_patch32_clip_224.openai/open_clip_pytorch_model.bin"
    assert clip_weights.choose_quick_gelu("ViT-B-32", readme_file, "0" * 64, "quickgelu")[0]
    with pytest.raises(ActivationError):
        clip_weights.choose_quick_gelu("ViT-B-32", readme_file, "0" * 64, "auto")
    with pytest.raises(ValueError, match="embedder_activation 'silu'"):
        clip.Params(embedder_activation="silu")


def rgba_with_hidden_colour(hidden):
    """A 40x40 RGBA image: an opaque square on a transparent ground whose RGB is `hidden`."""
    pixels = np.zeros((40, 40, 4), np.uint8)
    pixels[..., :3] = hidden
    pixels[10:30, 10:30] = (200, 40, 90, 255)
    return Image.fromarray(pixels, "RGBA")


def test_reference_and_cutout_of_one_rgba_image_embed_equally(tiny_models, tmp_path):
    scorer = clip.Backend(clip.Params(**tiny_models))
    reference, cutout = tmp_path / "reference.png", tmp_path / "cutout.png"
    rgba_with_hidden_colour((0, 0, 0)).save(reference)
    rgba_with_hidden_colour((255, 255, 0)).save(cutout)
    as_reference = scorer._embed_files([str(reference)])[0]
    as_cutout = scorer._embed_files([str(cutout)])[0]
    np.testing.assert_allclose(as_reference, as_cutout, atol=1e-6)
    on_grey = Image.new("RGB", (40, 40), (128, 128, 128))
    on_grey.paste((200, 40, 90), (10, 10, 30, 30))
    np.testing.assert_allclose(scorer.embedder.embed_images([on_grey])[0], as_reference, atol=1e-6)
    assert np.asarray(flatten_alpha(rgba_with_hidden_colour((0, 0, 0)))).tolist() == np.asarray(on_grey).tolist()


@pytest.mark.parametrize("box", [(95.0, 70.0, 120.0, 90.0), (-30.0, -20.0, -1.0, -2.0), (79.6, 10.0, 79.9, 12.0)])
def test_an_edge_box_crops_pixels_inside_the_image(box):
    image = images(1)[0]  # 80 x 64
    x0, y0, x1, y1 = crop_box(box, image.width, image.height)
    assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height
    piece = crop(image, box)
    assert piece.size == (x1 - x0, y1 - y0)
    assert np.array_equal(np.asarray(piece), np.asarray(image)[y0:y1, x0:x1])


def test_missing_weights_say_what_to_download(tmp_path):
    with pytest.raises(ModelMissing, match=r"huggingface-cli download google/owlvit-base-patch32"):
        OwlVitDetector("google/owlvit-base-patch32")
    with pytest.raises(ModelMissing, match=r"open_clip ViT-B-32 weights 'openai'.*download timm/vit_base_patch32"
                                           r".*embedder_activation: quickgelu"):
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
    embedder = first["models"]["embedder"]
    assert embedder["architecture"] == "tiny-clip" and embedder["activation"] == "gelu"
    assert embedder["weights_sha256"] == clip_weights.file_sha256(tiny_models["embedder_weights"])
    assert first["models"]["detector"]["model_type"] == "owlvit"


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
