"""sf.ensemble under torch.distributed: 2 gloo processes on localhost, spawned here.

Every spawn/join has a timeout and every process group a collective timeout, so a broken
implementation fails the test instead of hanging it.
"""

from __future__ import annotations

import datetime
import os
import socket
import traceback
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

import sdeflow as sf

D64 = torch.float64
JOIN_TIMEOUT = 120.0

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="torch.distributed is not available")


def _problems() -> dict[str, tuple[sf.SDE, torch.Tensor]]:
    return {
        "ou": (sf.SDE(lambda t, x: -x, lambda t, x: 0.5 * torch.ones_like(x),
                      noise="diagonal"), torch.tensor([1.0, -0.5], dtype=D64)),
        "gbm": (sf.SDE(lambda t, x: 0.05 * x, lambda t, x: 0.3 * x, noise="diagonal"),
                torch.tensor([1.0, 2.0], dtype=D64)),
        "well": (sf.SDE(lambda t, x: x - x * x * x, lambda t, x: 0.5 * torch.sqrt(1.0 + x * x),
                        noise="diagonal"), torch.tensor([0.3, -1.2], dtype=D64)),
    }


CASES = [(name, n, c) for name in ("ou", "gbm", "well") for n, c in ((2400, 600), (2500, 700))]


def _kwargs() -> dict[str, Any]:
    return dict(ts=[0.0, 0.4, 1.0], steps=10, seed=123, keep_samples=True,
                statistics=("mean", "cov", "var"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, mode: str, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist = torch.distributed
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    result: dict[str, Any] = {}
    try:
        if mode == "shard":
            probs = _problems()
            for name, n, c in CASES:
                prob, x0 = probs[name]
                r = sf.ensemble(prob, x0, n, chunk_size=c, **_kwargs())
                result[f"{name}-{n}-{c}"] = dict(samples=r.samples, mean=r.mean, cov=r.cov,
                                                 var=r.var, ranks=r.chunk_ranks,
                                                 se=r.stderr["mean"])
        else:  # the three failure modes in turn, in one process group
            for case in ("disagree", "bad_rank", "fail_run"):
                result[case] = _failing(case, rank)
            result["idle_rank"] = _idle_rank_run()
    except Exception:  # noqa: BLE001
        result["crash"] = traceback.format_exc()
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


def _idle_rank_run() -> dict[str, Any]:
    """One chunk for two ranks: rank 1 runs nothing but still returns the full result
    (user statistic, quantiles and event statistics included)."""
    prob, x0 = _problems()["ou"]
    r = sf.ensemble(prob, x0, 300, t_span=(0.0, 1.0), steps=8, seed=9, chunk_size=300,
                    event=sf.Event(lambda t, x: x[..., 0] - 0.8),
                    statistics={"mean": "mean", "cov": "cov",
                                "sq": lambda ys: ys[-1] ** 2,
                                "q": sf.Quantiles([0.5], lo=-3.0, hi=3.0, bins=60)})
    return dict(mean=r.mean, cov=r.cov, sq=r.stats["sq"], q=r.quantiles, p=r.event["p"],
                ts=r.ts)


def _failing(case: str, rank: int) -> str | None:
    prob, x0 = _problems()["ou"]
    kw: dict[str, Any] = dict(t_span=(0.0, 1.0), steps=4, seed=5, chunk_size=100)
    if case == "disagree":
        kw["seed"] = 5 + rank
    elif case == "bad_rank":
        kw["chunk_size"] = 0 if rank == 1 else 100
    else:
        def drift(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            if rank == 1 and x.shape[0] > 1:
                raise RuntimeError("boom on rank 1")
            return -x
        prob = sf.SDE(drift, lambda t, x: torch.ones_like(x), noise="diagonal")
    try:
        sf.ensemble(prob, x0, 1000, **kw)
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"
    return None


def _spawn(mode: str, tmp: Path, world: int = 2) -> list[dict[str, Any]]:
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, mode, str(tmp)))
             for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(JOIN_TIMEOUT)
    hung = [i for i, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(10)
    assert not hung, f"ranks {hung} did not finish within {JOIN_TIMEOUT}s (deadlock?)"
    outs = [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(world)]
    for o in outs:
        assert "crash" not in o, o.get("crash")
    return outs


def test_two_process_ensemble_is_bit_identical_to_one_process(tmp_path: Path) -> None:
    """OU, GBM, double well; 2400 paths in chunks of 600 (divides) and 2500 in 700 (does not):
    per-path samples bit-identical on both ranks to the 1-process run; moments to 1e-12."""
    outs = _spawn("shard", tmp_path)
    probs = _problems()
    for name, n, c in CASES:
        prob, x0 = probs[name]
        ref = sf.ensemble(prob, x0, n, chunk_size=c, **_kwargs())
        for o in outs:
            got = o[f"{name}-{n}-{c}"]
            assert torch.equal(got["samples"], ref.samples), (name, n, c)
            for k in ("mean", "cov", "var"):
                torch.testing.assert_close(got[k], getattr(ref, k), rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(got["se"], ref.stderr["mean"], rtol=1e-10, atol=1e-15)
            assert set(got["ranks"].tolist()) == {0, 1}  # both ranks ran chunks
        # the two ranks return the same result
        a, b = outs[0][f"{name}-{n}-{c}"], outs[1][f"{name}-{n}-{c}"]
        assert torch.equal(a["mean"], b["mean"]) and torch.equal(a["cov"], b["cov"])


def test_failures_reach_every_rank_without_deadlock(tmp_path: Path) -> None:
    """Ranks disagreeing on ``seed``; rank 1 passing ``chunk_size=0``; rank 1's drift raising
    mid-run: every rank raises (naming the argument where there is one), none hangs."""
    outs = _spawn("errors", tmp_path)
    for o in outs:
        err = o["disagree"]
        assert err is not None and "seed" in err and "disagree" in err
    assert "chunk_size" in outs[1]["bad_rank"]
    assert outs[0]["bad_rank"] is not None and "rank(s) [1]" in outs[0]["bad_rank"]
    assert "boom on rank 1" in outs[1]["fail_run"]
    assert outs[0]["fail_run"] is not None and "another rank failed" in outs[0]["fail_run"]
    ref = _idle_rank_run()
    for o in outs:
        for k, v in ref.items():
            torch.testing.assert_close(o["idle_rank"][k], v, rtol=1e-12, atol=1e-14,
                                       equal_nan=True)
