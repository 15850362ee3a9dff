"""Moment checks: Monte Carlo moments against the moment equations, exact discrete moments of a
scheme, and the order of its moment bias (docs/math.md §9)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..brownian import BrownianPath
from ..solve import solve
from . import references as _an
from .arguments import _check_float, _check_int, _check_level, _solver_info
from .fit import _regression_fit
from .results import MomentsResult, OrderResult
from .sampling import _check_reference_sde, _pick_problem

Tensor = torch.Tensor
_F64 = torch.float64

Tensor = torch.Tensor
_F64 = torch.float64


def _linear_form(reference: Any, dim: int | None = None) -> _an.LinearSDE:
    if isinstance(reference, _an.LinearSDE):
        return reference
    if isinstance(reference, _an.OrnsteinUhlenbeck):
        return reference.as_linear_sde(dim)
    raise ValueError(f"reference: the scheme's discrete moments need a linear SDE (LinearSDE or "
                     f"OrnsteinUhlenbeck), got {type(reference).__name__}")


def _affine_step(inst: Any, problem: Any, d: int, m: int, h: float
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor, float]:
    """``(M, c, K_W, K_I, residual)`` of one step of ``inst`` on an affine problem, by regression.

    One ``solve`` of ``steps=1`` over ``[0, h]`` on a batch of random states, driven by one seeded
    :class:`~sdeflow.BrownianPath` whose increments ``dW`` and space-time integrals ``I`` are
    read back (``increment``, ``space_time``), gives ``x_new`` row by row; the least-squares fit of
    ``x_new`` on ``(x, 1, dW, I)`` is the step's affine map. ``residual`` is the largest misfit
    relative to ``|x_new|``: round-off for a scheme that is affine on this problem.
    """
    n = 4 * (d + 1 + 2 * m) + 16
    gen = torch.Generator().manual_seed(271828)  # not the path's seed: x and dW independent
    x = torch.randn(n, d, dtype=_F64, generator=gen)
    bm = BrownianPath((n, m), t0=0.0, t1=h, seed=12345, dtype=_F64)
    dw = bm.increment(0.0, h)
    it = bm.space_time(0.0, h)
    x1 = solve(problem, x, t_span=(0.0, h), solver=inst, steps=1, brownian=bm).x_final.to(_F64)
    # columns scaled to unit size: dW ~ h^(1/2); the part of I not explained by dW ~ h^(3/2)
    feats = torch.cat([x, torch.ones(n, 1, dtype=_F64), dw / math.sqrt(h),
                       (it - h / 2 * dw) / h**1.5], 1)
    coef = torch.linalg.lstsq(feats, x1).solution  # [(d + 1 + 2m), d]
    resid = float((feats @ coef - x1).abs().max() / x1.abs().max().clamp_min(1e-300))
    mm = coef[:d].T
    c = coef[d]
    kw_raw = coef[d + 1:d + 1 + m].T / math.sqrt(h)     # coefficient of dW in the scaled basis
    ki = coef[d + 1 + m:].T / h**1.5
    kw = kw_raw - ki * (h / 2)                          # back to the basis (dW, I)
    return mm, c, kw, ki, resid


def discrete_moments(solver: Any, reference: Any, t1: float, steps: int, x0: Tensor,
                     ) -> tuple[Tensor, Tensor]:
    """Exact mean ``[d]`` and covariance ``[d, d]`` (float64) of a *scheme* on a linear SDE.

    On ``dX = (A X + a) dt + B dW`` every Runge--Kutta-type step is affine in the state and the
    noise: ``x_new = M x + c + K_W dW + K_I I`` with ``I = int_t^{t+h} (W_s - W_t) ds``
    (docs/math.md §9.2). The map is measured through the public API only: one step of
    :func:`~sdeflow.solve` on a batch of random states driven by a known Brownian path, and a
    least-squares fit of the result on ``(x, 1, dW, I)`` (exact up to round-off for an affine
    step; a solver that is not affine on the problem is rejected). Then
    ``Q = h K_W K_W^T + h^2/2 (K_W K_I^T + K_I K_W^T) + h^3/3 K_I K_I^T`` (the covariance of
    ``(dW, I)``) and :func:`~sdeflow.analytic.linear_recursion_moments` gives the moments after
    ``steps`` steps. Subtracting the exact moments gives the scheme's exact bias (for
    Euler--Maruyama, ``M = I + hA``, ``c = h a``, ``Q = h B B^T``).

    Args:
        solver: name, class or instance of a fixed-step SDE solver.
        reference: :class:`~sdeflow.analytic.LinearSDE` or
            :class:`~sdeflow.analytic.OrnsteinUhlenbeck` (time-homogeneous, so one step's map
            is every step's).
        t1: end time (from 0); steps: number of equal steps; x0: ``[d]`` deterministic start.

    Raises:
        ValueError: a bad argument, or a solver whose step is not affine on ``reference``.
    """
    inst, name = _solver_info(solver)
    if not inst.caps.sde:
        raise ValueError(f"solver: {name!r} is an ODE solver; discrete moments need an SDE "
                         "solver")
    if not isinstance(x0, Tensor) or x0.dim() != 1:
        raise ValueError("x0: expected a tensor of shape (d,)")
    lin = _linear_form(reference, x0.shape[0])
    steps = _check_int(steps, "steps")
    t1 = _check_float(t1, "t1", positive=True)
    if x0.shape != (lin.dim,):
        raise ValueError(f"x0: expected a tensor of shape ({lin.dim},)")
    problem = _pick_problem(lin, inst)
    h = t1 / steps
    mm, c, kw, ki, resid = _affine_step(inst, problem, lin.dim, lin.m, h)
    if resid > 1e-9:
        raise ValueError(f"solver: {name!r} is not affine in (x, dW, I) on {lin.name} (relative "
                         f"misfit {resid:.2g}); its discrete moments are not a linear recursion")
    q = h * kw @ kw.T + h * h / 2 * (kw @ ki.T + ki @ kw.T) + h**3 / 3 * ki @ ki.T
    return _an.linear_recursion_moments(mm, c, q, steps, x0.to(_F64).cpu())


def bias_order(
    solver: Any,
    reference: Any,
    steps: Sequence[int] = (32, 64, 128, 256),
    *,
    t1: float = 1.0,
    x0: Tensor | None = None,
    expected: float | None = None,
    tolerance: float = 0.15,
    ci_level: float = 0.95,
) -> OrderResult:
    """Order at which a scheme's *exact* discrete moments converge to the moment equations.

    ``e(h) = |m_h - m|_2 + |P_h - P|_F`` with ``(m_h, P_h)`` from :func:`discrete_moments` (no
    Monte Carlo) and ``(m, P)`` the exact moments (docs/math.md §9.1, §9.4); the order is the
    least-squares slope of ``log e`` on ``log h``. This is what makes a ``bias="scheme"`` moment
    check meaningful: the Monte Carlo moments match the scheme's recursion (:func:`moments`)
    *and* that recursion converges to the right moments at (at least) the weak order.
    ``passed`` is one-sided, ``order >= expected - tolerance`` (``expected`` defaults to
    ``solver.weak_order``), because schemes may converge faster on linear problems (e.g.
    stochastic Heun and SRA1 give 2).
    Discrete moments exact to round-off count as passed (order ``inf``).
    """
    inst, name = _solver_info(solver)
    ci_level = _check_level(ci_level)
    tolerance = _check_float(tolerance, "tolerance", positive=True)
    lin = _linear_form(reference, None if x0 is None else x0.shape[-1])
    steps = [_check_int(n, "steps") for n in steps]
    if len(steps) < 2 or len(set(steps)) != len(steps):
        raise ValueError(f"steps: expected at least two distinct step counts, got {steps}")
    t1 = _check_float(t1, "t1", positive=True)
    if x0 is None:
        x0 = lin.default_x0()
    x0 = x0.to(_F64).cpu()
    if expected is None:
        expected = inst.caps.weak(lin.noise)
    m, p = lin.mean(t1, x0), lin.covariance(t1)
    errors = []
    for n in steps:
        mh, ph = discrete_moments(inst, lin, t1, n, x0)
        errors.append(float((mh - m).norm() + (ph - p).norm()))
    dts = [t1 / n for n in steps]
    notes: list[str] = []
    scale = float(m.norm() + p.norm()) or 1.0
    if max(errors) <= 1e-13 * scale:
        order, ci = math.inf, (math.inf, math.inf)
        notes.append("discrete moments exact to round-off")
    else:
        order, ci = _regression_fit(dts, errors, ci_level)
    return OrderResult(
        solver=name, problem=reference.name, mode="bias", dts=tuple(dts), errors=tuple(errors),
        std_errors=tuple(0.0 for _ in dts), order=order, ci=ci, ci_level=ci_level,
        ci_method="regression", expected=expected, tolerance=tolerance, notes=tuple(notes),
        at_least=True,
    )


def moments(
    solver: Any,
    reference: _an.AnalyticSDE,
    *,
    t1: float = 1.0,
    steps: int = 64,
    n_paths: int = 20000,
    seed: int = 0,
    x0: Tensor | None = None,
    bias: str | tuple[Tensor, Tensor] | None = None,
    n_sigma: float = 4.0,
    dtype: torch.dtype = _F64,
    device: Any = None,
) -> MomentsResult:
    """Monte Carlo mean and covariance at ``t1`` against the moment equations (docs/math.md §9.3).

    ``n_paths`` paths from one deterministic ``x0`` ``[d]`` are solved with ``steps`` equal steps
    and ``seed``. Features ``F_i = (x_i, vech((x_i - m*)(x_i - m*)^T))`` have mean
    ``mu = (m*, vech P*)`` under the hypothesis, with ``m*, P*`` the targets: the exact moments
    (``reference.mean``/``covariance``) plus ``bias``. Reported: per-feature z-scores
    ``(Fbar - mu) / (s / sqrt(n))`` and the Wald statistic ``n (Fbar - mu)^T S^{-1} (Fbar - mu)``
    (``S`` the sample covariance of ``F``), chi-square with ``d + d(d+1)/2`` degrees of freedom for
    large ``n``; ``p_value`` is its upper tail.

    Args:
        bias: ``None`` -- compare with the exact moments (a scheme's O(h) bias then counts as a
            discrepancy: use small steps); ``"scheme"`` -- add the scheme's exact discrete bias
            (:func:`discrete_moments`, linear references only); or a tuple
            ``(mean_bias [d], cov_bias [d, d])``.
        n_sigma: ``passed`` requires every ``|z| <= n_sigma``.
    """
    inst, name = _solver_info(solver)
    if not inst.caps.sde:
        raise ValueError(f"solver: {name!r} is an ODE solver; moments need an SDE solver")
    _check_reference_sde(reference)
    if not reference.has_moments:
        raise ValueError(f"reference: {reference.name} has no exact moments")
    steps = _check_int(steps, "steps")
    n_paths = _check_int(n_paths, "n_paths", 3)
    seed = _check_int(seed, "seed", 0)
    t1 = _check_float(t1, "t1", positive=True)
    n_sigma = _check_float(n_sigma, "n_sigma", positive=True)
    if x0 is None:
        x0 = reference.default_x0(dtype=dtype, device=device)
    if not isinstance(x0, Tensor) or x0.dim() != 1 or not x0.is_floating_point():
        raise ValueError("x0: expected a floating tensor of shape [d] (one deterministic start)")
    x0 = x0.to(dtype=dtype, device=device)
    d = x0.shape[0]
    mean_ex = reference.mean(t1, x0.to(_F64).cpu()).to(_F64)
    cov_ex = reference.covariance(t1, x0.to(_F64).cpu()).to(_F64)
    if bias is None:
        mean_t, cov_t, bias_name = mean_ex, cov_ex, "none"
    elif isinstance(bias, str):
        if bias != "scheme":
            raise ValueError(
                f"bias: expected None, 'scheme' or (mean_bias, cov_bias), got {bias!r}"
            )
        mean_t, cov_t = discrete_moments(inst, reference, t1, steps, x0.to(_F64).cpu())
        bias_name = "scheme (exact discrete moments)"
    else:
        try:
            mb, cb = bias
        except (TypeError, ValueError):
            raise ValueError("bias: expected None, 'scheme' or (mean_bias, cov_bias)") from None
        mb = torch.as_tensor(mb, dtype=_F64)
        cb = torch.as_tensor(cb, dtype=_F64)
        if mb.shape != (d,) or cb.shape != (d, d):
            raise ValueError(f"bias: expected shapes ({d},) and ({d}, {d}), got "
                             f"{tuple(mb.shape)} and {tuple(cb.shape)}")
        mean_t, cov_t, bias_name = mean_ex + mb, cov_ex + cb, "given"
    problem = _pick_problem(reference, inst)
    xb = x0.expand(n_paths, d).contiguous()
    x = solve(problem, xb, t_span=(0.0, t1), solver=inst, steps=steps, seed=seed).x_final
    x = x.to(_F64).cpu()
    iu = torch.triu_indices(d, d)
    xc = x - mean_t
    feats = torch.cat([x, (xc.unsqueeze(-1) * xc.unsqueeze(-2))[:, iu[0], iu[1]]], 1)
    mu = torch.cat([mean_t, cov_t[iu[0], iu[1]]])
    fbar = feats.mean(0)
    s = torch.cov(feats.T).reshape(feats.shape[1], feats.shape[1])
    se = (s.diagonal().clamp_min(0) / n_paths).sqrt()
    diff = fbar - mu
    z = torch.where(se > 0, diff / se.clamp_min(1e-300), torch.where(diff == 0, 0.0, math.inf))
    evals, evecs = torch.linalg.eigh(s)
    keep = evals > evals.max().clamp_min(0) * 1e-12
    proj = evecs[:, keep].T @ diff
    stat = float(n_paths * (proj * proj / evals[keep]).sum())
    dof = int(keep.sum())
    from scipy.stats import chi2

    pval = float(chi2.sf(stat, dof)) if dof > 0 else 1.0

    def unvech(v: Tensor) -> Tensor:
        out = torch.zeros(d, d, dtype=_F64)
        out[iu[0], iu[1]] = v
        out[iu[1], iu[0]] = v
        return out

    return MomentsResult(
        solver=name, problem=reference.name, t1=t1, steps=steps, n_paths=n_paths, seed=seed,
        mean_mc=fbar[:d].tolist(), mean_se=se[:d].tolist(), mean_exact=mean_ex.tolist(),
        mean_target=mean_t.tolist(), cov_mc=unvech(fbar[d:]).tolist(),
        cov_se=unvech(se[d:]).tolist(), cov_exact=cov_ex.tolist(), cov_target=cov_t.tolist(),
        z_mean=z[:d].tolist(), z_cov=unvech(z[d:]).tolist(), statistic=stat, dof=dof,
        p_value=pval, n_sigma=n_sigma, bias=bias_name,
    )
