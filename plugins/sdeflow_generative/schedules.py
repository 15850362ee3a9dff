"""Noise schedules ``(alpha_t, beta_t)`` of a Gaussian probability path (docs/math.md §20.1).

Time runs from ``t = 0`` (noise) to ``t = 1`` (data). A schedule gives ``alpha_t`` (the data
coefficient) and ``beta_t`` (the noise coefficient) of ``x_t = alpha_t z + beta_t eps`` with
``alpha_0 = 0, alpha_1 = 1, beta_0 = 1, beta_1 = 0``, ``alpha`` non-decreasing, ``beta``
non-increasing, and their time derivatives, all in closed form (no autograd, no finite differences).

Calling a schedule, ``sched(t)``, returns :class:`ScheduleValues` ``(alpha, beta, alpha_dot,
beta_dot)``, each of ``t``'s shape, dtype and device. ``t`` is a float or a tensor with values in
``[0, 1]`` (values outside by more than a few ulps raise ``ValueError``).

Schedules and their ends:

==========================  =====================  =======================  =====================
schedule                    alpha_t                beta_t                   notes
==========================  =====================  =======================  =====================
:class:`CondOT`             ``t``                  ``1 - t``                all finite on [0, 1]
:class:`SquareRoot`         ``t``                  ``sqrt(1 - t)``          ``beta_dot_1 = -inf``
:class:`Cosine`             ``sin(pi t / 2)``      ``cos(pi t / 2)``        all finite on [0, 1]
:class:`VariancePreserving` ``exp(-B(1 - t) / 2)`` ``sqrt(1 - alpha^2)``    ``alpha_0 > 0``,
                                                                            ``beta_dot_1 = -inf``
==========================  =====================  =======================  =====================

Where ``beta_dot`` is infinite at ``t = 1``, the product ``beta * beta_dot = d(beta^2)/dt / 2`` is
still finite; :meth:`Schedule.beta_beta_dot` returns it in closed form, and the path conversions
use it so that they stay finite at ``t = 1`` (see :mod:`sdeflow_generative.paths`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ._utils import as_time

Tensor = torch.Tensor

__all__ = [
    "ScheduleValues",
    "Schedule",
    "CondOT",
    "SquareRoot",
    "Cosine",
    "VariancePreserving",
]


class ScheduleValues(NamedTuple):
    """``(alpha_t, beta_t, d alpha_t/dt, d beta_t/dt)``, each of ``t``'s shape."""

    alpha: Tensor
    beta: Tensor
    alpha_dot: Tensor
    beta_dot: Tensor


def _check_unit_interval(t: Tensor) -> Tensor:
    """Clamp ``t`` into [0, 1] when it is outside by at most 64 ulps; raise when further out."""
    if t.numel() == 0:
        return t
    tol = 64.0 * torch.finfo(t.dtype).eps
    lo, hi = torch.aminmax(t.detach())
    if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
        raise ValueError("t: expected finite times in [0, 1], got a non-finite value")
    lo_f, hi_f = float(lo), float(hi)
    if lo_f < -tol or hi_f > 1.0 + tol:
        raise ValueError(f"t: expected times in [0, 1], got values in [{lo_f}, {hi_f}]")
    if lo_f < 0.0 or hi_f > 1.0:
        t = t.clamp(0.0, 1.0)
    return t


class Schedule:
    """Base class of ``(alpha_t, beta_t)`` schedules (docs/math.md §20.1).

    Subclasses implement :meth:`values` (closed-form ``alpha, beta, alpha_dot, beta_dot`` on an
    already checked tensor ``t``) and, where ``beta_dot`` is infinite at an end, override
    :meth:`beta_beta_dot` with a finite closed form.
    """

    def __call__(self, t: Tensor | float) -> ScheduleValues:
        """``ScheduleValues(alpha, beta, alpha_dot, beta_dot)`` at ``t`` (in [0, 1])."""
        return self.values(_check_unit_interval(as_time(t)))

    def values(self, t: Tensor) -> ScheduleValues:  # pragma: no cover - abstract
        """Closed-form values at a floating tensor ``t`` (no range check)."""
        raise NotImplementedError

    def beta_beta_dot(self, t: Tensor | float) -> Tensor:
        """``beta_t * d beta_t / dt = (1/2) d(beta_t^2)/dt``, finite on the whole of [0, 1]."""
        v = self(t)
        return v.beta * v.beta_dot

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class CondOT(Schedule):
    """Conditional optimal transport (linear) schedule: ``alpha_t = t``, ``beta_t = 1 - t``.

    ``alpha_dot = 1``, ``beta_dot = -1``. Every quantity is finite on [0, 1].
    """

    def values(self, t: Tensor) -> ScheduleValues:
        one = torch.ones_like(t)
        return ScheduleValues(t, 1.0 - t, one, -one)

    def beta_beta_dot(self, t: Tensor | float) -> Tensor:
        t = _check_unit_interval(as_time(t))
        return t - 1.0


