"""What every layer needs, and nothing of ours below it: errors a user can act on, content keys
and canonical JSON, input references and confinement, atomic files, throughput settings, text
and URLs from others, the installed distributions, what a compile read, and the check that a
stage runs under the project's Python.

Imports point one way: `base` imports only `base`; `stages` imports `stages` and `base`;
`compiler` imports all three (tests/test_import_direction.py checks it).
"""
