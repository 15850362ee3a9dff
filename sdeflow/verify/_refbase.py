"""Shared helpers of the exact references (:mod:`sdeflow.verify.references`): argument
checks, float64 casts, ``expm`` and the linear moment recursion (docs/math.md §8, §9)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.linalg
import torch

Tensor = torch.Tensor
TimeLike = float | int | Tensor
ArrayLike = Any  # float, nested sequence, numpy array or tensor

_F64 = torch.float64


# --------------------------------------------------------------------------- helpers
def _time(t: TimeLike, name: str = "t") -> float:
    """A scalar time as a Python float (``ValueError`` for anything else)."""
    if isinstance(t, Tensor):
        if t.numel() != 1:
            raise ValueError(
                f"{name}: expected a scalar time, got a tensor of shape {tuple(t.shape)}"
            )
        t = float(t.item())
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise ValueError(f"{name}: expected a float or a 0-dim tensor, got {type(t).__name__}")
    t = float(t)
    if not math.isfinite(t):
        raise ValueError(f"{name}: expected a finite time, got {t}")
    return t


def _scalar(v: Any, name: str, *, positive: bool = False, nonneg: bool = False) -> float:
    """A finite Python float parameter."""
    if isinstance(v, Tensor):
        if v.numel() != 1:
            raise ValueError(f"{name}: expected a scalar, got a tensor of shape {tuple(v.shape)}")
        v = float(v.item())
    if isinstance(v, bool):
        raise ValueError(f"{name}: expected a real number, got {v!r}")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a real number, got {v!r}") from None
    if not math.isfinite(f):
        raise ValueError(f"{name}: expected a finite number, got {f}")
    if positive and not f > 0:
        raise ValueError(f"{name}: expected a positive number, got {f}")
    if nonneg and f < 0:
        raise ValueError(f"{name}: expected a non-negative number, got {f}")
    return f


def _tensor64(v: ArrayLike, name: str) -> Tensor:
    """A finite float64 CPU tensor copy of ``v``."""
    try:
        out = torch.as_tensor(v.detach().cpu() if isinstance(v, Tensor) else v, dtype=_F64)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name}: expected an array of real numbers, got {v!r}") from None
    if not torch.isfinite(out).all():
        raise ValueError(f"{name}: expected finite entries")
    return out.clone()


def _check_state(x0: Any, d: int | None, name: str = "x0") -> Tensor:
    """``x0`` as a floating tensor of shape ``(..., d)``."""
    if not isinstance(x0, Tensor):
        raise ValueError(f"{name}: expected a tensor of shape (..., d), got {type(x0).__name__}")
    if not x0.dtype.is_floating_point:
        raise ValueError(f"{name}: expected a floating dtype, got {x0.dtype}")
    if x0.dim() == 0:
        raise ValueError(f"{name}: expected shape (..., d), got a 0-dim tensor")
    if d is not None and x0.shape[-1] != d:
        raise ValueError(f"{name}: expected last dimension {d}, got shape {tuple(x0.shape)}")
    return x0


class _Cast:
    """Caches a float64 tensor cast to each (dtype, device) it is used with."""

    def __init__(self, value: Tensor) -> None:
        self.value = value
        self._cache: dict[tuple[torch.dtype, torch.device], Tensor] = {}

    def like(self, x: Tensor) -> Tensor:
        key = (x.dtype, x.device)
        out = self._cache.get(key)
        if out is None:
            out = self.value.to(dtype=x.dtype, device=x.device)
            self._cache[key] = out
        return out


def expm(m: Tensor) -> Tensor:
    """Matrix exponential of ``m`` (``[..., d, d]``), accurate to float64 round-off.

    Computed by scipy's scaling-and-squaring Pade (Al-Mohy & Higham) in float64 on the host and
    returned on ``m``'s device in float64. ``torch.linalg.matrix_exp`` is not used for ground
    truth: for small norms its float64 result can be off by ~1e-10 relative (e.g.
    ``0.03125 * diag(-1, -1.5)``), which a property test here caught.
    """
    out = scipy.linalg.expm(m.detach().to(_F64).cpu().numpy())
    return torch.from_numpy(np.ascontiguousarray(out)).to(m.device)


def _expm(t: float, a: Tensor) -> Tensor:
    """``expm(t A)`` in float64."""
    return expm(t * a.to(_F64))


def _check_bm(bm: Any, shape: tuple[int, ...], t0: float, t: float) -> None:
    for attr in ("grid", "increment", "shape", "t0", "t1"):
        if not hasattr(bm, attr):
            raise ValueError(f"bm: expected an sdeflow.BrownianPath, got {type(bm).__name__}")
    if tuple(bm.shape) != tuple(shape):
        raise ValueError(
            f"bm: expected a Brownian path of shape {tuple(shape)}, got {tuple(bm.shape)}"
        )
    lo, hi = min(t0, t), max(t0, t)
    if lo < bm.t0 or hi > bm.t1:
        raise ValueError(f"bm: the path lives on [{bm.t0}, {bm.t1}], which misses [{lo}, {hi}]")
    if not t > t0:
        raise ValueError(f"t: expected t > t0 = {t0}, got {t}")


def _fine_grid(t0: float, t: float, n_fine: int) -> list[float]:
    if not isinstance(n_fine, int) or n_fine < 1:
        raise ValueError(f"n_fine: expected a positive int, got {n_fine!r}")
    h = (t - t0) / n_fine
    return [t0 + k * h for k in range(n_fine)] + [t]


def linear_recursion_moments(
    m: Tensor, c: Tensor, q: Tensor, steps: int, m0: Tensor, p0: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Mean and covariance after ``steps`` steps of an affine Gaussian recursion.

    ``x_{n+1} = M x_n + c + xi_n`` with ``xi_n`` independent, mean 0, covariance ``Q``:
    ``m_{n+1} = M m_n + c`` and ``P_{n+1} = M P_n M^T + Q`` (docs/math.md §9.2). Every
    fixed-step scheme of this library applied to a linear SDE is such a recursion (for
    Euler--Maruyama ``M = I + hA``, ``c = h a``, ``Q = h B B^T``), so this gives the scheme's
    exact discrete moments, hence its exact bias.

    Args:
        m: ``[d, d]``; c: ``[d]``; q: ``[d, d]``; steps: number of steps (>= 0);
        m0: ``[..., d]`` initial mean; p0: ``[d, d]`` initial covariance (default 0).

    Returns:
        ``(mean [..., d], covariance [d, d])`` in float64.
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps: expected a non-negative int, got {steps!r}")
    m, c, q = m.to(_F64), c.to(_F64), q.to(_F64)
    mean = m0.to(_F64)
    cov = torch.zeros_like(q) if p0 is None else p0.to(_F64)
    for _ in range(steps):
        mean = mean @ m.T + c
        cov = m @ cov @ m.T + q
    return mean, cov
