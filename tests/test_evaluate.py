"""The evaluate stage: aggregation, Table 1, prompts, and the stage on tiny models (CPU)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from base.errors import RecipeError
from base.files import write_json
from compiler.buildplan import Fingerprints
from compiler.evaluation_plan import evaluation_document
from compiler.fingerprint import FileMemo
from compiler.recipe import compose_recipe, validate
from stages import evaluate
from stages.metrics.aggregate import summarize
from stages.metrics.table import format_table
from tests.conftest import TINY_RECIPE, build_in_process, write_recipe
from tests.tiny_models import save_tiny_open_clip, save_tiny_owlvit, save_tiny_sd15

GOLDEN = Path(__file__).parent / "golden"


def row(composition, cp_clip, ti_clip, mixing, assigned=None):
    return {"composition": composition, "cp_clip": cp_clip, "cp_clip_assigned": cp_clip if assigned is None else assigned,
            "identity_mixing": mixing, "ti_clip": ti_clip}


def test_bins_are_means_over_their_images_with_the_papers_values_beside():
    rows = [row("a", 0.2, 0.10, 0.0), row("a", 0.4, 0.20, None), row("b", 0.6, 0.30, 1.0),  # <=3
            row("c", 0.5, 0.15, 0.5, assigned=0.3), row("c", 0.7, 0.25, 0.0, assigned=0.1)]  # 4
    summary = summarize(rows, {"a": "<=3", "b": "<=3", "c": "4", "d": "5"}, "composed")
    low = summary["bins"]["<=3"]
    assert low["cp_clip"] == pytest.approx(0.4)  # (0.2 + 0.4 + 0.6) / 3
    assert low["ti_clip"] == pytest.approx(0.2)
    assert low["identity_mixing"] == pytest.approx(0.5) and low["identity_mixing_images"] == 2  # None left out
    assert low["images"] == 3 and low["compositions"] == 2
    assert low["paper"] == {"cp_clip": 0.41, "ti_clip": 0.17}
    four = summary["bins"]["4"]
    assert (four["cp_clip"], four["cp_clip_assigned"], four["ti_clip"]) == pytest.approx((0.6, 0.2, 0.2))
    assert four["paper"] == {"cp_clip": 0.47, "ti_clip": 0.17}
    assert "5" not in summary["bins"]  # no images, no bin
    assert summary["compositions"]["a"]["cp_clip"] == pytest.approx(0.3)
    assert summary["compositions"]["b"] == {"bin": "<=3", "images": 1, "cp_clip": 0.6, "cp_clip_assigned": 0.6,
                                            "identity_mixing": 1.0, "identity_mixing_images": 1, "ti_clip": 0.3}


def test_every_checkpoint_is_reported_and_the_best_is_marked_as_chosen_on_the_test_prompts():
    def image(composition, step, cp_clip, final):
        return {**row(composition, cp_clip, 0.1, 0.0), "variant": f"step-{step}", "checkpoint": step, "final": final}

    document = {"compositions": {"a": {"bin": "<=3"}, "b": {"bin": "4"}},
                "setting": {"paper_row": "strategies"}, "backend": {"params": {"checkpoints": "all"}}}
    rows = [image("a", 500, 0.5, False), image("a", 1000, 0.3, True), image("b", 500, 0.2, False),
            image("b", 1000, 0.4, True), {**row("a", 0.1, 0.3, None), "variant": "base", "checkpoint": None,
                                          "final": False}]
    metrics = evaluate.metrics_document(rows, document)
    assert metrics["bins"]["<=3"]["cp_clip"] == 0.3 and metrics["compositions"]["a"]["checkpoint"] == 1000
    assert metrics["checkpoints"]["a"]["500"]["cp_clip"] == 0.5
    best = metrics["best_checkpoint"]
    assert best["selected_on"] == "the evaluation prompts (selection on the test set)"
    assert (best["compositions"]["a"]["checkpoint"], best["compositions"]["b"]["checkpoint"]) == (500, 1000)
    assert best["bins"]["<=3"]["cp_clip"] == 0.5 and best["bins"]["4"]["paper"]["cp_clip"] == 0.55
    assert metrics["baseline"]["bins"]["<=3"]["cp_clip"] == 0.1 and "paper" not in metrics["baseline"]["bins"]["<=3"]


HEADER = ("Gen4Gen Table 1: CP-CLIP / TI-CLIP per number of concepts (higher CP-CLIP is better; TI-CLIP should stay "
          "flat). weights: final, or best* = best checkpoint chosen on the evaluation prompts (the paper's rows report "
          "the best)")


def test_table_1_layout_from_dvc_exp_show():
    """The fixture is real `dvc exp show --json` output of three `dvc exp run -S` settings (from
    before the protocol was recorded); their base rows agree, so they are one row."""
    table = format_table(json.loads((GOLDEN / "exp_show.json").read_text()))
    assert table.splitlines() == [
        HEADER, "", "protocol: not recorded",
        "setting                                         experiment     backend           weights  <=3          4            5",
        "Custom Diffusion + source photos                paper          custom-diffusion  best     0.26 / 0.16  0.21 / 0.13  0.23 / 0.17",
        "                                                source         custom-diffusion  final    0.31 / 0.18  0.22 / 0.14  -",
        "Custom Diffusion + composed dataset (MyCanvas)  paper          custom-diffusion  best     0.41 / 0.17  0.47 / 0.17  0.50 / 0.15",
        "                                                master         custom-diffusion  final    0.44 / 0.17  0.45 / 0.16  -",
        "                                                composed       custom-diffusion  final    0.44 / 0.17  0.45 / 0.16  -",
        "+ prompting strategies                          paper          custom-diffusion  best     0.51 / 0.17  0.55 / 0.16  0.57 / 0.14",
        "                                                strategies     custom-diffusion  final    0.52 / 0.16  0.58 / 0.15  -",
        "untrained base model (class nouns)              4 experiments  none              -        0.20 / 0.19  -            -",
    ]


def test_table_labels_every_row_shares_one_base_row_and_separates_other_protocols():
    def experiment(name, train, paper, cp_clip, protocol="ddim 200; owlvit 0.1", base=0.2, best=None):
        metrics = {"evaluated": True, "bins": {"<=3": {"cp_clip": cp_clip, "ti_clip": 0.17}},
                   "baseline": {"bins": {"<=3": {"cp_clip": base, "ti_clip": 0.19}}},
                   "setting": {"train": train, "data": "dataset", "strategies": "none", "paper_row": paper,
                               "checkpoints": "all" if best else "final", "protocol": protocol}}
        if best:
            metrics["best_checkpoint"] = {"bins": {"<=3": {"cp_clip": best, "ti_clip": 0.16}}}
        return {"rev": name * 4, "name": name, "experiments": None,
                "data": {"metrics": {"metrics/evaluate.json": {"data": metrics}}}}

    shown = [experiment("cd", "custom-diffusion", "composed", 0.44, best=0.47),
             experiment("lora", "lora", "", 0.40), experiment("cd2", "custom-diffusion", "composed", 0.45),
             experiment("thr5", "custom-diffusion", "composed", 0.30, protocol="ddim 200; owlvit 0.5", base=0.1)]
    assert format_table(shown).splitlines() == [
        HEADER, "", "protocol: ddim 200; owlvit 0.1",
        "setting                                         experiment     backend           weights  <=3          4            5",
        "Custom Diffusion + composed dataset (MyCanvas)  paper          custom-diffusion  best     0.41 / 0.17  0.47 / 0.17  0.50 / 0.15",
        "                                                cd             custom-diffusion  final    0.44 / 0.17  -            -",
        "                                                cd             custom-diffusion  best*    0.47 / 0.16  -            -",
        "                                                cd2            custom-diffusion  final    0.45 / 0.17  -            -",
        "lora + composed dataset",
        "                                                lora           lora              final    0.40 / 0.17  -            -",
        "untrained base model (class nouns)              3 experiments  none              -        0.20 / 0.19  -            -",
        "", "protocol: ddim 200; owlvit 0.5  (not comparable with the rows above)",
        "setting                                         experiment  backend           weights  <=3          4            5",
        "Custom Diffusion + composed dataset (MyCanvas)  paper       custom-diffusion  best     0.41 / 0.17  0.47 / 0.17  0.50 / 0.15",
        "                                                thr5        custom-diffusion  final    0.30 / 0.17  -            -",
        "untrained base model (class nouns)              thr5        none              -        0.10 / 0.19  -            -",
    ]


def test_table_reads_the_setting_beside_results_only_metrics():
    """metrics/evaluate.json holds results only; the setting comes from each revision's
    evaluation/summary.json (here a stand-in reader keyed by revision)."""
    def experiment(name, rev, cp_clip):
        return {"rev": rev, "name": name, "experiments": None,
                "data": {"metrics": {"metrics/evaluate.json": {"data": {
                    "evaluated": True, "bins": {"<=3": {"cp_clip": cp_clip, "ti_clip": 0.17}}}}}}}

    settings = {"a" * 40: {"train": "custom-diffusion", "data": "source", "strategies": "none",
                           "paper_row": "source", "protocol": "ddim 200"},
                "b" * 40: {"train": "custom-diffusion", "data": "dataset", "strategies": "global_token",
                           "paper_row": "strategies", "protocol": "ddim 200"}}
    table = format_table([experiment("source", "a" * 40, 0.30), experiment("strategies", "b" * 40, 0.52),
                          experiment("lost", "c" * 40, 0.1)], lambda rev: settings.get(rev, {}))
    lines = table.splitlines()
    assert lines[2] == "protocol: ddim 200"
    assert lines[4].startswith("Custom Diffusion + source photos") and "source " in lines[5] and "0.30 / 0.17" in lines[5]
    assert lines[6].startswith("+ prompting strategies") and "0.52 / 0.17" in lines[7]
    assert "protocol: not recorded  (not comparable with the rows above)" in table  # no setting found


def test_dvc_metrics_diff_shows_the_change_between_two_evaluations(dvc_project):
    from tests.conftest import run_tool

    document = {"compositions": {"a": {"bin": "<=3"}, "b": {"bin": "4"}}, "setting": {"paper_row": "composed"},
                "backend": {"params": {"checkpoints": "final"}}}

    def evaluation(cp_clip_a):
        rows = [{**row("a", cp_clip_a, 0.2, 0.0), "variant": "step-4", "checkpoint": 4, "final": True},
                {**row("b", 0.5, 0.1, 0.0), "variant": "step-4", "checkpoint": 4, "final": True}]
        write_json(dvc_project / "metrics/evaluate.json", evaluate.metrics_document(rows, document))

    evaluation(0.3)
    run_tool(dvc_project, "git", "add", "-A")
    run_tool(dvc_project, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    evaluation(0.45)
    diff = json.loads(run_tool(dvc_project, "dvc", "metrics", "diff", "--json").stdout)["metrics/evaluate.json"]
    assert diff["bins.<=3.cp_clip"] == {"old": 0.3, "new": 0.45, "diff": pytest.approx(0.15)}
    assert "bins.4.cp_clip" not in diff  # unchanged
    shown = run_tool(dvc_project, "dvc", "metrics", "show").stdout
    assert "bins.<=3.cp_clip" in shown and "bins.<=3.paper.cp_clip" in shown


def test_an_experiment_without_evaluation_is_named_with_its_reason():
    shown = [{"rev": "abc1234def", "name": "main", "data": {"metrics": {"metrics/evaluate.json": {"data": {
        "evaluated": False, "reason": "training is off"}}}}, "experiments": None}]
    assert format_table(shown).splitlines()[-1] == "not evaluated: main: training is off"


# --- compile time: prompts ------------------------------------------------------------------

def compile_evaluation(root: Path, overrides: list[str]) -> dict:
    """build/compiled/evaluate.json's content for the tiny recipe (the rest of the plan is not built)."""
    recipe = compose_recipe(root / "recipes", "tiny", overrides)
    backends_config = validate(recipe, root / "recipes/tiny.yaml", root / "templates")
    return evaluation_document(recipe, backends_config, Fingerprints(root, root / "templates", FileMemo(None)),
                               root / "templates")


