"""``adjoint="backsolve"``: the continuous adjoint, solved backwards (O(1) memory in the steps).

ODEs (Chen et al. 2018; docs/math.md §14.2): with ``a = dL/dx``, the augmented system

    dx/dt = u(t, x),   da/dt = -a^T du/dx,   dp/dt = -a^T du/dtheta

runs from each output time to the previous one with the forward solver (the same tolerances,
or as many fixed steps per unit time); at an output time ``a`` gains that output's gradient
and ``x`` restarts from the saved forward value.

SDEs (Li et al. 2020): the adjoint is a Stratonovich SDE on the same Brownian path queried
backwards: each backward step asks the seed's counter-based stream (fixed steps) or the
Brownian object (the user's, or a :class:`~sdeflow.BrownianTree` made from the seed for
adaptive steps) for the forward step's increment again, so nothing noise-sized is kept per
step (docs/math.md §14.5). An Ito problem is converted first
(``f - 1/2 sum_j (dg_j/dx) g_j``). Each backward step is a stochastic Heun step of the
augmented system, whose noise term ``G(z) dW`` is formed as one vector-Jacobian product of
``psi(x) = f h + g dW`` -- the ``(d + p) x m`` matrix ``G`` is never built. Steps: the
forward's accepted steps reversed.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from ..problems import ODE
from ..solution import Solution
from ..solvers.base import Solver, noise_term
from ..solvers.registry import resolve
from ._common import (
    ADJOINT_NOISE_BLOCK_ELEMS,
    EngineFunction,
    NoiseReplay,
    Recording,
    Setup,
    StepLog,
    loop_solver,
    no_params_warning,
)
from ._solve_mod import SOLVE as _solve

Tensor = torch.Tensor


class _ODEEngine:
    def __init__(self, s: Setup) -> None:
        self.s = s
        self.sol: Solution | None = None

    def forward(self) -> Solution:
        self.sol = _solve.run(**self.s.args)
        return self.sol

    def backward(self, x0: Tensor, grad_ys: Tensor) -> tuple[Tensor, list[Tensor | None]]:
        s, sol = self.s, self.sol
        params = s.params
        ts = [float(v) for v in sol.ts.tolist()]  # type: ignore[union-attr]
        ys = sol.ys  # type: ignore[union-attr]
        u = s.problem._field()  # type: ignore[union-attr]
        shape, n = x0.shape, x0.numel()
        sizes = [n] + [p.numel() for p in params]

        def aug(t: Tensor, z: Tensor) -> Tensor:
            x, a = z[:n].view(shape), z[n:2 * n].view(shape)
            with torch.enable_grad():
                xl = x.detach().requires_grad_(True)
                fx = u(t, xl)
                got = torch.autograd.grad(fx, [xl, *params], -a, allow_unused=True)
            del xl
            # (u, -a^T du/dx, -a^T du/dtheta) written into one vector: no concatenated copies
            out = torch.empty_like(z)
            out[:n].copy_(fx.detach().reshape(-1))
            del fx
            off = n
            for v, size in zip(got, sizes):
                if v is None:
                    out[off:off + size].zero_()
                else:
                    out[off:off + size].copy_(v.reshape(-1))
                off += size
            return out

        args = s.args
        n_fwd = max(1, int(sol.stats.get("accepted", 1)))  # type: ignore[union-attr]
        span = abs(s.t1 - s.t0)
        a = grad_ys[-1].reshape(-1)
        gp = torch.zeros(sum(p.numel() for p in params), dtype=x0.dtype, device=x0.device)
        for i in range(len(ts) - 1, 0, -1):
            if ts[i] != ts[i - 1]:
                z = torch.cat([ys[i].reshape(-1), a, gp])
                kw = dict(args, problem=ODE(aug), x0=z, t_span=(ts[i], ts[i - 1]), ts=None,
                          save_all=False, step_ts=None, jump_ts=_inside(args["jump_ts"],
                                                                        ts[i - 1], ts[i]),
                          dt0=None)
                back = dict(s.backward)
                adaptive = back.pop("adaptive", s.adaptive)
                kw.update(back)
                if not adaptive:
                    k = max(1, math.ceil(n_fwd * abs(ts[i] - ts[i - 1]) / span - 1e-9))
                    kw.update(steps=k, dt=None, controller=None, rtol=None, atol=None)
                with torch.no_grad(), warnings.catch_warnings():
                    # the forward solve already warned of tolerances below the dtype's eps
                    warnings.filterwarnings("ignore", message=r"rtol=.* is below what")
                    z = _solve.run(**kw).ys[-1]
                a, gp = z[n:2 * n], z[2 * n:]
            a = a + grad_ys[i - 1].reshape(-1)
        out: list[Tensor | None] = []
        off = 0
        for p in params:
            out.append(gp[off:off + p.numel()].view_as(p))
            off += p.numel()
        return a.view(shape), out


def _inside(jumps: Any, a: float, b: float) -> Any:
    if jumps is None:
        return None
    lo, hi = min(a, b), max(a, b)
    vals = [float(v) for v in (jumps.tolist() if isinstance(jumps, Tensor) else jumps)]
    inside = [v for v in vals if lo < v < hi]
    return inside or None


class _SDEEngine:
    def __init__(self, s: Setup) -> None:
        self.s = s
        self.sol: Solution | None = None
        self.times: list[float] = []
        self.replay: NoiseReplay | None = None

    def forward(self) -> Solution:
        s = self.s
        args = dict(s.args)
        inner = loop_solver(s)
        self.replay = NoiseReplay.prepare(s, args, inner)
        rec = Recording(inner)
        args["solver"] = rec
        times = [s.t0]

        def on_step(k: int, t: float, t_new: float) -> None:
            times.append(t_new)

        self.sol = _solve.run(**args, hooks=[StepLog(rec, on_step)],
                              noise_block=ADJOINT_NOISE_BLOCK_ELEMS)
        rec.forget()
        self.times = times
        self.m = rec.terms.m if rec.terms is not None else None
        return self.sol

    def backward(self, x0: Tensor, grad_ys: Tensor) -> tuple[Tensor, list[Tensor | None]]:
        s, sol = self.s, self.sol
        p = s.problem
        params = s.params
        f, g = p._fields()  # type: ignore[union-attr]
        noise = p.noise  # type: ignore[union-attr]
        mul = noise_term(noise)
        ito = p.kind == "ito" and noise != "additive"  # type: ignore[union-attr]
        times = self.times
        tol = 1e-10 * abs(s.t1 - s.t0)
        out_at: dict[int, list[int]] = {}
        ts = [float(v) for v in sol.ts.tolist()]  # type: ignore[union-attr]
        j = 0
        for k, tk in enumerate(times):
            while j < len(ts) and abs(ts[j] - tk) <= tol:
                out_at.setdefault(k, []).append(j)
                j += 1
        rev = times[::-1]
        like = x0

        def drift(t: Tensor, x: Tensor) -> Tensor:
            fx = f(t, x)
            if not ito:
                return fx
            return fx - 0.5 * _ito_correction(g, t, x, noise)

        def inc(t: Tensor, x: Tensor, a: Tensor, h: float, dw: Tensor
                ) -> tuple[Tensor, Tensor, list[Tensor | None]]:
            # psi = f h + g dW and its vector-Jacobian product with -a, the drift's and the
            # diffusion's graphs one after the other (one network's graph alive at a time)
            neg = -a
            gx: Tensor | None = None
            gp_: list[Tensor | None] = [None] * len(params)
            parts = []
            for term in ("drift", "diffusion"):
                with torch.enable_grad():
                    xl = x.detach().requires_grad_(True)
                    v = drift(t, xl) * h if term == "drift" else mul(g(t, xl), dw)
                    # a term with no graph (a diffusion independent of x and of every
                    # trainable parameter) contributes nothing
                    got = (torch.autograd.grad(v, [xl, *params], neg, allow_unused=True)
                           if v.requires_grad else (None,) * (1 + len(params)))
                parts.append(v.detach())
                del v
                if got[0] is not None:
                    gx = got[0] if gx is None else gx.add_(got[0])
                for i, w in enumerate(got[1:]):
                    if w is not None:
                        gp_[i] = w if gp_[i] is None else gp_[i].add_(w)  # type: ignore[union-attr]
            return parts[0].add_(parts[1]), (gx if gx is not None else torch.zeros_like(x)), gp_

        ys = sol.ys  # type: ignore[union-attr]
        last = len(times) - 1
        x = ys[-1].detach()
        a = torch.zeros_like(x0)
        for oi in out_at.get(last, []):
            a = a + grad_ys[oi]
        gp: list[Tensor | None] = [None] * len(params)
        for r in range(len(rev) - 1):
            k = last - r  # stepping from times[k] to times[k-1]
            t_a, t_b = rev[r], rev[r + 1]
            h = t_b - t_a
            # the forward step k-1's increment, reversed (asked again: nothing stored per step)
            dw = -self.replay.increment(k - 1, t_b, t_a - t_b, t_a)  # type: ignore[union-attr]
            ta = torch.full((), t_a, dtype=like.dtype, device=like.device)
            tb = torch.full((), t_b, dtype=like.dtype, device=like.device)
            ix, ia, ip = inc(ta, x, a, h, dw)
            _accumulate(gp, ip)
            del ip
            jx, ja, jp = inc(tb, x + ix, a + ia, h, dw)
            _accumulate(gp, jp)
            del jp
            x = x + 0.5 * (ix + jx)
            a = a + 0.5 * (ia + ja)
            if k - 1 in out_at:
                x = ys[out_at[k - 1][0]].detach()
                for oi in out_at[k - 1]:
                    a = a + grad_ys[oi]
        return a, gp


def _accumulate(gp: list[Tensor | None], vs: list[Tensor | None]) -> None:
    """``gp += vs / 2`` (Heun's average), in place."""
    for i, v in enumerate(vs):
        if v is not None:
            gp[i] = v.mul_(0.5) if gp[i] is None else gp[i].add_(v, alpha=0.5)  # type: ignore[union-attr]


def _ito_correction(g: Any, t: Tensor, x: Tensor, noise: str) -> Tensor:
    """``sum_j (dg_j/dx) g_j`` (with a graph, so the adjoint differentiates through it)."""
    gx = g(t, x)
    if noise in ("diagonal", "scalar"):
        cols = [gx]
        gcols = [gx]
    else:
        cols = list(gx.unbind(-1))
        gcols = cols
    total = torch.zeros_like(x)
    for gj, vj in zip(gcols, cols):
        if not gj.requires_grad:  # g independent of x (and of every trainable parameter)
            continue
        u = torch.zeros_like(gj, requires_grad=True)
        (vjp,) = torch.autograd.grad(gj, x, grad_outputs=u, create_graph=True, allow_unused=True)
        if vjp is None:
            continue
        (jv,) = torch.autograd.grad(vjp, u, grad_outputs=vj, create_graph=True,
                                    allow_unused=True)
        if jv is not None:
            total = total + jv
    return total


def solve_backsolve(s: Setup) -> Solution:
    """The solve with continuous-adjoint gradients."""
    if not s.is_sde:
        back = s.backward.get("solver", s.solver)
        back = back if isinstance(back, Solver) else resolve(back)
        if back.caps.implicit:
            raise ValueError(f"solver: adjoint='backsolve' solves the adjoint system with the "
                             f"forward solver, and the implicit {back.name!r} takes its Newton "
                             f"Jacobian by autograd, which the adjoint system's field does not "
                             f"carry; use adjoint='checkpoint' or 'backprop', or an explicit "
                             f"solver")
    if not s.params:
        no_params_warning("backsolve")
    engine = _SDEEngine(s) if s.is_sde else _ODEEngine(s)
    ys = EngineFunction.apply(engine, s.args["x0"], *s.params)
    sol = engine.sol
    return Solution(ts=sol.ts, ys=ys, stats=sol.stats, status=sol.status,  # type: ignore[union-attr]
                    t_reached=sol.t_reached)  # type: ignore[union-attr]
