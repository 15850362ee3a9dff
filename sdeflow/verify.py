"""Convergence orders and moment checks against exact solutions (MATH.md §2-§3).

Functions, each returning a result object (a frozen dataclass with ``passed`` and ``to_dict()``):

* :func:`ode_order` -- global order of an ODE solver on a :class:`~sdeflow.analytic.LinearODE`.
* :func:`strong_order` -- strong order ``E|X_T - X^h_T| ~ C h^p``, all step sizes on *one shared*
  :class:`~sdeflow.BrownianPath` per batch of paths, against ``reference.pathwise`` on that path.
* :func:`weak_order` -- weak order ``|E phi(X^h_T) - E phi(X_T)| ~ C h^p``.
* :func:`moments` -- Monte Carlo mean and covariance at ``T`` against the Fokker--Planck moment
  equations (``m' = A m + a``, ``P' = A P + P A^T + B B^T``), optionally shifted by the scheme's
  exact discrete bias (:func:`discrete_moments`), with a Wald chi-square statistic and p-value.
* :func:`bias_order` -- the order at which a scheme's exact discrete moments (no Monte Carlo)
  converge to the moment equations on a linear SDE.
* :func:`run_suite` -- every registered solver on the analytic problems (``sdeflow verify``).

**The fit.** The order ``p`` is the least-squares slope of ``log(error)`` on ``log(h)`` over the
step sizes given (MATH.md §2): ``p = sum_k w_k log e_k`` with ``w_k = (x_k - xbar) / S_xx``,
``x_k = log h_k``.

**The confidence interval** (``ci_method``):

* ``"delta"`` (default for SDEs): Monte Carlo error by the delta method. The per-step error
  estimates ``e_k`` are means over the same paths, so their covariance ``C_kj`` is estimated from
  the per-path errors (``Cov/n``); then ``Var log e_k ~ C/(e_k e_j)`` and
  ``Var p = w^T diag(1/e) C diag(1/e) w``; the interval is ``p -+ z_{(1+level)/2} sd``. It
  accounts for the positive correlation between step sizes that one shared path creates (which is
  what makes the slope precise).
* ``"bootstrap"``: percentile interval of the slope over ``n_boot`` resamplings of the paths
  (seeded; deterministic).
* ODEs (no randomness): a regression interval from the residuals of the straight-line fit
  (Student t, ``K - 2`` degrees of freedom): it measures how far the errors are from a straight
  line, i.e. whether the asymptotic regime was reached.

Neither interval covers *model error* (a pre-asymptotic step range); ``passed`` is
``|p - expected| <= tolerance`` (default 0.15), the interval says how much of that margin is
statistical noise.

**Sample sizes.** Paths are simulated in batches of at most ``chunk`` paths (default chosen so
one batch's stored Brownian grid has <= 2^22 numbers), each batch on its own
``BrownianPath(seed=seed)`` for the first and ``seed + k 2^32`` for batch ``k`` (so runs with
different small seeds never share a batch); the per-path errors of all batches are pooled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from . import analytic as _an
from . import solvers as _solvers
from .brownian import BrownianPath
from .problems import ODE
from .solve import solve

Tensor = torch.Tensor
_F64 = torch.float64

__all__ = [
    "OrderResult",
    "MomentsResult",
    "ode_order",
    "strong_order",
    "weak_order",
    "moments",
    "discrete_moments",
    "bias_order",
    "fit_order",
    "default_linear_ode",
    "default_suite",
    "run_suite",
]

_GRID_BUDGET = 2**22  # numbers of one batch's stored Brownian grid (W and I each)


# =========================================================================== results
@dataclass(frozen=True)
class OrderResult:
    """Result of :func:`ode_order`, :func:`strong_order` or :func:`weak_order`.

    Attributes:
        solver, problem: display names.
        mode: ``"ode"``, ``"strong"``, ``"weak"`` or ``"bias"`` (:func:`bias_order`).
        dts: step sizes ``h_k``; errors: measured errors ``e_k``; std_errors: their Monte Carlo
            standard errors (0 for ODEs).
        order: fitted slope ``p``; ci: ``(lo, hi)`` at level ``ci_level`` by ``ci_method``.
        expected: theoretical order (``None`` when unknown); tolerance: allowed ``|p - expected|``.
        n_paths, seed: Monte Carlo sample size and seed (``None`` for ODEs).
        notes: warnings about the measurement (e.g. errors at round-off level).
        at_least: one-sided criterion (see :attr:`passed`).
    """

    solver: str
    problem: str
    mode: str
    dts: tuple[float, ...]
    errors: tuple[float, ...]
    std_errors: tuple[float, ...]
    order: float
    ci: tuple[float, float]
    ci_level: float
    ci_method: str
    expected: float | None
    tolerance: float
    n_paths: int | None = None
    seed: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    at_least: bool = False

    @property
    def passed(self) -> bool:
        """``|order - expected| <= tolerance``; with ``at_least`` (the ``"bias"`` mode, where a
        scheme may converge faster on a linear problem) ``order >= expected - tolerance``.
        ``True`` when there is no expectation and the order is finite."""
        if self.expected is None:
            return math.isfinite(self.order)
        if self.at_least:
            return bool(self.order >= self.expected - self.tolerance)
        return bool(abs(self.order - self.expected) <= self.tolerance)

    @property
    def local_orders(self) -> tuple[float, ...]:
        """Slopes between consecutive step sizes, ``log(e_k+1/e_k) / log(h_k+1/h_k)``."""
        out = []
        pairs = list(zip(self.dts, self.errors))
        for (h0, e0), (h1, e1) in zip(pairs, pairs[1:]):
            out.append(math.log(e1 / e0) / math.log(h1 / h0) if e0 > 0 and e1 > 0 else math.nan)
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        d["local_orders"] = list(self.local_orders)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    def __str__(self) -> str:
        exp = "?" if self.expected is None else f"{self.expected:g}"
        return (f"{self.solver} on {self.problem} ({self.mode}): order {self.order:.3f} "
                f"[{self.ci[0]:.3f}, {self.ci[1]:.3f}] vs {exp} +- {self.tolerance:g}: "
                f"{'pass' if self.passed else 'FAIL'}")


@dataclass(frozen=True)
class MomentsResult:
    """Result of :func:`moments` (every array a nested list of floats, float64 precision).

    Attributes:
        mean_mc ``[d]``: sample mean; cov_mc ``[d, d]``: mean of ``(x - m*)(x - m*)^T`` about the
            target mean ``m*`` (the estimator tested); mean_se, cov_se: their standard errors.
        mean_exact, cov_exact: moment equations at ``t1``; mean_target, cov_target: exact plus
            the bias (equal to exact when ``bias`` is None).
        z_mean ``[d]``, z_cov ``[d, d]``: ``(estimate - target) / se``.
        statistic: Wald statistic ``n (F - mu)^T S^-1 (F - mu)`` over the ``d + d(d+1)/2``
            features ``F = (x, vech((x - m*)(x - m*)^T))``; asymptotically chi-square with ``dof``
            degrees of freedom under the hypothesis that the targets are the true moments.
        p_value: ``P(chi2_dof >= statistic)``.
        passed: every ``|z| <= n_sigma``.
    """

    solver: str
    problem: str
    t1: float
    steps: int
    n_paths: int
    seed: int
    mean_mc: list[float]
    mean_se: list[float]
    mean_exact: list[float]
    mean_target: list[float]
    cov_mc: list[list[float]]
    cov_se: list[list[float]]
    cov_exact: list[list[float]]
    cov_target: list[list[float]]
    z_mean: list[float]
    z_cov: list[list[float]]
    statistic: float
    dof: int
    p_value: float
    n_sigma: float
    bias: str

    @property
    def max_abs_z(self) -> float:
        zs = [abs(z) for z in self.z_mean] + [abs(z) for row in self.z_cov for z in row]
        return max(zs) if zs else 0.0

    @property
    def passed(self) -> bool:
        return bool(self.max_abs_z <= self.n_sigma)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        d["max_abs_z"] = self.max_abs_z
        return d

    def __str__(self) -> str:
        return (f"{self.solver} on {self.problem} (moments, n={self.n_paths}, steps={self.steps}):"
                f" max|z| {self.max_abs_z:.2f} (<= {self.n_sigma:g}), chi2 {self.statistic:.2f} "
                f"on {self.dof} dof, p = {self.p_value:.3g}: {'pass' if self.passed else 'FAIL'}")


# =========================================================================== helpers
def _solver_info(solver: Any) -> tuple[Any, str]:
    """(instance, display name) of a solver given as a name, class or instance."""
    try:
        inst = _solvers.resolve(solver)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    name = getattr(inst, "name", "") or type(inst).__name__
    return inst, name


def _check_int(v: Any, name: str, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
    return v


def _check_float(v: Any, name: str, *, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {v!r}")
    if positive and v <= 0:
        raise ValueError(f"{name}: expected a positive number, got {v!r}")
    return float(v)


def _steps_from_dts(dts: Sequence[float], t1: float, name: str = "dts") -> list[int]:
    """Number of steps for each ``dt``; ``t1/dt`` must be an integer."""
    if isinstance(dts, (str, bytes)) or not isinstance(dts, Sequence) or len(dts) < 2:
        raise ValueError(f"{name}: expected a sequence of at least two step sizes, got {dts!r}")
    steps = []
    for h in dts:
        h = _check_float(h, name, positive=True)
        n = round(t1 / h)
        if n < 1 or abs(n * h - t1) > 1e-9 * max(1.0, abs(t1)):
            raise ValueError(f"{name}: step {h} does not divide the span {t1} into whole steps")
        steps.append(n)
    if len(set(steps)) != len(steps):
        raise ValueError(f"{name}: expected distinct step sizes, got {list(dts)}")
    return steps


def _normal_quantile(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2))


def _slope_weights(dts: Sequence[float]) -> Tensor:
    x = torch.log(torch.tensor(list(dts), dtype=_F64))
    xc = x - x.mean()
    return xc / (xc * xc).sum()


def fit_order(dts: Sequence[float], errors: Sequence[float]) -> float:
    """Least-squares slope of ``log(errors)`` on ``log(dts)`` (MATH.md §2)."""
    if len(dts) != len(errors) or len(dts) < 2:
        raise ValueError("dts, errors: expected two sequences of equal length >= 2")
    e = torch.tensor(list(errors), dtype=_F64)
    if not bool((e > 0).all()):
        raise ValueError(f"errors: expected positive errors to take logs of, got {list(errors)}")
    return float((_slope_weights(dts) * torch.log(e)).sum())


def _mc_fit(dts: Sequence[float], samples: Tensor, *, absolute: bool, ci_level: float,
            ci_method: str, n_boot: int, seed: int) -> tuple[list[float], list[float], float,
                                                            tuple[float, float]]:
    """Errors, standard errors, slope and interval from per-path samples ``[K, n]``.

    ``absolute=False``: error_k = mean_i samples (strong, samples >= 0);
    ``absolute=True``: error_k = |mean_i samples| (weak, signed differences).
    """
    k, n = samples.shape
    means = samples.mean(1)
    cov = torch.cov(samples) / n if n > 1 else torch.zeros(k, k, dtype=_F64)
    cov = cov.reshape(k, k)
    se = cov.diagonal().clamp_min(0).sqrt()
    errors = means.abs() if absolute else means
    w = _slope_weights(dts)
    if not bool((errors > 0).all()):
        return errors.tolist(), se.tolist(), math.nan, (math.nan, math.nan)
    p = float((w * torch.log(errors)).sum())
    if ci_method == "delta":
        g = w / means  # d p / d mean_k  (sign cancels inside |.|)
        sd = float((g @ cov @ g).clamp_min(0).sqrt())
        z = _normal_quantile(ci_level)
        ci = (p - z * sd, p + z * sd)
    elif ci_method == "bootstrap":
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randint(0, n, (n_boot, n), generator=gen)
        ps = []
        for b in range(0, n_boot, 64):
            m = samples[:, idx[b:b + 64]].mean(-1)  # [K, B]
            m = m.abs() if absolute else m
            ps.append((w.view(-1, 1) * torch.log(m.clamp_min(1e-300))).sum(0))
        pb = torch.cat(ps)
        lo, hi = torch.quantile(pb, torch.tensor([0.5 - ci_level / 2, 0.5 + ci_level / 2],
                                                 dtype=_F64)).tolist()
        ci = (lo, hi)
    else:
        raise ValueError(f"ci_method: expected 'delta' or 'bootstrap', got {ci_method!r}")
    return errors.tolist(), se.tolist(), p, ci


def _pick_problem(reference: Any, inst: Any) -> Any:
    """The form (Ito / Stratonovich) of ``reference``'s SDE that the solver accepts."""
    fits = getattr(inst, "fits", None)
    kinds = getattr(inst, "kinds", ("ito",))
    for kind in ("ito", "stratonovich"):
        if fits is not None:
            ok = fits(reference.noise, kind)
        else:
            ok = kind in kinds and reference.noise in getattr(inst, "noise_types", ())
        if ok:
            return reference.problem_as(kind)
    raise ValueError(
        f"solver: {getattr(inst, 'name', inst)!r} supports noise "
        f"{getattr(inst, 'noise_types', '?')} and kinds {kinds}, which do not fit "
        f"{reference.name} (noise {reference.noise!r})"
    )