TEMPLATE_BACKGROUNDS = {"on a frozen lake in the snow", "in a sunlit kitchen", "on a sandy beach at sunset",
                        "in an old library", "on a city street at night", "in an autumn park"}
EVALUATE_ON = ["backends.evaluate.name=clip", "backends.train.name=custom-diffusion", "+backends.train.model=base"]


def test_default_prompt_uses_an_unseen_background_and_the_concept_names(project):
    document = compile_evaluation(project, [*EVALUATE_ON, "strategy.global_token=true",
                                                      "strategy.token_style=token_noun"])
    prompts = document["compositions"]["cat_mug"]["prompts"]
    [prompt] = prompts  # the paper's kind: a long scene, objects the concepts did not come with, positions
    text, background = prompt["text"], prompt["background"]
    assert text.startswith("<cat_mug> ") and len(text.split()) >= 20 and background in TEMPLATE_BACKGROUNDS
    assert re.search(r"\. A <cat1> cat [a-z ]+, a <mug1> mug [a-z ]+\.$", text), text
    training = {b["phrase"] for b in TINY_RECIPE["backgrounds"].values()}
    assert background not in training
    scenes = {comp["prompts"][0]["background"] for comp in document["compositions"].values()}
    assert compile_evaluation(project, [*EVALUATE_ON, "strategy.global_token=true",
                                        "strategy.token_style=token_noun"])["compositions"] == document["compositions"]
    reseeded = compile_evaluation(project, [*EVALUATE_ON, "seed=1"])["compositions"]
    assert scenes | {comp["prompts"][0]["background"] for comp in reseeded.values()} != {background}  # seeded choice
    items = [i for i in document["items"] if i["composition"] == "cat_mug"]
    assert [i["id"] for i in items] == [f"cat_mug/p0-s{s}" for s in range(6)]  # the paper's 6 samples
    assert len({i["seed"] for i in items}) == 6
    assert document["setting"] == {
        "train": "custom-diffusion", "data": "dataset", "strategies": "global_token", "paper_row": "strategies",
        "checkpoints": "final", "protocol": "ddim 200 steps, guidance 6.0, eta 1.0, 512px; google/owlvit-base-patch32 "
                                            "threshold 0.1; ViT-B-32 (openai)"}
    assert prompt["baseline"] == re.sub(r"<cat_mug> |<cat1> |<mug1> ", "", text)  # class nouns, no tokens
    assert document["compositions"]["cat_mug_plant"]["bin"] == "<=3"


