"""``solve()``: turns its arguments into (terms, solver, stepper, plan, noise) and runs the loop.

Every argument is checked before any work is done (:mod:`sdeflow._checks`); the time loop itself
is :func:`sdeflow.integrate.integrate`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

from . import _checks as ck
from .controllers import ConstantController, PIController
from .integrate import FixedStepper, Plan, StepHook, adaptive_stepper, integrate, landing_times
from .noise import GridNoise, PathNoise
from .problems import ODE, SDE
from .solution import Solution
from .solvers.adaptive_sde import StepDoubling
from .solvers.base import Solver
from .solvers.registry import get, names, resolve

Tensor = torch.Tensor

DEFAULT_RTOL = 1e-3
DEFAULT_ATOL = 1e-6
DEFAULT_MAX_STEPS = 100_000

#: extra keyword arguments that modules beside the loop handle (events, adjoints); each maps
#: to a callable ``(solve_kwargs) -> Solution`` registered by that module.
EXTENSIONS: dict[str, Any] = {}


def solve(
    problem: ODE | SDE | Any,
    x0: Tensor,
    t_span: Sequence[float] | Tensor | None = None,
    *,
    ts: Sequence[float] | Tensor | None = None,
    solver: str | Solver | type[Solver] | None = None,
    steps: int | None = None,
    dt: float | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    controller: PIController | ConstantController | None = None,
    seed: int | None = None,
    brownian: Any = None,
    save_all: bool = False,
    dense: bool = False,
    step_ts: Sequence[float] | Tensor | None = None,
    jump_ts: Sequence[float] | Tensor | None = None,
    max_steps: int | None = None,
    dt0: float | None = None,
    on_failure: str = "raise",
    **extra: Any,
) -> Solution:
    """Solve an ODE or SDE from ``x0`` (docs/solvers.md).

    Args:
        problem: an :class:`~sdeflow.ODE` or :class:`~sdeflow.SDE`, or a plain callable
            ``f(t, x)`` (treated as an ODE).
        x0: initial state; any shape for an ODE, ``(..., d)`` for an SDE. Its dtype and device
            are kept throughout.
        t_span: ``(t_start, t_end)``; saves both ends (every step with ``save_all=True``).
        ts: ``[T]`` strictly monotone output times (instead of ``t_span``); the solve runs from
            ``ts[0]`` to ``ts[-1]`` and saves at each. ODE solves save there through the
            solver's interpolant (``step_ts=ts`` forces steps onto them); SDE solves step onto
            them. Time may run backwards.
        solver: a name (``sdeflow.solvers.names()``), a solver class or instance. Default:
            ``rk4`` (fixed) / ``dopri5`` (adaptive) for ODEs; ``euler_maruyama`` (Ito) or
            ``stochastic_heun`` (Stratonovich) for SDEs, adaptive ``adaptive_milstein``,
            ``adaptive_em`` (additive and general noise) or ``adaptive_stochastic_heun``.
        steps, dt: fixed steps (sugar for ``controller=ConstantController(steps=/dt=)``).
        rtol, atol: tolerances (sugar for ``controller=PIController(rtol=, atol=)``).
        controller: a :class:`~sdeflow.ConstantController` or :class:`~sdeflow.PIController`.
        seed: seed of the Brownian increments (SDEs); same seed, same result.
        brownian: a :class:`~sdeflow.BrownianPath` or :class:`~sdeflow.BrownianTree` driving the
            SDE (shares one path across solves). Conflicts with ``seed``.
        save_all: with ``t_span``, save every step.
        dense: keep every step's interpolant for ``Solution.evaluate``.
        step_ts: times the steps land on; jump_ts: discontinuities of the fields in time
            (stepped onto; stages at a jump see its left limit, the next step restarts from
            the right limit).
        max_steps: attempted adaptive steps allowed (default 100,000).
        dt0: the first adaptive step magnitude (default: Hairer's heuristic for ODEs, 1% of
            the span for SDEs).
        on_failure: ``"raise"`` (default) or ``"return"`` (the partial solution with
            ``status`` ``"max_steps"``, ``"dt_min"`` or ``"nonfinite"``).

    Returns:
        a :class:`~sdeflow.Solution` with ``ts [T]``, ``ys [T, *x0.shape]`` and ``stats``
        (``nfe`` counted at every field call; SDEs also ``nfe_drift``, ``nfe_diffusion``).

    Raises:
        ValueError, TypeError: bad input, naming the argument, before any work.
        SolverError: a failure during integration (see ``on_failure``).
    """
    for key in extra:
        if key not in EXTENSIONS:
            raise ValueError(f"{key}: unknown argument of solve; see help(sdeflow.solve)")
    args = dict(problem=problem, x0=x0, t_span=t_span, ts=ts, solver=solver, steps=steps,
                dt=dt, rtol=rtol, atol=atol, controller=controller, seed=seed,
                brownian=brownian, save_all=save_all, dense=dense, step_ts=step_ts,
                jump_ts=jump_ts, max_steps=max_steps, dt0=dt0, on_failure=on_failure)
    active = [k for k, v in extra.items() if v is not None and not (
        isinstance(v, str) and v == EXTENSIONS[k].default)]
    if active:
        return EXTENSIONS[active[0]](args, extra)
    return run(**args)


def run(problem: Any, x0: Tensor, t_span: Any, ts: Any, solver: Any, steps: Any, dt: Any,
        rtol: Any, atol: Any, controller: Any, seed: Any, brownian: Any, save_all: Any,
        dense: Any, step_ts: Any, jump_ts: Any, max_steps: Any, dt0: Any, on_failure: Any,
        hooks: Sequence[StepHook] = (), noise_block: int | None = None) -> Solution:
    """:func:`solve` after its extensions: check everything, build the pieces, integrate.

    ``noise_block``: the most Brownian increments (elements) a fixed grid draws at once
    (default :data:`sdeflow.noise.NOISE_BLOCK_ELEMS`; the adjoints' forward solves ask for
    less, to bound memory; the increments do not depend on it)."""
    problem = ck.problem(problem, t_span)
    is_sde = isinstance(problem, SDE)
    ck.state(x0, is_sde)
    t0, t1, outputs = ck.times(t_span, ts, x0)
    ctrl, adaptive = _controller(steps, dt, rtol, atol, controller, solver, is_sde)
    plan = Plan(t0, t1, outputs, save_every=ck.flag(save_all, "save_all") and ts is None,
                dense=ck.flag(dense, "dense"), on_failure=ck.choice(
                    on_failure, "on_failure", ("raise", "return")),
                max_steps=ck.positive_int(max_steps, "max_steps", DEFAULT_MAX_STEPS),
                step_ts=ck.time_list(step_ts, "step_ts"),
                jump_ts=ck.time_list(jump_ts, "jump_ts"),
                dt0=ck.positive(dt0, "dt0"))
    plan.snap = ck.snap(t0, t1, ts)
    plan.has_ts = ts is not None
    if save_all and ts is not None:
        raise ValueError("save_all: only with t_span (ts already says what to save)")
    slv = _pick_solver(problem, solver, adaptive)
    seed = ck.seed(seed)
    if not is_sde:
        if brownian is not None:
            raise ValueError("brownian: an ODE has no Brownian motion; drop the argument")
        if seed is not None:
            raise ValueError("seed: an ODE has no noise; drop the argument")
    elif seed is not None and brownian is not None:
        raise ValueError("seed, brownian: pass one of them (a Brownian object carries its "
                         "own seed)")
    terms, counts, m = ck.terms(problem, x0, t0, brownian, adaptive)
    if brownian is not None:
        ck.check_span(brownian, problem, x0, t0, t1)
    if adaptive:
        rt, at = _tolerances(rtol, atol, ctrl, x0.dtype)
        if is_sde and not slv.caps.adaptive and slv.noise_points == (0.0, 1.0):
            slv = StepDoubling(slv)  # any fixed-step SDE scheme adapts by step doubling
        if not slv.caps.adaptive:
            raise ValueError(
                f"solver: {slv.name!r} has no error estimate, so it cannot run with "
                f"tolerances; adaptive solvers: "
                f"{', '.join(n for n in names(sde=is_sde) if get(n).caps.adaptive)} "
                f"(or pass steps/dt for fixed steps)")
        extra_land = [*plan.step_ts, *plan.jump_ts] + (outputs if is_sde else [])
        stepper = adaptive_stepper(slv, terms, x0, plan, ctrl, rt, at,
                                   landing_times(t0, t1, extra_land), is_sde)
        noise = None
        if is_sde:
            bshape = problem.brownian_shape(x0.shape, m)
            lo, hi = min(t0, t1), max(t0, t1)
            owned = brownian is None
            bm = brownian if not owned else _owned_path(bshape, lo, hi, seed, x0)
            noise = PathNoise(bm, slv.caps.space_time, slv.noise_points, owned=owned)
        return integrate(terms, slv, x0, plan, stepper, noise, counts, hooks)
    grid_outputs = ([*outputs] if is_sde else [t0, t1]) + plan.step_ts + plan.jump_ts
    grid_outputs = _merge(grid_outputs, t0, t1)
    grid, _ = ctrl.grid(t0, t1, grid_outputs, plan.snap)
    ck.grid_resolution(grid, x0, "steps" if steps is not None else "dt")
    noise = None
    if is_sde:
        bshape = problem.brownian_shape(x0.shape, m)
        noise = GridNoise(grid, bshape, slv.caps.space_time, slv.noise_points, x0, seed,
                          brownian, block_elems=noise_block)
    stepper = FixedStepper(grid, slv, x0, set(plan.jump_ts), noise)
    return integrate(terms, slv, x0, plan, stepper, noise, counts, hooks)


def _merge(times: list[float], t0: float, t1: float) -> list[float]:
    d = 1.0 if t1 > t0 else -1.0
    inside = {t for t in times if d * (t - t0) >= 0 and d * (t1 - t) >= 0}
    return sorted(inside, key=lambda t: d * t)


def _owned_path(shape: tuple[int, ...], lo: float, hi: float, seed: int | None,
                like: Tensor) -> Any:
    from .brownian import BrownianPath  # noqa: PLC0415  (only adaptive SDE solves need one)

    return BrownianPath(shape, t0=lo, t1=hi, seed=seed, dtype=like.dtype, device=like.device)


def _default_controller(is_sde: bool) -> PIController:
    """I-control for ODEs (as scipy, torchdiffeq, diffrax); PI gains 0.7/0.4 for SDEs, whose
    step-doubling error estimates are noisy (fewer rejected attempts: docs/adaptive.md)."""
    return PIController(beta1=0.7, beta2=0.4) if is_sde else PIController()


def _controller(steps: Any, dt: Any, rtol: Any, atol: Any, controller: Any, solver: Any,
                is_sde: bool = False) -> tuple[Any, bool]:
    """The controller and whether the solve is adaptive (step sugar checked here)."""
    tol = rtol is not None or atol is not None
    if steps is not None and dt is not None:
        raise ValueError("steps, dt: conflicting step arguments; pass one of them")
    if steps is not None and tol:
        raise ValueError("steps, rtol/atol: conflicting step arguments; fixed steps or "
                         "tolerances, not both")
    if dt is not None and tol:
        raise ValueError("dt, rtol/atol: conflicting step arguments; for an adaptive solve "
                         "give the initial step as dt0")
    if controller is not None:
        if not isinstance(controller, (PIController, ConstantController)):
            raise ValueError(f"controller: expected an sdeflow.PIController or "
                            f"ConstantController, got {type(controller).__name__}")
        if isinstance(controller, ConstantController):
            if steps is not None or dt is not None or tol:
                raise ValueError("controller, steps/dt/rtol/atol: a ConstantController "
                                 "already fixes the steps; pass one of them")
            return controller, False
        if steps is not None or dt is not None:
            raise ValueError("controller, steps/dt: a PIController adapts the steps; drop "
                             "steps/dt (give a first step as dt0)")
        return controller, True
    if steps is not None or dt is not None:
        return ConstantController(steps=steps, dt=dt), False
    if tol:
        for name, v in (("rtol", rtol), ("atol", atol)):
            if v is not None:
                ck.tolerance(v, name)
        return _default_controller(is_sde), True
    spec = solver
    cls = get(spec) if isinstance(spec, str) else (
        spec if isinstance(spec, type) else type(spec) if spec is not None else None)
    if cls is not None and isinstance(cls, type) and issubclass(cls, Solver) and \
            cls.caps.adaptive:
        return _default_controller(is_sde), True
    if isinstance(spec, Solver) and spec.caps.adaptive:
        return _default_controller(is_sde), True
    raise ValueError("steps, dt: expected a step argument (steps or dt), or rtol/atol for an "
                     "adaptive solve")


def _tolerances(rtol: Any, atol: Any, ctrl: PIController, dtype: torch.dtype
                ) -> tuple[float, float]:
    for name, v in (("rtol", rtol), ("atol", atol)):
        cv = getattr(ctrl, name)
        if v is not None and cv is not None and float(v) != float(cv):
            raise ValueError(f"{name}: given to solve ({v}) and to the controller ({cv}); "
                             f"pass it once")
    rt = float(rtol if rtol is not None else ctrl.rtol if ctrl.rtol is not None else DEFAULT_RTOL)
    at = float(atol if atol is not None else ctrl.atol if ctrl.atol is not None else DEFAULT_ATOL)
    ck.tolerance(rt, "rtol")
    ck.tolerance(at, "atol")
    if rt == 0.0 and at == 0.0:
        raise ValueError("rtol, atol: both are 0; at least one tolerance must be positive")
    eps = torch.finfo(dtype).eps
    if 0.0 < rt < eps:
        warnings.warn(f"rtol={rt:g} is below what {dtype} resolves (eps={eps:.2g}); expect "
                      f"tiny steps or a StepSizeError", RuntimeWarning, stacklevel=4)
    return rt, at


def _pick_solver(problem: ODE | SDE, spec: Any, adaptive: bool) -> Solver:
    if spec is None:
        if isinstance(problem, ODE):
            spec = "dopri5" if adaptive else "rk4"
        elif adaptive:
            spec = ("adaptive_stochastic_heun" if problem.kind == "stratonovich"
                    and problem.noise != "additive" else
                    "adaptive_em" if problem.noise in ("general", "additive")
                    else "adaptive_milstein")
        else:
            spec = "euler_maruyama" if problem.kind == "ito" or problem.noise == "additive" \
                else "stochastic_heun"
    slv = resolve(spec)
    if isinstance(problem, ODE):
        if slv.caps.sde:
            raise ValueError(f"solver: {slv.name!r} is an SDE solver but the problem is an ODE; "
                             f"ODE solvers: {', '.join(names(sde=False))}")
    else:
        if not slv.caps.sde:
            raise ValueError(f"solver: {slv.name!r} is an ODE solver but the problem is an SDE; "
                             f"SDE solvers: {', '.join(names(sde=True))}")
        slv = slv.for_kind(problem.kind)
        if not adaptive and isinstance(slv, StepDoubling):
            slv = slv.base  # with fixed steps a step-doubling scheme is its base scheme
        if not slv.caps.fits(problem.noise, problem.kind):
            fit = [n for n in names(sde=True)
                   if get(n).caps.fits(problem.noise, problem.kind)
                   or get(n)().for_kind(problem.kind).caps.fits(problem.noise, problem.kind)]
            raise ValueError(
                f"solver: {slv.name!r} supports noise {slv.caps.noise_types} and kinds "
                f"{slv.caps.kinds}, but the problem has noise={problem.noise!r}, "
                f"kind={problem.kind!r}; solvers that fit: {', '.join(fit) or 'none'}")
    slv.check(problem)
    return slv


__all__ = ["solve", "run", "DEFAULT_RTOL", "DEFAULT_ATOL", "DEFAULT_MAX_STEPS", "EXTENSIONS"]