def _check_reference_sde(reference: Any) -> None:
    if not isinstance(reference, _an.AnalyticSDE):
        raise ValueError(
            "reference: expected an SDE reference from sdeflow.analytic (GeometricBrownianMotion, "
            f"OrnsteinUhlenbeck, LinearSDE, NonlinearAdditiveSDE), got {type(reference).__name__}"
        )


def _initial(reference: Any, x0: Tensor | None, n_paths: int, dtype: torch.dtype,
             device: Any) -> Tensor:
    """``[n_paths, d]`` initial states (``x0`` ``[d]`` is repeated; ``[n_paths, d]`` is kept)."""
    if x0 is None:
        x0 = reference.default_x0(dtype=dtype, device=device)
    if not isinstance(x0, Tensor) or not x0.is_floating_point():
        raise ValueError("x0: expected a floating tensor of shape [d] or [n_paths, d]")
    x0 = x0.to(dtype=dtype, device=device)
    if x0.dim() == 1:
        return x0.expand(n_paths, -1).contiguous()
    if x0.dim() == 2 and x0.shape[0] == n_paths:
        return x0
    raise ValueError(f"x0: expected shape [d] or [{n_paths}, d], got {tuple(x0.shape)}")


def _batch_seed(seed: int, k: int) -> int:
    """Seed of batch ``k``: ``seed`` for the first, ``seed + k 2^32`` after (distinct paths)."""
    return seed + k * 2**32


