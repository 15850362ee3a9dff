"""The distributed side of :func:`sdeflow.ensemble`: the argument fingerprint all ranks agree on
and the all-gather of the per-rank merge states (docs/math.md §16)."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import torch

from .ensemble_stats import Moments

Tensor = torch.Tensor


def _digest(v: Any) -> int:
    if isinstance(v, Tensor):
        t = v.detach().cpu().contiguous()
        raw = repr((tuple(t.shape), str(t.dtype))).encode() + t.view(torch.uint8).numpy(
        ).tobytes() if t.numel() else repr((tuple(t.shape), str(t.dtype))).encode()
    elif isinstance(v, (list, tuple)):
        return _digest(repr([_digest(x) for x in v]))
    elif callable(v):
        raw = (getattr(v, "__qualname__", type(v).__qualname__)).encode()
    else:
        raw = repr(v).encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little") >> 1


def _dist() -> tuple[Any, int, int]:
    d = torch.distributed
    if d.is_available() and d.is_initialized():
        return d, d.get_rank(), d.get_world_size()
    return None, 0, 1


def _agree(dist: Any, fields: dict[str, Any], err: BaseException | None, device: torch.device
           ) -> None:
    """All-gather ``[error flag, one digest per argument]``; raise on every rank if any rank
    failed its checks or the ranks disagree (one collective: no rank can be left waiting)."""
    names = list(fields)
    vec = torch.tensor([1 if err is not None else 0] + [_digest(fields[k]) for k in names],
                       dtype=torch.int64, device=device)
    out = [torch.empty_like(vec) for _ in range(dist.get_world_size())]
    dist.all_gather(out, vec)
    table = torch.stack(out).cpu()
    if err is not None:
        raise err
    bad_ranks = [r for r in range(table.shape[0]) if table[r, 0]]
    if bad_ranks:
        raise ValueError(f"ensemble: rank(s) {bad_ranks} rejected their arguments (see their "
                         f"error); every rank stops")
    differ = [names[i - 1] for i in range(1, table.shape[1])
              if bool((table[:, i] != table[0, i]).any())]
    if differ:
        raise ValueError(f"{', '.join(differ)}: the ranks disagree on these arguments of "
                         f"ensemble (every rank must pass the same values)")


def _comm_device(dist: Any, like: torch.device) -> torch.device:
    return like if dist is not None and dist.get_backend() == "nccl" else torch.device("cpu")


def _gather(dist: Any, states: list[Any], hist: Tensor | None, times: Tensor,
            samples: Tensor | None, user: dict[str, Any], quant: Any, T: int, d: int,
            dev: torch.device) -> tuple[list[Any], Tensor | None, Tensor, Tensor | None]:
    """All-gather every rank's merge state and merge them in rank order (same on all ranks)."""
    cdev = _comm_device(dist, dev)
    world = dist.get_world_size()
    # a user statistic's shape is known only to ranks that ran a chunk: agree on it first
    shapes = [tuple(s.mean.shape) if s is not None else None for _, s, _ in states]
    obj: list[Any] = [None] * world
    dist.all_gather_object(obj, shapes)
    full = [next((o[i] for o in obj if o[i] is not None), ()) for i in range(len(states))]
    flat = []
    for (_, s, _), shp in zip(states, full):
        if s is None:
            z = torch.zeros(shp, dtype=torch.float64, device=dev)
            s = Moments(0, z, z.clone())
        flat += [torch.tensor([float(s.n)], dtype=torch.float64, device=dev),
                 s.mean.reshape(-1), s.m2.reshape(-1)]
    vec = torch.cat(flat).to(cdev)
    out = [torch.empty_like(vec) for _ in range(world)]
    dist.all_gather(out, vec)
    merged: list[Moments | None] = [None] * len(states)
    for r in range(world):  # rank order: the same merge on every rank
        v = out[r].to(dev)
        pos = 0
        for i, ((_, _, outer), shp) in enumerate(zip(states, full)):
            size = math.prod(shp)
            m2shape = (*shp, shp[-1]) if outer else shp
            m2size = math.prod(m2shape)
            st = Moments(int(v[pos].item()), v[pos + 1: pos + 1 + size].view(shp),
                         v[pos + 1 + size: pos + 1 + size + m2size].view(m2shape))
            pos += 1 + size + m2size
            prev = merged[i]
            merged[i] = st if prev is None else prev.merge(st, outer)
    if quant is not None:
        h = hist if hist is not None else torch.zeros(T, d, quant.bins + 2, dtype=torch.int64,
                                                      device=dev)
        h = h.to(cdev)
        dist.all_reduce(h)
        hist = h.to(dev)
    t = times.to(cdev)
    dist.all_reduce(t)
    if samples is not None:  # each rank filled its own chunks, zeros elsewhere: x + 0 = x
        s = samples.to(cdev)
        dist.all_reduce(s)
        samples = s.to(dev)
    return ([(nm, m, outer) for (nm, _, outer), m in zip(states, merged)], hist, t.cpu(),
            samples)
