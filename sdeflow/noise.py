"""Brownian increments as the time loop asks for them (docs/math.md §2).

:class:`GridNoise` serves a fixed grid in blocks of steps: from a Brownian object (one
``grid`` query of the whole grid), or from a seed (``torch.randn`` per block of steps; with the
space-time integral ``I = h/2 (dW + sqrt(|h|/3) zeta)``). :class:`PathNoise` serves adaptive
steps from a Brownian object queried at ``t + p h`` for the solver's ``noise_points`` ``p``.

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
    """Increments for the steps of a fixed grid (``block(i, j)``: steps ``i .. j-1``)."""

    def __init__(self, grid: list[float], shape: tuple[int, ...], space_time: bool,
                 points: tuple[float, ...], like: Tensor, seed: int | None,
                 brownian: Any = None) -> None:
        self.shape, self.space_time = shape, space_time
        self.dtype, self.device = like.dtype, like.device
        self.per = len(points) - 1
        sub = _sub_grid(grid, points)
        self.sub = sub
        h = torch.tensor([b - a for a, b in zip(sub[:-1], sub[1:])], dtype=torch.float64)
        view = (-1,) + (1,) * len(shape)
        self.h = h.to(self.dtype).to(self.device).view(view)
        self.sqrt_h = h.abs().sqrt().to(self.dtype).to(self.device).view(view)
        self.full: tuple[Tensor, ...] | None = None
        if brownian is not None:
            dw, it = brownian.grid(sub, space_time=space_time)
            self.full = (dw,) if it is None else (dw, it)
        else:
            if seed is None:
                seed = int(torch.randint(0, 2**62, (), dtype=torch.int64).item())
            self.gen = torch.Generator(device=self.device)
            self.gen.manual_seed(seed)
        self.block_steps = max(1, NOISE_BLOCK_ELEMS // max(1, math.prod(shape) * self.per))

    def block(self, i: int, j: int) -> list[Any]:
        """Noise of steps ``i .. j-1`` (sequential calls for a seed)."""
        a, b = i * self.per, j * self.per
        if self.full is not None:
            parts = [p[a:b] for p in self.full]
        else:
            z = torch.randn((b - a, *self.shape), generator=self.gen, dtype=self.dtype,
                            device=self.device)
            dw = z.mul_(self.sqrt_h[a:b])
            parts = [dw]
            if self.space_time:
                zeta = torch.randn((b - a, *self.shape), generator=self.gen, dtype=self.dtype,
                                   device=self.device)
                parts.append((dw + zeta * (self.sqrt_h[a:b] / math.sqrt(3.0)))
                             * (self.h[a:b] / 2))
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
