"""Library error types. Bad input raises ``ValueError``/``TypeError``; failures during
integration raise a :class:`SolverError` subclass that says how far the solve got."""

from __future__ import annotations


class SolverError(RuntimeError):
    """A failure during integration. ``t_reached`` is the last time reached with a finite state."""

    def __init__(self, message: str, t_reached: float | None = None) -> None:
        super().__init__(message)
        self.t_reached = t_reached


class NonFiniteError(SolverError):
    """The state became NaN or infinite; ``t`` is the time at which it first appeared."""

    def __init__(self, message: str, t: float, t_reached: float | None = None) -> None:
        super().__init__(message, t_reached)
        self.t = t


class MaxStepsError(SolverError):
    """More than ``max_steps`` steps were needed."""


class StepSizeError(SolverError):
    """The adaptive step fell below ``dt_min``."""


class NewtonError(SolverError):
    """The Newton iteration of an implicit solver did not converge (docs/math.md §13).

    ``t`` is the time of the step that failed, ``residual`` the last scaled Newton increment
    (``inf``/``nan`` when it diverged), ``x`` the state at ``t_reached``.
    """

    status = "newton"

    def __init__(self, message: str, t: float, residual: float,
                 t_reached: float | None = None, x: object = None) -> None:
        super().__init__(message, t_reached)
        self.t, self.residual, self.x = t, residual, x
