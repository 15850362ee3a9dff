"""Argument checks and solver look-up shared by the verification functions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .. import solvers as _solvers

Tensor = torch.Tensor
_F64 = torch.float64

Tensor = torch.Tensor
_F64 = torch.float64


def _solver_info(solver: Any) -> tuple[Any, str]:
    """(instance, display name) of a solver given as a name, class or instance."""
    try:
        inst = _solvers.resolve(solver)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    name = getattr(inst, "name", "") or type(inst).__name__
    return inst, name


def _check_int(v: Any, name: str, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
    return v


def _check_float(v: Any, name: str, *, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {v!r}")
    if positive and v <= 0:
        raise ValueError(f"{name}: expected a positive number, got {v!r}")
    return float(v)


def _steps_from_dts(dts: Sequence[float], t1: float, name: str = "dts") -> list[int]:
    """Number of steps for each ``dt``; ``t1/dt`` must be an integer."""
    if isinstance(dts, (str, bytes)) or not isinstance(dts, Sequence) or len(dts) < 2:
        raise ValueError(f"{name}: expected a sequence of at least two step sizes, got {dts!r}")
    steps = []
    for h in dts:
        h = _check_float(h, name, positive=True)
        n = round(t1 / h)
        if n < 1 or abs(n * h - t1) > 1e-9 * max(1.0, abs(t1)):
            raise ValueError(f"{name}: step {h} does not divide the span {t1} into whole steps")
        steps.append(n)
    if len(set(steps)) != len(steps):
        raise ValueError(f"{name}: expected distinct step sizes, got {list(dts)}")
    return steps


def _check_level(v: Any, name: str = "ci_level") -> float:
    """A confidence level in (0, 1)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
        raise ValueError(f"{name}: expected a level in (0, 1), e.g. 0.95, got {v!r}")
    return float(v)


def _check_tols(tols: Any, name: str = "tols") -> list[float]:
    """At least two positive finite tolerances, as floats."""
    if isinstance(tols, (str, bytes)) or not isinstance(tols, Sequence):
        raise TypeError(f"{name}: expected a sequence of at least two positive tolerances, got "
                        f"{tols!r}")
    if any(isinstance(t, bool) or not isinstance(t, (int, float)) for t in tols):
        raise TypeError(f"{name}: expected a sequence of positive numbers, got {tols!r}")
    tl = [float(t) for t in tols]
    if len(tl) < 2 or any(not (0 < t < math.inf) for t in tl):
        raise ValueError(f"{name}: expected at least two positive finite tolerances, got "
                         f"{tols!r}")
    return tl


def _check_range(v: Any, name: str) -> tuple[float, float]:
    """A pair ``(lo, hi)`` of finite numbers with ``lo < hi``."""
    try:
        lo, hi = v
        lo, hi = _check_float(lo, name), _check_float(hi, name)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a pair (lo, hi) of finite numbers, got {v!r}") from None
    if not lo < hi:
        raise ValueError(f"{name}: expected lo < hi, got {v!r}")
    return lo, hi
