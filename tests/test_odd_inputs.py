"""Odd real-world photos: deep, CMYK, rotated, palette, tiny-mode and damaged files, odd names.

Every file is generated here; 16-bit PNGs are written byte by byte (IHDR bit depth 16) so the
test does not depend on the encoder it checks.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from base import sources
from base.errors import ItemError, RecipeError
from compiler.cli import main as g4g
from stages import backends
from stages.runtime.images import load_image
from tests.conftest import REPO, TINY_RECIPE, write_recipe

PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # samples per pixel -> PNG colour type (grey, grey+alpha, RGB, RGBA)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(header: tuple[int, int, int, int], data: bytes, extra: bytes = b"") -> bytes:
    """A PNG from (width, height, bit depth, colour type), already filtered rows and extra chunks."""
    ihdr = struct.pack(">IIBBBBB", *header, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", zlib.compress(data))
            + png_chunk(b"IEND", b""))


def png16(values: np.ndarray, extra: bytes = b"") -> bytes:
    """A 16-bit PNG of uint16 `values` (H x W grey, or H x W x 2/3/4 samples), filter 0 rows."""
    height, width = values.shape[:2]
    samples = 1 if values.ndim == 2 else values.shape[2]
    rows = values.astype(">u2").reshape(height, -1).view(np.uint8)
    data = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()
    return png((width, height, 16, PNG_COLOUR_TYPES[samples]), data, extra)


def chelsea(size: tuple[int, int] = (96, 72)) -> Image.Image:
    """skimage's photo of Chelsea the cat, small."""
    return Image.fromarray(skimage.data.chelsea()).resize(size, Image.Resampling.LANCZOS)


def u2netp():
    return backends.create("extract", backends.describe("extract", "u2netp", {"threshold": 70, "max_side": 1024,
                                                                         "min_confidence": 0.5}))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


# -- deep images --------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_grey_is_scaled_to_8bit_not_clipped(tmp_path, suffix):
    values = np.random.default_rng(0).integers(0, 65536, (40, 50), dtype=np.uint16)
    values[0, :2] = 0, 65535
    path = tmp_path / f"grey16{suffix}"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    image = load_image(path, path.name)
    assert image.mode == "RGB"
    expected = np.round(values / 257.0)  # v * 255 / 65535
    assert (np.asarray(image) == expected[..., None]).all()


def test_16bit_grey_transparent_colour_becomes_alpha(tmp_path):
    values = np.full((8, 10), 40000, np.uint16)
    values[2:5, 3:7] = 1234
    path = tmp_path / "grey16_trns.png"
    path.write_bytes(png16(values, png_chunk(b"tRNS", struct.pack(">H", 1234))))
    image = load_image(path, path.name)
    assert image.mode == "RGBA"
    assert (np.asarray(image.getchannel("A")) == np.where(values == 1234, 0, 255)).all()
    assert np.asarray(image)[0, 0, 0] == round(40000 / 257)


@pytest.mark.parametrize("samples, mode", [(3, "RGB"), (4, "RGBA"), (2, "RGBA")])
def test_48_and_64bit_colour_and_32bit_grey_alpha_pngs_are_scaled(tmp_path, samples, mode):
    values = np.random.default_rng(samples).integers(0, 65536, (30, 20, samples), dtype=np.uint16)
    path = tmp_path / f"deep{samples}.png"
    path.write_bytes(png16(values))
    assert Image.open(path).tile[0].args.endswith(";16B")  # Pillow sees 16-bit samples
    image = load_image(path, path.name)
    assert image.mode == mode
    pixels = np.asarray(image).astype(float)
    expected = values / 257.0
    if samples == 2:  # grey + alpha: grey repeated in R, G, B
        expected = np.concatenate([np.repeat(expected[..., :1], 3, axis=2), expected[..., 1:]], axis=2)
    assert np.abs(pixels - expected).max() <= 1  # Pillow keeps the high byte: within 1 of v*255/65535


@pytest.mark.parametrize("values, valid", [((0, 65535), True), ((-1, 10), False), ((0, 70000), False)])
def test_32bit_integer_grey_is_scaled_when_in_16bit_range(tmp_path, values, valid):
    array = np.array([values, values], np.int32)
    path = tmp_path / "grey32.tif"
    Image.fromarray(array).save(path)
    assert Image.open(path).mode == "I"
    if valid:
        assert (np.asarray(load_image(path, path.name))[..., 0] == [[0, 255], [0, 255]]).all()
    else:
        with pytest.raises(ItemError, match=r"grey32.tif: integer pixels from .* valid: 8-bit or 16-bit"):
            load_image(path, path.name)


