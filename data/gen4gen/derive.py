"""Re-derive this folder from the full-resolution Gen4Gen reference data (maintainers only).

Usage: python data/gen4gen/derive.py SOURCE [--extra-dog PHOTO MASK]

SOURCE is a folder laid out as the reference data (sources/, isnet_masks/, cutouts/,
backgrounds/, repainted_examples/). Photos are downscaled so that the whole subset stays a
few MB; masks are resized with the same filter as their photo so they stay aligned.
Nothing in the project runs this: tests, benches and recipes read the files it wrote.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
PHOTO_SIDE = 768       # concept photos and their masks
CUTOUT_SIDE = 640      # RGBA cut-outs
BACKGROUND_SIDE = 2048  # longer side of background photos (scene templates zoom into them)
EXAMPLE_SIDE = 512     # the paper's repainted outputs, for visual comparison only


def shrink(image: Image.Image, side: int) -> Image.Image:
    scale = side / max(image.size)
    if scale >= 1:
        return image
    size = (round(image.width * scale), round(image.height * scale))
    return image.resize(size, Image.Resampling.LANCZOS)


def save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jpg":
        image.convert("RGB").save(path, quality=90, optimize=True)
    else:
        image.save(path, optimize=True)
    print(f"{path.relative_to(HERE)}  {image.size[0]}x{image.size[1]}  {path.stat().st_size // 1024} KiB")


def concept_photos(source: Path, extra_dog: tuple[Path, Path] | None) -> list[tuple[str, str, Path, Path]]:
    """(concept, name, photo, IS-Net mask) for every concept photo to ship."""
    photos = [(photo.parent.name, photo.stem, photo, source / "isnet_masks" / photo.parent.name / f"{photo.stem}.png")
              for photo in sorted((source / "sources").glob("*/*.jpg"))]
    if extra_dog:
        photos.append(("dog", "dog_06", *extra_dog))
    return photos


def derive(source: Path, extra_dog: tuple[Path, Path] | None) -> None:
    for concept, name, photo, mask in concept_photos(source, extra_dog):
        save(shrink(Image.open(photo).convert("RGB"), PHOTO_SIDE), HERE / "sources" / concept / f"{name}.jpg")
        save(shrink(Image.open(mask).convert("L"), PHOTO_SIDE), HERE / "isnet_masks" / concept / f"{name}.png")
    for cutout in sorted((source / "cutouts").glob("*/*.png")):
        save(shrink(Image.open(cutout).convert("RGBA"), CUTOUT_SIDE), HERE / "cutouts" / cutout.parent.name / cutout.name)
    for background in sorted((source / "backgrounds").glob("*/*.jpeg")):
        target = HERE / "backgrounds" / background.parent.name / f"{background.stem}.jpg"
        if max(Image.open(background).size) <= BACKGROUND_SIDE:  # small enough: the original bytes
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(background.read_bytes())
        else:
            save(shrink(Image.open(background), BACKGROUND_SIDE), target)
    for example in sorted((source / "repainted_examples").glob("*.png")):
        save(shrink(Image.open(example), EXAMPLE_SIDE), HERE / "repainted_examples" / f"{example.stem}.jpg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("--extra-dog", nargs=2, type=Path, metavar=("PHOTO", "MASK"),
                        help="the second dog view of the Gen4Gen repository and its IS-Net mask")
    arguments = parser.parse_args()
    derive(arguments.source, tuple(arguments.extra_dog) if arguments.extra_dog else None)


if __name__ == "__main__":
    main()
