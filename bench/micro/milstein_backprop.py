"""Backprop through ``Milstein(derivative="autograd")``: time per step against the number of steps.

    python bench/micro/milstein_backprop.py            # n = 100, 200, 400, 800 steps
    python bench/micro/milstein_backprop.py --quick    # n = 50, 100, 200

A small neural diagonal SDE (d = 4, batch 16, width 32, float64, 1 thread) is solved with
``steps=n`` from an ``x0`` that requires grad, and ``backward`` is called on the final state's
sum. The forward and the backward are timed separately (medians over ``--rounds`` runs, the step
counts interleaved so load drifts hit all alike) and divided by ``n``: constant per-step times
mean linear cost in ``n``. Before the fix each step's ``J_g g`` product ran ``autograd.grad``
from a graph holding every step so far, so the forward time per step grew like ``n``
(docs/math.md §6.2). No timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import sdeflow as sf

F64 = torch.float64


class Neural(nn.Module):
    def __init__(self, d: int = 4, width: int = 32) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.f = nn.Sequential(nn.Linear(d, width), nn.Tanh(), nn.Linear(width, d)).to(F64)
        self.g = nn.Sequential(nn.Linear(d, width), nn.Tanh(), nn.Linear(width, d),
                               nn.Sigmoid()).to(F64)

    def sde(self) -> sf.SDE:
        return sf.SDE(lambda t, x: self.f(x), lambda t, x: 0.2 * self.g(x), noise="diagonal")


def run(model: Neural, n: int, batch: int) -> tuple[float, float]:
    x0 = torch.full((batch, 4), 0.1, dtype=F64, requires_grad=True)
    solver = sf.solvers.Milstein(derivative="autograd")
    t = time.perf_counter()
    sol = sf.solve(model.sde(), x0, (0.0, 1.0), solver=solver, steps=n, seed=0)
    t_fwd = time.perf_counter() - t
    t = time.perf_counter()
    sol.x_final.sum().backward()
    t_bwd = time.perf_counter() - t
    return t_fwd, t_bwd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ns = (50, 100, 200) if a.quick else (100, 200, 400, 800)
    model = Neural()
    run(model, 10, a.batch)  # warm-up
    fwd: dict[int, list[float]] = {n: [] for n in ns}
    bwd: dict[int, list[float]] = {n: [] for n in ns}
    for _ in range(a.rounds):
        for n in ns:
            tf, tb = run(model, n, a.batch)
            fwd[n].append(tf)
            bwd[n].append(tb)
    print(f"Milstein(derivative='autograd') backprop, batch {a.batch}, d 4, float64, "
          f"{a.threads} thread(s), median of {a.rounds}")
    print(f"{'n':>6} {'forward ms/step':>16} {'backward ms/step':>17} {'total ms/step':>14}")
    for n in ns:
        f, b = statistics.median(fwd[n]) / n, statistics.median(bwd[n]) / n
        print(f"{n:>6} {1e3 * f:>16.3f} {1e3 * b:>17.3f} {1e3 * (f + b):>14.3f}")


if __name__ == "__main__":
    main()
