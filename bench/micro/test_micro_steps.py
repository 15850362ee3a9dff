"""Per-step cost of every registered solver at batch 1, 256 and 10,000.

ODE solvers run the 4-d linear test ODE (float64), SDE solvers a problem they fit (GBM for Ito
and Stratonovich diagonal noise, OU for additive noise), on ``steps_for(batch)`` fixed steps; a
solver that only runs adaptively is given rtol=1e-6 and its cost is per attempted step.
``pytest bench/micro/test_micro_steps.py`` prints the microseconds per step at the end.
"""

from __future__ import annotations

import pytest
from micro_common import (
    BATCHES,
    SUMMARY,
    median_of,
    ode_problem,
    sde_problem,
    solve_call,
    steps_for,
)

import sdeflow as sf


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("solver", sf.solvers.names(sde=False))
def test_ode_step_cost(benchmark: object, solver: str, batch: int) -> None:
    ode, x0 = ode_problem(batch)
    call, stats = solve_call(ode, x0, solver, steps_for(batch))
    benchmark.extra_info.update(stats, batch=batch)  # type: ignore[attr-defined]
    benchmark(call)  # type: ignore[operator]
    per_step = median_of(benchmark, call) / stats["steps"]
    benchmark.extra_info["us_per_step"] = per_step * 1e6  # type: ignore[attr-defined]
    SUMMARY.append({"kind": "us per step", "solver": solver, "batch": batch,
                    "mode": stats["mode"], "steps": stats["steps"], "nfe": stats["nfe"],
                    "us_per_step": per_step * 1e6})


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("solver", sf.solvers.names(sde=True))
def test_sde_step_cost(benchmark: object, solver: str, batch: int) -> None:
    sde, x0 = sde_problem(solver, batch)
    call, stats = solve_call(sde, x0, solver, steps_for(batch))
    benchmark.extra_info.update(stats, batch=batch)  # type: ignore[attr-defined]
    benchmark(call)  # type: ignore[operator]
    per_step = median_of(benchmark, call) / stats["steps"]
    benchmark.extra_info["us_per_step"] = per_step * 1e6  # type: ignore[attr-defined]
    SUMMARY.append({"kind": "us per step", "solver": solver, "batch": f"{batch}x2",
                    "mode": stats["mode"], "steps": stats["steps"], "nfe": stats["nfe"],
                    "us_per_step": per_step * 1e6})