def test_float_images_are_refused_by_name(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.zeros((4, 4), np.float32)).save(path)
    with pytest.raises(ItemError, match=r"float.tif: floating-point pixels \(mode F\)"):
        load_image(path, path.name)


def test_16bit_photos_are_cut_out_like_their_8bit_version(tmp_path, reference_data):
    """The reported bug: a 16-bit photo was clipped to white and 'had no salient object'."""
    photo = Image.open(reference_data / "sources/dog/dog_05.jpg").convert("RGB")
    paper_mask = np.asarray(Image.open(reference_data / "isnet_masks/dog/dog_05.png").convert("L")) > 127
    luminance = np.asarray(photo, float) @ [0.299, 0.587, 0.114]  # ITU-R 601, as Pillow's "L"
    grey16 = tmp_path / "grey16.png"
    Image.fromarray(np.round(luminance * 257).astype(np.uint16)).save(grey16)
    rgb48 = tmp_path / "rgb48.png"
    rgb48.write_bytes(png16(np.asarray(photo, np.uint16) * 257 + 128))
    extractor = u2netp()
    for deep, eight_bit in ((grey16, photo.convert("L")), (rgb48, photo)):
        ours = extractor.soft_mask(load_image(deep, deep.name)) > 127
        assert iou(ours, extractor.soft_mask(eight_bit) > 127) > 0.9, deep.name
        assert iou(ours, paper_mask) > 0.85, deep.name


def test_g4g_extract_cuts_a_16bit_photo_out(tmp_path, reference_data):
    grey = np.asarray(Image.open(reference_data / "sources/dog/dog_05.jpg").convert("L"), np.uint16) * 257
    photo, output = tmp_path / "scan 16-bit.png", tmp_path / "cut.png"
    Image.fromarray(grey).save(photo)
    assert g4g(["extract", str(photo), "-o", str(output)]) == 0
    cutout = Image.open(output)
    alpha = np.asarray(cutout.getchannel("A"))
    assert cutout.mode == "RGBA" and cutout.width < grey.shape[1] and 0.3 < (alpha > 127).mean() < 0.95
    assert np.asarray(cutout.convert("L"))[alpha > 127].mean() < 200  # the dog's grey, not clipped white


# -- JPEG variants and orientation ---------------------------------------------------------------


def test_cmyk_jpeg_is_read_as_rgb(tmp_path):
    photo = chelsea()
    path = tmp_path / "cmyk.jpg"
    photo.convert("CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    image = load_image(path, path.name)
    assert image.mode == "RGB" and image.size == photo.size
    assert np.abs(np.asarray(image, float) - np.asarray(photo, float)).mean() < 4


def test_progressive_jpeg_decodes_like_baseline(tmp_path):
    photo = chelsea()
    path = tmp_path / "progressive.jpg"
    photo.save(path, quality=95, progressive=True)
    assert Image.open(path).info.get("progressive")
    image = load_image(path, path.name)
    assert image.mode == "RGB" and np.abs(np.asarray(image, float) - np.asarray(photo, float)).mean() < 4


def stored_for_orientation(upright: np.ndarray, orientation: int) -> np.ndarray:
    """How a camera stores `upright` under EXIF Orientation 1-8 (TIFF 6.0 / EXIF 2.3 wording:
    which visual side row 0 and column 0 of the stored pixels are)."""
    return {
        1: lambda a: a,                       # row 0 top,    column 0 left
        2: np.fliplr,                         # row 0 top,    column 0 right
        3: lambda a: np.rot90(a, 2),          # row 0 bottom, column 0 right
        4: np.flipud,                         # row 0 bottom, column 0 left
        5: lambda a: a.transpose(1, 0, 2),    # row 0 left,   column 0 top
        6: lambda a: np.rot90(a, 1),          # row 0 right,  column 0 top
        7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),  # row 0 right, column 0 bottom
        8: lambda a: np.rot90(a, -1),         # row 0 left,   column 0 bottom
    }[orientation](upright)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_turned_upright(tmp_path, orientation):
    colours = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]], [[255, 255, 0], [0, 255, 255], [255, 0, 255]]],
                       np.uint8)
    upright = np.repeat(np.repeat(colours, 16, axis=0), 16, axis=1)  # 32 x 48, six distinct blocks
    stored = Image.fromarray(np.ascontiguousarray(stored_for_orientation(upright, orientation)))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"orientation{orientation}.jpg"
    stored.save(path, quality=95, exif=exif)
    image = load_image(path, path.name)
    assert image.size == (48, 32)
    assert np.abs(np.asarray(image, float) - upright).mean() < 6


