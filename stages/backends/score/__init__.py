"""Scorers: composed samples -> keep/reject with reasons and per-concept measurements.

Interface: `Backend(params[, device=...])` with `score_batch(samples) -> list[dict]`, each
holding `keep`, `reasons` (check, concept, message) and `concepts` (measurements per concept).
A sample gives `image` (path), `canvas`, `background` (phrase) and `concepts`: per concept its
id, class noun, reference photo paths, pasted cut-out path and alpha areas (full, inside,
visible) from the compose stage.
"""
