"""Reproducible Brownian motion that stays one path under refinement (MATH.md §1, §2).

:class:`BrownianPath` stores the path at every time it has been asked about, together with the
*space-time integral* of each stored interval,

    I[s, u] = int_s^u (W_r - W_s) dr,

which SRA1 needs (MATH.md §2). Over an interval of length h the pair (dW, I) is jointly Gaussian:
Var dW = h, Cov(dW, I) = h^2/2, Var I = h^3/3.

Times after the last stored one extend the path with independent increments (one batched draw
and a cumulative sum: the fast path for a fresh fixed grid). Times inside stored intervals are
filled in *conditionally on what is stored*, so a path queried on a fine grid agrees with the
same path queried on a coarse one, in any order. Space-time integrals are drawn only when a query
needs them, conditionally on the interval's increment, ``I = h/2 dW + sqrt(h^3/12) zeta``.

Refinement, exactly: an interval [s, u] of length h with stored p = (dW, I) receives new interior
times, splitting it into children j of lengths h_j with right ends r_j. Children are drawn
independently, c_j = (dW_j, I_j), and then *pinned* to the stored parent by Gaussian conditioning,

    c_j <- c_j + Cov(c_j, p) P^{-1} (p - p(c)),     P = [[h, h^2/2], [h^2/2, h^3/3]],

where p(c) = (sum_j dW_j, sum_j [I_j + (u - r_j) dW_j]) is the parent the children imply, and
Cov(dW_j, dW) = h_j, Cov(dW_j, I) = h_j^2/2 + h_j (u - r_j), Cov(I_j, dW) = h_j^2/2,
Cov(I_j, I) = h_j^3/3 + h_j^2/2 (u - r_j). This is exact (conditioning of a Gaussian vector).
A parent whose integral was never drawn is pinned on dW alone (the Brownian bridge,
dW_j <- dW_j + h_j/h (dW - sum_j dW_j)). All new times of one query cost one batched draw.

Reproducibility: the path is a function of ``seed`` and of the sequence of queries. Two paths
with the same seed asked the same things give bit-identical answers; any queries give values of
one Brownian path.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import torch

Tensor = torch.Tensor
TimeLike = float | int | Tensor


def _to_float(t: TimeLike, name: str) -> float:
    if isinstance(t, Tensor):
        if t.numel() != 1:
            raise ValueError(
                f"{name}: expected a scalar time, got a tensor of shape {tuple(t.shape)}"
            )
        return float(t.item())
    if isinstance(t, (int, float)):
        return float(t)
    raise TypeError(f"{name}: expected a float or a 0-dim tensor, got {type(t).__name__}")


class BrownianPath:
    """A Brownian motion W on ``[t0, t1]`` with ``W_t0 = 0``, consistent under refinement.

    Args:
        shape: shape of W_t, e.g. ``(batch, d)``; every entry is an independent Brownian motion.
        t0, t1: the interval on which the path lives (``t0 < t1``).
        seed: integer seed; ``None`` picks one from torch's global generator (see ``.seed``).
        dtype, device: of the values returned (default: torch's default dtype and device).

    Queries: ``bm(t)`` is W_t (``t`` a float, a 0-dim tensor, or a 1-D tensor of times giving
    ``[n, *shape]``); ``bm.increment(s, t)`` is W_t - W_s; ``bm.space_time(s, t)`` is
    int_s^t (W_r - W_s) dr; ``bm.grid(ts)`` gives both for every interval of a grid at once.
    The path extends lazily: it stores only what has been asked.
    """

    def __init__(
        self,
        shape: Sequence[int] | torch.Size | int,
        t0: float = 0.0,
        t1: float = 1.0,
        seed: int | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if isinstance(shape, int):
            shape = (shape,)
        try:
            self.shape = torch.Size(shape)
        except TypeError as exc:
            raise TypeError(f"shape: expected a sequence of ints, got {shape!r}") from exc
        if any(s < 0 for s in self.shape):
            raise ValueError(f"shape: expected non-negative sizes, got {tuple(self.shape)}")
        t0f, t1f = _to_float(t0, "t0"), _to_float(t1, "t1")
        if not (math.isfinite(t0f) and math.isfinite(t1f)) or not t0f < t1f:
            raise ValueError(f"t0, t1: expected finite t0 < t1, got t0={t0f}, t1={t1f}")
        self.t0, self.t1 = t0f, t1f
        self.dtype = torch.get_default_dtype() if dtype is None else dtype
        if not self.dtype.is_floating_point:
            raise ValueError(f"dtype: expected a floating dtype, got {self.dtype}")
        # default: torch's default device (no device is hard-coded)
        self.device = torch.empty(()).device if device is None else torch.device(device)
        if seed is None:
            seed = int(torch.randint(0, 2**62, (), dtype=torch.int64).item())
        if not isinstance(seed, int):
            raise TypeError(f"seed: expected an int or None, got {type(seed).__name__}")
        self.seed = seed
        self._gen = torch.Generator(device=self.device)
        self._gen.manual_seed(seed)
        self._times: list[float] = [t0f]
        self._w: list[Tensor] = [torch.zeros(self.shape, dtype=self.dtype, device=self.device)]
        # space-time integral of each stored interval; None until some query needs it
        self._i: list[Tensor | None] = []

    # ------------------------------------------------------------------ drawing
    def _randn(self, n: int) -> Tensor:
        return torch.randn(
            (n, *self.shape), generator=self._gen, dtype=self.dtype, device=self.device
        )

    def _col(self, values: Sequence[float] | Tensor) -> Tensor:
        """Per-row coefficients as a ``[n, 1, ..., 1]`` tensor of the path's dtype."""
        v = values if isinstance(values, Tensor) else torch.tensor(values, dtype=torch.float64)
        return v.to(self.dtype).to(self.device).view((-1,) + (1,) * len(self.shape))

    def _check_times(self, times: Sequence[float], name: str) -> None:
        lo, hi = self.t0, self.t1
        for t in times:
            if not lo <= t <= hi:
                raise ValueError(
                    f"{name}: time {t} lies outside the path's interval [{lo}, {hi}]"
                )

    def _stored(self, t: float) -> bool:
        i = bisect.bisect_left(self._times, t)
        return i < len(self._times) and self._times[i] == t

    def _insert(self, new: Sequence[float]) -> None:
        """Store the path at the times ``new`` (floats inside [t0, t1]), batched."""
        fresh = sorted({t for t in new if not self._stored(t)})
        if not fresh:
            return
        last = self._times[-1]
        inner = [t for t in fresh if t < last]
        if inner:
            self._refine(inner)
        ext = [t for t in fresh if t > last]
        if ext:
            self._extend(ext)

    def _extend(self, ext: list[float]) -> None:
        """New times after the last stored one: independent increments, one draw."""
        edges = [self._times[-1], *ext]
        h = [b - a for a, b in zip(edges[:-1], edges[1:])]
        dw = self._randn(len(ext)).mul_(self._col(h).sqrt())
        w = torch.cumsum(dw, 0).add_(self._w[-1])
        self._times.extend(ext)
        self._w.extend(w.unbind(0))
        self._i.extend([None] * len(ext))

    def _refine(self, inner: list[float]) -> None:
        """New times inside stored intervals: children pinned to their stored parent."""
        times = self._times
        groups: dict[int, list[float]] = {}
        for t in inner:
            groups.setdefault(bisect.bisect_right(times, t) - 1, []).append(t)
        parents = sorted(groups)
        widths: list[float] = []      # child widths h_j
        tails: list[float] = []       # u - r_j (distance from the child's right end to u)
        pwidth: list[float] = []      # parent width, per child
        for k in parents:
            edges = [times[k], *groups[k], times[k + 1]]
            for a, b in zip(edges[:-1], edges[1:]):
                widths.append(b - a)
                tails.append(edges[-1] - b)
                pwidth.append(edges[-1] - edges[0])
        n = len(widths)
        counts = [len(groups[k]) + 1 for k in parents]
        dev = self.device
        with_i = [self._i[k] is not None for k in parents]
        use_i = all(with_i)
        if any(with_i) and not use_i:  # mixed: refine the two kinds of parents separately
            self._refine([t for k in parents if self._i[k] is None for t in groups[k]])
            self._refine([t for k in parents if self._i[k] is not None for t in groups[k]])
            return
        # Per-parent operations. When every parent has the same number of children (halving a
        # grid, say) the children are viewed as [parents, children, ...] and broadcast;
        # otherwise segments of the flat child axis are summed and repeated.
        n_par, shp = len(parents), tuple(self.shape)
        if len(set(counts)) == 1:
            c = counts[0]

            def seg(v: Tensor) -> Tensor:
                return v.view(n_par, c, *shp).sum(1)

            def spread(r: Tensor) -> Tensor:
                return r.unsqueeze(1).expand(n_par, c, *shp).reshape(n, *shp)

            def inner_cumsum(v: Tensor) -> Tensor:
                return torch.cumsum(v.view(n_par, c, *shp), 1).view(n, *shp)
        else:
            starts = [0]
            for cnt in counts[:-1]:
                starts.append(starts[-1] + cnt)
            rep = torch.tensor(counts, device=dev)
            st_i = torch.tensor(starts, device=dev)
            en_i = st_i + rep - 1

            def seg(v: Tensor) -> Tensor:
                return self._segsum(v, st_i, en_i)

            def spread(r: Tensor) -> Tensor:
                return r.repeat_interleave(rep, 0)

            def inner_cumsum(v: Tensor) -> Tensor:
                cs = torch.cumsum(v, 0)
                return cs - spread(cs[st_i] - v[st_i])
        # Coefficients, in float64 on [n] vectors (P^-1 has h^-4 in it).
        hj = torch.tensor(widths, dtype=torch.float64)
        tail = torch.tensor(tails, dtype=torch.float64)
        hp = torch.tensor(pwidth, dtype=torch.float64)
        # Unconditional children.
        z = self._randn(2 * n if use_i else n)
        dw = z[:n].mul_(self._col(hj.sqrt()))
        pw = torch.stack([self._w[k + 1] - self._w[k] for k in parents])
        if not use_i:
            # Brownian bridge: dW_j += h_j / h (dW - sum_j dW_j)
            dw.addcmul_(self._col(hj / hp), spread(pw - seg(dw)))
            it: Tensor | None = None
        else:
            it = torch.addcmul(z[n:] * self._col((hj**3 / 12).sqrt()), self._col(hj / 2), dw)
            pi = torch.stack([self._i[k] for k in parents])  # type: ignore[misc]
            rw = spread(pw - seg(dw))
            ri = spread(pi - seg(torch.addcmul(it, self._col(tail), dw)))
            # Gain K_j = Cov(c_j, p) P^-1, P^-1 = 12/h^4 [[h^3/3, -h^2/2], [-h^2/2, h]]
            c_ww, c_wi = hj, hj**2 / 2 + hj * tail
            c_iw, c_ii = hj**2 / 2, hj**3 / 3 + hj**2 / 2 * tail
            s = 12.0 / hp**4
            p00, p01, p11 = s * hp**3 / 3, -s * hp**2 / 2, s * hp
            dw.addcmul_(self._col(c_ww * p00 + c_wi * p01), rw)
            dw.addcmul_(self._col(c_ww * p01 + c_wi * p11), ri)
            it.addcmul_(self._col(c_iw * p00 + c_ii * p01), rw)
            it.addcmul_(self._col(c_iw * p01 + c_ii * p11), ri)
        # W at the new times: left end of the parent plus a cumulative sum within it.
        w_left = torch.stack([self._w[k] for k in parents])
        w_rows = (inner_cumsum(dw) + spread(w_left)).unbind(0)
        i_rows = it.unbind(0) if it is not None else [None] * n
        starts_py = [0]
        for cnt in counts[:-1]:
            starts_py.append(starts_py[-1] + cnt)
        # Splice into the stored lists, last parent first so indices stay valid.
        for k, s0, cnt in zip(reversed(parents), reversed(starts_py), reversed(counts)):
            times[k + 1 : k + 1] = groups[k]
            self._w[k + 1 : k + 1] = w_rows[s0 : s0 + cnt - 1]
            self._i[k : k + 1] = i_rows[s0 : s0 + cnt]

    @staticmethod
    def _segsum(v: Tensor, starts: Tensor, ends: Tensor) -> Tensor:
        """Sums of the contiguous row segments ``[starts[p], ends[p]]`` of ``v``."""
        c = torch.cumsum(v, 0)
        return c[ends] - c[starts] + v[starts]

    def _integrals(self, lo: int, hi: int) -> list[Tensor]:
        """Space-time integrals of stored intervals ``lo .. hi-1``, drawing missing ones.

        A missing integral is drawn conditionally on its interval's increment:
        ``I = h/2 dW + sqrt(h^3/12) zeta`` (MATH.md §2).
        """
        missing = [e for e in range(lo, hi) if self._i[e] is None]
        if missing:
            h = [self._times[e + 1] - self._times[e] for e in missing]
            dw = torch.stack([self._w[e + 1] - self._w[e] for e in missing])
            z = self._randn(len(missing)).mul_(self._col([math.sqrt(x**3 / 12) for x in h]))
            vals = z.addcmul_(self._col([x / 2 for x in h]), dw).unbind(0)
            for e, v in zip(missing, vals):
                self._i[e] = v
        return self._i[lo:hi]  # type: ignore[return-value]

    # ------------------------------------------------------------------ queries
    def _index(self, t: float) -> int:
        i = bisect.bisect_left(self._times, t)
        if i == len(self._times) or self._times[i] != t:
            self._insert([t])
            i = bisect.bisect_left(self._times, t)
        return i

    def __call__(self, t: TimeLike) -> Tensor:
        """W_t: shape ``self.shape`` for a scalar ``t``, ``[n, *shape]`` for a 1-D tensor."""
        if isinstance(t, Tensor) and t.dim() == 1:
            ts = [float(v) for v in t.tolist()]
            self._check_times(ts, "t")
            self._insert(ts)
            return torch.stack([self._w[self._index(v)] for v in ts])
        tf = _to_float(t, "t")
        self._check_times([tf], "t")
        return self._w[self._index(tf)]

    def increment(self, s: TimeLike, t: TimeLike) -> Tensor:
        """W_t - W_s (``shape``)."""
        sf, tf = _to_float(s, "s"), _to_float(t, "t")
        self._check_times([sf, tf], "s, t")
        self._insert([sf, tf])
        return self._w[self._index(tf)] - self._w[self._index(sf)]

    def space_time(self, s: TimeLike, t: TimeLike) -> Tensor:
        """int_s^t (W_r - W_s) dr (``shape``); for t < s this is -int_t^s (W_r - W_s) dr."""
        sf, tf = _to_float(s, "s"), _to_float(t, "t")
        self._check_times([sf, tf], "s, t")
        _, it = self.grid([sf, tf], space_time=True)
        return it[0]  # type: ignore[index]

    def grid(
        self, ts: Sequence[float] | Tensor, space_time: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """Increments (and space-time integrals) over every interval of a monotone grid, batched.

        Args:
            ts: ``[N+1]`` strictly monotone times inside ``[t0, t1]`` (increasing or decreasing).
            space_time: also return the integrals (drawn lazily otherwise: solvers that do not
                need them cost one draw per new time, not two).

        Returns:
            ``(dW, I)``, each ``[N, *shape]``: ``dW[i] = W(ts[i+1]) - W(ts[i])`` and
            ``I[i] = int_{ts[i]}^{ts[i+1]} (W_r - W(ts[i])) dr`` (``None`` unless asked for).
        """
        tl = [float(v) for v in (ts.tolist() if isinstance(ts, Tensor) else ts)]
        if len(tl) < 2:
            raise ValueError("ts: expected at least two times")
        if tl[-1] < tl[0]:
            dw, it = self.grid(tl[::-1], space_time)
            dw = dw.flip(0)
            if it is None:
                return -dw, None
            h = self._col([a - b for a, b in zip(tl[:-1], tl[1:])])
            # reversed step from a to b (b < a): I = -[I_{b->a} + (W_b - W_a)(a - b)]
            return -dw, -(it.flip(0) - dw * h)
        self._check_times(tl, "ts")
        self._insert(tl)
        idx = [self._index(t) for t in tl]
        w = torch.stack([self._w[i] for i in idx])
        dw = w[1:] - w[:-1]
        if not space_time:
            return dw, None
        lo, hi = idx[0], idx[-1]
        ie = torch.stack(self._integrals(lo, hi))
        if hi - lo == len(tl) - 1:
            return dw, ie
        # Several stored intervals per grid interval: I = sum_e [I_e + (W_e - W_start) h_e].
        counts = torch.tensor([b - a for a, b in zip(idx[:-1], idx[1:])], device=self.device)
        he = self._col([self._times[e + 1] - self._times[e] for e in range(lo, hi)])
        we = torch.stack(self._w[lo:hi])
        terms = torch.addcmul(ie, we - w[:-1].repeat_interleave(counts, 0), he)
        starts = torch.tensor(idx[:-1], device=self.device) - lo
        return dw, self._segsum(terms, starts, torch.tensor(idx[1:], device=self.device) - lo - 1)

    def __repr__(self) -> str:
        return (f"BrownianPath(shape={tuple(self.shape)}, t0={self.t0}, t1={self.t1}, "
                f"seed={self.seed}, stored={len(self._times)})")
