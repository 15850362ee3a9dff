"""The time loop's steppers (docs/math.md §5): :class:`FixedStepper` walks a precomputed grid,
:class:`AdaptiveStepper` applies the PI controller and lands on the required times."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .controllers import ErrorNorm, PIController, initial_step
from .recorder import Plan
from .solvers.base import Solver, Terms

Tensor = torch.Tensor

BLOCK = 256  # fixed steps between two finiteness checks
LAND = 1.001  # an adaptive step within this factor of the next landing time stretches onto it
SDE_DT0_FRACTION = 0.01  # default first adaptive SDE step: this fraction of the span


def scalar_like(v: float, like: Tensor) -> Tensor:
    """A 0-dim tensor on ``like``'s device and dtype, with no host-to-device copy."""
    return torch.full((), v, dtype=like.dtype, device=like.device)


def _side(t: float, toward: float, like: Tensor) -> Tensor:
    """The time next to ``t`` (in ``like``'s dtype) on the side of ``toward``."""
    return torch.nextafter(scalar_like(t, like), scalar_like(toward, like))


def stage_times(c_vec: Tensor, c: Sequence[float], t: float, h: float, like: Tensor,
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


class FixedStepper:
    """Walks a precomputed grid; never syncs with the host except once per block of steps."""

    adaptive = False

    def __init__(self, grid: list[float], solver: Solver, like: Tensor, jumps: set[float],
                 noise: Any) -> None:
        self.grid, self.n = grid, len(grid) - 1
        self.hs = [b - a for a, b in zip(grid[:-1], grid[1:])]
        g64 = torch.tensor(grid, dtype=torch.float64)
        tg = g64.to(like.dtype).to(like.device)
        self.tg = tg  # the grid as a tensor (its slices: step end times for the hooks)
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
            tt = stage_times(c_vec, self.c, self.grid[k], self.hs[k], self.like, end,
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
        u0 = u(scalar_like(t0, x0), x0)  # type: ignore[misc]
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


__all__ = ["FixedStepper", "AdaptiveStepper", "adaptive_stepper", "landing_times", "stage_times",
           "scalar_like", "BLOCK"]
