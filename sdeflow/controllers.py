"""Step-size controllers and error norms (docs/math.md §5, §11).

* :class:`ConstantController` -- a fixed grid: ``steps`` equal steps or steps of ``dt`` (the last
  one shorter if ``dt`` does not divide the span); every requested output time of an SDE solve
  (and every ``step_ts``) is merged into it so that the solver steps exactly onto it. A requested
  time within ``snap |span|`` of a grid point (``1e-10``, or a few units in the last place of the
  dtype the times were given in) replaces that point instead of adding a tiny step.
* :class:`PIController` -- adaptive steps from an error estimate (PI/PID gains), with
  :func:`initial_step` (Hairer's heuristic) and :class:`ErrorNorm`.

``solve(..., steps=n)`` / ``dt=`` are sugar for ``ConstantController(steps=n)`` / ``(dt=dt)``;
``rtol=``/``atol=`` for ``PIController(rtol=..., atol=...)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

Tensor = torch.Tensor

SNAP = 1e-10


def fixed_grid(
    t_start: float,
    t_end: float,
    steps: int | None,
    dt: float | None,
    outputs: Sequence[float] = (),
    snap: float = SNAP,
) -> tuple[list[float], list[int]]:
    """Build a fixed time grid.

    Args:
        t_start, t_end: the span (``t_end < t_start`` runs backwards).
        steps: number of equal steps, or ``None`` when ``dt`` is given.
        dt: step magnitude (> 0), or ``None`` when ``steps`` is given.
        outputs: monotone output times between ``t_start`` and ``t_end`` (inclusive).
        snap: relative distance (to the span) within which an output time replaces a grid point.

    Returns:
        ``(grid, out_index)``: the grid as floats (monotone, from ``t_start`` to ``t_end``) and,
        for each output time, its index in the grid.
    """
    span = t_end - t_start
    sign = 1.0 if span > 0 else -1.0
    if steps is not None:
        base = [t_start + span * k / steps for k in range(steps)] + [t_end]
    elif dt is not None:
        n = max(1, math.ceil(abs(span) / dt - 1e-9))
        base = [t_start + sign * dt * k for k in range(n)] + [t_end]
    else:
        raise ValueError("steps, dt: expected one of them")
    tol = snap * abs(span)
    grid: list[float] = []
    out_index: list[int] = []
    outs = list(outputs)
    j = 0
    # merge two monotone sequences (in the direction of integration)
    key = (lambda t: t) if sign > 0 else (lambda t: -t)
    for g in base:
        while j < len(outs) and key(outs[j]) < key(g) - tol:
            if grid and abs(grid[-1] - outs[j]) <= tol:
                grid[-1] = outs[j]
            else:
                grid.append(outs[j])
            out_index.append(len(grid) - 1)
            j += 1
        if j < len(outs) and abs(outs[j] - g) <= tol:
            grid.append(outs[j])
            while j < len(outs) and abs(outs[j] - g) <= tol:
                out_index.append(len(grid) - 1)
                j += 1
        elif not grid or abs(grid[-1] - g) > tol:
            grid.append(g)
    return grid, out_index


MAX_GRID = 10_000_000  # steps a constant controller may build


@dataclass(frozen=True)
class ConstantController:
    """A fixed grid of ``steps`` equal steps, or of steps of magnitude ``dt`` (docs/math.md §5).

    Exactly one of ``steps`` (a positive int) and ``dt`` (a positive finite number) is given.
    """

    steps: int | None = None
    dt: float | None = None

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.dt is None):
            raise ValueError("steps, dt: pass exactly one of them")
        if self.steps is not None:
            s = self.steps
            if isinstance(s, bool) or not isinstance(s, int) or s < 1:
                raise ValueError(f"steps: expected a positive int, got {s!r}")
            if s > MAX_GRID:
                raise ValueError(f"steps: {s} steps exceed the limit of {MAX_GRID} a fixed "
                                 f"grid may have")
        else:
            d = self.dt
            if isinstance(d, Tensor):
                if d.numel() != 1:
                    raise ValueError(f"dt: expected a number, got a tensor of shape "
                                     f"{tuple(d.shape)}")
                d = float(d)
                object.__setattr__(self, "dt", d)
            if isinstance(d, bool) or not isinstance(d, (int, float)) or not (
                    math.isfinite(d) and d > 0):
                raise ValueError(f"dt: expected a positive finite step size, got {d!r}")
            object.__setattr__(self, "dt", float(d))

    def grid(self, t0: float, t1: float, outputs: Sequence[float] = (),
             snap: float = SNAP) -> tuple[list[float], list[int]]:
        """``(grid, out_index)`` from ``t0`` to ``t1`` with ``outputs`` merged in (see
        :func:`fixed_grid`); raises ``ValueError`` naming ``dt`` if the grid would be huge."""
        if self.dt is not None:
            n = abs(t1 - t0) / self.dt
            if not n <= MAX_GRID:
                raise ValueError(f"dt: {self.dt!r} makes {n:.3g} steps over the span "
                                 f"[{t0}, {t1}]; at most {MAX_GRID} are allowed")
        return fixed_grid(t0, t1, self.steps, self.dt, outputs, snap)


# ------------------------------------------------------------------------------- adaptive control
NormSpec = str | Callable[[Tensor], Tensor]
NORMS = ("path_rms", "rms", "max")


@dataclass(frozen=True)
class PIController:
    """Step-size control of adaptive solves (docs/math.md §5.2).

    With the error estimate ``e`` of a step from ``x`` to ``x_new``,

        tol_i = atol + rtol * max(|x_i|, |x_new_i|),     err = ||e / tol||,

    the step is accepted when ``err <= 1``, and the next step is

        h_new = h * clip(safety * err^(-beta1/q) * err_prev^(beta2/q) * err_prev2^(-beta3/q),
                         fac_min, fac_max),

    where ``err_prev``, ``err_prev2`` are the errors of the last two accepted steps (``1e-4``
    before there are any; ``beta3 > 0`` makes it a PID controller) and
    ``q`` is the order of the error estimate plus one (``p_hat + 1`` for an embedded pair,
    ``strong order + 1/2`` for step doubling of an SDE scheme). The defaults ``beta1 = 1``,
    ``beta2 = 0`` are the classical I-controller (as scipy, torchdiffeq and diffrax) for ODEs;
    the PI gains ``beta1 = 0.7, beta2 = 0.4`` (docs/math.md §5.2; the default of adaptive SDE
    solves, whose error estimates are noisy) damp step-size oscillation (fewer rejections on
    non-smooth problems, a little more work on smooth ones). After a rejection the step shrinks
    by ``max(fac_min, safety * err^(-1/q))`` and may not grow on the next accepted step; a NaN or
    infinite ``err`` counts as a rejection with factor ``fac_min``.

    With a steady error the formula settles where ``safety * err^(-(beta1 - beta2)/q) = 1``, i.e.
    at ``err = safety^(q / (beta1 - beta2))``; the default safety ``0.9^(beta1 - beta2)`` puts
    that at ``0.9^q`` for any gains (the I-controller with safety 0.9).

    Args:
        rtol, atol: relative and absolute tolerance (``None``: those passed to ``solve``, else
            the defaults ``rtol=1e-3``, ``atol=1e-6``).
        safety: safety factor in (0, 1] (``None``: ``0.9^(beta1 - beta2)``, see above).
        fac_min, fac_max: bounds of the step-size change per step (``0 < fac_min < 1 <
            fac_max``).
        beta1, beta2, beta3: the gains (``beta1 > 0``, ``beta2, beta3 >= 0``; ``beta2 = beta3 =
            0`` is I-control, ``beta3 = 0`` PI-control).
        dt_min: smallest step magnitude; a step proposal below it stops the solve
            (``StepSizeError``, or status ``"dt_min"``/``"nonfinite"`` with
            ``on_failure="return"``). ``None``: 0; steps are always at least
            ``1e-14 * max(|t|, 1e-8 |t1 - t0|)`` at the current time ``t``.
        dt_max: largest step magnitude (``None``: the span).
        norm: ``"path_rms"`` (default: RMS over the state within each path, then the worst
            path), ``"rms"`` (RMS over every element, as torchdiffeq), ``"max"`` (largest
            element), or a callable mapping ``e / tol`` (the state's shape) to a 0-dim tensor.

    Raises:
        ValueError: a parameter out of range, naming it.
    """

    rtol: float | None = None
    atol: float | None = None
    safety: float | None = None
    fac_min: float = 0.2
    fac_max: float = 10.0
    beta1: float = 1.0
    beta2: float = 0.0
    beta3: float = 0.0
    dt_min: float | None = None
    dt_max: float | None = None
    norm: NormSpec = "path_rms"

    def __post_init__(self) -> None:
        def num(name: str, v: object) -> float:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name}: expected a finite number, got {v!r}")
            return float(v)

        for name in ("rtol", "atol"):
            v = getattr(self, name)
            if v is not None and num(name, v) < 0:
                raise ValueError(f"{name}: expected a non-negative tolerance, got {v!r}")
        if self.safety is not None and not 0 < num("safety", self.safety) <= 1:
            raise ValueError(f"safety: expected 0 < safety <= 1, got {self.safety!r}")
        if not 0 < num("fac_min", self.fac_min) < 1:
            raise ValueError(f"fac_min: expected 0 < fac_min < 1, got {self.fac_min!r}")
        if not num("fac_max", self.fac_max) > 1:
            raise ValueError(f"fac_max: expected fac_max > 1, got {self.fac_max!r}")
        if num("beta1", self.beta1) <= 0:
            raise ValueError(f"beta1: expected a positive gain, got {self.beta1!r}")
        if num("beta2", self.beta2) < 0:
            raise ValueError(f"beta2: expected a non-negative gain, got {self.beta2!r}")
        if num("beta3", self.beta3) < 0:
            raise ValueError(f"beta3: expected a non-negative gain, got {self.beta3!r}")
        for name in ("dt_min", "dt_max"):
            v = getattr(self, name)
            if v is not None and (num(name, v) < 0 or (name == "dt_max" and v == 0)):
                raise ValueError(f"{name}: expected a positive step magnitude, got {v!r}")
        if self.dt_min is not None and self.dt_max is not None and self.dt_min > self.dt_max:
            raise ValueError(f"dt_min, dt_max: dt_min={self.dt_min} exceeds dt_max={self.dt_max}")
        if not callable(self.norm) and self.norm not in NORMS:
            raise ValueError(f"norm: expected one of {NORMS} or a callable, got {self.norm!r}")
        if self.safety is None:
            object.__setattr__(self, "safety", 0.9 ** max(self.beta1 - self.beta2, 0.0))

    def accept_factor(self, err: float, err_prev: float, q: float, after_reject: bool,
                      err_prev2: float = 1e-4) -> float:
        """Step factor after an accepted step (``err <= 1``): the PI(D) formula, clipped."""
        if err <= 0.0:
            fac = self.fac_max
        else:
            fac = self.safety * err ** (-self.beta1 / q) * err_prev ** (self.beta2 / q)  # type: ignore[operator]
            if self.beta3:
                fac *= err_prev2 ** (-self.beta3 / q)
            fac = min(self.fac_max, max(self.fac_min, fac))
        return min(fac, 1.0) if after_reject else fac

    def reject_factor(self, err: float, q: float) -> float:
        """Step factor after a rejected step (``err > 1``, or NaN/inf: ``fac_min``)."""
        if not math.isfinite(err):
            return self.fac_min
        return min(1.0, max(self.fac_min, self.safety * err ** (-1.0 / q)))  # type: ignore[operator]


def initial_step(
    u: Callable[[Tensor, Tensor], Tensor],
    t0: float,
    x0: Tensor,
    u0: Tensor,
    direction: float,
    q: float,
    rtol: float,
    atol: float,
    norm: Callable[[Tensor], float],
) -> float:
    """Hairer's initial step (Hairer, Norsett & Wanner I, §II.4), one extra evaluation of ``u``.

    With ``sc = atol + rtol |x0|``, ``d0 = ||x0 / sc||``, ``d1 = ||u0 / sc||``:
    ``h0 = 0.01 d0 / d1`` (``1e-6`` if either is below ``1e-5``); one explicit Euler step
    ``x1 = x0 + h0 u0`` gives ``d2 = ||(u(t0 + h0, x1) - u0) / sc|| / h0``, and
    ``h1 = (0.01 / max(d1, d2))^(1/q)`` (``max(1e-6, 1e-3 h0)`` if ``max(d1, d2) <= 1e-15``).
    Returns ``min(100 h0, h1)`` (a magnitude; ``direction`` gives the sign of the trial step).
    A non-finite ``d`` (NaN/inf in ``u``) gives ``1e-6``; the controller then shrinks as needed.

    Args:
        u: the vector field; ``u0 = u(t0, x0)``.
        q: order of the error estimate plus one.
        norm: maps a tensor of ``x0``'s shape to a float (the controller's norm).
    """
    sc = x0.abs().mul_(rtol).add_(atol)
    d0, d1 = norm(x0 / sc), norm(u0 / sc)
    if not (math.isfinite(d0) and math.isfinite(d1)):
        return 1e-6
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h = direction * h0
    t1 = torch.full((), t0 + h, dtype=x0.dtype, device=x0.device)
    u1 = u(t1, torch.add(x0, u0, alpha=h))
    d2 = norm((u1 - u0) / sc) / h0
    if not math.isfinite(d2):
        return h0
    dmax = max(d1, d2)
    h1 = max(1e-6, h0 * 1e-3) if dmax <= 1e-15 else (0.01 / dmax) ** (1.0 / q)
    return min(100 * h0, h1)


# ---------------------------------------------------------------------------------- error norm
class ErrorNorm:
    """``err = ||e / tol||``, ``tol = atol + rtol * max(|x|, |x_new|)`` (docs/math.md §5.1).

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

    def rescale(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """The scale ``s_new`` that :meth:`measure` makes of a state ``x`` (the same
        operations, so bitwise the same values; into ``out`` if given)."""
        return self._scale_new(x, out)[0]

    def _scale_new(self, x: Tensor, out: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """``(atol + rtol |x|, max |x|)`` (the max: None for an empty ``x``)."""
        if out is not None:
            s = torch.abs(x, out=out)
            fin = s.amax() if s.numel() else None
            if self.rtol != 1.0:
                s.mul_(self.rtol)
            if self.atol != 0.0:
                s.add_(self.atol)
            return s, fin
        ax = x.abs()
        fin = ax.amax() if ax.numel() else None
        return (torch.addcmul(self.atol_t, ax, self.rtol_t) if self.rtol else ax), fin

    def measure(self, e: Tensor, s_old: Tensor, x_new: Tensor,
                bufs: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """``(v, s_new)``; overwrites ``e``. Runs under ``torch.no_grad``. ``bufs`` (two
        tensors of ``x``'s shape) receive ``s_new`` and ``tol``, so nothing is allocated.
        ``v`` is NaN when ``x_new`` holds a NaN/inf (through ``max |x_new|``, which does not
        overflow)."""
        s_new, fin = self._scale_new(x_new, bufs[0] if bufs is not None else None)
        if bufs is not None:
            v = self._reduce(e.div_(torch.maximum(s_old, s_new, out=bufs[1])), inplace=True)
            return (v if fin is None else torch.add(v, fin, alpha=0.0)), s_new
        v = self._reduce(e.div_(torch.maximum(s_old, s_new) if self.rtol else self.atol_t),
                         inplace=True)
        return torch.add(v, v if fin is None else fin, alpha=0.0), s_new

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


