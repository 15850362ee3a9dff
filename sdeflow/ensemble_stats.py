"""The statistics of :func:`sdeflow.ensemble`: histogram quantiles, mergeable moments (Chan,
Golub & LeVeque; docs/math.md §16) and the :class:`EnsembleResult`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

Tensor = torch.Tensor

STAT_NAMES = ("mean", "cov", "var")

# ----------------------------------------------------------------------------------------------
# Quantiles by a fixed-grid histogram
# ----------------------------------------------------------------------------------------------
class Quantiles:
    """Streaming quantiles of every coordinate at every saved time by a fixed-grid histogram.

    Args:
        probs: probabilities in (0, 1).
        lo, hi: the grid's range; values outside are counted in an under/overflow bin.
        bins: number of equal bins on ``[lo, hi]``.

    The counts merge exactly (integers), so sharding does not change the result. The estimate
    interpolates linearly inside the bin holding the empirical quantile, so it lies within one
    bin width ``(hi - lo) / bins`` of the sample quantile when that lies in ``[lo, hi]``; a
    quantile falling in the under/overflow bin is NaN (widen ``[lo, hi]``). Memory:
    ``T * d * (bins + 2)`` int64 counts.
    """

    def __init__(self, probs: Sequence[float], lo: float, hi: float, bins: int = 2048) -> None:
        ps = [float(p) for p in probs]
        if not ps or any(not 0.0 < p < 1.0 for p in ps):
            raise ValueError(f"statistics: Quantiles probs must lie in (0, 1), got {probs!r}")
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"statistics: Quantiles needs finite lo < hi, got {lo}, {hi}")
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError(f"statistics: Quantiles bins must be a positive int, got {bins!r}")
        self.probs, self.lo, self.hi, self.bins = ps, float(lo), float(hi), bins

    def counts(self, ys: Tensor) -> Tensor:
        """``[T, d, bins + 2]`` counts of ``ys [T, n, d]`` (bin 0: below lo, last: above hi)."""
        t, n, d = ys.shape
        w = (self.hi - self.lo) / self.bins
        idx = torch.floor((ys.double() - self.lo) / w).clamp_(-1, self.bins).to(torch.int64) + 1
        idx = torch.where(torch.isnan(ys), torch.full_like(idx, self.bins + 1), idx)
        cell = (torch.arange(t, device=ys.device).view(t, 1, 1) * d
                + torch.arange(d, device=ys.device).view(1, 1, d))
        flat = (cell * (self.bins + 2) + idx).reshape(-1)
        return torch.bincount(flat, minlength=t * d * (self.bins + 2)).view(t, d, self.bins + 2)

    def estimate(self, counts: Tensor) -> Tensor:
        """``[len(probs), T, d]`` quantiles from merged counts."""
        c = counts.double()
        n = c.sum(-1, keepdim=True)
        cum = c.cumsum(-1)
        w = (self.hi - self.lo) / self.bins
        out = []
        for p in self.probs:
            target = p * n                                      # [T, d, 1]
            k = torch.searchsorted(cum.contiguous(), target.contiguous()).clamp_(
                max=self.bins + 1)
            below = torch.gather(cum, -1, k) - torch.gather(c, -1, k)
            inbin = torch.gather(c, -1, k)
            frac = ((target - below) / inbin.clamp(min=1)).clamp_(0, 1)
            q = self.lo + (k.double() - 1 + frac) * w
            bad = (k == 0) | (k == self.bins + 1)
            out.append(torch.where(bad, torch.full_like(q, math.nan), q).squeeze(-1))
        return torch.stack(out)

    def __repr__(self) -> str:
        return f"Quantiles({self.probs}, lo={self.lo}, hi={self.hi}, bins={self.bins})"


# ----------------------------------------------------------------------------------------------
# Mergeable moments
# ----------------------------------------------------------------------------------------------
@dataclass
class Moments:
    """Count, mean ``[*s]`` and centred second moment of values ``[n, *s]`` (``outer``: the
    full ``[*s, *s]`` outer-product M2 for ``s = (T, d)`` as ``[T, d, d]``; else elementwise)."""

    n: int
    mean: Tensor
    m2: Tensor

    @staticmethod
    def of(v: Tensor, outer: bool) -> Moments:
        v = v.double()
        m = v.mean(0)
        c = v - m
        if outer:   # v [n, T, d] -> M2 [T, d, d]
            m2 = torch.einsum("ntd,nte->tde", c, c)
        else:
            m2 = (c * c).sum(0)
        return Moments(v.shape[0], m, m2)

    def merge(self, o: Moments, outer: bool) -> Moments:
        """Chan et al. (1979) pairwise update (module docstring)."""
        if o.n == 0:
            return self
        if self.n == 0:
            return o
        n = self.n + o.n
        delta = o.mean - self.mean
        mean = self.mean + delta * (o.n / n)
        cross = (delta.unsqueeze(-1) * delta.unsqueeze(-2)) if outer else delta * delta
        return Moments(n, mean, self.m2 + o.m2 + cross * (self.n * o.n / n))

    def var(self) -> Tensor:
        return self.m2 / max(self.n - 1, 1)

    def stderr(self) -> Tensor:
        """Standard error of the mean: ``sqrt(var / n)`` elementwise (diagonal if outer)."""
        v = self.var()
        if v.dim() >= 3 and v.shape[-1] == v.shape[-2] and self.mean.dim() == v.dim() - 1:
            v = torch.diagonal(v, dim1=-2, dim2=-1)
        return (v / max(self.n, 1)).sqrt()


# ----------------------------------------------------------------------------------------------
# The result
# ----------------------------------------------------------------------------------------------
@dataclass
class EnsembleResult:
    """What :func:`ensemble` returns (identical on every rank).

    Attributes:
        ts: ``[T]`` saved times. n_paths: number of paths.
        mean: ``[T, d]``; cov: ``[T, d, d]`` (unbiased, ``M2 / (n - 1)``); var: ``[T, d]``
            (each ``None`` unless asked for in ``statistics``).
        stats: user statistics by name, the path average of ``stat(ys)`` (``[*s]``).
        quantiles: ``[len(probs), T, d]`` when a :class:`Quantiles` was asked for.
        stderr: standard errors by the same names and shapes (``mean``, ``var``, ``cov``, each
            user statistic). For ``cov``/``var`` it is the standard error of the mean of the
            products ``(x_i - m_i)(x_j - m_j)`` centred on each chunk's mean (accurate to
            ``O(1/chunk_size)`` relative).
        event: with ``event=``: ``p`` (fraction of paths whose event fired) and ``t_mean``
            (mean event time of those), each with ``*_stderr``, and ``n_fired``.
        samples: ``[T, n_paths, d]`` only with ``keep_samples=True``.
        chunk_times: ``[n_chunks]`` wall seconds of each chunk (on the rank that ran it).
        chunk_ranks: ``[n_chunks]`` which rank ran each chunk.
        bytes_kept: bytes of the merge state (independent of ``n_paths``).
        chunk_bytes: the largest chunk's working set counted by the ensemble (states saved,
            initial states, noise counters), which bounds memory by the chunk size.
    """

    ts: Tensor
    n_paths: int
    chunk_size: int
    mean: Tensor | None = None
    cov: Tensor | None = None
    var: Tensor | None = None
    stats: dict[str, Tensor] = field(default_factory=dict)
    quantiles: Tensor | None = None
    stderr: dict[str, Tensor] = field(default_factory=dict)
    event: dict[str, Any] | None = None
    samples: Tensor | None = None
    chunk_times: Tensor | None = None
    chunk_ranks: Tensor | None = None
    bytes_kept: int = 0
    chunk_bytes: int = 0


def _statistics(statistics: Any) -> tuple[list[str], dict[str, Callable[[Tensor], Tensor]],
                                          Quantiles | None]:
    if isinstance(statistics, (str, Quantiles)) or callable(statistics):
        statistics = (statistics,)
    if not isinstance(statistics, (list, tuple, dict)):
        raise TypeError(f"statistics: expected a sequence of names {STAT_NAMES}, callables "
                        f"stat(ys) or a Quantiles, got {type(statistics).__name__}")
    items = list(statistics.items()) if isinstance(statistics, dict) else [
        (None, s) for s in statistics]
    names: list[str] = []
    user: dict[str, Callable[[Tensor], Tensor]] = {}
    quant = None
    for nm, s in items:
        if isinstance(s, str):
            if nm is not None and nm != s:
                raise ValueError(f"statistics: the built-in statistic {s!r} keeps its name; "
                                 f"got the key {nm!r}")
            if s not in STAT_NAMES:
                raise ValueError(f"statistics: unknown statistic {s!r}; expected one of "
                                 f"{STAT_NAMES}, a callable stat(ys) or a Quantiles")
            names.append(s)
        elif isinstance(s, Quantiles):
            if quant is not None:
                raise ValueError("statistics: give at most one Quantiles")
            quant = s
        elif callable(s):
            label = nm if nm is not None else getattr(s, "__name__", f"stat{len(user)}")
            if label in user or label in STAT_NAMES:
                raise ValueError(f"statistics: duplicate statistic name {label!r}; pass a dict "
                                 f"{{name: stat}} to name them")
            user[label] = s
        else:
            raise TypeError(f"statistics: expected names {STAT_NAMES}, callables or a "
                            f"Quantiles, got {type(s).__name__}")
    return names, user, quant
