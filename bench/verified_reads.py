"""What checking the bytes a stage decodes against the item's key costs, per image.

Stages decode a photo, a background or a cut-out only from bytes whose digest is the one in
the item's key (`base.files.read_keyed`). This bench times, on one core and in the same run,
for the demo's own files (the paper's cat and dogs, its houseplant cut-outs, its garden
backgrounds at 2048 px):
  plain     decoding the file as before (`load_image(path)`)
  verified  reading it once, hashing the bytes, decoding them (`load_image(path, expected)`)
and prints the added milliseconds per file and as a share of one extract item (decode +
U^2-Net-P + matte + PNG) and of one compose item (as `bench/compose_throughput.py` measures it,
taken here as the demo's compose seconds per image from its run log when present).

    python bench/verified_reads.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "data" / "gen4gen"


def best_of(repeat: int, run) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from stages import backends
    from stages.extract import cut_out
    from stages.runtime.images import load_image

    groups = {"photo (extract)": sorted((REFERENCE / "sources").rglob("*.jpg")),
              "cut-out (compose)": sorted((REFERENCE / "cutouts").rglob("*.png")),
              "background (compose)": sorted((REFERENCE / "backgrounds").rglob("*.jpg"))}
    added = {}
    for group, paths in groups.items():
        plain, verified = [], []
        for path in paths:
            sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
            plain.append(best_of(args.repeat, lambda: load_image(path, path.name)))
            verified.append(best_of(args.repeat, lambda: load_image(path, path.name, ("sha256", sha256))))
        extra = statistics.mean(v - p for v, p in zip(verified, plain))
        added[group] = extra
        print(f"{group:22s} {len(paths)} files: plain {statistics.mean(plain) * 1e3:7.1f} ms, verified "
              f"{statistics.mean(verified) * 1e3:7.1f} ms, added {extra * 1e3:6.2f} ms "
              f"(x{statistics.mean(verified) / statistics.mean(plain):.3f})")

    extractor = backends.create("extract", backends.describe("extract", "u2netp", {}), threads=1)
    photo = groups["photo (extract)"][0]
    params = backends.module("extract", "u2netp").Params()

    def extract_one() -> None:
        image = load_image(photo, photo.name)
        cut_out(image, extractor.soft_mask(image), params.threshold, params.max_side)

    extract_seconds = best_of(args.repeat, extract_one)
    print(f"one extract item: {extract_seconds * 1e3:.0f} ms; verifying its photo adds "
          f"{added['photo (extract)'] / extract_seconds:.2%}")
    log, layouts = REPO / "reports/compose.json", REPO / "build/layouts.json"
    if log.is_file() and layouts.is_file():  # the demo's last build
        report = json.loads(log.read_text())
        planned = json.loads(layouts.read_text())["layouts"]
        cutouts = {o["cutout"] for layout in planned for o in layout["objects"]}
        photos = {(layout["background"]["id"], layout["background"]["photo"]) for layout in planned}
        # each worker decodes each cut-out and background once (compose's lru caches), not once per image
        added_run = len(cutouts) * added["cut-out (compose)"] + len(photos) * added["background (compose)"]
        print(f"compose (the demo's last build: {report['computed']} images computed in {report['seconds']:.1f} s, "
              f"{len(cutouts)} cut-outs, {len(photos)} backgrounds): verifying adds at most "
              f"{added_run * 1e3:.0f} ms per worker, {added_run / report['seconds']:.2%} of the stage")

if __name__ == "__main__":
    main()
