"""Overhead ratio: wall time of a solve / (NFE x the time of one bare evaluation).

A ratio of 1 means the solver's time is all spent in the user's field; what is above 1 is the
loop, the stage arithmetic and (SDEs) the Brownian increments. ODE solvers use the 4-d linear
test ODE; SDE solvers a problem they fit, with drift and diffusion timed separately
(``bare = nfe_drift * t_drift + nfe_diffusion * t_diffusion``).
"""

from __future__ import annotations

import pytest
import torch
from micro_common import (
    BATCHES,
    SUMMARY,
    bare_time,
    median_of,
    ode_problem,
    sde_problem,
    solve_call,
    steps_for,
)

import sdeflow as sf

ODE_SOLVERS = [n for n in ("euler", "midpoint", "heun", "rk4", "bosh3", "dopri5", "tsit5")
               if n in sf.solvers.names(sde=False)]
SDE_SOLVERS = [n for n in ("euler_maruyama", "milstein", "stochastic_heun", "sra1")
               if n in sf.solvers.names(sde=True)]


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("solver", ODE_SOLVERS)
def test_ode_overhead(benchmark: object, solver: str, batch: int) -> None:
    ode, x0 = ode_problem(batch)
    t = torch.tensor(0.5, dtype=x0.dtype)
    bare = bare_time(lambda: ode.vector_field(t, x0))
    call, stats = solve_call(ode, x0, solver, steps_for(batch))
    benchmark(call)  # type: ignore[operator]
    ratio = median_of(benchmark, call) / (stats["nfe"] * bare)
    benchmark.extra_info.update(stats, bare_eval_s=bare, overhead_ratio=ratio)  # type: ignore
    SUMMARY.append({"kind": "overhead ratio = wall / (NFE x bare eval)", "solver": solver,
                    "batch": batch, "nfe": stats["nfe"], "bare_eval_us": bare * 1e6,
                    "ratio": ratio})


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("solver", SDE_SOLVERS)
def test_sde_overhead(benchmark: object, solver: str, batch: int) -> None:
    sde, x0 = sde_problem(solver, batch)
    t = torch.tensor(0.5, dtype=x0.dtype)
    t_f = bare_time(lambda: sde.drift(t, x0))
    t_g = bare_time(lambda: sde.diffusion(t, x0))
    call, stats = solve_call(sde, x0, solver, steps_for(batch))
    bare = stats.get("nfe_drift", 0) * t_f + stats.get("nfe_diffusion", 0) * t_g
    benchmark(call)  # type: ignore[operator]
    ratio = median_of(benchmark, call) / bare if bare > 0 else float("nan")
    benchmark.extra_info.update(stats, bare_drift_s=t_f, bare_diffusion_s=t_g,  # type: ignore
                                overhead_ratio=ratio)
    SUMMARY.append({"kind": "overhead ratio = wall / (NFE x bare eval)", "solver": solver,
                    "batch": f"{batch}x2", "nfe": stats["nfe"],
                    "bare_eval_us": (t_f + t_g) * 0.5e6, "ratio": ratio})
