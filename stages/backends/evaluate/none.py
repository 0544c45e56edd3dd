"""No evaluation (the default; evaluation needs trained models)."""

from __future__ import annotations

from dataclasses import dataclass

VERSION = "1"


@dataclass
class Params:
    pass