def test_the_base_model_paints_the_same_images_in_every_experiment(project, tmp_path):
    """Its prompt has class nouns for tokens, so experiments on one recipe share its images (same keys)."""
    bases = []
    for extra in ([], ["strategy.global_token=true", "strategy.token_style=token_noun", "strategy.repeat_tokens=true"]):
        document = compile_evaluation(project, [*EVALUATE_ON, "+backends.evaluate.baseline=true", *extra])
        variants, _, _ = evaluate.model_variants(document, tmp_path / "no-models")
        bases.append([(i["id"], i["text"], json.dumps(i["parts"], sort_keys=True))
                      for i in evaluate.generation_items(document, variants) if i["variant"] == "base"])
    assert bases[0] == bases[1] and len(bases[0]) == 12
    assert all("<" not in text and " cat " in text for _, text, _ in bases[0])


def test_inline_prompts_render_in_the_sandbox_and_must_set_their_background(project):
    recipe = copy.deepcopy(TINY_RECIPE)
    recipe["compositions"]["cat_mug"]["eval_prompts"] = [
        '{% set background = "in a snowy forest" %}{{ concepts[0].token }} next to {{ concepts[1].token }} '
        '{{ background }}']
    write_recipe(project, recipe)
    document = compile_evaluation(project, EVALUATE_ON)
    assert document["compositions"]["cat_mug"]["prompts"] == [
        {"text": "<cat1> next to <mug1> in a snowy forest", "background": "in a snowy forest",
         "baseline": "cat next to mug in a snowy forest"}]

    recipe["compositions"]["cat_mug"]["eval_prompts"] = ["{{ concepts[0].token }} on a beach"]
    write_recipe(project, recipe)
    with pytest.raises(RecipeError, match=r"compositions.cat_mug.eval_prompts\[0\]: .*must .*set `background`"):
        compile_evaluation(project, EVALUATE_ON)
    recipe["compositions"]["cat_mug"]["eval_prompts"] = ['{% set background = "x" %}{{ concepts.__class__ }}']
    write_recipe(project, recipe)
    with pytest.raises(RecipeError, match=r"eval_prompts\[0\]: SecurityError"):
        compile_evaluation(project, EVALUATE_ON)


