"""Captioners: a composed sample's scene description -> {"short": ..., "detailed": ...}.

Interface: `Backend(params, templates_dir=..., templates={role: template})` with
`caption(scene) -> dict[str, str]`; the scene is `stages.caption.describe_scene`'s output.
"""
