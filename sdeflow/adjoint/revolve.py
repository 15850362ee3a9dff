"""Binomial checkpointing (Griewank 1992; Griewank & Walther 2000, "revolve"): the schedule.

Reversing ``n`` steps ``x_{k+1} = F_k(x_k)`` with ``c`` snapshots (stored states, the one
holding ``x_0`` included) and one working state costs at least

    t(n, c) = r n - beta(c + 1, r - 1),      beta(c, r) = C(c + r, c),

forward step evaluations without a graph ("advances"; the first forward sweep included),
where the repetition number ``r`` is the least with ``beta(c, r) >= n``: no step is advanced
more than ``r`` times, and each step is evaluated once more with a graph ("taped") to be
backpropagated. The optimum is reached recursively: advance from the snapshot at ``a`` to a
split ``m``, store ``x_m``, reverse ``[m, b)`` with one snapshot less, free ``x_m``, reverse
``[a, m)`` with as many. Every split with ``beta(c, r - 2) < m - a <= beta(c, r - 1)`` and
``beta(c - 1, r - 1) < b - m <= beta(c - 1, r)`` is optimal (the costs of the two parts add up
to the formula by Pascal's rule); :func:`split` picks the best of the ends of that range by the
closed form, which stays exact at its edges (docs/math.md §14.1).

:func:`reverse` runs the schedule through an :class:`Ops` object (the checkpoint engine, or a
counter in the tests). With ``warm=True`` the forward pass has already done the first sweep:
it stored the snapshots of :func:`first_sweep` and holds the carry at ``n - 1``.
"""

from __future__ import annotations

from math import comb
from typing import Protocol


def beta(c: int, r: int) -> int:
    """``C(c + r, c)``: the most steps ``c`` snapshots reverse with ``r`` repetitions."""
    if r < 0:
        return 0
    return comb(c + r, c)


def repetitions(n: int, c: int) -> int:
    """The least ``r >= 0`` with ``beta(c, r) >= n``."""
    r = 0
    while beta(c, r) < n:
        r += 1
    return r


def advances(n: int, c: int) -> int:
    """``t(n, c)``: the least number of advances reversing ``n`` steps with ``c`` snapshots."""
    if n <= 1:
        return 0
    r = repetitions(n, c)
    return r * n - beta(c + 1, r - 1)


def split(n: int, c: int) -> int:
    """An optimal length of the first part of ``n >= 2`` steps with ``c >= 2`` snapshots."""
    r = repetitions(n, c)
    lo = max(1, n - beta(c - 1, r))
    hi = min(n - 1, beta(c, r - 1))
    cands = {lo, hi, beta(c, r - 2) + 1, n - beta(c - 1, r - 1) - 1}
    best, best_m = None, lo
    for m in sorted(cands):
        if not lo <= m <= hi:
            continue
        cost = m + advances(m, c) + advances(n - m, c - 1)
        if best is None or cost < best:
            best, best_m = cost, m
    return best_m


def default_checkpoints(n: int) -> int:
    """The least ``c`` with ``r(n, c) <= 2``: every step advanced at most twice (the forward
    pass and one replay), ``C(c + 2, 2) >= n``, so ``c ~ sqrt(2 n)``."""
    c = 1
    while beta(c, 2) < n:
        c += 1
    return c


def first_sweep(n: int, c: int) -> list[int]:
    """The snapshots the first forward sweep stores (``0`` first)."""
    out = [0]
    a = 0
    while n - a > 1 and c > 1:
        a += split(n - a, c)
        c -= 1
        out.append(a)
    return out


class Ops(Protocol):
    """What the schedule asks of its executor (``current`` is the working state)."""

    def restore(self, k: int) -> None:
        """``current = x_k`` from the snapshot ``k``."""

    def advance(self, k: int) -> None:
        """``current = F_k(current)`` without a graph (``current`` was ``x_k``)."""

    def store(self, k: int) -> None:
        """Snapshot ``k = current``."""

    def free(self, k: int) -> None:
        """Drop snapshot ``k``."""

    def resume(self) -> None:
        """``current = x_{n-1}``, the carry the forward pass held (only with ``warm``)."""

    def tape(self, k: int) -> None:
        """Step ``k`` from ``current = x_k`` with a graph, and backpropagate through it."""


def reverse(n: int, c: int, ops: Ops, warm: bool = False) -> None:
    """Tape steps ``n - 1, ..., 0`` (in that order) with at most ``c`` snapshots.

    The snapshot ``0`` is stored before the call. ``warm``: the snapshots of
    :func:`first_sweep` are stored and the carry at ``n - 1`` is held (the forward pass did
    the first sweep), so the advances are ``t(n, c) - (n - 1)``.
    """
    if n < 1:
        return
    if c < 1:
        raise ValueError(f"checkpoints: expected a positive int, got {c}")
    # tasks: ("rev", a, b, c, warm) reverses [a, b) from the snapshot at a; ("free", m)
    stack: list[tuple[str, int, int, int, bool]] = [("rev", 0, n, c, warm)]
    while stack:
        kind, a, b, cc, w = stack.pop()
        if kind == "free":
            ops.free(a)
            continue
        if b - a > 1 and cc > 1:
            m = a + split(b - a, cc)
            if not w:
                ops.restore(a)
                for j in range(a, m):
                    ops.advance(j)
                ops.store(m)
            stack.append(("rev", a, m, cc, False))
            stack.append(("free", m, 0, 0, False))
            stack.append(("rev", m, b, cc - 1, w))
            continue
        for k in range(b - 1, a, -1):  # one snapshot: advance from it to each step in turn
            if w:
                ops.resume()
                w = False
            else:
                ops.restore(a)
                for j in range(a, k):
                    ops.advance(j)
            ops.tape(k)
        ops.restore(a)
        ops.tape(a)


__all__ = ["beta", "repetitions", "advances", "split", "first_sweep", "reverse",
           "default_checkpoints", "Ops"]