def test_metric_options_do_not_touch_the_generation_keys(project):
    first = compile_evaluation(project, EVALUATE_ON)
    other_metric = compile_evaluation(project, [*EVALUATE_ON, "+backends.evaluate.detection_threshold=0.3"])
    other_sampler = compile_evaluation(project, [*EVALUATE_ON, "+backends.evaluate.guidance_scale=7.5"])
    assert [i["parts"] for i in first["items"]] == [i["parts"] for i in other_metric["items"]]
    assert first["measurement"] != other_metric["measurement"]
    assert first["items"][0]["parts"] != other_sampler["items"][0]["parts"]
    assert first["measurement"] == other_sampler["measurement"]


def test_a_baseline_with_training_off_needs_its_base_model(project):
    with pytest.raises(RecipeError, match="backends.evaluate.baseline_model: baseline: true with training off"):
        compile_evaluation(project, ["backends.evaluate.name=clip", "+backends.evaluate.baseline=true"])


# --- the stage on tiny models -----------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny-evaluate")
    config, checkpoint = save_tiny_open_clip(root / "clip")
    return {"sd15": str(save_tiny_sd15(root / "sd15")), "detector": str(save_tiny_owlvit(root / "owlvit")),
            "embedder_weights": str(checkpoint), "embedder_config": str(config)}


