"""`g4g export`: the reference scripts' own data loading reads what the train stage trains on."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import build_in_process
from tests.test_train import write_training
from tests.tiny_models import save_tiny_sd15


@pytest.fixture(scope="module")
def tiny_sd15(tmp_path_factory) -> Path:
    return save_tiny_sd15(tmp_path_factory.mktemp("models") / "sd15")


def reference_pairs(concepts_list, with_prior_preservation, num_class_images):
    """Ported from diffusers' train_custom_diffusion.py: main()'s --real_prior handling, then
    `CustomDiffusionDataset.__init__`'s (image path, prompt) lists and __getitem__'s Image.open."""
    for concept in concepts_list:
        class_images_dir = Path(concept["class_data_dir"])
        assert (class_images_dir / "images").exists()
        assert len(list((class_images_dir / "images").iterdir())) == num_class_images
        assert (class_images_dir / "caption.txt").exists()
        assert (class_images_dir / "images.txt").exists()
        concept["class_prompt"] = os.path.join(class_images_dir, "caption.txt")
        concept["class_data_dir"] = os.path.join(class_images_dir, "images.txt")
    dataset_instances, dataset_classes = [], []  # the dataset's self.instance_images_path, self.class_images_path
    for concept in concepts_list:
        inst_img_path = [(x, concept["instance_prompt"]) for x in Path(concept["instance_data_dir"]).iterdir()
                         if x.is_file()]
        dataset_instances.extend(inst_img_path)
        if with_prior_preservation:
            class_data_root = Path(concept["class_data_dir"])
            if os.path.isdir(class_data_root):
                class_images_path = list(class_data_root.iterdir())
                class_prompt = [concept["class_prompt"] for _ in range(len(class_images_path))]
            else:
                with open(class_data_root, "r") as f:
                    class_images_path = f.read().splitlines()
                with open(concept["class_prompt"], "r") as f:
                    class_prompt = f.read().splitlines()
            class_img_path = list(zip(class_images_path, class_prompt))
            dataset_classes.extend(class_img_path[:num_class_images])

    def load(pairs):
        return sorted((np.asarray(Image.open(path).convert("RGB")).tobytes(), prompt) for path, prompt in pairs)

    return load(dataset_instances), load(dataset_classes)


def trained_on(project: Path):
    """(pixels, caption) of every training image and prior image, as the train stage reads them."""
    from base.files import read_json
    from stages import train

    document = read_json(project / "build/compiled/train.json")
    train.attach_data(document, project / "dataset")
    context = {"templates_dir": str(project / "templates"), "dataset_dir": str(project / "dataset"),
               "prior_files": {noun: [str(p) for p in sorted((project / "priors" / noun).iterdir())]
                               for noun in ("cat", "mug", "houseplant")}}
    item = next(item for item in document["items"] if item["id"] == "cat_mug")

    def pairs(examples):
        return sorted((np.asarray(e.image.convert("RGB")).tobytes(), e.caption) for e in examples)

    return pairs(train.instances(item, document, context)), pairs(train.priors(item, context))


def test_exports_load_with_the_reference_scripts_data_loading(project, tiny_sd15):
    from compiler.cli import main as g4g
    from compiler import compile as compile_stage

    for number, noun in enumerate(("cat", "mug", "houseplant")):
        (project / "priors" / noun).mkdir(parents=True)
        Image.new("RGB", (64, 64), (10, 60 * number, 30)).save(project / "priors" / noun / "a.png")
    write_training(project, tiny_sd15, "custom-diffusion", ["strategy.repeat_tokens=true"],
                   prior={"source": "folder", "folder": "priors"}, caption="detailed")
    build_in_process(project)
    assert compile_stage.main(["--params", "params.yaml", "--out", "build/compiled"]) == 0
    assert g4g(["export", "diffusers"]) == 0 and g4g(["export", "imagefolder"]) == 0
    instances, priors = trained_on(project)
    assert len(instances) > 2 and len({caption for _, caption in instances}) > 1

    folder = project / "export/diffusers/cat_mug"
    first = (folder / "concept_list.json").read_bytes()
    os.chdir(folder)  # the script's paths are relative to where it runs
    concepts = json.loads(first)
    assert reference_pairs(concepts, True, num_class_images=len(priors)) == (instances, sorted(priors * len(concepts)))
    os.chdir(project)

    from datasets import load_dataset

    rows = load_dataset(str(project / "export/imagefolder/cat_mug"), split="train")  # by path, as --dataset_name
    assert rows.column_names == ["image", "text"]
    assert sorted((np.asarray(r["image"].convert("RGB")).tobytes(), r["text"]) for r in rows) == instances
    assert not list((project / "export/imagefolder/cat_mug/train").glob("*.txt"))  # they make it a text dataset

    assert g4g(["export", "diffusers"]) == 0
    assert (folder / "concept_list.json").read_bytes() == first  # the same build, the same bytes


def test_each_token_starts_from_a_word_that_is_one_clip_token(tmp_path):
    """--initializer_token must be one token of the base model's tokenizer (the real CLIP BPE):
    a one-token noun itself, else its head's last word piece; the composition token (several
    nouns) takes the first; a token holding the script's separator is refused by name."""
    from transformers import CLIPTokenizer

    from stages import export_scripts
    from tests.tiny_models import clip_tokenizer_files

    folder = clip_tokenizer_files(tmp_path / "tokenizer")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    cases = {("cat",): "cat", ("houseplant",): "plant", ("teddy bear",): "bear", ("cat", "mug"): "cat",
             ("houseplant", "mug"): "mug"}
    for words, expected in cases.items():
        start = export_scripts.initializer(tokenizer, list(words))
        assert start == expected and len(tokenizer(start, add_special_tokens=False).input_ids) == 1
    with pytest.raises(ValueError, match=r"token '<a\+b>': the script's --modifier_token is split at '\+'"):
        export_scripts.check_token("<a+b>", "+", "--modifier_token")