def _chunks(n_paths: int, per_path: int, chunk: int | None) -> list[tuple[int, int]]:
    if chunk is None:
        chunk = max(1, min(n_paths, _GRID_BUDGET // max(1, per_path)))
    chunk = _check_int(chunk, "chunk")
    return [(i, min(n_paths, i + chunk)) for i in range(0, n_paths, chunk)]


def _simulate_coupled(inst: Any, reference: Any, problem: Any, steps: list[int], t1: float,
                      x0: Tensor, seed: int, chunk: int | None, n_fine: int | None
                      ) -> tuple[Tensor, Tensor]:
    """Numerical ``[K, n, d]`` and reference ``[n, d]`` solutions on shared Brownian paths."""
    n_paths, d = x0.shape
    per_path = max(max(steps), 0 if reference.pathwise_exact else (n_fine or 4096))
    per_path *= max(1, math.prod(reference.brownian_shape((1, d))))
    xs, refs = [], []
    for b, (i, j) in enumerate(_chunks(n_paths, per_path, chunk)):
        xb = x0[i:j]
        bm = BrownianPath(reference.brownian_shape(xb.shape), t0=0.0, t1=t1,
                          seed=_batch_seed(seed, b), dtype=x0.dtype, device=x0.device)
        refs.append(reference.pathwise(t1, xb, bm, n_fine=n_fine))
        xs.append(torch.stack([
            solve(problem, xb, t_span=(0.0, t1), solver=inst, steps=n, brownian=bm).x_final
            for n in steps
        ]))
    return torch.cat(xs, 1), torch.cat(refs, 0)


# =========================================================================== ODE
def default_linear_ode() -> _an.LinearODE:
    """The ODE reference of :func:`ode_order`: a damped rotation coupled to a decaying mode,
    ``A = [[-0.5, 2, 0.3], [-2, -0.5, 0], [0, 0, -1]]`` (non-normal, complex eigenvalues)."""
    return _an.LinearODE([[-0.5, 2.0, 0.3], [-2.0, -0.5, 0.0], [0.0, 0.0, -1.0]])


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


def _regression_fit(dts: Sequence[float], errors: Sequence[float], ci_level: float
                    ) -> tuple[float, tuple[float, float]]:
    """Slope and Student-t interval from the residuals of the straight-line fit (no noise)."""
    if any(not e > 0 for e in errors):
        return math.nan, (math.nan, math.nan)
    p = fit_order(dts, errors)
    k = len(dts)
    if k <= 2:
        return p, (p, p)
    from scipy.stats import t as student_t

    x = torch.log(torch.tensor(list(dts), dtype=_F64))
    y = torch.log(torch.tensor(list(errors), dtype=_F64))
    xc = x - x.mean()
    intercept = y.mean() - p * x.mean()
    rss = float(((y - intercept - p * x) ** 2).sum())
    sd = math.sqrt(rss / (k - 2) / float((xc * xc).sum()))
    q = float(student_t.ppf(0.5 + ci_level / 2, k - 2))
    return p, (p - q * sd, p + q * sd)


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
        reference: a :class:`~sdeflow.analytic.LinearODE` (default :func:`default_linear_ode`).
        steps: numbers of equal steps (default chosen from the solver's order so errors stay
            between about 1e-2 and 1e-12 in float64).
        x0: ``[..., d]`` initial state (default ``reference.default_x0()``); errors are the
            Euclidean norm over the last axis, averaged over the leading ones.
        expected: theoretical order (default ``solver.order``).

    Round-off: errors below ``100 eps |x|`` (about 1e-14 in float64) are noise; such step
    sizes are flagged in ``notes`` (choose fewer steps). Use float64 for orders above 2.
    """
    inst, name = _solver_info(solver)
    if getattr(inst, "is_sde", False):
        raise ValueError(f"solver: {name!r} is an SDE solver; use strong_order/weak_order")
    reference = default_linear_ode() if reference is None else reference
    if not isinstance(reference, _an.LinearODE):
        raise ValueError(f"reference: expected an sdeflow.analytic.LinearODE, got "
                         f"{type(reference).__name__}")
    t1 = _check_float(t1, "t1", positive=True)
    tolerance = _check_float(tolerance, "tolerance", positive=True)
    if not 0 < ci_level < 1:
        raise ValueError(f"ci_level: expected a level in (0, 1), got {ci_level!r}")
    if expected is None:
        expected = getattr(inst, "order", None)
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
    if getattr(getattr(inst, "caps", None), "semilinear", False):  # exponential integrators
        from .semilinear import SemilinearODE  # noqa: PLC0415

        problem = SemilinearODE.from_linear(reference.A)
        if expected is None:
            expected = inst.caps.order
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


# =========================================================================== strong
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

    Returns:
        :class:`OrderResult` with ``mode="strong"``.
    """
    inst, name = _solver_info(solver)
    if not getattr(inst, "is_sde", False):
        raise ValueError(f"solver: {name!r} is an ODE solver; use ode_order")
    _check_reference_sde(reference)
    n_paths = _check_int(n_paths, "n_paths", 2)
    seed = _check_int(seed, "seed", 0)
    t1 = _check_float(t1, "t1", positive=True)
    tolerance = _check_float(tolerance, "tolerance", positive=True)
    if not 0 < ci_level < 1:
        raise ValueError(f"ci_level: expected a level in (0, 1), got {ci_level!r}")
    if dts is None:
        gbm = isinstance(reference, _an.GeometricBrownianMotion)
        dts = tuple(t1 * 2.0**-k for k in (range(5, 10) if gbm else range(3, 8)))
    steps = _steps_from_dts(dts, t1)
    problem = _pick_problem(reference, inst)
    if expected is None:
        sof = getattr(inst, "strong_order_for", None)
        expected = sof(reference.noise) if sof is not None else getattr(inst, "strong_order", None)
    x0 = _initial(reference, x0, n_paths, dtype, device)
    xs, ref = _simulate_coupled(inst, reference, problem, steps, t1, x0, seed, chunk, n_fine)
    samples = torch.linalg.vector_norm(xs - ref, dim=-1).to(_F64).cpu()  # [K, n]
    errors, se, p, ci = _mc_fit([t1 / n for n in steps], samples, absolute=False,
                                ci_level=ci_level, ci_method=ci_method, n_boot=n_boot, seed=seed)
    notes = []
    if not reference.pathwise_exact:
        notes.append(f"reference: fine-grid solution on the same path ({n_fine or 4096} cells)")
    return OrderResult(
        solver=name, problem=reference.name, mode="strong",
        dts=tuple(t1 / n for n in steps), errors=tuple(errors), std_errors=tuple(se), order=p,
        ci=ci, ci_level=ci_level, ci_method=ci_method, expected=expected, tolerance=tolerance,
        n_paths=n_paths, seed=seed, notes=tuple(notes),
    )


# =========================================================================== weak
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
    """Weak order: ``e_k = |E phi(X^{h_k}_T) - E phi(X_T)|`` (MATH.md §2).

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
    if not getattr(inst, "is_sde", False):
        raise ValueError(f"solver: {name!r} is an ODE solver; use ode_order")
    _check_reference_sde(reference)
    n_paths = _check_int(n_paths, "n_paths", 2)
    seed = _check_int(seed, "seed", 0)
    t1 = _check_float(t1, "t1", positive=True)
    tolerance = _check_float(tolerance, "tolerance", positive=True)
    if not 0 < ci_level < 1:
        raise ValueError(f"ci_level: expected a level in (0, 1), got {ci_level!r}")
    if phi is not None and not callable(phi):
        raise ValueError(f"phi: expected a callable phi(x) -> [...], got {type(phi).__name__}")
    if dts is None:
        dts = tuple(t1 * 2.0**-k for k in range(3, 8))
    steps = _steps_from_dts(dts, t1)
    problem = _pick_problem(reference, inst)
    if expected is None:
        expected = getattr(inst, "weak_order", None)
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


# =========================================================================== moments
def _linear_form(reference: Any, dim: int | None = None) -> _an.LinearSDE:
    if isinstance(reference, _an.LinearSDE):
        return reference
    if isinstance(reference, _an.OrnsteinUhlenbeck):
        return reference.as_linear_sde(dim)
    raise ValueError(f"reference: the scheme's discrete moments need a linear SDE (LinearSDE or "
                     f"OrnsteinUhlenbeck), got {type(reference).__name__}")


def discrete_moments(solver: Any, reference: Any, t1: float, steps: int, x0: Tensor,
                     ) -> tuple[Tensor, Tensor]:
    """Exact mean ``[d]`` and covariance ``[d, d]`` (float64) of a *scheme* on a linear SDE.

    On ``dX = (A X + a) dt + B dW`` every Runge--Kutta-type step is affine in the state and the
    noise: ``x_new = M x + c + K_W dW + K_I I`` with ``I = int (W_s - W_t) ds``. The step function
    (``solver.build(f, g, noise)``, see ``sdeflow.solvers.base``) is probed at ``x = 0`` and unit
    vectors with zero noise (``M``, ``c``) and at unit noise vectors (``K_W``, ``K_I``); then
    ``Q = h K_W K_W^T + h^2/2 (K_W K_I^T + K_I K_W^T) + h^3/3 K_I K_I^T`` (the covariance of
    ``(dW, I)``, MATH.md §2) and :func:`~sdeflow.analytic.linear_recursion_moments` gives the
    moments after ``steps`` steps. Subtracting the exact moments gives the scheme's exact bias
    (for Euler--Maruyama, ``M = I + hA``, ``c = h a``, ``Q = h B B^T``).

    Args:
        solver: name, class or instance of an SDE solver with a ``build`` step function.
        reference: :class:`~sdeflow.analytic.LinearSDE` or
            :class:`~sdeflow.analytic.OrnsteinUhlenbeck`.
        t1: end time (from 0); steps: number of equal steps; x0: ``[d]`` deterministic start.
    """
    inst, name = _solver_info(solver)
    if not hasattr(inst, "build"):
        raise ValueError(f"solver: {name!r} has no step function (build) to probe")
    if not isinstance(x0, Tensor) or x0.dim() != 1:
        raise ValueError("x0: expected a tensor of shape (d,)")
    lin = _linear_form(reference, x0.shape[0])
    steps = _check_int(steps, "steps")
    t1 = _check_float(t1, "t1", positive=True)
    if x0.shape != (lin.dim,):
        raise ValueError(f"x0: expected a tensor of shape ({lin.dim},)")
    problem = _pick_problem(lin, inst)
    if hasattr(inst, "configure"):
        inst.configure(problem.kind)
    f, g = problem._fields()
    step = inst.build(f, g, problem.noise)
    h = t1 / steps
    d, m = lin.dim, lin.m
    tt = tuple(torch.tensor(c * h, dtype=_F64) for c in getattr(inst, "c", (0.0,)))
    eye_d, eye_m = torch.eye(d, dtype=_F64), torch.eye(m, dtype=_F64)
    zero_w = torch.zeros(d + 1, m, dtype=_F64)
    space_time = bool(getattr(inst, "needs_space_time", False))

    def run(x: Tensor, dw: Tensor, it: Tensor) -> Tensor:
        nz = (dw, it) if space_time else (dw,)
        return step(tt, x, h, nz)

    # zero-noise map at x = 0 and at unit vectors (one batch)
    xs = torch.cat([torch.zeros(1, d, dtype=_F64), eye_d])
    out = run(xs, zero_w, zero_w)
    c = out[0]
    mm = (out[1:] - c).T  # column j = M e_j
    zx = torch.zeros(m, d, dtype=_F64)
    zm = torch.zeros(m, m, dtype=_F64)
    kw = (run(zx, eye_m, zm) - c).T  # [d, m]
    ki = (run(zx, zm, eye_m) - c).T if space_time else torch.zeros(d, m, dtype=_F64)
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
    Monte Carlo) and ``(m, P)`` the exact moments (MATH.md §3); the order is the least-squares
    slope of ``log e`` on ``log h``. This is what makes a ``bias="scheme"`` moment check
    meaningful: the Monte Carlo moments match the scheme's recursion (:func:`moments`) *and* that
    recursion converges to the right moments at (at least) the weak order. ``passed`` is one-sided,
    ``order >= expected - tolerance`` (``expected`` defaults to ``solver.weak_order``), because
    schemes may converge faster on linear problems (e.g. stochastic Heun and SRA1 give 2).
    Discrete moments exact to round-off count as passed (order ``inf``).
    """
    inst, name = _solver_info(solver)
    lin = _linear_form(reference, None if x0 is None else x0.shape[-1])
    steps = [_check_int(n, "steps") for n in steps]
    if len(steps) < 2 or len(set(steps)) != len(steps):
        raise ValueError(f"steps: expected at least two distinct step counts, got {steps}")
    t1 = _check_float(t1, "t1", positive=True)
    if x0 is None:
        x0 = lin.default_x0()
    x0 = x0.to(_F64).cpu()
    if expected is None:
        expected = getattr(inst, "weak_order", None)
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
    """Monte Carlo mean and covariance at ``t1`` against the moment equations (MATH.md §3).

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
    if not getattr(inst, "is_sde", False):
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


# =========================================================================== suite
# ------------------------------------------------------------------- tolerance proportionality
@dataclass
class ToleranceProportionality:
    """Result of :func:`tolerance_proportionality`.

    Attributes:
        solver, problem: what was run.
        tols: the tolerances (``rtol = atol = tol``).
        errors: the max-abs error at the final time against the exact/reference solution.
        nfe: function evaluations of each solve.
        slope: least-squares slope of ``log(error)`` on ``log(tol)`` (ideal: 1).
        slope_range: the accepted interval for ``slope``.
        passed: ``slope`` inside ``slope_range`` and every error below ``max_ratio * tol``.
    """

    solver: str
    problem: str
    tols: list[float]
    errors: list[float]
    nfe: list[int]
    slope: float
    slope_range: tuple[float, float]
    max_ratio: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(mode="tolerance", order=self.slope, expected=1.0, ci=(self.slope, self.slope),
                 worst_ratio=max(e / t for e, t in zip(self.errors, self.tols)))
        return d

    def summary(self) -> str:
        status = "PASS" if self.passed else "FAIL"
        return (f"{self.solver} on {self.problem}: error ~ tol^{self.slope:.2f} (expected in "
                f"[{self.slope_range[0]}, {self.slope_range[1]}]), worst error/tol "
                f"{max(e / t for e, t in zip(self.errors, self.tols)):.2g} -> {status}")


def _tp_problem(name: str, dtype: torch.dtype
                ) -> tuple[ODE, Tensor, tuple[float, float], Tensor]:
    f64 = torch.float64
    if name == "linear":
        a = torch.tensor([[-0.5, 2.0, 0.0, 0.3], [-2.0, -0.5, 0.4, 0.0],
                          [0.0, 0.0, -1.0, 1.0], [0.1, 0.0, -1.0, -0.2]], dtype=f64)
        x0 = torch.tensor([1.0, 0.0, -0.5, 0.25], dtype=f64)
        t_end = 5.0
        exact = _an.expm(t_end * a) @ x0
        at = a.to(dtype)
        return ODE(lambda t, x: x @ at.T), x0.to(dtype), (0.0, t_end), exact
    if name == "rotation":
        w = 2.0 * math.pi
        x0 = torch.tensor([1.0, 0.0], dtype=f64)
        t_end = 3.3
        exact = torch.tensor([math.cos(w * t_end), -math.sin(w * t_end)], dtype=f64)
        rot = torch.tensor([[0.0, w], [-w, 0.0]], dtype=dtype)
        return ODE(lambda t, x: x @ rot.T), x0.to(dtype), (0.0, t_end), exact
    if name == "vdp":
        mu, t_end = 2.0, 6.0
        x0 = torch.tensor([2.0, 0.0], dtype=f64)
        from scipy.integrate import solve_ivp  # noqa: PLC0415

        ref = solve_ivp(lambda t, y: [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]], (0.0, t_end),
                        x0.tolist(), method="DOP853", rtol=1e-13, atol=1e-13)
        exact = torch.tensor(ref.y[:, -1], dtype=f64)

        def vdp(t: Tensor, x: Tensor) -> Tensor:
            p, v = x[..., 0], x[..., 1]
            return torch.stack([v, mu * (1 - p * p) * v - p], dim=-1)

        return ODE(vdp), x0.to(dtype), (0.0, t_end), exact
    raise ValueError(f"problem: expected 'linear', 'rotation' or 'vdp', got {name!r}")


def tolerance_proportionality(
    solver: str | Any = "dopri5",
    problem: str = "linear",
    tols: Sequence[float] | None = None,
    dtype: torch.dtype = torch.float64,
    slope_range: tuple[float, float] = (0.7, 1.3),
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
    ``~ C tol`` (MATH.md §2), so ``s`` should be near 1.

    Returns:
        a :class:`ToleranceProportionality` with the fitted slope and ``passed``.
    """
    if tols is None:
        cls = _solvers.get(solver) if isinstance(solver, str) else solver
        tab = getattr(cls, "tableau", None)
        p_hat = min(tab.order, tab.embedded_order or tab.order) if tab is not None else 4
        top = {1: 2, 2: 3}.get(p_hat, 4)
        n = 4 if p_hat <= 1 else 5
        tols = [10.0 ** -(top + i) for i in range(n)]
    tl = [float(t) for t in tols]
    if len(tl) < 2 or any(not t > 0 for t in tl):
        raise ValueError(f"tols: expected at least two positive tolerances, got {tols!r}")
    ode, x0, span, exact = _tp_problem(problem, dtype)
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



@dataclass
class SDEToleranceResult:
    """Result of :func:`sde_tolerance_order`: strong error against the tolerance.

    Attributes:
        solver, problem: what was run.
        tols: the tolerances (``rtol = atol = tol``).
        errors: strong errors ``E|X_T - X_T^tol|`` on one shared path per tolerance.
        steps: accepted steps of each solve.
        order: least-squares slope of ``log(error)`` on ``log(tol)``.
        expected: ``p / (p + 1/2)`` for a scheme of strong order ``p``.
        tolerance: allowed ``|order - expected|``.
        passed: the slope is within ``tolerance`` and the errors fall with the tolerance.
    """

    solver: str
    problem: str
    tols: list[float]
    errors: list[float]
    steps: list[int]
    order: float
    expected: float
    tolerance: float
    n_paths: int
    seed: int
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(mode="sde_tolerance", ci=(self.order, self.order))
        return d


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
    p = inst.strong_order_for(problem.noise)
    if tols is None:
        tols = (1e-1, 5e-2, 2.5e-2, 1.25e-2) if p < 1 else (1e-1, 3e-2, 1e-2, 3e-3, 1e-3)
    tl = [float(t) for t in tols]
    if len(tl) < 2 or any(not t > 0 for t in tl):
        raise ValueError(f"tols: expected at least two positive tolerances, got {tols!r}")
    n_paths = _check_int(n_paths, "n_paths")
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


def default_suite(quick: bool = False) -> dict[str, Any]:
    """Problems, step sizes and sample sizes of ``sdeflow verify`` (see ``docs/verification.md``).

    * ODE solvers: :func:`ode_order` on :func:`default_linear_ode`, float64.
    * SDE solvers, strong order on one shared path per batch of paths:

      - GBM(mu=1, sigma=1) (diagonal noise, exact pathwise solution), ``dt = 2^-5 .. 2^-9``,
        2000 paths (quick: 1000). Coarser steps are pre-asymptotic for the order-1 schemes
        (their local orders rise from ~0.9 at ``dt = 1/8`` to 1.0).
      - ``dX = -sin X dt + 2 dW`` (additive noise, fine-grid reference), ``dt = 2^-3 .. 2^-7``,
        1000 paths (quick: 500): the nonlinear drift is what shows SRA1's 1.5 (MATH.md §2);
        sigma = 2 makes the order-1.5 error terms dominate the order-2 ones.
    * Weak order on GBM(mu=0.5, sigma=0.5), ``phi = |x|^2``, coupled, ``dt = 2^-3 .. 2^-7``,
      20000 paths (quick: 10000), for solvers of weak order <= 1 (a weak order 2 needs much
      larger samples). For Euler--Maruyama the exact discrete weak errors are known
      (``GeometricBrownianMotion.euler_maruyama_moments``); their least-squares slope over these
      steps is 0.965, not 1: the expected pre-asymptotic part.
    * Moments on a 2-d LinearSDE (general noise, or its diagonal for solvers without general
      noise) at 32 steps, 20000 paths (cheap, so quick mode keeps them), targets shifted by the
      scheme's exact bias (:func:`discrete_moments`), 4 standard errors; preceded by
      :func:`bias_order` at 32..256 steps (the bias must vanish at >= the weak order - 0.15).
    * Embedded pairs: :func:`tolerance_proportionality` on a linear system, a rotation and Van der
      Pol (mu = 2). Adaptive SDE solvers: :func:`sde_tolerance_order` on GBM(1, 1), 500 paths
      (quick: 300), instead of their base schemes' fixed-step checks.
    """
    return {
        "gbm": _an.GeometricBrownianMotion(1.0, 1.0),
        "gbm_dts": (2**-5, 2**-6, 2**-7, 2**-8, 2**-9),
        "gbm_paths": 1000 if quick else 2000,
        "additive": _an.NonlinearAdditiveSDE(2.0),
        "additive_dts": (2**-3, 2**-4, 2**-5, 2**-6, 2**-7),
        "additive_paths": 500 if quick else 1000,
        "gbm_weak": _an.GeometricBrownianMotion(0.5, 0.5),
        "weak_dts": (2**-3, 2**-4, 2**-5, 2**-6, 2**-7),
        "weak_paths": 10000 if quick else 20000,
        "linear": _an.LinearSDE([[-1.0, 0.5], [-0.5, -1.5]], [0.5, -0.2],
                                [[0.6, 0.2], [0.0, 0.4]]),
        "moment_steps": 32,
        "moment_paths": 20000,
        "tolerance_problems": ("linear", "rotation", "vdp"),
        "sde_tolerance_paths": 300 if quick else 500,
        "n_fine": 4096,
        "seed": 0,
    }


def _fits(inst: Any, reference: Any) -> bool:
    try:
        _pick_problem(reference, inst)
    except ValueError:
        return False
    return True


def run_suite(solvers: Sequence[Any] | None = None, *, quick: bool = False,
              progress: Callable[[Any], None] | None = None) -> list[Any]:
    """Run every registered (or given) solver on the analytic problems of :func:`default_suite`.

    Returns the list of results (orders, tolerance proportionality of the embedded pairs, and
    moment checks); ``progress`` is called with each result as it is produced.
    """
    cfg = default_suite(quick)
    if solvers is None:
        solvers = list(_solvers.names())
    results: list[Any] = []

    def emit(r: Any) -> None:
        results.append(r)
        if progress is not None:
            progress(r)

    seed = cfg["seed"]
    for spec in solvers:
        inst, _ = _solver_info(spec)
        if getattr(getattr(inst, "caps", None), "semilinear", False) and inst.caps.sde:
            continue  # needs a SemilinearSDE: checked by tests/core/test_exponential.py
        if getattr(inst, "is_sde", False) and getattr(inst, "adaptive", False):
            # its fixed-step behaviour is its base scheme's (checked there); check adaptivity
            emit(sde_tolerance_order(inst, n_paths=cfg["sde_tolerance_paths"], seed=seed))
            continue
        if not getattr(inst, "is_sde", False):
            emit(ode_order(inst))
            tab = getattr(inst, "tableau", None)
            if tab is not None and tab.b_err is not None:  # an embedded pair: adaptive use
                for prob in cfg["tolerance_problems"]:
                    emit(tolerance_proportionality(inst, prob))
            continue
        for key in ("gbm", "additive"):
            ref = cfg[key]
            if _fits(inst, ref):
                emit(strong_order(inst, ref, cfg[key + "_dts"], cfg[key + "_paths"], seed,
                                  n_fine=cfg.get("n_fine")))
        wo = getattr(inst, "weak_order", None)
        if wo is not None and wo <= 1.0 and _fits(inst, cfg["gbm_weak"]):
            emit(weak_order(inst, cfg["gbm_weak"], cfg["weak_dts"], cfg["weak_paths"], seed))
        lin = cfg["linear"]
        if not _fits(inst, lin):
            lin = _an.LinearSDE(lin.A, lin.a, torch.diagonal(lin.B_matrix).clone())
        if _fits(inst, lin):
            bias: str | None = None
            if hasattr(inst, "build"):
                n = cfg["moment_steps"]
                emit(bias_order(inst, lin, (n, 2 * n, 4 * n, 8 * n)))
                bias = "scheme"
            emit(moments(inst, lin, steps=cfg["moment_steps"], n_paths=cfg["moment_paths"],
                         seed=seed, bias=bias))
    return results
