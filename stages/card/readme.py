"""The dataset card `dataset/README.md`: a short Hugging Face YAML header (license, task, size
category, tags, and the loader configs: one per composition, and `all`, the default, with every
composition), then what the dataset holds and how to load it.

Every config declares its features, so `datasets` never guesses the columns from the first
samples it reads: a composition's config has exactly its own columns, and `all` has every
composition's, a mask a sample does not have being None. The provenance column is declared as
JSON (`datasets` >= 4.7), not as its nested structure, and each config's shards as a glob, so
the header stays a few dozen lines however many shards and fields there are; the per-composition
figures are the table in the card's body. Written by pack; byte-stable.
"""

from __future__ import annotations

from typing import Any

import yaml

WHOLE = "all"  # the config with every composition, loaded by `load_dataset("dataset")`
IMAGE_EXTENSIONS = ("jpg", "png", "webp")
TASKS = ["text-to-image"]  # Hugging Face task categories: personalised (multi-concept) generation
TAGS = ["gen4gen", "multi-concept", "personalization", "synthetic", "webdataset"]
# Hugging Face size categories: (upper bound on samples, name)
# Licences of photo sources that have no Hugging Face id: the card says `license: other` and names them
LICENSE_LINKS = {"unsplash": "https://unsplash.com/license", "pexels": "https://www.pexels.com/license/",
                 "pixabay": "https://pixabay.com/service/license-summary/"}
SIZE_CATEGORIES = [(10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M"),
                   (10**7, "1M<n<10M"), (10**8, "10M<n<100M"), (10**9, "100M<n<1B")]


class OneLine(list):
    """A list the header writes in YAML's flow style, on one line: a config's features."""


class _HeaderDumper(yaml.SafeDumper):
    pass


_HeaderDumper.add_representer(OneLine, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=True))


def dataset_license(recipe: dict[str, Any]) -> dict[str, Any]:
    """The card's licence, from the resolved recipe: `output.license` when the recipe sets it (the
    builder's own decision), else the licence its photos share (each concept's and background's
    `license`): a Hugging Face id as is; a licence the Hub has no id for (`unsplash`) as
    `other` with `license_name` and `license_link`; sources under different licences as `other`
    naming them all. `unknown` when a source declares none. `sources` lists (what, licence).
    A recipe read from someone else's dataset may lack any of these: what is missing counts as
    undeclared."""
    def entries(section: str) -> list[tuple[str, Any]]:
        found = recipe.get(section)
        return sorted(found.items()) if isinstance(found, dict) else []

    sources = [(f"{kind} `{name}`", str(entry.get("license") or "") if isinstance(entry, dict) else "")
               for kind, section in (("concept", "concepts"), ("background", "backgrounds"))
               for name, entry in entries(section)]
    output = recipe.get("output")
    chosen = str(output.get("license") or "unknown") if isinstance(output, dict) else "unknown"
    if chosen != "unknown":
        return {"license": chosen, "sources": sources}
    named = sorted({licence for _, licence in sources})
    if not named or "" in named:
        return {"license": "unknown", "sources": sources}
    if len(named) == 1 and named[0] not in LICENSE_LINKS:
        return {"license": named[0], "sources": sources}
    links = [LICENSE_LINKS[name] for name in named if name in LICENSE_LINKS]
    return {"license": "other", "license_name": " + ".join(named), **({"license_link": links[0]} if len(named) == 1 else {}),
            "sources": sources}


def size_category(samples: int) -> str:
    return next((name for bound, name in SIZE_CATEGORIES if samples < bound), "n>1B")


def shard_glob(composition: str) -> str:
    """The composition's shards, named `<composition>-NNNNNN.tar` by pack (NNNNNN: the index of
    the shard's first sample): the six `?` match its own numbers only, never the shards of a
    longer name (`cat-dog-000000.tar` for `cat`)."""
    return f"{composition}-{'?' * 6}.tar"


def features(fields: set[str]) -> OneLine:
    """The columns of a config: sample key and shard, images and masks, captions, provenance."""
    columns = [{"name": "__key__", "dtype": "string"}, {"name": "__url__", "dtype": "string"}]
    for field in sorted(fields):
        if field.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS:
            columns.append({"name": field, "dtype": "image"})
        elif field.endswith("txt"):
            columns.append({"name": field, "dtype": "string"})
        else:
            columns.append({"name": field, "dtype": "json"})
    return OneLine(columns)


