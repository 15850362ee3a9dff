"""``ensemble()``: Monte Carlo ensembles in bounded memory, sharded over torch.distributed.

A run of ``n_paths`` paths is cut into chunks of ``chunk_size`` consecutive path indices. Path
``i`` is a pure function of ``(seed, i)``: its Brownian increments are the rows ``i`` of the
counter-based noise of :mod:`sdeflow.brownian` (the same numbers ``solve(..., seed=seed)`` draws
for row ``i`` of a full batch) and its initial state is row ``i`` of ``x0``. So the per-path
samples do not depend on the chunk size nor on the number of ranks (fixed steps; see
*Bit-identity* below).

Statistics are merged exactly (docs/math.md §16): per chunk the count ``n``,
mean ``m`` and centred second moment ``M2 = sum (y - m)(y - m)^T``; two states merge by
Chan, Golub & LeVeque (1979):

    n = na + nb,  delta = mb - ma,  m = ma + delta nb / n,
    M2 = M2a + M2b + delta delta^T na nb / n,

so ``cov = M2 / (n - 1)`` and ``stderr(mean) = sqrt(diag(cov) / n)``.

Distributed: when ``torch.distributed`` is initialised, chunk ``k`` runs on rank
``k % world_size``; the ranks first all-gather a fingerprint of their arguments (and of any
argument error) and all fail together if they disagree, then each merges its chunks and the
rank states are all-gathered and merged in rank order, so every rank returns the same result.
Merged statistics agree with a 1-process run up to summation order (1e-12 relative in
float64); samples (``keep_samples=True``) agree bit for bit.

Bit-identity: each row's noise and initial state depend on (seed, row) only, and every chunk is
computed on a row count padded up to a multiple of 64 (the extra rows are the following path
indices, discarded) so that elementwise CPU kernels never evaluate a path in a scalar tail.
Fields must be row-wise (path ``i``'s drift depends on path ``i`` only) and intra-op threads
should be 1 for bit-identity across chunk sizes. Adaptive solves (``rtol``/``atol``) choose one
step sequence per chunk, so their samples depend on the chunk size (not on the world size).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ._ensemble_dist import _agree, _comm_device, _dist, _gather
from .brownian import BLOCK_ROWS, BrownianPath, SeededNoise
from .brownian._random import key
from .ensemble_stats import STAT_NAMES, EnsembleResult, Moments, Quantiles, _statistics
from .problems import SDE
from .solve import solve

Tensor = torch.Tensor

PAD_ROWS = 64          # every chunk runs on a multiple of this many rows
_X0_STREAM = 0x0E0E   # generators of a callable x0: one per 1024-row block
_DEFAULT_CHUNK_ELEMS = 2**22


# ----------------------------------------------------------------------------------------------
# Row-addressed noise sources for one chunk
# ----------------------------------------------------------------------------------------------
class _RowSlice:
    """Rows ``off:off + n`` of a Brownian source over the covering 1024-aligned rows.

    Fixed steps wrap a :class:`SeededNoise` (``grid`` computes the step sizes exactly as
    ``solve(seed=)`` does and draws the next steps); adaptive solves a :class:`BrownianPath`.
    """

    def __init__(self, src: Any, off: int, n: int, rest: tuple[int, ...], t0: float,
                 t1: float, dtype: torch.dtype, device: torch.device) -> None:
        self.src, self.off, self.n = src, off, n
        self.shape = (n, *rest)
        self.t0, self.t1, self.dtype, self.device = t0, t1, dtype, device

    def grid(self, times: Sequence[float] | Tensor, space_time: bool = False
             ) -> tuple[Tensor, Tensor | None]:
        if isinstance(self.src, SeededNoise):
            tl = [float(t) for t in times]
            h = torch.tensor([b - a for a, b in zip(tl[:-1], tl[1:])], dtype=torch.float64)
            dw, it = self.src.increments(h, space_time)
        else:
            dw, it = self.src.grid(times, space_time=space_time)
        sl = slice(self.off, self.off + self.n)
        return dw[:, sl], (None if it is None else it[:, sl])

    def nbytes(self) -> int:
        fn = getattr(self.src, "nbytes", None)
        return int(fn()) if callable(fn) else 0


def _source(rest: tuple[int, ...], a: int, b: int, seed: int, span: tuple[float, float],
            adaptive: bool, like: Tensor) -> _RowSlice:
    lo_row = a - a % BLOCK_ROWS
    hi_row = -(-b // BLOCK_ROWS) * BLOCK_ROWS
    full = (hi_row, *rest)
    lo, hi = min(span), max(span)
    bs = slice(lo_row, hi_row)
    if adaptive:
        src: Any = BrownianPath(full, t0=lo, t1=hi, seed=seed, dtype=like.dtype,
                                device=like.device, batch_slice=bs)
    else:
        src = SeededNoise(full, seed, like.dtype, like.device, batch_slice=bs)
    return _RowSlice(src, a - lo_row, b - a, rest, lo, hi, like.dtype, like.device)


# ----------------------------------------------------------------------------------------------
# Initial states
# ----------------------------------------------------------------------------------------------
def _x0_block(x0: Callable[..., Tensor], seed: int, j: int, device: torch.device) -> Tensor:
    gen = torch.Generator(device=device)
    gen.manual_seed(key(seed, _X0_STREAM, j) & ((1 << 63) - 1))
    out = x0(gen, BLOCK_ROWS)
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != BLOCK_ROWS:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"x0: the callable x0(generator, n) must return a tensor [n, d]; "
                         f"called with n={BLOCK_ROWS} it returned {got}")
    if not out.dtype.is_floating_point:
        raise ValueError(f"x0: the callable must return a floating tensor, got {out.dtype}")
    return out


class _Initial:
    """Rows ``a:b`` of the initial states: a broadcast ``[d]`` / ``[1, d]`` tensor, a per-path
    ``[n_paths, d]`` tensor (rows past ``n_paths`` repeat the last row; they are discarded),
    or a callable ``x0(generator, n)`` called once per block of 1024 paths with a generator
    seeded from ``(seed, block)`` and ``n = 1024`` (so block ``j`` is rows ``1024 j ..``)."""

    def __init__(self, x0: Any, n_paths: int, seed: int) -> None:
        self.seed = seed
        if callable(x0) and not isinstance(x0, Tensor):
            self.fn: Callable[..., Tensor] | None = x0
            first = _x0_block(x0, seed, 0, torch.empty(()).device)
            self.d, self.dtype, self.device = first.shape[1], first.dtype, first.device
            self.tensor: Tensor | None = None
            return
        if not isinstance(x0, Tensor):
            raise TypeError(f"x0: expected a tensor [d] or [n_paths, d] or a callable "
                            f"x0(generator, n), got {type(x0).__name__}")
        if not x0.dtype.is_floating_point:
            raise ValueError(f"x0: expected a floating tensor, got {x0.dtype}")
        if x0.dim() == 1:
            x0 = x0.unsqueeze(0)
        if x0.dim() != 2 or x0.shape[0] not in (1, n_paths):
            raise ValueError(f"x0: expected shape [d], [1, d] or [n_paths={n_paths}, d], got "
                             f"{tuple(x0.shape)}")
        self.fn, self.tensor = None, x0
        self.d, self.dtype, self.device = x0.shape[1], x0.dtype, x0.device

    def rows(self, a: int, b: int) -> Tensor:
        if self.tensor is not None:
            t = self.tensor
            if t.shape[0] == 1:
                return t.expand(b - a, -1).clone()
            idx = torch.arange(a, b, device=t.device).clamp_(max=t.shape[0] - 1)
            return t[idx]
        if self.fn is None:  # unreachable: construction sets a tensor or a callable
            raise RuntimeError("x0: neither a tensor nor a callable was kept")
        j0, j1 = a // BLOCK_ROWS, -(-b // BLOCK_ROWS)
        blocks = []
        for j in range(j0, j1):
            blk = _x0_block(self.fn, self.seed, j, self.device)
            if blk.shape[1] != self.d or blk.dtype != self.dtype:
                raise ValueError(f"x0: block {j} returned {tuple(blk.shape)} {blk.dtype}, but "
                                 f"block 0 returned [{BLOCK_ROWS}, {self.d}] {self.dtype}")
            blocks.append(blk)
        full = torch.cat(blocks) if len(blocks) > 1 else blocks[0]
        off = a - j0 * BLOCK_ROWS
        return full[off:off + (b - a)]


# ----------------------------------------------------------------------------------------------
# Argument checks and the distributed fingerprint
# ----------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------
def _pos_int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name}: expected a positive int, got {type(v).__name__}")
    if v <= 0:
        raise ValueError(f"{name}: expected a positive int, got {v}")
    return v


# ----------------------------------------------------------------------------------------------
# The ensemble
# ----------------------------------------------------------------------------------------------
def ensemble(
    problem: SDE,
    x0: Tensor | Callable[..., Tensor],
    n_paths: int,
    *,
    t_span: Sequence[float] | Tensor | None = None,
    ts: Sequence[float] | Tensor | None = None,
    solver: Any = None,
    steps: int | None = None,
    dt: float | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int | None = None,
    statistics: Any = ("mean", "cov"),
    chunk_size: int | None = None,
    event: Any = None,
    keep_samples: bool = False,
    progress: bool = False,
) -> EnsembleResult:
    """Run ``n_paths`` paths of an SDE in chunks (and across ranks) and merge statistics.

    Args:
        problem: an :class:`~sdeflow.SDE` with a state ``[n, d]`` (row-wise fields).
        x0: ``[d]`` (every path), ``[n_paths, d]`` (one row per path), or a callable
            ``x0(generator, n) -> [n, d]``; the callable is called once per block of 1024 path
            indices with ``n = 1024`` and a ``torch.Generator`` seeded from ``(seed, block)``,
            so path ``i``'s initial state is row ``i % 1024`` of block ``i // 1024``.
        n_paths: number of paths (> 0).
        t_span, ts, solver, steps, dt, rtol, atol, event: as in :func:`sdeflow.solve`.
        seed: the ensemble's seed; path ``i`` is a function of ``(seed, i)``. ``None``: drawn
            from torch's global generator (rank 0's under torch.distributed).
        statistics: names ``"mean"``, ``"cov"``, ``"var"``; callables ``stat(ys) -> [n, *s]``
            (``ys [T, n, d]`` a chunk's saved states, one value per path; the result is their
            path average); at most one :class:`Quantiles`. A dict names the callables.
        chunk_size: paths per chunk (default ``2**22 // (T d)`` rounded to 1024, at most
            ``n_paths``); memory is bounded by it.
        keep_samples: also return ``samples [T, n_paths, d]`` (memory grows with n_paths).
        progress: a tqdm bar over chunks (rank 0; needs tqdm).

    Returns:
        an :class:`EnsembleResult`, the same on every rank.

    Raises:
        ValueError, TypeError: bad input naming the argument, before any work (on every rank
        when distributed, also when ranks disagree on the arguments).
    """
    dist, rank, world = _dist()
    err: BaseException | None = None
    fields: dict[str, Any] = {}
    try:
        cfg = _check(problem, x0, n_paths, t_span, ts, solver, steps, dt, rtol, atol, seed,
                     statistics, chunk_size, event, keep_samples, progress, dist, rank)
        fields = cfg["fingerprint"]
    except (ValueError, TypeError) as exc:
        if dist is None:
            raise
        err = exc
        cfg = {}
        fields = {k: 0 for k in _FIELDS}
    if dist is not None:
        _agree(dist, fields, err, _comm_device(dist, cfg["init"].device if cfg else
                                               torch.device("cpu")))
    return _run(cfg, dist, rank, world)


_FIELDS = ("n_paths", "x0", "t_span", "ts", "solver", "steps", "dt", "rtol", "atol", "seed",
           "statistics", "chunk_size", "event", "keep_samples", "problem")


def _check(problem: Any, x0: Any, n_paths: Any, t_span: Any, ts: Any, solver: Any, steps: Any,
           dt: Any, rtol: Any, atol: Any, seed: Any, statistics: Any, chunk_size: Any,
           event: Any, keep_samples: Any, progress: Any, dist: Any, rank: int
           ) -> dict[str, Any]:
    if not isinstance(problem, SDE):
        raise TypeError(f"problem: expected an sdeflow.SDE, got {type(problem).__name__}")
    n_paths = _pos_int(n_paths, "n_paths")
    for nm, v in (("keep_samples", keep_samples), ("progress", progress)):
        if not isinstance(v, bool):
            raise TypeError(f"{nm}: expected a bool, got {type(v).__name__}")
    if progress:
        try:
            import tqdm  # noqa: F401, PLC0415  (optional dependency, checked before any work)
        except ImportError as exc:
            raise ValueError("progress: progress=True needs tqdm (pip install tqdm)") from exc
    if seed is None:
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64).item())
        if dist is not None:  # rank 0's draw, so that the ranks agree
            s = torch.tensor([seed], dtype=torch.int64, device=_comm_device(
                dist, torch.device("cuda", torch.cuda.current_device())
                if torch.cuda.is_available() else torch.device("cpu")))
            dist.broadcast(s, 0)
            seed = int(s.item())
    elif isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int or None, got {type(seed).__name__}")
    names, user, quant = _statistics(statistics)
    init = _Initial(x0, n_paths, seed)
    n_out = len(ts) if ts is not None else 2
    if chunk_size is None:
        per = max(1, n_out * init.d)
        chunk_size = min(n_paths, max(BLOCK_ROWS, _DEFAULT_CHUNK_ELEMS // per
                                      // BLOCK_ROWS * BLOCK_ROWS))
    else:
        chunk_size = _pos_int(chunk_size, "chunk_size")
    adaptive = rtol is not None or atol is not None
    like = init.rows(0, 1)
    # one probe solve on a single path checks every solve argument before any work
    probe = solve(problem, like, t_span, ts=ts, solver=solver, steps=steps, dt=dt, rtol=rtol,
                  atol=atol, seed=seed, **({"event": event} if event is not None else {}))
    ys = probe.ys
    if ys.dim() != 3 or ys.shape[1:] != (1, init.d):
        raise ValueError(f"problem: the solve returned states {tuple(ys.shape)}, expected "
                         f"[T, 1, {init.d}] for a state [n, d]")
    for label, fn in user.items():
        out = fn(ys)
        if not isinstance(out, Tensor) or out.dim() < 1 or out.shape[0] != 1:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"statistics: {label!r} must return one value per path, a tensor "
                             f"[n, ...] (called on ys [T, n, d] with n=1 it returned {got})")
    m = None
    if problem.noise in ("general", "additive"):  # additive: (..., d) or a (..., d, m) matrix
        g = problem._fields()[1]
        m = int(g(torch.zeros((), dtype=like.dtype, device=like.device), like).shape[-1])
    bshape = problem.brownian_shape(like.shape, m)
    tt = ts if ts is not None else t_span
    span = (float(tt[0]), float(tt[-1]))
    fp = dict(n_paths=n_paths, x0=(init.tensor if init.tensor is not None else x0),
              t_span=t_span if not isinstance(t_span, Tensor) else t_span.tolist(),
              ts=ts if not isinstance(ts, Tensor) else ts.tolist(),
              solver=solver if isinstance(solver, (str, type(None))) else type(solver).__name__,
              steps=steps, dt=dt, rtol=rtol, atol=atol, seed=seed,
              statistics=[*names, *user, repr(quant)], chunk_size=chunk_size,
              event=event is not None, keep_samples=keep_samples,
              problem=(problem.noise, problem.kind, init.d))
    return dict(problem=problem, init=init, n_paths=n_paths, chunk_size=chunk_size,
                t_span=t_span, ts=ts, solver=solver, steps=steps, dt=dt, rtol=rtol, atol=atol,
                seed=seed, names=names, user=user, quant=quant, event=event,
                keep_samples=keep_samples, progress=progress, adaptive=adaptive,
                rest=tuple(bshape[1:]), span=span, n_out=ys.shape[0], fingerprint=fp)


def _run(cfg: dict[str, Any], dist: Any, rank: int, world: int) -> EnsembleResult:
    n_paths, cs, init = cfg["n_paths"], cfg["chunk_size"], cfg["init"]
    n_chunks = -(-n_paths // cs)
    mine = list(range(rank, n_chunks, world))
    names, user, quant = cfg["names"], cfg["user"], cfg["quant"]
    want_m2 = bool({"cov", "var"} & set(names))
    want = bool(names)
    d, T = init.d, cfg["n_out"]
    dev = init.device
    mom = Moments(0, torch.zeros(T, d, dtype=torch.float64, device=dev),
                  torch.zeros(T, d, d, dtype=torch.float64, device=dev))
    prod = Moments(0, torch.zeros(T, d, d, dtype=torch.float64, device=dev),
                   torch.zeros(T, d, d, dtype=torch.float64, device=dev))
    ustate: dict[str, Moments] = {}
    hist = None
    ev = [Moments(0, torch.zeros((), dtype=torch.float64, device=dev),
                  torch.zeros((), dtype=torch.float64, device=dev)) for _ in range(2)]
    times = torch.zeros(n_chunks, dtype=torch.float64)
    samples = (torch.zeros(T, n_paths, d, dtype=init.dtype, device=dev)
               if cfg["keep_samples"] else None)
    ts_out = None
    chunk_bytes = 0
    bar = None
    if cfg["progress"] and rank == 0:
        from tqdm.auto import tqdm  # noqa: PLC0415  (optional dependency)

        bar = tqdm(total=n_chunks, desc="ensemble", unit="chunk")
    failure: BaseException | None = None
    try:
        for k in mine:
            t_start = time.perf_counter()
            a, b = k * cs, min(n_paths, (k + 1) * cs)
            bp = a + -(-(b - a) // PAD_ROWS) * PAD_ROWS
            xa = init.rows(a, bp)
            src = _source(cfg["rest"], a, bp, cfg["seed"], cfg["span"], cfg["adaptive"], xa)
            kw = {"event": cfg["event"]} if cfg["event"] is not None else {}
            sol = solve(cfg["problem"], xa, cfg["t_span"], ts=cfg["ts"], solver=cfg["solver"],
                        steps=cfg["steps"], dt=cfg["dt"], rtol=cfg["rtol"], atol=cfg["atol"],
                        brownian=src, **kw)
            ys = sol.ys[:, : b - a]
            ts_out = sol.ts
            chunk_bytes = max(chunk_bytes, sol.ys.numel() * sol.ys.element_size()
                              + xa.numel() * xa.element_size() + src.nbytes())
            if want:
                mom = mom.merge(Moments.of(ys.transpose(0, 1), outer=True), outer=True)
            if want_m2:
                c = ys.double() - ys.double().mean(1, keepdim=True)
                prod = prod.merge(Moments.of(torch.einsum("tnd,tne->ntde", c, c), False),
                                  False)
            for label, fn in user.items():
                v = fn(ys)
                if not isinstance(v, Tensor) or v.dim() < 1 or v.shape[0] != b - a:
                    raise ValueError(f"statistics: {label!r} must return one value per path, "
                                     f"[n, ...] with n={b - a}")
                mm = Moments.of(v, False)
                ustate[label] = ustate[label].merge(mm, False) if label in ustate else mm
            if quant is not None:
                hc = quant.counts(ys)
                hist = hc if hist is None else hist + hc
            if cfg["event"] is not None and sol.event_t is not None:
                et = sol.event_t.reshape(sol.event_t.shape[0], -1)[: b - a].double()
                et = et[:, 0] if et.dim() == 2 else et
                fired = ~torch.isnan(et)
                ev[0] = ev[0].merge(Moments.of(fired.double(), False), False)
                if bool(fired.any()):
                    ev[1] = ev[1].merge(Moments.of(et[fired], False), False)
            if samples is not None:
                samples[:, a:b] = ys
            times[k] = time.perf_counter() - t_start
            if bar is not None:
                bar.update(world if k + world < n_chunks else n_chunks - bar.n)
    except Exception as exc:  # noqa: BLE001  (re-raised after telling the other ranks)
        failure = exc
    finally:
        if bar is not None:
            bar.close()
    if dist is not None:
        flag = torch.tensor([1 if failure is not None else 0], dtype=torch.int64,
                            device=_comm_device(dist, dev))
        dist.all_reduce(flag)
        if failure is not None:
            raise failure
        if int(flag.item()):
            raise RuntimeError("ensemble: another rank failed during the run (see its error)")
    elif failure is not None:
        raise failure
    if ts_out is None:  # a rank with no chunk
        ts_out = torch.as_tensor(cfg["ts"] if cfg["ts"] is not None else
                                 [float(x) for x in cfg["span"]], dtype=init.dtype)
    ranks = torch.tensor([k % world for k in range(n_chunks)], dtype=torch.int64)
    states = [("mom", mom, True), ("prod", prod, False), ("ev0", ev[0], False),
              ("ev1", ev[1], False)] + [(f"u:{k}", ustate.get(k), False) for k in user]
    if dist is not None:
        states, hist, times, samples = _gather(dist, states, hist, times, samples, user,
                                               quant, T, d, dev)
    st = {nm: s for nm, s, _ in states}
    res = EnsembleResult(ts=ts_out, n_paths=n_paths, chunk_size=cs, chunk_times=times,
                         chunk_ranks=ranks, samples=samples, chunk_bytes=chunk_bytes)
    mom, prod = st["mom"], st["prod"]
    if "mean" in names or want:
        if "mean" in names:
            res.mean, res.stderr["mean"] = mom.mean, mom.stderr()
    if "cov" in names:
        res.cov = mom.var()
        res.stderr["cov"] = prod.stderr()
    if "var" in names:
        res.var = torch.diagonal(mom.var(), dim1=-2, dim2=-1)
        res.stderr["var"] = torch.diagonal(prod.stderr(), dim1=-2, dim2=-1)
    for label in user:
        s = st[f"u:{label}"]
        res.stats[label], res.stderr[label] = s.mean, s.stderr()
    if quant is not None and hist is not None:
        res.quantiles = quant.estimate(hist)
    if cfg["event"] is not None:
        e0, e1 = st["ev0"], st["ev1"]
        res.event = dict(p=e0.mean, p_stderr=e0.stderr(), t_mean=e1.mean if e1.n else
                         torch.tensor(math.nan, dtype=torch.float64), t_mean_stderr=e1.stderr(),
                         n_fired=e1.n)
    res.bytes_kept = sum(s.mean.numel() * 8 + s.m2.numel() * 8 for _, s, _ in states
                         if s is not None) + (0 if hist is None else hist.numel() * 8)
    return res


__all__ = ["ensemble", "EnsembleResult", "Quantiles", "Moments", "STAT_NAMES", "PAD_ROWS"]
