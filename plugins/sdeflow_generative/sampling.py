"""Few-step sampling: the probability-flow ODE of a Gaussian path as a semilinear problem.

With ``lambda = log(alpha/beta)`` (increasing in t; docs/math.md §15.1) the PF-ODE
``dx/dt = (beta_dot/beta) x + alpha lambda_dot x0_hat(x, t)`` has the exact step

    x_t = (beta_t/beta_s) x_s + alpha_t int_{lambda_s}^{lambda_t} e^{-(lambda_t - l)} x0_hat dl
        (data prediction, ``form="x0"``),
    x_t = (alpha_t/alpha_s) x_s - beta_t int_{lambda_s}^{lambda_t} e^{(lambda_t - l)} eps_hat dl
        (noise prediction, ``form="eps"``),

so :func:`semilinear_problem` builds an :class:`sdeflow.SemilinearODE` with ``tau = lambda`` and
the model converted (``GaussianPath.convert``) to ``x0`` or ``eps``, and :func:`sample` solves it
with the core's exponential integrators on a grid uniform in ``t``, in ``lambda``, or Karras'
(EDM, ``rho = 7``) in ``sigma = beta/alpha = e^{-lambda}``. Any core ODE solver name works too
(then the ODE is the velocity form, in ``t``). ``dpm_solver_pp2m_sde`` samples the eta-family
SDE with the linear part exact (:func:`semilinear_sde`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

import sdeflow as sf
from sdeflow.semilinear import SemilinearODE, SemilinearSDE
from sdeflow.solvers import exponential as expo
from sdeflow.solvers.registry import get, names

from ._utils import check_state, expand_time
from .fields import ProbabilityFlowODE
from .paths import PARAMETERIZATIONS, GaussianPath
from .schedules import CondOT, Cosine, SquareRoot, VariancePreserving

Tensor = torch.Tensor

__all__ = ["sample", "semilinear_problem", "semilinear_sde", "make_grid", "lam", "lam_to_t",
           "GRIDS", "FEW_STEP"]

GRIDS = ("t", "lambda", "karras")
FEW_STEP = ("ddim", "dpm_solver2", "dpm_solver3", "dpm_solver_pp2m", "dpm_solver_pp3m",
            "unipc2", "unipc3")
SDE_SOLVERS = ("dpm_solver_pp2m_sde",)
FORMS = ("x0", "eps")
KARRAS_RHO = 7.0
T_EPS = 1e-3
_MONO_POINTS = 2001
_BISECT = 64


# ------------------------------------------------------------------------------- lambda
def lam(path: GaussianPath, t: Tensor) -> Tensor:
    """``lambda(t) = log alpha_t - log beta_t`` (``-inf`` where ``alpha = 0``, ``+inf`` where
    ``beta = 0``), ``t``'s shape."""
    v = path.schedule(t)
    return torch.log(v.alpha) - torch.log(v.beta)


def lam_to_t(path: GaussianPath, lv: Tensor, lo: float = 0.0, hi: float = 1.0) -> Tensor:
    """The time with ``lambda(t) = lv`` in ``[lo, hi]``, elementwise: in closed form for the
    plugin's schedules, else by bisection (``lambda`` increasing; float64 resolution)."""
    sch = path.schedule
    if type(sch) is CondOT:
        return torch.sigmoid(lv).clamp(lo, hi)
    if type(sch) is Cosine:
        return (2.0 / math.pi * torch.atan(torch.exp(lv))).clamp(lo, hi)
    if type(sch) is SquareRoot:  # t^2 = e^{2 lambda} (1 - t)
        return (2.0 / (1.0 + torch.sqrt(1.0 + 4.0 * torch.exp(-2.0 * lv)))).clamp(lo, hi)
    if type(sch) is VariancePreserving:  # B(1 - t) = log(1 + e^{-2 lambda})
        big_b = torch.nn.functional.softplus(-2.0 * lv)
        b0, d = sch.beta_min, sch.beta_max - sch.beta_min
        s = 2.0 * big_b / (b0 + torch.sqrt(b0 * b0 + 2.0 * d * big_b))
        return (1.0 - s).clamp(lo, hi)
    return _bisect(path, lv, lo, hi)


