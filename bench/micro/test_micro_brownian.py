"""Brownian path generation: a fixed grid in one batched draw, and Brownian-bridge queries.

* ``test_grid_brownian_tree``: the same grid from a fresh ``BrownianTree(tol=dt/2)``.
* ``test_grid``: a fresh :class:`sdeflow.BrownianPath` asked for a whole grid (what
  ``solve(..., brownian=bm)`` does), against the plain draw ``sqrt(h) * randn`` of the same
  increments (what ``solve(..., seed=...)`` does) and torchsde's ``BrownianInterval`` queried
  interval by interval (what ``torchsde.sdeint`` does).
* ``test_bridge_*``: queries at new times inside a path that already holds a grid, in random
  order: each one is a conditional (bridge) draw.
"""

from __future__ import annotations

import math

import pytest
import torch
from micro_common import SUMMARY, median_of

import sdeflow as sf

GRID_CASES = [(256, 128), (256, 1024), (10_000, 128), (10_000, 1024)]


@pytest.mark.parametrize(("batch", "n"), GRID_CASES)
def test_grid_brownian_path(benchmark: object, batch: int, n: int) -> None:
    grid = [i / n for i in range(n + 1)]

    def run() -> object:
        return sf.BrownianPath((batch, 2), seed=0, dtype=torch.float32).grid(grid)

    benchmark.pedantic(run, rounds=5 if batch * n < 2**21 else 3,  # type: ignore[attr-defined]
                       warmup_rounds=1)
    SUMMARY.append({"kind": "Brownian grid, us per step", "how": "BrownianPath.grid",
                    "batch": f"{batch}x2", "steps": n,
                    "us_per_step": median_of(benchmark, run) / n * 1e6})


@pytest.mark.parametrize(("batch", "n"), GRID_CASES)
def test_grid_brownian_tree(benchmark: object, batch: int, n: int) -> None:
    grid = [i / n for i in range(n + 1)]

    def run() -> object:
        return sf.BrownianTree((batch, 2), seed=0, tol=0.5 / n, dtype=torch.float32).grid(grid)

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)  # type: ignore[attr-defined]
    SUMMARY.append({"kind": "Brownian grid, us per step", "how": "BrownianTree.grid (tol=dt/2)",
                    "batch": f"{batch}x2", "steps": n,
                    "us_per_step": median_of(benchmark, run) / n * 1e6})


@pytest.mark.parametrize(("batch", "n"), GRID_CASES)
def test_grid_plain_randn(benchmark: object, batch: int, n: int) -> None:
    gen = torch.Generator().manual_seed(0)
    sqrt_h = math.sqrt(1.0 / n)

    def run() -> torch.Tensor:
        return torch.randn((n, batch, 2), generator=gen).mul_(sqrt_h)

    benchmark(run)  # type: ignore[operator]
    SUMMARY.append({"kind": "Brownian grid, us per step", "how": "randn (seed= path)",
                    "batch": f"{batch}x2", "steps": n,
                    "us_per_step": median_of(benchmark, run) / n * 1e6})


@pytest.mark.parametrize(("batch", "n"), GRID_CASES)
def test_grid_torchsde_interval(benchmark: object, batch: int, n: int) -> None:
    torchsde = pytest.importorskip("torchsde")
    h = 1.0 / n

    def run() -> None:
        bm = torchsde.BrownianInterval(0.0, 1.0, size=(batch, 2), dtype=torch.float32)
        for i in range(n):
            bm(i * h, (i + 1) * h)

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)  # type: ignore[attr-defined]
    SUMMARY.append({"kind": "Brownian grid, us per step", "how": "torchsde BrownianInterval",
                    "batch": f"{batch}x2", "steps": n,
                    "us_per_step": median_of(benchmark, run) / n * 1e6})


def _path_with_grid(batch: int, n: int) -> sf.BrownianPath:
    bm = sf.BrownianPath((batch, 2), seed=1, dtype=torch.float32)
    bm.grid([i / n for i in range(n + 1)])
    return bm


def _random_times(k: int, n: int, seed: int) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    # strictly inside grid intervals, so every query is a new (bridge) time
    cells = torch.randint(0, n, (k,), generator=g).double()
    frac = 0.05 + 0.9 * torch.rand(k, generator=g, dtype=torch.float64)
    return ((cells + frac) / n).tolist()


@pytest.mark.parametrize("batch", [256, 10_000])
def test_bridge_point_queries(benchmark: object, batch: int) -> None:
    n, k = 128, 64
    times = _random_times(k, n, batch)

    def setup() -> tuple[tuple[sf.BrownianPath], dict[str, object]]:
        return (_path_with_grid(batch, n),), {}

    def run(bm: sf.BrownianPath) -> None:
        for t in times:
            bm(t)

    benchmark.pedantic(run, setup=setup, rounds=7)  # type: ignore[attr-defined]
    SUMMARY.append({"kind": "Brownian bridge queries, us per query", "query": "bm(t)",
                    "batch": f"{batch}x2", "stored": n + 1,
                    "us_per_query": median_of(benchmark) / k * 1e6})


@pytest.mark.parametrize("batch", [256, 10_000])
def test_bridge_increment_queries(benchmark: object, batch: int) -> None:
    n, k = 128, 64
    times = _random_times(2 * k, n, batch + 1)
    pairs = [tuple(sorted(times[2 * i: 2 * i + 2])) for i in range(k)]

    def setup() -> tuple[tuple[sf.BrownianPath], dict[str, object]]:
        return (_path_with_grid(batch, n),), {}

    def run(bm: sf.BrownianPath) -> None:
        for s, t in pairs:
            bm.increment(s, t)

    benchmark.pedantic(run, setup=setup, rounds=7)  # type: ignore[attr-defined]
    SUMMARY.append({"kind": "Brownian bridge queries, us per query", "query": "increment(s, t)",
                    "batch": f"{batch}x2", "stored": n + 1,
                    "us_per_query": median_of(benchmark) / k * 1e6})


@pytest.mark.parametrize("batch", [256, 10_000])
def test_bridge_refine_grid(benchmark: object, batch: int) -> None:
    """A path on a coarse grid asked for a 4x finer one (a strong-convergence study's pattern)."""
    n = 128
    fine = [i / (4 * n) for i in range(4 * n + 1)]

    def setup() -> tuple[tuple[sf.BrownianPath], dict[str, object]]:
        return (_path_with_grid(batch, n),), {}

    def run(bm: sf.BrownianPath) -> object:
        return bm.grid(fine)

    benchmark.pedantic(run, setup=setup, rounds=5)  # type: ignore[attr-defined]
    SUMMARY.append({"kind": "Brownian bridge queries, us per query", "query": "grid 4x finer",
                    "batch": f"{batch}x2", "stored": n + 1,
                    "us_per_query": median_of(benchmark) / (3 * n) * 1e6})
