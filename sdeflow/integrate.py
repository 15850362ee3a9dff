"""THE time loop: every solve -- fixed or adaptive, ODE or SDE -- runs through :func:`integrate`.

One iteration (docs/math.md §11.1):

1. the stepper proposes ``h`` (a :class:`FixedStepper` walks its grid; an :class:`AdaptiveStepper`
   applies its :class:`~sdeflow.PIController` and lands on ``step_ts``/``jump_ts``/SDE outputs);
2. the noise source hands the step its Brownian increments (SDEs);
3. ``solver.step(terms, tt, t, h, x, state, noise) -> (x_new, err, dense, state)``;
4. the stepper judges the step: a fixed grid always accepts (the state is checked for NaN/inf
   once per block of steps, and a block that went non-finite is replayed with the same noise to
   find the exact step); an adaptive step reads one number, the error norm (one host sync);
5. an accepted step is saved (exactly at the step's end, or at interior output times through the
   solver's interpolant), handed to the hooks (events), and its state kept; a rejected step is
   retried from the same ``(x, state)``. An event monitor that can look back
   (:mod:`sdeflow.lookback`) instead checks stretches of steps at once; the step where
   something happened is re-run from its kept start with the hooks called.

After a time in ``jump_ts`` the solver restarts (``solver.init``): stages at the jump see its
left limit, the next step starts from the right limit. Failures (``max_steps``, ``dt_min``,
non-finite state) raise a :class:`~sdeflow.SolverError` or, with ``on_failure="return"``, come
back as ``Solution.status``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from . import hints
from .errors import MaxStepsError, NonFiniteError, SolverError, StepSizeError
from .interpolation import Interpolant
from .lookback import Lookback
from .recorder import Plan, Recorder
from .solution import Solution
from .solvers.base import Solver, StepResult, Terms
from .steppers import (
    BLOCK,
    AdaptiveStepper,
    FixedStepper,
    adaptive_stepper,
    landing_times,
    scalar_like,
    stage_times,
)

Tensor = torch.Tensor


class StepHook:
    """Observes accepted steps (events). ``accepted`` may return a replacement ``x_new``."""

    def accepted(self, t: float, t_new: float, x: Tensor, x_new: Tensor,
                 interp: Callable[[], Interpolant]) -> Tensor | None:
        return None

    def stop(self) -> bool:
        return False

    def finish(self, sol: Solution) -> None:
        """Write the hook's results into the solution."""


# ------------------------------------------------------------------------------------ loop
def integrate(terms: Terms, solver: Solver, x0: Tensor, plan: Plan, stepper: Any,
              noise: Any = None, counts: Callable[[], dict[str, int]] | None = None,
              hooks: Sequence[StepHook] = ()) -> Solution:
    """Run ``solver`` from ``(plan.t0, x0)`` to ``plan.t1`` under ``stepper``.

    Args:
        terms: the counted, checked fields (``terms.adaptive`` asks the solver for errors).
        solver: a solver instance (its ``caps`` already checked against the problem).
        x0: the initial state (any shape for ODEs, ``(..., d)`` for SDEs).
        plan: outputs, failure policy and landing times.
        stepper: a :class:`FixedStepper` or an :class:`AdaptiveStepper`.
        noise: a :class:`~sdeflow.noise.GridNoise` (fixed) or
            :class:`~sdeflow.noise.PathNoise` (adaptive), or ``None`` for ODEs.
        counts: returns the evaluation counters (merged into ``Solution.stats``).
        hooks: :class:`StepHook` objects (events).

    Returns:
        a :class:`~sdeflow.Solution`.
    """
    rec = Recorder(x0, plan)
    stats: dict[str, Any] = {"steps": 0, "accepted": 0, "rejected": 0}
    # optional solver hooks (implicit solvers): the tolerances of this solve (None: fixed
    # steps), extra counters for the stats, and the reason of a run of rejected steps
    begin = getattr(solver, "begin", None)
    if callable(begin):
        norm = getattr(stepper, "norm", None)
        begin(*((norm.rtol, norm.atol) if stepper.adaptive and norm is not None
                else (None, None)))
    solver_stats = getattr(solver, "stats", None)

    def finish(status: str, t: float, x: Tensor) -> Solution:
        stats["steps"] = stats["accepted"] + stats["rejected"]
        if counts is not None:
            stats.update(counts())
        if callable(solver_stats):
            stats.update(solver_stats())
        sol = rec.solution(status, t, x, stats)
        for hk in hooks:
            hk.finish(sol)
        return sol

    def make_interp(t: float, h: float, x: Tensor, res: StepResult) -> Callable[[], Interpolant]:
        return lambda: solver.interpolant(terms, t, h, x, res.x, res.dense)

    try:
        if stepper.adaptive:
            return _adaptive(terms, solver, x0, plan, stepper, noise, rec, stats, finish,
                             make_interp, hooks)
        return _fixed(terms, solver, x0, plan, stepper, noise, rec, stats, finish, make_interp,
                      hooks)
    except SolverError as e:
        # a solver's own failure (e.g. NewtonError) carries its status and the state reached
        status = getattr(e, "status", None)
        if plan.on_failure != "return" or status is None or e.t_reached is None:
            raise
        if not stepper.adaptive and e.t_reached in stepper.grid:
            stats["accepted"] = stepper.grid.index(e.t_reached)
        return finish(status, e.t_reached, getattr(e, "x", None))


