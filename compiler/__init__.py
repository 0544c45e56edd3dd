"""Recipe -> fully resolved, schema-checked build plan (the IR), content keys, and the `g4g` CLI."""

__version__ = "0.1.0"
