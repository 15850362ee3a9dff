"""Counter-based normal draws: every number is a pure function of (key, element index).

A draw is addressed by a 64-bit *key* (hashed from the seed, a stream name and ids such as a tree
node or a step index, see :func:`key` / :func:`keys_for`) and by the *global element index*
``e = row * R + k`` of the entry (``R`` = entries per row, the full batch's row numbering). The
64 random bits of an entry are the SplitMix64 finaliser of ``key + e * GOLDEN`` (mod 2^64), so
any subset of rows, of steps or of tree nodes can be computed alone and equals the same entries
of a larger draw bit for bit (docs/math.md §12.1).

Two standard normals per entry come from the Box-Muller transform of the two 32-bit halves
(float64) -- ``r = sqrt(-2 ln u1)``, ``(r cos 2 pi u2, r sin 2 pi u2)`` with
``u1 = (hi + 1/2) 2^-32`` -- so ``|z| <= 6.77``; in float32 the halves are 23 and 24 bits
(``|z| <= 5.9``). Rows are thus generated in blocks of :data:`BLOCK_ROWS` trivially: each row's
numbers depend on (seed, row) only, so every row range is exact.

Bit-identity across layouts: CPU kernels evaluate ``log``/``cos``/``sin`` with vector code in
the body of a tensor and with scalar code in its tail (and per thread chunk), which may differ
by an ulp. The transcendental steps therefore run on padded layouts whose length is a multiple
of :data:`_PAD` and, with several intra-op threads, in serial pieces of at most torch's grain
size, so no entry ever falls in a tail.
"""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor

BLOCK_ROWS = 1024
"""Rows of one generation block (the contract's unit for ``batch_slice``)."""

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_PAD = 64          # entries: a multiple of every CPU kernel's unrolled vector width
_GRAIN = 32768     # torch's intra-op grain size: smaller pieces never split across threads
_CHUNK = 1 << 17   # entries per batch of rows (cache-sized temporaries)


def _signed(v: int) -> int:
    v &= _MASK
    return v - (1 << 64) if v >> 63 else v


GOLDEN = _signed(_GOLDEN)
_M1S, _M2S = _signed(_M1), _signed(_M2)


def mix64(v: int) -> int:
    """SplitMix64's finaliser on a Python int (mod 2^64), as an unsigned int."""
    v &= _MASK
    v = ((v ^ (v >> 30)) * _M1) & _MASK
    v = ((v ^ (v >> 27)) * _M2) & _MASK
    return v ^ (v >> 31)


def key(*parts: int) -> int:
    """A 64-bit key (signed int64 value) hashed from a tuple of ints."""
    h = 0x243F6A8885A308D3
    for p in parts:
        h = mix64(h ^ mix64((p & _MASK) + _GOLDEN))
    return _signed(h)


def mix_(x: Tensor) -> Tensor:
    """SplitMix64's finaliser applied in place to an int64 tensor (logical shifts by masking)."""
    x ^= (x >> 30) & ((1 << 34) - 1)
    x *= _M1S
    x ^= (x >> 27) & ((1 << 37) - 1)
    x *= _M2S
    x ^= (x >> 31) & ((1 << 33) - 1)
    return x


def keys_for(base: int, ids: Tensor) -> Tensor:
    """Keys ``[K]`` of the ids ``[K]`` (int64) under ``base``: ``mix(base + id * GOLDEN)``."""
    return mix_(ids.to(torch.int64) * GOLDEN + base)


def element_counters(start: int, stop: int, device: torch.device) -> Tensor:
    """Int64 counters ``e * GOLDEN`` of the global element indices ``start .. stop-1``, padded
    with zeros to a multiple of :data:`_PAD` (pass ``n=stop - start`` to :func:`normals`)."""
    n = stop - start
    out = torch.zeros(-(-max(n, 1) // _PAD) * _PAD, dtype=torch.int64, device=device)
    torch.mul(torch.arange(start, stop, dtype=torch.int64, device=device), GOLDEN, out=out[:n])
    return out


def _pieces(n: int, device: torch.device) -> list[tuple[int, int]]:
    if device.type != "cpu" or torch.get_num_threads() == 1 or n <= _GRAIN:
        return [(0, n)]
    return [(i, min(n, i + _GRAIN)) for i in range(0, n, _GRAIN)]


def _fill(keys: Tensor, elems: Tensor, cdt: torch.dtype, o0: Tensor, o1: Tensor | None
          ) -> None:
    """Box-Muller normals of the rows ``keys`` into ``o0`` (cosine) and ``o1`` (sine)."""
    x = keys.view(-1, 1) + elems.view(1, -1)
    mix_(x)
    if cdt == torch.float64:
        u1 = (x >> 32).to(cdt).add_(2.0**31 + 0.5).mul_(2.0**-32)
        u2 = (x & 0xFFFFFFFF).to(cdt).mul_(2.0 * math.pi * 2.0**-32)
    else:
        u1 = ((x >> 41) & 0x7FFFFF).to(cdt).add_(0.5).mul_(2.0**-23)
        u2 = (x & 0xFFFFFF).to(cdt).mul_(2.0 * math.pi * 2.0**-24)
    del x
    flat1, flat2, f0 = u1.view(-1), u2.view(-1), o0.view(-1)
    f1 = o1.view(-1) if o1 is not None else None
    for a, b in _pieces(flat1.numel(), keys.device):
        flat1[a:b].log_()
        torch.cos(flat2[a:b], out=f0[a:b])
        if f1 is not None:
            torch.sin(flat2[a:b], out=f1[a:b])
    r = u1.mul_(-2.0).sqrt_()
    o0.mul_(r)
    if o1 is not None:
        o1.mul_(r)


def normals(keys: Tensor, elems: Tensor, dtype: torch.dtype, pair: bool,
            n: int | None = None) -> Tensor:
    """Standard normals addressed by (key, element counter).

    Args:
        keys: ``[K]`` int64 keys; elems: ``[E]`` int64 element counters (``element_counters``,
            whose padding is dropped when ``n``, the number of real entries, is given).
        dtype: float64 computes in float64, any other floating dtype in float32 (then cast).
        pair: also return the second (sine) normal of each entry.

    Returns:
        ``[K, E]``, or ``[2, K, E]`` with ``pair`` (``[0]`` the cosine, ``[1]`` the sine normal).
    """
    cdt = torch.float64 if dtype == torch.float64 else torch.float32
    k = keys.numel()
    if n is not None and elems.numel() % _PAD == 0:
        e, ep = n, elems.numel()               # counters padded by element_counters
    else:
        e = elems.numel()
        ep = -(-max(e, 1) // _PAD) * _PAD
        if ep != e:
            elems = torch.cat([elems, elems.new_zeros(ep - e)])
    out = torch.empty((2, k, ep) if pair else (k, ep), dtype=cdt, device=keys.device)
    rows = max(1, _CHUNK // ep)  # cache-sized temporaries: a few rows of keys at a time
    for r0 in range(0, k, rows):
        r1 = min(k, r0 + rows)
        _fill(keys[r0:r1], elems, cdt, out[0, r0:r1] if pair else out[r0:r1],
              out[1, r0:r1] if pair else None)
    if ep != e:
        out = out[..., :e]
    if cdt != dtype:
        out = out.to(dtype)
    return out
