"""Brownian increments as the time loop asks for them (docs/math.md §2).

:class:`GridNoise` serves a fixed grid in blocks of steps: from a Brownian object (one
``grid`` query per block of steps), or from a seed (a :class:`~sdeflow.brownian.SeededNoise`:
rows from (seed, step, row), so a slice of rows is reproducible alone). :class:`PathNoise`
serves adaptive steps from a Brownian object queried at ``t + p h`` for the solver's
``noise_points`` ``p``.

Both hand a step ``(dW,)`` or ``(dW, I)`` -- or, for solvers whose ``noise_points`` subdivide the
step, a list of such tuples, one per sub-interval.
"""

from __future__ import annotations

import math
from typing import Any

import torch

Tensor = torch.Tensor

NOISE_BLOCK_ELEMS = 2**22  # Brownian increments drawn per block (elements)


def _sub_grid(grid: list[float], points: tuple[float, ...]) -> list[float]:
    if points == (0.0, 1.0):
        return grid
    out = [grid[0]]
    for a, b in zip(grid[:-1], grid[1:]):
        out.extend(a + p * (b - a) for p in points[1:-1])
        out.append(b)
    return out


class GridNoise:
    """Increments for the steps of a fixed grid (``block(i, j)``: steps ``i .. j-1``), drawn in
    blocks of at most ``block_elems`` elements (default :data:`NOISE_BLOCK_ELEMS`)."""

    def __init__(self, grid: list[float], shape: tuple[int, ...], space_time: bool,
                 points: tuple[float, ...], like: Tensor, seed: int | None,
                 brownian: Any = None, block_elems: int | None = None) -> None:
        self.shape, self.space_time = shape, space_time
        self.dtype, self.device = like.dtype, like.device
        self.per = len(points) - 1
        sub = _sub_grid(grid, points)
        self.sub = sub
        self.h64 = torch.tensor([b - a for a, b in zip(sub[:-1], sub[1:])], dtype=torch.float64)
        self.bm = brownian
        self.full: tuple[Tensor, ...] | None = None
        if brownian is not None and getattr(brownian, "stores_path", False):
            # a stored path keeps every time it is asked anyway: one query of the whole grid
            # is one draw and one allocation (per-block queries would grow its storage)
            dw, it = brownian.grid(sub, space_time=space_time)
            self.full = (dw,) if it is None else (dw, it)
        if brownian is None:
            from .brownian import SeededNoise  # noqa: PLC0415

            self.src = SeededNoise(shape, seed, self.dtype, self.device)
        elems = NOISE_BLOCK_ELEMS if block_elems is None else block_elems
        self.block_steps = max(1, elems // max(1, math.prod(shape) * self.per))

    def block(self, i: int, j: int) -> list[Any]:
        """Noise of steps ``i .. j-1`` (sequential calls)."""
        a, b = i * self.per, j * self.per
        if self.full is not None:
            dw, it = self.full[0][a:b], (self.full[1][a:b] if len(self.full) > 1 else None)
        elif self.bm is not None:  # one batched query per block of steps (bounded memory)
            dw, it = self.bm.grid(self.sub[a:b + 1], space_time=self.space_time)
        else:
            dw, it = self.src.increments(self.h64[a:b], self.space_time)
        parts = [dw] if it is None else [dw, it]
        if len(parts) == 1:
            tuples = [(d,) for d in parts[0].unbind(0)]
        else:
            tuples = list(zip(*(p.unbind(0) for p in parts)))
        if self.per == 1:
            return tuples
        return [tuples[k:k + self.per] for k in range(0, len(tuples), self.per)]


class PathNoise:
    """Increments of an adaptive step ``[t, t + h]`` from a Brownian object."""

    def __init__(self, bm: Any, space_time: bool, points: tuple[float, ...],
                 owned: bool = False) -> None:
        self.bm, self.space_time, self.points = bm, space_time, points
        self.owned = owned  # the solve made the path: it may drop what lies behind

    def release(self, t: float, direction: float) -> None:
        """Let an owned path forget what lies behind ``t`` (a user's path keeps everything)."""
        if not self.owned:
            return
        fn = getattr(self.bm, "release_before" if direction > 0 else "release_after", None)
        if fn is not None:
            fn(t)

    def take(self, t: float, h: float, t_new: float) -> Any:
        pts = [t] + [t + p * h for p in self.points[1:-1]] + [t_new]
        dw, it = self.bm.grid(pts, space_time=self.space_time)
        if len(pts) == 2:
            return (dw[0],) if it is None else (dw[0], it[0])
        if it is None:
            return [(d,) for d in dw.unbind(0)]
        return list(zip(dw.unbind(0), it.unbind(0)))


__all__ = ["GridNoise", "PathNoise", "NOISE_BLOCK_ELEMS"]
