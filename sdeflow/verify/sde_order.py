"""Strong and weak orders of SDE solvers against exact solutions (docs/math.md §10)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..brownian import BrownianPath
from ..solve import solve
from . import references as _an
from .arguments import _check_float, _check_int, _check_level, _solver_info, _steps_from_dts
from .fit import _mc_fit
from .results import OrderResult
from .sampling import (
    _batch_seed,
    _check_reference_sde,
    _chunks,
    _initial,
    _pick_problem,
    _simulate_coupled,
)

Tensor = torch.Tensor
_F64 = torch.float64

Tensor = torch.Tensor
_F64 = torch.float64


def strong_order(
    solver: Any,
    reference: _an.AnalyticSDE,
    dts: Sequence[float] | None = None,
    n_paths: int = 1000,
    seed: int = 0,
    *,
    t1: float = 1.0,
    x0: Tensor | None = None,
    dtype: torch.dtype = _F64,
    device: Any = None,
    expected: float | None = None,
    tolerance: float = 0.15,
    ci_level: float = 0.95,
    ci_method: str = "delta",
    n_boot: int = 1000,
    chunk: int | None = None,
    n_fine: int | None = None,
    brownian: str = "path",
) -> OrderResult:
    """Strong order: ``e_k = (1/n) sum_i |X_T^(i) - X_T^{h_k,(i)}|_2`` on shared Brownian paths.

    Every step size is solved on the *same* :class:`~sdeflow.BrownianPath` (per batch of paths,
    ``brownian=`` in :func:`~sdeflow.solve`) and compared with ``reference.pathwise`` on that path
    (exact for GBM; a fine-grid reference for OU / LinearSDE / NonlinearAdditiveSDE, see
    :mod:`sdeflow.analytic`).

    Args:
        solver: name, class or instance of an SDE solver.
        reference: an :class:`~sdeflow.analytic.AnalyticSDE`; the Ito or Stratonovich form is
            picked to fit the solver (``reference.problem_as``), same solution either way.
        dts: step sizes; each must divide ``t1`` (powers of two nest, so the path is only
            refined, never re-drawn). Default ``2^-5 .. 2^-9`` for GBM (coarser steps are
            pre-asymptotic for order-1 schemes on it), ``2^-3 .. 2^-7`` otherwise.
        n_paths: number of Brownian paths (Monte Carlo sample size); seed: seed of the first batch.
        x0: ``[d]`` or ``[n_paths, d]`` (default ``reference.default_x0()``).
        expected: theoretical strong order (default ``solver.strong_order_for(noise)``).
        tolerance: pass if ``|order - expected| <= tolerance``.
        ci_level, ci_method, n_boot: confidence interval (see the module docstring).
        chunk: paths per batch (default: memory-bounded); n_fine: cells of the fine reference.
        brownian: ``"path"`` (one stored :class:`~sdeflow.BrownianPath` per batch, refined by
            every step size) or ``"tree"`` (a *fresh* :class:`~sdeflow.BrownianTree` with the
            same seed for every step size and for the reference: the same Brownian motion,
            because a tree is a pure function of (seed, t); ``problem`` then reads
            ``"<reference> via BrownianTree"``).

    Returns:
        :class:`OrderResult` with ``mode="strong"``.
    """
    inst, name = _solver_info(solver)
    if not inst.caps.sde:
        raise ValueError(f"solver: {name!r} is an ODE solver; use ode_order")
    _check_reference_sde(reference)
    n_paths = _check_int(n_paths, "n_paths", 2)
    seed = _check_int(seed, "seed", 0)
    t1 = _check_float(t1, "t1", positive=True)
    tolerance = _check_float(tolerance, "tolerance", positive=True)
    ci_level = _check_level(ci_level)
    if dts is None:
        gbm = isinstance(reference, _an.GeometricBrownianMotion)
        dts = tuple(t1 * 2.0**-k for k in (range(5, 10) if gbm else range(3, 8)))
    steps = _steps_from_dts(dts, t1)
    problem = _pick_problem(reference, inst)
    if expected is None:
        expected = inst.for_kind(problem.kind).caps.strong(reference.noise)
    x0 = _initial(reference, x0, n_paths, dtype, device)
    if brownian not in ("path", "tree"):
        raise ValueError(f"brownian: expected 'path' or 'tree', got {brownian!r}")
    xs, ref = _simulate_coupled(inst, reference, problem, steps, t1, x0, seed, chunk, n_fine,
                                tree=brownian == "tree")
    samples = torch.linalg.vector_norm(xs - ref, dim=-1).to(_F64).cpu()  # [K, n]
    errors, se, p, ci = _mc_fit([t1 / n for n in steps], samples, absolute=False,
                                ci_level=ci_level, ci_method=ci_method, n_boot=n_boot, seed=seed)
    notes = []
    if not reference.pathwise_exact:
        notes.append(f"reference: fine-grid solution on the same path ({n_fine or 4096} cells)")
    return OrderResult(
        solver=name, problem=reference.name + (" via BrownianTree" if brownian == "tree" else ""),
        mode="strong",
        dts=tuple(t1 / n for n in steps), errors=tuple(errors), std_errors=tuple(se), order=p,
        ci=ci, ci_level=ci_level, ci_method=ci_method, expected=expected, tolerance=tolerance,
        n_paths=n_paths, seed=seed, notes=tuple(notes),
    )


def _second_moment(x: Tensor) -> Tensor:
    return (x * x).sum(-1)


def weak_order(
    solver: Any,
    reference: _an.AnalyticSDE,
    dts: Sequence[float] | None = None,
    n_paths: int = 20000,
    seed: int = 0,
    *,
    phi: Callable[[Tensor], Tensor] | None = None,
    coupled: bool = True,
    t1: float = 1.0,
    x0: Tensor | None = None,
    dtype: torch.dtype = _F64,
    device: Any = None,
    expected: float | None = None,
    tolerance: float = 0.15,
    ci_level: float = 0.95,
    ci_method: str = "delta",
    n_boot: int = 1000,
    chunk: int | None = None,
    n_fine: int | None = None,
) -> OrderResult:
    """Weak order: ``e_k = |E phi(X^{h_k}_T) - E phi(X_T)|`` (docs/math.md §10.3).

    Args:
        phi: test function ``(..., d) -> (...)`` (default ``|x|^2``, which involves both the
            mean and the covariance).
        coupled: ``True`` (default) estimates ``E[phi(X^h_T) - phi(X_T)]`` with ``X_T`` the
            reference on the *same* paths: an unbiased estimate of the same weak error whose
            variance shrinks with the strong error (``O(h^{2 p_strong})``) instead of staying at
            ``Var phi(X_T)``, which is what makes a weak order measurable with ~1e4 paths.
            ``False`` compares ``mean phi(X^h_T)`` with the exact ``E phi(X_T)`` from the
            reference's moments (only for ``phi=None``); it needs far more paths.
        dts: default ``2^-3 .. 2^-7`` (times ``t1``).
        Other arguments as in :func:`strong_order`; ``expected`` defaults to ``solver.weak_order``.

    Returns:
        :class:`OrderResult` with ``mode="weak"``; ``notes`` flags step sizes whose weak error
        is within 3 standard errors of 0 (increase ``n_paths`` or use larger steps).
    """
    inst, name = _solver_info(solver)
    if not inst.caps.sde:
        raise ValueError(f"solver: {name!r} is an ODE solver; use ode_order")
    _check_reference_sde(reference)
    n_paths = _check_int(n_paths, "n_paths", 2)
    seed = _check_int(seed, "seed", 0)
    t1 = _check_float(t1, "t1", positive=True)
    tolerance = _check_float(tolerance, "tolerance", positive=True)
    ci_level = _check_level(ci_level)
    if phi is not None and not callable(phi):
        raise ValueError(f"phi: expected a callable phi(x) -> [...], got {type(phi).__name__}")
    if dts is None:
        dts = tuple(t1 * 2.0**-k for k in range(3, 8))
    steps = _steps_from_dts(dts, t1)
    problem = _pick_problem(reference, inst)
    if expected is None:
        expected = inst.for_kind(problem.kind).caps.weak(reference.noise)
    fn = _second_moment if phi is None else phi
    x0 = _initial(reference, x0, n_paths, dtype, device)
    if coupled:
        xs, ref = _simulate_coupled(inst, reference, problem, steps, t1, x0, seed, chunk, n_fine)
        target = fn(ref)
    else:
        if phi is not None:
            raise ValueError("phi: coupled=False needs the exact E phi(X_T); only phi=None "
                             "(E|X|^2 from the exact mean and covariance) is supported")
        if not reference.has_moments:
            raise ValueError(f"coupled: {reference.name} has no exact moments; use coupled=True")
        m = reference.mean(t1, x0)
        cov = reference.covariance(t1, x0)
        target = (m * m).sum(-1) + cov.diagonal(dim1=-2, dim2=-1).sum(-1)
        xs_list = []
        n_paths_, d = x0.shape
        bshape_per = max(1, math.prod(reference.brownian_shape((1, d))))
        for b, (i, j) in enumerate(_chunks(n_paths_, max(steps) * bshape_per, chunk)):
            xb = x0[i:j]
            bm = BrownianPath(reference.brownian_shape(xb.shape), t0=0.0, t1=t1,
                              seed=_batch_seed(seed, b), dtype=x0.dtype, device=x0.device)
            xs_list.append(torch.stack([
                solve(problem, xb, t_span=(0.0, t1), solver=inst, steps=n, brownian=bm).x_final
                for n in steps
            ]))
        xs = torch.cat(xs_list, 1)
    vals = fn(xs)
    if vals.shape != xs.shape[:-1]:
        raise ValueError(f"phi: expected phi(x) of shape {tuple(xs.shape[:-2])} + batch, got "
                         f"{tuple(vals.shape)}")
    samples = (vals - target).to(_F64).cpu()
    errors, se, p, ci = _mc_fit([t1 / n for n in steps], samples, absolute=True,
                                ci_level=ci_level, ci_method=ci_method, n_boot=n_boot, seed=seed)
    notes = []
    weak = [h for h, e, s in zip((t1 / n for n in steps), errors, se) if e < 3 * s]
    if weak:
        notes.append(f"weak error within 3 standard errors of 0 at dt={weak}; "
                     "increase n_paths or use larger steps")
    if coupled and not reference.pathwise_exact:
        notes.append(f"reference: fine-grid solution on the same path ({n_fine or 4096} cells)")
    label = "E|X|^2" if phi is None else getattr(phi, "__name__", "phi")
    return OrderResult(
        solver=name, problem=f"{reference.name}, {label}", mode="weak",
        dts=tuple(t1 / n for n in steps), errors=tuple(errors), std_errors=tuple(se), order=p,
        ci=ci, ci_level=ci_level, ci_method=ci_method, expected=expected, tolerance=tolerance,
        n_paths=n_paths, seed=seed, notes=tuple(notes),
    )
