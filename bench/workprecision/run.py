"""Work-precision runs against the peer libraries (error vs wall time and vs NFE).

The problems, the peers' calls, the interleaved timing and the plots live in
:mod:`sdeflow_bench` (so that ``sdeflow bench`` runs them from an installed package); this
script runs its work-precision sections only (``ode_fixed``, ``ode_adaptive``, ``sde``), with the
same options::

    python bench/workprecision/run.py [--quick] [--out DIR] [--problems vdp1,ou] [--rounds N]

``sdeflow bench`` additionally runs the hand-loop comparison (``--only handloop``).
"""

from __future__ import annotations

import sys

from sdeflow_bench import main

WORKPRECISION = "ode_fixed,ode_adaptive,sde"


def run(argv: list[str] | None = None) -> int:
    """``sdeflow_bench.main`` restricted to the work-precision sections (unless ``--only``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--only" or a.startswith("--only=") for a in args):
        args += ["--only", WORKPRECISION]
    if not any(a == "--out" or a.startswith("--out=") for a in args):
        args += ["--out", "bench_out/workprecision"]
    return main(args)


if __name__ == "__main__":
    raise SystemExit(run())
