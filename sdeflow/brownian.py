"""Reproducible Brownian motion that stays one path under refinement (MATH.md §1, §2).

:class:`BrownianPath` stores the path at every time it has been asked about, together with the
*space-time integral* of each stored interval,

    I[s, u] = int_s^u (W_r - W_s) dr,

which SRA1 needs (MATH.md §2). Over an interval of length h the pair (dW, I) is jointly Gaussian:
Var dW = h, Cov(dW, I) = h^2/2, Var I = h^3/3.

New times are filled in *conditionally on what is already stored* (a Brownian bridge that also
conditions on the space-time integral), so a path queried on a fine grid agrees with the same path
queried on a coarse one, in any order. The value at ``t1`` (and the integral over ``[t0, t1]``) is
drawn when the path is made, so every later query is such a refinement.

Refinement, exactly: an interval [s, u] of length h with stored p = (dW, I) receives new interior
times, splitting it into children j of lengths h_j with right ends r_j. Children are drawn
independently, c_j = (dW_j, I_j), and then *pinned* to the stored parent by Gaussian conditioning,

    c_j <- c_j + Cov(c_j, p) P^{-1} (p - p(c)),     P = [[h, h^2/2], [h^2/2, h^3/3]],

where p(c) = (sum_j dW_j, sum_j [I_j + (u - r_j) dW_j]) is the parent the children imply, and
Cov(dW_j, dW) = h_j, Cov(dW_j, I) = h_j^2/2 + h_j (u - r_j), Cov(I_j, dW) = h_j^2/2,
Cov(I_j, I) = h_j^3/3 + h_j^2/2 (u - r_j). This is exact (conditioning of a Gaussian vector), and
all new times of one query are drawn in one batched call, whatever their number: that is the fast
path for fixed grids.

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
        dtype, device: of the values returned (default: torch's default dtype, CPU... or the
            device given).

    Queries: ``bm(t)`` is W_t (``t`` a float, a 0-dim tensor, or a 1-D tensor of times giving
    ``[n, *shape]``); ``bm.increment(s, t)`` is W_t - W_s; ``bm.space_time(s, t)`` is
    int_s^t (W_r - W_s) dr; ``bm.grid(ts)`` gives both for every interval of a grid at once.
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
        self.device = torch.device("cpu") if device is None else torch.device(device)
        if seed is None:
            seed = int(torch.randint(0, 2**62, (), dtype=torch.int64).item())
        if not isinstance(seed, int):
            raise TypeError(f"seed: expected an int or None, got {type(seed).__name__}")
        self.seed = seed
        self._gen = torch.Generator(device=self.device)
        self._gen.manual_seed(seed)
        h = t1f - t0f
        z = self._randn(2)
        dw = math.sqrt(h) * z[0]
        integral = 0.5 * h * dw + math.sqrt(h**3 / 12.0) * z[1]
        self._times: list[float] = [t0f, t1f]
        self._w: list[Tensor] = [torch.zeros(self.shape, dtype=self.dtype, device=self.device), dw]
        self._i: list[Tensor] = [integral]  # one per stored interval

    # ------------------------------------------------------------------ drawing
    def _randn(self, n: int) -> Tensor:
        return torch.randn(
            (n, *self.shape), generator=self._gen, dtype=self.dtype, device=self.device
        )

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
        """Store the path at the times ``new`` (floats inside [t0, t1]) in one batched draw."""
        times = self._times
        fresh = sorted({t for t in new if not self._stored(t)})
        if not fresh:
            return
        # Group the new times by the stored interval k = [times[k], times[k+1]] containing them.
        groups: dict[int, list[float]] = {}
        for t in fresh:
            groups.setdefault(bisect.bisect_right(times, t) - 1, []).append(t)
        parents = sorted(groups)
        widths: list[float] = []      # child widths h_j
        tails: list[float] = []       # u - r_j
        parent_of: list[int] = []     # parent position (0..len(parents)-1)
        for p_pos, k in enumerate(parents):
            edges = [times[k], *groups[k], times[k + 1]]
            u = edges[-1]
            for a, b in zip(edges[:-1], edges[1:]):
                widths.append(b - a)
                tails.append(u - b)
                parent_of.append(p_pos)
        n_child = len(widths)
        f64 = dict(dtype=torch.float64, device=self.device)
        hj = torch.tensor(widths, **f64)
        tail = torch.tensor(tails, **f64)
        idx = torch.tensor(parent_of, device=self.device)
        hp = torch.tensor([times[k + 1] - times[k] for k in parents], **f64)[idx]
        # Unconditional children.
        z = self._randn(2 * n_child).view(2, n_child, *self.shape).to(torch.float64)
        bshape = (n_child,) + (1,) * len(self.shape)
        dw = hj.sqrt().view(bshape) * z[0]
        it = 0.5 * hj.view(bshape) * dw + (hj**3 / 12.0).sqrt().view(bshape) * z[1]
        # Residual between the stored parents and what the children imply.
        pw = torch.stack([self._w[k + 1] - self._w[k] for k in parents]).to(torch.float64)
        pi = torch.stack([self._i[k] for k in parents]).to(torch.float64)
        cw = torch.zeros_like(pw).index_add_(0, idx, dw)
        ci = torch.zeros_like(pi).index_add_(0, idx, it + tail.view(bshape) * dw)
        rw, ri = (pw - cw)[idx], (pi - ci)[idx]
        # Gain K_j = Cov(c_j, p) P^{-1}, P^{-1} = 12/h^4 [[h^3/3, -h^2/2], [-h^2/2, h]].
        c_ww, c_wi = hj, hj**2 / 2 + hj * tail
        c_iw, c_ii = hj**2 / 2, hj**3 / 3 + hj**2 / 2 * tail
        s = 12.0 / hp**4
        p00, p01, p11 = s * hp**3 / 3, -s * hp**2 / 2, s * hp
        k_ww, k_wi = c_ww * p00 + c_wi * p01, c_ww * p01 + c_wi * p11
        k_iw, k_ii = c_iw * p00 + c_ii * p01, c_iw * p01 + c_ii * p11
        v = lambda a: a.view(bshape)  # noqa: E731
        dw = dw + v(k_ww) * rw + v(k_wi) * ri
        it = it + v(k_iw) * rw + v(k_ii) * ri
        # W at the new times: a cumulative sum of the children within each parent.
        csum = torch.cumsum(dw, 0)
        starts = torch.tensor(
            [i for i in range(n_child) if i == 0 or parent_of[i] != parent_of[i - 1]],
            device=self.device,
        )
        base = (csum[starts] - dw[starts])[idx]
        w_left = torch.stack([self._w[k] for k in parents]).to(torch.float64)[idx]
        w_new = (w_left + csum - base).to(self.dtype)
        it = it.to(self.dtype)
        w_rows, i_rows = w_new.unbind(0), it.unbind(0)
        # Splice into the stored lists, last parent first so indices stay valid.
        pos = n_child
        for k in reversed(parents):
            m = len(groups[k])
            pos -= m + 1
            times[k + 1 : k + 1] = groups[k]
            self._w[k + 1 : k + 1] = w_rows[pos : pos + m]
            self._i[k : k + 1] = i_rows[pos : pos + m + 1]

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
        self._insert([sf, tf])
        if tf < sf:
            # int_s^t (W_r - W_s) dr = -[int_t^s (W_r - W_t) dr + (W_t - W_s)(s - t)]
            return -(self.space_time(tf, sf) + self.increment(sf, tf) * (sf - tf))
        a, b = self._index(sf), self._index(tf)
        w_s = self._w[a]
        total = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        for e in range(a, b):
            total = total + self._i[e] + (self._w[e] - w_s) * (self._times[e + 1] - self._times[e])
        return total

    def grid(self, ts: Sequence[float] | Tensor) -> tuple[Tensor, Tensor]:
        """Increments and space-time integrals over every interval of a monotone grid, batched.

        Args:
            ts: ``[N+1]`` strictly monotone times inside ``[t0, t1]`` (increasing or decreasing).

        Returns:
            ``(dW, I)``, each ``[N, *shape]``: ``dW[i] = W(ts[i+1]) - W(ts[i])`` and
            ``I[i] = int_{ts[i]}^{ts[i+1]} (W_r - W(ts[i])) dr``.
        """
        tl = [float(v) for v in (ts.tolist() if isinstance(ts, Tensor) else ts)]
        if len(tl) < 2:
            raise ValueError("ts: expected at least two times")
        if tl[-1] < tl[0]:
            dw, it = self.grid(tl[::-1])
            dw, it = dw.flip(0), it.flip(0)
            h = torch.tensor([a - b for a, b in zip(tl[:-1], tl[1:])], dtype=self.dtype,
                             device=self.device).view((-1,) + (1,) * len(self.shape))
            # reversed step from a to b (b < a): I = -[I_{b->a} + (W_b - W_a)(a - b)]
            return -dw, -(it - dw * h)
        self._check_times(tl, "ts")
        self._insert(tl)
        idx = [self._index(t) for t in tl]
        w = torch.stack([self._w[i] for i in idx])
        dw = w[1:] - w[:-1]
        if all(b == a + 1 for a, b in zip(idx[:-1], idx[1:])):
            return dw, torch.stack(self._i[idx[0] : idx[-1]])
        # Several stored intervals per grid interval: I = sum_e [I_e + (W_e - W_start) h_e].
        lo, hi = idx[0], idx[-1]
        owner = torch.tensor(
            [g for g, (a, b) in enumerate(zip(idx[:-1], idx[1:])) for _ in range(a, b)],
            device=self.device,
        )
        he = torch.tensor([self._times[e + 1] - self._times[e] for e in range(lo, hi)],
                          dtype=self.dtype, device=self.device)
        we = torch.stack(self._w[lo:hi])
        ie = torch.stack(self._i[lo:hi])
        terms = ie + (we - w[:-1][owner]) * he.view((-1,) + (1,) * len(self.shape))
        return dw, torch.zeros_like(dw).index_add_(0, owner, terms)

    def __repr__(self) -> str:
        return (f"BrownianPath(shape={tuple(self.shape)}, t0={self.t0}, t1={self.t1}, "
                f"seed={self.seed}, stored={len(self._times)})")
