"""argparse types the `g4g` subcommands share: numbers in a named range, existing files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable


def bounded(kind: type, low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a `kind` (int or float) from `low` to `high` (NaN and infinities refused)."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}; "
                                             f"valid: {low:g}-{high:g}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text}; valid: {low:g}-{high:g}")
        return value
    return parse


def existing_file(text: str) -> Path:
    """An argparse type: a path to a readable regular file."""
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text}: not a file; valid: a saved `dvc exp show --json` output")
    return Path(text)
