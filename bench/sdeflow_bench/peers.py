"""The peer libraries: versions, lazy imports, and a call-counting field wrapper."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from sdeflow import solvers as _solvers

Tensor = torch.Tensor
Field = Callable[[Tensor, Tensor], Tensor]

def peer_versions() -> dict[str, str | None]:
    """Installed versions of the peers (``None``: not importable)."""
    out: dict[str, str | None] = {}
    for name in ("torchdiffeq", "torchsde", "torchode", "scipy"):
        try:
            mod = __import__(name)
            out[name] = str(getattr(mod, "__version__", "?"))
        except Exception:  # noqa: BLE001  (a broken peer is skipped, never an error)
            out[name] = None
    return out


def import_peer(name: str) -> Any:
    return __import__(name) if name != "scipy" else __import__("scipy.integrate").integrate


class Counter:
    """Wraps a field and counts its calls (``n``)."""

    def __init__(self, fn: Field) -> None:
        self.fn, self.n = fn, 0

    def __call__(self, t: Tensor, x: Tensor) -> Tensor:
        self.n += 1
        return self.fn(t, x)


def sdeflow_adaptive_available() -> bool:
    """Whether sdeflow registers the adaptive solvers (``dopri5``)."""
    return "dopri5" in _solvers.names()


