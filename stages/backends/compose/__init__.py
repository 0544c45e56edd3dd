"""Composers: layout + cut-outs + background photo -> image, union mask, per-concept masks.

Interface: `Backend(params[, templates_dir, device, precision, torch_compile, cpu_offload])`
with `compose_batch(jobs) -> list[result | ItemError]`. A job holds `boxes` (paste order),
`cutouts` (RGBA images), `background` (canvas-sized RGB photo, or None when the background
has no photo), `phrase`, `seed`, `canvas`, `supports` (what each object stands on) and `light`
(the scene template's, or None); a result holds `image` (RGB), `mask` (union,
L), `masks` (each concept's visible soft mask, L), `stats` (alpha areas: full, inside,
visible) and optionally `unpasted` (the repainted image before paste-back).
"""
