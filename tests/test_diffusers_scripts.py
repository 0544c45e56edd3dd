"""diffusers' own example trainers, unmodified, on `g4g export` with the commands it writes.

The scripts are not ours to ship: set G4G_DIFFUSERS_EXAMPLES to the `examples` folder of a
diffusers clone (docs/training.md says how); without it the test is skipped. On a tiny random
SD 1.5-shaped model, 2 steps each:
  custom_diffusion/train_custom_diffusion.py              on export/diffusers/<composition>/
  advanced_diffusion_training/train_dreambooth_lora_sd15_advanced.py   on export/imagefolder/<composition>/
Each must exit 0 and save its weights and every new token, and the images, captions and
tokens its own dataset class reads (built from the arguments the written command passes) must
equal what `train` trains on.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import build_in_process
from tests.test_export import trained_on
from tests.test_train import write_training
from tests.tiny_models import save_tiny_sd15

EXAMPLES = os.environ.get("G4G_DIFFUSERS_EXAMPLES", "")
pytestmark = pytest.mark.skipif(not EXAMPLES, reason="set G4G_DIFFUSERS_EXAMPLES to the examples folder of a "
                                                    "diffusers clone (docs/training.md)")
TOKEN = re.compile(r"<[^<>\s]+>")
DUMP_ARGV = "import json, os, sys; json.dump([os.getcwd(), *sys.argv[1:]], open(os.environ['ARGV_OUT'], 'w'))\n"


def script_module(relative: str):
    """The example script as a module (its main() only runs as __main__)."""
    path = Path(EXAMPLES) / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_command(script: Path, out: Path, env: dict[str, str], *options: str) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    environment = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "DIFFUSERS_EXAMPLES": EXAMPLES,
                   "HF_HUB_OFFLINE": "1", "OUTPUT_DIR": str(out), **env}
    return subprocess.run(["sh", str(script), *options], capture_output=True, text=True, env=environment,
                          cwd=Path.cwd())


def written_arguments(script: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """(working directory, argv after the script path) of the command the export wrote."""
    dumper = tmp_path / "dump_argv.py"
    dumper.write_text(DUMP_ARGV)
    argv_file = tmp_path / f"{script.stem}.argv.json"
    result = run_command(script, Path("out"), {"LAUNCH": f"{sys.executable} {dumper}", "ARGV_OUT": str(argv_file)})
    assert result.returncode == 0, result.stderr
    cwd, script_path, *argv = json.loads(argv_file.read_text())
    assert Path(script_path) == Path(EXAMPLES) / ("custom_diffusion" if "custom" in script.stem else
                                                  "advanced_diffusion_training") / f"{script.stem}.py"
    return Path(cwd), argv


def pixels(image) -> bytes:
    return np.asarray(Image.open(image).convert("RGB") if isinstance(image, (str, Path)) else image.convert("RGB")).tobytes()


@pytest.fixture(scope="module")
def tiny_sd15(tmp_path_factory) -> Path:
    return save_tiny_sd15(tmp_path_factory.mktemp("models") / "sd15")


def test_the_diffusers_scripts_train_on_the_exports_with_the_written_commands(project, tiny_sd15, tmp_path):
    from compiler import compile as compile_stage
    from compiler.cli import main as g4g
    from transformers import AutoTokenizer

    for number, noun in enumerate(("cat", "mug", "houseplant")):
        (project / "priors" / noun).mkdir(parents=True)
        Image.new("RGB", (64, 64), (10, 60 * number, 30)).save(project / "priors" / noun / "a.png")
    write_training(project, tiny_sd15, "custom-diffusion", ["strategy.repeat_tokens=true", "strategy.global_token=true"],
                   prior={"source": "folder", "folder": "priors"}, caption="detailed", augment=False)
    build_in_process(project)
    assert compile_stage.main(["--params", "params.yaml", "--out", "build/compiled"]) == 0
    assert g4g(["export", "diffusers"]) == 0 and g4g(["export", "imagefolder"]) == 0
    instances, priors = trained_on(project)
    used = sorted({token for _, caption in instances for token in TOKEN.findall(caption)})
    assert used == ["<cat1>", "<cat_mug>", "<mug1>"] and all(c.startswith("<cat_mug> ") for _, c in instances)

    # Custom Diffusion: what its dataset reads from the written command's arguments ...
    script = project / "export/diffusers/cat_mug/train_custom_diffusion.sh"
    cwd, argv = written_arguments(script, tmp_path)
    custom = script_module("custom_diffusion/train_custom_diffusion.py")
    args = custom.parse_args(argv)
    assert sorted(args.modifier_token.split("+")) == used and args.resolution == 64 and args.noaug
    tokenizer = AutoTokenizer.from_pretrained(args.pretrained_model_name_or_path, subfolder="tokenizer", use_fast=False)
    starts = dict(zip(args.modifier_token.split("+"), args.initializer_token.split("+")))
    assert starts == {"<cat1>": "cat", "<mug1>": "mug", "<cat_mug>": "cat"}
    for word in starts.values():  # the script's own one-token check, which transformers 5 no longer enforces
        assert len(tokenizer.encode([word], add_special_tokens=False)) == 1
    os.chdir(cwd)
    concepts = json.loads(Path(args.concepts_list).read_text())
    for concept in concepts:  # main()'s --real_prior handling
        concept["class_prompt"] = os.path.join(concept["class_data_dir"], "caption.txt")
        concept["class_data_dir"] = os.path.join(concept["class_data_dir"], "images.txt")
    dataset = custom.CustomDiffusionDataset(concepts_list=concepts, tokenizer=tokenizer, size=args.resolution,
                                            center_crop=args.center_crop, with_prior_preservation=True,
                                            num_class_images=args.num_class_images, hflip=args.hflip, aug=not args.noaug)
    assert sorted((pixels(p), c) for p, c in dataset.instance_images_path) == instances
    assert sorted((pixels(p), c) for p, c in dataset.class_images_path) == sorted(priors * len(concepts))
    os.chdir(project)
    # ... and the command itself, run as written (2 steps)
    result = run_command(script, tmp_path / "cd", {}, "--max_train_steps", "2", "--report_to", "all")
    assert result.returncode == 0, result.stderr[-4000:]
    saved = sorted(p.name for p in (tmp_path / "cd").iterdir())
    assert {"pytorch_custom_diffusion_weights.safetensors", *(f"{t}.safetensors" for t in used)} <= set(saved), saved

    # LoRA (SD 1.5, --dataset_name): the same for the imagefolder export
    script = project / "export/imagefolder/cat_mug/train_dreambooth_lora_sd15_advanced.sh"
    _, argv = written_arguments(script, tmp_path)
    lora = script_module("advanced_diffusion_training/train_dreambooth_lora_sd15_advanced.py")
    lora.args = args = lora.parse_args(argv)  # its dataset reads the global `args`
    abstractions = "".join(args.token_abstraction.split()).split(",")
    assert sorted(abstractions) == used and args.num_new_tokens_per_abstraction == 1 and args.train_text_encoder_ti
    replacements = {token: [f"<s{number}>"] for number, token in enumerate(abstractions)}  # main()'s mapping
    dataset = lora.DreamBoothDataset(
        instance_data_root=args.instance_data_dir, instance_prompt=args.instance_prompt, class_prompt=args.class_prompt,
        dataset_name=args.dataset_name, dataset_config_name=args.dataset_config_name, cache_dir=args.cache_dir,
        image_column=args.image_column, caption_column=args.caption_column, train_text_encoder_ti=True,
        token_abstraction_dict=replacements, size=args.resolution, repeats=args.repeats, center_crop=args.center_crop)
    assert sorted(zip(map(pixels, dataset.instance_images), dataset.custom_instance_prompts)) == instances
    caption = dataset[0]["instance_prompt"]
    assert not TOKEN.findall(caption.replace("<s0>", "").replace("<s1>", "").replace("<s2>", ""))
    out = tmp_path / "lora-run"
    out.mkdir()
    os.chdir(out)
    result = run_command(script, Path("lora"), {}, "--max_train_steps", "2", "--report_to", "all")
    os.chdir(project)
    assert result.returncode == 0, result.stderr[-4000:]
    assert {"pytorch_lora_weights.safetensors", "lora_emb.safetensors"} <= {p.name for p in (out / "lora").iterdir()}
