"""``adjoint="checkpoint"``: exact gradients of the discretisation with binomial checkpointing.

The carries ``(x_k, solver state_k)`` of the accepted steps are the states of a reverse sweep
through ``F_k``, the solver's step ``k`` with its recorded times and (SDEs) its Brownian
increments, asked again from the seed or the Brownian object (:class:`._common.NoiseReplay`;
nothing noise-sized is kept per step). The backward pass tapes the steps one at a time, last
to first, each from its carry, and backpropagates the adjoint of the carry (and of the
outputs the step saves) through it; the carries come from ``checkpoints`` snapshots by
Griewank's binomial schedule (:mod:`.revolve`, docs/math.md §14.1):

* fixed steps (``n`` known up front): the forward pass stores the snapshots of the
  schedule's first sweep and keeps the carry before the last step; the backward pass
  advances ``t(n, c) - (n - 1)`` steps without a graph, ``t(n, c) = r n - C(c + r, r - 1)``;
* adaptive steps (``n`` unknown): the forward pass stores every carry while there are at most
  ``checkpoints`` of them (then no step is advanced again); past that it drops them and keeps
  only the accepted steps' times ("record, then revolve": the backward pass runs the optimal
  schedule for the ``n`` it now knows, ``t(n, c)`` advances from ``x_0``).

Memory: ``checkpoints`` carries, one working carry and one step's graph. Default count: every
carry when they fit in :data:`DEFAULT_BYTES` (no recomputation), else the larger of what fits
and the least count with at most one replay per step (``C(c + 2, 2) >= n``, ``c ~ sqrt(2n)``).
``Solution.stats`` reports ``checkpoints`` (the count used) and, after the backward pass,
``checkpoint_advances`` (steps recomputed without a graph) and ``checkpoint_snapshots`` (the
most snapshots held at once).
"""

from __future__ import annotations

from typing import Any

import torch

from .. import _checks as ck
from ..solution import Solution
from . import revolve
from ._common import (
    ADJOINT_NOISE_BLOCK_ELEMS,
    EngineFunction,
    NoiseReplay,
    Recording,
    Setup,
    StepLog,
    detach_state,
    loop_solver,
    output_map,
    snap_of,
    tensors_of,
)
from ._solve_mod import SOLVE as _solve

Tensor = torch.Tensor

DEFAULT_BYTES = 64 * 2**20  # carries kept by default when they fit (bytes)
MIN_ADAPTIVE = 8  # the least default count of an adaptive solve


def _nbytes(x: Tensor, state: Any) -> int:
    return sum(v.numel() * v.element_size() for v in [x, *tensors_of(state)])


