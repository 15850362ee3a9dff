"""Few-step samplers on exact mixture fields: orders, "few steps beat many", diffusers peers.

Run: ``PYTHONPATH=.:plugins python bench/generative/fewstep.py [orders|table|peers|sde|all]
[--quick]``. Writes markdown tables to stdout (and ``bench/generative/fewstep_results.md``
with ``--out``). Everything runs on the exact fields of part 1 (no training), float64, one thread.

* ``orders``: coupled error against dopri5 (rtol = atol = 1e-10) from the same 64 points, fitted
  slope in NFE with a 95% Student-t interval, over CondOT, cosine and VP (docs/math.md §15).
* ``table``: sliced W1 (128 directions) of n = 4000 samples against n = 4000 exact samples, with
  the exact-vs-exact null (mean +- sd of 5 independent exact samples) and the RMS coupled error to
  the exact ODE solution from the same x0; NFE in {5, 10, 15, 20, 30, 50} x solver x grid x path,
  on ``mixture2d`` and on a 16-D, 6-component mixture. The baselines are Euler at 100 NFE and
  Heun at 20 NFE (velocity PF-ODE in t); "reach" is the smallest NFE whose W1 is at most the
  baseline's.
* ``peers``: diffusers' DPMSolverMultistepScheduler (dpmsolver++, order 2, "heun" and
  "midpoint") and UniPCMultistepScheduler (bh2, bh1; order 2, 3) on VP with the exact eps field,
  driven on our grid (their ``sigmas`` replaced by ``beta/alpha`` of our times); max abs
  difference of the samples from the same x0, the same for our solver in float32 against
  float64 (diffusers' DPM-Solver steps in float32: a difference of that size is rounding), and
  W1. diffusers is optional: skipped if missing.
* ``sde``: dpm_solver_pp2m_sde (eta = 1) weak error of E|X|^2 against the exact target, n = 40000.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import sdeflow_generative as gen
import torch
from sdeflow_generative import datasets
from sdeflow_generative.sampling import FEW_STEP

import sdeflow as sf
from sdeflow.verify import _regression_fit

F64 = torch.float64
T_END = 1 - 1e-3
NFES = (5, 10, 15, 20, 30, 50)
PER_STEP = {"dpm_solver2": 2, "dpm_solver3": 3}
GRIDS = ("lambda", "t", "karras")
OUT: list[str] = []


def emit(line: str = "") -> None:
    print(line, flush=True)
    OUT.append(line)


def mixture16(seed: int = 11) -> gen.GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    K, d = 6, 16
    means = 2.5 * torch.randn(K, d, generator=g, dtype=F64)
    a = torch.randn(K, d, d, generator=g, dtype=F64) / math.sqrt(d)
    covs = 0.15 * (a @ a.transpose(-1, -2)) + 0.05 * torch.eye(d, dtype=F64)
    w = torch.rand(K, generator=g, dtype=F64) + 0.5
    return gen.GaussianMixture(means, covs, w / w.sum())


def t_start(path: gen.GaussianPath) -> float:
    return 0.0 if isinstance(path.schedule, gen.VariancePreserving) else 1e-3


def steps_for(solver: str, nfe: int) -> int:
    if solver == "dpm_solver_pp3m":
        return max(3, nfe - 1)
    return max(1, nfe // PER_STEP.get(solver, 1))


def sliced_w1(x: torch.Tensor, y: torch.Tensor, dirs: torch.Tensor) -> float:
    px, _ = torch.sort(x @ dirs, dim=0)
    py, _ = torch.sort(y @ dirs, dim=0)
    return float((px - py).abs().mean())


# ------------------------------------------------------------------------------- orders
def orders(quick: bool) -> None:
    steps = (24, 48, 96) if quick else (48, 96, 192, 384)
    emit("## Orders: coupled error vs dopri5 (rtol 1e-10), mixture2d, 64 points, 95% CI")
    emit("")
    emit("| solver | declared (theory) | " + " | ".join(f"{p} order [CI]" for p in
                                              ("CondOT", "cosine", "VP")) + " |")
    emit("|---|---|---|---|---|")
    cfgs: list[tuple[str, str, dict[str, Any], float | None]] = [
        (s, s, {}, None) for s in FEW_STEP] + [
        ("2M taylor", "dpm_solver_pp2m", {"variant": "taylor"}, 2.0),
        ("unipc2 no corrector", "unipc2", {"corrector": False}, 2.0),
        ("unipc3 no corrector", "unipc3", {"corrector": False}, 3.0),
        ("3M published coef", "dpm_solver_pp3m", {"variant": "published"}, 2.0),
        ("3M multistep warm-up", "dpm_solver_pp3m", {"warmup": "multistep"}, 2.0)]
    refs = {}
    for sch in (gen.CondOT(), gen.Cosine(), gen.VariancePreserving()):
        path = gen.GaussianPath(sch)
        mg = path.marginal(datasets.mixture2d())
        x0 = mg.sample(64, t_start(path), generator=torch.Generator().manual_seed(0))
        ref = sf.solve(gen.ProbabilityFlowODE(path, mg.velocity), x0, (t_start(path), T_END),
                       rtol=1e-10, atol=1e-10).ys[-1]
        refs[type(sch).__name__] = (path, mg, x0, ref)
    for label, solver, kw, expect in cfgs:
        cells = []
        for _, (path, mg, x0, ref) in refs.items():
            errs, nfes = [], []
            for n in steps:
                sol = gen.sample(mg.x0, path, x0, solver=solver, steps=n, param="x0", **kw)
                errs.append(float((sol.ys[-1] - ref).norm(dim=-1).mean()))
                nfes.append(sol.stats["nfe"])
            p, ci = _regression_fit([1.0 / v for v in nfes], errs, 0.95)
            cells.append(f"{p:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]")
        declared = sf.solvers.get(solver).caps.order if expect is None else expect
        emit(f"| {label} | {declared:g} | " + " | ".join(cells) + " |")
    emit("")


# -------------------------------------------------------------------------------- table
def table(quick: bool) -> None:
    n = 1000 if quick else 4000
    targets = {"2D": datasets.mixture2d()} if quick else {"2D": datasets.mixture2d(),
                                                         "16D": mixture16()}
    solvers = ("ddim", "dpm_solver_pp2m", "unipc2") if quick else FEW_STEP
    nfes = (10, 20) if quick else NFES
    summary: list[tuple[str, ...]] = []
    at10: list[str] = []
    for tname, tgt in targets.items():
        d = tgt.dim
        dirs = torch.randn(d, 128, generator=torch.Generator().manual_seed(5), dtype=F64)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        for sch in (gen.CondOT(), gen.VariancePreserving()):
            path = gen.GaussianPath(sch)
            pname = type(sch).__name__
            mg = path.marginal(tgt)
            t0 = t_start(path)
            x0 = mg.sample(n, t0, generator=torch.Generator().manual_seed(1))
            y = mg.sample(n, T_END, generator=torch.Generator().manual_seed(2))
            null = torch.tensor([sliced_w1(mg.sample(n, T_END, generator=torch.Generator()
                                                     .manual_seed(10 + r)), y, dirs)
                                 for r in range(5)])
            ref = sf.solve(gen.ProbabilityFlowODE(path, mg.velocity), x0, (t0, T_END),
                           rtol=1e-8, atol=1e-8).ys[-1]

            def score(sol: sf.Solution, y: torch.Tensor = y, dirs: torch.Tensor = dirs,
                      ref: torch.Tensor = ref) -> tuple[float, float]:
                out = sol.ys[-1]
                return sliced_w1(out, y, dirs), float(((out - ref) ** 2).sum(-1).mean().sqrt())

            w_ref = sliced_w1(ref, y, dirs)
            eu = score(gen.sample(mg.velocity, path, x0, solver="euler", steps=100,
                                  param="velocity", grid="t"))
            he = score(gen.sample(mg.velocity, path, x0, solver="heun", steps=10,
                                  param="velocity", grid="t"))
            emit(f"## {tname} mixture, {pname}: sliced W1 (n={n}); null {float(null.mean()):.4f}"
                 f" +- {float(null.std()):.4f}; exact ODE {w_ref:.4f}; Euler@100 {eu[0]:.4f} "
                 f"(rms {eu[1]:.3g}); Heun@20 {he[0]:.4f} (rms {he[1]:.3g})")
            emit("")
            floor = float(null.mean() + 2 * null.std())
            emit("| solver | grid | " + " | ".join(f"NFE {v}" for v in nfes) +
                 " | W1: Euler@100 | W1: Heun@20 | rms: Euler@100 | rms: Heun@20 | W1 in null |")
            emit("|---|---|" + "---|" * (len(nfes) + 5))
            rows = [(s, g, {}) for s in solvers for g in GRIDS]
            rows += [("dpm_solver_pp2m", g, {"variant": "taylor"}) for g in GRIDS]
            if not quick:
                rows += [("dpm_solver_pp2m", g, {"lower_final": 1}) for g in GRIDS]
                rows += [("dpm_solver_pp3m", g, {"lower_final": 2}) for g in GRIDS]
                rows += [("unipc2", g, {"lower_final": 1}) for g in GRIDS]
            for solver, grid, kw in rows:
                cells, res = [], []
                for v in nfes:
                    sol = gen.sample(mg.x0, path, x0, solver=solver, steps=steps_for(solver, v),
                                     param="x0", grid=grid, **kw)
                    w, rms = score(sol)
                    nfe = sol.stats["nfe"]
                    res.append((nfe, w, rms))
                    cells.append(f"{w:.4f} ({rms:.2g})" + ("" if nfe == v else f" [{nfe}]"))

                def reach(i: int, base: float, res: list = res) -> str:
                    return str(next((r[0] for r in res if r[i] <= base), ">50"))

                reaches = [reach(1, eu[0]), reach(1, he[0]), reach(2, eu[1]), reach(2, he[1]),
                           reach(1, floor)]
                label = solver + "".join(f" {k}={v}" for k, v in kw.items())
                emit(f"| {label} | {grid} | " + " | ".join(cells) + " | " +
                     " | ".join(reaches) + " |")
                if solver == "dpm_solver_pp2m" and grid == "lambda" and not kw:
                    summary.append((tname, pname, *reaches))
                for nfe, w, rms in res:
                    if nfe <= 10 and (w <= eu[0] or rms <= eu[1]):
                        at10.append(f"{tname} {pname}: {label} on {grid} at {nfe} NFE "
                                    f"(W1 {w:.4f}, rms {rms:.3g})")
            emit("")
            emit(f"Cells: sliced W1 (RMS coupled error to the exact ODE solution); [n] the actual"
                 f" NFE where it differs from the column's. Reach columns: smallest NFE with W1 "
                 f"(or rms) at most the baseline's; 'W1 in null': W1 <= null mean + 2 sd "
                 f"= {floor:.4f}.")
            emit("")
    emit("### 2M on the lambda grid: NFE to reach the baselines")
    emit("")
    emit("| target | path | W1: Euler@100 | W1: Heun@20 | rms: Euler@100 | rms: Heun@20 | "
         "W1 in null |")
    emit("|---|---|---|---|---|---|---|")
    for row in summary:
        emit("| " + " | ".join(row) + " |")
    emit("")
    emit("### Configurations reaching Euler@100 (W1 or rms) at <= 10 NFE")
    emit("")
    for line in at10 or ["none"]:
        emit(f"* {line}")
    emit("")


# -------------------------------------------------------------------------------- peers
def _sigmas(path: gen.GaussianPath, ts: torch.Tensor) -> torch.Tensor:
    v = path.schedule(ts.to(F64))
    return v.beta / v.alpha


def _run_diffusers(sched: Any, mg: gen.ExactMarginal, path: gen.GaussianPath,
                   x0: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    n = len(ts) - 1
    sched.set_timesteps(n)
    sched.sigmas = _sigmas(path, ts)
    x = x0.clone()
    for i, step_t in enumerate(sched.timesteps):
        eps = mg.eps(x, torch.full((x.shape[0],), float(ts[i]), dtype=F64))
        x = sched.step(eps, step_t, x).prev_sample
    return x


def peers(quick: bool) -> None:
    try:
        from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler
    except ImportError:
        emit("## diffusers peers: diffusers is not installed; skipped")
        return
    path = gen.GaussianPath(gen.VariancePreserving())
    tgt = datasets.mixture2d()
    mg = path.marginal(tgt)
    n = 1000 if quick else 4000
    x0 = mg.sample(n, 0.0, generator=torch.Generator().manual_seed(1))
    y = mg.sample(n, T_END, generator=torch.Generator().manual_seed(2))
    dirs = torch.randn(2, 128, generator=torch.Generator().manual_seed(5), dtype=F64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    emit("## Against diffusers on VP with the exact eps field (same x0, same grid)")
    emit("")
    emit("| ours | diffusers | steps | grid | max abs diff | ours f32 vs f64 | W1 ours | "
         "W1 diffusers |")
    emit("|---|---|---|---|---|---|---|---|")
    common = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                  beta_end=0.02, lower_order_final=False, final_sigmas_type="sigma_min")
    cases = [
        ("dpm_solver_pp2m", {"variant": "taylor"}, DPMSolverMultistepScheduler,
         dict(solver_order=2, algorithm_type="dpmsolver++", solver_type="heun")),
        ("dpm_solver_pp2m", {}, DPMSolverMultistepScheduler,
         dict(solver_order=2, algorithm_type="dpmsolver++", solver_type="midpoint")),
        ("dpm_solver_pp2m", {"variant": "taylor"}, DPMSolverMultistepScheduler,
         dict(solver_order=2, algorithm_type="dpmsolver++", solver_type="midpoint")),
        ("dpm_solver_pp3m", {"warmup": "multistep", "variant": "published"},
         DPMSolverMultistepScheduler, dict(solver_order=3, algorithm_type="dpmsolver++",
                                           solver_type="heun")),
        ("dpm_solver_pp3m", {}, DPMSolverMultistepScheduler,
         dict(solver_order=3, algorithm_type="dpmsolver++", solver_type="midpoint")),
        ("unipc2", {}, UniPCMultistepScheduler, dict(solver_order=2, solver_type="bh2")),
        ("unipc2", {"variant": "bh1"}, UniPCMultistepScheduler,
         dict(solver_order=2, solver_type="bh1")),
        ("unipc3", {}, UniPCMultistepScheduler, dict(solver_order=3, solver_type="bh2")),
    ]
    for steps in ((10,) if quick else (10, 20)):
        for grid in ("lambda", "karras"):
            for ours, okw, cls, dkw in cases:
                sol = gen.sample(mg.eps, path, x0, solver=ours, steps=steps, param="eps",
                                 grid=grid, **okw)
                xd = _run_diffusers(cls(**common, **dkw), mg, path, x0, sol.ts)
                xo = sol.ys[-1]
                x32 = gen.sample(mg.eps, path, x0.float(), solver=ours, param="eps",
                                 grid=sol.ts.float(), **okw).ys[-1].double()
                label = ours + (f" {okw}" if okw else "")
                dl = cls.__name__.replace("MultistepScheduler", "") + " " + " ".join(
                    f"{k}={v}" for k, v in dkw.items() if k != "algorithm_type")
                emit(f"| {label} | {dl} | {steps} | {grid} | {float((xo - xd).abs().max()):.2e}"
                     f" | {float((xo - x32).abs().max()):.1e} | {sliced_w1(xo, y, dirs):.4f} | "
                     f"{sliced_w1(xd, y, dirs):.4f} |")
    emit("")


# ---------------------------------------------------------------------------------- sde
def sde(quick: bool) -> None:
    path = gen.GaussianPath(gen.VariancePreserving())
    tgt = datasets.mixture2d()
    mg = path.marginal(tgt)
    n = 10_000 if quick else 40_000
    x0 = mg.sample(n, 0.0, generator=torch.Generator().manual_seed(1))
    y = mg.sample(n, T_END, generator=torch.Generator().manual_seed(2))
    m2 = float((y ** 2).sum(-1).mean())
    se = float((y ** 2).sum(-1).std()) / math.sqrt(n)
    dirs = torch.randn(2, 128, generator=torch.Generator().manual_seed(5), dtype=F64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    emit(f"## Stochastic: dpm_solver_pp2m_sde (eta=1), VP, n={n}; exact E|X|^2 sample "
         f"{m2:.4f} +- {se:.4f}")
    emit("")
    cfgs = [("lambda", {}), ("lambda", {"lower_final": 1}), ("t", {"lower_final": 1}),
            ("t", {}), ("lambda", {"variant": "taylor"})]
    emit("| steps | " + " | ".join(f"{g} {kw or ''}: E|X|^2 err, W1" for g, kw in cfgs) +
         " | EM in t (DiffusionSDE eta=1): W1 |")
    emit("|---|" + "---|" * (len(cfgs) + 1))
    sde_em = gen.DiffusionSDE(path, mg.x0, param="x0", eta=1.0)
    for k in (5, 10, 20, 40, 80):
        cells = []
        for grid, kw in cfgs:
            out = gen.sample(mg.x0, path, x0, solver="dpm_solver_pp2m_sde", steps=k,
                             param="x0", seed=7, grid=grid, **kw).ys[-1]
            cells.append(f"{float((out ** 2).sum(-1).mean()) - m2:+.3f}, "
                         f"{sliced_w1(out, y, dirs):.4f}")
        em = sf.solve(sde_em, x0, (0.0, T_END), solver="euler_maruyama", steps=k, seed=7).ys[-1]
        emit(f"| {k} | " + " | ".join(cells) + f" | {sliced_w1(em, y, dirs):.4f} |")
    emit("")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", nargs="?", default="all",
                    choices=("orders", "table", "peers", "sde", "all"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    t = time.time()
    for name, fn in (("orders", orders), ("table", table), ("peers", peers), ("sde", sde)):
        if a.what in (name, "all"):
            fn(a.quick)
    emit(f"(ran in {time.time() - t:.0f} s)")
    if a.out:
        with open(a.out, "w") as fh:
            fh.write("\n".join(OUT) + "\n")


if __name__ == "__main__":
    sys.exit(main())