def header(recipe: dict[str, Any], compositions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The YAML header: what the Hub shows and filters by (license, task, size, tags), then
    `configs` (data files) and `dataset_info` (features) per config."""
    fields = {WHOLE: set().union(*(c["fields"] for c in compositions.values())),
              **{name: c["fields"] for name, c in compositions.items()}}
    samples = sum(len(c["provenance"]) for c in compositions.values())
    return {
        "license": recipe["license"], **{key: recipe[key] for key in ("license_name", "license_link") if recipe.get(key)},
        "pretty_name": recipe["name"], "task_categories": TASKS,
        "size_categories": [size_category(samples)], "tags": TAGS,
        "configs": [{"config_name": WHOLE, "data_files": "*.tar", "default": True},
                    *({"config_name": name, "data_files": shard_glob(name)} for name in compositions)],
        "dataset_info": [{"config_name": name, "features": features(found)} for name, found in fields.items()],
    }


def dataset_card(recipe: dict[str, Any], compositions: dict[str, dict[str, Any]]) -> str:
    """The card's text.

    Args:
        recipe: `name`, `key`, `license` (a Hugging Face license id; `other` with `license_name` and
            `license_link`), `sources` ((what, licence) pairs: the photos' licences), `card_html` (whether
            card.html is written beside), `credits` ((what, who) pairs from the recipe's
            `credit` keys), `example` (whether example.jpg is written beside) and `repainted`
            (whether a diffusion model repainted the backgrounds) of the recipe.
        compositions: per composition id, in order: `shards` (file names), `fields` (the
            samples' field names) and `provenance` (each sample's JSON).
    """
    rows = "\n".join(f"| `{name}` | {len(c['provenance'])} | {len(c['shards'])} | "
                     f"{', '.join(f'`{f}`' for f in sorted(c['fields']))} |" for name, c in compositions.items())
    first = next(iter(compositions), "COMPOSITION")
    credits = "".join(f"- {what}: {who}\n" for what, who in recipe.get("credits", []))
    credits = f"\n## Credits\n\n{credits}" if credits else ""
    licensed = "".join(f"- {what}: {licence or 'not stated'}\n" for what, licence in recipe.get("sources", []))
    name = recipe.get("license_name", recipe["license"])
    licence = (f"\n## Licence\n\nThe images derive from the recipe's photos; the dataset's licence is "
               f"`{name}`{f' ({link})' if (link := recipe.get('license_link')) else ''}.\n\n{licensed}"
               if licensed else "")
    example = "\n![Samples of the dataset](example.jpg)\n" if recipe.get("example") else ""
    card = ("\n`card.html` shows a random sample of each composition with their captions (each opening its full\n"
            "image in `card/`), rejected images with their reasons, keep rates beside Gen4Gen's, counts per\n"
            "background, caption lengths and where the objects lie.") if recipe["card_html"] else ""
    front = yaml.dump(header(recipe, compositions), Dumper=_HeaderDumper, sort_keys=False, allow_unicode=True,
                      default_flow_style=None, width=1000)
    return f"""---
{front}---
# {recipe['name']}

Built by g4g, a Gen4Gen-style dataset compiler, from recipe `{recipe['name']}` (key `{recipe['key']}`):
images of several personal concepts, each with its soft mask, captions and provenance.
One config per composition (Gen4Gen trains one model per composition); `{WHOLE}`, the default,
holds every composition, a mask of a concept a sample does not show being None.
{example}
| composition | samples | shards | fields |
|---|---|---|---|
{rows}

```python
from datasets import load_dataset  # datasets >= 4.7: the provenance column `json` is JSON

one = load_dataset("dataset", "{first}", split="train")   # one composition, all its columns
everything = load_dataset("dataset", split="train")  # config "{WHOLE}"
```

`sizes.json` gives the samples per shard, `manifest.jsonl` one row per sample (its shard, the
sha256 of each member, its provenance),
`rejected.jsonl` why each image not packed was left out, `recipe.json` the resolved recipe.{card}

## Limitations

- The images are composites: photos of the concepts cut out and placed on background photos by
  a program, with{'' if recipe.get('repainted') else 'out'} a diffusion model repainting the background. Lighting, shadows and
  edges can betray the paste; a model trained on them may learn that look.
- The filter that chose the samples is automatic (visibility, size, placement; see
  `rejected.jsonl`), not the human 1-5 rating of the Gen4Gen paper: some kept images would not
  pass a person.
- Each concept is only as varied as its few source photos: its poses, lighting and angles.
- Captions are generated from templates or a vision-language model, with the personal tokens
  put in; they can be wrong about positions or details.
{licence}{credits}
## Citation

The pipeline is Gen4Gen's; please cite it when you use this dataset:

```bibtex
@inproceedings{{yeh2025gen4gen,
  title     = {{Gen4Gen: Generative Data Pipeline for Generative Multi-Concept Composition}},
  author    = {{Yeh, Chun-Hsiao and Cheng, Ta-Ying and Hsieh, He-Yen and others}},
  booktitle = {{British Machine Vision Conference (BMVC)}},
  year      = {{2025}},
  note      = {{arXiv:2402.15504}}
}}
```
"""
