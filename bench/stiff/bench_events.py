"""Events when nothing triggers: the wall-time overhead of ``event=`` (issue 12: at most 10%).

    PYTHONPATH=. python bench/stiff/bench_events.py [--quick] [--reps 9] [--out FILE]
        [--processes 4] [--instructions]

Six cases, each solved with and without an event that never fires; the two runs alternate
(interleaved repeats, one process, with a third run that calls the monitor on every step, as
before the look-back) and the table gives the median wall time of each, and the process's CPU
time (median and min):

1. ``batch``: 1,000 harmonic oscillators (state (1000, 2)), dopri5, rtol 1e-8 / atol 1e-10,
   t in [0, 10] (838 steps): the per-step tensor work dominates;
2. ``small``: one oscillator (state (1, 2)), dopri5, rtol 1e-12 / atol 1e-14, t in [0, 14]
   (about 1,000 steps): Python overhead dominates;
3. ``fixed``: case 1 with rk4 on 1,000 fixed steps;
4. ``sde``: first passage of 1,000 Brownian paths (state (1000, 1)) to a level they never
   reach, euler_maruyama, 2,000 fixed steps, seed 0 (an SDE's fixed-step hot path, and the
   cheapest step there is: drift zeros, diffusion ones);
5. ``sde_ou``: 1,000 Ornstein-Uhlenbeck paths (state (1000, 4)), milstein, 2,000 fixed steps,
   the same level;
6. ``sde_bridge``: case 4 with ``bridge=True`` (one gradient of ``fn`` and one uniform per path
   and step: a real cost, reported for information);
7. ``sde_big``: case 4 with 100,000 paths (state (100000, 1), 800 KB) and 200 steps: a state
   over ``sdeflow.lookback.LOOK_STATE_MAX``, so the monitor sees every step (the "every step"
   column is then the same run).

Besides the times: the paired overhead (median over repeats of event / no event of two adjacent
runs, robust to a shared machine's drifting load), the hook's own time per step inside the
solve (``Monitor.accepted`` and ``Monitor.scan``: the loop looks back over stretches of steps,
sdeflow/lookback.py), and the ATen operations per step (a load-independent count of the
work). Results:
bench/stiff/events_results.md. Timings are single-threaded (``torch.set_num_threads(1)``) on
CPU.
"""

from __future__ import annotations

import argparse
import collections
import math
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import sdeflow as sf

torch.set_num_threads(1)
D64 = torch.float64


def _oscillators(n: int) -> tuple[sf.ODE, torch.Tensor]:
    w = torch.linspace(0.5, 5.0, n, dtype=D64) if n > 1 else torch.ones(1, dtype=D64)
    ode = sf.ODE(lambda t, x: torch.stack([x[..., 1], -(w**2) * x[..., 0]], -1))
    x0 = torch.stack([torch.ones(n, dtype=D64), torch.zeros(n, dtype=D64)], -1)
    return ode, x0


def cases() -> dict[str, tuple[Callable[..., sf.Solution], sf.Event]]:
    never = sf.Event(lambda t, x: x[..., 0] - 10.0)
    big, xb = _oscillators(1000)
    small, xs = _oscillators(1)
    bm = sf.SDE(lambda t, x: torch.zeros_like(x), lambda t, x: torch.ones_like(x),
                noise="diagonal")
    xw = torch.zeros(1000, 1, dtype=D64)
    level = sf.Event(lambda t, x: x[..., 0] - 100.0, direction=1)
    bridge = sf.Event(lambda t, x: x[..., 0] - 100.0, direction=1, bridge=True)

    def batch(**kw: Any) -> sf.Solution:
        return sf.solve(big, xb, (0.0, 10.0), rtol=1e-8, atol=1e-10, **kw)

    def one(**kw: Any) -> sf.Solution:
        return sf.solve(small, xs, (0.0, 14.0), rtol=1e-12, atol=1e-14, **kw)

    def sde(**kw: Any) -> sf.Solution:
        return sf.solve(bm, xw, (0.0, 1.0), solver="euler_maruyama", steps=2000, seed=0, **kw)

    ou = sf.SDE(lambda t, x: -2.0 * (x - 0.5), lambda t, x: 0.3 * torch.ones_like(x),
                noise="diagonal")
    xo = torch.zeros(1000, 4, dtype=D64)

    def sde_ou(**kw: Any) -> sf.Solution:
        return sf.solve(ou, xo, (0.0, 1.0), solver="milstein", steps=2000, seed=0, **kw)

    def fixed(**kw: Any) -> sf.Solution:
        return sf.solve(big, xb, (0.0, 10.0), solver="rk4", steps=1000, **kw)

    xbig = torch.zeros(100_000, 1, dtype=D64)

    def sde_big(**kw: Any) -> sf.Solution:
        return sf.solve(bm, xbig, (0.0, 1.0), solver="euler_maruyama", steps=200, seed=0, **kw)

    return {"batch": (batch, never), "small": (one, never), "fixed": (fixed, never),
            "sde": (sde, level), "sde_ou": (sde_ou, level), "sde_bridge": (sde, bridge),
            "sde_big": (sde_big, level)}


