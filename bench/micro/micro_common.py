"""Helpers shared by the micro-benchmarks: problems for every solver, timing of bare calls."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from sdeflow_bench import linear_field

import sdeflow as sf

BATCHES = (1, 256, 10_000)
"""Batch sizes of the per-step micro-benchmarks."""

SUMMARY: list[dict[str, Any]] = []
"""Rows the tests add (printed by ``bench/conftest.py`` at the end of the session)."""

Tensor = torch.Tensor


def steps_for(batch: int) -> int:
    """Fixed steps per solve: enough to amortise the call, few enough to stay quick."""
    return {1: 200, 256: 100}.get(batch, 20)


def ode_problem(batch: int, dtype: torch.dtype = torch.float64) -> tuple[sf.ODE, Tensor]:
    """The 4-d linear test ODE of ``sdeflow_bench`` and a seeded ``(batch, 4)`` start."""
    g = torch.Generator().manual_seed(batch)
    return sf.ODE(linear_field(dtype)), torch.randn(batch, 4, generator=g, dtype=dtype)


def sde_problem(solver: str, batch: int, dtype: torch.dtype = torch.float64
                ) -> tuple[sf.SDE, Tensor]:
    """An SDE the solver fits: GBM (Ito or Stratonovich, diagonal) or OU (additive)."""
    cls = sf.solvers.get(solver)
    x0 = torch.ones(batch, 2, dtype=dtype)
    for noise, kind in (("diagonal", "ito"), ("diagonal", "stratonovich"), ("additive", "ito")):
        if cls.fits(noise, kind):  # type: ignore[attr-defined]
            if noise == "additive":
                return sf.SDE(lambda t, x: -x, lambda t, x: torch.full_like(x, 0.5),
                              noise=noise, kind=kind), x0
            return sf.SDE(lambda t, x: 0.5 * x, lambda t, x: 0.5 * x, noise=noise,
                          kind=kind), x0
    raise ValueError(f"no micro-benchmark problem fits solver {solver!r}")


def solve_call(problem: sf.ODE | sf.SDE, x0: Tensor, solver: str, steps: int
               ) -> tuple[Callable[[], Any], dict[str, Any]]:
    """A zero-argument solve and its stats: fixed steps, or rtol=1e-6 for adaptive-only solvers.

    Returns ``(call, stats)`` where stats come from one solve (and include ``mode``).
    """
    kw: dict[str, Any] = {"seed": 0} if isinstance(problem, sf.SDE) else {}
    try:
        sol = sf.solve(problem, x0, (0.0, 1.0), solver=solver, steps=steps, **kw)
        mode = "fixed"
    except ValueError:
        kw.update(rtol=1e-6, atol=1e-8)
        sol = sf.solve(problem, x0, (0.0, 1.0), solver=solver, **kw)
        mode = "adaptive rtol=1e-6"
    else:
        kw["steps"] = steps
    stats = dict(sol.stats, mode=mode)

    def call() -> Any:
        return sf.solve(problem, x0, (0.0, 1.0), solver=solver, **kw)

    return call, stats


def bare_time(fn: Callable[[], Any], min_time: float = 0.05, repeat: int = 5) -> float:
    """Median time of one call of ``fn`` (seconds), over ``repeat`` batches of calls."""
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt >= min_time / repeat or n >= 1 << 16:
            break
        n *= 4
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n)
    times.sort()
    return times[len(times) // 2]


def median_of(benchmark: Any, call: Callable[[], Any] | None = None) -> float:
    """The median (seconds) pytest-benchmark measured; with ``--benchmark-disable`` (no
    statistics) one timed ``call()`` instead, or NaN without one."""
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        return float(stats.stats.median)
    if call is None:
        return float("nan")
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def format_summary(rows: list[dict[str, Any]]) -> list[str]:
    """Rows as aligned text lines, one block per ``kind``."""
    out: list[str] = []
    for kind in dict.fromkeys(r["kind"] for r in rows):
        block = [r for r in rows if r["kind"] == kind]
        keys = [k for k in block[0] if k != "kind"]
        cells = [[_cell(r.get(k)) for k in keys] for r in block]
        widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
        out.append(f"[{kind}]")
        out.append("  ".join(k.ljust(w) for k, w in zip(keys, widths)))
        out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return out


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)