def _fixed(terms: Terms, solver: Solver, x0: Tensor, plan: Plan, st: FixedStepper, noise: Any,
           rec: Recorder, stats: dict[str, Any], finish: Callable[..., Solution],
           make_interp: Callable[..., Callable[[], Interpolant]],
           hooks: Sequence[StepHook]) -> Solution:
    grid, hs, n = st.grid, st.hs, st.n
    x = x0
    state = solver.init(terms, grid[0], x0, hs[0])
    after_jump = False
    on_grid = set(grid)
    need_rec = plan.dense or (not plan.save_every and any(o not in on_grid for o in plan.outputs))
    need_interp = need_rec or bool(hooks)
    look = Lookback.make(hooks, x0, st.block)
    # the solver keeps its dense data only where something interpolates: the recorder, or
    # the hooks (with look-back only on the steps the hooks see, i.e. in hooked)
    terms.dense = need_rec if look is not None else need_interp
    # which steps end on something to save (no interpolation needed: a lookup per step)
    if need_rec or plan.save_every:
        save = [True] * (n + 1)
    else:
        outs = set(plan.outputs)
        save = [g in outs for g in grid]
    step = solver.step
    plain = not st.jumps and not hooks
    i = 0

    def hooked(k: int, x: Tensor, state: Any, after_jump: bool, tt: tuple[Tensor, ...],
               nz: Any) -> tuple[Tensor, Any, bool, bool]:
        """One step with the hooks called (events): ``(x, state, after_jump, stop)``."""
        nonlocal step
        t, t_new = grid[k], grid[k + 1]
        terms.dense = True
        res = step(terms, tt, t, hs[k], x, state, nz)
        terms.dense = need_interp if look is None else need_rec
        x_new = res.x
        interp = make_interp(t, hs[k], x, res)
        for hk in hooks:
            y = hk.accepted(t, t_new, x, x_new, interp)  # type: ignore[arg-type]
            if y is not None:
                x_new = y
        rec.accepted(t_new, x_new, interp)
        step = solver.step  # a hook may have changed it (events: once a path is frozen)
        x, state = x_new, res.state
        after_jump = t_new in st.jumps
        if after_jump:
            state = solver.init(terms, t_new, x, hs[k])
        return x, state, after_jump, any(hk.stop() for hk in hooks)

    def tt_of(k: int) -> tuple[Tensor, ...]:
        return st.times(k, after_jump) if st.jumps else tts[k - i]

    while i < n:
        j = min(n, i + st.block)
        nzs = noise.block(i, j) if noise is not None else None
        nzl = nzs if nzs is not None else [None] * (j - i)
        x_start, state_start, aj_start = x, state, after_jump
        cols = [col[i:j].unbind(0) for col in st.cols]
        tts = list(zip(*cols))
        if plain:  # the hot path: no hooks, no jumps; a step's result is a StepResult tuple
            for m in range(j - i):
                k = i + m
                res = step(terms, tts[m], grid[k], hs[k], x, state, nzl[m])
                if save[k + 1]:
                    rec.accepted(grid[k + 1], res[0],
                                 make_interp(grid[k], hs[k], x, res) if need_interp else None)
                x, state = res[0], res[3]
            k = j
        else:
            k = i
        # the hooks look back over stretches of steps (Lookback), or see every step
        while k < j:
            if look is None or look.hold:
                if look is not None:
                    look.hold -= 1
                x, state, after_jump, stop = hooked(k, x, state, after_jump, tt_of(k), nzl[k - i])
                k += 1
                if stop:
                    stats["accepted"] = k
                    return finish("success" if k == n else "event", grid[k], x)
                continue
            look.start(k)
            entries, xs, jumps = look.entries, look.xs, st.jumps
            for kk in range(k, min(j, k + look.size)):  # a stretch, the hooks not called
                entries.append((x, state, after_jump))
                res = step(terms, st.times(kk, after_jump) if jumps else tts[kk - i], grid[kk],
                           hs[kk], x, state, nzl[kk - i])
                if save[kk + 1]:
                    rec.accepted(grid[kk + 1], res[0],
                                 make_interp(grid[kk], hs[kk], x, res) if need_rec else None)
                x, state = res[0], res[3]
                if jumps:
                    after_jump = grid[kk + 1] in jumps
                    if after_jump:
                        state = solver.init(terms, grid[kk + 1], x, hs[kk])
                xs.append(x)
            k += len(xs)
            # a stretch that went non-finite is re-run step by step (then the check below)
            bad = k == j and not bool(torch.isfinite(x).all())
            first = 0 if bad else look.scan(st.tg[look.k0 + 1:k + 1])
            if first is None:
                continue
            k = look.k0 + first
            x, state, after_jump = look.rewind(first)
            rec.truncate(grid[k])
            for kk in range(k, j if bad else k + 1):
                x, state, after_jump, stop = hooked(kk, x, state, after_jump, tt_of(kk),
                                                    nzl[kk - i])
                k = kk + 1
                if stop:
                    stats["accepted"] = k
                    return finish("success" if k == n else "event", grid[k], x)
        if not bool(torch.isfinite(x).all()):
            k_bad = _locate_nonfinite(terms, solver, st, x_start, state_start, aj_start, i, j,
                                      nzs)
            stats["accepted"] = k_bad
            t_bad = grid[k_bad + 1]
            rec.truncate(grid[k_bad])
            if plan.on_failure == "return":
                x_last = x_start if k_bad == i else _replay(terms, solver, st, x_start,
                                                            state_start, aj_start, i, k_bad,
                                                            nzs)
                return finish("nonfinite", grid[k_bad], x_last)
            raise NonFiniteError(
                f"state became non-finite at t={t_bad:.6g} (in the step from "
                f"t={grid[k_bad]:.6g}, step {k_bad + 1} of {n})", t=t_bad,
                t_reached=grid[k_bad])
        i = j
    stats["accepted"] = n
    return finish("success", grid[-1], x)


