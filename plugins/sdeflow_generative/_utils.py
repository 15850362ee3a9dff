"""Small shared helpers: time broadcasting, argument checks (internal)."""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def as_time(t: Tensor | float, like: Tensor | None = None) -> Tensor:
    """``t`` as a floating tensor, on ``like``'s dtype/device when ``like`` is given.

    A Python number becomes a 0-dim tensor of ``like``'s dtype (or torch's default dtype).
    """
    if isinstance(t, bool) or not isinstance(t, (int, float, torch.Tensor)):
        raise TypeError(f"t: expected a float or a tensor, got {type(t).__name__}")
    if like is not None:
        return torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if isinstance(t, torch.Tensor):
        if not t.is_floating_point():
            return t.to(torch.get_default_dtype())
        return t
    return torch.as_tensor(float(t), dtype=torch.get_default_dtype())


def time_for(t: Tensor | float, x: Tensor, name: str = "t") -> Tensor:
    """Broadcastable time for a state ``x`` of shape ``(..., d)``.

    Accepts a scalar (Python number or 0-dim tensor), a tensor of shape ``x.shape[:-1]``, a
    tensor of shape ``(*x.shape[:-1], 1)``, or (for ``x`` with more than two dimensions, such as
    images ``(B, C, H, W)``) one time per sample, shape ``x.shape[:1]``. Returns a tensor of
    ``x``'s dtype/device whose shape broadcasts against ``x``: ``()`` for a scalar,
    ``(*x.shape[:-1], 1)`` or ``(B, 1, ..., 1)`` otherwise.
    """
    if x.dim() < 1:
        raise ValueError(f"x: expected shape (..., d), got {tuple(x.shape)}")
    tt = as_time(t, like=x)
    if tt.dim() == 0:
        return tt
    batch = tuple(x.shape[:-1])
    if tuple(tt.shape) == batch:
        return tt.unsqueeze(-1)
    if tuple(tt.shape) == (*batch, 1):
        return tt
    if x.dim() > 2 and tuple(tt.shape) == tuple(x.shape[:1]):
        # one time per sample of a batch of non-vector samples (e.g. images (B, C, H, W))
        return tt.reshape(tt.shape + (1,) * (x.dim() - 1))
    raise ValueError(
        f"{name}: expected a scalar or a tensor of shape x.shape[:-1]={batch} "
        f"(or {(*batch, 1)}, or x.shape[:1]), got {tuple(tt.shape)}"
    )


def expand_time(t: Tensor, x: Tensor) -> Tensor:
    """The core's 0-dim ``t`` broadcast to ``x.shape[:-1]`` (the ``model(x, t)`` convention)."""
    if t.dim() == 0:
        return t.to(dtype=x.dtype, device=x.device).expand(x.shape[:-1])
    return t


def check_state(x: Tensor, name: str = "x", d: int | None = None) -> None:
    """Raise unless ``x`` is a floating tensor of shape ``(..., d)``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < 1:
        raise ValueError(f"{name}: expected shape (..., d), got a 0-dim tensor")
    if d is not None and x.shape[-1] != d:
        raise ValueError(f"{name}: expected last dimension d={d}, got shape {tuple(x.shape)}")


def check_generator(g: object, name: str = "generator") -> None:
    """Raise unless ``g`` is ``None`` or a ``torch.Generator``."""
    if g is not None and not isinstance(g, torch.Generator):
        raise TypeError(f"{name}: expected a torch.Generator or None, got {type(g).__name__}")


def check_positive_int(n: object, name: str) -> int:
    """Return ``n`` as an int, raising unless it is a positive integer."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{name}: expected a positive int, got {type(n).__name__}")
    if n <= 0:
        raise ValueError(f"{name}: expected a positive int, got {n}")
    return n
