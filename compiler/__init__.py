"""Recipe -> fully resolved, schema-checked build plan (the IR), content keys, and the `g4g` CLI."""

from base.environment import require_project_environment

__version__ = "0.1.0"

require_project_environment()
