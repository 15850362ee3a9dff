"""Solver base classes: what every solver declares (orders, noise types, SDE kinds).

A solver object turns the problem's fields into a *step function*; the time loop lives in
``sdeflow.solve`` and is shared by every solver. A step function has the signature

    step(tt, x, h, noise) -> x_new

where ``tt`` is a tuple of 0-dim time tensors, one per entry of ``solver.c`` (the stage times
``t + c_j h``), ``h`` is the step as a Python float (negative when time runs backwards) and
``noise`` is ``None`` for ODEs, ``(dW,)`` for SDE solvers, or ``(dW, I)`` for solvers that
need the space-time integral ``I = int_t^{t+h} (W_r - W_t) dr`` (``needs_space_time``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch

from ..problems import NOISE_TYPES, SDE_KINDS, Field

Tensor = torch.Tensor
Noise = tuple[Tensor, ...] | None
StepFn = Callable[[tuple[Tensor, ...], Tensor, float, Noise], Tensor]


class Solver:
    """Base class. ``name`` is the registry key; ``c`` the stage-time fractions."""

    name: ClassVar[str] = ""
    is_sde: ClassVar[bool] = False
    adaptive: ClassVar[bool] = False
    c: tuple[float, ...] = (0.0,)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ODESolver(Solver):
    """A solver for ``dx/dt = u(t, x)``; ``order`` is its global order of accuracy."""

    order: ClassVar[float] = 1.0

    def build(self, u: Field) -> StepFn:
        raise NotImplementedError

    def evals_per_step(self) -> int:
        """Vector-field evaluations per fixed step."""
        raise NotImplementedError


class SDESolver(Solver):
    """A solver for ``dX = f dt + g dW``.

    Declares ``strong_order`` and ``weak_order`` (for the noise types it is best on; see
    :meth:`strong_order_for`), the ``noise_types`` and the SDE ``kinds`` it supports, and
    whether it needs the space-time integral of the Brownian path.
    """

    is_sde = True
    strong_order: ClassVar[float] = 0.5
    weak_order: ClassVar[float] = 1.0
    noise_types: ClassVar[tuple[str, ...]] = NOISE_TYPES
    kinds: ClassVar[tuple[str, ...]] = ("ito",)
    needs_space_time: ClassVar[bool] = False

    @classmethod
    def strong_order_for(cls, noise: str) -> float:
        """Strong order on a problem with this noise type."""
        return cls.strong_order

    @classmethod
    def fits(cls, noise: str, kind: str) -> bool:
        # With additive noise the Ito and Stratonovich solutions coincide (g does not depend on x).
        return noise in cls.noise_types and (kind in cls.kinds or noise == "additive")

    def build(self, f: Field, g: Field, noise: str) -> StepFn:
        raise NotImplementedError

    def evals_per_step(self) -> tuple[int, int]:
        """(drift, diffusion) evaluations per step."""
        raise NotImplementedError


def noise_term(noise: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The product ``g dW`` for a noise type: elementwise, or a matrix-vector product."""
    if noise == "general":
        return lambda g, dw: torch.matmul(g, dw.unsqueeze(-1)).squeeze(-1)
    return torch.mul


__all__ = ["Solver", "ODESolver", "SDESolver", "StepFn", "noise_term", "NOISE_TYPES", "SDE_KINDS"]
