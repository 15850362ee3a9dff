"""``SeededNoise``: the Brownian increments of a fixed-step solve with ``seed=``.

Step ``k`` of the solve (counted from the first call) draws, for every entry, the pair of
normals keyed by (seed, "noise", k) at the entry's global element index (see ``_random``), so
the numbers do not depend on how the steps are grouped into calls nor on which rows are built:
rows ``a:b`` (``batch_slice``) equal those rows of the full run bit for bit. Per step of size
``h`` (docs/math.md §2):

    dW = sqrt(|h|) z1,        I = int_t^{t+h} (W_r - W_t) dr = h/2 (dW + sqrt(|h|/3) z2),

so ``Var dW = |h|``, ``Cov(dW, I) = h |h| / 2``, ``Var I = |h|^3 / 3``; ``z2`` is computed only
when a call asks for space-time integrals, and ``dW`` is the same either way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ._common import Rows, check_device, check_dtype, check_seed, check_shape
from ._random import key, keys_for, normals

Tensor = torch.Tensor

_STREAM = 0x5EED


class SeededNoise:
    """Sequential fixed-grid noise from a seed.

    Args:
        shape: full Brownian shape ``(B, *rest)``; rows are the first dimension.
        seed: int seed (``None``: one from torch's global generator).
        dtype, device: of the increments (default: torch's defaults).
        batch_slice: ``slice(a, b)`` with ``a, b`` multiples of 1024 (or ``b = B``): produce
            rows ``a:b`` only; ``shape`` is then ``(b - a, *rest)``.

    Call :meth:`increments` for consecutive blocks of steps.
    """

    def __init__(self, shape: Sequence[int] | int, seed: int | None = None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 batch_slice: slice | None = None) -> None:
        self.full_shape = check_shape(shape)
        self.rows = Rows(self.full_shape, batch_slice)
        self.shape = self.rows.shape
        self.dtype = check_dtype(dtype)
        self.device = check_device(device)
        self.seed = check_seed(seed)
        self.step = 0
        self._key = key(self.seed, _STREAM)
        self._elems = self.rows.counters(self.device)
        self._n = self.rows.numel

    def increments(self, h: Tensor | Sequence[float], space_time: bool = False
                   ) -> tuple[Tensor, Tensor | None]:
        """The next ``n`` steps' noise.

        Args:
            h: ``[n]`` step sizes (float64 preferred; the sign is the direction of time).
            space_time: also return the space-time integrals.

        Returns:
            ``(dW, I)``, each ``[n, *shape]`` (``I`` is ``None`` unless asked for).
        """
        hh = torch.as_tensor(h, dtype=torch.float64).reshape(-1)
        n = hh.numel()
        ids = torch.arange(self.step, self.step + n, dtype=torch.int64, device=self.device)
        z = normals(keys_for(self._key, ids), self._elems, self.dtype, pair=space_time,
                    n=self._n)
        self.step += n
        sq = hh.abs().sqrt()
        col = (n,) + (1,) * max(0, len(self.shape) - 1) if self.shape else (n,)
        s = sq.to(device=self.device, dtype=self.dtype).view(n, 1)
        if not space_time:
            return z.mul_(s).view(n, *self.shape), None
        dw = z[0].mul_(s)
        c = (sq / math.sqrt(3.0)).to(device=self.device, dtype=self.dtype).view(n, 1)
        hv = (hh / 2).to(device=self.device, dtype=self.dtype).view(n, 1)
        it = z[1].mul_(c).add_(dw).mul_(hv)
        del col
        return dw.view(n, *self.shape), it.view(n, *self.shape)

    def nbytes(self) -> int:
        """Bytes this source keeps between calls (the element counters)."""
        return self._elems.numel() * self._elems.element_size()

    def __repr__(self) -> str:
        return (f"SeededNoise(shape={self.shape}, seed={self.seed}, step={self.step}, "
                f"rows={self.rows.a}:{self.rows.b} of {self.full_shape})")
