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

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from . import hints
from .controllers import ErrorNorm, PIController, initial_step
from .errors import MaxStepsError, NonFiniteError, SolverError, StepSizeError
from .interpolation import DenseSolution, Interpolant
from .lookback import Lookback
from .solution import Solution
from .solvers.base import Solver, StepResult, Terms

Tensor = torch.Tensor

BLOCK = 256  # fixed steps between two finiteness checks
LAND = 1.001  # an adaptive step within this factor of the next landing time stretches onto it
SDE_DT0_FRACTION = 0.01  # default first adaptive SDE step: this fraction of the span


@dataclass
class Plan:
    """What to save and how to stop (built by ``solve``).

    Attributes:
        t0, t1: the span (``t1 < t0`` runs backwards).
        outputs: output times in the direction of integration (``outputs[0] == t0``).
        save_every: save every accepted step (``save_all`` with ``t_span``).
        dense: keep every step's interpolant for ``Solution.evaluate``.
        on_failure: ``"raise"`` or ``"return"``.
        max_steps: attempted steps allowed (adaptive).
        step_ts, jump_ts: times the steps land on (jumps also restart the solver).
        snap: relative distance within which an output time counts as a step's end.
    """

    t0: float
    t1: float
    outputs: list[float]
    save_every: bool = False
    dense: bool = False
    on_failure: str = "raise"
    max_steps: int = 100_000
    step_ts: list[float] = field(default_factory=list)
    jump_ts: list[float] = field(default_factory=list)
    snap: float = 1e-10
    dt0: float | None = None
    has_ts: bool = False


class StepHook:
    """Observes accepted steps (events). ``accepted`` may return a replacement ``x_new``."""

    def accepted(self, t: float, t_new: float, x: Tensor, x_new: Tensor,
                 interp: Callable[[], Interpolant]) -> Tensor | None:
        return None

    def stop(self) -> bool:
        return False

    def finish(self, sol: Solution) -> None:
        """Write the hook's results into the solution."""


# ------------------------------------------------------------------------------- recording
class Recorder:
    """Saved outputs and dense steps of one solve."""

    def __init__(self, x0: Tensor, plan: Plan) -> None:
        self.plan = plan
        self.direction = 1.0 if plan.t1 > plan.t0 else -1.0
        self.tol = plan.snap * abs(plan.t1 - plan.t0)
        self.saved_t: list[float] = [plan.t0] * (1 if plan.save_every else
                                                 _count_equal(plan.outputs, plan.t0, self.tol))
        self.saved: list[Tensor] = [x0] * len(self.saved_t)
        self.oi = len(self.saved_t)
        self.steps: list[Interpolant] = []
        self.x0 = x0

    def wants_interior(self, t_new: float) -> bool:
        """Whether an output time lies strictly inside the step ending at ``t_new``."""
        if self.plan.dense:
            return True
        outs = self.plan.outputs
        return (not self.plan.save_every and self.oi < len(outs)
                and self.direction * (outs[self.oi] - t_new) < -self.tol)

    def accepted(self, t_new: float, x_new: Tensor,
                 interp: Callable[[], Interpolant] | None) -> None:
        st: Interpolant | None = None
        if self.plan.dense:
            st = interp()  # type: ignore[misc]
            self.steps.append(st)
        if self.plan.save_every:
            self.saved_t.append(t_new)
            self.saved.append(x_new)
            return
        outs, d, tol = self.plan.outputs, self.direction, self.tol
        while self.oi < len(outs) and d * (outs[self.oi] - t_new) <= tol:
            to = outs[self.oi]
            if abs(to - t_new) <= tol:
                y = x_new
            else:
                st = st or interp()  # type: ignore[misc]
                y = st.at(to)
            self.saved_t.append(to)
            self.saved.append(y)
            self.oi += 1

    def truncate(self, t_reached: float) -> None:
        """Drop outputs saved beyond ``t_reached``, and the dense steps from it on (a
        replayed non-finite block, a stretch re-run for the hooks)."""
        d = self.direction
        while self.saved_t and d * (self.saved_t[-1] - t_reached) > self.tol:
            self.saved_t.pop()
            self.saved.pop()
        while self.steps and d * (self.steps[-1].t - t_reached) >= 0:
            self.steps.pop()
        self.oi = sum(1 for t in self.plan.outputs if d * (t - t_reached) <= self.tol)

    def solution(self, status: str, t_reached: float, x: Tensor, stats: dict[str, Any]
                 ) -> Solution:
        ts, ys = list(self.saved_t), list(self.saved)
        if status != "success" and not self.plan.has_ts and (not ts or ts[-1] != t_reached):
            ts.append(t_reached)
            ys.append(x)
        t_out = torch.tensor(ts, dtype=torch.float64).to(dtype=x.dtype, device=x.device)
        interp = (DenseSolution(self.steps, self.plan.t0, t_reached, self.x0, self.direction)
                  if self.plan.dense else None)
        return Solution(ts=t_out, ys=torch.stack(ys), stats=stats, status=status,
                        t_reached=t_reached, _interp=interp)


