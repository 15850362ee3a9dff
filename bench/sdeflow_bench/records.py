"""Records (one point of a work-precision diagram), notes, and progress bars."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .timing import Timed

Tensor = torch.Tensor
Field = Callable[[Tensor, Tensor], Tensor]

@dataclass
class Record:
    """One point of a work-precision diagram (or a hand-loop measurement)."""

    section: str
    problem: str
    library: str
    method: str
    setting: str          # "steps=128", "rtol=1e-06", "default"
    mode: str             # "matched" or "default"
    steps: int | None = None
    rtol: float | None = None
    error: float = math.nan
    error_se: float = math.nan
    weak_error: float = math.nan
    weak_se: float = math.nan
    nfe: float = math.nan
    wall: float = math.nan
    wall_min: float = math.nan
    walls: list[float] = field(default_factory=list)
    reps: int = 1
    note: str = ""

    def set_timing(self, t: Timed) -> None:
        """Copy a :class:`Timed` item's median, minimum and every round into this record."""
        self.wall, self.walls, self.reps = t.median, list(t.walls), t.reps
        self.wall_min = min(t.walls) if t.walls else math.nan

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for k, v in d.items():
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None
        return d


class Notes:
    """Notes of skipped peers and failed runs, de-duplicated, in order."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, msg: str) -> None:
        if msg not in self.items:
            self.items.append(msg)


def short_exc(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0][:160] if msg else ''}"


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm  # noqa: PLC0415

    return tqdm(total=total, desc=desc, leave=False, disable=not enabled, file=sys.stderr,
                dynamic_ncols=True)

def is_finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
