"""``BrownianPath``: a Brownian motion stored at every time it was asked about (docs/math.md §2,
§12.2).

The path keeps ``W`` at its stored times and, once some query needs it, the space-time integral
of a stored interval,

    I[s, u] = int_s^u (W_r - W_s) dr,      Var dW = h, Cov(dW, I) = h^2/2, Var I = h^3/3.

Storage is contiguous: ``W`` rows live in one arena tensor ``[capacity, *shape]`` (appended,
never moved except by compaction after a release), integrals in a second arena, and the sorted
times with their arena slots in numpy arrays; a query costs a ``searchsorted`` and a gather,
with no Python per stored time.

New times after the last stored one extend the path with independent increments (one batched
draw and a cumulative sum: the fast path of a fresh fixed grid). New times inside stored
intervals are drawn conditionally on what is stored, in one batched draw per query. An interval
``[s, u]`` of length ``h`` with stored parent ``p = (dW, I)`` that receives interior times is
split into children ``j`` of lengths ``h_j`` with right ends ``r_j``; the children are drawn
independently, ``c_j = (dW_j, I_j)``, and pinned to the parent by Gaussian conditioning,

    c_j <- c_j + Cov(c_j, p) P^{-1} (p - p(c)),       P = [[h, h^2/2], [h^2/2, h^3/3]],

with ``p(c) = (sum_j dW_j, sum_j [I_j + (u - r_j) dW_j])``, ``Cov(dW_j, dW) = h_j``,
``Cov(dW_j, I) = h_j^2/2 + h_j (u - r_j)``, ``Cov(I_j, dW) = h_j^2/2`` and
``Cov(I_j, I) = h_j^3/3 + h_j^2/2 (u - r_j)`` (exact). A parent whose integral was never drawn is
pinned on ``dW`` alone (the Brownian bridge ``dW_j <- dW_j + h_j/h (dW - sum_j dW_j)``). A
missing integral is drawn given its increment, ``I = h/2 dW + sqrt(h^3/12) zeta``.

The path is a function of its seed and of the sequence of queries: two paths with the same seed
asked the same things agree bit for bit (use :class:`~sdeflow.BrownianTree` for a path that is a
function of (seed, t) alone). Draw ``k`` of the path takes its normals from (seed, k, child)
at each entry's global row, so ``batch_slice`` rows equal the full path's rows bit for bit.

Memory: everything asked is kept (``nbytes()`` counts it) unless the owner calls
:meth:`BrownianPath.release_before` / :meth:`BrownianPath.release_after`; a solve that creates
its own path (``seed=``) may do so behind its current time. A user's path keeps everything.
"""

from __future__ import annotations

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

_STREAM = 0xBA7
_MIN_CAP = 8


class _Arena:
    """Rows ``[capacity, *shape]`` appended in order; slots are row indices."""

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> None:
        self.shape, self.dtype, self.device = shape, dtype, device
        self.data = torch.empty((0, *shape), dtype=dtype, device=device)
        self.used = 0

    def reserve(self, m: int) -> Tensor:
        """Claim the next ``m`` rows; return them (a view to write into)."""
        need = self.used + m
        if need > self.data.shape[0]:
            cap = max(_MIN_CAP, need, 2 * self.data.shape[0])
            new = torch.empty((cap, *self.shape), dtype=self.dtype, device=self.device)
            new[: self.used] = self.data[: self.used]
            self.data = new
        view = self.data[self.used: need]
        self.used = need
        return view

    def append(self, rows: Tensor) -> np.ndarray:
        m = rows.shape[0]
        self.reserve(m).copy_(rows)
        return np.arange(self.used - m, self.used, dtype=np.int64)

    def compact(self, live: np.ndarray) -> np.ndarray:
        """Keep only the rows ``live`` (sorted unique slots); return the old->new map."""
        remap = np.full(max(self.used, 1), -1, dtype=np.int64)
        remap[live] = np.arange(live.size, dtype=np.int64)
        cap = max(_MIN_CAP, 2 * live.size)
        new = torch.empty((cap, *self.shape), dtype=self.dtype, device=self.device)
        if live.size:
            new[: live.size] = self.data[torch.as_tensor(live, device=self.device)]
        self.data, self.used = new, int(live.size)
        return remap

    def rows(self, slots: np.ndarray) -> Tensor:
        if slots.size and slots[-1] - slots[0] == slots.size - 1 and np.all(np.diff(slots) == 1):
            return self.data[int(slots[0]): int(slots[-1]) + 1]
        return self.data[torch.as_tensor(slots, device=self.device)]

    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()


