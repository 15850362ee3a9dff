"""Step-size control: fixed grids (and, for adaptive solvers, the PI controller).

A fixed grid runs from the first to the last time of the span in ``steps`` equal steps or in
steps of ``dt`` (the last one shorter if ``dt`` does not divide the span); every requested
output time is merged into it so that the solver steps exactly onto it. A requested time within
``snap |span|`` of a grid point (``1e-10``, or a few units in the last place of the dtype the
times were given in) replaces that point instead of adding a tiny step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

SNAP = 1e-10


def fixed_grid(
    t_start: float,
    t_end: float,
    steps: int | None,
    dt: float | None,
    outputs: Sequence[float] = (),
    snap: float = SNAP,
) -> tuple[list[float], list[int]]:
    """Build a fixed time grid.

    Args:
        t_start, t_end: the span (``t_end < t_start`` runs backwards).
        steps: number of equal steps, or ``None`` when ``dt`` is given.
        dt: step magnitude (> 0), or ``None`` when ``steps`` is given.
        outputs: monotone output times between ``t_start`` and ``t_end`` (inclusive).
        snap: relative distance (to the span) within which an output time replaces a grid point.

    Returns:
        ``(grid, out_index)``: the grid as floats (monotone, from ``t_start`` to ``t_end``) and,
        for each output time, its index in the grid.
    """
    span = t_end - t_start
    sign = 1.0 if span > 0 else -1.0
    if steps is not None:
        base = [t_start + span * k / steps for k in range(steps)] + [t_end]
    elif dt is not None:
        n = max(1, math.ceil(abs(span) / dt - 1e-9))
        base = [t_start + sign * dt * k for k in range(n)] + [t_end]
    else:
        raise ValueError("steps, dt: expected one of them")
    tol = snap * abs(span)
    grid: list[float] = []
    out_index: list[int] = []
    outs = list(outputs)
    j = 0
    # merge two monotone sequences (in the direction of integration)
    key = (lambda t: t) if sign > 0 else (lambda t: -t)
    for g in base:
        while j < len(outs) and key(outs[j]) < key(g) - tol:
            if grid and abs(grid[-1] - outs[j]) <= tol:
                grid[-1] = outs[j]
            else:
                grid.append(outs[j])
            out_index.append(len(grid) - 1)
            j += 1
        if j < len(outs) and abs(outs[j] - g) <= tol:
            grid.append(outs[j])
            while j < len(outs) and abs(outs[j] - g) <= tol:
                out_index.append(len(grid) - 1)
                j += 1
        elif not grid or abs(grid[-1] - g) > tol:
            grid.append(g)
    return grid, out_index
