"""The train stage on tiny random SD 1.5-architecture models built in code (64x64, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from stages.backends.train import common, custom_diffusion, lora
from stages.backends.train.trained import load_base, load_pipeline, read_model
from stages.metrics.models import ModelMissing
from tests.conftest import build_in_process
from tests.tiny_models import save_tiny_sd15

GOLDEN = Path(__file__).parent / "golden" / "train_captions"


@pytest.fixture(scope="module")
def tiny_sd15(tmp_path_factory) -> Path:
    return save_tiny_sd15(tmp_path_factory.mktemp("models") / "sd15")


def squares(count: int = 2) -> list[common.Example]:
    """Flat colour images with a bright square: something a UNet can overfit quickly."""
    examples = []
    for index in range(count):
        pixels = np.full((64, 64, 3), (40 + 60 * index, 90, 160), np.uint8)
        pixels[16:48, 16:48] = (250, 220 - 80 * index, 30)
        mask = np.zeros((64, 64), np.uint8)
        mask[16:48, 16:48] = 255
        examples.append(common.Example(Image.fromarray(pixels), f"<cat1> and <mug1> number {index}",
                                       Image.fromarray(mask)))
    return examples


def trainer(base: Path, method, state_dir: Path, steps: int, **options) -> common.Trainer:
    params = common.Params(model=str(base), resolution=64, batch_size=2, learning_rate=1e-3, scale_lr=False,
                           checkpoint_every=3, **options)
    run = common.Run(instances=squares(), priors=[], tokens={"<cat1>": ["cat"], "<mug1>": ["mug"]}, seed=5,
                     steps=steps, state_dir=state_dir)
    return common.Trainer(method, params, load_base(str(base), "backends.train.model"), run)


def fixed_batch_loss(run: common.Trainer) -> float:
    """The noise-prediction loss on the training images at fixed noise and timesteps."""
    generator = torch.Generator().manual_seed(0)
    mean, _ = common.encode(run.run.instances, run.vae, 64, "cpu")
    latents = mean * run.vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.tensor([300, 600])
    ids = run.tokenizer([e.caption for e in run.run.instances], padding="max_length", return_tensors="pt",
                        max_length=run.tokenizer.model_max_length).input_ids
    with torch.no_grad():
        prediction = run.unet(run.scheduler.add_noise(latents, noise, timesteps), timesteps,
                              run.text_encoder(ids)[0]).sample
    return float(((prediction - noise) ** 2).mean())


def parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def test_custom_diffusion_overfits_one_batch_training_only_cross_attention_kv_and_new_tokens(tiny_sd15, tmp_path):
    run = trainer(tiny_sd15, custom_diffusion.Method(), tmp_path / "state", steps=30)
    unet_before = {n: p for n, p in parameters(run.unet).items() if "custom_diffusion" not in n}
    text_before = parameters(run.text_encoder)
    processors_before = {n: p for n, p in parameters(run.unet).items() if "custom_diffusion" in n}
    loss_before = fixed_batch_loss(run)
    run.fit()

    # Only K/V of cross-attention learn: on this tiny random UNet the rest of the network bounds
    # how far the loss can fall (LoRA, below, trains every attention projection and falls further).
    assert fixed_batch_loss(run) < 0.97 * loss_before
    unet_after = parameters(run.unet)
    for name, before in unet_before.items():
        assert torch.equal(unet_after[name], before), f"{name} changed"
    trained = [n for n, p in processors_before.items() if not torch.equal(unet_after[n], p)]
    assert trained and all(n.endswith(("to_k_custom_diffusion.weight", "to_v_custom_diffusion.weight"))
                           for n in processors_before), processors_before.keys()
    assert {n.split(".processor")[0] for n in trained} == {
        n.rsplit(".processor", 1)[0] for n, m in run.unet.attn_processors.items() if m.train_kv}
    assert all("attn2" in n for n in trained)  # cross-attention only
    table_name = next(n for n, p in run.text_encoder.named_parameters() if p is run.embeddings)
    table_before, table_after = text_before[table_name], run.embeddings.detach()
    changed_rows = torch.nonzero((table_after != table_before).any(1)).flatten().tolist()
    assert changed_rows == sorted(run.token_ids)
    for name, before in text_before.items():
        if name != table_name:
            assert torch.equal(dict(run.text_encoder.named_parameters())[name], before), f"{name} changed"


def test_lora_overfits_one_batch(tiny_sd15, tmp_path):
    run = trainer(tiny_sd15, lora.Method(4, 4, seed=1), tmp_path / "state", steps=30, max_grad_norm=100.0)
    run.optimizer.param_groups[0]["lr"] = 1e-2
    loss_before = fixed_batch_loss(run)
    run.fit()
    assert fixed_batch_loss(run) < 0.9 * loss_before


def test_new_tokens_start_from_their_class_nouns(tiny_sd15, tmp_path):
    run = trainer(tiny_sd15, custom_diffusion.Method(), tmp_path / "state", steps=1)
    table = run.text_encoder.get_input_embeddings().weight
    cat = run.tokenizer("cat", add_special_tokens=False).input_ids
    assert torch.allclose(table[run.token_ids[0]], table[cat].mean(0))


def test_a_token_already_in_the_vocabulary_is_refused(tiny_sd15, tmp_path):
    params = common.Params(model=str(tiny_sd15), resolution=64)
    run = common.Run(instances=squares(), priors=[], tokens={"cat": ["cat"]}, seed=0, steps=1, state_dir=tmp_path)
    with pytest.raises(ValueError, match="'cat' is already in the tokenizer's vocabulary"):
        common.Trainer(custom_diffusion.Method(), params, load_base(str(tiny_sd15), "m"), run)


def final_files(outcome: common.Outcome) -> dict[str, bytes]:
    folder = outcome.checkpoints[max(outcome.checkpoints)]
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("method", [custom_diffusion.Method(), lora.Method(4, 4, seed=1)], ids=["cd", "lora"])
def test_killed_training_resumes_from_its_checkpoint_to_the_same_weights(tiny_sd15, tmp_path, method):
    whole = trainer(tiny_sd15, method, tmp_path / "whole", steps=7).fit()

    class Killed(Exception):
        pass

    def kill_at_step_5(step: int) -> None:
        if step == 5:
            raise Killed

    first = trainer(tiny_sd15, method, tmp_path / "killed", steps=7)
    first.run.on_step = kill_at_step_5
    with pytest.raises(Killed):
        first.fit()
    resumed = trainer(tiny_sd15, method, tmp_path / "killed", steps=7).fit()
    assert resumed.resumed_from == 3
    assert resumed.losses == whole.losses
    assert final_files(resumed) == final_files(whole)


@pytest.mark.parametrize("keep", [False, True], ids=["final-only", "keep"])
def test_a_training_killed_after_its_last_resume_point_reruns_to_the_same_files(tiny_sd15, tmp_path, keep):
    """Killed after the state of the last step (7, not a multiple of checkpoint_every 3) was saved
    but before the model was stored: the rerun trains nothing and returns the final weights."""
    whole = trainer(tiny_sd15, custom_diffusion.Method(), tmp_path / "whole", steps=7, keep_checkpoints=keep).fit()

    class Killed(Exception):
        pass

    def kill_at_the_end(step: int) -> None:
        if step == 7:
            raise Killed

    first = trainer(tiny_sd15, custom_diffusion.Method(), tmp_path / "killed", steps=7, keep_checkpoints=keep)
    first.run.on_step = kill_at_the_end
    with pytest.raises(Killed):
        first.fit()
    rerun = trainer(tiny_sd15, custom_diffusion.Method(), tmp_path / "killed", steps=7, keep_checkpoints=keep).fit()
    assert rerun.resumed_from == 7 and rerun.losses == whole.losses
    assert sorted(rerun.checkpoints) == sorted(whole.checkpoints) == ([3, 6, 7] if keep else [7])
    assert final_files(rerun) == final_files(whole)


def generate(pipeline, prompt: str) -> np.ndarray:
    pipeline.set_progress_bar_config(disable=True)
    image = pipeline(prompt, num_inference_steps=3, guidance_scale=6.0, height=64, width=64,
                     generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    return image


@pytest.mark.parametrize("backend", ["custom-diffusion", "lora"])
def test_stage_trains_each_composition_and_stock_loaders_read_the_weights(project, tiny_sd15, backend):
    write_training(project, tiny_sd15, backend, ["strategy.global_token=true"], learning_rate=1e-2)
    build_in_process(project)
    train_in_process(project)
    report = json.loads((project / "reports/train.json").read_text())
    assert report["computed"] == 2 and report["models"]["cat_mug"]["steps"] == 4
    assert report["models"]["cat_mug"]["truncated_captions"] == 0
    model_dir = project / "trained/cat_mug"
    model = read_model(model_dir)
    assert set(model["tokens"]) == {"<cat1>", "<mug1>", "<cat_mug>"} and model["checkpoints"] == [2, 4]
    assert (project / "reports/train_loss/cat_mug.csv").read_text().startswith("step,loss\n1,")

    prompt = "<cat_mug> <cat1> and <mug1> on a beach"
    stock = load_base(str(tiny_sd15), "m")
    if backend == "custom-diffusion":
        # `_pipeline`: without it diffusers builds the processors but never installs them
        # (huggingface/diffusers#9320); with it, this is diffusers' own loading code.
        stock.unet.load_attn_procs(model_dir, weight_name="pytorch_custom_diffusion_weights.bin", _pipeline=stock)
    else:
        stock.load_lora_weights(model_dir, weight_name="pytorch_lora_weights.safetensors")
    tokens = sorted(model["token_files"])
    stock.load_textual_inversion([str(model_dir / model["token_files"][t]) for t in tokens], token=tokens)
    ours = load_pipeline(model_dir)
    # (diffusers' loader picks the non-SDPA processor: equal up to float rounding)
    assert np.allclose(generate(stock, prompt), generate(ours, prompt), atol=1e-5)
    untrained = load_base(str(tiny_sd15), "m")
    untrained.load_textual_inversion([str(model_dir / model["token_files"][t]) for t in tokens], token=tokens)
    assert np.abs(generate(ours, prompt) - generate(untrained, prompt)).max() > 1e-3  # the UNet weights matter
    final = generate(ours, prompt)
    earlier = generate(load_pipeline(model_dir, checkpoint=2), prompt)  # the base is reused, re-targeted
    assert not np.array_equal(earlier, final)
    other = project / "trained/cat_mug_plant"
    reused_base = generate(load_pipeline(other), prompt)
    from stages.backends.train import trained

    trained._BASE.clear()
    assert np.array_equal(reused_base, generate(load_pipeline(other), prompt))  # as from a fresh base
    assert np.array_equal(final, generate(load_pipeline(model_dir), prompt))

    from compiler.cli import main as g4g

    assert g4g(["sample", str(model_dir), prompt, "-n", "2", "-o", str(project / "samples"), "--steps", "2"]) == 0
    assert [Image.open(p).size for p in sorted((project / "samples").iterdir())] == [(64, 64), (64, 64)]


def write_training(project: Path, base: Path, backend: str, extra: list[str], **options) -> None:
    options = {"resolution": 64, "steps": 4, "batch_size": 2, "checkpoint_every": 2, "keep_checkpoints": True,
               "prior": {"num_images": 2, "steps": 2}, **options}
    params = yaml.safe_load((project / "params.yaml").read_text())
    flat = {f"{key}.{inner}": v for key, value in options.items() if isinstance(value, dict)
            for inner, v in value.items()}
    flat.update({key: value for key, value in options.items() if not isinstance(value, dict)})
    params["overrides"] = [f"backends.train.name={backend}", f"+backends.train.model={base}", *extra] + [
        f"+backends.train.{key}={value}" for key, value in flat.items()]
    (project / "params.yaml").write_text(yaml.safe_dump(params))


def train_in_process(project: Path) -> None:
    from compiler import compile as compile_stage
    from stages import train

    assert compile_stage.main(["--params", "params.yaml", "--out", "build/compiled"]) == 0
    train.run(project / "build/compiled/train.json", project / "dataset", project / "templates", project / "trained")


def test_source_mode_trains_on_the_concept_photos_captioned_token_and_noun(project, tiny_sd15):
    write_training(project, tiny_sd15, "custom-diffusion", [], data="source", prior={"source": "none"}, steps=1)
    build_in_process(project)
    train_in_process(project)
    rows = [json.loads(line) for line in (project / "trained/cat_mug/captions.jsonl").read_text().splitlines()]
    assert rows == [{"origin": "pkg:skimage/data/chelsea.png", "caption": "<cat1> cat"},
                    {"origin": "pkg:skimage/data/coffee.png", "caption": "<mug1> mug"}]


def test_each_prompting_strategy_writes_the_captions_of_its_golden_file(project):
    """On packed captions that name only the concepts, so that stating the background shows."""
    from compiler.compile import compile_recipe
    from stages import train

    (project / "templates/captions/tokens.j2").write_text('{{ concepts | map(attribute="name") | join(" and ") }}')
    base = ["strategy.short_caption=captions/tokens.j2"]
    params = yaml.safe_load((project / "params.yaml").read_text())
    (project / "params.yaml").write_text(yaml.safe_dump({**params, "overrides": base}))
    build_in_process(project)
    names = ["global_token", "repeat_tokens", "background_prompt"]
    for strategies in ["none", *names, "all"]:
        on = names if strategies == "all" else [s for s in names if s == strategies]
        overrides = [*base, "backends.train.name=custom-diffusion", *(f"strategy.{s}=true" for s in on)]
        document = compile_recipe(project, "tiny", overrides)["train"]
        train.attach_data(document, project / "dataset")
        item = next(item for item in document["items"] if item["id"] == "cat_mug")
        context = {"templates_dir": str(project / "templates"), "dataset_dir": str(project / "dataset")}
        captions = "".join(e.caption + "\n" for e in train.instances(item, document, context))
        assert captions == (GOLDEN / f"{strategies}.txt").read_text(), strategies


def test_a_caption_past_77_tokens_keeps_the_strategies_and_is_counted(tiny_sd15, tmp_path):
    """Five concepts and a long detailed caption: CLIP cuts the caption's end, not the
    repeated tokens or the background, and the text side reports the overflow."""
    from stages import train
    from stages.templating import Templates

    tokens = {f"<c{n}>": ["cat"] for n in range(5)}
    item = {"concepts": [{"token": t, "class_noun": "cat"} for t in tokens], "global_token": "<all5>"}
    document = {"token_style": "token_noun",
                "strategy": {"global_token": True, "repeat_tokens": True, "background_prompt": True}}
    detailed = "A photo of " + ", ".join(f"{t} cat sitting on a red cushion" for t in tokens) + ". " + \
        " ".join(f"{t} cat is on the left, in front of the others, and is the largest." for t in tokens)
    caption = train.training_caption(Templates(Path(__file__).parents[1] / "templates"), "captions/train.j2",
                                      document, item, detailed, "in the snowy forest")
    params = common.Params(model=str(tiny_sd15), resolution=64)
    run = common.Run(instances=squares(), priors=[], tokens={**tokens, "<all5>": ["cat"]}, seed=0, steps=1,
                     state_dir=tmp_path)
    text = common.Trainer(custom_diffusion.Method(), params, load_base(str(tiny_sd15), "m"), run).text
    tokenizer = text.pairs[0][0]
    read = tokenizer(caption, truncation=True, max_length=77).input_ids
    stated = tokenizer("<all5> " + " and ".join(f"{t} cat" for t in tokens) + ", in the snowy forest:",
                       add_special_tokens=False).input_ids
    assert len(tokenizer(caption).input_ids) > 77 and text.overflowing([caption, "<c0> cat"]) == [caption]
    assert read[1:1 + len(stated)] == stated


def test_training_off_says_so_and_writes_no_model(project):
    build_in_process(project)
    train_in_process(project)
    assert (project / "trained/README.md").read_text().startswith("Training is off")
    assert json.loads((project / "reports/train.json").read_text())["backend"] == "none"


def test_a_missing_base_model_says_what_to_download_and_which_key_to_set():
    with pytest.raises(ModelMissing, match=r"backends.train.model: .*huggingface-cli download "
                                           r"stable-diffusion-v1-5/stable-diffusion-v1-5 .*set backends.train.model"):
        load_base("stable-diffusion-v1-5/stable-diffusion-v1-5", "backends.train.model")


@pytest.mark.parametrize("backend", [lora, custom_diffusion], ids=["lora", "cd"])
def test_an_sdxl_base_trains_and_loads_into_both_text_encoders(tmp_path, backend):
    from stages.backends.train.text import load_tokens
    from tests.tiny_models import save_tiny_sdxl

    base = save_tiny_sdxl(tmp_path / "sdxl")["base"]
    run = trainer(base, backend.method(lora.Params(), seed=1), tmp_path / "state", steps=3)
    assert run.text.sdxl and len(run.text.embeddings) == 2
    outcome = run.fit()
    folder = outcome.checkpoints[3]
    files = {t: f"token-{n}.safetensors" for n, t in enumerate(["<cat1>", "<mug1>"])}

    def sample(pipeline):
        pipeline.set_progress_bar_config(disable=True)
        return pipeline("<cat1> and <mug1>", num_inference_steps=2, height=64, width=64, output_type="np",
                        generator=torch.Generator().manual_seed(0)).images[0]

    trained = load_base(str(base), "m")
    backend.load(trained, folder)  # lora: diffusers' own load_lora_weights
    load_tokens(trained, folder, files)
    for tokenizer, encoder, table in ((trained.tokenizer, trained.text_encoder, run.text.embeddings[0]),
                                      (trained.tokenizer_2, trained.text_encoder_2, run.text.embeddings[1])):
        row = encoder.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids("<mug1>")]
        assert torch.equal(row, table[run.text.token_ids[0][1] if table is run.text.embeddings[0]
                                      else run.text.token_ids[1][1]].detach())
    untrained = load_base(str(base), "m")
    load_tokens(untrained, folder, files)
    assert np.abs(sample(trained) - sample(untrained)).max() > 1e-4


def test_accelerate_launch_spreads_compositions_over_processes_with_the_same_weights(project, tiny_sd15):
    """Two launched processes train one composition each (and half the prior images) into the
    shared item cache; the models are byte-identical to one process's at the same thread count."""
    import shutil

    from tests.conftest import run_tool

    write_training(project, tiny_sd15, "custom-diffusion", [], prior={"num_images": 2, "steps": 1}, steps=2)
    build_in_process(project)
    from compiler import compile as compile_stage

    assert compile_stage.main(["--params", "params.yaml", "--out", "build/compiled"]) == 0
    stage = ["-m", "stages.train", "--items", "build/compiled/train.json", "--dataset", "dataset",
             "--templates", "templates", "--out", "trained"]
    run_tool(project, "accelerate", "launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
             "--mixed_precision", "no", "--dynamo_backend", "no", *stage, OMP_NUM_THREADS="1")
    launched = json.loads((project / "reports/train.json").read_text())
    assert (launched["computed"], launched["reused"]) == (2, 0)
    two = {p.relative_to(project / "trained"): p.read_bytes() for p in (project / "trained").rglob("*") if p.is_file()}
    shutil.rmtree(project / ".g4g/cache")
    run_tool(project, "python", *stage, OMP_NUM_THREADS="1")
    one = {p.relative_to(project / "trained"): p.read_bytes() for p in (project / "trained").rglob("*") if p.is_file()}
    assert one == two


