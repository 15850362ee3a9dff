"""Argument checks of ``solve`` and the counted, checked fields the loop hands to solvers.

Every check raises ``TypeError``/``ValueError`` naming the argument before any work is done.
The fields are wrapped once per solve: each call is counted (``Solution.stats["nfe"]``) and its
output's shape and dtype checked (device on the first call). An additive diffusion is probed
once at the start: its form (elementwise or a ``(..., d, m)`` matrix) and its x-independence.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .problems import ODE, SDE

Tensor = torch.Tensor

SEED_LIMIT = 2**63


# ------------------------------------------------------------------------------- problem, x0
def problem(p: Any, t_span: Any = None) -> ODE | SDE:
    if isinstance(p, (ODE, SDE)):
        return p
    tsde = [a for a in ("noise_type", "sde_type") if hasattr(p, a)]
    fg = [a for a in ("f", "g", "f_and_g", "g_prod") if callable(getattr(p, a, None))]
    if tsde or (("f" in fg or "f_and_g" in fg) and len(fg) >= 2 and not _own_call(p)):
        missing = [a for a in ("noise_type", "sde_type") if a not in tsde]
        note = (f" (it has no {' or '.join(missing)}: torchsde SDEs declare noise_type in "
                f"('diagonal', 'scalar', 'additive', 'general') and sde_type in ('ito', "
                f"'stratonovich'))") if missing else ""
        raise TypeError(f"problem: this looks like a torchsde SDE object (methods "
                        f"{', '.join(fg) or 'none'}){note}; sdeflow.solve takes an sdeflow ODE "
                        f"or SDE, or a plain callable f(t, x) for an ODE: use "
                        f"sdeflow.compat.sdeint(sde, y0, ts, ...) or wrap it as "
                        f"sdeflow.SDE(drift=sde.f, diffusion=sde.g, noise=..., kind=...)")
    if callable(p) and not isinstance(p, type):
        return ODE(p)  # torchdiffeq's func(t, y): an ODE
    raise TypeError(f"problem: expected an sdeflow ODE or SDE (or a callable f(t, x) for an "
                    f"ODE), got {type(p).__name__}")


def _own_call(p: Any) -> bool:
    """Whether ``p(t, x)`` does something: a function, an object with ``__call__``, or an
    ``nn.Module`` whose ``forward`` is defined (torchsde SDE modules define none)."""
    if isinstance(p, torch.nn.Module):
        return type(p).forward is not torch.nn.Module.forward
    return callable(p)


def state(x0: Any, is_sde: bool) -> None:
    if not isinstance(x0, Tensor):
        raise TypeError(f"x0: expected a torch.Tensor, got {type(x0).__name__}")
    if x0.is_meta:
        raise ValueError("x0: a meta tensor has no values")
    if not x0.is_floating_point():
        raise ValueError(f"x0: expected a floating-point tensor, got dtype {x0.dtype}")
    if is_sde and x0.dim() == 0:
        raise ValueError("x0: an SDE state needs shape (..., d), got a 0-dim tensor")
    if not bool(torch.isfinite(x0).all()):
        raise ValueError("x0: contains NaN or inf")


# ------------------------------------------------------------------------------------ times
def _number(v: Any, name: str) -> float:
    if isinstance(v, Tensor):
        if v.is_meta:
            raise ValueError(f"{name}: a meta tensor has no values")
        if v.numel() != 1:
            raise ValueError(f"{name}: expected a number, got a tensor of shape "
                             f"{tuple(v.shape)}")
        if v.is_complex():
            raise TypeError(f"{name}: expected real times, got a complex tensor")
        return float(v.detach().cpu())
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected real numbers, got {v!r} ({type(v).__name__})")
    return float(v)


def _sequence(v: Any, name: str) -> list[float]:
    if isinstance(v, Tensor):
        if v.is_meta:
            raise ValueError(f"{name}: a meta tensor has no values")
        if v.is_complex():
            raise TypeError(f"{name}: expected real times, got a complex tensor")
        if v.dim() != 1:
            raise ValueError(f"{name}: expected a 1-D sequence of times, got shape "
                             f"{tuple(v.shape)}")
        if v.requires_grad:
            raise ValueError(f"{name}: gradients with respect to the times are not computed "
                             f"here; pass {name}.detach() (or adjoint='backsolve' where it "
                             f"supports time gradients)")
        return [float(x) for x in v.detach().cpu().tolist()]
    if isinstance(v, (set, frozenset, dict)) or not hasattr(v, "__len__") or isinstance(
            v, (str, bytes)):
        raise TypeError(f"{name}: expected an ordered sequence of times (list, tuple or 1-D "
                        f"tensor), got {type(v).__name__}")
    return [_number(x, name) for x in v]


def times(t_span: Any, ts: Any, like: Tensor) -> tuple[float, float, list[float]]:
    """``(t0, t1, outputs)``; outputs in the direction of integration."""
    if (t_span is None) == (ts is None):
        raise ValueError("t_span, ts: pass exactly one of them")
    if ts is not None:
        vals = _sequence(ts, "ts")
        if len(vals) < 2:
            raise ValueError(f"ts: expected at least two times, got {len(vals)}")
        if not all(math.isfinite(v) for v in vals):
            raise ValueError("ts: contains NaN or inf")
        d = [b - a for a, b in zip(vals[:-1], vals[1:])]
        if not (all(x > 0 for x in d) or all(x < 0 for x in d)):
            raise ValueError("ts: expected strictly monotone times (all increasing or all "
                             f"decreasing), got {vals if len(vals) <= 8 else vals[:8] + ['...']}")
        _resolvable(vals, like, "ts")
        return vals[0], vals[-1], vals
    if isinstance(t_span, Tensor) and t_span.dim() == 1 and t_span.numel() > 2:
        raise ValueError(f"t_span: expected (t_start, t_end), got {t_span.numel()} values; for "
                         f"output at many times pass them as ts=")
    vals = _sequence(t_span.reshape(-1) if isinstance(t_span, Tensor) else t_span, "t_span")
    if len(vals) != 2:
        hint = "; for output at many times pass them as ts=" if len(vals) > 2 else ""
        raise ValueError(f"t_span: expected (t_start, t_end), got {len(vals)} values{hint}")
    a, b = vals
    if not (math.isfinite(a) and math.isfinite(b)) or a == b:
        raise ValueError(f"t_span: expected two distinct finite times, got ({a}, {b})")
    if not math.isfinite(b - a):
        raise ValueError(f"t_span: the span ({a}, {b}) overflows (t_end - t_start is not "
                         f"finite)")
    _resolvable([a, b], like, "t_span")
    return a, b, [a, b]


def _resolvable(vals: list[float], like: Tensor, name: str) -> None:
    """The times stay distinct in the state's dtype (the fields see them in it)."""
    npd = {torch.float64: np.float64, torch.float32: np.float32, torch.float16: np.float16}
    if like.dtype in npd:
        with np.errstate(over="ignore"):
            t = np.asarray(vals, dtype=np.float64).astype(npd[like.dtype])
    else:  # bfloat16 and other torch-only dtypes
        t = torch.tensor(vals, dtype=torch.float64).to(like.dtype).double().numpy()
    if not np.isfinite(t).all():
        raise ValueError(f"{name}: the times overflow the state's dtype {like.dtype}")
    d = np.diff(t)
    if not ((d > 0).all() or (d < 0).all()):
        raise ValueError(f"{name}: the times {vals[:4]}... coincide when rounded to the "
                         f"state's dtype {like.dtype}; use float64 or shift the time origin")