def _bisect(path: GaussianPath, lv: Tensor, lo: float, hi: float) -> Tensor:
    a = torch.full_like(lv, lo)
    b = torch.full_like(lv, hi)
    for _ in range(_BISECT):
        m = 0.5 * (a + b)
        up = lam(path, m) < lv
        a = torch.where(up, m, a)
        b = torch.where(up, b, m)
    return 0.5 * (a + b)


def _check_monotone_lambda(path: GaussianPath, t0: float, t1: float) -> None:
    lo, hi = min(t0, t1), max(t0, t1)
    ts = torch.linspace(lo, hi, _MONO_POINTS, dtype=torch.float64)
    lv = lam(path, ts)
    d = lv[1:] - lv[:-1]
    if not bool((d > 0).all()):
        i = int(torch.nonzero(~(d > 0))[0])
        raise ValueError(f"path: lambda = log(alpha/beta) of {path.schedule!r} is not strictly "
                         f"increasing on [{lo:g}, {hi:g}] (it fails near t={float(ts[i]):.4g}); "
                         f"the exponential integrators need a monotone lambda")


# -------------------------------------------------------------------------------- grids
def make_grid(path: GaussianPath, grid: str | Tensor, steps: int | None, t_span: tuple[float,
              float]) -> list[float]:
    """The time grid ``[t_0, ..., t_steps]`` over ``t_span`` (``grid`` ``"t"``, ``"lambda"``,
    ``"karras"`` or a tensor of times, checked: strictly monotone, inside [0, 1])."""
    t0, t1 = t_span
    if isinstance(grid, Tensor):
        if grid.dim() != 1 or grid.numel() < 2:
            raise ValueError(f"grid: expected a 1-D tensor of at least two times, got shape "
                             f"{tuple(grid.shape)}")
        g = [float(v) for v in grid.detach().cpu().tolist()]
        if not all(math.isfinite(v) for v in g):
            raise ValueError("grid: contains NaN or inf")
        d = [b - a for a, b in zip(g[:-1], g[1:])]
        if not (all(v > 0 for v in d) or all(v < 0 for v in d)):
            raise ValueError(f"grid: expected strictly monotone times, got "
                             f"{g if len(g) <= 8 else g[:8] + ['...']}")
        if min(g) < 0.0 or max(g) > 1.0:
            raise ValueError(f"grid: the times leave the path's span [0, 1] (got "
                             f"[{min(g):g}, {max(g):g}])")
        if steps is not None and steps != len(g) - 1:
            raise ValueError(f"steps: {steps} does not match the grid's {len(g) - 1} steps; "
                             f"drop steps or pass a matching grid")
        return g
    if grid not in GRIDS:
        raise ValueError(f"grid: expected one of {GRIDS} or a tensor of times, got {grid!r}")
    if steps is None:
        raise ValueError("steps: expected a positive int (the number of steps of the grid)")
    n = steps
    if grid == "t":
        return [t0 + (t1 - t0) * i / n for i in range(n)] + [t1]
    l0, l1 = (float(v) for v in lam(path, torch.tensor([t0, t1], dtype=torch.float64)))
    if grid == "lambda":
        lv = torch.tensor([l0 + (l1 - l0) * i / n for i in range(n + 1)], dtype=torch.float64)
    else:  # karras: sigma = e^{-lambda}, uniform in sigma^(1/rho)
        s0, s1 = math.exp(-l0 / KARRAS_RHO), math.exp(-l1 / KARRAS_RHO)
        lv = torch.tensor([-KARRAS_RHO * math.log(s0 + (s1 - s0) * i / n)
                           for i in range(n + 1)], dtype=torch.float64)
    lo, hi = min(t0, t1), max(t0, t1)
    ts = lam_to_t(path, lv, lo, hi).tolist()
    ts[0], ts[-1] = t0, t1
    return [float(v) for v in ts]


# ----------------------------------------------------------------------------- problems
def _model_fn(model: Callable[..., Tensor], cond: Mapping[str, Any] | None
              ) -> Callable[[Tensor, Tensor], Tensor]:
    kw = dict(cond) if cond else {}

    def call(x: Tensor, t: Tensor) -> Tensor:
        out = model(x, expand_time(t, x), **kw)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"model: expected an output of x's shape {tuple(x.shape)}, "
                             f"got {shape}")
        return out
    return call


