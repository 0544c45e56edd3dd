"""No training: the build ends with the dataset (the CPU default)."""

from __future__ import annotations

from dataclasses import dataclass

VERSION = "1"


@dataclass
class Params:
    pass
