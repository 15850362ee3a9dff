"""Solver registry: names -> solver classes.

Subclassing :class:`~sdeflow.solvers.base.Solver` with a ``name`` registers a class;
:func:`register` does it explicitly (e.g. from a ``sdeflow.plugins`` entry point). ``get(name)``
returns the class, ``resolve(spec)`` an instance from a name, a class or an instance.
"""

from __future__ import annotations

from .base import REGISTRY, Solver


def register(cls: type[Solver], name: str | None = None) -> type[Solver]:
    """Register a solver class under ``name`` (default ``cls.name``); returns ``cls``."""
    if not (isinstance(cls, type) and issubclass(cls, Solver)):
        raise TypeError(f"cls: expected a Solver subclass, got {cls!r}")
    key = name or cls.name
    if not key or not isinstance(key, str):
        raise ValueError("name: the solver class has no name; pass one")
    REGISTRY[key] = cls
    return cls


def names(sde: bool | None = None) -> tuple[str, ...]:
    """Registered names; ``sde=True``/``False`` restricts to SDE/ODE solvers."""
    return tuple(k for k, c in REGISTRY.items() if sde is None or c.caps.sde == sde)


def get(name: str) -> type[Solver]:
    """The solver class registered as ``name``; ``ValueError`` lists the known names."""
    if not isinstance(name, str):
        raise TypeError(f"solver: expected a name (str), got {type(name).__name__}")
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"solver: unknown solver {name!r}; known solvers are {', '.join(sorted(REGISTRY))}"
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


__all__ = ["register", "names", "get", "resolve"]
