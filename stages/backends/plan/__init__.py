"""Planners: a layout request (concepts, their cut-out shapes, allowed backgrounds, seed) ->
one box per concept, a paste order and a background.

Interface: `Backend(params)` with `plan(request: stages.layout.LayoutRequest) -> stages.layout.Layout`.
"""
