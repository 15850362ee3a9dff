"""Against diffusers (a dev dependency): on the VP path with the exact eps
field, diffusers' DPMSolverMultistepScheduler and UniPCMultistepScheduler driven on our grid
(their ``sigmas`` replaced by ``beta/alpha`` at our times, ``lower_order_final=False``) give
the same samples from the same 200 points (mixture2d, seed 1): to 1e-5 for DPM-Solver++ (diffusers
steps in float32) and to 1e-10 for UniPC. Formulations that differ (our default Taylor 3M against
diffusers' 3M) do not match -- the test checks that too, so the comparison has power.
"""

from __future__ import annotations

import diffusers
import pytest
import torch
from sdeflow_generative import GaussianPath, VariancePreserving, datasets, sample

F64 = torch.float64
COMMON = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
              beta_end=0.02, lower_order_final=False, final_sigmas_type="sigma_min")


def _run(sched, mg, path, x0, ts):
    sched.set_timesteps(len(ts) - 1)
    v = path.schedule(ts.to(F64))
    sched.sigmas = v.beta / v.alpha
    x = x0.clone()
    for i, step_t in enumerate(sched.timesteps):
        eps = mg.eps(x, torch.full((x.shape[0],), float(ts[i]), dtype=F64))
        x = sched.step(eps, step_t, x).prev_sample
    return x


CASES = [
    ("dpm_solver_pp2m", {"variant": "taylor"}, "DPMSolverMultistepScheduler",
     dict(solver_order=2, algorithm_type="dpmsolver++", solver_type="heun"), 1e-5),
    ("dpm_solver_pp2m", {}, "DPMSolverMultistepScheduler",
     dict(solver_order=2, algorithm_type="dpmsolver++", solver_type="midpoint"), 1e-5),
    ("dpm_solver_pp3m", {"variant": "published", "warmup": "multistep"},
     "DPMSolverMultistepScheduler",
     dict(solver_order=3, algorithm_type="dpmsolver++", solver_type="heun"), 1e-5),
    ("unipc2", {}, "UniPCMultistepScheduler", dict(solver_order=2, solver_type="bh2"), 1e-10),
    ("unipc2", {"variant": "bh1"}, "UniPCMultistepScheduler",
     dict(solver_order=2, solver_type="bh1"), 1e-10),
    ("unipc3", {}, "UniPCMultistepScheduler", dict(solver_order=3, solver_type="bh2"), 1e-10),
]


@pytest.mark.parametrize("grid", ["lambda", "karras"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[3].get('solver_type')}")
def test_same_sample_as_diffusers(case, grid: str) -> None:
    torch.set_num_threads(1)
    ours, okw, cls_name, dkw, tol = case
    path = GaussianPath(VariancePreserving())
    mg = path.marginal(datasets.mixture2d())
    x0 = mg.sample(200, 0.0, generator=torch.Generator().manual_seed(1))
    sol = sample(mg.eps, path, x0, solver=ours, steps=10, param="eps", grid=grid, **okw)
    xd = _run(getattr(diffusers, cls_name)(**COMMON, **dkw), mg, path, x0, sol.ts)
    assert float((sol.ys[-1] - xd).abs().max()) < tol


def test_taylor_3m_differs_from_diffusers_3m() -> None:
    path = GaussianPath(VariancePreserving())
    mg = path.marginal(datasets.mixture2d())
    x0 = mg.sample(200, 0.0, generator=torch.Generator().manual_seed(1))
    sol = sample(mg.eps, path, x0, solver="dpm_solver_pp3m", steps=10, param="eps",
                 warmup="multistep")
    xd = _run(diffusers.DPMSolverMultistepScheduler(
        **COMMON, solver_order=3, algorithm_type="dpmsolver++", solver_type="heun"),
        mg, path, x0, sol.ts)
    assert float((sol.ys[-1] - xd).abs().max()) > 1e-3
