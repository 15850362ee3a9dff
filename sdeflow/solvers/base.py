"""The solver protocol: declared capabilities plus ``init`` / ``step`` (docs/math.md §11.1).

A solver is a class with

* ``caps``: one frozen :class:`Capabilities` per class -- orders, noise types, SDE kinds,
  adaptive, implicit, stateful, FSAL, needs the space-time integral, the interpolant;
* ``c``: the stage-time fractions its step evaluates the fields at (the loop hands ``step`` one
  0-dim time tensor per entry, ``t + c_j h``);
* ``init(terms, t0, x0, h) -> state`` and
  ``step(terms, tt, t, h, x, state, noise) -> StepResult(x, err, dense, state)``;
* ``interpolant(terms, t, h, x0, x1, dense)``: dense output over an accepted step.

The one time loop (:mod:`sdeflow.integrate`) runs every solver; a solver never sees the loop.
``state`` is returned, never mutated in place, so a rejected step is retried from the same
``(x, state)``. ``noise`` is ``None`` for ODEs, ``(dW,)`` or ``(dW, I)`` (with the space-time
integral ``I = int_t^{t+h} (W_r - W_t) dr``) for SDE solvers, or -- for solvers whose
``noise_points`` subdivide the step -- a list of such tuples, one per sub-interval.

Subclassing registers a solver: ``class MySolver(Solver, name="my_solver")`` makes it
available as ``solve(..., solver="my_solver")`` (a plain ``name = ...`` attribute does not
register; pass the class or an instance instead).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple

import torch

from ..interpolation import Hermite, Interpolant, Linear
from ..problems import NOISE_TYPES, SDE_KINDS, Field

Tensor = torch.Tensor
Noise = tuple[Tensor, ...] | list[tuple[Tensor, ...]] | None

INTERPOLANTS = ("hermite", "table", "linear", "multistep", "own")

#: name -> solver class (filled by subclassing; see :mod:`sdeflow.solvers`)
REGISTRY: dict[str, type[Solver]] = {}


@dataclass(frozen=True)
class Capabilities:
    """What a solver class can do; read by ``solve`` before any work (docs/math.md §11.1).

    Attributes:
        sde: an SDE solver (else an ODE solver).
        order: ODE global order (also the drift order of an SDE solver on an ODE).
        strong_order, weak_order: SDE orders per noise type (``{"diagonal": 1.0, ...}``).
        error_order: order ``p_hat`` of the error estimate (local error ~ ``h^(p_hat+1)`` for
            ODEs, ``h^(p_hat + 1/2)`` for step doubling); ``None``: no estimate.
        noise_types, kinds: the SDE noise types and kinds it supports.
        adaptive: has an error estimate, so it runs under a PI controller.
        implicit: solves nonlinear equations per step (Newton).
        stateful: carries state between steps (multistep history, FSAL stage, Jacobians).
        fsal: first stage of a step is the last stage of the previous one.
        space_time: needs the space-time integral of the Brownian path.
        interpolant: ``"hermite"``, ``"table"`` (the RK continuous extension), ``"linear"``,
            ``"multistep"`` or ``"own"`` (the solver's :meth:`Solver.interpolant`).
        semilinear: needs a semilinear problem (:class:`~sdeflow.semilinear.SemilinearODE` /
            ``SemilinearSDE``): an exponential integrator.
    """

    sde: bool = False
    order: float | None = None
    strong_order: Mapping[str, float] = field(default_factory=dict)
    weak_order: Mapping[str, float] = field(default_factory=dict)
    error_order: float | None = None
    noise_types: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    adaptive: bool = False
    implicit: bool = False
    stateful: bool = False
    fsal: bool = False
    space_time: bool = False
    interpolant: str = "hermite"
    semilinear: bool = False

    def __post_init__(self) -> None:
        for name in ("strong_order", "weak_order"):
            v = getattr(self, name)
            if not isinstance(v, Mapping):
                raise TypeError(f"{name}: expected a mapping noise type -> order, got {v!r}")
            bad = sorted(set(v) - set(NOISE_TYPES))
            if bad:
                raise ValueError(f"{name}: unknown noise type(s) {bad}; expected {NOISE_TYPES}")
            object.__setattr__(self, name, MappingProxyType(dict(v)))
        bad_n = [n for n in self.noise_types if n not in NOISE_TYPES]
        if bad_n:
            raise ValueError(f"noise_types: unknown {bad_n}; expected {NOISE_TYPES}")
        bad_k = [k for k in self.kinds if k not in SDE_KINDS]
        if bad_k:
            raise ValueError(f"kinds: unknown {bad_k}; expected {SDE_KINDS}")
        if self.interpolant not in INTERPOLANTS:
            raise ValueError(f"interpolant: expected one of {INTERPOLANTS}, "
                             f"got {self.interpolant!r}")
        if self.adaptive and self.error_order is None:
            raise ValueError("error_order: an adaptive solver must declare its error order")

    def strong(self, noise: str) -> float | None:
        """Strong order on a problem with this noise type (``None``: not declared)."""
        return self.strong_order.get(noise)

    def weak(self, noise: str) -> float | None:
        return self.weak_order.get(noise)

    def fits(self, noise: str, kind: str) -> bool:
        """Whether an SDE with ``noise`` and ``kind`` is in scope. With additive noise Ito and
        Stratonovich coincide (g does not depend on x)."""
        return self.sde and noise in self.noise_types and (kind in self.kinds
                                                            or noise == "additive")

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["strong_order"], d["weak_order"] = dict(self.strong_order), dict(self.weak_order)
        return d


class StepResult(NamedTuple):
    """What one ``step`` returns: the new state, the local error estimate (``x``'s shape, or
    ``None``), data for the interpolant, and the solver state after the step."""

    x: Tensor
    err: Tensor | None
    dense: Any
    state: Any


class Terms:
    """The problem's fields as the loop hands them to a solver (counted and checked).

    Attributes:
        u: the ODE vector field ``u(t, x)`` (``None`` for SDEs).
        f, g: drift and diffusion of an SDE (``None`` for ODEs).
        noise, kind: the SDE's noise type and kind (``None`` for ODEs).
        problem: the user's problem object (for optional extras such as a Jacobian).
        adaptive: whether the loop wants an error estimate from each step.
        dense: whether the loop may build interpolants of the steps (``False``: a solver may
            skip keeping dense-output data).
        m: the Brownian dimension when ``g`` returns a matrix ``(..., d, m)`` -- general noise,
            and additive noise in its matrix form (``None`` when ``g`` returns x's shape).
        matrix: ``g`` is a matrix, so the noise term is ``g @ dW`` (else ``g * dW``).
    """

    __slots__ = ("u", "f", "g", "noise", "kind", "problem", "adaptive", "m", "dense", "matrix")

    def __init__(self, problem: Any, u: Field | None = None, f: Field | None = None,
                 g: Field | None = None, noise: str | None = None, kind: str | None = None,
                 adaptive: bool = False, m: int | None = None) -> None:
        self.problem, self.u, self.f, self.g = problem, u, f, g
        self.noise, self.kind = noise, kind
        self.adaptive = adaptive  # the loop wants an error estimate from each step
        self.m = m  # Brownian dimension (g a matrix: general noise, matrix additive noise)
        self.matrix = noise == "general" or (noise == "additive" and m is not None)
        self.dense = True  # the loop may ask for interpolants (False: skip dense data)


class Solver:
    """Base class of every solver. Subclasses set ``caps`` and implement ``step``.

    Class keywords: ``name=`` registers the class under that name (a ``name`` class attribute
    alone does not register), and ``register=False`` names it without registering.
    """

    name: ClassVar[str] = ""
    caps: ClassVar[Capabilities] = Capabilities()
    c: tuple[float, ...] = (0.0,)
    #: fractions of the step at which the Brownian path is sampled (``(0, 1)``: one interval)
    noise_points: ClassVar[tuple[float, ...]] = (0.0, 1.0)

    def __init_subclass__(cls, name: str | None = None, register: bool = True,
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name is not None:
            cls.name = name
            if register:
                REGISTRY[name] = cls

    # ------------------------------------------------------------------------ the protocol
    def init(self, terms: Terms, t0: float, x0: Tensor, h: float) -> Any:
        """The state before the first step (and after a restart at a jump); default none."""
        return None

    def step(self, terms: Terms, tt: tuple[Tensor, ...], t: float, h: float, x: Tensor,
             state: Any, noise: Noise) -> StepResult:
        """One step from ``(t, x)`` of size ``h`` (negative when time runs backwards).

        ``tt``: one 0-dim time tensor per entry of ``self.c`` (``t + c_j h``).
        """
        raise NotImplementedError

    def interpolant(self, terms: Terms, t: float, h: float, x0: Tensor, x1: Tensor,
                    dense: Any) -> Interpolant:
        """Dense output over the accepted step ``[t, t + h]`` (``caps.interpolant``)."""
        if self.caps.sde or self.caps.interpolant == "linear":
            return Linear(t, h, x0, x1)
        f0, f1 = dense if isinstance(dense, tuple) and len(dense) == 2 else (None, None)
        return Hermite.from_field(terms.u, t, h, x0, x1, f0, f1)

    # ---------------------------------------------------------------------------- helpers
    def controller_order(self, noise: str | None) -> float:
        """``q`` of the step-size formula: ``error_order + 1`` (ODE) or ``+ 1/2`` (SDE)."""
        p = self.caps.error_order
        if p is None:
            raise ValueError(f"solver: {self.name!r} has no error estimate")
        return p + (0.5 if self.caps.sde else 1.0)

    def check(self, problem: Any) -> None:
        """Raise ``ValueError`` if the solver cannot solve ``problem`` (before any work)."""

    def for_kind(self, kind: str) -> Solver:
        """The solver to use on an SDE of ``kind`` (variants are separate classes)."""
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _matvec(g: Tensor, dw: Tensor) -> Tensor:
    return torch.matmul(g, dw.unsqueeze(-1)).squeeze(-1)


def _additive_term(g: Tensor, dw: Tensor) -> Tensor:
    # additive noise is elementwise (g of x's shape) or a matrix (g one dimension longer)
    if g.dim() > dw.dim():
        return torch.matmul(g, dw.unsqueeze(-1)).squeeze(-1)
    return g * dw


def noise_term(noise: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The product ``g dW`` for a noise type: elementwise, or a matrix-vector product
    (``g (..., d, m)`` times ``dW (..., m)``: general noise, and additive noise in its matrix
    form, recognised by the shape of ``g``)."""
    if noise == "general":
        return _matvec
    if noise == "additive":
        return _additive_term
    return torch.mul


def sde_orders(strong: float | Mapping[str, float], weak: float | Mapping[str, float],
               noise_types: tuple[str, ...] = NOISE_TYPES) -> dict[str, dict[str, float]]:
    """Order mappings from a number (same for every noise type) or a mapping."""
    def spread(v: float | Mapping[str, float]) -> dict[str, float]:
        return dict(v) if isinstance(v, Mapping) else {n: float(v) for n in noise_types}
    return {"strong_order": spread(strong), "weak_order": spread(weak)}


__all__ = ["Capabilities", "StepResult", "Terms", "Solver", "REGISTRY", "Noise", "noise_term",
           "sde_orders", "NOISE_TYPES", "SDE_KINDS"]
