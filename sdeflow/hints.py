"""Hints appended to failure messages of the time loop, registered by solver families.

The implicit solvers register "this looks stiff: try solver='kvaerno5'" here; the loop
(:mod:`sdeflow.integrate`) appends the first non-empty hint to ``MaxStepsError`` and
``StepSizeError`` messages. The module imports nothing, so any module may register.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Hint = Callable[[dict[str, Any]], str]

HINTS: list[Hint] = []


def register(fn: Hint) -> Hint:
    """Register ``fn(stats) -> str`` (``""`` when it has nothing to say); returns ``fn``."""
    if fn not in HINTS:
        HINTS.append(fn)
    return fn


def hint(stats: dict[str, Any]) -> str:
    """The first non-empty hint for a failed solve's ``stats``."""
    for fn in HINTS:
        text = fn(stats)
        if text:
            return text
    return ""


__all__ = ["register", "hint", "HINTS"]
