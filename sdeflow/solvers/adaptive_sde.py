"""Adaptive SDE schemes by step doubling on one Brownian path (docs/math.md §7).

An attempted step from ``t`` to ``t + h`` runs the underlying fixed-step scheme once with step
``h`` (``x_full``) and twice with step ``h/2`` (``x_half``), all three on the *same* Brownian
path: the increments over ``[t, t + h/2]`` and ``[t + h/2, t + h]`` come from a
:class:`~sdeflow.BrownianPath` (a Brownian bridge between stored values), and the full step uses
their sum. The error estimate is ``e = x_half - x_full``; the step is accepted when
``||e / tol|| <= 1`` and ``x_half`` (the more accurate solution) is propagated. A rejected step is
retried with a smaller ``h`` on the same path -- its new midpoint and end are drawn conditionally
on everything already drawn -- so rejections never re-draw noise and introduce no bias.

The controller exponent uses ``q = strong order + 1/2`` (the mean-square order of the local
error). Each attempt costs three steps of the underlying scheme.

==============================  ============  ============  ===========================
name                            scheme        kinds         noise
==============================  ============  ============  ===========================
``adaptive_milstein``           Milstein      Ito, Strat.   diagonal, scalar, additive
``adaptive_em``                 Euler-Mar.    Ito           all
``adaptive_stochastic_heun``    stoch. Heun   Stratonovich  all
==============================  ============  ============  ===========================

Any fixed-step SDE scheme becomes adaptive the same way: ``solve(sde, ..., solver="sra1",
rtol=...)`` wraps it in :class:`StepDoubling`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .base import Capabilities, Noise, Solver, StepResult, Terms
from .registry import resolve
from .sde import EulerMaruyama, Milstein, StochasticHeun

Tensor = torch.Tensor


def _doubled(base: type[Solver] | Solver) -> Capabilities:
    b = base.caps
    strong = dict(b.strong_order)
    return Capabilities(sde=True, order=b.order, strong_order=strong,
                        weak_order=dict(b.weak_order), noise_types=b.noise_types,
                        kinds=b.kinds, space_time=b.space_time, adaptive=True,
                        error_order=min(strong.values()) if strong else 0.5,
                        interpolant="linear")


class StepDoubling(Solver, register=False):
    """Step-doubling adaptive wrapper around a fixed-step SDE scheme ``base`` (docs/math.md §7).

    One attempt takes one step of ``h`` and two of ``h/2`` of the base scheme on the same
    Brownian path (``noise_points = (0, 1/2, 1)``: the loop hands the two half-step increments),
    propagates the two-half-step result and returns ``e = x_half - x_full`` as the error
    estimate. With ``steps``/``dt`` (no error wanted) it is the base scheme itself.

    Args:
        base: the fixed-step scheme, a name or an SDE solver instance (not adaptive).
    """

    base_cls: ClassVar[type[Solver] | None] = None
    noise_points = (0.0, 0.5, 1.0)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("base_cls") is not None:
            cls.caps = _doubled(cls.base_cls)  # type: ignore[arg-type]

    def __init__(self, base: str | Solver | None = None) -> None:
        if base is None:
            if self.base_cls is None:
                raise ValueError("base: expected a fixed-step SDE scheme (a name or instance)")
            base = self.base_cls()
        elif isinstance(base, str):
            base = resolve(base)
        if (not isinstance(base, Solver) or not base.caps.sde or isinstance(base, StepDoubling)
                or base.noise_points != (0.0, 1.0)):
            raise ValueError(f"base: expected a fixed-step SDE solver, got {base!r}")
        self.base = base
        self.caps = _doubled(base)  # type: ignore[misc]
        nc = base.c
        self._n = len(nc)
        # stage times: the full step, the first half, the second half
        self.c = tuple(nc) + tuple(0.5 * c for c in nc) + tuple(0.5 + 0.5 * c for c in nc)
        self.noise_points = (0.0, 0.5, 1.0)  # type: ignore[misc]

    def for_kind(self, kind: str) -> Solver:
        b = self.base.for_kind(kind)
        return self if b is self.base else type(self)(b)

    def controller_order(self, noise: str | None) -> float:
        """``q = strong order + 1/2`` of the base scheme on this noise type."""
        p = self.base.caps.strong(noise or "diagonal")
        return (p if p is not None else 0.5) + 0.5

    def check(self, problem: Any) -> None:
        self.base.check(problem)

    def init(self, terms: Terms, t0: float, x0: Tensor, h: float) -> Any:
        return self.base.init(terms, t0, x0, h)

    def step(self, terms: Terms, tt: tuple[Tensor, ...], t: float, h: float, x: Tensor,
             state: Any, noise: Noise) -> StepResult:
        n, base = self._n, self.base
        (n0, n1) = noise  # type: ignore[misc]
        hh = 0.5 * h
        if len(n0) == 2:
            # int_t^{t+h} (W_r - W_t) dr = I_0 + I_1 + (W_{t+h/2} - W_t) h/2
            full = (n0[0] + n1[0], torch.add(n0[1] + n1[1], n0[0], alpha=hh))
        else:
            full = (n0[0] + n1[0],)
        x_full = base.step(terms, tt[:n], t, h, x, state, full).x
        half = base.step(terms, tt[n:2 * n], t, hh, x, state, n0)
        two = base.step(terms, tt[2 * n:], t + hh, hh, half.x, half.state, n1)
        err = None
        if terms.adaptive:
            with torch.no_grad():
                err = two.x.detach() - x_full.detach()
        return StepResult(two.x, err, None, two.state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base={self.base!r})"

    def __getattr__(self, name: str) -> Any:
        # options of the base scheme (e.g. Milstein's ``derivative``)
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)


class AdaptiveMilstein(StepDoubling, name="adaptive_milstein"):
    """Milstein with step doubling: the default adaptive Ito scheme (strong order 1)."""

    base_cls = Milstein


class AdaptiveEulerMaruyama(StepDoubling, name="adaptive_em"):
    """Euler--Maruyama with step doubling: adaptive Ito scheme for every noise type."""

    base_cls = EulerMaruyama


class AdaptiveStochasticHeun(StepDoubling, name="adaptive_stochastic_heun"):
    """Stochastic Heun with step doubling: the default adaptive Stratonovich scheme."""

    base_cls = StochasticHeun


__all__ = ["StepDoubling", "AdaptiveMilstein", "AdaptiveEulerMaruyama", "AdaptiveStochasticHeun"]