class BrownianPath:
    """A Brownian motion W on ``[t0, t1]`` with ``W_t0 = 0``, exact at every time asked.

    Args:
        shape: full shape of W_t, e.g. ``(batch, d)``; every entry is an independent Brownian
            motion; rows (the first dimension) are generated in blocks of 1024.
        t0, t1: the interval on which the path lives (``t0 < t1``).
        seed: integer seed; ``None`` picks one from torch's global generator (see ``.seed``).
        dtype, device: of the values returned (default: torch's default dtype and device).
        batch_slice: ``slice(a, b)``, ``a, b`` multiples of 1024 (or ``b`` the full size): this
            object holds rows ``a:b`` only and equals those rows of the full path bit for bit
            (asked the same things); ``.shape`` is then ``(b - a, *shape[1:])``.

    Queries: ``bm(t)`` is W_t (a scalar ``t``, or a 1-D tensor of times giving ``[n, *shape]``);
    ``bm.increment(s, t)`` is W_t - W_s; ``bm.space_time(s, t)`` is int_s^t (W_r - W_s) dr;
    ``bm.grid(ts, space_time)`` gives increments (and integrals) of every interval at once.
    """

    #: it stores every time it is asked about (the loop may query a whole fixed grid at once)
    stores_path = True

    def __init__(self, shape: Sequence[int] | torch.Size | int, t0: TimeLike = 0.0,
                 t1: TimeLike = 1.0, seed: int | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None,
                 batch_slice: slice | None = None) -> None:
        self.full_shape = check_shape(shape)
        self.t0, self.t1 = check_span(t0, t1)
        self.dtype = check_dtype(dtype)
        self.device = check_device(device)
        self.seed = check_seed(seed)
        self._rows = Rows(self.full_shape, batch_slice)
        self.shape = torch.Size(self._rows.shape)
        self._shp = tuple(self.shape)
        self._elems = self._rows.counters(self.device)
        self._n = self._rows.numel
        self._key = key(self.seed, _STREAM)
        self._draws = 0
        self._w = _Arena(self._shp, self.dtype, self.device)
        self._i = _Arena(self._shp, self.dtype, self.device)
        self._t = np.array([self.t0], dtype=np.float64)
        self._ws = self._w.append(torch.zeros((1, *self._shp), dtype=self.dtype,
                                              device=self.device))
        self._is = np.full(1, -1, dtype=np.int64)  # integral slot of [t_k, t_k+1]; last unused
        self._lo, self._hi = self.t0, self.t1      # queryable range (shrinks on release)

    # ------------------------------------------------------------------ drawing
    def _draw_keys(self, n: int) -> Tensor:
        """Keys ``[n]`` of the next draw of this path (its children 0 .. n-1)."""
        ids = torch.arange(n, dtype=torch.int64, device=self.device)
        keys = keys_for(key(self._key, self._draws), ids)
        self._draws += 1
        return keys

    def _normals(self, n: int, pair: bool, keys: Tensor | None = None) -> Tensor:
        """``[n, *shape]`` (or ``[2, n, *shape]``) normals of the next draw of this path."""
        keys = self._draw_keys(n) if keys is None else keys
        z = normals(keys, self._elems, self.dtype, pair, n=self._n)
        return z.reshape(((2,) if pair else ()) + (keys.numel(), *self._shp))

    def _col(self, v: np.ndarray) -> Tensor:
        return torch.as_tensor(v, dtype=torch.float64).to(
            device=self.device, dtype=self.dtype).view((-1,) + (1,) * len(self._shp))

    def _check(self, times: np.ndarray, name: str) -> None:
        bad = ~((times >= self._lo) & (times <= self._hi))
        if bad.any():
            t = float(times[np.argmax(bad)])
            if self.t0 <= t <= self.t1:
                raise ValueError(f"{name}: time {t} lies in a released part of the path (it "
                                 f"keeps [{self._lo}, {self._hi}] after release_before/after)")
            raise ValueError(f"{name}: time {t} lies outside the path's interval "
                             f"[{self.t0}, {self.t1}]")

    def _insert(self, q: np.ndarray) -> None:
        """Store the path at the times ``q`` (inside the queryable range)."""
        t = self._t
        new = np.unique(q)
        pos = np.searchsorted(t, new)
        known = (pos < t.size) & (t[np.minimum(pos, t.size - 1)] == new)
        new = new[~known]
        if new.size == 0:
            return
        ext = new[new > t[-1]]
        inner = new[new < t[-1]]
        if inner.size:
            self._refine(inner)
        if ext.size:
            self._extend(ext)

    def _extend(self, ext: np.ndarray) -> None:
        """Independent increments after the last stored time: one draw, generated in chunks of
        about 2^19 numbers written straight into the arena (cache-sized temporaries)."""
        edges = np.concatenate([self._t[-1:], ext])
        sq = np.sqrt(np.diff(edges))
        m = ext.size
        keys = self._draw_keys(m)
        prev = self._w.rows(self._ws[-1:])[0]
        start = self._w.used
        dest = self._w.reserve(m)
        step = max(1, (1 << 19) // max(1, self._n))
        for c0 in range(0, m, step):
            c1 = min(m, c0 + step)
            dw = self._normals(c1 - c0, False, keys[c0:c1]).mul_(self._col(sq[c0:c1]))
            for i in range(c1 - c0):   # a running sum row by row (cumsum over dim 0 is slow)
                prev = torch.add(prev, dw[i], out=dest[c0 + i])
        slots = np.arange(start, start + m, dtype=np.int64)
        self._t = np.concatenate([self._t, ext])
        self._ws = np.concatenate([self._ws, slots])
        self._is = np.concatenate([self._is, np.full(ext.size, -1, dtype=np.int64)])

    def _refine(self, inner: np.ndarray) -> None:
        """New times inside stored intervals, all parents at once (one batched draw)."""
        t = self._t
        par_of_new = np.searchsorted(t, inner, side="right") - 1        # parent k of each time
        parents, counts = np.unique(par_of_new, return_counts=True)
        nchild = counts + 1
        n = int(nchild.sum())
        pidx = np.repeat(np.arange(parents.size), nchild)               # parent row per child
        start = np.concatenate([[0], np.cumsum(nchild)[:-1]])
        # child edges: [t_k, new..., t_k+1] per parent, in order
        left_edge = np.empty(n)
        right_edge = np.empty(n)
        inner_sorted = inner  # np.unique in _insert sorted them, grouped by parent
        ptr = 0
        pos_in = np.arange(n) - start[pidx]                             # child index in parent
        first = pos_in == 0
        last = pos_in == nchild[pidx] - 1
        # the j-th interior time of a parent is inner_sorted[ptr_parent + j]
        off = np.concatenate([[0], np.cumsum(counts)[:-1]])
        li = off[pidx] + pos_in - 1                                     # left interior time
        left_edge[first] = t[parents[pidx[first]]]
        left_edge[~first] = inner_sorted[li[~first]]
        right_edge[last] = t[parents[pidx[last]] + 1]
        right_edge[~last] = inner_sorted[(li + 1)[~last]]
        del ptr
        hj = right_edge - left_edge
        hp = (t[parents + 1] - t[parents])[pidx]
        tail = t[parents + 1][pidx] - right_edge
        has_i = self._is[parents] >= 0
        use_i = bool(has_i.any())
        z = self._normals(n, pair=use_i)
        pid_t = torch.as_tensor(pidx, device=self.device)
        w_left = self._w.rows(self._ws[parents])
        w_right = self._w.rows(self._ws[parents + 1])
        pw = w_right - w_left
        dw = (z[0] if use_i else z).mul_(self._col(np.sqrt(hj)))

        def seg(v: Tensor) -> Tensor:
            return torch.zeros((parents.size, *self._shp), dtype=self.dtype,
                               device=self.device).index_add_(0, pid_t, v)

        rw = pw - seg(dw)
        it: Tensor | None = None
        if use_i:
            ci = has_i[pidx]                                            # child of an I parent
            pi = torch.zeros_like(pw)
            rows_i = np.nonzero(has_i)[0]
            pi[torch.as_tensor(rows_i, device=self.device)] = self._i.rows(
                self._is[parents[rows_i]])
            it = z[1].mul_(self._col(np.sqrt(hj**3 / 12))) + self._col(hj / 2) * dw
            ri = (pi - seg(it + self._col(tail) * dw))
            s = 12.0 / hp**4
            p00, p01, p11 = s * hp**3 / 3, -s * hp**2 / 2, s * hp
            c_ww, c_wi = hj, hj**2 / 2 + hj * tail
            c_iw, c_ii = hj**2 / 2, hj**3 / 3 + hj**2 / 2 * tail
            # dW-only parents: the bridge gain h_j / h on rw, nothing on ri
            g_ww = np.where(ci, c_ww * p00 + c_wi * p01, hj / hp)
            g_wi = np.where(ci, c_ww * p01 + c_wi * p11, 0.0)
            g_iw = np.where(ci, c_iw * p00 + c_ii * p01, 0.0)
            g_ii = np.where(ci, c_iw * p01 + c_ii * p11, 0.0)
            rws, ris = rw[pid_t], ri[pid_t]
            dw = dw + self._col(g_ww) * rws + self._col(g_wi) * ris
            it = it + self._col(g_iw) * rws + self._col(g_ii) * ris
        else:
            dw = dw + self._col(hj / hp) * rw[pid_t]
        # W at the new times: left end of the parent plus the cumulative sum within it
        cs = torch.cumsum(dw, 0)
        base = cs[torch.as_tensor(start, device=self.device)] - dw[
            torch.as_tensor(start, device=self.device)]
        w_new = (cs - base[pid_t] + w_left[pid_t])[torch.as_tensor(np.nonzero(~last)[0],
                                                                   device=self.device)]
        w_slots = self._w.append(w_new)
        i_child = np.full(n, -1, dtype=np.int64)
        if use_i:
            rows_c = np.nonzero(has_i[pidx])[0]
            i_child[rows_c] = self._i.append(it[torch.as_tensor(rows_c, device=self.device)])
        # merge: parent k's interval slot becomes its first child's; new times carry the rest
        is_old = self._is.copy()
        is_old[parents] = i_child[first]
        ins = np.searchsorted(t, inner)
        self._t = np.insert(t, ins, inner)
        self._ws = np.insert(self._ws, ins, w_slots)
        self._is = np.insert(is_old, ins, i_child[~first])

    def _integrals(self, lo: int, hi: int) -> Tensor:
        """Space-time integrals ``[hi - lo, *shape]`` of stored intervals, drawing missing ones
        given their increments (``I = h/2 dW + sqrt(h^3/12) zeta``)."""
        k = np.arange(lo, hi)
        miss = k[self._is[k] < 0]
        if miss.size:
            h = self._t[miss + 1] - self._t[miss]
            dw = self._w.rows(self._ws[miss + 1]) - self._w.rows(self._ws[miss])
            z = self._normals(miss.size, pair=False).mul_(self._col(np.sqrt(h**3 / 12)))
            self._is[miss] = self._i.append(z + self._col(h / 2) * dw)
        return self._i.rows(self._is[k])

    # ------------------------------------------------------------------ queries
    def _times(self, ts: Sequence[float] | Tensor | TimeLike, name: str) -> np.ndarray:
        if isinstance(ts, Tensor):
            arr = ts.detach().to("cpu", torch.float64).numpy().reshape(-1)
        elif isinstance(ts, (int, float)) and not isinstance(ts, bool):
            arr = np.array([float(ts)])
        else:
            try:
                arr = np.asarray([to_float(v, name) for v in ts], dtype=np.float64)
            except TypeError as exc:
                raise TypeError(f"{name}: expected times (floats or a tensor), got "
                                f"{type(ts).__name__}") from exc
        if np.isnan(arr).any():
            raise ValueError(f"{name}: contains NaN")
        self._check(arr, name)
        return arr

    def _values(self, arr: np.ndarray) -> Tensor:
        self._insert(arr)
        return self._w.rows(self._ws[np.searchsorted(self._t, arr)])

    def __call__(self, t: TimeLike) -> Tensor:
        """W_t: ``shape`` for a scalar ``t``, ``[n, *shape]`` for a 1-D tensor of times."""
        if isinstance(t, Tensor) and t.dim() == 1:
            return self._values(self._times(t, "t")).clone()
        arr = self._times(to_float(t, "t"), "t")
        return self._values(arr)[0].clone()

    def increment(self, s: TimeLike, t: TimeLike) -> Tensor:
        """W_t - W_s (``shape``)."""
        arr = np.array([to_float(s, "s"), to_float(t, "t")])
        w = self._values(self._times(arr, "s, t"))
        return w[1] - w[0]

    def space_time(self, s: TimeLike, t: TimeLike) -> Tensor:
        """int_s^t (W_r - W_s) dr (``shape``); for t < s this is -int_t^s (W_r - W_s) dr."""
        sf, tf = to_float(s, "s"), to_float(t, "t")
        if sf == tf:
            raise ValueError(f"s, t: expected two distinct times, got s = t = {sf}")
        return self.grid([sf, tf], space_time=True)[1][0]  # type: ignore[index]

    def grid(self, ts: Sequence[float] | Tensor, space_time: bool = False
             ) -> tuple[Tensor, Tensor | None]:
        """Increments (and space-time integrals) over every interval of a monotone grid.

        Args:
            ts: ``[N+1]`` strictly monotone times inside ``[t0, t1]`` (increasing or
                decreasing: a decreasing grid is a backward query).
            space_time: also return the integrals (drawn and stored only when asked).

        Returns:
            ``(dW, I)``, each ``[N, *shape]``: ``dW[i] = W(ts[i+1]) - W(ts[i])`` and
            ``I[i] = int_{ts[i]}^{ts[i+1]} (W_r - W(ts[i])) dr`` (``None`` unless asked).
        """
        arr = self._times(ts, "ts")
        if arr.size < 2:
            raise ValueError(f"ts: expected at least two times, got {arr.size}")
        d = np.diff(arr)
        if not ((d > 0).all() or (d < 0).all()):
            raise ValueError("ts: expected strictly monotone times (all increasing or all "
                             "decreasing)")
        if d[0] < 0:
            dw, it = self.grid(arr[::-1].copy(), space_time)
            dw = dw.flip(0)
            if it is None:
                return dw.neg_(), None
            # reversed step from a to b (b < a): I = -[I_{b->a} + (W_b - W_a)(a - b)]
            return -dw, (dw * self._col(-d) - it.flip(0))
        self._insert(arr)
        idx = np.searchsorted(self._t, arr)
        w = self._w.rows(self._ws[idx])
        dw = w[1:] - w[:-1]
        if not space_time:
            return dw, None
        lo, hi = int(idx[0]), int(idx[-1])
        ie = self._integrals(lo, hi)
        if hi - lo == arr.size - 1:
            return dw, ie.clone()
        # several stored intervals per grid interval: I = sum_e [I_e + (W_e - W_start) h_e]
        k = np.arange(lo, hi)
        owner = np.searchsorted(idx, k, side="right") - 1
        own_t = torch.as_tensor(owner, device=self.device)
        he = self._col(self._t[k + 1] - self._t[k])
        we = self._w.rows(self._ws[k])
        terms = ie + (we - w[:-1][own_t]) * he
        out = torch.zeros_like(dw).index_add_(0, own_t, terms)
        return dw, out

    # ------------------------------------------------------------------ memory
    def release_before(self, t: TimeLike) -> None:
        """Drop stored data strictly before the last stored time ``<= t``; later queries before
        that time raise. A solve calls this only on a path it created itself (``seed=``)."""
        tf = to_float(t, "t")
        k = int(np.searchsorted(self._t, tf, side="right")) - 1
        if k <= 0:
            return
        self._lo = max(self._lo, float(self._t[k]))
        self._keep(slice(k, None))

    def release_after(self, t: TimeLike) -> None:
        """Drop stored data strictly after the first stored time ``>= t`` (backward solves)."""
        tf = to_float(t, "t")
        k = int(np.searchsorted(self._t, tf, side="left"))
        if k >= self._t.size - 1:
            return
        self._hi = min(self._hi, float(self._t[k]))
        self._keep(slice(0, k + 1))

    def _keep(self, sl: slice) -> None:
        self._t, self._ws, self._is = self._t[sl].copy(), self._ws[sl].copy(), self._is[sl].copy()
        self._is[-1] = -1
        if 2 * self._ws.size < self._w.used:
            remap = self._w.compact(np.sort(self._ws))
            self._ws = remap[self._ws]
        live_i = self._is[self._is >= 0]
        if 2 * live_i.size < self._i.used:
            remap = self._i.compact(np.sort(live_i))
            self._is = np.where(self._is >= 0, remap[np.maximum(self._is, 0)], -1)

    def available(self) -> tuple[float, float]:
        """The range of times this path can still answer (``[t0, t1]`` until a release)."""
        return self._lo, self._hi

    def nbytes(self) -> int:
        """Bytes held: both arenas (at capacity) and the index arrays."""
        return (self._w.nbytes() + self._i.nbytes() + self._t.nbytes + self._ws.nbytes
                + self._is.nbytes + self._elems.numel() * 8)

    @property
    def stored_times(self) -> int:
        """How many times the path stores."""
        return int(self._t.size)

    def __repr__(self) -> str:
        return (f"BrownianPath(shape={tuple(self.shape)}, t0={self.t0}, t1={self.t1}, "
                f"seed={self.seed}, stored={self._t.size})")


