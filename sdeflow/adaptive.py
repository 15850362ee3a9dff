"""Adaptive step-size solves of ODEs and SDEs (MATH.md §2); see ``docs/adaptive.md``.

:func:`sdeflow.solve` calls :func:`solve_adaptive` when tolerances are given (``rtol``/``atol``,
a ``controller``) or the solver is adaptive (``solver.adaptive``). One attempted step:

* **ODE** (an embedded Runge--Kutta pair, ``sdeflow.solvers.embedded``): ``x_new`` and the error
  estimate ``e = h sum_i b_err_i k_i`` come from one pass of the tableau engine; FSAL pairs hand
  their last stage to the next step (dopri5: 6 evaluations per step).
* **SDE** (step doubling, ``sdeflow.solvers.adaptive_sde``): one step of ``h`` and two of ``h/2``
  of a fixed-step scheme on the same :class:`~sdeflow.BrownianPath`; ``e = x_half - x_full``.

Error norm (:class:`PIController` ``norm="path_rms"``, the default): with
``tol = atol + rtol * max(|x|, |x_new|)``, ``err = max over paths of RMS(e / tol)`` -- the RMS is
taken over the state within each path, then the worst path decides, so every path meets the
tolerance however large the batch. Paths: an SDE state ``(..., d)`` has one path per leading
index (the RMS runs over ``d``); an ODE state of 2 or more dimensions has one path per index of
its *first* dimension (the RMS runs over the rest: ``(batch, d)``, ``(batch, C, H, W)``), and a
0-D or 1-D ODE state is a single path. ``norm="rms"`` takes one RMS over every element (as
torchdiffeq).

Host synchronisation: one per attempted step -- the error (a 0-dim tensor, made NaN when ``e`` or
``x_new`` is not finite) is read to decide acceptance and the next step. Times are Python floats;
stage times are made on the state's device without a copy from the host.
"""

from __future__ import annotations

import bisect
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .brownian import BrownianPath, BrownianTree, check_compatible
from .control import PIController, initial_step
from .errors import MaxStepsError, NonFiniteError, StepSizeError
from .problems import ODE, SDE, Field
from .solution import Solution
from .solvers.adaptive_sde import StepDoubling
from .solvers.base import SDESolver, Solver
from .solvers.rk import RungeKutta

Tensor = torch.Tensor

DEFAULT_RTOL = 1e-3
DEFAULT_ATOL = 1e-6
DEFAULT_MAX_STEPS = 100_000
SDE_DT0_FRACTION = 0.01  # default first SDE step: this fraction of the span
LAND = 1.001  # a step within this factor of the next landing time stretches onto it
OPTIONS = ("controller", "max_steps", "dt0", "step_ts", "jump_ts", "on_failure", "dense")


# ------------------------------------------------------------------------------------ options
@dataclass
class _Options:
    ctrl: PIController
    rtol: float
    atol: float
    max_steps: int
    dt0: float | None
    step_ts: list[float]
    jump_ts: list[float]
    on_failure: str
    dense: bool


def _time_list(v: Any, name: str) -> list[float]:
    if v is None:
        return []
    if isinstance(v, Tensor):
        if v.dim() > 1:
            raise ValueError(f"{name}: expected a 1-D sequence of times, got shape "
                             f"{tuple(v.shape)}")
        vals = v.detach().reshape(-1).tolist()
    elif isinstance(v, (int, float)):
        vals = [v]
    else:
        try:
            vals = list(v)
        except TypeError:
            raise ValueError(f"{name}: expected a sequence of times, got {v!r}") from None
    out = []
    for t in vals:
        try:
            tf = float(t)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: expected numbers, got {t!r}") from None
        if not math.isfinite(tf):
            raise ValueError(f"{name}: contains NaN or inf")
        out.append(tf)
    return out


