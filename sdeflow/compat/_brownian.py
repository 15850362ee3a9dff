"""torchsde's Brownian objects (``BrownianInterval``, ``BrownianPath``, ``BrownianTree``) seen
through sdeflow's Brownian interface (``shape``, ``t0``, ``t1``, ``grid``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

Tensor = torch.Tensor


def is_torchsde_bm(bm: Any) -> bool:
    return callable(bm) and not hasattr(bm, "grid") and hasattr(bm, "shape") and (
        type(bm).__module__.startswith("torchsde"))


class TorchsdeBrownian:
    """Increments ``bm(s, t)`` and space-time integrals ``U`` (``return_U=True``) of a torchsde
    Brownian object on ``[t0, t1]``."""

    def __init__(self, bm: Any, t0: float, t1: float) -> None:
        self.bm = bm
        self.shape = torch.Size(bm.shape)
        self.t0, self.t1 = t0, t1
        self.dtype, self.device = bm.dtype, bm.device

    def _pair(self, a: float, b: float, space_time: bool) -> tuple[Tensor, Tensor | None]:
        if space_time:
            w, u = self.bm(a, b, return_U=True)
            return w, u
        return self.bm(a, b), None

    def grid(self, ts: Sequence[float] | Tensor, space_time: bool = True
             ) -> tuple[Tensor, Tensor | None]:
        tl = [float(v) for v in (ts.tolist() if isinstance(ts, Tensor) else ts)]
        if len(tl) < 2:
            raise ValueError("ts: expected at least two times")
        dws, its = [], []
        for a, b in zip(tl[:-1], tl[1:]):
            if b >= a:
                w, u = self._pair(a, b, space_time)
            else:
                w, u = self._pair(b, a, space_time)
                # reversed step a -> b: I = -(I_{b->a} - (W_a - W_b)(a - b))
                u = None if u is None else -(u - w * (a - b))
                w = -w
            dws.append(w)
            its.append(u)
        return torch.stack(dws), (torch.stack(its) if space_time else None)

    def increment(self, s: float, t: float) -> Tensor:
        return self.grid([s, t], space_time=False)[0][0]
