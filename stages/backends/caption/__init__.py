"""Captioners: a composed sample's scene description -> {"short": ..., "detailed": ...}.

Interface: `Backend(params, templates_dir=..., templates={role: template}[, cache_dir, root,
device, precision, weights])` with `caption_batch(samples) -> list[record | ItemError]`; a
sample holds `id`, `seed`, `scene` (`stages.caption.describe_scene`'s output) and `aliases`
{concept: [word, ...]}, plus, for a backend whose module sets `READS_IMAGES`, the composed
`image` (path) and `files` (its digests from build/images.json). `template` writes `short` and
`detailed`; the VLM backends (`vlm`, `vlm-openai`) add `vlm` and its `recaption` details.
"""