class _OpCount(TorchDispatchMode):
    """Counts the ATen operations dispatched (a load-independent measure of the work)."""

    def __init__(self) -> None:
        super().__init__()
        self.count: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        self.count[str(func)] += 1
        return func(*args, **(kwargs or {}))


def ops_per_step(run: Callable[..., sf.Solution], ev: sf.Event) -> tuple[float, float]:
    """ATen operations per attempted step without and with the event."""
    out = []
    for kw in ({}, {"event": ev}):
        with _OpCount() as m:
            sol = run(**kw)
        out.append(sum(m.count.values()) / (sol.stats["accepted"] + sol.stats["rejected"]))
    return out[0], out[1]


def hook_time(run: Callable[..., sf.Solution], ev: sf.Event, reps: int) -> float:
    """Microseconds per step spent in the event monitor inside the solve (the least over
    ``reps`` solves): ``sdeflow.events.Monitor.accepted`` (a step the monitor sees) and
    ``Monitor.scan`` (a stretch looked back over) timed by wrapping them."""
    from sdeflow import events  # noqa: PLC0415

    acc = [0.0, 0]
    inner = {name: getattr(events.Monitor, name) for name in ("accepted", "scan")}

    def timed(fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: Any, *a: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(self, *a)
            finally:
                acc[0] += time.perf_counter() - t0
        return call

    best = math.inf
    for name, fn in inner.items():
        setattr(events.Monitor, name, timed(fn))
    try:
        for _ in range(reps):
            acc[0] = 0.0
            sol = run(event=ev)
            steps = sol.stats["accepted"] + sol.stats["rejected"]
            best = min(best, 1e6 * acc[0] / max(1, steps))
    finally:
        for name, fn in inner.items():
            setattr(events.Monitor, name, fn)
    return best


def _every(run: Callable[..., sf.Solution], ev: sf.Event) -> Callable[[], sf.Solution]:
    """The solve with the monitor called on every step (no look-back)."""
    from sdeflow import events  # noqa: PLC0415

    def go() -> sf.Solution:
        defer = events.Monitor.defer
        events.Monitor.defer = lambda self: False  # type: ignore[method-assign]
        try:
            return run(event=ev)
        finally:
            events.Monitor.defer = defer  # type: ignore[method-assign]
    return go


def measure(reps: int, only: list[str] | None = None) -> dict[str, dict[str, float]]:
    out = {}
    for name, (run, ev) in cases().items():
        if only and name not in only:
            continue
        run()
        run(event=ev)  # warm-up
        every = _every(run, ev)
        every()
        labels = ("plain", "event", "every")
        wall: dict[str, list[float]] = {k: [] for k in labels}
        cpu: dict[str, list[float]] = {k: [] for k in labels}
        steps = {}
        for r in range(reps):  # interleaved, alternating the order
            for label in (labels if r % 2 == 0 else labels[::-1]):
                w0, c0 = time.perf_counter(), time.process_time()
                sol = (run(event=ev) if label == "event" else every() if label == "every"
                       else run())
                wall[label].append(time.perf_counter() - w0)
                cpu[label].append(time.process_time() - c0)
                steps[label] = sol.stats["accepted"]
                if label != "plain" and not bool(torch.isnan(sol.event_t).all()):
                    raise RuntimeError(f"{name}: the event fired; the benchmark needs one "
                                       f"that never does")
        if len(set(steps.values())) != 1:
            raise RuntimeError(f"{name}: the event changed the steps {steps}")
        ops = ops_per_step(run, ev)
        hook = hook_time(run, ev, reps)
        res = {"steps": steps["plain"], "ops_plain": ops[0], "ops_event": ops[1],
               "hook_us": hook,
               # each repeat's two runs are adjacent in time: the ratio within a pair cancels
               # the slow drifts of a shared machine's load
               "pair_overhead": statistics.median(e / p for e, p in zip(wall["event"],
                                                                        wall["plain"])) - 1,
               "pair_cpu_overhead": statistics.median(
                   e / p for e, p in zip(cpu["event"], cpu["plain"])) - 1,
               # the monitor on every step (as before the look-back), in the same run
               "pair_every": statistics.median(e / p for e, p in zip(wall["every"],
                                                                     wall["plain"])) - 1}
        for kind, d, stat in (("wall", wall, statistics.median),
                              ("cpu", cpu, statistics.median), ("cpumin", cpu, min)):
            p, e = stat(d["plain"]), stat(d["event"])
            res[kind + "_plain"], res[kind + "_event"] = p, e
            res[kind + "_overhead"] = e / p - 1
            res[kind + "_per_step_us"] = 1e6 * (e - p) / max(1, steps["plain"])
        res["min_overhead"] = min(wall["event"]) / min(wall["plain"]) - 1
        out[name] = res
    return out


def table(res: dict[str, dict[str, float]], reps: int) -> str:
    lines = [f"Events when nothing triggers ({reps} interleaved repeats). Overhead: the median "
             f"over repeats of the ratio event / no event of two adjacent runs, wall time "
             f"(CPU time of the process); times: medians (CPU min).", "",
             "| case | steps | no event s | event s | overhead (paired) | overhead of medians "
             "| overhead of minima | per step (CPU min) | monitor per step (min) "
             "| ATen ops per step | monitor on every step: overhead (paired) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in res.items():
        lines.append(
            f"| {name} | {r['steps']} | {r['wall_plain']:.4f} ({r['cpumin_plain']:.4f}) | "
            f"{r['wall_event']:.4f} ({r['cpumin_event']:.4f}) | "
            f"{100 * r['pair_overhead']:+.1f}% ({100 * r['pair_cpu_overhead']:+.1f}%) | "
            f"{100 * r['wall_overhead']:+.1f}% ({100 * r['cpu_overhead']:+.1f}%) | "
            f"{100 * r['min_overhead']:+.1f}% | "
            f"{r['cpumin_per_step_us']:+.1f} us | {r['hook_us']:.1f} us | {r['ops_plain']:.1f} + "
            f"{r['ops_event'] - r['ops_plain']:.1f} | {100 * r['pair_every']:+.1f}% |")
    return "\n".join(lines)


def _child(case: str, mode: str, n: int) -> None:
    """``n`` solves of ``case`` (after one warm-up of each kind) for :func:`instructions`:
    ``plain`` (no event), ``event`` (look-back) or ``every`` (the monitor on every step)."""
    from sdeflow import events  # noqa: PLC0415

    run, ev = cases()[case]
    defer = events.Monitor.defer
    if mode == "every":
        events.Monitor.defer = lambda self: False  # type: ignore[method-assign]
    try:
        run()
        run(event=ev)
        for _ in range(n):
            if mode == "plain":
                run()
            else:
                run(event=ev)
    finally:
        events.Monitor.defer = defer  # type: ignore[method-assign]


def _child_time(case: str, mode: str, n: int) -> None:
    """Print the least CPU time of ``n`` solves (after two warm-ups) in this process."""
    from sdeflow import events  # noqa: PLC0415

    run, ev = cases()[case]
    if mode == "every":
        events.Monitor.defer = lambda self: False  # type: ignore[method-assign]

    def go() -> sf.Solution:
        return run() if mode == "plain" else run(event=ev)

    go()
    go()
    best = math.inf
    for _ in range(n):
        c0 = time.process_time()
        go()
        best = min(best, time.process_time() - c0)
    print(f"{best:.6f}")


def processes(only: list[str] | None, pairs: int, n: int = 12) -> str:
    """Fresh processes in turn (no event, look-back, every step), ``pairs`` of each per case:
    the mean over processes of each one's least CPU time of ``n`` solves. Within one process
    the solves' memory history differs between the kinds of run; fresh processes avoid it."""
    import subprocess  # noqa: PLC0415

    lines = ["| case | no event: mean of per-process minima | look-back | every step |",
             "|---|---|---|---|"]
    for case in cases():
        if only and case not in only:
            continue
        best: dict[str, list[float]] = {"plain": [], "event": [], "every": []}
        for _ in range(pairs):
            for mode in best:
                out = subprocess.run([sys.executable, __file__, "--child-time", case, mode,
                                      str(n)], capture_output=True, text=True, check=True)
                best[mode].append(float(out.stdout.split()[-1]))
        p, e, v = (statistics.mean(best[m]) for m in ("plain", "event", "every"))
        lines.append(f"| {case} | {1e3 * p:.1f} ms | {1e3 * e:.1f} ms ({100 * (e / p - 1):+.1f}%) "
                     f"| {1e3 * v:.1f} ms ({100 * (v / p - 1):+.1f}%) |")
    return "\n".join(lines)


def instructions(only: list[str] | None) -> str:
    """Instructions per solve under valgrind's cachegrind (a count that does not depend on
    the machine's load: runs of 1 and 3 solves, differenced, so the start-up cancels)."""
    import re  # noqa: PLC0415
    import shutil  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    if shutil.which("valgrind") is None:
        return "valgrind not installed: no instruction counts"
    lines = ["| case | no event, instructions per solve | event: look-back | event: monitor "
             "on every step |", "|---|---|---|---|"]
    for case in cases():
        if only and case not in only:
            continue
        per = {}
        for mode in ("plain", "event", "every"):
            counts = []
            for n in (1, 3):
                out = subprocess.run(
                    ["valgrind", "--tool=cachegrind", "--cache-sim=no",
                     "--cachegrind-out-file=/dev/null", sys.executable, __file__, "--child",
                     case, mode, str(n)], capture_output=True, text=True, check=True).stderr
                counts.append(int(re.search(r"I\s+refs:\s+([\d,]+)", out)[1]
                                  .replace(",", "")))
            per[mode] = (counts[1] - counts[0]) / 2
        p = per["plain"]
        lines.append(f"| {case} | {p / 1e6:.1f} M | {per['event'] / 1e6:.1f} M "
                     f"({100 * (per['event'] / p - 1):+.1f}%) | {per['every'] / 1e6:.1f} M "
                     f"({100 * (per['every'] / p - 1):+.1f}%) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--instructions", action="store_true",
                    help="also count instructions per solve under valgrind (minutes per case)")
    ap.add_argument("--processes", type=int, default=0,
                    help="also compare in fresh processes, this many of each kind per case")
    ap.add_argument("--child", nargs=3, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-time", nargs=3, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        _child(a.child[0], a.child[1], int(a.child[2]))
        return
    if a.child_time:
        _child_time(a.child_time[0], a.child_time[1], int(a.child_time[2]))
        return
    reps = a.reps or (3 if a.quick else 9)
    text = table(measure(reps, a.only), reps)
    if a.processes:
        text += ("\n\nFresh processes in turn, least CPU time of 12 solves in each, mean over "
                 f"{a.processes} processes of each kind:\n\n" + processes(a.only, a.processes))
    if a.instructions:
        text += "\n\nInstructions per solve (valgrind cachegrind):\n\n" + instructions(a.only)
    print(text)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
