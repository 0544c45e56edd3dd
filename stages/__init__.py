"""One module per build stage: extract, plan, compose, caption, score, pack, train, evaluate."""

from compiler.environment import require_project_environment

require_project_environment()
