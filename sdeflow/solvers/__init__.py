"""Solver registry: names -> solver classes.

``get(name)`` returns the class registered under ``name``; ``resolve(spec)`` accepts a name, a
class or an instance and returns an instance. Third-party packages add solvers with
:func:`register` (e.g. from a ``sdeflow.plugins`` entry point).
"""

from __future__ import annotations

from .adaptive_sde import (
    AdaptiveEulerMaruyama,
    AdaptiveMilstein,
    AdaptiveStochasticHeun,
    StepDoubling,
)
from .base import ODESolver, SDESolver, Solver, noise_term
from .embedded import Bosh3, Dopri5, EmbeddedRungeKutta, HeunEuler, Tsit5
from .rk import RK4, ButcherTableau, Euler, Heun, Midpoint, RK4Solver, RungeKutta
from .sde import SRA, SRA1, EulerMaruyama, Milstein, SRATableau, StochasticHeun

_REGISTRY: dict[str, type[Solver]] = {}


def register(cls: type[Solver], name: str | None = None) -> type[Solver]:
    """Register a solver class under ``name`` (default ``cls.name``); returns ``cls``."""
    if not (isinstance(cls, type) and issubclass(cls, Solver)):
        raise TypeError(f"cls: expected a Solver subclass, got {cls!r}")
    key = name or cls.name
    if not key:
        raise ValueError("name: the solver class has no name; pass one")
    _REGISTRY[key] = cls
    return cls


for _cls in (Euler, Midpoint, Heun, RK4Solver, HeunEuler, Bosh3, Dopri5, Tsit5,
             EulerMaruyama, Milstein, StochasticHeun, SRA1,
             AdaptiveMilstein, AdaptiveEulerMaruyama, AdaptiveStochasticHeun):
    register(_cls)


def names(sde: bool | None = None) -> tuple[str, ...]:
    """Registered names; ``sde=True``/``False`` restricts to SDE/ODE solvers."""
    return tuple(k for k, c in _REGISTRY.items() if sde is None or c.is_sde == sde)


def get(name: str) -> type[Solver]:
    """The solver class registered as ``name``; ``ValueError`` lists the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"solver: unknown solver {name!r}; known solvers are {', '.join(sorted(_REGISTRY))}"
        ) from None


def resolve(spec: str | Solver | type[Solver]) -> Solver:
    """A solver instance from a name, a class or an instance."""
    if isinstance(spec, Solver):
        return spec
    if isinstance(spec, type) and issubclass(spec, Solver):
        return spec()
    if isinstance(spec, str):
        return get(spec)()
    raise TypeError(f"solver: expected a name, a Solver class or instance, got {spec!r}")


def __getattr__(name: str) -> tuple[str, ...]:
    # ODE_SOLVERS / SDE_SOLVERS stay current when plugins register more solvers.
    if name == "ODE_SOLVERS":
        return names(sde=False)
    if name == "SDE_SOLVERS":
        return names(sde=True)
    raise AttributeError(name)


__all__ = [
    "Solver", "ODESolver", "SDESolver", "RungeKutta", "ButcherTableau", "SRA", "SRATableau",
    "Euler", "Midpoint", "Heun", "RK4Solver", "RK4", "EulerMaruyama", "Milstein",
    "StochasticHeun", "SRA1", "EmbeddedRungeKutta", "HeunEuler", "Bosh3", "Dopri5", "Tsit5",
    "StepDoubling", "AdaptiveMilstein", "AdaptiveEulerMaruyama", "AdaptiveStochasticHeun",
    "register", "get", "resolve", "names", "noise_term",
]
