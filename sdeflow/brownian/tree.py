"""``BrownianTree``: a virtual Brownian tree, W_t a pure function of (seed, t) (docs/math.md
§12.3).

The span ``[t0, t1]`` (length T) is bisected dyadically down to depth ``D``, the least depth
with leaf width ``T / 2^D <= tol``. Node ``(d, j)`` is ``[t0 + j T/2^d, t0 + (j+1) T/2^d]``
with heap id ``2^d + j``; it carries its increment ``dW`` and its space-time Levy area
``H = I/h - dW/2`` (``Var H = h/12``, independent of ``dW``). The root is
``dW = sqrt(T) z1, H = sqrt(T/12) z2``; a node of width ``h`` splits into halves with its own
two normals ``(z1, z2)`` (keyed by (seed, node id) only):

    dW_L = dW/2 + 3/2 H + sqrt(h)/4 z2,              dW_R = dW - dW_L,
    H_L  = H/4 + sqrt(h/48) z1 - sqrt(h)/8 z2,       H_R  = H/4 - sqrt(h/48) z1 - sqrt(h)/8 z2,

the exact conditional law of the halves given the parent. A query descends from the root,
adding ``dW_L`` on every right turn and tracking ``A_a = int_{t0}^a W_r dr`` at the node's left
end (``A_b = A_a + h W_a + I``). It stops at the first node whose left end is ``t`` (so W and
the integrals are exact at dyadic times down to the leaf width), or at a leaf ``[a, a + h]``,
inside which the path is the conditional mean given the leaf's ``(dW, H)``:

    W_{a + x h} - W_a = x dW + 6 x (1 - x) H,
    int_a^{a + x h} (W_r - W_a) dr = h [x^2/2 dW + (3 x^2 - 2 x^3) H],     0 <= x <= 1.

So two queries in one leaf (closer than ``tol``) get the smooth conditional-mean path between
the leaf's exact ends: its increments over ``[a, a + x h]`` have variance
``h (4x^2 - 6x^3 + 3x^4) <= x h`` instead of ``x h``, and the leaf's own increment and
integral are exact. Every value depends only on (seed, t), never on other queries.

Cost and memory: a batch of times is resolved level by level, every needed node computed once
(one batched normal draw per level). The nodes on the paths of the first and last time of the
previous batch are cached, so a time loop's sequential queries cost O(1) new nodes each; the
cache holds at most ``2 (D + 1)`` nodes of ``4 * prod(shape)`` float64 numbers, whatever the
number of queries (``nbytes()``). Internally the tree computes in float64 and rounds its
answers to ``dtype``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ._common import (
    Rows,
    TimeLike,
    check_device,
    check_dtype,
    check_seed,
    check_shape,
    check_span,
    to_float,
)
from ._random import key, keys_for, normals

Tensor = torch.Tensor

_STREAM = 0x7EE
MAX_DEPTH = 48
_F64 = torch.float64


class BrownianTree:
    """A Brownian motion on ``[t0, t1]`` (``W_t0 = 0``) that is a pure function of (seed, t).

    Args:
        shape: full shape of W_t (rows = first dimension, generated in blocks of 1024).
        t0, t1: the span; seed: int (``None``: one from torch's global generator).
        tol: leaf width bound (> 0): exact at dyadic times down to width ``<= tol``.
            Default ``(t1 - t0) * 2^-20``.
        dtype, device: of the answers (default: torch's defaults).
        batch_slice: ``slice(a, b)`` (multiples of 1024, or ``b`` the full size): rows
            ``a:b`` only, equal to those rows of the full tree bit for bit.

    Same interface as :class:`~sdeflow.BrownianPath`: ``bm(t)``, ``increment``, ``space_time``,
    ``grid``; ``release_before``/``release_after`` are no-ops.
    """

    def __init__(self, shape: Sequence[int] | torch.Size | int, t0: TimeLike = 0.0,
                 t1: TimeLike = 1.0, seed: int | None = None, tol: float | None = None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 batch_slice: slice | None = None) -> None:
        self.full_shape = check_shape(shape)
        self.t0, self.t1 = check_span(t0, t1)
        span = self.t1 - self.t0
        if tol is None:
            tol = span * 2.0**-20
        if isinstance(tol, Tensor):
            tol = float(tol)
        if isinstance(tol, bool) or not isinstance(tol, (int, float)):
            raise TypeError(f"tol: expected a positive float, got {type(tol).__name__}")
        if not (math.isfinite(tol) and tol > 0):
            raise ValueError(f"tol: expected a positive finite number, got {tol}")
        self.tol = float(tol)
        depth = max(0, math.ceil(math.log2(span / self.tol))) if span > self.tol else 0
        while span / 2.0**depth > self.tol:
            depth += 1
        if depth > MAX_DEPTH:
            raise ValueError(f"tol: {tol} is below (t1 - t0) 2^-{MAX_DEPTH} = "
                             f"{span * 2.0**-MAX_DEPTH:.3g}; expected a larger tol")
        self.depth = depth
        self.dtype = check_dtype(dtype)
        self.device = check_device(device)
        self.seed = check_seed(seed)
        self._rows = Rows(self.full_shape, batch_slice)
        self.shape = torch.Size(self._rows.shape)
        self._shp = tuple(self.shape)
        self._e = self._rows.numel
        self._elems = self._rows.counters(self.device)
        self._n = self._rows.numel
        self._key = key(self.seed, _STREAM)
        self._cache: dict[int, Tensor] = {}   # heap id -> [4, E] (W_a, A_a, dW, H), float64
        z = normals(keys_for(self._key, torch.zeros(1, dtype=torch.int64, device=self.device)),
                    self._elems, _F64, pair=True, n=self._n)[:, 0]
        root = torch.zeros((4, self._e), dtype=_F64, device=self.device)
        root[2] = z[0] * math.sqrt(span)
        root[3] = z[1] * math.sqrt(span / 12.0)
        self._root = root

    # ------------------------------------------------------------------ geometry
    def _edge(self, d: int, j: np.ndarray) -> np.ndarray:
        return self.t0 + (self.t1 - self.t0) * (j / 2.0**d)

    def _locate(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per time: the target node's depth and index, and the local position x in [0, 1].

        The target is the shallowest node whose left end is ``t`` (``x = 0``), else the leaf
        containing ``t``; ``t0`` and ``t1`` are the root's ends (``x = 0`` and ``x = 1``).
        Edges are ``t0 + T (j / 2^d)`` in float64; the edges of depth d are among those of
        depth D, so the leaf index ``jD`` determines every ancestor (``jD >> (D - d)``)."""
        big = self.depth
        n = 1 << big
        j = np.clip(np.floor((t - self.t0) / (self.t1 - self.t0) * n).astype(np.int64), 0, n - 1)
        j = np.where(t < self._edge(big, j), j - 1, j)
        j = np.clip(np.where(t >= self._edge(big, j + 1), j + 1, j), 0, n - 1)
        hit = self._edge(big, j) == t
        low = j & -j                                           # lowest set bit (0 for j = 0)
        tz = np.where(low > 0, np.log2(np.maximum(low, 1)).astype(np.int64), big)
        tdep = np.where(hit, big - tz, big)
        tj = np.where(hit, j >> tz, j)
        ends = (t == self.t0) | (t == self.t1)
        tdep[ends], tj[ends] = 0, 0
        left = self.t0 + (self.t1 - self.t0) * (tj / 2.0**tdep)
        x = (t - left) / ((self.t1 - self.t0) / 2.0**tdep)
        x[hit | (t == self.t0)] = 0.0
        x[t == self.t1] = 1.0
        return tdep, tj, x

    # ------------------------------------------------------------------ nodes
    def _split(self, parents: Tensor, z: Tensor, depth: int) -> tuple[Tensor, Tensor]:
        """Children ``(left, right)``, each ``[m, 4, E]``, of parents ``[m, 4, E]`` at ``depth``
        with their split normals ``z [2, m, E]`` (one elementwise op per term, written in
        place: the same rounding whatever the batch)."""
        h = (self.t1 - self.t0) / 2.0**depth
        k = h / 2
        wa, aa, dw, hh = parents.unbind(1)
        left = torch.empty_like(parents)
        right = torch.empty_like(parents)
        lw, la, ld, lh = left.unbind(1)
        rw, ra, rd, rh = right.unbind(1)
        lw.copy_(wa)
        la.copy_(aa)
        torch.mul(dw, 0.5, out=ld)                      # dW_L = dW/2 + 3/2 H + sqrt(h)/4 z2
        ld.add_(hh * 1.5).add_(z[1] * (math.sqrt(h) / 4))
        torch.mul(hh, 0.25, out=rh)                     # a = H/4 - sqrt(h)/8 z2
        rh.sub_(z[1] * (math.sqrt(h) / 8))
        b = z[0] * math.sqrt(h / 48)
        torch.add(rh, b, out=lh)                        # H_L = a + b, H_R = a - b
        rh.sub_(b)
        torch.add(wa, ld, out=rw)                       # W at the midpoint
        torch.mul(ld, 0.5, out=ra)                      # A_mid = A_a + k W_a + k (H_L + dW_L/2)
        ra.add_(lh).mul_(k).add_(wa * k).add_(aa)
        torch.sub(dw, ld, out=rd)
        return left, right

    def _nodes(self, tdep: np.ndarray, tj: np.ndarray) -> dict[int, Tensor]:
        """States ``[4, E]`` of every target node (by heap id), computing missing ones: the
        split normals of all missing nodes come from one batched draw."""
        known: dict[int, Tensor] = dict(self._cache)
        known[1] = self._root
        have = set(known)
        maxd = int(tdep.max()) if tdep.size else 0
        plan: list[tuple[int, list[int], np.ndarray]] = []
        for d in range(1, maxd + 1):
            sel = tdep >= d
            ids = np.unique((1 << d) + (tj[sel] >> (tdep[sel] - d)))
            miss = [int(i) for i in ids if int(i) not in have]
            if miss:
                have.update(miss)
                plan.append((d, miss, np.unique(np.asarray(miss, dtype=np.int64) >> 1)))
        if not plan:
            return known
        split_ids = np.concatenate([p for _, _, p in plan])
        z = normals(keys_for(self._key, torch.as_tensor(split_ids, device=self.device)),
                    self._elems, _F64, pair=True, n=self._n)  # [2, M, E]
        row = 0
        for d, miss, par in plan:
            pstate = torch.stack([known[int(p)] for p in par])
            left, right = self._split(pstate, z[:, row: row + par.size], d - 1)
            row += par.size
            prow = {int(p): r for r, p in enumerate(par)}
            for i in miss:
                known[i] = (right if i & 1 else left)[prow[i >> 1]]
        return known

    def _resolve(self, t: np.ndarray) -> tuple[Tensor, Tensor]:
        """``W_t`` and ``A_t = int_{t0}^t W_r dr``, each ``[q, E]`` float64."""
        tdep, tj, x = self._locate(t)
        known = self._nodes(tdep, tj)
        hid = (np.int64(1) << tdep) + tj
        st = torch.stack([known[int(i)] for i in hid])      # [q, 4, E]
        wa, aa, dw, hh = st.unbind(1)
        width = (self.t1 - self.t0) / 2.0**tdep
        xs = torch.as_tensor(x, dtype=_F64, device=self.device).view(-1, 1)
        xw = torch.as_tensor(x * width, dtype=_F64, device=self.device).view(-1, 1)
        p = torch.as_tensor(6 * x * (1 - x), dtype=_F64, device=self.device).view(-1, 1)
        c1 = torch.as_tensor(width * x * x / 2, dtype=_F64, device=self.device).view(-1, 1)
        c2 = torch.as_tensor(width * (3 * x * x - 2 * x**3), dtype=_F64,
                             device=self.device).view(-1, 1)
        w = wa + dw * xs + hh * p
        a = aa + wa * xw + dw * c1 + hh * c2
        # keep the paths of the first and last time for the next (sequential) query
        keep: dict[int, Tensor] = {}
        for q in {0, t.size - 1}:
            for d in range(int(tdep[q]) + 1):
                i = (1 << d) + (int(tj[q]) >> (int(tdep[q]) - d))
                if i != 1:
                    keep[i] = known[i]
        if keep:
            packed = torch.stack(list(keep.values()))
            self._cache = {i: packed[r] for r, i in enumerate(keep)}
        return w, a

    # ------------------------------------------------------------------ queries
    def _times(self, ts: Sequence[float] | Tensor | TimeLike, name: str) -> np.ndarray:
        if isinstance(ts, Tensor):
            arr = ts.detach().to("cpu", torch.float64).numpy().reshape(-1)
        elif isinstance(ts, (int, float)) and not isinstance(ts, bool):
            arr = np.array([float(ts)])
        else:
            arr = np.asarray([to_float(v, name) for v in ts], dtype=np.float64)
        bad = ~((arr >= self.t0) & (arr <= self.t1))
        if bad.any():
            raise ValueError(f"{name}: time {float(arr[np.argmax(bad)])} lies outside the "
                             f"tree's interval [{self.t0}, {self.t1}]")
        return arr

    def _out(self, v: Tensor) -> Tensor:
        return v.to(self.dtype).reshape(v.shape[0], *self._shp)

    def __call__(self, t: TimeLike) -> Tensor:
        """W_t: ``shape`` for a scalar ``t``, ``[n, *shape]`` for a 1-D tensor of times."""
        if isinstance(t, Tensor) and t.dim() == 1:
            return self._out(self._resolve(self._times(t, "t"))[0])
        return self._out(self._resolve(self._times(to_float(t, "t"), "t"))[0])[0]

    def increment(self, s: TimeLike, t: TimeLike) -> Tensor:
        """W_t - W_s (``shape``)."""
        w, _ = self._resolve(self._times([to_float(s, "s"), to_float(t, "t")], "s, t"))
        return self._out((w[1] - w[0]).unsqueeze(0))[0]

    def space_time(self, s: TimeLike, t: TimeLike) -> Tensor:
        """int_s^t (W_r - W_s) dr (``shape``)."""
        sf, tf = to_float(s, "s"), to_float(t, "t")
        if sf == tf:
            raise ValueError(f"s, t: expected two distinct times, got s = t = {sf}")
        return self.grid([sf, tf], space_time=True)[1][0]  # type: ignore[index]

    def grid(self, ts: Sequence[float] | Tensor, space_time: bool = False
             ) -> tuple[Tensor, Tensor | None]:
        """Increments ``[N, *shape]`` (and space-time integrals) of a strictly monotone grid
        ``ts [N+1]`` (decreasing: a backward query), resolved in one batched descent:
        ``dW_i = W(ts[i+1]) - W(ts[i])``, ``I_i = A(ts[i+1]) - A(ts[i]) - h_i W(ts[i])``."""
        arr = self._times(ts, "ts")
        if arr.size < 2:
            raise ValueError(f"ts: expected at least two times, got {arr.size}")
        d = np.diff(arr)
        if not ((d > 0).all() or (d < 0).all()):
            raise ValueError("ts: expected strictly monotone times (all increasing or all "
                             "decreasing)")
        n = arr.size - 1
        dw = torch.empty((n, *self._shp), dtype=self.dtype, device=self.device)
        it = torch.empty_like(dw) if space_time else None
        # consecutive chunks of times (sharing their end points) keep the temporaries
        # cache-sized; the cached descent carries over from one chunk to the next
        step = max(2, (1 << 18) // max(1, self._e))
        for c0 in range(0, n, step):
            c1 = min(n, c0 + step)
            w, a = self._resolve(arr[c0: c1 + 1])
            dw[c0:c1] = (w[1:] - w[:-1]).view(c1 - c0, *self._shp)
            if it is not None:
                h = torch.as_tensor(d[c0:c1], dtype=_F64, device=self.device).view(-1, 1)
                it[c0:c1] = (a[1:] - a[:-1] - w[:-1] * h).view(c1 - c0, *self._shp)
        return dw, it

    def release_before(self, t: TimeLike) -> None:
        """A no-op: the tree stores nothing that grows with the queries."""

    def release_after(self, t: TimeLike) -> None:
        """A no-op (see :meth:`release_before`)."""

    def nbytes(self) -> int:
        """Bytes held: the cached descent (at most ``2 (D + 1)`` nodes), the root, counters."""
        seen = {id(v.untyped_storage()): v.untyped_storage().nbytes()
                for v in self._cache.values()}
        return sum(seen.values()) + self._root.numel() * 8 + self._elems.numel() * 8

    def __repr__(self) -> str:
        return (f"BrownianTree(shape={tuple(self.shape)}, t0={self.t0}, t1={self.t1}, "
                f"seed={self.seed}, tol={self.tol}, depth={self.depth})")
