"""Stiff solvers and events: work, accuracy and wall time against scipy's Radau (and diffrax's
Kvaerno5 when jax + diffrax import).

    PYTHONPATH=. python bench/stiff/bench_stiff.py [--quick] [--out bench/stiff/results.md]

Tables:
1. Robertson (t = 1e5) and Van der Pol (mu = 1000, t = 3000), one path, rtol 1e-6 /
   atol 1e-10: steps, f-evaluations, Jacobians, LU factorisations, relative error (against
   Radau at rtol 1e-12 / 1e-10), wall time; then issue 12's targets per sdeflow solver:
   steps against 1.3x diffrax's Kvaerno5 (the issue's 694 / 7,852 when diffrax is absent),
   f-evaluations + Jacobians against 2x scipy's Radau, error against scipy's Radau.
2. 1,000 Robertson problems (rate constants +-20%, seed 0) to t = 1e5 in one batched call
   against scipy's Radau looped over them (the loop timed on a subset and scaled; errors
   against per-problem Radau references at rtol 1e-11 on a subset).
(Events when nothing triggers: bench/stiff/bench_events.py.)
Timings are single-threaded (torch.set_num_threads(1)) on CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.integrate import solve_ivp

import sdeflow as sf

torch.set_num_threads(1)
D64 = torch.float64
RTOL, ATOL = 1e-6, 1e-10
LOOSE = 1e-4  # scipy's rtol in the equal-error comparison of the batched table
MU = 1000.0
SOLVERS = ("kvaerno5", "rodas5", "radau")
#: diffrax Kvaerno5's steps in issue 12, used when jax/diffrax do not import
DIFFRAX_STEPS = {"robertson_1e5": 694, "vdp_mu1000": 7852}


# ------------------------------------------------------------------------------- problems
def rob_np(k: tuple[float, float, float]) -> tuple[Callable, Callable]:
    k1, k2, k3 = k

    def f(t, y):
        return [-k1 * y[0] + k3 * y[1] * y[2], k1 * y[0] - k3 * y[1] * y[2] - k2 * y[1] ** 2,
                k2 * y[1] ** 2]

    def jac(t, y):
        return [[-k1, k3 * y[2], k3 * y[1]], [k1, -k3 * y[2] - 2 * k2 * y[1], -k3 * y[1]],
                [0.0, 2 * k2 * y[1], 0.0]]

    return f, jac


def rob_torch(k: torch.Tensor) -> sf.ODE:
    def u(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        k1, k2, k3 = k[..., 0], k[..., 1], k[..., 2]
        y1, y2, y3 = x[..., 0], x[..., 1], x[..., 2]
        return torch.stack([-k1 * y1 + k3 * y2 * y3, k1 * y1 - k3 * y2 * y3 - k2 * y2**2,
                            k2 * y2**2], -1)
    return sf.ODE(u)


def vdp_np() -> tuple[Callable, Callable]:
    return (lambda t, y: [y[1], MU * (1 - y[0] ** 2) * y[1] - y[0]],
            lambda t, y: [[0.0, 1.0], [-2 * MU * y[0] * y[1] - 1, MU * (1 - y[0] ** 2)]])


def vdp_torch() -> sf.ODE:
    return sf.ODE(lambda t, x: torch.stack(
        [x[..., 1], MU * (1 - x[..., 0] ** 2) * x[..., 1] - x[..., 0]], -1))


K0 = (0.04, 3e7, 1e4)
CASES = {
    "robertson_1e5": dict(np=lambda: rob_np(K0),
                          torch=lambda: rob_torch(torch.tensor(K0, dtype=D64)),
                          y0=[1.0, 0.0, 0.0], t1=1e5, ref_rtol=1e-12, rel="componentwise"),
    "vdp_mu1000": dict(np=vdp_np, torch=vdp_torch, y0=[2.0, 0.0], t1=3000.0, ref_rtol=1e-10,
                       rel="normwise"),
}


def rel_error(y: np.ndarray, ref: np.ndarray, mode: str) -> float:
    if mode == "componentwise":
        return float(np.max(np.abs(y - ref) / np.abs(ref)))
    return float(np.max(np.abs(y - ref)) / np.max(np.abs(ref)))


# ---------------------------------------------------------------------------------- table 1
def single(quick: bool) -> list[dict[str, Any]]:
    rows = []
    for case, c in CASES.items():
        f, jac = c["np"]()
        ref = solve_ivp(f, (0, c["t1"]), c["y0"], method="Radau", rtol=c["ref_rtol"],
                        atol=1e-20 if case.startswith("rob") else 1e-12, jac=jac).y[:, -1]
        t0 = time.perf_counter()
        s = solve_ivp(f, (0, c["t1"]), c["y0"], method="Radau", rtol=RTOL, atol=ATOL, jac=jac)
        wall = time.perf_counter() - t0
        rows.append(dict(problem=case, solver="scipy Radau", steps=s.t.size - 1, nfe=s.nfev,
                         njac=s.njev, nlu=s.nlu, err=rel_error(s.y[:, -1], ref, c["rel"]),
                         wall=wall))
        x0 = torch.tensor(c["y0"], dtype=D64)
        for name in SOLVERS:
            ode = c["torch"]()
            sf.solve(ode, x0, (0.0, c["t1"] * 1e-3), solver=name, rtol=RTOL, atol=ATOL)  # warm-up
            t0 = time.perf_counter()
            sol = sf.solve(ode, x0, (0.0, c["t1"]), solver=name, rtol=RTOL, atol=ATOL,
                           max_steps=200_000)
            wall = time.perf_counter() - t0
            st = sol.stats
            rows.append(dict(problem=case, solver=name, steps=st["steps"], nfe=st["nfe"],
                             njac=st["njac"], nlu=st["nlu"],
                             err=rel_error(sol.x_final.numpy(), ref, c["rel"]), wall=wall))
        rows.extend(diffrax_rows(case, c, ref))
    return rows


def diffrax_rows(case: str, c: dict[str, Any], ref: np.ndarray) -> list[dict[str, Any]]:
    try:
        import diffrax
        import jax
        import jax.numpy as jnp
    except ImportError:
        return []
    jax.config.update("jax_enable_x64", True)
    if case.startswith("rob"):
        def vf(t, y, args):
            k1, k2, k3 = K0
            return jnp.stack([-k1 * y[0] + k3 * y[1] * y[2],
                              k1 * y[0] - k3 * y[1] * y[2] - k2 * y[1] ** 2, k2 * y[1] ** 2])
    else:
        def vf(t, y, args):
            return jnp.stack([y[1], MU * (1 - y[0] ** 2) * y[1] - y[0]])
    term = diffrax.ODETerm(vf)
    ctrl = diffrax.PIDController(rtol=RTOL, atol=ATOL)

    def run() -> Any:
        return diffrax.diffeqsolve(term, diffrax.Kvaerno5(), 0.0, c["t1"], None,
                                   jnp.array(c["y0"]), stepsize_controller=ctrl,
                                   max_steps=200_000)
    run()  # compile
    t0 = time.perf_counter()
    s = run()
    jax.block_until_ready(s.ys)
    wall = time.perf_counter() - t0
    st = s.stats
    return [dict(problem=case, solver="diffrax Kvaerno5", steps=int(st["num_steps"]),
                 nfe=-1, njac=-1, nlu=-1, err=rel_error(np.asarray(s.ys[-1]), ref, c["rel"]),
                 wall=wall)]


# ---------------------------------------------------------------------------------- table 2
def batched(quick: bool) -> dict[str, Any]:
    n = 200 if quick else 1000
    g = torch.Generator().manual_seed(0)
    k = torch.tensor(K0, dtype=D64) * (1 + 0.4 * (torch.rand(n, 3, generator=g, dtype=D64)
                                                  - 0.5))
    x0 = torch.tensor([[1.0, 0.0, 0.0]] * n, dtype=D64)
    t1 = 1e5
    out: dict[str, Any] = dict(n=n)
    ode = rob_torch(k)
    sf.solve(ode, x0, (0.0, 1.0), solver="kvaerno5", rtol=RTOL, atol=ATOL)
    for name in SOLVERS:
        t0 = time.perf_counter()
        sol = sf.solve(ode, x0, (0.0, t1), solver=name, rtol=RTOL, atol=ATOL)
        out[name] = dict(wall=time.perf_counter() - t0, steps=sol.stats["steps"],
                         x=sol.x_final.numpy())
    sub = list(range(0, n, n // 10))
    t0 = time.perf_counter()
    loop_x = {}
    for i in sub:
        f, jac = rob_np(tuple(k[i].tolist()))
        loop_x[i] = solve_ivp(f, (0, t1), [1.0, 0.0, 0.0], method="Radau", rtol=RTOL,
                              atol=ATOL, jac=jac).y[:, -1]
    out["scipy_wall"] = (time.perf_counter() - t0) * n / len(sub)
    # scipy at a looser tolerance, whose error matches the batched solves' (equal error)
    t0 = time.perf_counter()
    loose_x = {}
    for i in sub:
        f, jac = rob_np(tuple(k[i].tolist()))
        loose_x[i] = solve_ivp(f, (0, t1), [1.0, 0.0, 0.0], method="Radau", rtol=LOOSE,
                               atol=ATOL, jac=jac).y[:, -1]
    out["scipy_loose_wall"] = (time.perf_counter() - t0) * n / len(sub)
    errs: dict[str, list[float]] = {"scipy": [], "scipy_loose": [],
                                    **{name: [] for name in SOLVERS}}
    for i in sub[:5]:
        f, jac = rob_np(tuple(k[i].tolist()))
        ref = solve_ivp(f, (0, t1), [1.0, 0.0, 0.0], method="Radau", rtol=1e-11, atol=1e-20,
                        jac=jac).y[:, -1]
        errs["scipy"].append(rel_error(loop_x[i], ref, "componentwise"))
        errs["scipy_loose"].append(rel_error(loose_x[i], ref, "componentwise"))
        for name in SOLVERS:
            errs[name].append(rel_error(out[name]["x"][i], ref, "componentwise"))
    out["err"] = {kk: max(v) for kk, v in errs.items()}
    return out


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """Issue 12's targets for each sdeflow solver: steps <= 1.3x diffrax Kvaerno5's,
    f-evaluations + Jacobians <= 2x scipy Radau's, error <= scipy Radau's."""
    out = ["", "Targets (issue 12): steps <= 1.3x diffrax Kvaerno5, f-evals + Jacobians <= 2x "
           "scipy Radau, error <= scipy Radau (ratios; ok when <= 1):", "",
           "| problem | solver | steps / 1.3x diffrax | (f + J) / 2x Radau | error / Radau's "
           "| all three |", "|---|---|---|---|---|---|"]
    for case in CASES:
        mine = {r["solver"]: r for r in rows if r["problem"] == case}
        sp = mine["scipy Radau"]
        dfx = mine.get("diffrax Kvaerno5")
        dsteps, src = (dfx["steps"], "") if dfx else (DIFFRAX_STEPS[case], " (issue's)")
        for name in SOLVERS:
            r = mine[name]
            work, budget = r["nfe"] + r["njac"], 2 * (sp["nfe"] + sp["njac"])
            q = (r["steps"] / (1.3 * dsteps), work / budget, r["err"] / sp["err"])
            ok = "yes" if all(v <= 1.0 for v in q) else "no"
            out.append(f"| {case} | {name} | {r['steps']}/{1.3 * dsteps:.0f}{src} = {q[0]:.2f} | "
                       f"{work}/{budget} = {q[1]:.2f} | "
                       f"{r['err']:.2e}/{sp['err']:.2e} = {q[2]:.2f} | {ok} |")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    lines = ["| problem | solver | steps | f-evals | Jacobians | LU | rel. error | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    rows = single(a.quick)
    for r in rows:
        lines.append(f"| {r['problem']} | {r['solver']} | {r['steps']} | "
                     f"{r['nfe'] if r['nfe'] >= 0 else '-'} | "
                     f"{r['njac'] if r['njac'] >= 0 else '-'} | "
                     f"{r['nlu'] if r['nlu'] >= 0 else '-'} | {r['err']:.2e} | {r['wall']:.3f} |")
    lines += targets(rows)
    b = batched(a.quick)
    lines += ["", f"Batched Robertson, {b['n']} problems to t = 1e5 (rtol 1e-6, atol 1e-10):", "",
              "| method | wall s | speed-up vs scipy loop | max rel. error (5 problems) |",
              "|---|---|---|---|",
              f"| scipy Radau, looped (scaled from {b['n'] // 10 if b['n'] >= 10 else 1} "
              f"problems) | {b['scipy_wall']:.2f} | 1 | {b['err']['scipy']:.2e} |"]
    lines.append(f"| scipy Radau rtol {LOOSE:g}, looped | {b['scipy_loose_wall']:.2f} | "
                 f"{b['scipy_wall'] / b['scipy_loose_wall']:.1f}x | "
                 f"{b['err']['scipy_loose']:.2e} |")
    for name in SOLVERS:
        lines.append(f"| sdeflow {name}, one batched call ({b[name]['steps']} steps) | "
                     f"{b[name]['wall']:.2f} | {b['scipy_wall'] / b[name]['wall']:.1f}x | "
                     f"{b['err'][name]:.2e} |")
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
