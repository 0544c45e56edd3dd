"""Custom Diffusion's data augmentation (diffusers' examples/custom_diffusion, `CustomDiffusionDataset`),
drawn from a seeded CPU generator so that runs repeat.

Two thirds of the time an instance image shrinks to 1/3-1 of the training side on a zero
(mid-grey) canvas, the padding and a one-latent-pixel border masked out of the loss; otherwise
it grows to 1.2-1.4x and a random square is cropped. Small images get "a far away " or "very
small " before their caption, enlarged ones "zoomed in " or "close up ". `hflip` mirrors half
of the images (instances and prior images) first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FAR = ("a far away ", "very small ")
CLOSE = ("zoomed in ", "close up ")


@dataclass(frozen=True)
class View:
    """How one instance image enters one step."""

    scale: int  # the side it is resized to
    top: int  # its offset on the canvas (scale <= side) or the crop's offset in it (scale > side)
    left: int
    flip: bool
    prefix: str  # put before its caption


def draw(generator: Any, side: int, resize: bool, hflip: bool) -> View:
    """One image's view, with the script's probabilities and ranges (`resize` off: the whole image)."""
    import torch

    def uniform() -> float:
        return float(torch.rand((), generator=generator, dtype=torch.float64))

    def integer(low: int, high: int) -> int:  # [low, high), as numpy's randint
        return int(torch.randint(low, high, (), generator=generator))

    flip = hflip and uniform() < 0.5
    if not resize:
        return View(side, 0, 0, flip, "")
    scale = integer(side // 3, side + 1) if uniform() < 0.66 else integer(int(1.2 * side), int(1.4 * side))
    outer, inner = max(scale, side), min(scale, side)
    top, left = integer(0, outer - inner + 1), integer(0, outer - inner + 1)
    prefix = FAR[integer(0, 2)] if scale < 0.6 * side else CLOSE[integer(0, 2)] if scale > side else ""
    return View(scale, top, left, flip, prefix)


def _square(image: Any) -> Any:
    """The centred square of `image` (the script would squash a non-square image instead)."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def _place(values: Any, view: View, side: int) -> Any:
    """`values` (scale x scale x C) on a zero side x side canvas, or cropped to it."""
    import numpy as np

    if view.scale > side:
        return values[view.top:view.top + side, view.left:view.left + side]
    canvas = np.zeros((side, side, values.shape[2]), dtype=np.float32)
    canvas[view.top:view.top + view.scale, view.left:view.left + view.scale] = values
    return canvas


def pixels(image: Any, view: View, side: int) -> Any:
    """The instance image as the step sees it: side x side x 3 float32 in [-1, 1]."""
    import numpy as np
    from PIL import Image

    image = _square(image)
    if view.flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    resized = np.asarray(image.resize((view.scale, view.scale), resample=Image.Resampling.BILINEAR), dtype=np.uint8)
    return _place((resized / 127.5 - 1.0).astype(np.float32), view, side)


def concept_mask(mask: Any, view: View, side: int) -> Any:
    """The concepts' union mask moved exactly as `pixels` moves the image: side x side in [0, 1]."""
    import numpy as np
    from PIL import Image

    mask = _square(mask)
    if view.flip:
        mask = mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    resized = np.asarray(mask.resize((view.scale, view.scale), resample=Image.Resampling.BILINEAR), np.float32) / 255
    return _place(resized[:, :, None], view, side)[:, :, 0]


def valid(view: View, side: int, latent_side: int) -> Any:
    """Where the loss counts, on the latent grid: the image minus a one-pixel border (all of a crop)."""
    import numpy as np

    if view.scale > side:
        return np.ones((latent_side, latent_side), dtype=np.float32)
    factor = side // latent_side
    region = np.zeros((latent_side, latent_side), dtype=np.float32)
    region[view.top // factor + 1:(view.top + view.scale) // factor - 1,
           view.left // factor + 1:(view.left + view.scale) // factor - 1] = 1.0
    return region
