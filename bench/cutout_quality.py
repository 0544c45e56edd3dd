"""Cut-out quality on the demo's photos against the paper's IS-Net masks, before and after the matte.

For cat_01, dog_05 and dog_06 (data/gen4gen/sources, masks in data/gen4gen/isnet_masks), cut out
by U^2-Net-P in the same run:
  before  the soft mask kept as alpha (`matte: false`, the behaviour before issue 32);
  after   the matte with the default options (a clean core, then a narrow band of matting).
Prints see-through (target <= 1%), ghost (target <= 0.5%) and IoU (not lower than before), with
the object's size as its longer side and, in brackets, by the square root of its area
(stricter; stages/backends/extract/quality.py), and seconds per photo (model + cut-out) with
the ratio after / before.

    python bench/cutout_quality.py [--repeat 3] [-o key=value ...]   (options of the matte, e.g. core=160)
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from stages import backends
from stages.backends.extract.quality import against_reference, in_photo
from stages.extract import cut_out_view
from stages.runtime.images import load_image

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "gen4gen"
PHOTOS = (("cat", "cat_01"), ("dog", "dog_05"), ("dog", "dog_06"))


def timed(extractor, image: Image.Image, params, repeat: int) -> tuple[float, Image.Image, list[int]]:
    """The best of `repeat` runs of model + cut-out, in seconds, and the cut-out."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        cutout, box, _ = cut_out_view(image, extractor.soft_mask(image), params)
        best = min(best, time.perf_counter() - start)
    return best, cutout, box


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("-o", "--option", action="append", default=[], help="a matte option, key=value")
    args = parser.parse_args()
    options = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.option)}
    extractor = backends.create("extract", backends.describe("extract", "u2netp", {}))
    after = dataclasses.replace(extractor.params, **options)
    before = dataclasses.replace(extractor.params, matte=False)
    print(f"{'photo':8s} {'':6s} {'see-through':>18s} {'ghost':>16s} {'IoU':>6s} {'s/photo':>8s}")
    totals = {"before": 0.0, "after": 0.0}
    for concept, name in PHOTOS:
        image = load_image(REFERENCE / "sources" / concept / f"{name}.jpg", name)
        reference = np.asarray(Image.open(REFERENCE / "isnet_masks" / concept / f"{name}.png").convert("L")) > 127
        for label, params in (("before", before), ("after", after)):
            seconds, cutout, box = timed(extractor, image, params, args.repeat)
            totals[label] += seconds
            alpha = in_photo(np.asarray(cutout.getchannel("A")), box, reference.shape)
            side, area = against_reference(alpha, reference), against_reference(alpha, reference, by="area")
            print(f"{name:8s} {label:6s} {side['see_through']:8.2%} [{area['see_through']:6.2%}] "
                  f"{side['ghost']:6.2%} [{area['ghost']:6.2%}] {side['iou']:6.4f} {seconds:8.2f}")
    print(f"time per photo: before {totals['before'] / len(PHOTOS):.2f} s, after {totals['after'] / len(PHOTOS):.2f} s "
          f"(x{totals['after'] / totals['before']:.2f})")


if __name__ == "__main__":
    main()