def test_mask_loss_counts_only_the_concepts_pixels(tiny_sd15, tmp_path):
    def first_loss(name: str, mask_loss: bool, full_masks: bool = False) -> float:
        run = trainer(tiny_sd15, custom_diffusion.Method(), tmp_path / name, steps=1, mask_loss=mask_loss)
        if full_masks:
            for example in run.run.instances:
                example.mask = Image.new("L", (64, 64), 255)
        return run.fit().losses[0]

    plain = first_loss("plain", mask_loss=False)
    assert first_loss("full", mask_loss=True, full_masks=True) == pytest.approx(plain, rel=1e-6)
    assert first_loss("square", mask_loss=True) != pytest.approx(plain, rel=1e-3)  # squares(): the square only


def test_prior_images_from_a_folder_train_beside_the_instances(project, tiny_sd15):
    for noun in ("cat", "mug", "houseplant"):
        folder = project / "priors" / noun
        folder.mkdir(parents=True)
        Image.new("RGB", (64, 64), (10, 200, 30)).save(folder / "a.png")
    write_training(project, tiny_sd15, "custom-diffusion", [], prior={"source": "folder", "folder": "priors"},
                   steps=1)
    build_in_process(project)
    train_in_process(project)
    with_prior = read_model(project / "trained/cat_mug")["key"]
    write_training(project, tiny_sd15, "custom-diffusion", [], prior={"source": "none"}, steps=1)
    train_in_process(project)
    assert read_model(project / "trained/cat_mug")["key"] != with_prior
    (project / "priors/mug/a.png").unlink()
    write_training(project, tiny_sd15, "custom-diffusion", [], prior={"source": "folder", "folder": "priors"},
                   steps=1)
    from stages.runtime.runner import StageFailed

    with pytest.raises(StageFailed, match=r"prior.folder: no images in priors/mug for class 'mug'"):
        train_in_process(project)


