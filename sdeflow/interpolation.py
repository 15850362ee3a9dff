"""Dense output over one accepted step (docs/math.md §4, §11.3).

Every interpolant is built from the step ``[t, t + h]`` (``h`` may be negative) and evaluated at
``theta in [0, 1]`` (``x(t + theta h)``); each returns a tensor of the state's shape and equals
the step's end points at ``theta = 0`` and ``theta = 1``.

* :class:`Table`: a Runge--Kutta continuous extension
  ``x(t + theta h) ~ x0 + h sum_i b_i(theta) k_i``, ``b_i(theta) = sum_q d_iq theta^(q+1)``.
* :class:`Hermite`: the cubic through ``x0``, ``x1`` with slopes ``f0 = u(t, x0)``,
  ``f1 = u(t + h, x1)`` (third order; exact for cubics).
* :class:`MultistepPolynomial`: ``x0 + h int_0^theta P(s) ds`` with ``P`` the polynomial through
  the stored slopes ``f_j`` at nodes ``s_j`` (fractions of ``h`` relative to ``t``): the natural
  continuous extension of an Adams method (order of the method, no extra evaluation).
* :class:`Linear`: the chord (SDE paths: an interpolant is not a sample of the solution).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Any

import torch

Tensor = torch.Tensor


class Interpolant:
    """Base: ``t``, ``h``, ``x0``, ``x1``; ``__call__(theta)``; ``at(time)``."""

    __slots__ = ("t", "h", "x0", "x1")

    def __init__(self, t: float, h: float, x0: Tensor, x1: Tensor) -> None:
        self.t, self.h, self.x0, self.x1 = t, h, x0, x1

    def __call__(self, theta: float) -> Tensor:
        if theta == 1.0:
            return self.x1
        if theta == 0.0:
            return self.x0
        return self._eval(theta)

    def _eval(self, theta: float) -> Tensor:
        raise NotImplementedError

    def at(self, time: float) -> Tensor:
        """The interpolant at absolute time ``time`` (clamped to the step)."""
        return self(min(1.0, max(0.0, (time - self.t) / self.h)))


class Linear(Interpolant):
    """``(1 - theta) x0 + theta x1``."""

    __slots__ = ()

    def _eval(self, theta: float) -> Tensor:
        return torch.lerp(self.x0, self.x1, theta)


class Hermite(Interpolant):
    """Cubic Hermite: ``h00 x0 + h01 x1 + h (h10 f0 + h11 f1)`` with the Hermite basis
    ``h00 = 2θ³-3θ²+1, h10 = θ³-2θ²+θ, h01 = -2θ³+3θ², h11 = θ³-θ²``."""

    __slots__ = ("f0", "f1", "_fill")

    def __init__(self, t: float, h: float, x0: Tensor, x1: Tensor, f0: Tensor,
                 f1: Tensor | None, fill: Callable[[], Tensor] | None = None) -> None:
        super().__init__(t, h, x0, x1)
        self.f0, self.f1, self._fill = f0, f1, fill

    @classmethod
    def from_field(cls, u: Callable[[Tensor, Tensor], Tensor] | None, t: float, h: float,
                   x0: Tensor, x1: Tensor, f0: Tensor | None, f1: Tensor | None) -> Hermite:
        """Missing slopes are evaluated from ``u`` when first needed (counted as NFE)."""
        if u is None and (f0 is None or f1 is None):
            raise ValueError("Hermite: a missing slope needs the vector field")

        def at(time: float, x: Tensor) -> Tensor:
            return u(torch.full((), time, dtype=x.dtype, device=x.device), x)  # type: ignore[misc]

        if f0 is None:
            f0 = at(t, x0)
        fill = None if f1 is not None else (lambda: at(t + h, x1))
        return cls(t, h, x0, x1, f0, f1, fill)

    def _eval(self, theta: float) -> Tensor:
        if self.f1 is None:
            self.f1 = self._fill()  # type: ignore[misc]
        th2 = theta * theta
        th3 = th2 * theta
        h00, h10 = 2 * th3 - 3 * th2 + 1, th3 - 2 * th2 + theta
        h01, h11 = -2 * th3 + 3 * th2, th3 - th2
        y = torch.mul(self.x0, h00).add_(self.x1, alpha=h01)
        return y.add_(self.f0, alpha=h10 * self.h).add_(self.f1, alpha=h11 * self.h)


class Table(Interpolant):
    """``x0 + h sum_i b_i(theta) k_i`` with ``b_i(theta) = sum_q dense[i][q] theta^(q+1)``."""

    __slots__ = ("k", "rows")

    def __init__(self, t: float, h: float, x0: Tensor, x1: Tensor, k: Sequence[Tensor],
                 rows: Sequence[tuple[int, Sequence[float]]]) -> None:
        super().__init__(t, h, x0, x1)
        self.k, self.rows = k, rows

    def _eval(self, theta: float) -> Tensor:
        y = self.x0
        first = True
        for i, row in self.rows:
            w, p = 0.0, theta
            for v in row:
                w += v * p
                p *= theta
            if w == 0.0:
                continue
            y = torch.add(y, self.k[i], alpha=w * self.h) if first else y.add_(self.k[i],
                                                                              alpha=w * self.h)
            first = False
        return y


def lagrange_integrals(nodes: Sequence[float], theta: float) -> list[float]:
    """``w_j = int_0^theta L_j(s) ds`` for the Lagrange basis ``L_j`` on ``nodes``."""
    import numpy as np  # noqa: PLC0415  (numpy is a core dependency; local keeps import light)

    out = []
    for j, sj in enumerate(nodes):
        poly = np.poly1d([1.0])
        for m, sm in enumerate(nodes):
            if m != j:
                poly = poly * np.poly1d([1.0, -sm]) / (sj - sm)
        integ = poly.integ()
        out.append(float(integ(theta) - integ(0.0)))
    return out


class MultistepPolynomial(Interpolant):
    """``x0 + h sum_j w_j(theta) f_j``, ``w_j = int_0^theta L_j(s) ds`` (docs/math.md §11.3)."""

    __slots__ = ("nodes", "fs")

    def __init__(self, t: float, h: float, x0: Tensor, x1: Tensor, nodes: Sequence[float],
                 fs: Sequence[Tensor]) -> None:
        super().__init__(t, h, x0, x1)
        self.nodes, self.fs = tuple(nodes), tuple(fs)

    def _eval(self, theta: float) -> Tensor:
        w = lagrange_integrals(self.nodes, theta)
        y = self.x0
        for j, fj in enumerate(self.fs):
            y = torch.add(y, fj, alpha=w[j] * self.h) if j == 0 else y.add_(fj,
                                                                           alpha=w[j] * self.h)
        return y


class DenseSolution:
    """``Solution.evaluate``: the accepted steps' interpolants, looked up by time."""

    def __init__(self, steps: list[Interpolant], t0: float, t_reached: float, x0: Tensor,
                 direction: float) -> None:
        self.steps, self.t0, self.t_reached = steps, t0, t_reached
        self.x0, self.direction = x0, direction
        self.keys = [direction * s.t for s in steps]

    def _one(self, t: float) -> Tensor:
        lo, hi = sorted((self.t0, self.t_reached))
        slack = 1e-12 * max(1.0, abs(self.t0), abs(self.t_reached))
        if not (lo - slack <= t <= hi + slack):
            raise ValueError(f"t: {t} lies outside the solved span [{lo}, {hi}]")
        d = self.direction
        if not self.steps or d * (t - self.t0) <= 0:
            return self.x0
        i = max(0, bisect.bisect_right(self.keys, d * t) - 1)
        return self.steps[i].at(t)

    def __call__(self, t: Any) -> Tensor:
        if isinstance(t, Tensor):
            if t.dim() == 0:
                return self._one(float(t))
            if t.dim() != 1:
                raise ValueError(f"t: expected a float, a 0-dim or a 1-D tensor, got shape "
                                 f"{tuple(t.shape)}")
            return torch.stack([self._one(float(v)) for v in t.tolist()])
        if isinstance(t, (int, float)) and not isinstance(t, bool):
            return self._one(float(t))
        raise TypeError(f"t: expected a float or a tensor, got {type(t).__name__}")


__all__ = ["Interpolant", "Linear", "Hermite", "Table", "MultistepPolynomial", "DenseSolution",
           "lagrange_integrals"]
