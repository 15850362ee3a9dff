"""Solvers: one module per family, each class its capabilities plus ``init``/``step``.

``get(name)`` returns the class registered under ``name``; ``resolve(spec)`` accepts a name, a
class or an instance and returns an instance. Subclassing :class:`Solver` with a ``name``
registers a solver (``class MySolver(Solver, name="my_solver")``); :func:`register` does it
explicitly.
"""

from __future__ import annotations

from .adaptive_sde import (
    AdaptiveEulerMaruyama,
    AdaptiveMilstein,
    AdaptiveStochasticHeun,
    StepDoubling,
)
from .base import Capabilities, Solver, StepResult, Terms, noise_term
from .embedded import Bosh3, Dopri5, EmbeddedRungeKutta, HeunEuler, Tsit5
from .exponential import (
    DDIM,
    DPMSolver2,
    DPMSolver3,
    DPMSolverPP2M,
    DPMSolverPP2MSDE,
    DPMSolverPP3M,
    UniPC2,
    UniPC3,
)
from .implicit import (
    ESDIRK,
    ImplicitEuler,
    ImplicitEulerMaruyama,
    Kvaerno3,
    Kvaerno5,
    Rodas5,
    Rosenbrock,
)
from .multistep import AdamsBashforth3
from .radau import Radau
from .registry import get, names, register, resolve
from .reversible import ReversibleHeun, ReversibleHeunODE
from .rk import RK4, ButcherTableau, Euler, Heun, Midpoint, RK4Solver, RungeKutta
from .sde import (
    SRA,
    SRA1,
    EulerMaruyama,
    Milstein,
    MilsteinStratonovich,
    SRATableau,
    StochasticHeun,
)


def __getattr__(name: str) -> tuple[str, ...]:
    # ODE_SOLVERS / SDE_SOLVERS stay current when plugins register more solvers.
    if name == "ODE_SOLVERS":
        return names(sde=False)
    if name == "SDE_SOLVERS":
        return names(sde=True)
    raise AttributeError(name)


__all__ = [
    "Solver", "Capabilities", "StepResult", "Terms", "RungeKutta", "ButcherTableau", "SRA",
    "SRATableau", "Euler", "Midpoint", "Heun", "RK4Solver", "RK4", "EulerMaruyama", "Milstein",
    "MilsteinStratonovich", "StochasticHeun", "SRA1", "EmbeddedRungeKutta", "HeunEuler",
    "Bosh3", "Dopri5", "Tsit5", "AdamsBashforth3", "StepDoubling", "AdaptiveMilstein",
    "AdaptiveEulerMaruyama", "AdaptiveStochasticHeun", "register", "get", "resolve", "names",
    "noise_term", "ESDIRK", "ImplicitEuler", "Kvaerno3", "Kvaerno5", "Rosenbrock", "Rodas5",
    "ImplicitEulerMaruyama", "DDIM", "DPMSolver2", "DPMSolver3", "DPMSolverPP2M",
    "DPMSolverPP3M", "UniPC2", "UniPC3", "DPMSolverPP2MSDE", "ReversibleHeun",
    "ReversibleHeunODE", "Radau",
]