@pytest.fixture
def one_thread():
    """Tiny UNets run fastest on one thread on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def set_overrides(project: Path, tiny: dict[str, str], train: bool = True, **evaluation) -> None:
    options = {"detector": tiny["detector"], "embedder": "tiny-clip", "embedder_weights": tiny["embedder_weights"],
               "embedder_config": tiny["embedder_config"], "detection_threshold": 0.0, "steps": 2, "resolution": 64,
               "samples_per_prompt": 2, **evaluation}
    overrides = ["backends.evaluate.name=clip"] + [f"+backends.evaluate.{k}={v}" for k, v in options.items()]
    if train:
        overrides += ["backends.train.name=custom-diffusion", f"+backends.train.model={tiny['sd15']}",
                      "+backends.train.resolution=64", "+backends.train.steps=2", "+backends.train.batch_size=2",
                      "+backends.train.checkpoint_every=1", "+backends.train.keep_checkpoints=true",
                      "+backends.train.prior={source: none}"]
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["overrides"] = overrides
    (project / "params.yaml").write_text(yaml.safe_dump(params))


def evaluate_in_process(project: Path) -> dict:
    from compiler import compile as compile_stage

    assert compile_stage.main(["--params", "params.yaml", "--out", "build/compiled"]) == 0
    evaluate.run(project / "build/compiled/evaluate.json", project / "trained", project / "evaluation",
                 project / "metrics/evaluate.json")
    return json.loads((project / "reports/evaluate.json").read_text())


def train_in_process(project: Path) -> None:
    from compiler import compile as compile_stage
    from stages import train

    build_in_process(project)
    assert compile_stage.main(["--params", "params.yaml", "--out", "build/compiled"]) == 0
    train.run(project / "build/compiled/train.json", project / "dataset", project / "templates", project / "trained")


def test_stage_generates_measures_and_reuses_images_when_only_a_metric_option_changes(project, tiny, one_thread):
    set_overrides(project, tiny, checkpoints="all", baseline="true")
    train_in_process(project)
    report = evaluate_in_process(project)
    # 2 compositions x 1 prompt x 2 samples x (base + checkpoints 1 and 2)
    assert (report["computed"], report["measure"]["computed"], report["failed"]) == (12, 12, 0)
    assert sorted(p.name for p in (project / "evaluation/cat_mug").iterdir()) == [
        f"{variant}-p0-s{s}.png" for variant in ("base", "step-1", "step-2") for s in (0, 1)]
    with Image.open(project / "reports/evaluate_grids/cat_mug.jpg") as grid:
        assert grid.size == (2 * 64, 3 * 64)  # samples x (variant, prompt)
    rows = [json.loads(line) for line in (project / "evaluation/rows.jsonl").read_text().splitlines()]
    assert len(rows) == 12
    first = rows[0]
    assert first["variant"] == "base" and "<" not in first["prompt"] and " cat " in first["prompt"]  # class nouns
    assert all("<cat1>" in row["prompt"] for row in rows if row["variant"] != "base")
    assert set(first["concepts"]) == {"cat", "mug"} and "detection_score" in first["concepts"]["cat"]
    headline = json.loads((project / "metrics/evaluate.json").read_text())
    assert set(headline["bins"]["<=3"]) == {"cp_clip", "ti_clip"} and set(headline) == {  # results only
        "evaluated", "bins", "best_checkpoint", "baseline"}
    metrics = json.loads((project / "evaluation/summary.json").read_text())
    assert metrics["evaluated"] and set(metrics["bins"]) == {"<=3"}
    assert metrics["bins"]["<=3"]["images"] == 4 and metrics["bins"]["<=3"]["paper"] == {"cp_clip": 0.41,
                                                                                        "ti_clip": 0.17}
    assert metrics["compositions"]["cat_mug"]["checkpoint"] == 2
    assert set(metrics["checkpoints"]["cat_mug"]) == {"1", "2"} and "best_checkpoint" in metrics
    assert metrics["baseline"]["bins"]["<=3"]["images"] == 4
    assert metrics["models"]["embedder"]["architecture"] == "tiny-clip"
    plot = [row for name in ("compositions.json", "base_model.json")
            for row in json.loads((project / "evaluation" / name).read_text())]
    assert {(p["composition"], p["model"]) for p in plot} == {(c, v) for c in ("cat_mug", "cat_mug_plant")
                                                              for v in ("trained", "base")}
    images = {p.name: p.read_bytes() for p in (project / "evaluation/cat_mug").iterdir()}

    set_overrides(project, tiny, checkpoints="all", baseline="true", detection_threshold=0.5)
    report = evaluate_in_process(project)
    assert (report["computed"], report["reused"]) == (0, 12)  # no image painted again
    assert (report["measure"]["computed"], report["measure"]["recomputed_because"]) == (12, {"backend": 12})
    assert {p.name: p.read_bytes() for p in (project / "evaluation/cat_mug").iterdir()} == images

    set_overrides(project, tiny, detection_threshold=0.5, guidance_scale=3.0)
    report = evaluate_in_process(project)
    assert report["computed"] == 4 and report["measure"]["computed"] == 4  # final checkpoints only, no baseline
    assert sorted(p.name for p in (project / "evaluation/cat_mug").iterdir()) == ["step-2-p0-s0.png",
                                                                                 "step-2-p0-s1.png"]


def test_missing_metric_weights_say_what_to_download_and_which_key_to_set(tiny):
    from stages.backends.evaluate import clip
    from stages.metrics.models import ModelMissing

    with pytest.raises(ModelMissing, match=r"huggingface-cli download google/owlvit-base-patch32 .*"
                                           r"set backends.evaluate.detector"):
        clip.Backend(clip.Params())
    with pytest.raises(ModelMissing, match=r"set backends.evaluate.embedder_weights"):
        clip.Backend(clip.Params(detector=tiny["detector"]))


def test_training_off_says_there_is_nothing_to_evaluate(project, tiny):
    set_overrides(project, tiny, train=False)
    build_in_process(project)
    report = evaluate_in_process(project)
    assert report["items"] == 0 and "training is off" in report["note"]
    assert json.loads((project / "metrics/evaluate.json").read_text())["evaluated"] is False
    assert (project / "evaluation/rows.jsonl").read_text() == ""


@pytest.mark.slow
def test_dvc_repro_trains_and_evaluates_end_to_end(dvc_project, tiny):
    from tests.conftest import run_tool

    set_overrides(dvc_project, tiny)
    run_tool(dvc_project, "dvc", "repro")
    shown = run_tool(dvc_project, "dvc", "metrics", "show").stdout
    assert "bins.<=3.cp_clip" in shown and "bins.<=3.ti_clip" in shown
    assert "paper" not in (dvc_project / "metrics/evaluate.json").read_text()  # Table 1's values: summary.json
    metrics = json.loads((dvc_project / "evaluation/summary.json").read_text())
    assert metrics["bins"]["<=3"]["images"] == 4 and metrics["compositions"]["cat_mug"]["checkpoint"] == 2
    plots = json.loads(run_tool(dvc_project, "dvc", "plots", "show", "--json").stdout)["data"]
    assert "reports/evaluate_grids/cat_mug.jpg" in plots  # the scatter's points come from compositions.json:
    assert '"filename": "compositions.json"' in json.dumps(plots["cp_clip_vs_ti_clip"])
    assert "reports/train_loss/cat_mug.csv" in plots
    assert run_tool(dvc_project, "dvc", "status").stdout.split() == ["compile:", "always", "changed"]
    train = reports(dvc_project, "train")
    assert (train["computed"], train["reused"]) == (2, 0)

    # A metric option: no re-pack, no retraining, no image painted again; only re-measured.
    set_overrides(dvc_project, tiny, detection_threshold=0.05)
    log = run_tool(dvc_project, "dvc", "repro").stdout
    assert "Stage 'pack' didn't change" in log and "Stage 'train' didn't change" in log
    evaluated = reports(dvc_project, "evaluate")
    assert (evaluated["computed"], evaluated["measure"]["reused"]) == (0, 0) and evaluated["reused"] > 0

    # One composition edited: only its model is trained again.
    untouched = (dvc_project / "trained/cat_mug_plant/pytorch_custom_diffusion_weights.bin").read_bytes()
    params = yaml.safe_load((dvc_project / "params.yaml").read_text())
    params["overrides"].append("compositions.cat_mug.num_images=5")
    (dvc_project / "params.yaml").write_text(yaml.safe_dump(params))
    run_tool(dvc_project, "dvc", "repro")
    train = reports(dvc_project, "train")
    assert (train["computed"], train["reused"], train["recomputed_because"]) == (1, 1, {"data": 1})
    assert (dvc_project / "trained/cat_mug_plant/pytorch_custom_diffusion_weights.bin").read_bytes() == untouched


def reports(root: Path, stage: str) -> dict:
    return json.loads((root / "reports" / f"{stage}.json").read_text())


def test_dvc_yaml_evaluate_deps_cover_every_module_it_runs():
    from compiler.fingerprint import closure
    from stages import backends
    from stages.backends.train.trained import LOADERS
    from tests.conftest import REPO

    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["evaluate"]
    # trained models load through their training backend's module, imported by name
    modules = ["stages.evaluate", *backends.REGISTRY["evaluate"].values(), *LOADERS.values()]
    files = {path.relative_to(REPO).as_posix() for path in closure(modules)[0].values()}
    uncovered = sorted(f for f in files if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in stage["deps"]))
    assert not uncovered, f"dvc.yaml stage 'evaluate' misses deps {uncovered}"


def test_table_names_the_recipe_choices_that_differ_between_rows():
    """Two runs of the paper's prompting setting, one at lr 1e-3 (`dvc exp run -S`): a last
    column tells them apart; choices the setting column already names are not repeated."""
    def experiment(name, overrides, cp_clip):
        metrics = {"evaluated": True, "bins": {"<=3": {"cp_clip": cp_clip, "ti_clip": 0.17}},
                   "setting": {"train": "custom-diffusion", "data": "dataset", "strategies": "global_token",
                               "paper_row": "strategies", "protocol": "ddim 200"}}
        return {"rev": name * 4, "name": name, "experiments": None,
                "data": {"metrics": {"metrics/evaluate.json": {"data": metrics}},
                         "params": {"params.yaml": {"data": {"recipe": "demo", "overrides": [
                             "backends.train.name=custom-diffusion", "strategy.global_token=true", *overrides]}}}}}

    lines = format_table([experiment("paper", [], 0.52), experiment("lr3", ["+backends.train.learning_rate=1e-3"], 0.50),
                          experiment("steps", ["+backends.train.steps=500", "backends.train.learning_rate=0.00001"],
                                     0.49)]).splitlines()
    assert lines[3].split() == ["setting", "experiment", "backend", "weights", "<=3", "4", "5", "differs"]
    assert [line.split("  ")[-1].strip() for line in lines[5:8]] == [
        "train.learning_rate=(recipe), train.steps=(recipe)", "train.learning_rate=0.001, train.steps=(recipe)",
        "train.learning_rate=1e-05, train.steps=500"]
    assert lines[5].split()[0] == "paper"  # our run named "paper", under the paper's own row
