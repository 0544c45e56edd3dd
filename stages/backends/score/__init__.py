"""Scorers: a composed sample -> keep/reject with reasons and per-concept measurements.

Interface: `Backend(params)` with `score(sample) -> dict` holding `keep`, `reasons`, `concepts`.
"""