def test_sdxl_conditioning_is_what_the_diffusers_pipeline_feeds_its_unet(tmp_path):
    """Prompt embeddings, pooled embeddings and size conditioning, against the stock SDXL
    pipeline's own `encode_prompt` and `_get_add_time_ids`."""
    from stages.backends.train.text import TextEncoders
    from tests.tiny_models import save_tiny_sdxl

    pipeline = load_base(str(save_tiny_sdxl(tmp_path / "sdxl")["base"]), "m")
    text = TextEncoders(pipeline, {"<cat1>": ["cat"]}, resolution=64)
    captions = ["<cat1> on the grass", "a <cat1> in the garden"]
    with torch.no_grad():
        states, added = text.encode(captions, "cpu")
        embeds, _, pooled, _ = pipeline.encode_prompt(captions, device="cpu", num_images_per_prompt=1,
                                                      do_classifier_free_guidance=False)
        time_ids = pipeline._get_add_time_ids((64, 64), (0, 0), (64, 64), dtype=torch.float32,
                                              text_encoder_projection_dim=pipeline.text_encoder_2.config.projection_dim)
    assert torch.allclose(states, embeds, atol=1e-6) and torch.allclose(added["text_embeds"], pooled, atol=1e-6)
    assert torch.equal(added["time_ids"].float(), time_ids.repeat(2, 1))