def _count_equal(vals: Sequence[float], t: float, tol: float) -> int:
    n = 0
    while n < len(vals) and abs(vals[n] - t) <= tol:
        n += 1
    return n


def _full(v: float, like: Tensor) -> Tensor:
    """A 0-dim tensor on ``like``'s device and dtype, with no host-to-device copy."""
    return torch.full((), v, dtype=like.dtype, device=like.device)


def _side(t: float, toward: float, like: Tensor) -> Tensor:
    """The time next to ``t`` (in ``like``'s dtype) on the side of ``toward``."""
    return torch.nextafter(_full(t, like), _full(toward, like))


def _stage_times(c_vec: Tensor, c: Sequence[float], t: float, h: float, like: Tensor,
                 jump_end: float | None, after_jump: bool) -> tuple[Tensor, ...]:
    """``t + c_j h``; at a jump ending the step the ``c = 1`` stages see its left limit, and
    after a jump the ``c = 0`` stages its right limit."""
    tt = (c_vec * h).add_(t).unbind(0)
    if jump_end is not None and 1.0 in c:
        left = _side(jump_end, t, like)
        tt = tuple(left if cj == 1.0 else v for cj, v in zip(c, tt))
    if after_jump and 0.0 in c:
        right = _side(t, t + h, like)
        tt = tuple(right if cj == 0.0 else v for cj, v in zip(c, tt))
    return tt


# -------------------------------------------------------------------------------- steppers
class FixedStepper:
    """Walks a precomputed grid; never syncs with the host except once per block of steps."""

    adaptive = False

    def __init__(self, grid: list[float], solver: Solver, like: Tensor, jumps: set[float],
                 noise: Any) -> None:
        self.grid, self.n = grid, len(grid) - 1
        self.hs = [b - a for a, b in zip(grid[:-1], grid[1:])]
        g64 = torch.tensor(grid, dtype=torch.float64)
        tg = g64.to(like.dtype).to(like.device)
        cols = []
        for c in solver.c:
            if c == 0.0:
                cols.append(tg[:-1])
            elif c == 1.0:
                cols.append(tg[1:])
            else:
                cols.append((g64[:-1] + c * (g64[1:] - g64[:-1])).to(like.dtype).to(like.device))
        self.cols = cols
        self.one = len(cols) == 1
        self.c = tuple(solver.c)
        self.jumps = jumps
        self.like = like
        self.noise = noise
        self.block = BLOCK if noise is None else max(1, min(BLOCK, noise.block_steps))

    def times(self, k: int, after_jump: bool) -> tuple[Tensor, ...]:
        if self.one and not after_jump and not self.jumps:
            return (self.cols[0][k],)
        tt = tuple(col[k] for col in self.cols)
        if self.jumps and (self.grid[k + 1] in self.jumps or after_jump):
            c_vec = torch.tensor(self.c, dtype=torch.float64).to(self.like)
            end = self.grid[k + 1] if self.grid[k + 1] in self.jumps else None
            tt = _stage_times(c_vec, self.c, self.grid[k], self.hs[k], self.like, end,
                              after_jump)
        return tt


