"""Memory and time of one training step per gradient strategy (issue 11).

Each configuration runs in its own subprocess (``--case NAME``): it builds the model, records
the resident-set size, takes one warm-up step and ``--reps`` timed steps (loss = mean of the
final state squared, then ``backward``) and reports the peak RSS above that baseline
(``ru_maxrss``, the baseline taken after a batch-8 step so that one-time allocations do not
count), the peak of live tensor bytes in one more step (torch's allocation events, through the
profiler: the algorithm's own memory, free of the C allocator's fragmentation) and the median
step time (CPU and wall). The driver prints a markdown table and writes it
to ``bench/gradients/results.md`` (``--out``).

Neural ODE (the issue's case): rk4, 200 steps over [0, 1], batch 1,024, MLP d -> 256 -> 256 -> d
(tanh), d = 16. Neural SDE: the same sizes, Stratonovich diagonal noise (drift and diffusion
MLPs), 200 steps; sdeflow's noise from ``seed=0`` (``--brownian tree|path``: a user's
BrownianTree / BrownianPath instead), torchsde's from a BrownianInterval. Torch runs on one
thread.

    python bench/gradients/run.py [--quick] [--reps 3] [--out bench/gradients/results.md]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

BROWNIAN = "seed"  # sdeflow's noise source in the SDE cases (--brownian)
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

ODE_CASES = ["sdeflow backprop", "sdeflow checkpoint", "sdeflow backsolve",
             "torchdiffeq odeint", "torchdiffeq odeint_adjoint"]
SDE_CASES = ["sdeflow backprop", "sdeflow checkpoint", "sdeflow backsolve",
             "sdeflow reversible", "torchsde sdeint", "torchsde sdeint_adjoint",
             "torchsde sdeint_adjoint reversible_heun"]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(kind: str, case: str, batch: int, width: int, steps: int, reps: int, d: int
           ) -> dict[str, float]:
    import torch
    from torch import nn

    torch.set_num_threads(1)
    torch.manual_seed(0)
    import sdeflow as sf

    def mlp(last: nn.Module | None = None) -> nn.Sequential:
        layers: list[nn.Module] = [nn.Linear(d, width), nn.Tanh(), nn.Linear(width, width),
                                   nn.Tanh(), nn.Linear(width, d)]
        return nn.Sequential(*layers, *([last] if last is not None else []))

    x_full = torch.randn(batch, d)
    if kind == "ode":
        class Field(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = mlp()

            def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
                return self.net(x)

        model = Field()

        def step(x0: torch.Tensor) -> torch.Tensor:
            if case.startswith("sdeflow"):
                mode = case.split()[1]
                sol = sf.solve(model, x0, t_span=(0.0, 1.0), solver="rk4", steps=steps,
                               adjoint=mode)
                return sol.ys[-1]
            import torchdiffeq

            fn = torchdiffeq.odeint_adjoint if case.endswith("adjoint") else torchdiffeq.odeint
            t = torch.tensor([0.0, 1.0])
            return fn(model, x0, t, method="rk4", options={"step_size": 1.0 / steps})[-1]
    else:
        class NSDE(nn.Module):
            noise_type, sde_type = "diagonal", "stratonovich"

            def __init__(self) -> None:
                super().__init__()
                self.fnet, self.gnet = mlp(), mlp(nn.Sigmoid())

            def f(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
                return self.fnet(x)

            def g(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
                return 0.1 * self.gnet(x)

        model = NSDE()
        problem = sf.SDE(model.f, model.g, noise="diagonal", kind="stratonovich")
        dt = 1.0 / steps

        def step(x0: torch.Tensor) -> torch.Tensor:
            b = x0.shape[0]
            if case.startswith("sdeflow"):
                mode = case.split()[1]
                solver = "reversible_heun" if mode == "reversible" else "stochastic_heun"
                # seed= (no Brownian object: what a user who passes none gets), or the
                # user's BrownianTree / BrownianPath (--brownian)
                noise = (dict(seed=0) if BROWNIAN == "seed" else dict(
                    brownian=(sf.BrownianTree if BROWNIAN == "tree" else sf.BrownianPath)(
                        (b, d), 0.0, 1.0, seed=0)))
                params = None if mode == "backprop" else list(model.parameters())
                sol = sf.solve(problem, x0, t_span=(0.0, 1.0), solver=solver, steps=steps,
                               adjoint=mode, adjoint_params=params, **noise)
                return sol.ys[-1]
            import torchsde

            ts = torch.tensor([0.0, 1.0])
            bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(b, d))
            if case == "torchsde sdeint":
                return torchsde.sdeint(model, x0, ts, bm=bm, method="heun", dt=dt)[-1]
            if case.endswith("reversible_heun"):
                return torchsde.sdeint_adjoint(model, x0, ts, bm=bm, method="reversible_heun",
                                               adjoint_method="adjoint_reversible_heun",
                                               dt=dt)[-1]
            return torchsde.sdeint_adjoint(model, x0, ts, bm=bm, method="midpoint", dt=dt)[-1]

    def train_step(x0: torch.Tensor) -> tuple[float, float]:
        t, c = time.perf_counter(), time.process_time()
        model.zero_grad(set_to_none=True)
        loss = step(x0).pow(2).mean()
        loss.backward()
        return time.perf_counter() - t, time.process_time() - c

    import torchdiffeq  # noqa: F401  (imports before the baseline)
    import torchsde  # noqa: F401

    train_step(x_full[:8])  # a batch-8 step: one-time allocations (autograd engine, code
    base = _rss_mb()        # paths) fall below the baseline
    train_step(x_full)  # warm-up (its peak counts: the allocator keeps what it reached)
    times = [train_step(x_full) for _ in range(reps)]
    peak = _rss_mb()
    return {"peak_mb": max(0.0, peak - base),
            "time_s": statistics.median(t for t, _ in times),
            "cpu_s": statistics.median(c for _, c in times),
            "alloc_mb": _alloc_peak_mb(lambda: train_step(x_full))}


def _alloc_peak_mb(fn: object) -> float:
    """The peak of live tensor bytes during ``fn()`` (torch's allocation events, recorded by
    the profiler): the algorithm's memory, without the C allocator's fragmentation."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()  # type: ignore[operator]
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = top = 0
    for e in events:
        live += e.nbytes()
        top = max(top, live)
    return top / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case")
    ap.add_argument("--kind", default="ode")
    ap.add_argument("--quick", action="store_true", help="batch 256, 50 steps")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results.md"))
    ap.add_argument("--brownian", default="seed", choices=["tree", "path", "seed"],
                    help="sdeflow's noise in the SDE cases: seed= (default), a BrownianTree, a "
                         "BrownianPath")
    a = ap.parse_args()
    global BROWNIAN
    BROWNIAN = a.brownian
    batch, width, steps, d = (256, 256, 50, 16) if a.quick else (1024, 256, 200, 16)
    if a.case:
        r = worker(a.kind, a.case, batch, width, steps, a.reps, d)
        print(json.dumps(r))
        return
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    lines = [f"Batch {batch}, width {width}, {steps} steps, d = {d}; one thread; peak RSS "
             f"above the baseline taken after a batch-8 step; median of {a.reps} training "
             f"steps (CPU time of the process, which on a shared machine estimates the "
             f"uncontended wall time, and wall time); sdeflow's SDE noise: {a.brownian}.",
             ""]
    for kind, cases in (("ode", ODE_CASES), ("sde", SDE_CASES)):
        title = "Neural ODE (rk4)" if kind == "ode" else "Neural SDE (Stratonovich, diagonal)"
        lines += [f"### {title}", "", "| strategy | peak RSS (MB) | peak tensors (MB) | "
                  "CPU s / step | wall s / step |", "|---|---:|---:|---:|---:|"]
        for case in cases:
            cmd = [sys.executable, __file__, "--case", case, "--kind", kind, "--reps",
                   str(a.reps), "--brownian", a.brownian] + (["--quick"] if a.quick else [])
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if out.returncode != 0:
                lines.append(f"| {case} | failed | {out.stderr.strip().splitlines()[-1]} | | "
                             f"|")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            lines.append(f"| {case} | {r['peak_mb']:.0f} | {r['alloc_mb']:.1f} | "
                         f"{r['cpu_s']:.2f} | {r['time_s']:.2f} |")
            print(lines[-1], flush=True)
        lines.append("")
    text = "\n".join(lines)
    print(text)
    Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