def _options(rtol: float | None, atol: float | None, options: dict[str, Any],
             dtype: torch.dtype) -> _Options:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: unknown option(s) of solve; adaptive solves "
                         f"accept {', '.join(OPTIONS)}")
    ctrl = options.get("controller")
    if ctrl is None:
        ctrl = PIController()
    elif not isinstance(ctrl, PIController):
        raise ValueError(f"controller: expected an sdeflow.PIController, got {ctrl!r}")
    for name, v in (("rtol", rtol), ("atol", atol)):
        cv = getattr(ctrl, name)
        if v is not None and cv is not None and float(v) != float(cv):
            raise ValueError(f"{name}: given to solve ({v}) and to the controller ({cv}); "
                             f"pass it once")
    rt = float(rtol if rtol is not None else ctrl.rtol if ctrl.rtol is not None else DEFAULT_RTOL)
    at = float(atol if atol is not None else ctrl.atol if ctrl.atol is not None else DEFAULT_ATOL)
    if rt == 0.0 and at == 0.0:
        raise ValueError("rtol, atol: both are 0; at least one tolerance must be positive")
    eps = torch.finfo(dtype).eps
    if 0.0 < rt < 10 * eps:
        warnings.warn(f"rtol={rt:g} is below what {dtype} resolves (eps={eps:.2g}); expect "
                      f"tiny steps or a StepSizeError", RuntimeWarning, stacklevel=4)
    max_steps = options.get("max_steps", DEFAULT_MAX_STEPS)
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps: expected a positive int, got {max_steps!r}")
    dt0 = options.get("dt0")
    if dt0 is not None:
        if isinstance(dt0, Tensor):
            dt0 = float(dt0)
        if isinstance(dt0, bool) or not isinstance(dt0, (int, float)) or not (
                math.isfinite(dt0) and dt0 > 0):
            raise ValueError(f"dt0: expected a positive finite initial step, got {dt0!r}")
        dt0 = float(dt0)
    on_failure = options.get("on_failure", "raise")
    if on_failure not in ("raise", "return"):
        raise ValueError(f"on_failure: expected 'raise' or 'return', got {on_failure!r}")
    dense = options.get("dense", False)
    if not isinstance(dense, bool):
        raise ValueError(f"dense: expected True or False, got {dense!r}")
    return _Options(ctrl, rt, at, max_steps, dt0, _time_list(options.get("step_ts"), "step_ts"),
                    _time_list(options.get("jump_ts"), "jump_ts"), on_failure, dense)