def grid_resolution(grid: list[float], like: Tensor, name: str) -> None:
    """Each step of a fixed grid is resolved by the state's dtype."""
    eps = torch.finfo(like.dtype).eps
    top = max(abs(grid[0]), abs(grid[-1]))
    hmin = min(abs(b - a) for a, b in zip(grid[:-1], grid[1:]))
    if top > 0 and hmin < 4 * eps * top:
        raise ValueError(f"{name}: steps of {hmin:.3g} at times near {top:.3g} are below what "
                         f"{like.dtype} resolves; use float64 or fewer steps")


def snap(t0: float, t1: float, ts: Any) -> float:
    s = 1e-10
    if isinstance(ts, Tensor) and ts.is_floating_point():
        scale = max(abs(t0), abs(t1)) / abs(t1 - t0)
        s = max(s, 8 * torch.finfo(ts.dtype).eps * max(1.0, scale))
    return s


def time_list(v: Any, name: str) -> list[float]:
    if v is None:
        return []
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        vals = [float(v)]
    else:
        vals = _sequence(v, name)
    if not all(math.isfinite(t) for t in vals):
        raise ValueError(f"{name}: contains NaN or inf")
    return vals


# ----------------------------------------------------------------------------- plain values
def flag(v: Any, name: str) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"{name}: expected True or False, got {v!r}")
    return v


