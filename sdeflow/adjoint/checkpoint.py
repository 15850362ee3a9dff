"""``adjoint="checkpoint"``: exact gradients of the discretisation in bounded memory.

The forward solve runs without a graph and keeps, besides each accepted step's times and
Brownian increments, the carry ``(x, solver state)`` at every ``stride``-th step (at most
``checkpoints`` of them; when an adaptive solve outgrows them every other one is dropped and the
stride doubles). The backward pass replays one segment at a time from its checkpoint, with a
graph, and backpropagates through it (docs/math.md §14.1). Memory: ``checkpoints``
carries plus one segment's graph; time: one extra forward pass. Default ``checkpoints``:
``ceil(sqrt(steps))`` for fixed grids, 64 for adaptive solves.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..solution import Solution
from ._common import (
    EngineFunction,
    Recording,
    Setup,
    StepLog,
    detach_state,
    output_map,
    snap_of,
    tensors_of,
)
from ._solve_mod import SOLVE as _solve

Tensor = torch.Tensor

ADAPTIVE_CHECKPOINTS = 64


class _Engine:
    def __init__(self, s: Setup) -> None:
        self.s = s
        self.rec = Recording(s.solver)
        self.steps: list[tuple[Any, float, float, float, Any]] = []
        self.ckpts: dict[int, tuple[Tensor, Any]] = {}
        args = s.args
        if s.adaptive:
            self.cap = s.checkpoints or ADAPTIVE_CHECKPOINTS
            self.stride = 1
        else:
            n = _grid_steps(args, s.t0, s.t1)
            self.cap = s.checkpoints or max(1, math.ceil(math.sqrt(n)))
            self.stride = max(1, math.ceil(n / self.cap))
        self.sol: Solution | None = None
        self.state0: Any = None

    def on_step(self, k: int, t: float, t_new: float) -> None:
        tt, _, h, x, state, noise = self.rec.last  # type: ignore[misc]
        self.steps.append((tt, t, h, t_new, noise))
        if k == 0:
            self.state0 = state
        if k % self.stride == 0:
            self.ckpts[k] = (x, state)
            if len(self.ckpts) > self.cap and self.s.adaptive:
                self.stride *= 2
                self.ckpts = {i: v for i, v in self.ckpts.items() if i % self.stride == 0}

    def forward(self) -> Solution:
        args = dict(self.s.args, solver=self.rec)
        sol = _solve.run(**args, hooks=[StepLog(self.rec, self.on_step)])
        self.sol = sol
        save_every = bool(args["save_all"]) and args["ts"] is None
        ends = [st[3] for st in self.steps]
        self.n0, self.per = output_map(self.s.outputs, self.s.t0, self.s.t1, ends,
                                       snap_of(args, self.s.t0, self.s.t1), save_every)
        return sol

    def backward(self, x0: Tensor, grad_ys: Tensor) -> tuple[Tensor, list[Tensor | None]]:
        inner, terms, params = self.s.solver, self.rec.terms, self.s.params
        keys = sorted(self.ckpts)
        bounds = [*keys, len(self.steps)]
        gp: list[Tensor | None] = [None] * len(params)
        g_x: Tensor = torch.zeros_like(x0)
        g_state: list[Tensor | None] = []
        for si in range(len(keys) - 1, -1, -1):
            a, b = bounds[si], bounds[si + 1]
            with torch.enable_grad():
                if a == 0:
                    x_leaf = x0.detach().requires_grad_(True)
                    state, s_leaves = self._state0(x_leaf), []
                else:
                    xc, sc = self.ckpts[a]
                    x_leaf = xc.detach().requires_grad_(True)
                    state, s_leaves = detach_state(sc, True)
                x = x_leaf
                outs: list[Tensor] = []
                gouts: list[Tensor] = []
                for k in range(a, b):
                    tt, t, h, t_new, noise = self.steps[k]
                    res = inner.step(terms, tt, t, h, x, state, noise)  # type: ignore[arg-type]
                    for oi, exact, to in self.per[k]:
                        y = res.x if exact else inner.interpolant(
                            terms, t, h, x, res.x, res.dense).at(to)  # type: ignore[arg-type]
                        outs.append(y)
                        gouts.append(grad_ys[oi])
                    x, state = res.x, res.state
                    if k in self.rec.init_after:
                        state = inner.init(terms, t_new, x, h)  # type: ignore[arg-type]
                tgt: list[Tensor] = [x]
                grads: list[Tensor] = [g_x]
                for v, gv in zip(tensors_of(state), g_state):
                    if gv is not None:
                        tgt.append(v)
                        grads.append(gv)
                tgt += outs
                grads += gouts
                pairs = [(v, gv) for v, gv in zip(tgt, grads) if v.requires_grad]
                inputs = [x_leaf, *s_leaves, *params]
                if pairs:
                    got = torch.autograd.grad([v for v, _ in pairs], inputs,
                                              [gv for _, gv in pairs], allow_unused=True)
                else:
                    got = (None,) * len(inputs)
            g_x = got[0] if got[0] is not None else torch.zeros_like(x0)
            g_state = list(got[1:1 + len(s_leaves)])
            for i, gv in enumerate(got[1 + len(s_leaves):]):
                if gv is not None:
                    gp[i] = gv if gp[i] is None else gp[i] + gv
        for oi in range(self.n0):
            g_x = g_x + grad_ys[oi]
        return g_x, gp

    def _state0(self, x_leaf: Tensor) -> Any:
        inner, terms = self.s.solver, self.rec.terms
        t0 = self.s.t0
        st = inner.init(terms, t0, x_leaf, self.rec.h0)  # type: ignore[arg-type]
        if st is None and self.state0 is not None and self.steps:
            # an FSAL chain started from the loop's slope u(t0, x0)
            st = terms.u(self.steps[0][0][0], x_leaf)  # type: ignore[union-attr, misc]
        return st


def _grid_steps(args: dict[str, Any], t0: float, t1: float) -> int:
    ctrl = args["controller"]
    steps, dt = args["steps"], args["dt"]
    if ctrl is not None and getattr(ctrl, "steps", None) is not None:
        steps = ctrl.steps
    if ctrl is not None and getattr(ctrl, "dt", None) is not None:
        dt = ctrl.dt
    if steps is not None:
        return int(steps)
    if dt is not None:
        return max(1, math.ceil(abs(t1 - t0) / float(dt)))
    return 1


def solve_checkpoint(s: Setup) -> Solution:
    """The solve with checkpointed gradients (``Solution.ys`` carries the graph)."""
    x0 = s.args["x0"]
    engine = _Engine(s)
    ys = EngineFunction.apply(engine, x0, *s.params)
    sol = engine.sol
    if sol is None:  # pragma: no cover  (forward always sets it)
        raise RuntimeError('checkpoint: the forward solve did not run')
    sol.stats["checkpoints"] = len(engine.ckpts)
    return Solution(ts=sol.ts, ys=ys, stats=sol.stats, status=sol.status,
                    t_reached=sol.t_reached)
