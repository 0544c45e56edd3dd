"""Captioners: a composed sample's description -> {"short": ..., "detailed": ...}.

Interface: `Backend(params, templates=..., token_style=...)` with `caption(scene) -> dict[str, str]`.
"""
