"""``adjoint="reversible"``: exact gradients of reversible Heun in O(1) memory.

The forward solve keeps only each step's times; for SDEs the backward pass asks the seed's
stream or the Brownian object for each step's increment again (:class:`._common.NoiseReplay`,
docs/math.md §14.5). The backward pass walks the steps in reverse: it inverts
step ``n`` algebraically (:func:`sdeflow.solvers.reversible.rev_inverse`) to recover
``(y_n, yh_n)``, re-runs that one step with a graph and backpropagates the adjoint of
``(y_{n+1}, yh_{n+1})`` through it (Kidger et al. 2021; docs/math.md §14.3). The
gradients equal backpropagation through the same steps up to the round-off of the inversion.
"""

from __future__ import annotations

from typing import Any

import torch

from ..solution import Solution
from ..solvers.reversible import RevState, rev_init, rev_inverse_aux, rev_inverse_y, rev_step
from ._common import (
    ADJOINT_NOISE_BLOCK_ELEMS,
    EngineFunction,
    NoiseReplay,
    Recording,
    Setup,
    StepLog,
)
from ._solve_mod import SOLVE as _solve

Tensor = torch.Tensor


class _Engine:
    def __init__(self, s: Setup) -> None:
        self.s = s
        self.rec = Recording(s.solver)
        self.steps: list[tuple[Tensor, Tensor, float]] = []
        self.sol: Solution | None = None
        self.replay: NoiseReplay | None = None

    def on_step(self, k: int, t: float, t_new: float) -> None:
        tt, _, h, _, _, _ = self.rec.last  # type: ignore[misc]
        self.steps.append((tt[0], tt[1], h))
        self.times.append(t_new)

    def forward(self) -> Solution:
        s = self.s
        args = dict(s.args, solver=self.rec)
        self.replay = NoiseReplay.prepare(s, args, s.solver)
        if not s.is_sde and args["ts"] is not None and args["step_ts"] is None:
            args["step_ts"] = args["ts"]  # outputs on steps: the inversion passes them exactly
        self.times = [s.t0]
        self.sol = _solve.run(**args, hooks=[StepLog(self.rec, self.on_step)],
                              noise_block=ADJOINT_NOISE_BLOCK_ELEMS)
        self.final = (self.sol.ys[-1], self.rec.last_res.state)  # type: ignore[union-attr]
        self.rec.forget()
        return self.sol

    def backward(self, x0: Tensor, grad_ys: Tensor) -> tuple[Tensor, list[Tensor | None]]:
        s, terms, params = self.s, self.rec.terms, self.s.params
        ts = [float(v) for v in self.sol.ts.tolist()]  # type: ignore[union-attr]
        tol = 1e-10 * abs(s.t1 - s.t0)
        out_at: dict[int, list[int]] = {}
        j = 0
        for k, tk in enumerate(self.times):
            while j < len(ts) and abs(ts[j] - tk) <= tol:
                out_at.setdefault(k, []).append(j)
                j += 1
        y, st = self.final
        y = y.detach()
        st = RevState(st.yh.detach(), st.fh.detach(),
                      None if st.gh is None else st.gh.detach())
        n = len(self.steps)
        a_y = torch.zeros_like(x0)
        for oi in out_at.get(n, []):
            a_y = a_y + grad_ys[oi]
        a_yh = torch.zeros_like(x0)
        gp: list[Tensor | None] = [None] * len(params)
        for k in range(n - 1, -1, -1):
            t0, t1, h = self.steps[k]
            dw = (self.replay.increment(k, self.times[k], h, self.times[k + 1])
                  if self.replay is not None else None)
            with torch.no_grad():
                yh_prev = rev_inverse_aux(terms, h, y, st, dw)  # type: ignore[arg-type]
                s0 = rev_init(terms, t0, yh_prev)  # type: ignore[arg-type]
                y_prev = rev_inverse_y(terms, h, y, st, s0.fh, s0.gh, dw)  # type: ignore[arg-type]
            # the re-run step with the fields at yh_prev as leaves, then those fields with a
            # graph of their own: one step's field graph alive at a time (one more evaluation
            # of the fields per step)
            with torch.enable_grad():
                yl = y_prev.detach().requires_grad_(True)
                yhl = yh_prev.detach().requires_grad_(True)
                fl = s0.fh.detach().requires_grad_(True)
                gl = None if s0.gh is None else s0.gh.detach().requires_grad_(True)
                leaves = [yl, yhl, fl] + ([] if gl is None else [gl])
                y1, s1 = rev_step(terms, t1, h, yl, RevState(yhl, fl, gl), dw)  # type: ignore[arg-type]
                got = torch.autograd.grad([y1, s1.yh], [*leaves, *params], [a_y, a_yh],
                                          allow_unused=True)
                del y1, s1
                nl = len(leaves)
                a_y = got[0] if got[0] is not None else torch.zeros_like(x0)
                a_yh = got[1] if got[1] is not None else torch.zeros_like(x0)
                _add(gp, got[nl:])
                gf = list(got[2:nl])  # adjoints of the fields at yh_prev
                del got
                if any(v is not None for v in gf):
                    yh2 = yh_prev.detach().requires_grad_(True)
                    sa = rev_init(terms, t0, yh2)  # type: ignore[arg-type]
                    fields = [sa.fh] + ([] if sa.gh is None else [sa.gh])
                    # a field with no graph (e.g. a constant diffusion) contributes nothing
                    pairs = [(fv, gv) for fv, gv in zip(fields, gf)
                             if gv is not None and fv.requires_grad]
                    if pairs:
                        got_a = torch.autograd.grad([fv for fv, _ in pairs], [yh2, *params],
                                                    [gv for _, gv in pairs], allow_unused=True)
                        if got_a[0] is not None:
                            a_yh = a_yh + got_a[0]
                        _add(gp, got_a[1:])
                    del sa, fields, pairs
            y = y_prev
            st = RevState(yh_prev, s0.fh.detach(),
                          None if s0.gh is None else s0.gh.detach())
            for oi in out_at.get(k, []):
                a_y = a_y + grad_ys[oi]
        return a_y + a_yh, gp


def _add(gp: list[Tensor | None], vs: Any) -> None:
    for i, v in enumerate(vs):
        if v is not None:
            gp[i] = v if gp[i] is None else gp[i].add_(v)  # type: ignore[union-attr]


def solve_reversible(s: Setup) -> Solution:
    """The solve with reversible-Heun gradients."""
    engine = _Engine(s)
    ys = EngineFunction.apply(engine, s.args["x0"], *s.params)
    sol = engine.sol
    return Solution(ts=sol.ts, ys=ys, stats=sol.stats, status=sol.status,  # type: ignore[union-attr]
                    t_reached=sol.t_reached)  # type: ignore[union-attr]
