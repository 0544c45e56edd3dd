"""One module per build stage: extract, plan, compose, caption, score, pack, train, evaluate."""

import os

from base.environment import require_project_environment

require_project_environment()

# numba (under pymatting and rembg) would pick GNU OpenMP, which kills any process forked after
# one of its parallel kernels ran, and every stage forks its workers. Set before numba loads:
# kernels from numba's on-disk cache start their threads as soon as they are imported.
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