class AdaptiveStepper:
    """The PI controller's proposals, landing on the required times (docs/math.md §5.2)."""

    adaptive = True

    def __init__(self, ctrl: PIController, q: float, norm: ErrorNorm, t0: float, t1: float,
                 landing: list[float], h0: float, dt_min: float, dt_max: float) -> None:
        self.ctrl, self.q, self.norm = ctrl, q, norm
        self.t0, self.t1 = t0, t1
        self.direction = 1.0 if t1 > t0 else -1.0
        self.landing, self.li = landing, 0
        # the smallest step: the controller's dt_min, and at least round-off relative to the
        # current time (1e-14 |t|; 1e-22 |span| near t = 0) -- relative to |t|, not the span,
        # so that a long solve (Robertson to 1e11) can still resolve its start
        self.span = abs(t1 - t0)
        self.t_cur = t0
        self._dt_min = dt_min
        self.h_abs = min(max(h0, self.dt_min), dt_max)
        self.dt_max = dt_max
        self.errs = [1e-4, 1e-4]
        self.after_reject = False
        self.last_bad = False
        self.u0: Tensor | None = None  # u(t0, x0), when the initial-step heuristic made it
        # optional solver hook ``step_factor(ctrl, q, err, h, accepted, after_reject)``: the
        # step-size factor in place of the controller's (None: the controller's); e.g. radau's
        # predictive (Gustafsson) controller
        self.factor_hook: Callable[..., float | None] | None = None

    @property
    def dt_min(self) -> float:
        return max(self._dt_min, 1e-14 * max(abs(self.t_cur), 1e-8 * self.span))

    def propose(self, t: float) -> tuple[float, float, bool]:
        self.t_cur = t
        target = self.landing[self.li]
        rem = target - t
        if abs(rem) <= self.h_abs * LAND:
            return rem, target, True
        h = self.direction * self.h_abs
        return h, t + h, False

    def judge(self, err: float, h: float, landed: bool) -> bool:
        """Accept or reject a step with error norm ``err``; updates the next proposal."""
        ctrl = self.ctrl
        hook = self.factor_hook
        own = (hook(ctrl, self.q, err, abs(h), err <= 1.0, self.after_reject)
               if hook is not None else None)
        if err <= 1.0:
            fac = own if own is not None else ctrl.accept_factor(
                err, self.errs[0], self.q, self.after_reject, self.errs[1])
            self.errs = [max(err, 1e-4), self.errs[0]]
            self.after_reject = False
            # a step cut short to land on a time says little about the next one: keep the
            # proposal it was cut from (shrunk if the short step's error asks for it)
            self.h_abs = (max(abs(h) * fac, self.h_abs * min(fac, 1.0)) if landed
                          else abs(h) * fac)
            self.last_bad = False
            if landed:
                self.li += 1
            return True
        self.last_bad = not math.isfinite(err)
        self.after_reject = True
        self.h_abs = abs(h) * (own if own is not None else ctrl.reject_factor(err, self.q))
        return False

    def snapshot(self) -> tuple[Any, ...]:
        """What :meth:`propose` and :meth:`judge` read and change (for a re-run step)."""
        return self.h_abs, self.errs, self.after_reject, self.last_bad, self.li, self.t_cur

    def restore(self, snap: tuple[Any, ...]) -> None:
        self.h_abs, self.errs, self.after_reject, self.last_bad, self.li, self.t_cur = snap

    def too_small(self) -> bool:
        return self.h_abs < self.dt_min

    def clip(self) -> None:
        self.h_abs = min(self.h_abs, self.dt_max)

    def done(self) -> bool:
        return self.li >= len(self.landing)


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
    terms.dense = need_interp
    # which steps end on something to save (no interpolation needed: a lookup per step)
    if need_rec or plan.save_every:
        save = [True] * (n + 1)
    else:
        outs = set(plan.outputs)
        save = [g in outs for g in grid]
    step = solver.step
    plain = not st.jumps and not hooks
    look = Lookback.make(hooks, x0, st.block)
    i = 0

    def hooked(k: int, x: Tensor, state: Any, after_jump: bool, tt: tuple[Tensor, ...],
               nz: Any) -> tuple[Tensor, Any, bool, bool]:
        """One step with the hooks called (events): ``(x, state, after_jump, stop)``."""
        nonlocal step
        t, t_new = grid[k], grid[k + 1]
        res = step(terms, tt, t, hs[k], x, state, nz)
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
            first = 0 if bad else look.scan(grid[look.k0 + 1:k + 1])
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
    # scale buffers used in turn (two) and one for the tolerance: the norm allocates nothing
    blas = x0.dtype in (torch.float32, torch.float64) and x0.numel() > 0
    sbufs = [torch.empty_like(x0), torch.empty_like(x0)] if blas else None
    tolbuf = torch.empty_like(x0) if blas else None
    cur = 0
    state = solver.init(terms, t, x0, st.direction * st.h_abs)
    if state is None and solver.caps.fsal:
        # an FSAL solver's state is the slope u(t, x) at the step's start
        state = st.u0 if st.u0 is not None else terms.u(_full(t, x0), x0)  # type: ignore[misc]
    after_jump = False
    accepted = rejected = 0
    # the hooks look back over stretches of accepted steps (ODEs with explicit solvers: a
    # step re-run from its start, with the stepper's state put back, is the same step); the
    # stretch keeps its steps' scales, so they take turns in size + 2 buffers, not two
    look = (Lookback.make(hooks, x0, BLOCK) if noise is None and not solver.caps.implicit
            and st.factor_hook is None else None)
    if look is not None and blas:
        sbufs = list(torch.empty((look.size + 2, *x0.shape), dtype=x0.dtype,
                                 device=x0.device).unbind(0))
    nbuf = len(sbufs) if sbufs is not None else 1

    def rewind(first: int | None) -> bool:
        """Back to the start of the stretch's step ``first`` (re-run with the hooks)."""
        nonlocal t, x, ax, state, after_jump, accepted, rejected
        if first is None:
            look.start(0)  # type: ignore[union-attr]
            return False
        t, x, ax, state, after_jump, snap = look.rewind(first)  # type: ignore[union-attr]
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
        tt = _stage_times(c_vec, c, t, h, x0, t_new if at_jump else None, after_jump)
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
                look.entries.append((t, x, ax, state, after_jump, snap))  # type: ignore[union-attr]
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
            cur = cur + 1 if cur + 1 < nbuf else 0
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