# ---------------------------------------------------------------------------------- error norm
class _ErrorNorm:
    """``err = ||e / tol||``, ``tol = atol + rtol * max(|x|, |x_new|)`` (MATH.md §2).

    :meth:`measure` returns a 0-dim tensor ``v`` (no host sync) and
    ``s_new = atol + rtol |x_new|`` (cached as the next step's ``s``, since
    ``tol = max(s, s_new)``); :meth:`value` turns the synced ``v`` into ``err``. ``v`` is NaN
    when ``e`` or ``x_new`` holds a NaN/inf, so one read decides acceptance and finiteness.
    """

    def __init__(self, like: Tensor, rtol: float, atol: float, spec: Any, sde: bool) -> None:
        self.rtol, self.atol = rtol, atol
        n = max(1, like.numel())
        self.custom: Callable[[Tensor], Tensor] | None = spec if callable(spec) else None
        self.mode = "custom" if self.custom is not None else spec
        rows = 1
        if self.mode == "path_rms":
            if sde:
                rows = max(1, like.numel() // max(1, like.shape[-1]))
            elif like.dim() >= 2:
                rows = max(1, like.shape[0])
        self.rows, self.cols, self.n = rows, max(1, n // rows), n
        blas = like.dtype in (torch.float32, torch.float64)
        self.flat = rows == 1 and blas and like.numel() > 0
        self.ones = (torch.ones(self.cols, dtype=like.dtype, device=like.device)
                     if rows > 1 and blas else None)
        self.atol_t = torch.full((), atol, dtype=like.dtype, device=like.device)
        self.rtol_t = torch.full((), rtol, dtype=like.dtype, device=like.device)

    def _reduce(self, r: Tensor, inplace: bool = False) -> Tensor:
        """The reduction behind ``err`` (squares for the RMS norms), a 0-dim tensor."""
        if self.mode == "max":
            return r.abs().amax() if r.numel() else r.new_zeros(())
        if self.mode == "custom":
            return self.custom(r)  # type: ignore[misc]
        if self.flat:
            rf = r.reshape(-1)
            return torch.dot(rf, rf)
        sq = r.mul_(r) if inplace else r * r
        if self.mode == "rms" or self.rows == 1:
            return sq.sum()
        sq = sq.reshape(self.rows, self.cols)
        if self.ones is not None:
            return torch.mv(sq, self.ones).amax()
        return sq.sum(-1).amax()

    def scale(self, x: Tensor) -> Tensor:
        """``atol + rtol |x|`` (``x``'s shape)."""
        return torch.addcmul(self.atol_t, x.abs(), self.rtol_t)

    def measure(self, e: Tensor, s_old: Tensor, x_new: Tensor,
                bufs: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """``(v, s_new)``; overwrites ``e``. Runs under ``torch.no_grad``. ``bufs`` (two
        tensors of ``x``'s shape) receive ``s_new`` and ``tol``, so nothing is allocated."""
        if bufs is not None:
            s_new = torch.abs(x_new, out=bufs[0])
            fin = s_new.amax() if s_new.numel() else None
            if self.rtol != 1.0:
                s_new.mul_(self.rtol)
            if self.atol != 0.0:
                s_new.add_(self.atol)
            v = self._reduce(e.div_(torch.maximum(s_old, s_new, out=bufs[1])), inplace=True)
            return (v if fin is None else torch.add(v, fin, alpha=0.0)), s_new
        ax = x_new.abs()
        s_new = torch.addcmul(self.atol_t, ax, self.rtol_t) if self.rtol else ax
        v = self._reduce(e.div_(torch.maximum(s_old, s_new) if self.rtol else self.atol_t),
                         inplace=True)
        # NaN when x_new holds a NaN/inf (a max of |.| does not overflow)
        fin = ax.amax() if ax.numel() else v
        return torch.add(v, fin, alpha=0.0), s_new

    def value(self, v: float) -> float:
        if self.mode in ("max", "custom"):
            return v
        if not v >= 0.0:  # NaN
            return math.nan
        return math.sqrt(v / (self.n if self.mode == "rms" else self.cols))

    def of(self, r: Tensor) -> float:
        """The norm of ``r`` (already divided by the tolerance); syncs."""
        with torch.no_grad():
            return self.value(float(self._reduce(r.detach())))


# ------------------------------------------------------------------------- recording, dense
class _StepInterp:
    """Dense output over one accepted step from ``t`` (step ``h``), ``theta in [0, 1]``.

    ``kind`` is ``"table"`` (the tableau's continuous extension,
    ``x + h sum_i b_i(theta) k_i``), ``"hermite"`` (cubic Hermite through ``x``, ``x_new`` and
    the slopes ``f0``, ``f1``) or ``"linear"`` (SDE paths: the chord between the two states).
    """

    __slots__ = ("t", "h", "x", "x_new", "kind", "data", "slv")

    def __init__(self, t: float, h: float, x: Tensor, x_new: Tensor, kind: str, data: Any,
                 slv: Any = None) -> None:
        self.t, self.h, self.x, self.x_new = t, h, x, x_new
        self.kind, self.data, self.slv = kind, data, slv

    def __call__(self, theta: float) -> Tensor:
        x, h = self.x, self.h
        if theta == 1.0:
            return self.x_new
        if theta == 0.0:
            return x
        if self.kind == "table":
            k = self.data
            terms = [(i, w) for i, w in self.slv.dense_weights(theta) if w != 0.0]
            if not terms:
                return x
            i, w = terms[0]
            y = torch.add(x, k[i], alpha=w * h)
            for i, w in terms[1:]:
                y.add_(k[i], alpha=w * h)
            return y
        if self.kind == "hermite":
            f0, f1 = self.data
            th2, th3 = theta * theta, theta * theta * theta
            h00, h10 = 2 * th3 - 3 * th2 + 1, th3 - 2 * th2 + theta
            h01, h11 = -2 * th3 + 3 * th2, th3 - th2
            y = torch.mul(x, h00).add_(self.x_new, alpha=h01)
            return y.add_(f0, alpha=h10 * h).add_(f1, alpha=h11 * h)
        return torch.lerp(x, self.x_new, theta)


class _DenseSolution:
    """``Solution.evaluate``: the stored step interpolants, looked up by time."""

    def __init__(self, steps: list[_StepInterp], t0: float, t_reached: float, x0: Tensor,
                 direction: float) -> None:
        self.steps, self.t0, self.t_reached = steps, t0, t_reached
        self.x0, self.direction = x0, direction
        self.keys = [direction * s.t for s in steps]

    def _one(self, t: float) -> Tensor:
        d = self.direction
        lo, hi = sorted((self.t0, self.t_reached))
        span = abs(self.t_reached - self.t0)
        slack = 1e-12 * max(1.0, abs(self.t0), abs(self.t_reached))
        if not (lo - slack <= t <= hi + slack):
            raise ValueError(f"t: {t} lies outside the solved span [{lo}, {hi}]")
        if not self.steps or (span > 0 and d * (t - self.t0) <= 0):
            return self.x0
        i = max(0, bisect.bisect_right(self.keys, d * t) - 1)
        s = self.steps[i]
        theta = min(1.0, max(0.0, (t - s.t) / s.h))
        return s(theta)

    def __call__(self, t: float | Tensor) -> Tensor:
        if isinstance(t, Tensor):
            if t.dim() == 0:
                return self._one(float(t))
            if t.dim() != 1:
                raise ValueError(f"t: expected a float, a 0-dim or a 1-D tensor, got shape "
                                 f"{tuple(t.shape)}")
            return torch.stack([self._one(float(v)) for v in t.tolist()])
        if isinstance(t, (int, float)):
            return self._one(float(t))
        raise ValueError(f"t: expected a float or a tensor, got {type(t).__name__}")


class _Recorder:
    """Saved outputs, dense steps, counters and the failure path of one adaptive solve."""

    def __init__(self, x0: Tensor, t0: float, t1: float, outputs: list[float], has_ts: bool,
                 save_all: bool, o: _Options, direction: float) -> None:
        self.x0, self.t0, self.t1 = x0, t0, t1
        self.outs = outputs
        self.has_ts = has_ts
        self.every = save_all and not has_ts
        self.o = o
        self.direction = direction
        self.saved_t: list[float] = [t0]
        self.saved: list[Tensor] = [x0]
        self.oi = 1
        self.steps: list[_StepInterp] = []
        self.stats: dict[str, Any] = {"nfe": 0, "steps": 0, "accepted": 0, "rejected": 0}

    def needs_interior(self, t_new: float) -> bool:
        """Whether an output time lies strictly before ``t_new`` (needs the interpolant)."""
        if self.o.dense:
            return True
        if self.every or self.oi >= len(self.outs):
            return False
        return self.direction * (self.outs[self.oi] - t_new) < 0

    def accepted(self, t_new: float, x_new: Tensor, interp: Callable[[], _StepInterp]) -> bool:
        """Save what falls in the accepted step ending at ``t_new``; returns whether a reference
        to ``x_new`` was kept (then its buffer may not be reused)."""
        st: _StepInterp | None = None
        kept = False
        if self.o.dense:
            st = interp()
            self.steps.append(st)
            kept = True
        if self.every:
            self.saved_t.append(t_new)
            self.saved.append(x_new)
            return True
        outs, d = self.outs, self.direction
        while self.oi < len(outs) and d * (outs[self.oi] - t_new) <= 0:
            to = outs[self.oi]
            if to == t_new:
                y = x_new
                kept = True
            else:
                st = st or interp()
                y = st((to - st.t) / st.h)
            self.saved_t.append(to)
            self.saved.append(y)
            self.oi += 1
        return kept

    def solution(self, status: str, t_reached: float, x: Tensor) -> Solution:
        ts, ys = list(self.saved_t), list(self.saved)
        if status != "success" and not self.has_ts and ts[-1] != t_reached:
            ts.append(t_reached)
            ys.append(x)
        ref = self.x0
        t_out = torch.tensor(ts, dtype=torch.float64).to(dtype=ref.dtype, device=ref.device)
        interp = (_DenseSolution(self.steps, self.t0, t_reached, self.x0, self.direction)
                  if self.o.dense else None)
        self.stats["steps"] = self.stats["accepted"] + self.stats["rejected"]
        return Solution(ts=t_out, ys=torch.stack(ys), stats=self.stats, status=status,
                        t_reached=t_reached, _interp=interp)

    def fail(self, status: str, t: float, x: Tensor, h_abs: float, dt_min: float,
             t_bad: float) -> Solution:
        st = self.stats
        where = (f"the solve reached t={t:.6g} of [{self.t0:.6g}, {self.t1:.6g}] after "
                 f"{st['accepted']} accepted and {st['rejected']} rejected steps")
        if self.o.on_failure == "return":
            return self.solution(status, t, x)
        if status == "max_steps":
            raise MaxStepsError(
                f"max_steps={self.o.max_steps} exceeded: {where} (last step size "
                f"{h_abs:.3g}); raise max_steps, loosen rtol/atol, or pass "
                f"on_failure='return' for the partial solution", t_reached=t)
        if status == "nonfinite":
            raise NonFiniteError(
                f"non-finite values (NaN/inf) in every attempted step from t={t:.6g} down to "
                f"the step size dt_min={dt_min:.3g}: {where}", t=t_bad, t_reached=t)
        raise StepSizeError(
            f"step size {h_abs:.3g} fell below dt_min={dt_min:.3g} at t={t:.6g} (the time "
            f"reached); {where}. The problem may be stiff or singular there", t_reached=t)


class _Work:
    """Buffers (the state's shape) reused across the steps of an ODE solve without autograd.

    ``outs()`` is the ``out`` list of :meth:`RungeKutta.embedded_step`: the error, the stage
    inputs, and ``x_new`` from a pool of state buffers. A state's buffer goes back to the pool
    when the next state is accepted, unless the solution kept a reference to it (a saved
    output, dense output) or it is not ours (``x0``). ``norm_bufs()`` are the scale ``s_new``
    (swapped with the current state's scale on acceptance) and the tolerance.
    """

    def __init__(self, like: Tensor, stages: int, fsal: bool, pool: bool) -> None:
        self.like = like
        mk = lambda: torch.empty_like(like, memory_format=torch.contiguous_format)  # noqa: E731
        self.fsal, self.use_pool = fsal, pool
        self.s = stages
        self.stage: list[Tensor | None] = [mk()] + [mk() for _ in range(1, stages)]
        self.pool: list[Tensor] = []
        self.owned: set[int] = set()
        self.pinned: set[int] = set()
        self.cur: Tensor | None = None  # x_new buffer of the current attempt
        self.scale_new, self.tol = mk(), mk()

    def outs(self) -> list[Tensor | None]:
        buf = self.pool.pop() if self.pool else torch.empty_like(self.like)
        self.owned.add(id(buf))
        self.cur = buf
        out = list(self.stage) + [None]
        if self.fsal:
            out[self.s - 1] = buf
        else:
            out[self.s] = buf
        return out

    def norm_bufs(self) -> tuple[Tensor, Tensor]:
        return self.scale_new, self.tol

    def aliased(self, k: Sequence[Tensor], x: Tensor) -> bool:
        """Whether a stage derivative shares memory with a buffer or the state."""
        ptrs = {b.untyped_storage().data_ptr() for b in self.stage if b is not None}
        ptrs.add(x.untyped_storage().data_ptr())
        if self.cur is not None:
            ptrs.add(self.cur.untyped_storage().data_ptr())
        return any(kk.untyped_storage().data_ptr() in ptrs for kk in k)

    def accept(self, x_old: Tensor, kept: bool) -> None:
        """``cur`` became the state; ``x_old``'s buffer is free unless referenced."""
        if kept and self.cur is not None:
            self.pinned.add(id(self.cur))
        i = id(x_old)
        if self.use_pool and i in self.owned and i not in self.pinned:
            self.pool.append(x_old)
        self.cur = None

    def reject(self) -> None:
        if self.cur is not None:
            self.pool.append(self.cur)
            self.cur = None

    def swap_scale(self, s_old: Tensor) -> None:
        self.scale_new = s_old


def _landing(t0: float, t1: float, extra: Sequence[float], direction: float) -> list[float]:
    """Times the steps must land on, strictly after ``t0`` up to ``t1``, in order."""
    inside = {t for t in extra if direction * (t - t0) > 0 and direction * (t1 - t) > 0}
    return sorted(inside, key=lambda t: direction * t) + [t1]


def _dt_limits(o: _Options, t0: float, t1: float) -> tuple[float, float]:
    span = abs(t1 - t0)
    floor = 1e-14 * max(abs(t0), abs(t1), span)
    dt_min = max(o.ctrl.dt_min if o.ctrl.dt_min is not None else 0.0, floor)
    dt_max = o.ctrl.dt_max if o.ctrl.dt_max is not None else span
    return dt_min, dt_max


# ------------------------------------------------------------------------------------ entry
def solve_adaptive(
    problem: ODE | SDE,
    x0: Tensor,
    slv: Solver,
    t_start: float,
    t_end: float,
    outputs: list[float],
    has_ts: bool,
    save_all: bool,
    rtol: float | None,
    atol: float | None,
    seed: int | None,
    brownian: BrownianPath | BrownianTree | None,
    **options: Any,
) -> Solution:
    """Adaptive solve from ``t_start`` to ``t_end``, saving at ``outputs`` (called by ``solve``).

    Args:
        problem, x0, slv: the problem, the initial state and the resolved solver instance.
        t_start, t_end, outputs: the span and the output times (``outputs[0] == t_start``,
            ``outputs[-1] == t_end``); ``has_ts`` says they came from ``ts``.
        save_all: with ``t_span``, save every accepted step.
        rtol, atol: tolerances given to ``solve`` (``None``: the controller's or the defaults).
        seed, brownian: the Brownian path of an SDE (see ``solve``).
        **options: ``controller`` (a :class:`~sdeflow.PIController`), ``max_steps`` (attempted
            steps, default 100000), ``dt0`` (first step magnitude; default: Hairer's heuristic
            for ODEs, 1% of the span for SDEs), ``step_ts`` (times to step onto), ``jump_ts``
            (discontinuities of the fields in time: stepped onto, stages at a jump see its
            left limit, the next step restarts from the right limit), ``on_failure``
            (``"raise"`` or ``"return"``), ``dense`` (keep every step's interpolant for
            ``Solution.evaluate``; default False).

    Returns:
        a :class:`~sdeflow.Solution`; ``status`` is ``"success"`` unless ``on_failure="return"``
        and the solve stopped (``"max_steps"``, ``"dt_min"``, ``"nonfinite"``).

    Raises:
        ValueError: bad options or a solver without an error estimate.
        MaxStepsError, StepSizeError, NonFiniteError: see ``on_failure``.
    """
    o = _options(rtol, atol, options, x0.dtype)
    if isinstance(problem, SDE):
        if seed is not None and brownian is not None:
            raise ValueError("seed, brownian: pass one of them (a BrownianPath carries its "
                             "own seed)")
        if not isinstance(slv, SDESolver):
            raise ValueError(f"solver: {slv!r} is not an SDE solver")
        sd = slv if isinstance(slv, StepDoubling) else StepDoubling(slv)
        return _solve_sde(problem, x0, sd, t_start, t_end, outputs, has_ts, save_all, o, seed,
                          brownian)
    if not isinstance(slv, RungeKutta) or slv.tableau.b_err is None:
        from . import solvers as _solvers  # noqa: PLC0415

        adaptive = [n for n in _solvers.names(sde=False) if getattr(_solvers.get(n), "adaptive",
                                                                    False)]
        raise ValueError(f"solver: {getattr(slv, 'name', slv)!r} has no error estimate, so it "
                         f"cannot run with tolerances; adaptive ODE solvers: "
                         f"{', '.join(adaptive)} (or pass steps/dt for fixed steps)")
    return _solve_ode(problem, x0, slv, t_start, t_end, outputs, has_ts, save_all, o)


def _full(v: float, like: Tensor) -> Tensor:
    """A 0-dim tensor on ``like``'s device and dtype, with no host-to-device copy."""
    return torch.full((), v, dtype=like.dtype, device=like.device)


def _side(t: float, toward: float, like: Tensor) -> Tensor:
    """The time next to ``t`` (in ``like``'s dtype) on the side of ``toward``."""
    return torch.nextafter(_full(t, like), _full(toward, like))


# -------------------------------------------------------------------------------------- ODEs
def _solve_ode(problem: ODE, x0: Tensor, slv: RungeKutta, t0: float, t1: float,
               outputs: list[float], has_ts: bool, save_all: bool, o: _Options) -> Solution:
    from .solve import _checked, _same_shape  # noqa: PLC0415  (solve imports this module)

    tab = slv.tableau
    q = min(tab.order, tab.embedded_order or tab.order) + 1.0
    ctrl = o.ctrl
    direction = 1.0 if t1 > t0 else -1.0
    dt_min, dt_max = _dt_limits(o, t0, t1)
    u = problem._field()
    uc = _checked(u, "vector_field", _same_shape)
    norm = _ErrorNorm(x0, o.rtol, o.atol, ctrl.norm, sde=False)
    rec = _Recorder(x0, t0, t1, outputs, has_ts, save_all, o, direction)
    stats = rec.stats
    landing = _landing(t0, t1, [*o.step_ts, *o.jump_ts], direction)
    jumps = set(o.jump_ts)
    fsal = tab.fsal
    has_table = tab.dense is not None
    c_vec = torch.tensor(slv.c, dtype=torch.float64).to(dtype=x0.dtype, device=x0.device)
    ones_at = [i for i, c in enumerate(slv.c) if c == 1.0]
    evals = tab.stages - 1  # the first stage is always known (FSAL or computed once per step)

    k1 = uc(_full(t0, x0), x0)
    stats["nfe"] = 1
    # Without autograd every intermediate lives in a buffer reused from step to step (large
    # batches then allocate nothing but the field's own outputs). The FSAL/x_new buffers come
    # from a pool: a state's buffer is recycled once nothing refers to it.
    work = None
    if not (torch.is_grad_enabled() and (x0.requires_grad or k1.requires_grad)):
        work = _Work(x0, tab.stages, fsal, pool=not o.dense)
    with torch.no_grad():
        ax = norm.scale(x0)
        if o.dt0 is not None:
            h_abs = o.dt0
        else:
            h_abs = initial_step(u, t0, x0.detach(), k1.detach(), direction, q, o.rtol, o.atol,
                                 norm.of)
            stats["nfe"] += 1
    h_abs = min(max(h_abs, dt_min), dt_max)
    t, x = t0, x0
    err_prev, after_reject, last_bad = 1e-4, False, False
    li, target = 0, landing[0]
    fn: Field = uc
    accepted = rejected = 0
    max_steps = o.max_steps
    while True:
        if accepted + rejected >= max_steps:
            stats.update(accepted=accepted, rejected=rejected)
            return rec.fail("max_steps", t, x, h_abs, dt_min, t)
        rem = target - t
        if abs(rem) <= h_abs * LAND:
            h, t_new, landed = rem, target, True
        else:
            h = direction * h_abs
            t_new, landed = t + h, False
        tt = (c_vec * h).add_(t).unbind(0)
        at_jump = landed and t_new in jumps
        if at_jump and ones_at:
            left = _side(t_new, t, x)
            tt = tuple(left if i in ones_at else v for i, v in enumerate(tt))
        if work is not None:
            x_new, e, k = slv.embedded_step(fn, tt, x, h, k1, work.outs())
            if fn is uc and work.aliased(k, x):
                work = None  # the field returns (a view of) its input: no buffer reuse
        else:
            x_new, e, k = slv.embedded_step(fn, tt, x, h, k1)
        fn = u
        stats["nfe"] += evals
        with torch.no_grad():
            v, ax_new = norm.measure(e, ax, x_new, None if work is None else work.norm_bufs())
        err = norm.value(v.item())
        if err <= 1.0:
            accepted += 1
            fac = ctrl.accept_factor(err, err_prev, q, after_reject)
            err_prev, after_reject = max(err, 1e-4), False
            done = landed and li == len(landing) - 1
            if at_jump:
                k_next = None if done else u(_side(t_new, t1, x), x_new)
                f1 = None  # the Hermite slope at a jump is its left limit: from the table only
            elif fsal:
                k_next = f1 = k[-1]
            else:
                need = not done or (not has_table and rec.needs_interior(t_new))
                k_next = f1 = u(_full(t_new, x), x_new) if need else None
            if k_next is not None and (at_jump or not fsal):
                stats["nfe"] += 1

            def interp(t=t, h=h, x=x, x_new=x_new, k=k, k1=k1, f1=f1) -> _StepInterp:
                if has_table:
                    return _StepInterp(t, h, x, x_new, "table", k, slv)
                if f1 is None:  # jump without a table: left-limit slope, one evaluation
                    f1 = u(_side(t + h, t, x), x_new)
                    stats["nfe"] += 1
                return _StepInterp(t, h, x, x_new, "hermite", (k1, f1))

            kept = rec.accepted(t_new, x_new, interp)
            if work is not None:
                work.accept(x, kept)
                work.swap_scale(ax)
            t, x, ax, k1 = t_new, x_new, ax_new, k_next
            if landed:
                li += 1
                if li == len(landing):
                    break
                target = landing[li]
            # a step cut short to land on a time says little about the next one: keep the
            # proposal it was cut from (shrunk if the short step's error asks for it)
            h_abs = max(abs(h) * fac, h_abs * min(fac, 1.0)) if landed else abs(h) * fac
            last_bad = False
        else:
            if work is not None:
                work.reject()
            rejected += 1
            last_bad = not math.isfinite(err)
            after_reject = True
            h_abs = abs(h) * ctrl.reject_factor(err, q)
        if h_abs < dt_min:
            stats.update(accepted=accepted, rejected=rejected)
            status = "nonfinite" if last_bad else "dt_min"
            return rec.fail(status, t, x, h_abs, dt_min, t + h)
        h_abs = min(h_abs, dt_max)
    stats.update(accepted=accepted, rejected=rejected)
    return rec.solution("success", t1, x)


# -------------------------------------------------------------------------------------- SDEs
def _solve_sde(problem: SDE, x0: Tensor, slv: StepDoubling, t0: float, t1: float,
               outputs: list[float], has_ts: bool, save_all: bool, o: _Options,
               seed: int | None, brownian: BrownianPath | BrownianTree | None) -> Solution:
    from .solve import _checked, _general_shape, _same_shape  # noqa: PLC0415

    base = slv.base
    if hasattr(base, "configure"):
        base.configure(problem.kind)  # type: ignore[attr-defined]
    ctrl = o.ctrl
    q = base.strong_order_for(problem.noise) + 0.5
    direction = 1.0 if t1 > t0 else -1.0
    dt_min, dt_max = _dt_limits(o, t0, t1)
    f, g = problem._fields()
    expect_g = _general_shape if problem.noise == "general" else _same_shape
    fc, gc = _checked(f, "drift", _same_shape), _checked(g, "diffusion", expect_g)
    stats_extra = {"nfe_drift": 0, "nfe_diffusion": 0}
    m = None
    if problem.noise == "general":
        if brownian is not None:
            m = brownian.shape[-1]
        else:
            m = gc(_full(t0, x0), x0).shape[-1]
            stats_extra["nfe_diffusion"] = 1
    bshape = problem.brownian_shape(x0.shape, m)
    lo, hi = min(t0, t1), max(t0, t1)
    if brownian is not None:
        check_compatible(brownian, bshape, x0.dtype, x0.device, (t0, t1))
        bm = brownian
    else:
        bm = BrownianPath(bshape, t0=lo, t1=hi, seed=seed, dtype=x0.dtype, device=x0.device)
    first = base.build(fc, gc, problem.noise)
    step = base.build(f, g, problem.noise)
    nd, ng = base.evals_per_step()
    space_time = base.needs_space_time

    norm = _ErrorNorm(x0, o.rtol, o.atol, ctrl.norm, sde=True)
    rec = _Recorder(x0, t0, t1, outputs, has_ts, save_all, o, direction)
    stats = rec.stats
    stats.update(stats_extra)
    # SDE steps land on every output time: an interpolant is not a sample of the solution
    landing = _landing(t0, t1, [*outputs, *o.step_ts, *o.jump_ts], direction)
    jumps = set(o.jump_ts)
    c_vec = torch.tensor(base.c, dtype=torch.float64).to(dtype=x0.dtype, device=x0.device)
    ones_at = [i for i, c in enumerate(base.c) if c == 1.0]
    zeros_at = [i for i, c in enumerate(base.c) if c == 0.0]

    def times(t: float, h: float, left_end: float | None, right_start: bool
              ) -> tuple[Tensor, ...]:
        """Stage times ``t + c h``; at a jump ``left_end`` the ``c = 1`` stages see its left
        limit, and after a jump the ``c = 0`` stages its right limit."""
        tt = (c_vec * h).add_(t).unbind(0)
        if left_end is not None and ones_at:
            left = _side(left_end, t, x0)
            tt = tuple(left if i in ones_at else v for i, v in enumerate(tt))
        if right_start and zeros_at:
            right = _side(t, t + h, x0)
            tt = tuple(right if i in zeros_at else v for i, v in enumerate(tt))
        return tt

    h_abs = min(max(o.dt0 if o.dt0 is not None else SDE_DT0_FRACTION * abs(t1 - t0), dt_min),
                dt_max)
    t, x = t0, x0
    with torch.no_grad():
        ax = norm.scale(x0)
    err_prev, after_reject, last_bad, after_jump = 1e-4, False, False, False
    li, target = 0, landing[0]
    fn = first
    accepted = rejected = 0
    while True:
        if accepted + rejected >= o.max_steps:
            stats.update(accepted=accepted, rejected=rejected)
            return rec.fail("max_steps", t, x, h_abs, dt_min, t)
        rem = target - t
        if abs(rem) <= h_abs * LAND:
            h, t_new, landed = rem, target, True
        else:
            h = direction * h_abs
            t_new, landed = t + h, False
        at_jump = landed and t_new in jumps
        t_mid = t + 0.5 * h
        dw, it = bm.grid([t, t_mid, t_new], space_time=space_time)
        hh = 0.5 * h
        dw_full = dw[0] + dw[1]
        if space_time:
            # int_t^{t+h} (W_r - W_t) dr = I_0 + I_1 + (W_{t+h/2} - W_t) h/2
            it_full = torch.add(it[0] + it[1], dw[0], alpha=hh)
            n_full, n0, n1 = (dw_full, it_full), (dw[0], it[0]), (dw[1], it[1])
        else:
            n_full, n0, n1 = (dw_full,), (dw[0],), (dw[1],)
        jump_end = t_new if at_jump else None
        x_full = fn(times(t, h, jump_end, after_jump), x, h, n_full)
        fn = step
        x_half = step(times(t, hh, None, after_jump), x, hh, n0)
        x_two = step(times(t_mid, hh, jump_end, False), x_half, hh, n1)
        stats["nfe_drift"] += 3 * nd
        stats["nfe_diffusion"] += 3 * ng
        with torch.no_grad():
            e = x_two - x_full
            v, ax_new = norm.measure(e, ax, x_two)
        err = norm.value(v.item())
        if err <= 1.0:
            accepted += 1
            fac = ctrl.accept_factor(err, err_prev, q, after_reject)
            err_prev, after_reject = max(err, 1e-4), False

            def interp(t=t, h=h, x=x, x_new=x_two) -> _StepInterp:
                return _StepInterp(t, h, x, x_new, "linear", None)

            rec.accepted(t_new, x_two, interp)
            t, x, ax = t_new, x_two, ax_new
            after_jump = at_jump
            if landed:
                li += 1
                if li == len(landing):
                    break
                target = landing[li]
            h_abs = max(abs(h) * fac, h_abs * min(fac, 1.0)) if landed else abs(h) * fac
            last_bad = False
        else:
            rejected += 1
            last_bad = not math.isfinite(err)
            after_reject = True
            h_abs = abs(h) * ctrl.reject_factor(err, q)
        if h_abs < dt_min:
            stats.update(accepted=accepted, rejected=rejected)
            stats["nfe"] = stats["nfe_drift"] + stats["nfe_diffusion"]
            return rec.fail("nonfinite" if last_bad else "dt_min", t, x, h_abs, dt_min, t + h)
        h_abs = min(h_abs, dt_max)
        stats["nfe"] = stats["nfe_drift"] + stats["nfe_diffusion"]
    stats.update(accepted=accepted, rejected=rejected)
    stats["nfe"] = stats["nfe_drift"] + stats["nfe_diffusion"]
    return rec.solution("success", t1, x)


__all__ = ["solve_adaptive", "DEFAULT_RTOL", "DEFAULT_ATOL", "DEFAULT_MAX_STEPS"]
