"""sf.ensemble benchmarks (issue 13): throughput, memory at 10^7 paths, weak scaling 1 -> 2.

* ``throughput``: paths x steps / s of ``sf.ensemble`` (one chunk, and chunks of 2^14) against
  one big ``sf.solve(..., seed=)`` of the same paths; GBM, d = 1, Euler-Maruyama, 100 steps,
  10^5 paths; interleaved repetitions, medians.
* ``memory``: peak RSS above the baseline (``ru_maxrss``, one subprocess per case) of
  ``sf.ensemble`` at 10^6 and 10^7 paths with chunks of 2^16 (20 steps), against the ensemble's
  own count of the chunk's working set (``chunk_bytes``).
* ``scaling``: weak scaling, 1 process with N paths against 2 gloo processes with N paths
  each (2N in all, the same chunk size); wall time of the ``ensemble`` call (max over ranks).

Torch runs on one thread per process. No timing is asserted anywhere.

    python bench/ensemble/run.py [--quick] [--out bench/ensemble/results.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _gbm():  # noqa: ANN202
    import torch

    import sdeflow as sf

    return sf.SDE(lambda t, x: 0.05 * x, lambda t, x: 0.3 * x, noise="diagonal"), torch.ones(
        1, dtype=torch.float64)


def throughput(n: int, steps: int, reps: int) -> list[dict[str, float]]:
    import torch

    import sdeflow as sf

    torch.set_num_threads(1)
    prob, x0 = _gbm()
    cases = {
        "solve (one batch)": lambda: sf.solve(prob, x0.expand(n, 1).clone(), (0.0, 1.0),
                                              steps=steps, seed=1),
        "ensemble (one chunk)": lambda: sf.ensemble(prob, x0, n, t_span=(0.0, 1.0),
                                                    steps=steps, seed=1, chunk_size=n),
        "ensemble (chunks of 2^14)": lambda: sf.ensemble(prob, x0, n, t_span=(0.0, 1.0),
                                                         steps=steps, seed=1,
                                                         chunk_size=2**14),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for fn in cases.values():
        fn()  # warm-up
    for _ in range(reps):
        for k, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    base = statistics.median(times["solve (one batch)"])
    return [dict(case=k, seconds=statistics.median(v), rate=n * steps / statistics.median(v),
                 ratio=base / statistics.median(v)) for k, v in times.items()]


def memory_case(n: int, chunk: int, steps: int) -> dict[str, float]:
    """Peak RSS of the process (after importing torch and sdeflow); ``chunk = 0``: one
    ``solve`` of all ``n`` paths instead, for contrast."""
    import torch

    import sdeflow as sf

    torch.set_num_threads(1)
    prob, x0 = _gbm()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    t0 = time.perf_counter()
    if chunk == 0:
        sol = sf.solve(prob, x0.expand(n, 1).clone(), (0.0, 1.0), steps=steps, seed=0)
        out = dict(chunk_mb=float("nan"), state_bytes=0, mean=float(sol.ys[-1].mean()))
    else:
        r = sf.ensemble(prob, x0, n, t_span=(0.0, 1.0), steps=steps, seed=0,
                        chunk_size=chunk)
        out = dict(chunk_mb=r.chunk_bytes / 2**20, state_bytes=r.bytes_kept,
                   mean=float(r.mean[-1, 0]))
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return dict(n=n, chunk=chunk, base_mb=base, peak_mb=peak, seconds=wall, **out)


def _scaling_worker(rank: int, world: int, port: int, n: int, chunk: int, steps: int,
                    out: str) -> None:
    import torch

    import sdeflow as sf

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if world > 1:
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world,
                                             timeout=datetime.timedelta(seconds=300))
    prob, x0 = _gbm()
    t0 = time.perf_counter()
    sf.ensemble(prob, x0, n * world, t_span=(0.0, 1.0), steps=steps, seed=0, chunk_size=chunk)
    wall = time.perf_counter() - t0
    Path(out, f"r{rank}.json").write_text(json.dumps(dict(wall=wall)))
    if world > 1:
        torch.distributed.destroy_process_group()


def scaling(n: int, chunk: int, steps: int, reps: int) -> list[dict[str, float]]:
    import tempfile

    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    rows = []
    for world in (1, 2):
        walls = []
        for _ in range(reps):
            with tempfile.TemporaryDirectory() as tmp:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    port = s.getsockname()[1]
                ps = [ctx.Process(target=_scaling_worker,
                                  args=(r, world, port, n, chunk, steps, tmp))
                      for r in range(world)]
                for p in ps:
                    p.start()
                for p in ps:
                    p.join(600)
                    if p.is_alive():
                        p.kill()
                walls.append(max(json.loads(Path(tmp, f"r{r}.json").read_text())["wall"]
                                 for r in range(world)))
        w = statistics.median(walls)
        rows.append(dict(world=world, paths=n * world, seconds=w,
                         rate=n * world * steps / w))
    for r in rows:
        r["efficiency"] = rows[0]["seconds"] / r["seconds"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(HERE / "results.md"))
    ap.add_argument("--memory-case", nargs=3, type=int, metavar=("N", "CHUNK", "STEPS"))
    a = ap.parse_args()
    if a.memory_case:
        print(json.dumps(memory_case(*a.memory_case)))
        return
    reps = 3 if a.quick else 7
    lines = ["# sf.ensemble benchmarks", "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"{os.cpu_count()} CPUs (shared), one torch thread per process.", "",
             "## Throughput (GBM, d = 1, Euler-Maruyama, 100 steps, 10^5 paths)", "",
             "| case | median s | paths x steps / s | vs one solve |", "|---|---|---|---|"]
    for r in throughput(10**5, 100, reps):
        lines.append(f"| {r['case']} | {r['seconds']:.3f} | {r['rate']:.3g} | "
                     f"{r['ratio']:.3f}x |")
    lines += ["", "## Memory (GBM, 20 steps; peak RSS of a fresh process, after imports)", "",
              "| run | paths | chunk | RSS after imports MiB | peak RSS MiB | "
              "chunk working set MiB (counted) | merge state bytes | s |",
              "|---|---|---|---|---|---|---|---|"]
    big = 10**6 if a.quick else 10**7
    for name, n, c in (("ensemble", 10**6, 2**16), ("ensemble", big, 2**16),
                       ("one solve", 10**6, 0), ("one solve", big, 0)):
        out = subprocess.run([sys.executable, __file__, "--memory-case", str(n), str(c),
                              "20"], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        lines.append(f"| {name} | {n:.0e} | {c or '-'} | {r['base_mb']:.0f} | "
                     f"{r['peak_mb']:.0f} | {r['chunk_mb']:.2f} | {r['state_bytes']} | "
                     f"{r['seconds']:.1f} |")
    n_sc = 2 * 10**5 if a.quick else 10**6
    lines += ["", f"## Weak scaling ({n_sc:.0e} paths per process, chunks of 2^16, 50 steps)",
              "", "| processes | paths | wall s | paths x steps / s | efficiency |",
              "|---|---|---|---|---|"]
    for r in scaling(n_sc, 2**16, 50, 1 if a.quick else 3):
        lines.append(f"| {r['world']} | {r['paths']:.0e} | {r['seconds']:.2f} | "
                     f"{r['rate']:.3g} | {r['efficiency']:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
