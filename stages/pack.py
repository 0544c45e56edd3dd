"""Stage `pack`: write the kept samples as byte-deterministic WebDataset shards.

Reads  build/compiled/pack.json and every upstream index (cut-outs, layouts, images, captions,
       scores) plus the files in build/images.
Writes dataset/<composition>-NNNNNN.tar  each composition's kept samples in key order, cut into
                                         shards where the keys say (`stages.shard_layout`); NNNNNN the
                                         index of the shard's first sample (Gen4Gen trains one
                                         model per composition); per sample: jpg (or png / webp), mask.png,
                                         mask.<concept>.png, txt (short caption), detailed.txt,
                                         vlm.txt (with a VLM captioner),
                                         json (provenance)
       dataset/README.md                 the dataset card: Hugging Face loader configs, counts
       dataset/sizes.json                samples per shard (open_clip reads it)
       dataset/manifest.jsonl            one row per packed sample: its shard, the sha256 of each
                                         member and its provenance (less what recipe.json holds), so
                                         `g4g diff` reads no shard
       dataset/rejected.jsonl            one row per image not packed, with stage and reasons
       dataset/recipe.json               the resolved recipe, its key, backends, software
       dataset/card.html                 the card people look at (recipe option output.card_html)
       dataset/card/<key>.jpg            the full images its thumbnails open (sampled kept and rejected)
       reports/pack_plots/               DVC plots: keep rates, caption lengths, contact sheets
       metrics/dataset.json              DVC metrics: samples, keep rate per bin, rejections, caption lengths

Shards are items too: a shard's key covers its samples' content keys, so editing one
composition rewrites only that composition's shards; the others are reused byte for byte.
Within a composition, shard boundaries follow the sample keys, not their count: one sample
added, removed, changed or flipped between kept and rejected rewrites one or two shards, and
the shards after it keep their names and bytes.
The whole directory is built beside the old one and swapped in, so a reader never sees a mix.
A new shard is moved there out of the item cache, which keeps its record only: a shard is on
disk once besides DVC's cache, and one that left `dataset/` (a hand edit, `dvc checkout`) is
written again from `build/`.

The provenance JSON has the same schema in every composition (per-concept fields are lists of
records with an `id`, backend params a JSON string) and no machine paths, so Arrow, Parquet and
`datasets` read every composition alike.
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import sys
import tarfile
import time
from itertools import groupby
from pathlib import Path
from typing import Any, Callable

from base.errors import ItemError
from base.files import dumps_json, read_json, write_json
from base.keys import canonical_json, content_key
from base.settings import load_settings
from stages.card import cutout_sheet
from stages.card.figures import contact_sheet
from stages.card.dataset_reader import DatasetReader
from stages.card.page import IMAGE_EXTENSIONS, page as card_page, shard_contents, summarize
from stages.card.sample import ComposedImages, card_files
from stages.card.readme import dataset_card, dataset_license
from stages.dataset_metrics import dataset_metrics
from stages.manifest import dataset_wide, manifest_row, member_digests
from stages.card.plots import write_plots
from stages.runtime.cache import verified_bytes
from stages.runtime.runner import ItemOutput, StageFailed, each_item, materialize, run_cli, run_items
from stages.shard_layout import chunks, shard_name

VERSION = "2"  # 2: shards cut where the keys say; records hold member digests
TAR_MTIME = 946684800  # 2000-01-01: fixed, so the same samples give the same bytes
CAPTION_ROLES = ("short", "detailed", "vlm")  # vlm: only with a captioner that looks at the images
UPSTREAM = {"plan": "layouts", "compose": "images", "caption": "captions", "score": "scores"}


def shard_bytes(samples: list[tuple[str, dict[str, bytes]]]) -> bytes:
    """A WebDataset shard: an uncompressed tar of `<key>.<extension>` members, each sample's
    members adjacent and sorted, every header fixed (mtime, owner, mode).

    Written with `tarfile` rather than webdataset's TarWriter: importing webdataset imports
    torch, which costs 1.6 s on every run of this stage, and the format is this simple.
    The shards are read with webdataset (see the tests).
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for key, sample in samples:
            for extension in sorted(sample):
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size, info.mtime, info.mode = len(sample[extension]), TAR_MTIME, 0o444
                info.uname = info.gname = "g4g"
                tar.addfile(info, io.BytesIO(sample[extension]))
    return buffer.getvalue()