def _replay(terms: Terms, solver: Solver, st: FixedStepper, x: Tensor, state: Any,
            after_jump: bool, i: int, j: int, nzs: Any) -> Tensor:
    with torch.no_grad():
        for k in range(i, j):
            res = solver.step(terms, st.times(k, after_jump), st.grid[k], st.hs[k], x, state,
                              nzs[k - i] if nzs is not None else None)
            x, state = res.x, res.state
            after_jump = st.grid[k + 1] in st.jumps
            if after_jump:
                state = solver.init(terms, st.grid[k + 1], x, st.hs[k])
    return x


def _locate_nonfinite(terms: Terms, solver: Solver, st: FixedStepper, x: Tensor, state: Any,
                      after_jump: bool, i: int, j: int, nzs: Any) -> int:
    """Replay steps ``i .. j-1`` checking every step; the index of the first bad one."""
    with torch.no_grad():
        for k in range(i, j):
            res = solver.step(terms, st.times(k, after_jump), st.grid[k], st.hs[k], x, state,
                              nzs[k - i] if nzs is not None else None)
            x, state = res.x, res.state
            if not bool(torch.isfinite(x).all()):
                return k
            after_jump = st.grid[k + 1] in st.jumps
            if after_jump:
                state = solver.init(terms, st.grid[k + 1], x, st.hs[k])
    raise NonFiniteError(
        f"state became non-finite between t={st.grid[i]:.6g} and t={st.grid[j]:.6g} (the "
        f"replay of these steps stayed finite: the problem's functions are not deterministic)",
        t=st.grid[j], t_reached=st.grid[i])