# -- palette, grey + alpha, 1-bit, WebP ----------------------------------------------------------


def test_palette_png_with_transparency_keeps_its_alpha(tmp_path):
    indices = np.zeros((20, 30), np.uint8)
    indices[5:15, 10:20] = 1
    indices[5:15, 20:25] = 2
    palette = Image.fromarray(indices, mode="P")
    palette.putpalette([0, 0, 0, 200, 30, 30, 30, 200, 30])
    path = tmp_path / "palette.png"
    palette.save(path, transparency=bytes([0, 255, 128]))
    assert Image.open(path).mode == "P"
    image = load_image(path, path.name)
    assert image.mode == "RGBA"
    expected_alpha = np.array([0, 255, 128], np.uint8)[indices]
    assert (np.asarray(image.getchannel("A")) == expected_alpha).all()
    alpha = backends.create("extract", backends.describe("extract", "alpha", {"threshold": 70, "max_side": 64}))
    assert (alpha.soft_mask(image) == expected_alpha).all()


def test_grey_with_alpha_and_1bit_images(tmp_path):
    grey = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (5, 1))
    la = tmp_path / "la.png"
    Image.merge("LA", [Image.fromarray(grey), Image.fromarray(255 - grey)]).save(la)
    image = np.asarray(load_image(la, la.name))
    assert image.shape == (5, 25, 4) and (image[..., 0] == grey).all() and (image[..., 3] == 255 - grey).all()
    bits = np.random.default_rng(1).random((16, 24)) > 0.5
    one = tmp_path / "one-bit.png"
    Image.fromarray(bits).save(one)
    assert Image.open(one).mode == "1"
    assert (np.asarray(load_image(one, one.name)) == np.where(bits, 255, 0)[..., None]).all()


def test_webp_lossless_with_alpha_and_lossy(tmp_path):
    photo = chelsea().convert("RGBA")
    photo.putalpha(Image.linear_gradient("L").resize(photo.size))
    lossless, lossy = tmp_path / "cut.webp", tmp_path / "photo.webp"
    photo.save(lossless, lossless=True)
    photo.convert("RGB").save(lossy, quality=90)
    assert (np.asarray(load_image(lossless, lossless.name)) == np.asarray(photo)).all()
    image = load_image(lossy, lossy.name)
    assert image.mode == "RGB" and np.abs(np.asarray(image, float) - np.asarray(photo.convert("RGB"), float)).mean() < 5


# -- files that are not (whole) images ---------------------------------------------------------


