"""Argument checks and row addressing shared by the Brownian sources; ``check_compatible``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ._random import BLOCK_ROWS, element_counters

Tensor = torch.Tensor
TimeLike = float | int | Tensor


def to_float(t: TimeLike, name: str) -> float:
    """A scalar time as a float (0-dim or one-element tensors accepted)."""
    if isinstance(t, Tensor):
        if t.numel() != 1:
            raise ValueError(
                f"{name}: expected a scalar time, got a tensor of shape {tuple(t.shape)}")
        return float(t.item())
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise TypeError(f"{name}: expected a float or a 0-dim tensor, got {type(t).__name__}")
    return float(t)


def check_shape(shape: Sequence[int] | torch.Size | int) -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        out = tuple(torch.Size(shape))
    except TypeError as exc:
        raise TypeError(f"shape: expected a sequence of ints, got {shape!r}") from exc
    if any(s < 0 for s in out):
        raise ValueError(f"shape: expected non-negative sizes, got {out}")
    return out


def check_span(t0: TimeLike, t1: TimeLike) -> tuple[float, float]:
    a, b = to_float(t0, "t0"), to_float(t1, "t1")
    if not (math.isfinite(a) and math.isfinite(b)) or not a < b:
        raise ValueError(f"t0, t1: expected finite t0 < t1, got t0={a}, t1={b}")
    return a, b


def check_dtype(dtype: Any) -> torch.dtype:
    if dtype is None:
        return torch.get_default_dtype()
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype: expected a torch.dtype such as torch.float64, got "
                        f"{dtype!r} ({type(dtype).__name__})")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype: expected a floating dtype, got {dtype}")
    return dtype


def check_device(device: Any) -> torch.device:
    if device is None:
        return torch.empty(()).device
    try:
        return torch.device(device)
    except (TypeError, RuntimeError) as exc:
        raise TypeError(f"device: expected a torch.device or a device string, got "
                        f"{device!r}") from exc


def check_seed(seed: Any) -> int:
    if seed is None:
        return int(torch.randint(0, 2**62, (), dtype=torch.int64).item())
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int or None, got {type(seed).__name__}")
    return seed


class Rows:
    """Rows ``a:b`` of a full shape ``(B, *rest)`` (the first dimension is the row).

    ``shape`` is what the source produces (``(b - a, *rest)``). A 0-dim full shape is one row
    with one entry. ``counters`` are the element counters of those rows in the *full* numbering.
    Any range is exact (each row's numbers depend on (seed, row) only); the contract guarantees
    it for ranges aligned to :data:`BLOCK_ROWS` (or ending at ``B``).
    """

    def __init__(self, full: tuple[int, ...], batch_slice: slice | None) -> None:
        self.full = full
        rest = full[1:]
        self.per_row = math.prod(rest) if full else 1
        if batch_slice is None:
            self.a, self.b = 0, (full[0] if full else 1)
        else:
            if not isinstance(batch_slice, slice):
                raise TypeError(f"batch_slice: expected a slice(a, b), got "
                                f"{type(batch_slice).__name__}")
            if not full:
                raise ValueError("batch_slice: a 0-dim shape has no rows to slice")
            n = full[0]
            a = 0 if batch_slice.start is None else batch_slice.start
            b = n if batch_slice.stop is None else batch_slice.stop
            if batch_slice.step not in (None, 1):
                raise ValueError(f"batch_slice: expected a contiguous slice (step 1), got "
                                 f"step {batch_slice.step}")
            if not (isinstance(a, int) and isinstance(b, int)) or not 0 <= a < b <= n:
                raise ValueError(f"batch_slice: expected 0 <= a < b <= {n} (the rows of shape "
                                 f"{full}), got slice({a}, {b})")
            if a % BLOCK_ROWS or (b % BLOCK_ROWS and b != n):
                raise ValueError(
                    f"batch_slice: a and b must be multiples of the block size {BLOCK_ROWS} "
                    f"(or b = {n}, the full size), got slice({a}, {b}); the aligned slice "
                    f"containing it is slice({a - a % BLOCK_ROWS}, "
                    f"{min(n, -(-b // BLOCK_ROWS) * BLOCK_ROWS)})")
            self.a, self.b = a, b
        self.shape = ((self.b - self.a, *rest) if full else ())
        self.numel = (self.b - self.a) * self.per_row

    def counters(self, device: torch.device) -> Tensor:
        return element_counters(self.a * self.per_row, self.b * self.per_row, device)


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type == "cuda":
        cur = torch.cuda.current_device() if torch.cuda.is_available() else 0
        return (a.index if a.index is not None else cur) == (b.index if b.index is not None
                                                             else cur)
    return a.index == b.index or a.index is None or b.index is None


def check_compatible(bm: Any, shape: Sequence[int], dtype: torch.dtype,
                     device: torch.device | str, span: tuple[float, float]) -> None:
    """Raise ``ValueError`` (naming ``brownian``) unless ``bm`` can drive a solve.

    Args:
        bm: a :class:`BrownianPath` or :class:`BrownianTree` (or any object with the same
            interface: ``shape``, ``t0``, ``t1``, ``dtype``, ``device``, ``grid``...).
        shape: the Brownian shape the problem needs; dtype, device: the solve's (the state's).
        span: ``(t_start, t_end)`` of the solve, either order.

    A path of another dtype is an error, not a cast: a float32 path driving a float64 solve
    would silently lose the path's precision.
    """
    for attr in ("shape", "t0", "t1", "dtype", "device", "grid"):
        if not hasattr(bm, attr):
            raise TypeError(f"brownian: expected an sdeflow BrownianPath or BrownianTree, got "
                            f"{type(bm).__name__} (no attribute {attr!r})")
    if tuple(bm.shape) != tuple(shape):
        raise ValueError(f"brownian: path shape {tuple(bm.shape)} does not match the Brownian "
                         f"shape {tuple(shape)} this problem needs")
    if bm.dtype != dtype:
        raise ValueError(f"brownian: the path's dtype {bm.dtype} differs from the state's "
                         f"dtype {dtype}; build the path with dtype={dtype}")
    dev = torch.device(device)
    if not _same_device(torch.device(bm.device), dev):
        raise ValueError(f"brownian: the path lives on device {bm.device} but the state on "
                         f"{dev}; build the path with device={dev}")
    lo, hi = min(span), max(span)
    if lo < bm.t0 or hi > bm.t1:
        raise ValueError(f"brownian: path lives on [{bm.t0}, {bm.t1}] but the solve spans "
                         f"[{lo}, {hi}]")
    avail = getattr(bm, "available", None)
    if avail is not None:
        a, b = avail()
        if lo < a or hi > b:
            raise ValueError(f"brownian: the path released its data outside [{a}, {b}] "
                             f"(release_before/release_after) but the solve spans [{lo}, {hi}]")