def _adaptive(terms: Terms, solver: Solver, x0: Tensor, plan: Plan, st: AdaptiveStepper,
              noise: Any, rec: Recorder, stats: dict[str, Any], finish: Callable[..., Solution],
              make_interp: Callable[..., Callable[[], Interpolant]],
              hooks: Sequence[StepHook]) -> Solution:
    t, x = plan.t0, x0
    c = tuple(solver.c)
    c_vec = torch.tensor(c, dtype=torch.float64).to(dtype=x0.dtype, device=x0.device)
    jumps = set(plan.jump_ts)
    norm = st.norm
    with torch.no_grad():
        ax = norm.scale(x0.detach())
    # two scale buffers used in turn and one for the tolerance: the norm allocates nothing
    blas = x0.dtype in (torch.float32, torch.float64) and x0.numel() > 0
    sbufs = [torch.empty_like(x0), torch.empty_like(x0)] if blas else None
    tolbuf = torch.empty_like(x0) if blas else None
    cur = 0
    state = solver.init(terms, t, x0, st.direction * st.h_abs)
    if state is None and solver.caps.fsal:
        # an FSAL solver's state is the slope u(t, x) at the step's start
        state = st.u0 if st.u0 is not None else terms.u(scalar_like(t, x0), x0)  # type: ignore[misc]
    after_jump = False
    accepted = rejected = 0
    # the hooks look back over stretches of accepted steps (ODEs with explicit solvers: a
    # step re-run from its start, with the stepper's state put back, is the same step)
    look = (Lookback.make(hooks, x0, BLOCK) if noise is None and not solver.caps.implicit
            and st.factor_hook is None else None)

    def rewind(first: int | None) -> bool:
        """Back to the start of the stretch's step ``first`` (re-run with the hooks)."""
        nonlocal t, x, ax, state, after_jump, accepted, rejected
        if first is None:
            look.start(0)  # type: ignore[union-attr]
            return False
        t, x, ax, state, after_jump, snap = look.rewind(first)  # type: ignore[union-attr]
        if ax is None:  # the scale of a state the loop did not change: made again, bitwise
            with torch.no_grad():
                ax = norm.rescale(x.detach(), None if sbufs is None else sbufs[cur ^ 1])
        stepper_state, accepted, rejected = snap
        st.restore(stepper_state)
        rec.truncate(t)
        look.hold = max(look.hold, 1)  # type: ignore[union-attr]
        return True

    while True:
        deferring = look is not None and not look.hold
        if accepted + rejected >= plan.max_steps:
            if deferring and rewind(look.scan()):  # type: ignore[union-attr]
                continue
            stats.update(accepted=accepted, rejected=rejected)
            return _fail(plan, rec, stats, finish, "max_steps", t, x, st, t)
        snap = (st.snapshot(), accepted, rejected) if deferring else None
        h, t_new, landed = st.propose(t)
        at_jump = landed and t_new in jumps
        tt = stage_times(c_vec, c, t, h, x0, t_new if at_jump else None, after_jump)
        nz = noise.take(t, h, t_new) if noise is not None else None
        res = solver.step(terms, tt, t, h, x, state, nz)
        with torch.no_grad():
            # the error estimate is the loop's to overwrite (StepResult.err)
            bufs = None if sbufs is None else (sbufs[cur], tolbuf)
            v, ax_new = norm.measure(res.err.detach(), ax, res.x.detach(), bufs)  # type: ignore[union-attr,arg-type]
        err = norm.value(v.item())
        if st.judge(err, h, landed):
            accepted += 1
            x_new = res.x
            interp = make_interp(t, h, x, res)
            if deferring:
                # a stretch's first step keeps a copy of its scale (its state may come from a
                # step the hooks changed); the others' scales are made again on a rewind
                entries = look.entries  # type: ignore[union-attr]
                entries.append((t, x, None if entries else ax.clone(), state, after_jump, snap))
                look.ts.append(t_new)  # type: ignore[union-attr]
                look.xs.append(x_new)  # type: ignore[union-attr]
            else:
                for hk in hooks:
                    y = hk.accepted(t, t_new, x, x_new, interp)
                    if y is not None:
                        x_new = y
                if look is not None:
                    look.hold -= 1
            rec.accepted(t_new, x_new, interp)
            t, x, ax, state = t_new, x_new, ax_new, res.state
            cur ^= 1
            after_jump = at_jump
            if at_jump:
                state = solver.init(terms, t, x, h)
            if noise is not None:
                noise.release(t, st.direction)
            if deferring and (st.done() or len(look.xs) >= look.size) and \
                    rewind(look.scan()):  # type: ignore[union-attr]
                continue
            if st.done() or (not deferring and hooks and any(hk.stop() for hk in hooks)):
                stats.update(accepted=accepted, rejected=rejected)
                return finish("success" if st.done() else "event", t, x)
        else:
            rejected += 1
        if st.too_small():
            if deferring and rewind(look.scan()):  # type: ignore[union-attr]
                continue
            stats.update(accepted=accepted, rejected=rejected)
            failure = getattr(solver, "failure", None)
            exc = failure() if callable(failure) and st.last_bad else None
            if exc is not None:
                raise exc
            return _fail(plan, rec, stats, finish, "nonfinite" if st.last_bad else "dt_min", t,
                         x, st, t + h)
        st.clip()