class SquareRoot(Schedule):
    """Square-root schedule: ``alpha_t = t``, ``beta_t = sqrt(1 - t)``.

    ``alpha_dot = 1``, ``beta_dot = -1 / (2 sqrt(1 - t))``, which is ``-inf`` at ``t = 1``;
    ``beta * beta_dot = -1/2`` everywhere.
    """

    def values(self, t: Tensor) -> ScheduleValues:
        beta = torch.sqrt(1.0 - t)
        return ScheduleValues(t, beta, torch.ones_like(t), -0.5 / beta)

    def beta_beta_dot(self, t: Tensor | float) -> Tensor:
        t = _check_unit_interval(as_time(t))
        return torch.full_like(t, -0.5)


class Cosine(Schedule):
    """Cosine schedule: ``alpha_t = sin(pi t / 2)``, ``beta_t = cos(pi t / 2)``.

    ``alpha_dot = (pi/2) beta_t``, ``beta_dot = -(pi/2) alpha_t``. ``beta_t`` is evaluated as
    ``sin(pi (1 - t) / 2)`` so that ``beta_1`` is exactly 0 in floating point (``cos(pi/2)``
    is not).
    """

    def values(self, t: Tensor) -> ScheduleValues:
        half_pi = 0.5 * math.pi
        alpha = torch.sin(half_pi * t)
        beta = torch.sin(half_pi * (1.0 - t))
        return ScheduleValues(alpha, beta, half_pi * beta, -half_pi * alpha)


class VariancePreserving(Schedule):
    """The score-SDE variance-preserving (VP) schedule, mapped to this time direction.

    Score-SDE time ``s = 1 - t`` runs from data (``s = 0``) to noise (``s = 1``) with the linear
    rate ``r(s) = beta_min + s (beta_max - beta_min)``. Its mean coefficient, read in our time, is

        alpha_t = exp(-B(s) / 2),  B(s) = int_0^s r = beta_min s + (beta_max - beta_min) s^2 / 2,
        beta_t = sqrt(1 - alpha_t^2)      (variance preserving: alpha^2 + beta^2 = 1),
        alpha_dot = r(s) alpha_t / 2,     beta_dot = -alpha_t alpha_dot / beta_t,
        beta_t beta_dot = -alpha_t alpha_dot.

    ``alpha_0 = exp(-(beta_min + beta_max) / 4)`` is small but **not** 0 (about 6.6e-3 for the
    defaults), and ``beta_0 = sqrt(1 - alpha_0^2)`` is slightly below 1: ``p_0`` is only close to
    N(0, I). ``beta_dot`` is ``-inf`` at ``t = 1`` (``beta`` behaves like
    ``sqrt(beta_min (1 - t))``).
    ``beta_t^2`` is computed as ``-expm1(-B)`` so it keeps full relative precision near ``t = 1``.

    Args:
        beta_min: rate at the data end, ``> 0``.
        beta_max: rate at the noise end, ``>= beta_min``.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        for name, val in (("beta_min", beta_min), ("beta_max", beta_max)):
            if isinstance(val, bool) or not isinstance(val, (int, float)):
                raise TypeError(f"{name}: expected a float, got {type(val).__name__}")
            if not math.isfinite(val):
                raise ValueError(f"{name}: expected a finite float, got {val}")
        if beta_min <= 0:
            raise ValueError(f"beta_min: expected > 0, got {beta_min}")
        if beta_max < beta_min:
            raise ValueError(f"beta_max: expected >= beta_min={beta_min}, got {beta_max}")
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)

    @property
    def alpha_0(self) -> float:
        """``alpha`` at ``t = 0``: ``exp(-(beta_min + beta_max) / 4)`` (small, not 0)."""
        return math.exp(-0.25 * (self.beta_min + self.beta_max))

    def _parts(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        s = 1.0 - t
        big_b = self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s * s
        rate = self.beta_min + (self.beta_max - self.beta_min) * s
        alpha = torch.exp(-0.5 * big_b)
        return alpha, big_b, rate

    def values(self, t: Tensor) -> ScheduleValues:
        alpha, big_b, rate = self._parts(t)
        beta = torch.sqrt(-torch.expm1(-big_b))
        alpha_dot = 0.5 * rate * alpha
        return ScheduleValues(alpha, beta, alpha_dot, -alpha * alpha_dot / beta)

    def beta_beta_dot(self, t: Tensor | float) -> Tensor:
        alpha, _, rate = self._parts(_check_unit_interval(as_time(t)))
        return -0.5 * rate * alpha * alpha

    def __repr__(self) -> str:
        return f"VariancePreserving(beta_min={self.beta_min}, beta_max={self.beta_max})"