def adaptive_stepper(solver: Solver, terms: Terms, x0: Tensor, plan: Plan, ctrl: PIController,
                     rtol: float, atol: float, landing: list[float], sde: bool) -> AdaptiveStepper:
    """An :class:`AdaptiveStepper` with ``q``, limits and the initial step of this solve."""
    t0, t1 = plan.t0, plan.t1
    q = solver.controller_order(terms.noise)
    span = abs(t1 - t0)
    dt_min = ctrl.dt_min if ctrl.dt_min is not None else 0.0
    dt_max = ctrl.dt_max if ctrl.dt_max is not None else span
    norm = ErrorNorm(x0, rtol, atol, ctrl.norm, sde=sde)
    direction = 1.0 if t1 > t0 else -1.0
    u0 = None
    if plan.dt0 is not None:
        h0 = plan.dt0
    elif sde:
        h0 = SDE_DT0_FRACTION * span
    else:
        u = terms.u
        u0 = u(_full(t0, x0), x0)  # type: ignore[misc]
        with torch.no_grad():
            h0 = initial_step(u, t0, x0.detach(), u0.detach(), direction, q, rtol, atol,  # type: ignore[arg-type]
                              norm.of)
    st = AdaptiveStepper(ctrl, q, norm, t0, t1, landing, h0, dt_min, dt_max)
    st.u0 = u0
    hook = getattr(solver, "step_factor", None)
    st.factor_hook = hook if callable(hook) else None
    return st


def landing_times(t0: float, t1: float, extra: Sequence[float]) -> list[float]:
    """Times the steps must land on, strictly after ``t0`` up to ``t1``, in order."""
    d = 1.0 if t1 > t0 else -1.0
    inside = {t for t in extra if d * (t - t0) > 0 and d * (t1 - t) > 0}
    return sorted(inside, key=lambda t: d * t) + [t1]


__all__ = ["integrate", "Plan", "StepHook", "FixedStepper", "AdaptiveStepper", "Recorder",
           "adaptive_stepper", "landing_times"]