def portable_source(source: str | None) -> str | None:
    """A photo's source without the builder's paths: a `pkg:` reference or a path relative to
    the project (the working directory) as it is; a file outside the project by its name only
    (its sha256 is recorded beside it)."""
    if source is None or source.startswith("pkg:") or not os.path.isabs(source):
        return source
    return _outside_path(source, os.getcwd())


@functools.lru_cache(maxsize=4096)
def _outside_path(source: str, project: str) -> str:
    """An absolute source as `portable_source` writes it; a few photos make every sample, so
    each is worked out once."""
    try:
        return Path(source).relative_to(project).as_posix()
    except ValueError:
        return Path(source).name


def provenance(sample: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Everything needed to know where a sample came from and to rebuild it."""
    layout, image, captions, score = (sample[name] for name in ("layout", "image", "captions", "score"))
    stats = {c["concept"]: c for c in image["concepts"]}
    order = [obj["concept"] for obj in layout["objects"]]  # paste order: first is bottom-most
    concepts = []
    for obj in layout["objects"]:
        cutout = sample["cutouts"][obj["cutout"]]
        concepts.append({
            "id": obj["concept"], **context["concepts"][obj["concept"]], "box": obj["box"],
            "cutout": {"id": cutout["id"], "source": portable_source(cutout["source"]), "sha256": cutout["sha256"],
                       "box_in_source": cutout["box"], "key": cutout["key"],
                       **({"mirrored": True} if obj.get("mirrored") else {})},
            "visible": score["concepts"][obj["concept"]]["visible"], "mask": stats[obj["concept"]]["mask"],
        })
    background = dict(image["background"])
    if "source" in background:
        background["source"] = portable_source(background["source"])
    return {
        "key": sample["id"],
        "recipe": context["recipe"],
        "composition": layout["composition"], "index": layout["index"], "seed": layout["seed"],
        "canvas": layout["canvas"],
        "concepts": concepts,
        "background": background,
        "captions": {role: captions[role] for role in CAPTION_ROLES if role in captions},
        "score": {**{k: v for k, v in score.items() if k in ("keep", "metrics")},  # a kept sample has no reasons
                  "concepts": [{"id": cid, **score["concepts"][cid]} for cid in order]},
        "backends": context["backends"],
        "software": context["software"],
        "item_keys": sample["keys"],
    }


@each_item
def write_shard(shard: dict[str, Any], context: dict[str, Any]) -> ItemOutput:
    images_dir = Path(context["images_dir"])
    samples, members = [], {}
    for sample in shard["samples"]:
        image = sample["image"]
        files = {
            Path(image["image"]).suffix[1:]: verified_bytes(images_dir, image["image"], image["files"]),  # jpg/png/webp
            "mask.png": verified_bytes(images_dir, image["mask"], image["files"]),
            "txt": sample["captions"]["short"].encode("utf-8"),
            "detailed.txt": sample["captions"]["detailed"].encode("utf-8"),
            **({"vlm.txt": sample["captions"]["vlm"].encode("utf-8")} if "vlm" in sample["captions"] else {}),
            "json": dumps_json(sample["provenance"]).encode("utf-8"),
        }
        for concept in image["concepts"]:
            files[f"mask.{concept['concept']}.png"] = verified_bytes(images_dir, concept["mask"], image["files"])
        samples.append((sample["id"], files))
        members[sample["id"]] = member_digests(files)
    data = shard_bytes(samples)
    reader = DatasetReader("pack", lambda name: io.BytesIO(data), digests=False)  # the card's view of the bytes
    contents = shard_contents(reader, shard["id"], {shard["samples"][0]["layout"]["composition"]})
    del contents["provenance"]  # as each sample's record gives it (`known_contents`): not kept twice
    return {"samples": len(samples), "members": members, "contents": contents}, {shard["id"]: data}


def gather(document: dict[str, Any], build_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept samples with all their records, rejected rows with stage and reasons), in key order."""
    indexes = {stage: read_json(build_dir / f"{name}.json") for stage, name in UPSTREAM.items()}
    by_id = {stage: {r["id"]: r for r in indexes[stage][name]} for stage, name in UPSTREAM.items()}
    problems: dict[str, dict[str, Any]] = {}
    for stage in UPSTREAM:  # the first stage that lost an item says why
        for entry in indexes[stage]["failed"] + indexes[stage]["skipped"]:
            problems.setdefault(entry["id"], {"stage": stage, "reasons": [entry["reason"]]})
    cutouts = {c["id"]: c for c in read_json(build_dir / "cutouts.json")["cutouts"]}
    kept, rejected = [], []
    for item in document["items"]:
        parts = {stage: by_id[stage].get(item["id"]) for stage in UPSTREAM}
        if any(part is None for part in parts.values()):
            rejected.append({"key": item["id"], **problems.get(item["id"], {"stage": "unknown", "reasons": []})})
        elif not parts["score"]["keep"]:
            rejected.append({"key": item["id"], "stage": "score", "background": parts["plan"]["background"]["id"],
                             "reasons": [r["message"] for r in parts["score"]["reasons"]]})
        else:
            layout = parts["plan"]
            kept.append({"id": item["id"], "keys": {stage: parts[stage]["key"] for stage in UPSTREAM},
                         "layout": layout, "image": parts["compose"],
                         "captions": parts["caption"], "score": parts["score"],
                         "cutouts": {o["cutout"]: cutouts[o["cutout"]] for o in layout["objects"]}})
    return kept, rejected


def shards(kept: list[dict[str, Any]], document: dict[str, Any], context: dict[str, Any]) -> list[dict[str, Any]]:
    """Each composition's samples in shards of at most `shard_size` cut where their keys say
    (`shard_layout`), keyed by their content; each sample gets its provenance record."""
    out = []
    by_composition = groupby(sorted(kept, key=lambda s: (s["layout"]["composition"], s["id"])),
                             key=lambda s: s["layout"]["composition"])
    for composition, samples in by_composition:
        for chunk in chunks(list(samples), document["shard_size"], key=lambda s: s["id"]):
            name = shard_name(composition, chunk[0]["layout"]["index"])
            for sample in chunk:
                sample["provenance"] = provenance(sample, context)
            # Sample keys cover each sample's tokens and class nouns (through its caption key),
            # so an edit to another concept leaves this shard alone; the digest of its provenance
            # covers what no item key holds (a photo's path, or its bytes where the pixels and so
            # the cut-out stayed the same), so a shard never keeps a stale record.
            parts = {**document["fingerprint"], "version": VERSION, "name": name,
                     "samples": [(s["id"], s["keys"], content_key(s["provenance"])) for s in chunk],
                     "context": {k: v for k, v in context.items() if k not in ("images_dir", "concepts")}}
            out.append({"id": name, "parts": parts, "samples": chunk})
    return out


def run(items_file: Path, build_dir: Path, out_dir: Path, reports_dir: Path = Path("reports"),
        metrics_file: Path = Path("metrics/dataset.json")) -> None:
    start = time.perf_counter()
    document = read_json(items_file)
    recipe = {"name": document["name"], "key": document["recipe_key"], "recipe": document["recipe"],
              "backends": document["backends"], "software": document["software"]}
    context = {"images_dir": str(build_dir / "images"), "concepts": document["concepts"], **dataset_wide(recipe)}
    kept, rejected = gather(document, build_dir)
    planned = shards(kept, document, context)
    result, cache = run_items("pack", planned, write_shard, context, load_settings(), outputs=out_dir,
                              dvc_cached=True, moved_out=True)
    if result.failures:  # a shard missing from a dataset is never silent: dataset/ stays as it was
        raise StageFailed("pack: " + "; ".join(f"{shard}: {reason}" for shard, reason in sorted(result.failures.items())))
    sizes = {shard["id"]: len(shard["samples"]) for shard in planned}
    manifest = [manifest_row(s["provenance"], shard["id"], result.records[shard["id"]]["members"][s["id"]])
                for shard in planned for s in shard["samples"]]
    placed = result.outputs  # a shard still as placed is read there, else from the cache
    shard_files = {s["id"]: out_dir / s["id"] if placed.holds(result.records[s["id"]]["files"])
                   else cache.file(result.records[s["id"]]["key"], s["id"]) for s in planned}
    summary = summarize(recipe, shard_files, rejected, ComposedImages(build_dir / "images", IMAGE_EXTENSIONS),
                        known_contents(planned, result.records),
                        composed_image({s["id"]: s["image"] for s in kept}, build_dir / "images"))
    extra = {
        "README.md": card(document, summary).encode("utf-8"),
        "sizes.json": dumps_json(sizes).encode("utf-8"),
        "manifest.jsonl": "".join(canonical_json(row) + "\n" for row in manifest).encode("utf-8"),
        "rejected.jsonl": "".join(canonical_json(row) + "\n" for row in rejected).encode("utf-8"),
        "recipe.json": dumps_json(recipe).encode("utf-8"),
    }
    sheet = cutout_sheet.from_build(build_dir / "cutouts", read_json(build_dir / "cutouts.json")["cutouts"])
    if sheet:  # every view on a checkerboard, black and white, with its figures; linked from card.html
        extra[cutout_sheet.FILE], summary["cutout_sheet"] = sheet, True
    if document["recipe"]["output"]["card_html"]:
        extra["card.html"] = card_page(summary).encode("utf-8")
        extra.update(card_files(summary))  # the full images its thumbnails open
    example = example_sheet(summary)
    if example:
        extra["example.jpg"] = example
    materialize(result, cache, out_dir, extra=extra, dvc_cached=True)
    write_plots(summary, reports_dir / "pack_plots")
    write_json(metrics_file, dataset_metrics(summary, rejected, [s["layout"] for s in kept]))
    seconds = time.perf_counter() - start
    write_json(reports_dir / "pack.json", {
        "stage": "pack", "items": len(document["items"]), "packed": len(manifest), "rejected": len(rejected),
        "shards": len(sizes), "bytes": sum((out_dir / name).stat().st_size for name in sizes),
        "computed": result.computed, "reused": result.reused,  # shards written / reused
        "repaired": result.repaired, "recomputed_because": result.recomputed_because,
        "keys_digest": result.keys_digest, "failed": 0, "seconds": round(seconds, 3),
    })
    print(f"pack: {len(manifest)} samples in {len(sizes)} shards ({result.computed} written, {result.reused} "
          f"reused), {len(rejected)} not packed (see {out_dir / 'rejected.jsonl'}) ({seconds:.1f}s)", file=sys.stderr)


def known_contents(planned: list[dict[str, Any]], records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each shard's contents for the card: what its record kept of reading it when it was
    written (keys, fields, problems), and each sample's provenance as this run made it, which
    is what the shard holds (its key covers the digest of each one). A record without contents
    (an older pack's) is left out: the card reads that shard."""
    return {shard["id"]: {**records[shard["id"]]["contents"],
                          "provenance": {sample["id"]: sample["provenance"] for sample in shard["samples"]}}
            for shard in planned if "contents" in records[shard["id"]]}


def composed_image(records: dict[str, dict[str, Any]], images_dir: Path) -> Callable[[str], tuple[str, bytes] | None]:
    """A kept sample's image as its shard holds it: the composed image's bytes, verified against
    compose's record (so the card reads no shard for its thumbnails); None where they changed."""
    def image(key: str) -> tuple[str, bytes] | None:
        record = records.get(key)
        if record is None:
            return None
        try:
            return Path(record["image"]).suffix[1:], verified_bytes(images_dir, record["image"], record["files"])
        except (OSError, ItemError):
            return None

    return image


def card(document: dict[str, Any], summary: dict[str, Any]) -> str:
    """The dataset card, from the shards as written (their fields and provenance, as summarized)."""
    compositions = {cid: {"shards": c["shards"], "fields": c["fields"], "provenance": c["samples"]}
                    for cid, c in summary["compositions"].items() if c["shards"]}
    output, recipe = document["recipe"]["output"], document["recipe"]
    credits = [(f"{kind} `{name}`", entry["credit"]) for kind, section in (("concept", "concepts"),
               ("background", "backgrounds")) for name, entry in sorted(recipe[section].items()) if entry.get("credit")]
    return dataset_card({"name": document["name"], "key": document["recipe_key"], **dataset_license(recipe),
                         "card_html": output["card_html"], "credits": credits,
                         "repainted": document["backends"]["compose"]["name"] != "paste",
                         "example": any(c["sheet"] for c in summary["compositions"].values())}, compositions)


def example_sheet(summary: dict[str, Any]) -> bytes:
    """The card's example image: the card's samples of the composition with the most concepts
    (the first such by name); empty when nothing was packed."""
    shown = [name for name, c in summary["compositions"].items() if c["sheet"]]
    if not shown:
        return b""
    name = max(sorted(shown), key=lambda n: len(summary["compositions"][n]["concepts"]))
    buffer = io.BytesIO()
    contact_sheet([s["image"] for s in summary["compositions"][name]["sheet"][:6]], columns=3, side=256).save(
        buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=Path, default=Path("build/compiled/pack.json"))
    parser.add_argument("--build", type=Path, default=Path("build"))
    parser.add_argument("--out", type=Path, default=Path("dataset"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/dataset.json"))
    args = parser.parse_args()
    run_cli(lambda: run(args.items, args.build, args.out, metrics_file=args.metrics))


if __name__ == "__main__":
    main()
