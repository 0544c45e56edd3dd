"""Composers: layout + cut-outs + background photo -> image, union mask, per-concept masks.

Interface: `Backend(params)` with `compose(layout, cutouts, background) -> Composition`.
"""