def decompression_bomb(path: Path, side: int = 10_000) -> None:
    """A valid 1-bit PNG of side x side pixels (over Pillow's limit): a few KB on disk, 100 MB decoded."""
    rows = np.zeros((side, 1 + side // 8), np.uint8)
    path.write_bytes(png((side, side, 1, 0), rows.tobytes()))


def test_image_over_the_decompression_bomb_limit_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    decompression_bomb(path)
    width, height = struct.unpack(">II", path.read_bytes()[16:24])  # IHDR
    assert path.stat().st_size < 100_000 and width * height > Image.MAX_IMAGE_PIXELS
    with pytest.raises(ItemError, match=r"bomb.png: too large to decode safely \(Image size \(100000000 pixels\) "
                                        r".*valid: at most 89478485 pixels"):
        load_image(path, path.name)
    header_only = tmp_path / "header-only.png"  # claims the size, holds no pixels: decoding would say so
    header_only.write_bytes(path.read_bytes()[:33] + png_chunk(b"IEND", b""))
    with pytest.raises(ItemError, match="too large to decode safely"):
        load_image(header_only, header_only.name)


def test_decompression_bomb_costs_no_memory(tmp_path):
    path = tmp_path / "bomb.png"
    decompression_bomb(path)
    script = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from base.errors import ItemError\n"
        "from stages.runtime.images import load_image\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    load_image(Path(sys.argv[1]), 'bomb.png')\n"
        "except ItemError:\n"
        "    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(path)], cwd=REPO, capture_output=True, text=True,
                            check=True)
    assert int(result.stdout) < 20_000  # KiB; decoding would take 100 MB


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    chelsea((300, 225)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize("name, content, message", [
    ("empty.jpg", b"", r"empty.jpg: empty file \(0 bytes\); valid: PNG, JPEG"),
    ("notes.jpg", b"shopping list: milk, eggs\n",
     r"notes.jpg: not a readable image \(not a format Pillow decodes: valid PNG, JPEG, WebP.*starts like text\)$"),
    ("cut-short.jpg", None, r"cut-short.jpg: not a readable image \(OSError: image file is truncated"),
])
def test_damaged_files_are_item_errors_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(jpeg_bytes()[:6000] if content is None else content)
    with pytest.raises(ItemError, match=message):
        load_image(path, f"photos/{name}")


def test_a_folder_is_an_item_error_and_globs_skip_folders(tmp_path):
    (tmp_path / "album.jpg").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "cat.jpg")
    with pytest.raises(ItemError, match=r"photos/album.jpg: is a folder, not an image file"):
        load_image(tmp_path / "album.jpg", "photos/album.jpg")
    assert sources.expand("*.jpg", tmp_path, "concepts.cat.images") == ["cat.jpg"]
    with pytest.raises(RecipeError, match=r"concepts.cat.images\[1\]: 'album.jpg' matches no image file"):
        sources.expand("album.jpg", tmp_path, "concepts.cat.images[1]")


def test_g4g_extract_reports_a_bad_photo_without_a_traceback(tmp_path, capsys):
    photo = tmp_path / "empty.png"
    photo.touch()
    assert g4g(["extract", str(photo), "-o", str(tmp_path / "cut.png")]) == 2
    expected = f"error: {photo}: empty file (0 bytes); valid: PNG, JPEG, WebP, BMP, TIFF or GIF\n"
    assert capsys.readouterr().err == expected


def test_extract_stage_reads_odd_names_and_formats_and_reports_bad_files(project):
    """Names with spaces and non-ASCII letters, 16-bit and CMYK photos work; damaged files and a
    folder do not stop the stage: each bad file is a failure with its reason."""
    from compiler import compile as compile_stage
    from stages import extract

    photos = project / "photos"
    photos.mkdir()
    photo = chelsea((200, 150))
    photo.save(photos / "my cat.png")
    photo.convert("CMYK").save(photos / "chat été.jpg", quality=95)
    Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257).save(photos / "猫 16-bit.png")
    (photos / "empty.jpg").touch()
    (photos / "notes.jpg").write_text("not a photo")
    (photos / "folder.jpg").mkdir()
    recipe = {**TINY_RECIPE, "concepts": {**TINY_RECIPE["concepts"]}}
    recipe["concepts"]["cat"] = {**recipe["concepts"]["cat"], "images": ["photos/*"]}
    write_recipe(project, recipe)
    assert compile_stage.main(["--params", str(project / "params.yaml"), "--out", str(project / "build/compiled")]) == 0
    build = project / "build"
    extract.run(build / "compiled/extract.json", build / "cutouts", build / "cutouts.json")
    index = json.loads((build / "cutouts.json").read_text())
    cat_cutouts = sorted(c["id"] for c in index["cutouts"] if c["concept"] == "cat")
    assert cat_cutouts == ["cat/chat été", "cat/my cat", "cat/猫 16-bit"]
    for cutout_id in cat_cutouts:
        assert Image.open(build / "cutouts" / f"{cutout_id}.png").mode == "RGBA"
    failed = {entry["id"]: entry["reason"] for entry in index["failed"]}
    assert failed == {"cat/empty": "photos/empty.jpg: empty file (0 bytes); valid: PNG, JPEG, WebP, BMP, TIFF or GIF",
                      "cat/notes": "photos/notes.jpg: not a readable image (not a format Pillow decodes: valid PNG, "
                                   "JPEG, WebP, BMP, TIFF or GIF; the file starts like text)"}