class _Engine:
    def __init__(self, s: Setup) -> None:
        self.s = s
        self.inner = loop_solver(s)
        self.rec = Recording(self.inner)
        self.steps: list[tuple[Any, float, float, float]] = []
        self.snaps: dict[int, tuple[Tensor, Any]] = {}
        self.sweep: set[int] = set()
        self.grid = None if s.adaptive else _grid(s)
        self.n_fixed = None if self.grid is None else len(self.grid) - 1
        self.arena: Tensor | None = None  # fixed grids: the snapshots' x, one allocation
        self.cap: int | None = s.checkpoints
        self.keep_all = True  # adaptive: every carry stored so far
        self.working: tuple[Tensor, Any] | None = None
        self.sol: Solution | None = None
        self.state0: Any = None
        self.replay: NoiseReplay | None = None
        self.advances = 0
        self.most = 0

    # ------------------------------------------------------------------------ forward
    def _count(self, x: Tensor, state: Any) -> int:
        """``checkpoints``, or the default for a carry like ``(x, state)``."""
        if self.s.checkpoints is not None:
            return self.s.checkpoints
        fit = max(1, DEFAULT_BYTES // max(1, _nbytes(x, state)))
        if self.n_fixed is None:
            return max(MIN_ADAPTIVE, fit)
        n = self.n_fixed
        return n if fit >= n else max(fit, revolve.default_checkpoints(n))

    def on_fixed(self, k: int) -> None:
        self.on_step(k, self.grid[k], self.grid[k + 1])  # type: ignore[index]

    def on_step(self, k: int, t: float, t_new: float) -> None:
        tt, _, h, x, state, _ = self.rec.last  # type: ignore[misc]
        self.steps.append((tt, t, h, t_new))
        if k == 0:
            self.state0 = state
            self.cap = self._count(x, state)
            if self.n_fixed is not None:
                self.sweep = set(revolve.first_sweep(self.n_fixed, self.cap))
        if self.n_fixed is not None:
            # the snapshots' x are copied into one buffer: kept step outputs scattered
            # between the steps' freed temporaries would fragment the C heap
            if k == 0:
                self.slots = {j: i for i, j in enumerate(sorted(self.sweep - {0}))}
                self.arena = x.new_empty((len(self.slots) + 1, *x.shape))
            if k in self.sweep and k > 0:
                self.snaps[k] = (self.arena[self.slots[k]].copy_(x), state)  # type: ignore[index]
            if k == self.n_fixed - 1:
                self.working = (self.arena[-1].copy_(x), state)  # type: ignore[index]
        elif self.keep_all:
            if k + 1 <= self.cap:  # type: ignore[operator]
                if k > 0:
                    self.snaps[k] = (x, state)
            else:  # too many steps: record only, revolve afterwards
                self.keep_all = False
                self.snaps.clear()

    def forward(self) -> Solution:
        args = dict(self.s.args, solver=self.rec)
        self.replay = NoiseReplay.prepare(self.s, args, self.inner)
        if self.grid is not None:
            self.rec.on_fixed = self.on_fixed
            hooks: list[Any] = []
        else:
            hooks = [StepLog(self.rec, self.on_step)]
        sol = _solve.run(**args, hooks=hooks,
                         noise_block=ADJOINT_NOISE_BLOCK_ELEMS)
        self.rec.on_fixed = None
        self.rec.forget()
        self.sol = sol
        save_every = bool(args["save_all"]) and args["ts"] is None
        ends = [st[3] for st in self.steps]
        self.n0, self.per = output_map(self.s.outputs, self.s.t0, self.s.t1, ends,
                                       snap_of(args, self.s.t0, self.s.t1), save_every)
        return sol

    # ----------------------------------------------------------------------- backward
    def noise(self, k: int) -> Any:
        if self.replay is None:
            return None
        _, t, h, t_new = self.steps[k]
        return self.replay.at(k, t, h, t_new)

    def backward(self, x0: Tensor, grad_ys: Tensor) -> tuple[Tensor, list[Tensor | None]]:
        n = len(self.steps)
        ops = _Ops(self, x0, grad_ys)
        if n:
            warm = self.n_fixed is not None
            c = self.cap if self.cap is not None else 1
            if not warm and self.keep_all:
                c, warm = max(c, n), True  # every carry is stored: the first sweep is done
                self.working = self.snaps.get(n - 1) if n > 1 else None
            ops.live = 1 + len(self.snaps)
            self.most = ops.live
            revolve.reverse(n, c, ops, warm=warm)
        g_x = ops.g_x if ops.g_x is not None else torch.zeros_like(x0)
        for oi in range(self.n0):
            g_x = g_x + grad_ys[oi]
        if self.sol is not None:
            self.sol.stats["checkpoint_advances"] = self.advances
            self.sol.stats["checkpoint_snapshots"] = self.most
        return g_x, ops.gp

    def advance(self, k: int, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        inner, terms = self.inner, self.rec.terms
        tt, t, h, t_new = self.steps[k]
        with torch.no_grad():
            res = inner.step(terms, tt, t, h, x, state, self.noise(k))  # type: ignore[arg-type]
            x, state = res.x, res.state
            if k in self.rec.init_after:
                state = inner.init(terms, t_new, x, h)  # type: ignore[arg-type]
        self.advances += 1
        return x, state

    def state0_from(self, x_leaf: Tensor) -> Any:
        inner, terms = self.inner, self.rec.terms
        st = inner.init(terms, self.s.t0, x_leaf, self.rec.h0)  # type: ignore[arg-type]
        if st is None and self.state0 is not None and self.steps:
            # an FSAL chain started from the loop's slope u(t0, x0)
            st = terms.u(self.steps[0][0][0], x_leaf)  # type: ignore[union-attr, misc]
        return st


class _Ops:
    """Executes :func:`revolve.reverse` on the engine's carries (``current`` = working carry)."""

    def __init__(self, e: _Engine, x0: Tensor, grad_ys: Tensor) -> None:
        self.e, self.x0, self.grad_ys = e, x0, grad_ys
        self.cur: tuple[Tensor, Any] | None = None
        self.at0 = False  # current is x_0 (its solver state is built from x_0 when taped)
        self.g_x: Tensor | None = None
        self.g_state: list[Tensor | None] = []
        self.gp: list[Tensor | None] = [None] * len(e.s.params)
        self.live = 1
        # the forward's snapshots are copied, not consumed: the graph may be backpropagated
        # again (retain_graph, gradcheck)
        self.snaps = dict(e.snaps)

    def restore(self, k: int) -> None:
        if k == 0:
            self.cur, self.at0 = (self.x0.detach(), self.e.state0), True
            return
        self.cur, self.at0 = self.snaps[k], False

    def advance(self, k: int) -> None:
        x, state = self.cur  # type: ignore[misc]
        self.cur, self.at0 = self.e.advance(k, x, state), False

    def store(self, k: int) -> None:
        self.snaps[k] = self.cur  # type: ignore[assignment]
        self.live += 1
        self.e.most = max(self.e.most, self.live)

    def free(self, k: int) -> None:
        del self.snaps[k]
        self.live -= 1

    def resume(self) -> None:
        self.cur, self.at0 = self.e.working, False  # type: ignore[assignment]

    def tape(self, k: int) -> None:
        e, params = self.e, self.e.s.params
        inner, terms = e.inner, e.rec.terms
        tt, t, h, t_new = e.steps[k]
        xc, sc = self.cur  # type: ignore[misc]
        self.cur = None
        with torch.enable_grad():
            x_leaf = xc.detach().requires_grad_(True)
            if self.at0:
                state, s_leaves = e.state0_from(x_leaf), []
            else:
                state, s_leaves = detach_state(sc, True)
            res = inner.step(terms, tt, t, h, x_leaf, state, e.noise(k))  # type: ignore[arg-type]
            tgt: list[Tensor] = []
            grads: list[Tensor] = []
            for oi, exact, to in e.per[k]:
                y = res.x if exact else inner.interpolant(
                    terms, t, h, x_leaf, res.x, res.dense).at(to)  # type: ignore[arg-type]
                tgt.append(y)
                grads.append(self.grad_ys[oi])
            x_new, state_new = res.x, res.state
            if k in e.rec.init_after:
                state_new = inner.init(terms, t_new, x_new, h)  # type: ignore[arg-type]
            if self.g_x is not None:
                tgt.append(x_new)
                grads.append(self.g_x)
                for v, gv in zip(tensors_of(state_new), self.g_state):
                    if gv is not None:
                        tgt.append(v)
                        grads.append(gv)
            pairs = [(v, gv) for v, gv in zip(tgt, grads) if v.requires_grad]
            inputs = [x_leaf, *s_leaves, *params]
            if pairs:
                got = torch.autograd.grad([v for v, _ in pairs], inputs,
                                          [gv for _, gv in pairs], allow_unused=True)
            else:
                got = (None,) * len(inputs)
        self.g_x = got[0] if got[0] is not None else torch.zeros_like(self.x0)
        self.g_state = list(got[1:1 + len(s_leaves)])
        for i, gv in enumerate(got[1 + len(s_leaves):]):
            if gv is not None:
                self.gp[i] = gv if self.gp[i] is None else self.gp[i] + gv  # type: ignore[operator]
        self.at0 = False


def _grid(s: Setup) -> list[float]:
    """The fixed grid ``solve`` builds (as :func:`sdeflow.solve.run` does)."""
    args = s.args
    ctrl, _ = _solve._controller(args["steps"], args["dt"], args["rtol"], args["atol"],
                                 args["controller"], args["solver"], s.is_sde)
    extra = ck.time_list(args["step_ts"], "step_ts") + ck.time_list(args["jump_ts"], "jump_ts")
    outs = ([*s.outputs] if s.is_sde else [s.t0, s.t1]) + extra
    grid, _ = ctrl.grid(s.t0, s.t1, _solve._merge(outs, s.t0, s.t1),
                        ck.snap(s.t0, s.t1, args["ts"]))
    return list(grid)


def solve_checkpoint(s: Setup) -> Solution:
    """The solve with checkpointed gradients (``Solution.ys`` carries the graph)."""
    x0 = s.args["x0"]
    engine = _Engine(s)
    ys = EngineFunction.apply(engine, x0, *s.params)
    sol = engine.sol
    if sol is None:  # pragma: no cover  (forward always sets it)
        raise RuntimeError('checkpoint: the forward solve did not run')
    if engine.n_fixed is not None and sol.stats.get("accepted") != engine.n_fixed:
        raise RuntimeError(f"checkpoint: the grid has {sol.stats.get('accepted')} steps, "
                           f"expected {engine.n_fixed}")
    sol.stats["checkpoints"] = engine.cap
    return Solution(ts=sol.ts, ys=ys, stats=sol.stats, status=sol.status,
                    t_reached=sol.t_reached)
