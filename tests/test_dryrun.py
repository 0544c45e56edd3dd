"""`g4g validate` forecasts what the next build recomputes; the build then does exactly that
(or less, after a recomputed input came out the same)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from PIL import Image, ImageOps

from compiler.cli import main
from compiler.compile import compile_recipe
from compiler.dryrun import STAGES, forecast
from tests.conftest import build_in_process

SERIAL_COMMA = ('{% if concepts | length > 2 %}{{ concepts[:-1] | map(attribute="name") | join(", ") }} and '
                '{{ concepts[-1].name }}{% else %}{{ concepts | map(attribute="name") | join(" and ") }}{% endif %} '
                '{{ background }}\n')


def predicted(root: Path) -> dict[str, tuple[int, int, dict[str, int]]]:
    documents = compile_recipe(root, "tiny", [])
    return {f.stage: (len(f.reused), f.recomputed, dict(f.because)) for f in forecast(documents, root / ".g4g/cache")}


def actual(reports: dict) -> dict[str, tuple[int, int]]:
    return {stage: (reports[stage]["reused"], reports[stage]["computed"]) for stage in STAGES}


def edit_recipe(root: Path, edit) -> None:
    path = root / "recipes/tiny.yaml"
    recipe = yaml.safe_load(path.read_text())
    edit(recipe)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))


def test_forecast_matches_the_next_build(project, reference_data, capsys):
    plants = project / "photos/plant"
    plants.mkdir(parents=True)
    for name in ("houseplant_01.png", "houseplant_02.png"):
        shutil.copy(reference_data / "cutouts/houseplant" / name, plants / name)
    edit_recipe(project, lambda r: r["concepts"]["plant"].update(images=["photos/plant/*.png"]))
    first = predicted(project)
    assert first["extract"] == (0, 4, {"new": 4}) and first["score"] == (0, 10, {"new": 10})
    build_in_process(project)
    assert {stage: counts[:2] for stage, counts in predicted(project).items()} == {s: (n, 0) for s, n in
                                                                                  [("extract", 4)] + [(s, 10) for s in STAGES[1:]]}

    # One composition's count and one caption template: exact, the reasons named.
    edit_recipe(project, lambda r: r["compositions"]["cat_mug"].update(num_images=8))
    (project / "templates/captions/short.j2").write_text(SERIAL_COMMA)
    forecast_ = predicted(project)
    assert forecast_["caption"] == (0, 12, {"templates": 10, "new": 2})
    assert forecast_["compose"] == (10, 2, {"new": 2})
    assert {stage: counts[:2] for stage, counts in forecast_.items()} == actual(build_in_process(project))

    # A reverted template finds its old captions in the cache (only the 2 new images' are missing).
    shutil.copy(Path(__file__).parents[1] / "templates/captions/short.j2", project / "templates/captions/short.j2")
    reverted = predicted(project)
    assert reverted["caption"] == (10, 2, {"templates": 2})
    assert {stage: counts[:2] for stage, counts in reverted.items()} == actual(build_in_process(project))

    # A replaced photo: its cut-out exactly; after it an upper bound (same shape, same layout).
    photo = plants / "houseplant_02.png"
    ImageOps.mirror(Image.open(photo)).save(photo)
    replaced = predicted(project)
    assert replaced["extract"] == (3, 1, {"photo": 1})
    built = actual(build_in_process(project))
    assert built["extract"] == replaced["extract"][:2]
    assert all(replaced[stage][1] >= built[stage][1] for stage in STAGES)
    assert replaced["plan"][2] == {"upstream": 4}

    assert main(["validate"]) == 0
    out = capsys.readouterr().out
    assert "a build now would" in out and "  score    reuse     12  recompute      0" in out