def _schedule_fns(path: GaussianPath) -> dict[str, Callable[[Tensor], Tensor]]:
    sch = path.schedule

    def log_alpha(t: Tensor) -> Tensor:
        return torch.log(sch(t).alpha)

    def log_beta(t: Tensor) -> Tensor:
        return torch.log(sch(t).beta)

    def beta_rate(t: Tensor) -> Tensor:  # beta_dot / beta = (beta beta_dot) / beta^2
        b = sch(t).beta
        return sch.beta_beta_dot(t) / (b * b)

    def alpha_rate(t: Tensor) -> Tensor:
        v = sch(t)
        return v.alpha_dot / v.alpha

    def lam_dot(t: Tensor) -> Tensor:
        return alpha_rate(t) - beta_rate(t)

    def lam_inv(lv: Tensor) -> Tensor:
        return lam_to_t(path, lv.to(torch.float64)).to(lv.dtype)

    return dict(log_alpha=log_alpha, log_beta=log_beta, beta_rate=beta_rate,
                alpha_rate=alpha_rate, lam=lambda t: lam(path, t), lam_dot=lam_dot,
                lam_inv=lam_inv)


def semilinear_problem(path: GaussianPath, model: Callable[..., Tensor], param: str,
                       form: str = "x0", cond: Mapping[str, Any] | None = None
                       ) -> SemilinearODE:
    """The PF-ODE of ``model`` (in ``param``) as a :class:`~sdeflow.SemilinearODE` in ``form``
    (``"x0"``: data prediction, ``G = alpha``; ``"eps"``: noise prediction, ``G = -beta``)."""
    _check(path, model, param)
    if form not in FORMS:
        raise ValueError(f"form: expected one of {FORMS}, got {form!r}")
    f = _schedule_fns(path)
    m = _model_fn(model, cond)

    def nonlinear(t: Tensor, x: Tensor) -> Tensor:
        out = m(x, t)
        return out if param == form else path.convert(out, x, t, param, form)

    if form == "x0":
        return SemilinearODE(nonlinear, tau=f["lam"], log_scale=f["log_beta"], rate=1.0,
                             gain=1.0, linear=f["beta_rate"], tau_dot=f["lam_dot"],
                             tau_inverse=f["lam_inv"])
    return SemilinearODE(nonlinear, tau=f["lam"], log_scale=f["log_alpha"], rate=-1.0,
                         gain=-1.0, linear=f["alpha_rate"], tau_dot=f["lam_dot"],
                         tau_inverse=f["lam_inv"])


def semilinear_sde(path: GaussianPath, model: Callable[..., Tensor], param: str,
                   eta: float = 1.0, cond: Mapping[str, Any] | None = None) -> SemilinearSDE:
    """The eta-family SDE ``dX = [(1 + eta) u - eta (alpha_dot/alpha) X] dt + beta
    sqrt(2 eta lambda_dot) dW`` (``DiffusionSDE(eta=)``) in data-prediction form (docs/math.md
    §15.5):
    ``log E = log beta - eta lambda``, ``k = c = 1 + eta``, ``G = (1 + eta) alpha``,
    ``noise_std(s, t) = beta_t sqrt(1 - e^{-2 eta h})``."""
    _check(path, model, param)
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not (
            math.isfinite(eta) and eta > 0):
        raise ValueError(f"eta: expected a finite float > 0, got {eta!r}")
    f = _schedule_fns(path)
    m = _model_fn(model, cond)
    e = float(eta)

    def nonlinear(t: Tensor, x: Tensor) -> Tensor:
        out = m(x, t)
        return out if param == "x0" else path.convert(out, x, t, param, "x0")

    def g(t: Tensor) -> Tensor:
        return path.schedule(t).beta * torch.sqrt(2.0 * e * f["lam_dot"](t))

    def noise_std(s: Tensor, t: Tensor) -> Tensor:
        h = f["lam"](t) - f["lam"](s)
        return path.schedule(t).beta * torch.sqrt(-torch.expm1(-2.0 * e * h))

    return SemilinearSDE(nonlinear, tau=f["lam"], log_scale=lambda t: f["log_beta"](t) - e *
                         f["lam"](t), rate=1.0 + e, gain=1.0 + e, diffusion=g,
                         noise_std=noise_std, linear=lambda t: f["beta_rate"](t) - e *
                         f["lam_dot"](t), tau_dot=f["lam_dot"], tau_inverse=f["lam_inv"])


