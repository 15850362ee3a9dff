"""Few-step samplers on exact mixture fields: orders, "few steps beat many", diffusers peers.

Run: ``PYTHONPATH=.:plugins python bench/generative/fewstep.py [orders|table|reach|peers|sde|all]
[--quick] [--out FILE]``. Writes markdown tables to stdout; ``--out`` replaces this run's
sections (between ``<!-- fewstep.py NAME -->`` markers) of FILE, e.g.
``bench/generative/fewstep_results.md``, keeping the others. Everything runs on the exact
fields of part 1 (no training), float64, one thread. ``table`` takes about 26 min wall on the
shared 2-core machine (``--quick``: about 80 s).

* ``orders``: coupled error against dopri5 (rtol = atol = 1e-10) from the same 64 points, fitted
  slope in NFE with a 95% Student-t interval, over CondOT, cosine and VP (docs/math.md §15).
* ``table``: "few steps beat many", scored by the **coupled sliced W1** (cSW1): the sliced W1
  (128 directions) between a sampler's outputs and the exact ODE solution (dopri5, rtol 1e-8)
  from the same n points x0 ~ p_t0 -- exact samples of p_{t_end}, so cSW1 estimates the sliced
  W1 between the sampler's law and the exact one, without the O(n^{-1/2}) floor that two
  independent samples carry (the old n = 4000 null, 0.049 +- 0.007, was larger than every
  difference being measured). Standard errors from 8 interleaved replicate batches; a sampler
  *reaches* a baseline when cSW1(sampler) - cSW1(baseline) <= 2 SE of the paired difference.
  n = 10000 on ``mixture2d``, 4000 on a fixed-seed 16-D, 6-component mixture; CondOT on
  (1e-3, 1 - 1e-3), VP on (0, 1 - 1e-3) (gen.sample's default spans; no final denoising
  step: every sampler and the exact target stop at t_end). Baselines: Euler at 100 NFE and
  Heun at 20 NFE (10 steps) on the velocity PF-ODE, uniform in t. NFE in {5, 10, 15, 20, 30,
  50} x solver x grid x path; for 2M on the lambda grid the exact reach NFE by bisection; 2M
  against DDIM at 10 NFE; the 10-NFE goal (grid families: lambda, t, Karras rho, DPM-Solver's
  time-quadratic and other powers, lambda-uniform on a clipped window with one step in and one
  out; with and without lower-order final steps); and a check of the same samplers against an
  independent exact sample of n = 200000 (2D) with its null.
* ``reach``: why the 2D reach NFE of 2M on the lambda grid misses the acceptance (<= 30 CondOT,
  <= 20 VP): the reach NFE again with VP started at 1e-3 (the issue's interval), a dopri5
  reference at rtol 1e-12, other n, x0 and direction seeds and 16 batches; every NFE in
  [15, 70] (is the bisection's monotone assumption true); the published 2M variants
  (diffusers' "heun" = ``variant="taylor"``, ``lower_final=1``); cSW1 and RMS coupled error
  of Euler, Heun and 2M against NFE. About 8 min.
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
import re
import sys
import time
from dataclasses import dataclass
from typing import Any

import sdeflow_generative as gen
import torch
from sdeflow_generative import datasets
from sdeflow_generative.sampling import FEW_STEP, lam, lam_to_t

import sdeflow as sf
from sdeflow.verify.fit import regression_fit as _regression_fit

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
# The criterion (see the module docstring and fewstep_results.md): coupled sliced W1, i.e. the
# sliced W1 between the sampler's outputs and the exact ODE solution (dopri5) from the same x0.
BATCHES = 8          # replicate batches (interleaved) for standard errors
N_DIRS = 128         # projection directions
LAM_WINDOW = (-2.0, 2.0)  # the clipped-lambda grid's window (chosen on the 2D mixture)
N_KEY_16D = 16000    # the 16-D key numbers (reach NFE, 2M vs DDIM, 10-NFE winners)


@dataclass
class Score:
    """Coupled sliced W1 on all points (``w``) and on each replicate batch (``wb``)."""

    w: float
    wb: torch.Tensor
    rms: float
    nfe: int


class Case:
    """One target x path: ``x0 ~ p_{t0}`` (seed 1), the exact ODE solution ``ref`` from the same
    ``x0`` (dopri5 at ``rtol``), the directions, the sorted projections of ``ref``."""

    def __init__(self, tname: str, target: gen.GaussianMixture, sch: Any, n: int,
                 rtol: float, t0: float | None = None, seed: int = 1, dir_seed: int = 5,
                 batches: int = BATCHES) -> None:
        self.tname = tname
        self.path = gen.GaussianPath(sch)
        self.pname = "VP" if isinstance(sch, gen.VariancePreserving) else type(sch).__name__
        self.mg = self.path.marginal(target)
        self.t0 = t_start(self.path) if t0 is None else t0
        self.n = n
        self.batches = batches
        self.x0 = self.mg.sample(n, self.t0, generator=torch.Generator().manual_seed(seed))
        t = time.time()
        sol = sf.solve(gen.ProbabilityFlowODE(self.path, self.mg.velocity), self.x0,
                       (self.t0, T_END), rtol=rtol, atol=rtol)
        self.ref_info = (f"dopri5 rtol=atol={rtol:g}, {sol.stats['nfe']} NFE, "
                         f"{time.time() - t:.0f} s")
        d = target.dim
        dirs = torch.randn(d, N_DIRS, generator=torch.Generator().manual_seed(dir_seed),
                           dtype=F64)
        self.dirs = dirs / dirs.norm(dim=0, keepdim=True)
        self.set_ref(sol.ys[-1])

    def set_ref(self, ref: torch.Tensor) -> None:
        """Score against ``ref`` (the exact solution from ``x0``) from now on."""
        self.ref = ref
        p = ref @ self.dirs
        k = self.batches
        self.ref_full = torch.sort(p, dim=0)[0]
        self.ref_b = [torch.sort(p[b::k], dim=0)[0] for b in range(k)]

    def score(self, out: torch.Tensor, nfe: int) -> Score:
        p = out @ self.dirs
        k = self.batches
        w = float((torch.sort(p, dim=0)[0] - self.ref_full).abs().mean())
        wb = torch.tensor([float((torch.sort(p[b::k], dim=0)[0] - rb).abs().mean())
                           for b, rb in enumerate(self.ref_b)], dtype=F64)
        rms = float(((out - self.ref) ** 2).sum(-1).mean().sqrt())
        return Score(w, wb, rms, nfe)

    def run(self, solver: str, grid: Any, nfe: int, kw: dict[str, Any]) -> Score:
        steps = steps_for(solver, nfe)
        g = grid(self, steps) if callable(grid) else grid
        tensor = isinstance(g, torch.Tensor)  # a tensor grid is its own span
        sol = gen.sample(self.mg.x0, self.path, self.x0, solver=solver,
                         steps=None if tensor else steps, param="x0", grid=g,
                         t_span=None if tensor else (self.t0, T_END), **kw)
        return self.score(sol.ys[-1], sol.stats["nfe"])

    def baseline(self, solver: str, steps: int) -> Score:
        sol = gen.sample(self.mg.velocity, self.path, self.x0, solver=solver, steps=steps,
                         param="velocity", grid="t", t_span=(self.t0, T_END))
        return self.score(sol.ys[-1], sol.stats["nfe"])


def diff_se(a: Score, b: Score) -> float:
    """Standard error of ``a.w - b.w`` from the paired replicate batches."""
    return float((a.wb - b.wb).std()) / math.sqrt(len(a.wb))


def reaches(s: Score, base: Score) -> bool:
    """``W1(s) <= W1(base)`` within the margin ``2 SE`` of the paired difference."""
    return s.w - base.w <= 2.0 * diff_se(s, base)


def _fmt(s: Score) -> str:
    return f"{s.w:.4f} +- {float(s.wb.std()) / math.sqrt(len(s.wb)):.1e}"


# ----- grids (callables ``(case, steps) -> tensor of times``; strings go to gen.sample)
def lam_window(lo: float, hi: float) -> Any:
    """``t0``, then ``steps - 1`` points uniform in lambda on ``[lo, hi]``, then ``T_END``: one
    first step into the window, one last step out of it."""
    def make(case: Case, steps: int) -> torch.Tensor:
        k = max(1, steps - 1)
        lv = (torch.linspace(lo, hi, k, dtype=F64) if k > 1 else
              torch.tensor([0.5 * (lo + hi)], dtype=F64))
        ts = lam_to_t(case.path, lv).tolist()
        return torch.tensor([case.t0, *ts, T_END], dtype=F64)
    make.__name__ = f"lambda[{lo:g},{hi:g}]"
    return make


def karras_rho(rho: float) -> Any:
    """Karras (EDM) spacing in ``sigma = e^{-lambda}`` with exponent ``rho``."""
    def make(case: Case, steps: int) -> torch.Tensor:
        l0, l1 = (float(v) for v in lam(case.path, torch.tensor([case.t0, T_END], dtype=F64)))
        s0, s1 = math.exp(-l0 / rho), math.exp(-l1 / rho)
        lv = torch.tensor([-rho * math.log(s0 + (s1 - s0) * i / steps)
                           for i in range(steps + 1)], dtype=F64)
        ts = lam_to_t(case.path, lv)
        ts[0], ts[-1] = case.t0, T_END
        return ts
    make.__name__ = f"karras rho={rho:g}"
    return make


def time_power(p: float) -> Any:
    """DPM-Solver's ``time_quadratic`` (``p = 2``) generalised: uniform in ``u^{1/p}`` for the
    diffusion time ``u = 1 - t``, denser toward the data end."""
    def make(case: Case, steps: int) -> torch.Tensor:
        a, b = (1.0 - case.t0) ** (1.0 / p), (1.0 - T_END) ** (1.0 / p)
        ts = [1.0 - (a + (b - a) * i / steps) ** p for i in range(steps + 1)]
        ts[0], ts[-1] = case.t0, T_END
        return torch.tensor(ts, dtype=F64)
    make.__name__ = f"time-power p={p:g}"
    return make


def gname(g: Any) -> str:
    return g if isinstance(g, str) else g.__name__


def first_reach(case: Case, solver: str, grid: Any, kw: dict[str, Any], base: Score,
                hi: int = 80) -> str:
    """Smallest NFE in [5, hi] reaching ``base`` (bisection; assumes the error decreases)."""
    if not reaches(case.run(solver, grid, hi, kw), base):
        return f">{hi}"
    lo = 4  # not reached at lo (checked by the table at 5 or assumed)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if reaches(case.run(solver, grid, mid, kw), base):
            hi = mid
        else:
            lo = mid
    return str(hi)


def reference_2m(mg: gen.ExactMarginal, path: gen.GaussianPath, x: torch.Tensor,
                 ts: list[float]) -> torch.Tensor:
    """DPM-Solver++(2M) written out (Lu et al. 2022, Algorithm 2, with the first step DDIM):
    ``x_i = (sigma_i/sigma_{i-1}) x_{i-1} - alpha_i (e^{-h_i} - 1) D_i``, ``D_i = (1 + 1/(2r))
    M_{i-1} - M_{i-2}/(2r)``, ``r = h_{i-1}/h_i``, ``M_j = x0_hat(x_j, t_j)``."""
    v = path.schedule(torch.tensor(ts, dtype=F64))
    a, s = v.alpha, v.beta
    lv = torch.log(a) - torch.log(s)
    prev = None
    for i in range(len(ts) - 1):
        m = mg.x0(x, torch.full((x.shape[0],), ts[i], dtype=F64))
        h = float(lv[i + 1] - lv[i])
        if prev is None:
            d = m
        else:
            r = float(lv[i] - lv[i - 1]) / h
            d = (1.0 + 0.5 / r) * m - (0.5 / r) * prev
        x = (s[i + 1] / s[i]) * x - a[i + 1] * math.expm1(-h) * d
        prev = m
    return x


def check_2m(case: Case) -> str:
    """Max abs difference between ``gen.sample(solver="dpm_solver_pp2m")`` and
    :func:`reference_2m` on 256 points, three grids, 10 and 30 steps."""
    x0 = case.x0[:256]
    worst = 0.0
    for grid in GRIDS:
        for steps in (10, 30):
            sol = gen.sample(case.mg.x0, case.path, x0, solver="dpm_solver_pp2m", steps=steps,
                             param="x0", grid=grid)
            ref = reference_2m(case.mg, case.path, x0, [float(v) for v in sol.ts])
            worst = max(worst, float((sol.ys[-1] - ref).abs().max()))
    return f"{worst:.1e}"


def table(quick: bool) -> None:
    targets: dict[str, tuple[gen.GaussianMixture, int, float]] = {
        "2D": (datasets.mixture2d(), 2000 if quick else 10000, 1e-8)}
    targets["16D"] = (mixture16(), 1000 if quick else 4000, 1e-6 if quick else 1e-8)
    n_key = 2000 if quick else N_KEY_16D
    solvers = ("ddim", "dpm_solver_pp2m", "unipc2") if quick else FEW_STEP
    nfes = (10, 20) if quick else NFES
    win = lam_window(*LAM_WINDOW)
    summary: list[str] = []
    versus: list[str] = []
    emit("## Few steps beat many: coupled sliced W1 to the exact ODE solution")
    emit("")
    emit(f"Criterion: cSW1 = sliced W1 ({N_DIRS} random directions) between the sampler's n "
         "outputs and the exact ODE solution (dopri5) from the same n points x0 ~ p_t0 "
         "(exact samples of p_{t_end}); point estimate on all n, standard error from "
         f"{BATCHES} interleaved replicate batches. A sampler *reaches* a baseline when "
         "cSW1(sampler) - cSW1(baseline) <= 2 SE of that paired difference. Baselines: "
         "Euler at 100 NFE and Heun at 20 NFE (10 steps) on the velocity PF-ODE, uniform in t. "
         f"Span t in (t0, {T_END}) with t0 = 1e-3 for CondOT, 0 for VP. Grid "
         f"'lambda[{LAM_WINDOW[0]:g},{LAM_WINDOW[1]:g}]': one step from t0 into that lambda "
         "window, uniform lambda inside, one step out to t_end.")
    emit("")
    for tname, (tgt, n, rtol) in targets.items():
        for sch in (gen.CondOT(), gen.VariancePreserving()):
            case = Case(tname, tgt, sch, n, rtol)
            eu, he = case.baseline("euler", 100), case.baseline("heun", 10)
            emit(f"### {tname} mixture, {case.pname}: n = {n}, reference {case.ref_info}; "
                 f"Euler@100 cSW1 {_fmt(eu)} (rms {eu.rms:.3g}); Heun@20 {_fmt(he)} "
                 f"(rms {he.rms:.3g}); dpm_solver_pp2m vs the written-out Algorithm 2 "
                 f"(reference_2m): max abs difference {check_2m(case)}")
            emit("")
            emit("| solver | grid | " + " | ".join(f"NFE {v}" for v in nfes) +
                 " | reach Euler@100 | reach Heun@20 |")
            emit("|---|---|" + "---|" * (len(nfes) + 2))
            rows: list[tuple[str, Any, dict[str, Any]]] = [
                (s, g, {}) for s in solvers for g in GRIDS]
            if tname == "2D":
                rows += [("dpm_solver_pp2m", g, {"variant": "taylor"}) for g in GRIDS]
            if not quick:
                rows += [("dpm_solver_pp2m", g, {"lower_final": 1}) for g in GRIDS]
            if not quick and tname == "2D":
                rows += [("dpm_solver_pp3m", g, {"lower_final": 2}) for g in GRIDS]
                rows += [("unipc2", g, {"lower_final": 1}) for g in GRIDS]
            rows += [("ddim", win, {}), ("dpm_solver_pp2m", win, {}),
                     ("dpm_solver_pp2m", win, {"lower_final": 1}),
                     ("unipc2", win, {"lower_final": 1})]
            if not quick:
                rows += [("dpm_solver2", win, {}), ("dpm_solver_pp3m", win, {"lower_final": 2})]
            for solver, grid, kw in rows:
                res = [case.run(solver, grid, v, kw) for v in nfes]
                label = solver + "".join(f" {k}={v}" for k, v in kw.items())
                cells = [f"{s.w:.4f}" + ("*" if reaches(s, eu) else "") +
                         ("+" if reaches(s, he) else "") +
                         ("" if s.nfe == v else f" [{s.nfe}]") for s, v in zip(res, nfes)]
                r_eu = next((str(s.nfe) for s in res if reaches(s, eu)), f">{nfes[-1]}")
                r_he = next((str(s.nfe) for s in res if reaches(s, he)), f">{nfes[-1]}")
                emit(f"| {label} | {gname(grid)} | " + " | ".join(cells) + f" | {r_eu} | "
                     f"{r_he} |")
            emit("")
            emit("Cells: cSW1 (SE 0.5-2% of the value in 2D, 5-20% in 16D; see the baseline "
                 "rows); `*` reaches Euler@100, `+` reaches Heun@20; [n] the actual NFE where it "
                 "differs from the column's.")
            emit("")
            winners = explore(case, eu, he, quick, small=tname != "2D")
            kc, keu, khe = case, eu, he
            if tname != "2D":  # the key numbers again on a larger sample (module docstring)
                kc = Case(tname, tgt, sch, n_key, rtol)
                keu, khe = kc.baseline("euler", 100), kc.baseline("heun", 10)
                emit(f"Key numbers of {tname} {case.pname} on n = {n_key} (reference "
                     f"{kc.ref_info}): Euler@100 cSW1 {_fmt(keu)}, Heun@20 {_fmt(khe)}; the "
                     "best 10-NFE configuration per solver above, rescored: " + "; ".join(
                         f"{label} on {gname(g)}: {_fmt(sc)}"
                         + (" (reaches Euler@100)" if reaches(sc, keu) else "")
                         + (" (reaches Heun@20)" if reaches(sc, khe) else "")
                         for label, solver, kw, g in winners
                         for sc in [kc.run(solver, g, 10, kw)]) + ".")
                emit("")
            hi = 40 if quick else 80
            fine = (first_reach(kc, "dpm_solver_pp2m", "lambda", {}, keu, hi),
                    first_reach(kc, "dpm_solver_pp2m", "lambda", {}, khe, hi))
            summary.append(f"| {tname} | {case.pname} | {kc.n} | {_fmt(keu)} | {fine[0]} | "
                           f"{_fmt(khe)} | {fine[1]} |")
            for g in ("lambda", "t", "karras", win):
                a, b = kc.run("dpm_solver_pp2m", g, 10, {}), kc.run("ddim", g, 10, {})
                versus.append(f"| {tname} | {case.pname} | {kc.n} | {gname(g)} | {_fmt(a)} | "
                              f"{_fmt(b)} | {b.w / a.w:.1f} | {(b.w - a.w) / diff_se(a, b):.0f} |")
    independent(quick)
    emit("### DPM-Solver++(2M) on the lambda-uniform grid: smallest NFE reaching the baselines")
    emit("")
    emit(f"(bisection over NFE in [5, {40 if quick else 80}] with the criterion above)")
    emit("")
    emit("| target | path | n | Euler@100 cSW1 | 2M reach NFE | Heun@20 cSW1 | 2M reach NFE |")
    emit("|---|---|---|---|---|---|---|")
    for line in summary:
        emit(line)
    emit("")
    emit("### 2M against DDIM at 10 NFE")
    emit("")
    emit("| target | path | n | grid | 2M cSW1 | DDIM cSW1 | DDIM / 2M | difference / SE |")
    emit("|---|---|---|---|---|---|---|---|")
    for line in versus:
        emit(line)
    emit("")


def reach(quick: bool) -> None:
    """Why 2D misses the acceptance reach NFE (2M lambda at <= 30 NFE on CondOT, <= 20 on VP):
    the reach NFE of the ``table`` under changes of the span, the reference, the sample and
    the criterion's batches, whether the bisection's monotone assumption holds, the published
    2M variants, and how cSW1 and the RMS coupled error fall with NFE."""
    tgt = datasets.mixture2d()
    n = 2000 if quick else 10000
    hi = 80
    emit("## Why 2D misses: checks on the 2M lambda-grid reach NFE (2D mixture)")
    emit("")
    emit(f"Reach NFE by the `table`'s bisection over [5, {hi}] and criterion; the first row of "
         f"each path is the `table`'s setting (n = {n}, x0 seed 1, direction seed 5, "
         f"{BATCHES} batches, dopri5 rtol 1e-8, t0 = `t_start`: 1e-3 CondOT, 0 VP).")
    emit("")
    emit("| path | setting | Euler@100 cSW1 | Heun@20 cSW1 | 2M reach Euler@100 | "
         "2M reach Heun@20 |")
    emit("|---|---|---|---|---|---|")
    rows: list[tuple[str, dict[str, Any]]] = [("table setting", {})]
    rows += [("t0 = 1e-3 (the issue's interval)", {"t0": 1e-3})]
    rows += [("reference dopri5 rtol 1e-12", {"rtol": 1e-12})]
    if not quick:
        rows += [("n = 4000", {"n": 4000}), ("n = 40000", {"n": 40000}),
                 ("x0 seed 2", {"seed": 2}), ("x0 seed 3", {"seed": 3}),
                 ("direction seed 6", {"dir_seed": 6}), ("16 batches", {"batches": 16}),
                 ("n = 40000, seeds 2 / 6, 16 batches",
                  {"n": 40000, "seed": 2, "dir_seed": 6, "batches": 16})]
    notes: list[str] = []
    for sch in (gen.CondOT(), gen.VariancePreserving()):
        for label, kw in rows:
            if "t0" in kw and not isinstance(sch, gen.VariancePreserving):
                continue  # CondOT's table span already starts at 1e-3
            kw = dict(kw)
            rtol = kw.pop("rtol", 1e-8)
            c = Case("2D", tgt, sch, kw.pop("n", n), 1e-8, **kw)
            if rtol != 1e-8:
                ref8 = c.ref
                sol = sf.solve(gen.ProbabilityFlowODE(c.path, c.mg.velocity), c.x0,
                               (c.t0, T_END), rtol=rtol, atol=rtol)
                c.set_ref(sol.ys[-1])
                notes.append(f"{c.pname}: the rtol 1e-8 reference differs from the rtol "
                             f"{rtol:g} one ({sol.stats['nfe']} NFE) by at most "
                             f"{float((ref8 - c.ref).abs().max()):.1e}, cSW1 "
                             f"{c.score(ref8, 0).w:.1e}")
            eu, he = c.baseline("euler", 100), c.baseline("heun", 10)
            emit(f"| {c.pname} | {label} | {_fmt(eu)} | {_fmt(he)} | "
                 f"{first_reach(c, 'dpm_solver_pp2m', 'lambda', {}, eu, hi)} | "
                 f"{first_reach(c, 'dpm_solver_pp2m', 'lambda', {}, he, hi)} |")
    emit("")
    emit("Reference: " + "; ".join(notes) + ".")
    emit("")
    lo_s, hi_s = (15, 40) if quick else (15, 70)
    emit(f"**Monotone?** 2M lambda at every NFE in [{lo_s}, {hi_s}] on the table setting: the "
         "NFE where it reaches each baseline.")
    emit("")
    emit("| path | baseline | reaches at | bisection | reached at every NFE above the first |")
    emit("|---|---|---|---|---|")
    cases = {type(sch).__name__: Case("2D", tgt, sch, n, 1e-8)
             for sch in (gen.CondOT(), gen.VariancePreserving())}
    for c in cases.values():
        for bname, base in (("Euler@100", c.baseline("euler", 100)),
                            ("Heun@20", c.baseline("heun", 10))):
            ok = [v for v in range(lo_s, hi_s + 1)
                  if reaches(c.run("dpm_solver_pp2m", "lambda", v, {}), base)]
            mono = "-" if not ok else "yes" if ok == list(range(ok[0], hi_s + 1)) else "no"
            emit(f"| {c.pname} | {bname} | {ok[0] if ok else f'>{hi_s}'} | "
                 f"{first_reach(c, 'dpm_solver_pp2m', 'lambda', {}, base, hi)} | {mono} |")
    emit("")
    emit("**Published 2M details** (table setting; cSW1 at 20 and 30 NFE, reach NFE). "
         "`variant=taylor` is diffusers' `solver_type=\"heun\"`; the default is Algorithm 2 "
         "(diffusers' `midpoint`); `lower_final=1` is diffusers' `lower_order_final` (which "
         "diffusers applies only below 15 steps). The eps form is DPM-Solver-2M (noise "
         "prediction), not DPM-Solver++, shown for comparison only.")
    emit("")
    emit("| path | 2M | cSW1@20 | cSW1@30 | reach Euler@100 | reach Heun@20 |")
    emit("|---|---|---|---|---|---|")
    variants: list[tuple[str, dict[str, Any]]] = [
        ("Algorithm 2 (midpoint)", {}), ("variant=taylor", {"variant": "taylor"}),
        ("lower_final=1", {"lower_final": 1}),
        ("variant=taylor, lower_final=1", {"variant": "taylor", "lower_final": 1}),
        ("eps form (DPM-Solver-2M, not ++)", {"form": "eps"})]
    for c in cases.values():
        eu, he = c.baseline("euler", 100), c.baseline("heun", 10)
        for label, kw in variants:
            a, b = (c.run("dpm_solver_pp2m", "lambda", v, kw) for v in (20, 30))
            emit(f"| {c.pname} | {label} | {_fmt(a)} | {_fmt(b)} | "
                 f"{first_reach(c, 'dpm_solver_pp2m', 'lambda', kw, eu, hi)} | "
                 f"{first_reach(c, 'dpm_solver_pp2m', 'lambda', kw, he, hi)} |")
    emit("")
    nfes = (10, 20, 30, 50, 100, 200)
    emit("**Convergence** (table setting): cSW1 / RMS coupled error against NFE.")
    emit("")
    emit("| path | sampler | " + " | ".join(f"NFE {v}" for v in nfes) + " |")
    emit("|---|---|" + "---|" * len(nfes))
    for c in cases.values():
        for label, fn in (
                ("euler, t", lambda v, c=c: c.baseline("euler", v)),
                ("heun, t", lambda v, c=c: c.baseline("heun", v // 2)),
                ("dpm_solver_pp2m, lambda",
                 lambda v, c=c: c.run("dpm_solver_pp2m", "lambda", v, {}))):
            emit(f"| {c.pname} | {label} | " + " | ".join(
                f"{s.w:.4f} / {s.rms:.4f}" for s in (fn(v) for v in nfes)) + " |")
    emit("")


def independent(quick: bool) -> None:
    """The same samplers scored the usual way: sliced W1 to an independent exact sample, with
    the exact-vs-exact null computed identically (2D, n = 200000, 64 directions)."""
    n = 20000 if quick else 200000
    dirs = torch.randn(2, 64, generator=torch.Generator().manual_seed(5), dtype=F64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    win = lam_window(*LAM_WINDOW)
    emit(f"### Check: sliced W1 to an independent exact sample (2D, n = {n}, 64 directions)")
    emit("")
    emit("| path | null (exact vs exact, 4 pairs) | Euler@100 | Heun@20 | 2M lambda@10 | "
         "2M lambda@20 | 2M lambda@30 | 2M lambda@50 | DDIM lambda@10 | "
         f"unipc2 lower_final=1 {gname(win)}@10 |")
    emit("|---|---|---|---|---|---|---|---|---|---|")
    for sch in (gen.CondOT(), gen.VariancePreserving()):
        path = gen.GaussianPath(sch)
        mg = path.marginal(datasets.mixture2d())
        t0 = t_start(path)
        x0 = mg.sample(n, t0, generator=torch.Generator().manual_seed(1))
        y = mg.sample(n, T_END, generator=torch.Generator().manual_seed(2))
        null = torch.tensor([sliced_w1(mg.sample(n, T_END, generator=torch.Generator()
                                                 .manual_seed(10 + r)), y, dirs)
                             for r in range(4)])
        cells = [f"{float(null.mean()):.4f} +- {float(null.std()):.4f}"]
        for solver, steps in (("euler", 100), ("heun", 10)):
            out = gen.sample(mg.velocity, path, x0, solver=solver, steps=steps,
                             param="velocity", grid="t").ys[-1]
            cells.append(f"{sliced_w1(out, y, dirs):.4f}")
        fake = Case.__new__(Case)
        fake.path, fake.t0 = path, t0
        for solver, grid, steps, kw in (
                ("dpm_solver_pp2m", "lambda", 10, {}), ("dpm_solver_pp2m", "lambda", 20, {}),
                ("dpm_solver_pp2m", "lambda", 30, {}), ("dpm_solver_pp2m", "lambda", 50, {}),
                ("ddim", "lambda", 10, {}), ("unipc2", win(fake, 10), None,
                                             {"lower_final": 1})):
            out = gen.sample(mg.x0, path, x0, solver=solver, steps=steps, param="x0",
                             grid=grid, **kw).ys[-1]
            cells.append(f"{sliced_w1(out, y, dirs):.4f}")
        emit(f"| {'VP' if t0 == 0.0 else 'CondOT'} | " + " | ".join(cells) + " |")
    emit("")


def explore(case: Case, eu: Score, he: Score, quick: bool, small: bool
            ) -> list[tuple[str, str, dict[str, Any], Any]]:
    """The 10-NFE goal: every grid family x the multistep/singlestep solvers at 10 NFE
    (``small``: a reduced set, for the 16-D mixture)."""
    if small and not quick:
        grids: list[Any] = ["lambda", "t", "karras", karras_rho(3.0), time_power(2.0)]
        grids += [lam_window(lo, hi) for lo in (-3.0, -2.0, -1.0) for hi in (1.0, 2.0, 3.0)]
        cfgs = [("dpm_solver_pp2m", {}), ("dpm_solver_pp2m", {"lower_final": 1}),
                ("dpm_solver_pp3m", {"lower_final": 2}), ("unipc2", {"lower_final": 1}),
                ("dpm_solver2", {})]
    elif quick:
        grids = ["lambda", "t", lam_window(-2.0, 2.0), lam_window(-3.0, 3.0)]
        cfgs = [("dpm_solver_pp2m", {}), ("dpm_solver_pp2m", {"lower_final": 1})]
    else:
        grids = ["lambda", "t", "karras"]
        grids += [karras_rho(r) for r in (1.0, 2.0, 3.0, 5.0, 12.0, 20.0)]
        grids += [time_power(p) for p in (1.5, 2.0, 3.0)]
        grids += [lam_window(lo, hi) for lo in (-4.0, -3.0, -2.0, -1.5, -1.0)
                  for hi in (1.0, 1.5, 2.0, 3.0, 4.0)]
        cfgs = [("ddim", {}), ("dpm_solver_pp2m", {}), ("dpm_solver_pp2m", {"lower_final": 1}),
                ("dpm_solver_pp2m", {"lower_final": 2}), ("dpm_solver_pp3m", {"lower_final": 2}),
                ("unipc2", {}), ("unipc2", {"lower_final": 1}), ("unipc3", {"lower_final": 1}),
                ("dpm_solver2", {}), ("dpm_solver3", {})]
    best: list[tuple[str, Score, str, Score]] = []
    winners: list[tuple[str, str, dict[str, Any], Any]] = []
    hits: list[tuple[float, str]] = []
    for solver, kw in cfgs:
        label = solver + "".join(f" {k}={v}" for k, v in kw.items())
        scored = [(case.run(solver, g, 10, kw), g) for g in grids]
        scored.sort(key=lambda r: r[0].w)
        winners.append((label, solver, kw, scored[0][1]))
        res = [(sc, gname(g)) for sc, g in scored]
        best.append((label, res[0][0], res[0][1], next(s for s, g in res if g == "lambda")))
        hits += [(s.w, f"{label} on {g} ({s.nfe} NFE): {_fmt(s)}") for s, g in res
                 if reaches(s, eu)]
    out = [f"### 10-NFE goal, {case.tname} {case.pname}: best of {len(grids)} grids per solver "
           f"(Euler@100 {eu.w:.4f}, Heun@20 {he.w:.4f})", "",
           "| solver | best grid | cSW1 at 10 NFE | reaches Euler@100 | reaches Heun@20 | on "
           "lambda |", "|---|---|---|---|---|---|"]
    for label, s, g, s_lam in best:
        out.append(f"| {label} | {g} | {_fmt(s)} [{s.nfe}] | {'yes' if reaches(s, eu) else 'no'}"
                   f" | {'yes' if reaches(s, he) else 'no'} | {s_lam.w:.4f} |")
    out += ["", f"Reaching Euler@100 at 10 NFE ({len(hits)} configurations"
            + (", best 8" if len(hits) > 8 else "") + "): "
            + ("; ".join(h for _, h in sorted(hits)[:8]) if hits else "none") + ".", ""]
    for line in out:
        emit(line)
    return winners


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


SECTIONS = ("orders", "table", "reach", "peers", "sde")


def _marks(name: str) -> tuple[str, str]:
    return f"<!-- fewstep.py {name} -->", f"<!-- /fewstep.py {name} -->"


def write_sections(path: str, blocks: dict[str, list[str]]) -> None:
    """Replace each produced section of ``path`` between its markers, keeping the others and
    everything above the first section (the hand-written summary); sections are written in
    ``SECTIONS`` order. Markers count only as whole lines, so the summary may name them."""
    try:
        text = open(path).read()
    except FileNotFoundError:
        text = ""
    old: dict[str, str] = {}
    starts = []
    for name in SECTIONS:
        a, b = (re.escape(m) for m in _marks(name))
        hit = re.search(rf"^{a}$\n?(.*?)^{b}$", text, flags=re.M | re.S)
        if hit:
            old[name] = hit.group(1).strip("\n")
            starts.append(hit.start())
    head = text[:min(starts)] if starts else (
        "# Few-step samplers: measured (bench/generative/fewstep.py, CPU, float64, one "
        "thread)\n\n")
    parts = [head.rstrip("\n") + "\n"]
    for name in SECTIONS:
        body = "\n".join(blocks[name]).strip("\n") if name in blocks else old.get(name)
        if body is not None:
            a, b = _marks(name)
            parts.append(f"{a}\n{body}\n{b}\n")
    with open(path, "w") as fh:
        fh.write("\n".join(parts))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", nargs="?", default="all", choices=(*SECTIONS, "all"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None,
                    help="markdown file whose sections (between '<!-- fewstep.py NAME -->' "
                         "markers) are replaced by this run's")
    a = ap.parse_args()
    torch.set_num_threads(1)
    blocks: dict[str, list[str]] = {}
    for name, fn in (("orders", orders), ("table", table), ("reach", reach), ("peers", peers),
                     ("sde", sde)):
        if a.what in (name, "all"):
            t, k = time.time(), len(OUT)
            fn(a.quick)
            emit(f"({name}: ran in {time.time() - t:.0f} s{', --quick' if a.quick else ''})")
            emit("")
            blocks[name] = OUT[k:]
    if a.out:
        write_sections(a.out, blocks)


if __name__ == "__main__":
    sys.exit(main())
