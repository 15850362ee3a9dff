"""Global order of an ODE solver against ``expm`` on a linear system (docs/math.md §10)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..solve import solve
from . import references as _an
from .arguments import _check_float, _check_int, _check_level, _solver_info
from .fit import _regression_fit
from .results import OrderResult

Tensor = torch.Tensor
_F64 = torch.float64

Tensor = torch.Tensor
_F64 = torch.float64


def _default_ode_steps(order: float) -> tuple[int, ...]:
    if order <= 2.5:
        return (16, 32, 64, 128, 256)
    if order <= 3.5:
        return (8, 16, 32, 64, 128)
    if order <= 4.5:
        return (8, 16, 32, 64)
    # Order-5 pairs (Tsitouras especially) have small principal error coefficients: their local
    # orders fall from ~6 at 4 steps to 5.0 only near 100 steps, just above float64 round-off.
    return (32, 48, 64, 96, 128)

def ode_order(
    solver: Any,
    reference: _an.LinearODE | None = None,
    steps: Sequence[int] | None = None,
    *,
    t1: float = 1.0,
    x0: Tensor | None = None,
    dtype: torch.dtype = _F64,
    device: Any = None,
    expected: float | None = None,
    tolerance: float = 0.15,
    ci_level: float = 0.95,
) -> OrderResult:
    """Global order of an ODE solver: error ``|x_h(t1) - expm(t1 A) x0|_2`` vs ``h = t1/steps``.

    Args:
        solver: name, class or instance of an ODE solver.
        reference: a :class:`~sdeflow.analytic.LinearODE` (default
            :func:`~sdeflow.verify.references.default_linear_ode`).
        steps: numbers of equal steps (default chosen from the solver's order so errors stay
            between about 1e-2 and 1e-12 in float64).
        x0: ``[..., d]`` initial state (default ``reference.default_x0()``); errors are the
            Euclidean norm over the last axis, averaged over the leading ones.
        expected: theoretical order (default ``solver.order``).

    Round-off: errors below ``100 eps |x|`` (about 1e-14 in float64) are noise; such step
    sizes are flagged in ``notes`` (choose fewer steps). Use float64 for orders above 2.
    """
    inst, name = _solver_info(solver)
    if inst.caps.sde:
        raise ValueError(f"solver: {name!r} is an SDE solver; use strong_order/weak_order")
    reference = _an.default_linear_ode() if reference is None else reference
    if not isinstance(reference, _an.LinearODE):
        raise ValueError(f"reference: expected an sdeflow.analytic.LinearODE, got "
                         f"{type(reference).__name__}")
    t1 = _check_float(t1, "t1", positive=True)
    tolerance = _check_float(tolerance, "tolerance", positive=True)
    ci_level = _check_level(ci_level)
    if expected is None:
        expected = inst.caps.order
    if steps is None:
        steps = _default_ode_steps(expected if expected is not None else 1.0)
    steps = [_check_int(n, "steps") for n in steps]
    if len(steps) < 2 or len(set(steps)) != len(steps):
        raise ValueError(f"steps: expected at least two distinct step counts, got {steps}")
    if x0 is None:
        x0 = reference.default_x0(dtype=dtype, device=device)
    if not isinstance(x0, Tensor):
        raise ValueError("x0: expected a tensor of shape [..., d]")
    x0 = x0.to(dtype=dtype, device=device)
    exact = reference.exact(t1, x0)
    errors = []
    problem = reference.problem
    if inst.caps.semilinear:  # exponential integrators need the semilinear form
        from ..semilinear import SemilinearODE  # noqa: PLC0415

        problem = SemilinearODE.from_linear(reference.A)
    for n in steps:
        sol = solve(problem, x0, t_span=(0.0, t1), solver=inst, steps=n)
        errors.append(float(torch.linalg.vector_norm(sol.x_final - exact, dim=-1).mean()))
    dts = [t1 / n for n in steps]
    notes = []
    scale = float(torch.linalg.vector_norm(exact, dim=-1).mean()) or 1.0
    eps = torch.finfo(dtype).eps
    tiny = [h for h, e in zip(dts, errors) if e < 100 * eps * scale]
    if tiny:
        notes.append(f"errors at round-off level for dt={tiny}; the fit is unreliable there")
    p, ci = _regression_fit(dts, errors, ci_level)
    return OrderResult(
        solver=name, problem=reference.name, mode="ode", dts=tuple(dts), errors=tuple(errors),
        std_errors=tuple(0.0 for _ in dts), order=p, ci=ci, ci_level=ci_level,
        ci_method="regression", expected=expected, tolerance=tolerance, notes=tuple(notes),
    )
