"""What a solve saves and how it stops (:class:`Plan`), and the saved outputs and dense steps
of one solve (:class:`Recorder`), for the time loop (:mod:`sdeflow.integrate`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .interpolation import DenseSolution, Interpolant
from .solution import Solution

Tensor = torch.Tensor


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


__all__ = ["Plan", "Recorder"]