def choice(v: Any, name: str, options: tuple[str, ...]) -> str:
    if not isinstance(v, str) or v not in options:
        raise ValueError(f"{name}: expected one of {options}, got {v!r}")
    return v


def positive_int(v: Any, name: str, default: int) -> int:
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name}: expected a positive int, got {v!r}")
    return v


def positive(v: Any, name: str) -> float | None:
    if v is None:
        return None
    f = _number(v, name)
    if not (math.isfinite(f) and f > 0):
        raise ValueError(f"{name}: expected a positive finite number, got {v!r}")
    return f


def tolerance(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected a non-negative finite number, got {v!r}")
    f = float(v)
    if not (math.isfinite(f) and f >= 0):
        raise ValueError(f"{name}: expected a non-negative finite number, got {v!r}")
    return f


def seed(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"seed: expected an int in [0, 2**63) or None, got {v!r} "
                        f"({type(v).__name__})")
    v = int(v)
    if not 0 <= v < SEED_LIMIT:
        raise ValueError(f"seed: expected an int in [0, 2**63), got {v}")
    return v


# ---------------------------------------------------------------------------------- fields
class Counter:
    """Evaluation counts of one solve (one-element lists, the cheapest mutable cell)."""

    __slots__ = ("cells",)

    def __init__(self) -> None:
        self.cells = {"u": [0], "f": [0], "g": [0]}

    def add(self, slot: str, k: int = 1) -> None:
        self.cells[slot][0] += k

    def stats(self, sde: bool) -> dict[str, int]:
        f, g, u = self.cells["f"][0], self.cells["g"][0], self.cells["u"][0]
        if sde:
            return {"nfe_drift": f, "nfe_diffusion": g, "nfe": f + g}
        return {"nfe": u}


def _signature_ok(fn: Callable[..., Any]) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    try:
        sig.bind(0, 0)
    except TypeError:
        return False
    return True


def _wrap(fn: Callable[..., Any], name: str, counter: Counter, slot: str,
          expect: Callable[[Tensor, Tensor], str | None] | None, like: Tensor,
          first_extra: Callable[[Tensor, Tensor, Tensor], None] | None = None,
          hint: str = "") -> Callable[[Tensor, Tensor], Tensor]:
    """Count calls of ``fn``; check every output's type, shape and dtype, and the device (and
    ``first_extra``) on the first call. ``expect=None`` means "the state's shape" (the fast
    path: one comparison per call)."""
    n = counter.cells[slot]
    device = like.device
    first = True

    def check(t: Tensor, x: Tensor, out: Any) -> None:
        nonlocal first
        if not isinstance(out, Tensor):
            raise TypeError(f"{name}: expected a tensor from {name}(t, x), got "
                            f"{type(out).__name__}")
        msg = (expect or _same_shape)(out, x)
        if msg is not None and hint:
            msg += hint
        if msg is None and out.dtype != x.dtype:
            msg = f"returned dtype {out.dtype}, expected the state's dtype {x.dtype}"
        if msg is not None:
            raise ValueError(f"{name}: {msg} (at t={float(t):.6g})")
        if first:
            first = False
            if out.device != device:
                raise ValueError(f"{name}: returned a tensor on {out.device}, expected the "
                                 f"state's device {device}")
            if first_extra is not None:
                first_extra(t, x, out)

    if expect is None:
        def field(t: Tensor, x: Tensor) -> Tensor:
            n[0] += 1
            out = fn(t, x)
            if first or type(out) is not Tensor or out.shape != x.shape or \
                    out.dtype != x.dtype:
                check(t, x, out)
            return out
    else:
        def field(t: Tensor, x: Tensor) -> Tensor:
            n[0] += 1
            out = fn(t, x)
            check(t, x, out)
            return out

    return field


def _same_shape(out: Tensor, x: Tensor) -> str | None:
    if out.shape != x.shape:
        return f"returned shape {tuple(out.shape)}, expected the state's shape {tuple(x.shape)}"
    return None


def terms(p: ODE | SDE, x0: Tensor, t0: float, brownian: Any, adaptive: bool
          ) -> tuple[Any, Callable[[], dict[str, int]], int | None]:
    """``(terms, counts, m)``: the counted, checked fields; ``m`` the Brownian dimension of
    general noise (read from the Brownian object, or one diffusion call at ``t0``)."""
    from .solvers.base import Terms  # noqa: PLC0415  (keeps this module free of solver imports)

    counter = Counter()
    if isinstance(p, ODE):
        u = p._field()
        if not _signature_ok(u):
            raise TypeError("vector_field: expected a callable u(t, x) of two arguments (time "
                            "and state)")
        uc = _wrap(u, "vector_field", counter, "u", None, x0)
        return Terms(p, u=uc, adaptive=adaptive), lambda: counter.stats(False), None
    f, g = p._fields()
    for nm, fn in (("drift", f), ("diffusion", g)):
        if not _signature_ok(fn):
            raise TypeError(f"{nm}: expected a callable {nm}(t, x) of two arguments (time and "
                            f"state)")
    m: int | None = None
    if brownian is not None:
        _check_brownian(brownian, p, x0, t0)
    if p.noise == "general":
        if brownian is not None:
            m = int(brownian.shape[-1])
        else:
            gprobe = _wrap(g, "diffusion", counter, "g", _general_any, x0)
            tt = torch.full((), t0, dtype=x0.dtype, device=x0.device)
            m = int(gprobe(tt, x0).shape[-1])
    elif p.noise == "additive":
        m = _additive_probe(g, counter, x0, t0)
        if brownian is not None:
            want = p.brownian_shape(x0.shape, m)
            got = tuple(brownian.shape)
            if got != want:
                form = (f"a ({x0.shape[-1]} x {m}) matrix per path" if m is not None
                        else "x's shape (elementwise)")
                raise ValueError(f"brownian: shape {got}, but the additive diffusion returns "
                                 f"{form}, which needs a Brownian motion of shape {want}")
    m_fixed = m

    def matrix(out: Tensor, x: Tensor) -> str | None:
        if out.dim() != x.dim() + 1 or out.shape[:-1] != x.shape:
            return (f"{p.noise} noise: returned shape {tuple(out.shape)}, expected "
                    f"{(*tuple(x.shape), 'm')} (the state's shape plus the Brownian dimension m)")
        if out.shape[-1] != m_fixed:
            return (f"{p.noise} noise: returned m={out.shape[-1]} Brownian columns, but the "
                    f"Brownian motion has m={m_fixed}")
        return None

    fc = _wrap(f, "drift", counter, "f", None, x0)
    hint = {"scalar": f" or {(*tuple(x0.shape), 1)} (scalar noise, one Brownian motion per "
                      f"path)",
            "diagonal": " (diagonal noise; for a (..., d, m) matrix declare noise='general', "
                        "or 'additive' if it does not depend on x)"}.get(p.noise, "")
    gc = _wrap(g, "diffusion", counter, "g", matrix if m is not None else None, x0,
               hint=hint)
    return (Terms(p, f=fc, g=gc, noise=p.noise, kind=p.kind, adaptive=adaptive, m=m),
            lambda: counter.stats(True), m)


def _additive_probe(g: Callable[..., Any], counter: Counter, x0: Tensor, t0: float
                    ) -> int | None:
    """The form of an additive diffusion, from two counted calls at ``t0`` (docs/math.md §1.2):
    ``None`` for the elementwise form (``g`` of x's shape), ``m`` for a ``(..., d, m)`` matrix.
    The second call, at another state, checks that ``g`` does not depend on ``x``."""
    tt = torch.full((), t0, dtype=x0.dtype, device=x0.device)
    xd = x0.detach()
    counter.add("g", 2)
    with torch.no_grad():
        out = g(tt, xd)
        other = g(tt, xd * 1.5 + 0.5)
    where = f" (at t={t0:.6g})"
    if not isinstance(out, Tensor):
        raise TypeError(f"diffusion: expected a tensor from diffusion(t, x), got "
                        f"{type(out).__name__}{where}")
    shape = tuple(x0.shape)
    if tuple(out.shape) == shape:
        m = None
    elif out.dim() == x0.dim() + 1 and tuple(out.shape[:-1]) == shape and out.shape[-1] >= 1:
        m = int(out.shape[-1])
    else:
        raise ValueError(f"diffusion: noise='additive' expects g(t, x) of the state's shape "
                         f"{shape} (elementwise) or {(*shape, 'm')} (a d x m matrix, m >= 1 "
                         f"Brownian motions), got shape {tuple(out.shape)}{where}")
    if out.dtype != x0.dtype:
        raise ValueError(f"diffusion: returned dtype {out.dtype}, expected the state's dtype "
                         f"{x0.dtype}{where}")
    if out.device != x0.device:
        raise ValueError(f"diffusion: returned a tensor on {out.device}, expected the state's "
                         f"device {x0.device}")
    if not isinstance(other, Tensor) or other.shape != out.shape or not torch.allclose(
            other, out, rtol=1e-10, atol=1e-12, equal_nan=True):
        raise ValueError("diffusion: noise='additive' needs g(t, x) independent of x, "
                         "but it changed with x; declare noise='diagonal' (or "
                         "'scalar'/'general')")
    return m


def _general_any(out: Tensor, x: Tensor) -> str | None:
    if out.dim() != x.dim() + 1 or out.shape[:-1] != x.shape:
        return (f"general noise: returned shape {tuple(out.shape)}, expected "
                f"{(*tuple(x.shape), 'm')} (the state's shape plus the Brownian dimension m)")
    return None


def _check_brownian(bm: Any, p: SDE, x0: Tensor, t0: float) -> None:
    """Type and noise-shape checks of ``brownian`` (dtype, device and span: ``check_span``)."""
    if isinstance(bm, Tensor) or not hasattr(bm, "shape") or not hasattr(bm, "grid"):
        raise TypeError(f"brownian: expected an sdeflow BrownianPath or BrownianTree, got "
                        f"{type(bm).__name__}")


def check_span(bm: Any, p: SDE, x0: Tensor, t0: float, t1: float) -> None:
    """``brownian`` fits the problem's Brownian shape, the state's dtype/device and the span."""
    from .brownian import check_compatible  # noqa: PLC0415  (only SDE solves with a path)

    shape = tuple(bm.shape)
    # general noise reads m from the path; an additive path was matched to g in ``terms``
    m = shape[-1] if p.noise in ("general", "additive") and shape else None
    check_compatible(bm, p.brownian_shape(x0.shape, m), x0.dtype, x0.device, (t0, t1))
