"""Events: per-path zero crossings located on the dense output (docs/events.md, docs/math.md
§13.5).

``sf.solve(..., event=sf.Event(fn, terminal=True, direction=0))`` watches ``g = fn(t, x)``, one
value per path (shape ``x.shape[:-1]`` for a batched state ``(..., d)``, a scalar for a state
``(d,)`` or ``()``). After each accepted step from ``t`` to ``t + h``:

* a path whose ``g`` changed sign (in ``direction``: ``+1`` upward, ``-1`` downward, ``0``
  both) has crossed. For ODEs the crossing time is found by Illinois regula falsi on
  ``g(t + theta h, x(theta))`` with ``x(theta)`` the solver's interpolant (through its values
  at 8 Chebyshev nodes -- exact for the polynomial interpolants of every solver here), one
  ``theta`` per crossing path, to a bracket of ``1e-13`` relative in time. ``fn`` always sees
  the whole batch ``(..., d)``, at one time per path (shape ``x.shape[:-1]``) while a crossing
  is located (the other paths at the step's end), so parameters of the batch's shape in
  ``fn`` line up with the paths;
* for SDEs the crossing is detected at the step's end (``event_t`` is the end of the step).
  With ``bridge=True`` (scalar, diagonal or additive noise) a path that stayed on one side
  still crosses with the probability that a Brownian bridge between the two values crossed
  zero, ``p = exp(-2 g_0 g_1 / (sigma_g^2 h))``, ``sigma_g^2`` the local variance rate of ``g``
  (``grad g`` against the diffusion), sampled with one uniform per path;
* a ``terminal`` event freezes the path at its event state: the paths still running keep
  stepping (a frozen path's rows are held at their event state and masked out of the error
  norm, so they no longer limit the step size) and the solve ends when every path has
  triggered (status ``"event"``) or at ``t_end``.

When nothing fires, the loops check stretches of steps at once for states of up to 64 KiB
(:mod:`sdeflow.lookback`, :meth:`Monitor.scan`): ``fn`` on the stretch's stacked end states
(called on the stack as one batch, or vmapped over it, or state by state: whichever is the
cheapest that gives the same numbers), then one min and one sum of ``bias + g * s_old``
(positive and finite: no counted sign changed, nothing non-finite), one or two host syncs per
stretch; the step where something changed is re-run with :meth:`Monitor.accepted` (bitwise the
same step). Where the monitor sees every step (larger states, bridge, adaptive SDEs, implicit
solvers) a quiet step costs one call of each ``fn`` and the same min and sum. The interpolant
is built only for a step in which some path changed sign.

``sol.event_t`` / ``sol.event_x`` / ``sol.event_index`` hold, per path, the time, state and
index (in a tuple of events) of the terminal event that stopped it, or else of the first
non-terminal event that fired; NaN (index ``-1``) where none did.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from . import solve as _solve
from .interpolation import Interpolant
from .problems import SDE
from .solution import Solution
from .solvers.base import Solver, StepResult, Terms

Tensor = torch.Tensor

#: Chebyshev nodes on [0, 1] at which a crossing step's interpolant is sampled
N_NODES = 8
MAX_ILLINOIS = 80


class Event:
    """A zero crossing to watch (module docstring).

    Args:
        fn: ``fn(t, x)`` returning one value per path: ``x.shape[:-1]`` for a batched state,
            a scalar (0-dim tensor or float) for an unbatched one (a scalar for a batched
            state is the same value for every path). ``x`` is the whole state; ``t`` is a
            0-dim tensor at a step's end and, while a crossing is located, a tensor of one
            time per path (shape ``x.shape[:-1]``): write ``fn`` elementwise per path
            (``x[..., 0] - t`` or ``x[..., 0] - level`` with ``level`` of the batch's shape
            are fine). On a stretch of ``K`` steps checked at once ``fn`` may also see the
            ``K`` states stacked in front (``x`` of shape ``(K, *x.shape)``, ``t`` of shape
            ``(K, *x.shape[:-1])``): only once the first stretch showed that this gives
            bitwise the values of one call per state (docs/events.md, "Cost").
        terminal: freeze a path at its first crossing (the solve ends when all have).
        direction: ``+1`` counts only upward crossings (``g`` from negative to positive),
            ``-1`` only downward ones, ``0`` both.
        bridge: SDEs only: add the Brownian-bridge crossing probability between steps
            (scalar, diagonal and additive noise).
    """

    def __init__(self, fn: Callable[[Tensor, Tensor], Any], terminal: bool = True,
                 direction: int = 0, bridge: bool = False) -> None:
        if not callable(fn):
            raise TypeError(f"fn: expected a callable fn(t, x), got {type(fn).__name__}")
        if not isinstance(terminal, bool):
            raise TypeError(f"terminal: expected a bool, got {terminal!r}")
        if isinstance(direction, bool) or direction not in (-1, 0, 1):
            raise ValueError(f"direction: expected -1, 0 or 1, got {direction!r}")
        if not isinstance(bridge, bool):
            raise TypeError(f"bridge: expected a bool, got {bridge!r}")
        self.fn, self.terminal, self.direction, self.bridge = fn, terminal, int(direction), bridge

    def __repr__(self) -> str:
        return (f"Event({getattr(self.fn, '__name__', 'fn')}, terminal={self.terminal}, "
                f"direction={self.direction}, bridge={self.bridge})")


# ------------------------------------------------------------------------------- the monitor
def _chebyshev(n: int) -> list[float]:
    return [0.5 - 0.5 * math.cos(math.pi * (2 * k + 1) / (2 * n)) for k in range(n)]


class _Poly:
    """A step's interpolant as a polynomial: values at the Chebyshev nodes and the barycentric
    weights (stable evaluation at one ``theta`` per path)."""

    def __init__(self, interp: Interpolant, n: int, d: int, like: Tensor) -> None:
        nodes = _chebyshev(N_NODES)
        self.nodes = torch.tensor(nodes, dtype=like.dtype, device=like.device)
        w = [1.0 / math.prod(nodes[j] - nodes[m] for m in range(N_NODES) if m != j)
             for j in range(N_NODES)]
        self.w = torch.tensor(w, dtype=like.dtype, device=like.device)
        self.vals = torch.stack([interp(th).reshape(n, d) for th in nodes], 1)  # (n, K, d)

    def __call__(self, theta: Tensor) -> Tensor:
        """``x(theta)`` per path, ``theta`` of shape ``(n,)`` (barycentric Lagrange formula)."""
        diff = theta.unsqueeze(-1) - self.nodes  # (n, K)
        exact = diff == 0
        diff = torch.where(exact, torch.ones_like(diff), diff)
        c = self.w / diff
        c = torch.where(exact.any(-1, keepdim=True), exact.to(c.dtype), c)
        c = c / c.sum(-1, keepdim=True)
        return torch.einsum("nk,nkd->nd", c, self.vals)


class Monitor:
    """The :class:`~sdeflow.integrate.StepHook` of an event solve (also holds the frozen
    paths that :class:`EventSolver` keeps still)."""

    def __init__(self, events: Sequence[Event], x0: Tensor, t0: float, sde: Any,
                 seed: int | None) -> None:
        self.events = list(events)
        self.batched = x0.dim() >= 2
        self.pshape = tuple(x0.shape[:-1]) if self.batched else ()
        self.d = x0.shape[-1] if x0.dim() >= 1 else 1
        self.n = max(1, math.prod(self.pshape))
        self.like = x0
        self.sde = sde
        dt = x0.dtype
        self.event_t = torch.full((self.n,), math.nan, dtype=dt, device=x0.device)
        self.event_x = torch.full((self.n, self.d), math.nan, dtype=dt, device=x0.device)
        self.event_index = torch.full((self.n,), -1, dtype=torch.long, device=x0.device)
        self.frozen = torch.zeros(self.n, dtype=torch.bool, device=x0.device)
        self.any_frozen = False
        self.on_freeze: Callable[[], None] = lambda: None  # set by EventSolver
        self.all_frozen = False
        self.recorded = torch.zeros(self.n, dtype=torch.bool, device=x0.device)
        self._want = torch.Size(self.pshape)
        self.dtype, self.device = dt, x0.device
        self.g_old = [self.value(e, t0, x0, check=True) for e in self.events]
        self.fired = [0] * len(self.events)
        self.gen = None
        if any(e.bridge for e in self.events):
            self.gen = torch.Generator(device="cpu")
            self.gen.manual_seed(0 if seed is None else seed + 1)
        # without the bridge a step where nothing fires is only a test of signs (_clean, on
        # one step or on a stretch of steps: scan), docs/events.md "Cost"
        self.fast = self.gen is None
        # how each fn is evaluated on a stretch of steps (_values_at): "direct", "vmap", "loop"
        self._modes: dict[int, str] = {}
        self._vfns: dict[int, Any] = {}
        self._stack_buf: Tensor | None = None  # the stacked states of a stretch (scan)
        self.g_old = [g.view(self._want) for g in self.g_old]
        self._refresh()

    # ------------------------------------------------------------------------ evaluation
    def value(self, ev: Event, t: float | Tensor, x: Tensor, check: bool = False) -> Tensor:
        """``fn(t, x)`` flattened to ``(n,)``, checked for shape and finiteness."""
        tt = t if isinstance(t, Tensor) else torch.full((), t, dtype=x.dtype, device=x.device)
        return self.coerce(ev.fn(tt, x), t, x, finite=True)

    def coerce(self, out: Any, t: float | Tensor, x: Tensor, finite: bool) -> Tensor:
        """An output of ``fn`` as a detached tensor of ``x``'s dtype, flattened to ``(n,)``:
        a number or a 0-dim tensor is broadcast to every path; a wrong shape (and with
        ``finite`` a non-finite value) raises, naming ``fn`` and the time."""
        if not isinstance(out, Tensor):
            if isinstance(out, (int, float)) and not isinstance(out, bool):
                out = torch.full((), float(out), dtype=x.dtype, device=x.device)
            else:
                raise TypeError(f"event: fn(t, x) must return a tensor or a float, got "
                                f"{type(out).__name__}")
        want = tuple(x.shape[:-1]) if (self.batched or x.dim() >= 2) else ()
        if out.dim() == 0 and want:
            out = out.expand(want)  # the same value for every path (e.g. fn = t - t_stop)
        if tuple(out.shape) != want:
            raise ValueError(
                f"event: fn(t, x) returned shape {tuple(out.shape)}, expected one value per "
                f"path, shape {want} (x has shape {tuple(x.shape)})")
        if finite and not bool(torch.isfinite(out).all()):
            when = float(t) if not isinstance(t, Tensor) or t.dim() == 0 else float(t.min())
            raise ValueError(f"event: fn(t, x) returned non-finite values (at t={when:.6g})")
        return out.detach().to(x.dtype).reshape(-1)

    def _crossed(self, ev: Event, g0: Tensor, g1: Tensor) -> Tensor:
        if ev.direction == 1:
            return (g0 < 0) & (g1 >= 0)
        if ev.direction == -1:
            return (g0 > 0) & (g1 <= 0)
        return (g0 * g1 <= 0) & (g0 != 0)

    def _stacked(self, g: list[Tensor], dim: int = 0) -> Tensor:
        return g[0] if len(g) == 1 else torch.stack(g, dim)

    def _refresh(self) -> None:
        """The signs of the last values, ``s_old`` (0 where a path no longer counts: frozen,
        or already recorded for a non-terminal event), and ``bias``, 1 there and 0 elsewhere.

        Then ``P = bias + g * s_old`` is positive everywhere exactly when no counted value
        changed (or lost) its sign, and finite exactly when every value is finite (a value
        that does not count still turns ``P`` into NaN if it is not finite): one
        multiply-add, one min and one sum per check, no comparisons of whole tensors."""
        masks = []
        for e in self.events:
            m = self.frozen if e.terminal else self.frozen | self.recorded
            masks.append(m.view(self._want))
        mask = self._stacked(masks)
        s = torch.sign(self._stacked(self.g_old))
        self.s_old = s.masked_fill(mask, 0.0)
        self.bias = mask.to(self.dtype)
        # +1 or -1 when every value counts and all have that sign (the usual start of a
        # first passage): then the test needs no multiply-add, only the min (max) and sum of g
        lo, hi = (float(v) for v in torch.aminmax(self.s_old)) if self.s_old.numel() else (0, 0)
        self._uniform = lo if lo == hi and lo != 0.0 else 0.0

    def _clean(self, g: Tensor) -> bool:
        """Nothing counted changed sign in ``g`` (stacked values) and all of it is finite
        (:meth:`_refresh`): the least value positive (NaN fails it) and the sum finite (one
        host sync, two when the first passes; a finite sum that overflows only sends the
        stretch to the step-by-step check)."""
        if self._uniform > 0.0:
            return float(g.amin()) > 0.0 and float(g.sum()) < math.inf
        if self._uniform < 0.0:
            return float(g.amax()) < 0.0 and float(g.sum()) > -math.inf
        p = torch.addcmul(self.bias, g, self.s_old)
        return float(p.amin()) > 0.0 and float(p.sum()) < math.inf

    # ------------------------------------------------------------- a run of steps at once
    def defer(self) -> bool:
        """Whether a run of accepted steps can be checked after the fact (:meth:`scan`): yes,
        unless a bridge correction needs every step's start and diffusion."""
        return self.fast

    def scan(self, ts: list[float] | Tensor, xs: list[Tensor]) -> int | None:
        """Check ``K`` accepted steps at once, ending at ``ts`` (floats, or a tensor on the
        state's device) with states ``xs`` (nothing checked since the last step the monitor
        saw): the states stacked into one buffer kept for the solve, ``fn`` once on the stack
        (:meth:`_values_at`) and one test of the ``K`` rows of signs against their
        predecessors (:meth:`_clean`: one or two host syncs).

        Returns the index of the first step in which a live path's sign changed or a value
        is not finite, with the monitor's last values moved to that step's start, so the
        loop re-runs that step through :meth:`accepted`; ``None`` when no step did (the last
        values are then those at ``ts[-1]``)."""
        with torch.no_grad():
            k = len(xs)
            buf = self._stack_buf
            if buf is None or buf.shape[0] < k or buf.shape[1:] != xs[0].shape \
                    or buf.dtype != xs[0].dtype:
                # one buffer for the solve's stretches: no new memory to fault in per stretch
                buf = self._stack_buf = torch.empty((k, *xs[0].shape), dtype=xs[0].dtype,
                                                    device=xs[0].device)
            big_x = torch.stack(xs, out=buf[:k])
            big_t = (ts.to(dtype=self.dtype, device=self.device) if isinstance(ts, Tensor)
                     else torch.tensor(ts, dtype=torch.float64).to(dtype=self.dtype,
                                                                   device=self.device))
            gs = [self._values_at(e, big_t, big_x, ts, xs) for e in self.events]
        big_g = self._stacked(gs, 1)  # (K, [events,] *paths)
        if self._clean(big_g):
            # (copies: fn's values may be views of the stretch's buffer) the signs, s_old,
            # are those of before
            self.g_old = [g[-1].clone() for g in gs]
            return None
        p = torch.addcmul(self.bias, big_g, self.s_old).reshape(k, -1)
        lo, hi = torch.aminmax(p, dim=1)
        bad = ~(lo > 0.0) | ~(hi < math.inf)
        first = int(bad.to(torch.uint8).argmax())
        if first > 0:
            self.g_old = [g[first - 1].clone() for g in gs]
        return first

    def _values_at(self, ev: Event, big_t: Tensor, big_x: Tensor, ts: list[float] | Tensor,
                   xs: list[Tensor]) -> Tensor:
        """``fn`` at the ``K`` step ends, shape ``(K, *paths)``.

        Three ways, the cheapest that gives the same numbers: ``fn`` called once on the
        stacked states as a batch of ``K`` times more paths (``t`` of shape ``(K, *paths)``;
        used once the first stretch showed it bitwise equal to the vmapped call), ``fn``
        vmapped over the steps (each call sees one state and a 0-dim time), or one call per
        state (``fn`` not vmappable; this also names a wrong shape)."""
        k, want = len(xs), self._want
        mode = self._modes.get(id(ev), "vmap")
        if mode == "direct":
            out = self._direct(ev, big_t, big_x)
            if out is not None:
                return out
            mode = self._modes[id(ev)] = "vmap"
        if mode == "vmap":
            try:
                vf = self._vfns.get(id(ev))
                if vf is None:
                    vf = self._vfns[id(ev)] = torch.func.vmap(ev.fn)
                out = vf(big_t, big_x)
            except Exception:  # noqa: BLE001 -- not vmappable (.item(), a float, ...): loop
                self._modes[id(ev)] = "loop"
            else:
                if isinstance(out, Tensor) and out.dim() == 1 and want:
                    # one value for every path at each step (e.g. fn = t - t_stop)
                    out = out.reshape(k, *([1] * len(want))).expand(k, *want)
                if isinstance(out, Tensor) and out.shape[1:] == want:
                    out = out.to(self.dtype)
                    if id(ev) not in self._modes:  # the first stretch: can fn take the stack?
                        d = self._direct(ev, big_t, big_x)
                        same = d is not None and bool(torch.equal(d, out))
                        self._modes[id(ev)] = "direct" if same else "vmap"
                    return out
                self._modes[id(ev)] = "loop"
        return torch.stack([self.coerce(ev.fn(big_t[i], xs[i]), ts[i], xs[i], finite=False)
                            .view(want) for i in range(k)])

    def _direct(self, ev: Event, big_t: Tensor, big_x: Tensor) -> Tensor | None:
        """``fn`` on the stacked states as one batch (``t`` broadcast to ``(K, *paths)``),
        shape ``(K, *paths)``; ``None`` where that fails or gives another shape."""
        k, want = big_x.shape[0], self._want
        tt = big_t.reshape(k, *([1] * len(want))).expand(k, *want)
        try:
            out = ev.fn(tt, big_x)
        except Exception:  # noqa: BLE001 -- fn needs one state at a time
            return None
        if not isinstance(out, Tensor) or out.shape != (k, *want):
            return None
        return out.to(self.dtype)

    # ----------------------------------------------------------------------- the hook
    def accepted(self, t: float, t_new: float, x: Tensor, x_new: Tensor,
                 interp: Callable[[], Interpolant]) -> Tensor | None:
        xv = x_new.detach() if x_new.requires_grad else x_new
        tt = torch.full((), t_new, dtype=self.dtype, device=self.device)
        g_new = []
        for e in self.events:
            out = e.fn(tt, xv)
            if out.__class__ is not Tensor or out.shape != self._want or \
                    out.dtype != self.dtype or out.requires_grad:
                # shape checked, converted; finiteness goes with the sign test below
                out = self.coerce(out, t_new, xv, finite=False).view(self._want)
            g_new.append(out)
        g_old = self.g_old
        self.g_old = g_new
        if self.fast and self._clean(self._stacked(g_new)):
            return None  # no counted path changed sign and every value is finite
        out = self._slow(t, t_new, x, x_new, interp, [g.reshape(-1) for g in g_old],
                         [g.reshape(-1) for g in g_new])
        self._refresh()  # the new signs, and paths newly frozen or recorded no longer count
        return out

    def _slow(self, t: float, t_new: float, x: Tensor, x_new: Tensor,
              interp: Callable[[], Interpolant], g_old: list[Tensor],
              g_new: list[Tensor]) -> Tensor | None:
        """A step where some sign changed (or any step with the bridge correction)."""
        for e, g in zip(self.events, g_new):
            if not bool(torch.isfinite(g).all()):
                self.value(e, t_new, x_new)  # raises, naming the time
        live = ~self.frozen
        cross = [self._crossed(e, g0, g1) & live for e, g0, g1 in
                 zip(self.events, g_old, g_new)]
        if self.gen is not None:
            cross = self._bridge(t, t_new, x, cross, g_old, g_new, live)
        mask = cross[0]
        for c in cross[1:]:
            mask = mask | c
        if not bool(mask.any()):
            return None
        return self._fire(t, t_new, x_new, interp, cross, g_old, g_new)

    def _fire(self, t: float, t_new: float, x_new: Tensor, interp: Callable[[], Interpolant],
              cross: list[Tensor], g_old: list[Tensor], g_new: list[Tensor]) -> Tensor | None:
        """Locate this step's crossings; record, per path, the earliest terminal one (which
        freezes the path) or else the earliest non-terminal one if the path has none yet."""
        n, d = self.n, self.d
        h = t_new - t
        sign = 1.0 if h > 0 else -1.0  # "earliest" in the direction of integration
        like = x_new
        xn = x_new.reshape(n, d)
        # [0]: the earliest of all events (non-terminal record), [1]: of the terminal ones
        best = [(torch.full((n,), math.inf, dtype=like.dtype, device=like.device),
                 torch.zeros((n, d), dtype=like.dtype, device=like.device),
                 torch.full((n,), -1, dtype=torch.long, device=like.device)) for _ in range(2)]
        poly: _Poly | None = None
        sde = self.sde is not None
        for k, (ev, c) in enumerate(zip(self.events, cross)):
            if not ev.terminal:
                c = c & ~self.recorded  # later crossings of a recorded path change nothing
            rows = c.nonzero().squeeze(-1)
            if rows.numel() == 0:
                continue
            if sde:
                te = torch.full((rows.numel(),), t_new, dtype=like.dtype, device=like.device)
                xe = xn[rows]
            else:
                if poly is None:
                    poly = _Poly(interp(), n, d, like)
                te, xe = self._locate(ev, t, h, poly, rows, g_old[k][rows], g_new[k][rows])
            for bt, bx, bi in best[: 2 if ev.terminal else 1]:
                better = sign * te < bt[rows]
                r = rows[better]
                bt[r], bx[r], bi[r] = sign * te[better], xe[better], k
        (_, first_x, first_i), (_, term_x, term_i) = best
        first_t, term_t = sign * best[0][0], sign * best[1][0]
        is_term = term_i >= 0
        first = (first_i >= 0) & ~self.recorded & ~is_term
        self.event_t = torch.where(is_term, term_t, torch.where(first, first_t, self.event_t))
        self.event_x = torch.where(is_term.unsqueeze(-1), term_x,
                                   torch.where(first.unsqueeze(-1), first_x, self.event_x))
        self.event_index = torch.where(is_term, term_i,
                                       torch.where(first, first_i, self.event_index))
        self.recorded |= first | is_term
        for k in range(len(self.events)):
            self.fired[k] += int(((first & (first_i == k)) | (is_term & (term_i == k))).sum())
        if not bool(is_term.any()):
            return None
        self.frozen = self.frozen | is_term
        if not self.any_frozen:
            self.any_frozen = True
            self.on_freeze()
        self.all_frozen = bool(self.frozen.all())
        out = torch.where(is_term.unsqueeze(-1), term_x, xn)
        return out.reshape(x_new.shape)

    def _locate(self, ev: Event, t: float, h: float, poly: _Poly, rows: Tensor, ga: Tensor,
                gb: Tensor) -> tuple[Tensor, Tensor]:
        """Illinois regula falsi per path on ``theta in [0, 1]`` for the paths ``rows``
        (docs/math.md §13.5). ``fn`` always sees the whole batch, at one time per path
        (the other paths at the step's end), so per-path parameters in ``fn`` line up."""
        like = ga
        a = torch.zeros_like(ga)
        b = torch.ones_like(ga)
        eps = torch.finfo(like.dtype).eps
        tol = max(1e-13, 4 * eps) * max(abs(t), abs(t + h), abs(h)) / abs(h)
        full = torch.ones(self.n, dtype=like.dtype, device=like.device)
        tshape = self.pshape if self.batched else ()
        side = torch.zeros_like(ga)  # +1: b was kept last time, -1: a was kept
        theta = b.clone()
        gt = gb.clone()
        for _ in range(MAX_ILLINOIS):
            theta = (a * gb - b * ga) / (gb - ga)
            theta = torch.where(torch.isfinite(theta), theta, 0.5 * (a + b)).clamp(0.0, 1.0)
            th = full.index_put((rows,), theta)
            xt = poly(th).reshape(self.like.shape)
            gt = self.value(ev, (t + th * h).reshape(tshape), xt)[rows]
            left = torch.sign(gt) == torch.sign(ga)
            # keep the bracket [a, b] around the root; halve the kept end's value (Illinois)
            a_new = torch.where(left, theta, a)
            b_new = torch.where(left, b, theta)
            ga_new = torch.where(left, gt, torch.where(side < 0, ga * 0.5, ga))
            gb_new = torch.where(left, torch.where(side > 0, gb * 0.5, gb), gt)
            side = torch.where(left, torch.ones_like(side), -torch.ones_like(side))
            a, b, ga, gb = a_new, b_new, ga_new, gb_new
            done = ((b - a) <= tol) | (gt == 0)
            if bool(done.all()):
                break
        theta = torch.where(gt == 0, theta, torch.where(ga.abs() < gb.abs(), a, b))
        te = t + theta * h
        return te, poly(full.index_put((rows,), theta))[rows]

    def _bridge(self, t: float, t_new: float, x: Tensor, cross: list[Tensor],
                g_old: list[Tensor], g_new: list[Tensor], live: Tensor) -> list[Tensor]:
        """Add the Brownian-bridge crossings of paths that stayed on one side."""
        sde = self.sde
        h = abs(t_new - t)
        tt = torch.full((), t, dtype=x.dtype, device=x.device)
        gfun = sde._fields()[1]
        with torch.no_grad():
            graw = gfun(tt, x.detach())
        matrix = graw.dim() == x.dim() + 1  # additive noise as a (..., d, m) matrix
        gx = graw.reshape(self.n, -1, graw.shape[-1]) if matrix else graw.reshape(self.n, -1)
        out = []
        for ev, c, g0, g1 in zip(self.events, cross, g_old, g_new):
            if not ev.bridge:
                out.append(c)
                continue
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                val = ev.fn(tt, xr)
                grad, = torch.autograd.grad(val.sum(), xr)
            gr = grad.reshape(self.n, -1)
            if matrix:  # Var(grad . G dW) / h = |G^T grad|^2
                var = ((gr.unsqueeze(-1) * gx).sum(-2) ** 2).sum(-1)
            elif sde.noise == "scalar":
                var = (gr * gx).sum(-1) ** 2
            else:
                var = ((gr * gx) ** 2).sum(-1)
            same = (g0 * g1 > 0) & live & ~c
            p = torch.exp(-2.0 * g0 * g1 / (var * h).clamp_min(1e-300))
            u = torch.rand(self.n, generator=self.gen, dtype=x.dtype).to(x.device)
            out.append(c | (same & (u < p)))
        return out

    def stop(self) -> bool:
        return self.all_frozen

    def finish(self, sol: Solution) -> None:
        shape = self.pshape
        sol.event_t = self.event_t.reshape(shape)
        sol.event_x = self.event_x.reshape((*shape, self.d) if self.batched
                                           else tuple(self.like.shape))
        sol.event_index = self.event_index.reshape(shape)
        sol.stats["events"] = list(self.fired) if len(self.events) > 1 else self.fired[0]


