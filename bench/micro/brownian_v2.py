"""Brownian motion v2 benchmarks, measured in one run as ratios (issue "Brownian motion v2").

    python bench/micro/brownian_v2.py            # full sizes (B = 10,000 x 2, float64, 1 thread)
    python bench/micro/brownian_v2.py --quick    # smaller rounds

Cases (timings are medians over interleaved rounds, so load drifts hit every variant alike):

* EM on OU (dX = -X dt + 0.5 dW) on a fixed grid of N = 128 / 1,024 steps: ``solve(seed=)``,
  a fresh ``BrownianPath`` per solve (``brownian=``), a ``BrownianPath`` already holding the
  grid (a shared path's second solve) and a fresh ``BrownianTree(tol=dt/2)``, each divided by
  a hand-written loop that calls ``torch.randn`` itself.
* Bridge queries on a (256, 2) path holding a 128-step grid: ``bm(t)`` and
  ``bm.increment(s, t)`` at new random times, against torchsde's ``BrownianInterval``
  ``bm(s, t)`` on the same kind of path.
* Memory of an owned path in a 4,096-step step-doubling sweep (B = 10,000 x 2), with the
  release a solve that owns its path makes behind its current time, against keeping everything.
* ``BrownianTree`` memory over 10^6 queried times (batches of 1,000), against its stated bound.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import sdeflow as sf

F64 = torch.float64


def _rounds(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def em_cases(batch: int, steps: list[int], rounds: int) -> list[tuple[str, ...]]:
    sde = sf.SDE(lambda t, x: -x, lambda t, x: torch.full_like(x, 0.5), noise="diagonal")
    x0 = torch.ones(batch, 2, dtype=F64)
    rows = []
    for n in steps:
        h = 1.0 / n
        sh = math.sqrt(h)
        gen = torch.Generator().manual_seed(0)

        def hand(n: int = n, h: float = h, sh: float = sh,
                 gen: torch.Generator = gen) -> torch.Tensor:
            x = x0
            for _ in range(n):
                x = x + h * (-x) + torch.full_like(x, 0.5) * sh * torch.randn(
                    x.shape, generator=gen, dtype=F64)
            return x

        stored = sf.BrownianPath((batch, 2), seed=2, dtype=F64)
        stored.grid([k / n for k in range(n + 1)])
        fns = {
            "hand loop (torch.randn)": hand,
            "solve(seed=)": lambda n=n: sf.solve(sde, x0, (0.0, 1.0), steps=n, seed=1),
            "solve(brownian=fresh BrownianPath)": lambda n=n: sf.solve(
                sde, x0, (0.0, 1.0), steps=n,
                brownian=sf.BrownianPath((batch, 2), seed=1, dtype=F64)),
            "solve(brownian=BrownianPath holding the grid)": lambda n=n, stored=stored: sf.solve(
                sde, x0, (0.0, 1.0), steps=n, brownian=stored),
            "solve(brownian=BrownianTree(tol=dt/2))": lambda n=n, h=h: sf.solve(
                sde, x0, (0.0, 1.0), steps=n,
                brownian=sf.BrownianTree((batch, 2), seed=1, tol=h / 2, dtype=F64)),
        }
        med = _rounds(fns, rounds)
        base = med["hand loop (torch.randn)"]
        for k, v in med.items():
            rows.append((f"EM {batch}x2, N={n}", k, f"{v * 1e3:.1f} ms", f"{v / base:.2f}x"))
    return rows


def bridge_cases(rounds: int) -> list[tuple[str, ...]]:
    import torchsde

    n, k = 128, 64
    rng = np.random.default_rng(0)
    cells = rng.integers(0, n, 2 * k)
    times = ((cells + 0.05 + 0.9 * rng.random(2 * k)) / n).tolist()
    pairs = [tuple(sorted(times[2 * i: 2 * i + 2])) for i in range(k)]
    grid = [i / n for i in range(n + 1)]

    def ours_point() -> None:
        bm = sf.BrownianPath((256, 2), seed=1, dtype=F64)
        bm.grid(grid)
        for t in times[:k]:
            bm(t)

    def ours_inc() -> None:
        bm = sf.BrownianPath((256, 2), seed=1, dtype=F64)
        bm.grid(grid)
        for s, t in pairs:
            bm.increment(s, t)

    def theirs() -> None:
        bm = torchsde.BrownianInterval(0.0, 1.0, size=(256, 2), dtype=F64)
        for i in range(n):
            bm(grid[i], grid[i + 1])
        for s, t in pairs:
            bm(s, t)

    def setup_ours() -> None:
        bm = sf.BrownianPath((256, 2), seed=1, dtype=F64)
        bm.grid(grid)

    def setup_theirs() -> None:
        bm = torchsde.BrownianInterval(0.0, 1.0, size=(256, 2), dtype=F64)
        for i in range(n):
            bm(grid[i], grid[i + 1])

    med = _rounds({"ours bm(t)": ours_point, "ours increment(s, t)": ours_inc,
                   "torchsde bm(s, t)": theirs, "ours setup": setup_ours,
                   "torchsde setup": setup_theirs}, rounds)
    per = {"sdeflow BrownianPath bm(t)": (med["ours bm(t)"] - med["ours setup"]) / k,
           "sdeflow BrownianPath increment(s, t)":
               (med["ours increment(s, t)"] - med["ours setup"]) / k,
           "torchsde BrownianInterval bm(s, t)":
               (med["torchsde bm(s, t)"] - med["torchsde setup"]) / k}
    base = per["torchsde BrownianInterval bm(s, t)"]
    return [("bridge query (256, 2), 129 stored", name, f"{v * 1e6:.0f} us",
             f"{v / base:.2f}x") for name, v in per.items()]


def owned_path_memory(batch: int, steps: int) -> list[tuple[str, ...]]:
    """The step-doubling query pattern of an adaptive SDE solve (every 7th step rejected once)
    on a path the solve owns, with and without the release behind the current time."""
    row = batch * 2 * 8
    out = []
    for release in (False, True):
        bm = sf.BrownianPath((batch, 2), seed=0, dtype=F64)
        h = 1.0 / steps
        peak = 0
        for k in range(steps):
            t = k * h
            if k % 7 == 3:
                bm.grid([t, t + h / 4, t + h / 2], space_time=True)
            bm.grid([t, t + h / 2, t + h], space_time=True)
            if release:
                bm.release_before(t + h)
            peak = max(peak, bm.nbytes())
        out.append((f"owned path, {steps} steps, {batch}x2",
                    "release_before(t) after each step" if release else "keep everything",
                    f"{peak / 2**20:.1f} MiB", f"{peak / row:.0f} rows of W"))
    return out


def tree_memory(total: int, batch: int) -> list[tuple[str, ...]]:
    bm = sf.BrownianTree((batch,), seed=0, tol=1e-6, dtype=F64)
    e = batch
    bound = (2 * (bm.depth + 1) * 4 * e + 5 * e) * 8
    per = 1000
    peak = 0
    rng = np.random.default_rng(0)
    for c in range(total // per):
        a = c / (total // per)
        ts = np.sort(rng.random(per) / (total // per) + a)
        bm.grid(ts.tolist())
        peak = max(peak, bm.nbytes())
    return [(f"BrownianTree ({batch},), tol 1e-6, depth {bm.depth}",
             f"after {total:.0e} queried times", f"peak {peak / 1024:.1f} KiB",
             f"bound {bound / 1024:.1f} KiB")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["em", "bridge", "memory", "tree"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rounds = 3 if args.quick else 7
    rows: list[tuple[str, ...]] = []
    if args.only in (None, "em"):
        rows += em_cases(10_000, [128, 1024], rounds)
    if args.only in (None, "bridge"):
        rows += bridge_cases(rounds)
    if args.only in (None, "memory"):
        rows += owned_path_memory(10_000, 4096)
    if args.only in (None, "tree"):
        rows += tree_memory(10**5 if args.quick else 10**6, 16)
    print("| case | variant | measured | ratio / note |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
