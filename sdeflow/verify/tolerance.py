"""Tolerance proportionality: error against tolerance for adaptive ODE and SDE solvers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..brownian import BrownianPath
from ..solve import solve
from . import references as _an
from .arguments import _check_float, _check_int, _check_range, _check_tols, _solver_info
from .fit import fit_order
from .results import SDEToleranceResult, ToleranceProportionality
from .sampling import _initial, _pick_problem

Tensor = torch.Tensor
_F64 = torch.float64

Tensor = torch.Tensor
_F64 = torch.float64


def default_tolerances(inst: Any) -> list[float]:
    """Five decades of tolerance (four for order <= 2) from ``10^-top``, chosen by the order of
    the error estimate ``q`` (``error_order`` when declared, else ``order - 1``): ``top = 2``
    for ``q = 1``, 3 for ``q = 2``, else 4."""
    q = inst.caps.error_order
    if q is None:
        q = (inst.caps.order or 5) - 1
    top = {1: 2, 2: 3}.get(int(round(q)), 4)
    n = 4 if q <= 1 else 5
    return [10.0 ** -(top + i) for i in range(n)]


def expected_tolerance_slope(inst: Any) -> float:
    """``p / (p_hat + 1)``: the slope of log(error) against log(tol) of an adaptive ODE solver
    of order ``p`` with an estimate of order ``p_hat`` (1 when ``p_hat = p - 1`` or either is
    undeclared)."""
    p, q = inst.caps.order, inst.caps.error_order
    if p is None or q is None:
        return 1.0
    return float(p) / (float(q) + 1.0)


def tolerance_proportionality(
    solver: str | Any = "dopri5",
    problem: str = "linear",
    tols: Sequence[float] | None = None,
    dtype: torch.dtype = torch.float64,
    slope_range: tuple[float, float] | None = None,
    max_ratio: float = 100.0,
) -> ToleranceProportionality:
    """Check that an adaptive ODE solver's error is proportional to its tolerance.

    Solves ``problem`` at each ``tol`` (``rtol = atol = tol``; default: five decades, from
    ``1e-4`` for 4th/5th-order pairs, ``1e-3`` for bosh3, ``1e-2`` for heun_euler), measures the
    max-abs error at
    the final time against the exact solution (``"linear"``: a 4x4 non-normal linear system,
    ``expm``; ``"rotation"``: the harmonic oscillator over 3.3 periods; ``"vdp"``: Van der Pol
    with mu = 2 against scipy's DOP853 at 1e-13), and fits ``log(error) = a + s log(tol)``. With
    error control on the embedded estimate and local extrapolation the global error is
    ``~ C tol`` (docs/math.md §10.5), so ``s`` should be near 1. In general a method of order
    ``p`` controlled by an estimate of order ``p_hat`` takes ``h ~ tol^(1/(p_hat + 1))``, so
    ``s = p / (p_hat + 1)``: 1 for the usual pairs (``p_hat = p - 1``), 5/4 for radau
    (order 5, estimate of order 3). The default ``slope_range`` is that value ``+- 0.3``.

    Returns:
        a :class:`ToleranceProportionality` with the fitted slope and ``passed``.
    """
    inst, name = _solver_info(solver)
    if inst.caps.sde or not inst.caps.adaptive:
        raise ValueError(f"solver: expected an adaptive ODE solver (an embedded pair), got "
                         f"{name!r}")
    if tols is None:
        tols = default_tolerances(inst)
    tl = _check_tols(tols)
    if slope_range is None:
        expected = expected_tolerance_slope(inst)
        slope_range = (round(expected - 0.3, 6), round(expected + 0.3, 6))
    slope_range = _check_range(slope_range, "slope_range")
    max_ratio = _check_float(max_ratio, "max_ratio", positive=True)
    ode, x0, span, exact = _an.tolerance_problem(problem, dtype)
    errors, nfes = [], []
    for tol in tl:
        sol = solve(ode, x0, span, solver=solver, rtol=tol, atol=tol)
        errors.append(float((sol.x_final.to(torch.float64) - exact).abs().max()))
        nfes.append(int(sol.stats["nfe"]))
    slope = fit_order(tl, [max(e, 1e-300) for e in errors])
    ok = slope_range[0] <= slope <= slope_range[1] and all(
        math.isfinite(e) and e <= max_ratio * t for e, t in zip(errors, tl))
    name = solver if isinstance(solver, str) else getattr(solver, "name", repr(solver))
    return ToleranceProportionality(name, problem, tl, errors, nfes, slope, slope_range,
                                    max_ratio, ok)

def sde_tolerance_order(
    solver: Any,
    reference: Any | None = None,
    tols: Sequence[float] | None = None,
    n_paths: int = 500,
    seed: int = 0,
    tolerance: float = 0.15,
) -> SDEToleranceResult:
    """Strong error of an adaptive SDE solver as its tolerance falls, on one shared path.

    Each tolerance's solve (``rtol = atol = tol``) is driven by a ``BrownianPath`` with the same
    seed, so all solves follow one set of ``n_paths`` paths (rejected steps reuse it), and the
    error is measured against ``reference.pathwise`` on that path. A controller that keeps the
    local error of a scheme of strong order ``p`` (mean-square local error ``~ h^(p + 1/2)``) at
    ``tol`` takes ``h ~ tol^(1/(p + 1/2))``, so the strong error ``~ h^p ~ tol^(p / (p + 1/2))``:
    2/3 for Milstein and stochastic Heun, 1/2 for Euler--Maruyama.

    Args:
        solver: an adaptive SDE solver (name, class or instance).
        reference: an analytic SDE with a pathwise solution (default: GBM(1, 1), posed in the
            kind the solver supports).
        tols: tolerances (default: five from 1e-1 to 1e-3; four down to 1.25e-2 for order 0.5,
            whose cost grows like tol^-2).
    """
    inst, _ = _solver_info(solver)
    name = getattr(inst, "name", repr(inst))
    if reference is None:
        reference = _an.GeometricBrownianMotion(1.0, 1.0)
    problem = _pick_problem(reference, inst)
    p = inst.for_kind(problem.kind).caps.strong(problem.noise)
    if tols is None:
        tols = (1e-1, 5e-2, 2.5e-2, 1.25e-2) if p < 1 else (1e-1, 3e-2, 1e-2, 3e-3, 1e-3)
    tl = _check_tols(tols)
    n_paths = _check_int(n_paths, "n_paths")
    seed = _check_int(seed, "seed", 0)
    tolerance = _check_float(tolerance, "tolerance", positive=True)
    x0 = _initial(reference, None, n_paths, _F64, None)
    t1 = 1.0
    errors, steps = [], []
    for tol in tl:
        bm = BrownianPath(problem.brownian_shape(x0.shape, None), t1=t1, seed=seed, dtype=_F64)
        sol = solve(problem, x0, (0.0, t1), solver=inst, rtol=tol, atol=tol, brownian=bm)
        exact = reference.pathwise(t1, x0, bm)
        errors.append(float((sol.x_final - exact).abs().sum(-1).mean()))
        steps.append(int(sol.stats["accepted"]))
    order = fit_order(tl, errors)
    expected = p / (p + 0.5)
    falls = all(b < a for a, b in zip(errors[:-1], errors[1:]))
    return SDEToleranceResult(name, reference.name, tl, errors, steps, order, expected,
                              tolerance, n_paths, seed,
                              falls and abs(order - expected) <= tolerance)
