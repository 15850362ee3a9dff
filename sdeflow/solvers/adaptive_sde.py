"""Adaptive SDE schemes by step doubling on one Brownian path (MATH.md §2).

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

import functools
from collections.abc import Callable
from typing import Any, ClassVar

from ..problems import Field
from .base import SDESolver, StepFn
from .sde import EulerMaruyama, Milstein, StochasticHeun


class _either:
    """A method that binds to the instance when called on one, else to the class."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def __get__(self, obj: object, cls: type) -> Callable[..., Any]:
        return functools.partial(self.fn, cls if obj is None else obj)


class StepDoubling(SDESolver):
    """Step-doubling adaptive wrapper around a fixed-step SDE scheme ``base``.

    Declares the base scheme's orders, noise types, kinds and needs; ``build`` returns the base
    scheme's step function (so with ``steps``/``dt`` it is simply the base scheme). Adaptive
    solves (``sdeflow.adaptive``) call the step function three times per attempt.

    Args:
        base: the fixed-step scheme, a name or an :class:`SDESolver` instance (not adaptive).
    """

    adaptive: ClassVar[bool] = True
    base_cls: ClassVar[type[SDESolver] | None] = None

    def __init__(self, base: str | SDESolver | None = None) -> None:
        if base is None:
            if self.base_cls is None:
                raise ValueError("base: expected a fixed-step SDE scheme (a name or instance)")
            base = self.base_cls()
        elif isinstance(base, str):
            from . import resolve  # noqa: PLC0415  (the registry imports this module)

            base = resolve(base)  # type: ignore[assignment]
        if not isinstance(base, SDESolver) or isinstance(base, StepDoubling):
            raise ValueError(f"base: expected a fixed-step SDE solver, got {base!r}")
        self.base = base
        self.c = base.c
        self.strong_order = base.strong_order  # type: ignore[misc]
        self.weak_order = base.weak_order  # type: ignore[misc]
        self.noise_types = base.noise_types  # type: ignore[misc]
        self.kinds = base.kinds  # type: ignore[misc]
        self.needs_space_time = base.needs_space_time  # type: ignore[misc]

    @_either
    def strong_order_for(self, noise: str) -> float:  # type: ignore[override]
        base = self.base if isinstance(self, StepDoubling) else self.base_cls
        return SDESolver.strong_order_for(noise) if base is None else base.strong_order_for(noise)

    @_either
    def fits(self, noise: str, kind: str) -> bool:  # type: ignore[override]
        base = self.base if isinstance(self, StepDoubling) else self.base_cls
        return base is not None and base.fits(noise, kind)

    def configure(self, kind: str) -> None:
        """Pass the SDE kind on to the base scheme (Milstein's correction depends on it)."""
        if hasattr(self.base, "configure"):
            self.base.configure(kind)  # type: ignore[attr-defined]

    def build(self, f: Field, g: Field, noise: str) -> StepFn:
        return self.base.build(f, g, noise)

    def evals_per_step(self) -> tuple[int, int]:
        """Evaluations of one base step; an adaptive attempt makes three."""
        return self.base.evals_per_step()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base={self.base!r})"

    def __getattr__(self, name: str) -> Any:
        # options of the base scheme (e.g. Milstein's ``derivative``)
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)


class AdaptiveMilstein(StepDoubling):
    """Milstein with step doubling: the default adaptive Ito scheme (strong order 1)."""

    name = "adaptive_milstein"
    base_cls = Milstein
    noise_types = Milstein.noise_types
    kinds = Milstein.kinds


class AdaptiveEulerMaruyama(StepDoubling):
    """Euler--Maruyama with step doubling: adaptive Ito scheme for every noise type."""

    name = "adaptive_em"
    base_cls = EulerMaruyama
    kinds = EulerMaruyama.kinds


class AdaptiveStochasticHeun(StepDoubling):
    """Stochastic Heun with step doubling: the default adaptive Stratonovich scheme."""

    name = "adaptive_stochastic_heun"
    base_cls = StochasticHeun
    kinds = StochasticHeun.kinds


__all__ = ["StepDoubling", "AdaptiveMilstein", "AdaptiveEulerMaruyama", "AdaptiveStochasticHeun"]
