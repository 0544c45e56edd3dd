"""The matte (issue 32): a clean core, detached blobs dropped, holes filled unless real, a narrow
matted band; its figures, the bad-view check, the targets on the demo's photos, the cut-out sheet."""

from __future__ import annotations

import hashlib

import dataclasses

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from base.errors import ItemError
from stages import backends
from stages.backends.extract import CutoutParams, alpha_description, matte
from stages.backends.extract.quality import against_reference, in_photo
from stages.card import cutout_sheet
from stages.extract import bad_view, cut_out_view
from stages.runtime.images import load_image


def disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    rows, cols = np.ogrid[:shape[0], :shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius ** 2


def synthetic_mask() -> np.ndarray:
    """100x100: a disc of radius 30 at (50, 50) with a real ring hole (radius 10, mask 0: sure
    background), an unsure hole (a 4x4 patch where the mask is 90, below the core), and a
    detached 5x5 blob at the corner."""
    soft = np.zeros((100, 100), np.uint8)
    soft[disc(soft.shape, (50, 50), 30)] = 255
    soft[disc(soft.shape, (50, 50), 10)] = 0
    soft[26:30, 48:52] = 90  # inside the body, above the ring hole: the model unsure of a patch
    soft[2:7, 2:7] = 255
    return soft


def test_clean_core_drops_the_blob_fills_the_unsure_hole_and_keeps_the_real_one():
    core = matte.clean_core(synthetic_mask(), level=140, min_component=0.05, min_hole=0.002, hole_level=32)
    expected = disc((100, 100), (50, 50), 30) & ~disc((100, 100), (50, 50), 10)  # written down first
    assert (core.mask == expected).all()
    assert (core.dropped, core.holes_filled, core.holes_kept) == (1, 1, 1)


def test_a_small_hole_is_filled_even_where_the_mask_is_sure_of_background():
    soft = synthetic_mask()
    core = matte.clean_core(soft, level=140, min_component=0.05, min_hole=0.2, hole_level=32)  # ring: 12% < 20%
    assert (core.mask == disc((100, 100), (50, 50), 30)).all() and core.holes_kept == 0


def test_matte_is_opaque_inside_clean_outside_and_keeps_the_ring_hole():
    soft = synthetic_mask()
    photo = np.zeros((100, 100, 3), np.uint8)
    photo[...] = (20, 60, 200)
    photo[disc((100, 100), (50, 50), 30) & ~disc((100, 100), (50, 50), 10)] = (200, 120, 40)
    cutout, box, figures = cut_out_view(Image.fromarray(photo), soft, CutoutParams())
    assert box == [20, 20, 81, 81]  # the disc's box; the blob at the corner is gone
    alpha = in_photo(np.asarray(cutout.getchannel("A")), box, (100, 100))
    assert alpha[50, 50] == 0 and alpha[50, 25] == 255 and alpha[28, 50] == 255  # ring hole kept, patch filled
    assert alpha[:10, :10].max() == 0
    body = disc((100, 100), (50, 50), 30) & ~disc((100, 100), (50, 50), 10)
    interior = ndimage.distance_transform_edt(body) > 1  # deeper than the 1-pixel band
    assert figures == {"see_through": 0.0, "unsure": round(16 / interior.sum(), 4), "components_dropped": 1, "holes_filled": 1, "holes_kept": 1,
                       "edge_band": 2.0}


def test_an_object_thinner_than_the_band_keeps_a_hard_edge():
    soft = np.zeros((50, 50), np.uint8)
    soft[20:22, 20:23] = 255
    cutout, box, figures = cut_out_view(Image.new("RGB", (50, 50), "red"), soft, CutoutParams())
    assert box == [20, 20, 23, 22] and (np.asarray(cutout.getchannel("A")) == 255).all()


def test_matting_follows_the_photos_edge_where_the_mask_leaks():
    """The mask is a disc of radius 33 where the photo's orange disc has radius 31: the band
    (here 3 px each side) is solved from colours, so the 2 leaked pixels are not kept."""
    shape = (120, 120)
    photo = np.zeros(shape + (3,), np.uint8)
    photo[...] = (30, 90, 220)
    photo[disc(shape, (60, 60), 31)] = (230, 140, 40)
    soft = np.where(disc(shape, (60, 60), 33), 255, 0).astype(np.uint8)
    params = dataclasses.replace(CutoutParams(), band=0.05, decontaminate=False)
    truth = disc(shape, (60, 60), 31)
    figures = {}
    for matting in ("none", "cf"):
        cutout, box, _ = cut_out_view(Image.fromarray(photo), soft, dataclasses.replace(params, matting=matting))
        figures[matting] = against_reference(in_photo(np.asarray(cutout.getchannel("A")), box, shape), truth)
    assert figures["none"]["ghost"] > 0.05  # a hard edge on the leaky mask keeps a 2-pixel ring of background
    assert figures["cf"]["ghost"] < 0.005 and figures["cf"]["see_through"] == 0 and figures["cf"]["iou"] > 0.97


@pytest.mark.parametrize("concept, photo, aligned_ghost", [("cat", "cat_01", 0.005), ("dog", "dog_05", 0.005),
                                                           ("dog", "dog_06", 0.009)])
def test_demo_photos_meet_the_targets_against_isnet(reference_data, concept, photo, aligned_ghost):
    """Issue 32's targets: see-through <= 1%, ghost <= 0.5%, IoU not lower than before issue 32
    (one pass, the soft mask as alpha). Measured (bench/cutout_quality.py), by the box's longer
    side: 0.00 / 0.26 / 0.00% see-through, 0.00 / 0.00 / 0.42% ghost, IoU +0.004 / +0.005 /
    +0.003; by the square root of the area against the reference moved onto the photo's edges:
    0.01 / 0.60 / 0.00% and 0.12 / 0.36 / 0.83% (dog_06: 0.61% is its paw, which IS-Net sees
    as half transparent)."""
    from bench.cutout_quality import edge_offset, shifted

    image = load_image(reference_data / "sources" / concept / f"{photo}.jpg", photo)
    reference = np.asarray(Image.open(reference_data / "isnet_masks" / concept / f"{photo}.png").convert("L")) > 127
    before = backends.create("extract", backends.describe("extract", "u2netp", {"second_pass": 0}))
    extractor = backends.create("extract", backends.describe("extract", "u2netp", {}))
    alphas = {}
    for label, backend, params in (("before", before, dataclasses.replace(before.params, matte=False)),
                                   ("matte", extractor, extractor.params)):
        cutout, box, _ = cut_out_view(image, backend.soft_mask(image), params)
        alphas[label] = in_photo(np.asarray(cutout.getchannel("A")), box, reference.shape)
    figures = {label: against_reference(alpha, reference) for label, alpha in alphas.items()}
    assert figures["matte"]["see_through"] <= 0.01 and figures["matte"]["ghost"] <= 0.005
    assert figures["matte"]["iou"] >= figures["before"]["iou"]
    assert figures["before"]["see_through"] + figures["before"]["ghost"] > 2 * (figures["matte"]["see_through"]
                                                                                + figures["matte"]["ghost"])
    aligned = against_reference(alphas["matte"], shifted(reference, *edge_offset(reference, image)), by="area")
    assert aligned["see_through"] <= 0.01 and aligned["ghost"] <= aligned_ghost


def leaky_view() -> tuple[Image.Image, np.ndarray]:
    """A disc whose soft mask is only 50% sure inside (a see-through body, kept as is without the matte)."""
    soft = np.where(disc((60, 60), (30, 30), 20), 255, 0).astype(np.uint8)
    soft[20:40, 20:40] = 128
    return Image.new("RGB", (60, 60), (120, 80, 40)), soft


def test_bad_view_is_reported_or_refused_by_see_through():
    image, soft = leaky_view()
    params = CutoutParams(matte=False, core=100, max_see_through=0.05)
    _, _, figures = cut_out_view(image, soft, params)
    assert figures["see_through"] == round(400 / disc((60, 60), (30, 30), 20).sum(), 4)  # the 20x20 square at 50%
    assert "see-through" in bad_view(figures, params) and "max_see_through 5.0%" in bad_view(figures, params)
    _, _, matted = cut_out_view(image, soft, dataclasses.replace(params, matte=True))
    assert matted["see_through"] == 0 and bad_view(matted, params) is None  # the matte makes the body opaque
    deeper_than_band = ndimage.distance_transform_edt(disc((60, 60), (30, 30), 20)) > 1
    assert matted["unsure"] == round(400 / deeper_than_band.sum(), 4)  # and records that the model was unsure there


def test_on_bad_view_refuse_fails_the_item_and_warn_records_it(project, reference_data):
    import json

    from PIL import Image as PILImage

    from stages import extract

    image, soft = leaky_view()
    rgba = image.convert("RGBA")
    rgba.putalpha(PILImage.fromarray(soft))
    (project / "photos").mkdir()
    rgba.save(project / "photos/leaky.png")
    results = {}
    digest = hashlib.sha256((project / "photos/leaky.png").read_bytes()).hexdigest()
    for policy in ("warn", "refuse"):
        item = {"id": "plant/leaky", "concept": "plant", "cutout": True, "sha256": digest, "source": "photos/leaky.png"}
        context = {"backend": {"name": "u2netp", "version": "2", "params": {"on_bad_view": policy}},
                   "root": str(project), "threads": 1}
        results[policy] = extract.extract_item([item], context)[0]
    record, files = results["warn"]
    assert record["see_through"] > 0.3 and "max_see_through" in record["bad_view"] and files
    assert isinstance(results["refuse"], ItemError) and "on_bad_view: refuse" in str(results["refuse"])
    assert json.dumps(record)  # a plain JSON record


def test_a_cut_out_photos_alpha_is_trusted_unless_refine_cutouts():
    u2netp = backends.describe("extract", "u2netp", dataclasses.asdict(CutoutParams()))
    trusted = alpha_description(u2netp)
    assert trusted["params"]["matte"] is False and "core" not in trusted["params"] and "band" not in trusted["params"]
    refined = alpha_description({**u2netp, "params": {**u2netp["params"], "refine_cutouts": True}})
    assert refined["params"]["matte"] is True and refined["params"]["core"] == 140


@pytest.mark.parametrize("option, value, valid", [("core", 0, "valid 1-255"), ("band", 0.5, "valid 0-0.1"),
                                                  ("matting", "knn", "valid cf, soft, none"),
                                                  ("on_bad_view", "stop", "valid warn, refuse"),
                                                  ("max_see_through", 2, "valid 0-1")])
def test_bad_options_name_what_is_valid(option, value, valid):
    with pytest.raises(ValueError, match=valid):
        CutoutParams(**{option: value})


def test_cutout_sheet_shows_each_view_on_three_backdrops_with_its_figures():
    view = Image.new("RGBA", (40, 80), (255, 0, 0, 255))
    view.putpixel((0, 0), (0, 0, 0, 0))
    record = {"id": "cat/one", "size": [40, 80], "see_through": 0.0, "unsure": 0.03, "components_dropped": 1, "holes_filled": 0,
              "holes_kept": 0, "edge_band": 2.0}
    bad = {**record, "id": "cat/two", "see_through": 0.4, "bad_view": "see-through 40.0% ...; look at it"}
    image = cutout_sheet.sheet([(view, record), (view, bad)])
    pixels = np.asarray(image)
    top, left, tile, gap = cutout_sheet.GAP, 2 * cutout_sheet.GAP, cutout_sheet.TILE, cutout_sheet.GAP
    assert image.size == (2 * (3 * tile + 2 * gap) + 6 * gap, tile + 2 * cutout_sheet.LINE + 3 * gap)
    assert tuple(pixels[top + tile // 2, left + tile // 2]) == (255, 0, 0)  # the view, centred
    assert {tuple(pixels[top, left]), tuple(pixels[top, left + cutout_sheet.CHECKER])} == {(204, 204, 204), (255, 255, 255)}
    assert tuple(pixels[top, left + tile + gap]) == (0, 0, 0) and tuple(pixels[top, left + 2 * (tile + gap)]) == (255, 255, 255)
    caption = pixels[top + tile + 2: top + tile + cutout_sheet.LINE, left + 3 * tile + 8 * gap:]
    assert (np.abs(caption.astype(int) - cutout_sheet.BAD).sum(axis=-1) < 60).any()  # the bad view's title in red
    assert "1 blob(s) dropped" in cutout_sheet.describe(record) and "edge band 2 px" in cutout_sheet.describe(record)
    assert cutout_sheet.png(image) == cutout_sheet.png(cutout_sheet.sheet([(view, record), (view, bad)]))


def test_g4g_extract_uses_a_pngs_own_alpha_as_cutout_true_does(tmp_path, capsys):
    """Issue 33: a PNG already cut out keeps its alpha (a model would punch holes in a lion's mouth)."""
    from compiler.cli import main

    shape = (90, 120)
    rgba = np.zeros(shape + (4,), np.uint8)
    rgba[..., :3] = (90, 60, 30)  # one flat colour: a model sees no object in it
    body = disc(shape, (45, 60), 35)
    rgba[..., 3] = np.where(body, 255, 0)
    rgba[40:50, 55:65, 3] = 255  # the mouth: opaque, whatever a model would make of it
    Image.fromarray(rgba, "RGBA").save(tmp_path / "lion.png")
    assert main(["extract", str(tmp_path / "lion.png"), "-o", str(tmp_path / "out.png"),
                 "--sheet", str(tmp_path / "sheet.png")]) == 0
    assert "its own alpha is the cut-out" in capsys.readouterr().out
    out = np.asarray(Image.open(tmp_path / "out.png").getchannel("A"))
    assert (out == rgba[10:81, 25:96, 3]).all()  # the alpha as given, cropped to its box
    assert Image.open(tmp_path / "sheet.png").size == (3 * cutout_sheet.TILE + 2 * cutout_sheet.GAP + 4 * cutout_sheet.GAP,
                                                       cutout_sheet.TILE + 2 * cutout_sheet.LINE + 3 * cutout_sheet.GAP)


def test_g4g_extract_needs_an_output_and_one_photo_per_cutout(tmp_path, capsys):
    from compiler.cli import main

    assert main(["extract", "a.png"]) == 2
    assert "valid: -o CUTOUT.png" in capsys.readouterr().err
    assert main(["extract", "a.png", "b.png", "-o", str(tmp_path / "o.png")]) == 2
    assert "-o takes one photo, 2 given" in capsys.readouterr().err


def test_the_build_writes_the_figures_and_the_sheet_into_the_card(project):
    """The tiny recipe's build: every cut-out record has its figures; pack writes cutouts.png and
    card.html links it, and `g4g card` writes the same page from the dataset folder."""
    import json

    from stages.card.page import page, read_dataset
    from tests.conftest import build_in_process

    build_in_process(project)
    records = json.loads((project / "build/cutouts.json").read_text())["cutouts"]
    assert {"see_through", "unsure", "components_dropped", "edge_band"} <= set(next(r for r in records if r["id"].startswith("cat")))
    assert all("components_dropped" not in r for r in records if r["id"].startswith("plant"))  # trusted as given
    sheet = Image.open(project / "dataset" / cutout_sheet.FILE)
    assert sheet.height > cutout_sheet.TILE * (len(records) // cutout_sheet.COLUMNS)
    card = (project / "dataset/card.html").read_text()
    assert '<a href="cutouts.png">' in card and page(read_dataset(project / "dataset")) == card


def block_mask(shape: tuple[int, int], rows: slice, cols: slice, level: int = 255) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[rows, cols] = level
    return mask


def test_second_pass_box_is_the_object_widened_by_a_share_of_its_size():
    from stages.backends.extract.u2netp import second_pass_box

    mask = block_mask((100, 200), slice(40, 60), slice(50, 90))  # 20 x 40: size 40, 10% = 4 px
    mask[30, 10] = 70  # at the threshold, not above it: outside the object
    assert second_pass_box(mask, 70, 0.1) == (46, 36, 94, 64)
    assert second_pass_box(mask, 70, 0.0) is None  # one pass
    assert second_pass_box(block_mask((20, 20), slice(0, 10), slice(0, 10)), 70, 0.5) == (0, 0, 15, 15)  # clipped
    assert second_pass_box(block_mask((20, 30), slice(1, 19), slice(1, 29)), 70, 0.1) is None  # the whole photo
    assert second_pass_box(np.full((20, 20), 70, np.uint8), 70, 0.1) is None  # nothing above threshold


def test_the_second_pass_is_averaged_with_the_first_in_the_box():
    from stages.backends.extract.u2netp import Backend, Params

    backend = Backend.__new__(Backend)  # no weights: the model's two passes are stand-ins
    backend.params = Params(second_pass=0.1)
    seen = []

    def saliency(rgb: Image.Image) -> np.ndarray:
        seen.append(rgb.size)
        if len(seen) == 1:  # the whole photo: the object, and a faint smear below the threshold
            mask = block_mask((100, 200), slice(40, 60), slice(50, 90))
            mask[0:10, :] = 60
            return mask
        return np.full((rgb.height, rgb.width), 200, np.uint8)  # the box: sure of the object everywhere

    backend.saliency = saliency
    soft = backend.soft_mask(Image.new("RGB", (200, 100)))
    assert seen == [(200, 100), (48, 28)]  # the box (46, 36, 94, 64)
    assert soft.shape == (100, 200) and soft.dtype == np.uint8
    assert soft[50, 70] == 228 and soft[37, 47] == 100  # the mean of 255 and 200 (rounded up), of 0 and 200
    assert soft.sum() == 800 * 228 + (48 * 28 - 800) * 100 + 10 * 200 * 60  # the first pass outside the box


def test_second_pass_option_names_what_is_valid():
    from stages.backends.extract.u2netp import Params

    with pytest.raises(ValueError, match=r"second_pass 1.5: valid 0-1"):
        Params(second_pass=1.5)


def test_the_bench_moves_a_reference_onto_the_photos_edges():
    from bench.cutout_quality import edge_offset, shifted

    photo = np.full((60, 60, 3), 30, np.uint8)
    photo[20:40, 15:45] = 220  # a bright box on a dark ground
    truth = np.zeros((60, 60), bool)
    truth[20:40, 15:45] = True
    reference = shifted(truth, 1, 2)  # a reference drawn one pixel low, two right
    assert reference[21:41, 17:47].all() and reference.sum() == truth.sum()
    assert edge_offset(reference, Image.fromarray(photo)) == (-1, -2)
    assert edge_offset(truth, Image.fromarray(photo)) == (0, 0)