# ----------------------------------------------------------------------------- the wrapper
class _Frozen(Interpolant):
    """A step's interpolant with the frozen paths held at their event state."""

    __slots__ = ("inner", "mon")

    def __init__(self, inner: Interpolant, mon: Monitor) -> None:
        super().__init__(inner.t, inner.h, inner.x0, inner.x1)
        self.inner, self.mon = inner, mon

    def at(self, time: float) -> Tensor:
        return self(min(1.0, max(0.0, (time - self.t) / self.h)))

    def __call__(self, theta: float) -> Tensor:
        y = self.inner(theta)
        m = self.mon
        if not m.any_frozen:
            return y
        time = self.t + theta * self.h
        d = 1.0 if self.h > 0 else -1.0
        held = m.frozen & (d * (m.event_t - time) <= 0)
        yr = y.reshape(m.n, m.d)
        return torch.where(held.unsqueeze(-1), m.event_x, yr).reshape(y.shape)


class EventSolver(Solver, register=False):
    """Runs ``inner`` with the frozen paths held at their event state and masked out of the
    error estimate (so the paths still running keep their own step-size control)."""

    def __init__(self, inner: Solver, mon: Monitor) -> None:
        self.inner, self.mon = inner, mon
        # until a path is frozen a step is the inner solver's own (no wrapper call per step);
        # the monitor switches to held_step when it freezes one (the loops read .step anew
        # after a step that called the hooks)
        self.step = inner.step  # type: ignore[method-assign]
        mon.on_freeze = self._hold
        self.caps = inner.caps  # type: ignore[misc]
        self.c = inner.c
        self.noise_points = inner.noise_points  # type: ignore[misc]
        self.name = inner.name  # type: ignore[misc]

    def init(self, terms: Terms, t0: float, x0: Tensor, h: float) -> Any:
        return self.inner.init(terms, t0, x0, h)

    def _hold(self) -> None:
        self.step = self.held_step  # type: ignore[method-assign]

    def held_step(self, terms: Terms, tt: tuple[Tensor, ...], t: float, h: float, x: Tensor,
                  state: Any, noise: Any) -> StepResult:
        """The inner step with the frozen paths held at their event state (and their error
        estimate zeroed)."""
        res = self.inner.step(terms, tt, t, h, x, state, noise)
        m = self.mon
        if not m.any_frozen:
            return res
        held = m.frozen.unsqueeze(-1)
        xr = torch.where(held, m.event_x, res.x.reshape(m.n, m.d)).reshape(res.x.shape)
        err = res.err
        if err is not None:
            err = torch.where(held, torch.zeros((), dtype=err.dtype, device=err.device),
                              err.reshape(m.n, m.d)).reshape(err.shape)
        return StepResult(xr, err, res.dense, res.state)

    def interpolant(self, terms: Terms, t: float, h: float, x0: Tensor, x1: Tensor,
                    dense: Any) -> Interpolant:
        return _Frozen(self.inner.interpolant(terms, t, h, x0, x1, dense), self.mon)

    def controller_order(self, noise: str | None) -> float:
        return self.inner.controller_order(noise)

    def check(self, problem: Any) -> None:
        self.inner.check(problem)

    def for_kind(self, kind: str) -> Solver:
        return self

    def begin(self, rtol: float | None, atol: float | None) -> None:
        f = getattr(self.inner, "begin", None)
        if callable(f):
            f(rtol, atol)

    def stats(self) -> dict[str, Any]:
        f = getattr(self.inner, "stats", None)
        return f() if callable(f) else {}

    def failure(self) -> Any:
        f = getattr(self.inner, "failure", None)
        return f() if callable(f) else None

    def __repr__(self) -> str:
        return f"EventSolver({self.inner!r})"