def _check(path: Any, model: Any, param: Any) -> None:
    if not isinstance(path, GaussianPath):
        raise TypeError(f"path: expected a GaussianPath, got {type(path).__name__}")
    if not callable(model):
        raise TypeError(f"model: expected a callable model(x, t, **cond), got "
                        f"{type(model).__name__}")
    if param not in PARAMETERIZATIONS:
        raise ValueError(f"param: expected one of {PARAMETERIZATIONS}, got {param!r}")


# ---------------------------------------------------------------------------------- front
def sample(model: Callable[..., Tensor], path: GaussianPath, x0: Tensor, *, solver: str,
           steps: int | None = None, param: str, grid: str | Tensor = "lambda",
           cond: Mapping[str, Any] | None = None, form: str | None = None,
           t_span: tuple[float, float] | None = None, lower_final: int = 0,
           eta: float = 1.0, seed: int | None = None, brownian: Any = None,
           **options: Any) -> sf.Solution:
    """Sample the PF-ODE (or, with ``dpm_solver_pp2m_sde``, the eta-SDE) of ``model`` from
    ``x0 ~ p_{t_0}`` on a few-step grid (docs/fewstep.md, docs/math.md §15).

    Args:
        model: ``model(x, t, **cond)`` -> ``param`` field; ``x`` ``(n, d)``, ``t`` ``(n,)``.
        path: the :class:`GaussianPath` of the model.
        x0: the initial state ``(n, d)`` at ``t_span[0]``.
        solver: ``ddim``, ``dpm_solver2``, ``dpm_solver3``, ``dpm_solver_pp2m``,
            ``dpm_solver_pp3m``, ``unipc2``, ``unipc3``, ``dpm_solver_pp2m_sde``, or any core
            ODE solver name (then the velocity-form PF-ODE is solved in ``t`` on the grid).
        steps: number of steps (the grid has ``steps + 1`` times); omit with a tensor grid.
        param: the model's parameterization (``velocity``, ``score``, ``eps``, ``x0``).
        grid: ``"lambda"`` (default), ``"t"``, ``"karras"`` (rho = 7) or a tensor of times.
        cond: keyword arguments passed to the model at every call (labels, guidance inputs).
        form: the semilinear form, ``"x0"`` (default; DPM-Solver++, UniPC) or ``"eps"``
            (default for ``dpm_solver2``/``dpm_solver3``, as DPM-Solver).
        t_span: ``(t_start, t_end)``; default from ``1e-3`` (``0`` where ``alpha_0 > 0``) to
            ``1 - 1e-3`` (lambda is infinite where ``alpha`` or ``beta`` vanishes).
        lower_final: the last this-many steps of a multistep solver run at order
            ``min(p, steps remaining)`` (docs/math.md §15.3): ``1`` makes the last step
            first order; values above ``p - 1`` change nothing more.
        eta, seed, brownian: the SDE sampler's eta (> 0), noise seed or Brownian path.
        options: further keyword arguments of the solver class (e.g. ``variant=``,
            ``warmup=``, ``corrector=``).

    Returns:
        the :class:`~sdeflow.Solution` with ``ts`` the grid and ``ys [steps + 1, n, d]``.
    """
    _check(path, model, param)
    check_state(x0, "x0")
    if not isinstance(solver, str):
        raise TypeError(f"solver: expected a solver name (str), got {type(solver).__name__}")
    ode_names = names(sde=False)
    if solver not in FEW_STEP and solver not in SDE_SOLVERS and solver not in ode_names:
        raise ValueError(f"solver: expected one of {FEW_STEP + SDE_SOLVERS} or a core ODE solver "
                         f"({', '.join(n for n in ode_names if n not in FEW_STEP)}), "
                         f"got {solver!r}")
    cls = get(solver)
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)
                              or steps < 1):
        raise ValueError(f"steps: expected a positive int, got {steps!r}")
    order = int(cls.caps.order or 1)
    if form is None:
        form = "eps" if solver in ("dpm_solver2", "dpm_solver3") else "x0"
    if form not in FORMS:
        raise ValueError(f"form: expected one of {FORMS}, got {form!r}")
    span = _span(path, t_span, grid)
    g = make_grid(path, grid, steps, span)
    if solver in FEW_STEP + SDE_SOLVERS and len(g) - 1 < order and solver not in (
            "dpm_solver2", "dpm_solver3"):
        raise ValueError(f"steps: {solver} is a multistep method of order {order}; it needs "
                         f"at least {order} steps, got {len(g) - 1}")
    _check_ends(path, param, form if solver in FEW_STEP + SDE_SOLVERS else "velocity", g)
    exponential = solver in FEW_STEP or solver in SDE_SOLVERS
    if exponential:
        _check_monotone_lambda(path, g[0], g[-1])
        for end, tv in (("start", g[0]), ("end", g[-1])):
            lv = float(lam(path, torch.tensor(tv, dtype=torch.float64)))
            if not math.isfinite(lv):
                raise ValueError(f"grid: lambda = log(alpha/beta) is infinite at the grid's "
                                 f"{end} t={tv:g} (alpha or beta is 0 there); stop short of it "
                                 f"(e.g. t={T_EPS:g} or 1-{T_EPS:g})")
    if solver in SDE_SOLVERS:
        problem: Any = semilinear_sde(path, model, param, eta, cond)
        slv = cls(lower_final=lower_final, grid=g, **options) if lower_final else cls(**options)
        return sf.solve(problem, x0, ts=g, solver=slv, steps=1, step_ts=g[1:-1], seed=seed,
                        brownian=brownian)
    if seed is not None or brownian is not None:
        raise ValueError("seed, brownian: the ODE samplers use no noise; drop them (they "
                         "apply to dpm_solver_pp2m_sde)")
    if exponential:
        problem = semilinear_problem(path, model, param, form, cond)
        kw = dict(options)
        if lower_final:
            kw.update(lower_final=lower_final, grid=g)
        slv = cls(**kw)
    else:
        if lower_final or options:
            raise ValueError(f"lower_final, options: only for the exponential integrators, not "
                             f"{solver!r}")
        kwd = dict(cond) if cond else {}
        problem = ProbabilityFlowODE(path, (lambda x, t: model(x, t, **kwd)) if kwd else model,
                                     param, t_eps=T_EPS)
        slv = cls()
    return sf.solve(problem, x0, ts=g, solver=slv, steps=1, step_ts=g[1:-1])