def _fail(plan: Plan, rec: Recorder, stats: dict[str, Any], finish: Callable[..., Solution],
          status: str, t: float, x: Tensor, st: AdaptiveStepper, t_bad: float) -> Solution:
    where = (f"the solve reached t={t:.6g} of [{plan.t0:.6g}, {plan.t1:.6g}] after "
             f"{stats['accepted']} accepted and {stats['rejected']} rejected steps")
    if plan.on_failure == "return":
        return finish(status, t, x)
    hint = _stiffness_hint(stats)
    if status == "max_steps":
        raise MaxStepsError(
            f"max_steps={plan.max_steps} exceeded: {where} (last step size {st.h_abs:.3g}); "
            f"raise max_steps, loosen rtol/atol, or pass on_failure='return' for the partial "
            f"solution{hint}", t_reached=t)
    if status == "nonfinite":
        raise NonFiniteError(
            f"non-finite values (NaN/inf) in every attempted step from t={t:.6g} down to the "
            f"step size dt_min={st.dt_min:.3g}: {where}", t=t_bad, t_reached=t)
    raise StepSizeError(
        f"step size {st.h_abs:.3g} fell below dt_min={st.dt_min:.3g} at t={t:.6g} (the time "
        f"reached); {where}. The problem may be stiff or singular there{hint}", t_reached=t)


def _stiffness_hint(stats: dict[str, Any]) -> str:
    """A suggestion (e.g. an implicit solver) when the failure looks like stiffness."""
    return hints.hint(stats)


__all__ = ["integrate", "Plan", "StepHook", "FixedStepper", "AdaptiveStepper", "Recorder",
           "adaptive_stepper", "landing_times"]
