"""Figures of the learned generative models (issue 9): the ``sdeflow demo`` runs, measured.

For each data set it runs the demo (:func:`sdeflow_generative.demo.run_demo`) with its default
settings on ``--threads`` intra-op threads and collects ``metrics.json``:

* 2D sets (moons, checkerboard, gmm): MMD of 2,000 generated points to 2,000 held-out points as a
  ratio to the MMD between two held-out sets, for the PF-ODE (heun) at 20 and 100 model
  evaluations and the eta = 1 SDE (Euler-Maruyama, 200 steps); training wall time and steps/s.
* digits: logistic-regression test accuracy on real digits; accuracy on class-conditional
  generated digits at guidance w = 1 and w = 3 (PF-ODE heun 20 steps; SDE at w = 3); per-class
  diversity ratio (mean pairwise distance generated / real); wall time, steps/s.

Prints markdown tables and writes ``bench/generative/out/learned_<data>.json``; ``--collect DIR
...`` instead reads such files from earlier runs and writes the tables between the
``<!-- learned-table -->`` markers of ``docs/generative.md``::

    python bench/generative/learned.py [--data moons checkerboard gmm digits] [--threads 2]
    python bench/generative/learned.py --collect bench/generative/out
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch
from sdeflow_generative.demo import DEFAULT_STEPS, run_demo

HERE = Path(__file__).resolve().parent
DOCS = HERE.parents[1] / "docs" / "generative.md"


def _table_2d(rows: list[dict]) -> str:
    lines = [
        "| data | steps | train s | steps/s | MMD floor | PF-ODE 20 NFE | PF-ODE 100 NFE | "
        "SDE 200 NFE | demo wall s | demo CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in rows:
        r = m["mmd_ratio"]
        lines.append(
            f"| {m['data']} | {m['train']['steps']} | {m['train']['seconds']:.0f} | "
            f"{m['train']['steps_per_second']:.0f} | {m['mmd_floor_data_vs_data']:.3f} | "
            f"{r['ode_nfe20']:.2f}x | {r['ode_nfe100']:.2f}x | {r['sde_nfe200']:.2f}x | "
            f"{m['wall_seconds']:.0f} | {m['cpu_seconds']:.0f} |"
        )
    return "\n".join(lines)


def _table_digits(m: dict) -> str:
    lines = [
        f"classifier (logistic regression) test accuracy on real digits: "
        f"{m['classifier_test_accuracy']:.3f}; training {m['train']['steps']} steps in "
        f"{m['train']['seconds']:.0f} s ({m['train']['steps_per_second']:.1f} steps/s); demo wall "
        f"time {m['wall_seconds']:.0f} s (CPU {m.get('cpu_seconds', float('nan')):.0f} s)",
        "",
        "| sampler | accuracy | diversity ratio (mean) | min class ratio | sampling s |",
        "|---|---|---|---|---|",
    ]
    for k, v in m["guidance"].items():
        lines.append(
            f"| {k} | {v['accuracy']:.3f} | {v['diversity_ratio_mean']:.2f} | "
            f"{min(v['diversity_ratio_per_class']):.2f} | {v['seconds']:.1f} |"
        )
    return "\n".join(lines)


def collect(dirs: list[str]) -> None:
    """Tables from ``learned_*.json`` files into docs/generative.md (between the markers)."""
    found: dict[str, dict] = {}
    for d in dirs:
        for f in sorted(Path(d).glob("learned_*.json")):
            m = json.loads(f.read_text())
            found[m["data"]] = m
    parts = []
    rows = [found[k] for k in ("moons", "checkerboard", "gmm") if k in found]
    if rows:
        parts.append("**2D sets**: MMD of 2,000 samples to 2,000 held-out points, as a ratio to "
                     "the MMD between two held-out sets (the floor column).\n\n"
                     + _table_2d(rows))
    if "digits" in found:
        parts.append("**Digits**: " + _table_digits(found["digits"]))
    text = "\n\n".join(parts)
    doc = DOCS.read_text()
    new = re.sub(r"<!-- learned-table -->.*<!-- /learned-table -->",
                 lambda _: f"<!-- learned-table -->\n{text}\n<!-- /learned-table -->", doc,
                 flags=re.S)
    DOCS.write_text(new)
    print(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=["moons", "checkerboard", "gmm"],
                   choices=list(DEFAULT_STEPS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(HERE / "out"))
    p.add_argument("--collect", nargs="+", default=None,
                   help="write the tables of earlier runs (directories) into the docs")
    args = p.parse_args()
    if args.collect:
        collect(args.collect)
        return
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.data:
        m = run_demo(name, out=out / name, progress=False)
        (out / f"learned_{name}.json").write_text(json.dumps(m, indent=2))
        if name == "digits":
            print(_table_digits(m), flush=True)
        else:
            rows.append(m)
            print(_table_2d([m]), flush=True)
    if len(rows) > 1:
        print(_table_2d(rows))


if __name__ == "__main__":
    main()