# ------------------------------------------------------------------------------ extension
def _events(spec: Any) -> list[Event]:
    evs = list(spec) if isinstance(spec, (tuple, list)) else [spec]
    if not evs or not all(isinstance(e, Event) for e in evs):
        raise TypeError(f"event: expected an sdeflow.Event or a tuple of them, got {spec!r}")
    return evs


def solve_with_events(args: dict[str, Any], extra: dict[str, Any]) -> Solution:
    """``solve(..., event=...)``: check the events, wrap the solver, run the loop with the
    monitor as a hook (``sdeflow.solve.EXTENSIONS['event']``)."""
    from . import _checks as ck  # noqa: PLC0415

    evs = _events(extra["event"])
    problem = ck.problem(args["problem"], args["t_span"])
    x0 = args["x0"]
    ck.state(x0, isinstance(problem, SDE))
    t0, _, _ = ck.times(args["t_span"], args["ts"], x0)
    is_sde = isinstance(problem, SDE)
    if any(e.bridge for e in evs):
        if not is_sde:
            raise ValueError("bridge: the Brownian-bridge correction is for SDEs; an ODE's "
                             "crossings are located exactly (drop bridge=True)")
        if problem.noise == "general":
            raise ValueError("bridge: the Brownian-bridge correction needs scalar, diagonal "
                             "or additive noise, got noise='general'")
    _, adaptive = _solve._controller(args["steps"], args["dt"], args["rtol"], args["atol"],
                                     args["controller"], args["solver"])
    inner = _solve._pick_solver(problem, args["solver"], adaptive)
    mon = Monitor(evs, x0, t0, problem if is_sde else None, args["seed"])
    if any(e.bridge for e in evs):
        _check_bridge(evs, x0, t0)
    run_args = dict(args)
    run_args["solver"] = EventSolver(inner, mon)
    return _solve.run(**run_args, hooks=[mon])


def _check_bridge(evs: list[Event], x0: Tensor, t0: float) -> None:
    tt = torch.full((), t0, dtype=x0.dtype, device=x0.device)
    for e in evs:
        if not e.bridge:
            continue
        try:
            with torch.enable_grad():
                xr = x0.detach().requires_grad_(True)
                val = e.fn(tt, xr)
                torch.autograd.grad(val.sum(), xr)
        except (RuntimeError, TypeError, AttributeError) as err:
            raise ValueError(f"bridge: the event function must be differentiable by autograd "
                             f"(its gradient scales the crossing probability): {err}") from err


solve_with_events.default = None  # type: ignore[attr-defined]
_solve.EXTENSIONS["event"] = solve_with_events

__all__ = ["Event", "Monitor", "EventSolver", "solve_with_events"]