def _span(path: GaussianPath, t_span: Any, grid: Any) -> tuple[float, float]:
    if isinstance(grid, Tensor):
        return (0.0, 1.0)  # the grid itself is the span (checked in make_grid)
    if t_span is None:
        a0 = float(path.schedule(torch.tensor(0.0, dtype=torch.float64)).alpha)
        return (0.0 if a0 > 0 else T_EPS, 1.0 - T_EPS)
    if not (isinstance(t_span, (tuple, list)) and len(t_span) == 2):
        raise ValueError(f"t_span: expected (t_start, t_end), got {t_span!r}")
    a, b = (float(v) for v in t_span)
    if not (0.0 <= a <= 1.0 and 0.0 <= b <= 1.0) or a == b:
        raise ValueError(f"t_span: expected two distinct times in the path's span [0, 1], got "
                         f"({a}, {b})")
    return (a, b)


def _check_ends(path: GaussianPath, param: str, dst: str, g: list[float]) -> None:
    at0, at1 = path.singular_ends(param, dst)
    for end, bad, tv in (("t=0", at0, 0.0), ("t=1", at1, 1.0)):
        if bad and any(v == tv for v in (g[0], g[-1])):
            raise ValueError(f"grid: the model's {param!r} cannot be converted to {dst!r} at "
                             f"the end {end} of {path.schedule!r}; stop the grid short of "
                             f"{end}")


_ = expo  # the solver module registers the exponential integrators
