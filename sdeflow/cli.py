"""The ``sdeflow`` command.

* ``sdeflow verify [--json] [--quick] [--solver NAME ...]`` -- every registered solver on the
  analytic problems (:func:`sdeflow.verify.run_suite`): a table of solver, problem, check,
  theoretical order, measured order with its 95% interval, and pass/fail (moment checks show
  their largest |z| and the chi-square p-value; "moment bias order" rows are one-sided, >=).
  Exit status 1 if any check fails, 2 for bad arguments.
* ``sdeflow plugins [--json]`` -- the entry points of group ``sdeflow.plugins``.
* ``sdeflow bench ...`` -- the benchmarks (``sdeflow.benchmark.main``), arguments passed through.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

PLUGIN_GROUP = "sdeflow.plugins"


def _row(res: Any) -> dict[str, Any]:
    from .verify import OrderResult

    mode = res.to_dict().get("mode")
    if mode in ("tolerance", "sde_tolerance"):
        d = res.to_dict()
        d["check"] = "tolerance proportionality" if mode == "tolerance" else "strong err vs tol"
        return d
    if isinstance(res, OrderResult):
        d = res.to_dict()
        d["check"] = "moment bias order" if res.mode == "bias" else f"{res.mode} order"
        return d
    d = res.to_dict()
    d["check"] = "moments"
    d["mode"] = "moments"
    return d


def _format_table(rows: list[dict[str, Any]]) -> str:
    head = ("solver", "problem", "check", "theory", "measured [95% CI]", "result")
    body = []
    for r in rows:
        if r["mode"] == "moments":
            theory = f"|z|<={r['n_sigma']:g}"
            measured = f"max|z| {r['max_abs_z']:.2f}, p={r['p_value']:.3g}"
        elif r["mode"] == "sde_tolerance":
            theory = f"err~tol^{r['expected']:.3g}"
            measured = f"slope {r['order']:.3f}, errors fall"
        elif r["mode"] == "tolerance":
            lo, hi = r["slope_range"]
            theory = f"err~tol^1 [{lo:g},{hi:g}]"
            measured = f"slope {r['order']:.3f}, max err/tol {r['worst_ratio']:.2g}"
        else:
            theory = "?" if r["expected"] is None else f"{r['expected']:g}"
            if r.get("at_least") and r["expected"] is not None:
                theory = ">=" + theory
            lo, hi = r["ci"]
            measured = f"{r['order']:.3f} [{lo:.3f}, {hi:.3f}]"
        body.append((r["solver"], r["problem"], r["check"], theory, measured,
                     "pass" if r["passed"] else "FAIL"))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in body]
    return "\n".join(lines)


def _cmd_verify(args: argparse.Namespace) -> int:
    from . import solvers as _solvers
    from .verify import run_suite

    names = args.solver or list(_solvers.names())
    for n in names:
        try:
            _solvers.get(n)
        except ValueError as exc:
            print(f"sdeflow verify: {exc}", file=sys.stderr)
            return 2
    start = time.perf_counter()

    def progress(res: Any) -> None:
        if not args.json:
            print(f"  ... {res.solver} on {res.problem}: {'pass' if res.passed else 'FAIL'}",
                  file=sys.stderr, flush=True)

    results = run_suite(names, quick=args.quick, progress=progress)
    rows = [_row(r) for r in results]
    failed = [r for r in rows if not r["passed"]]
    elapsed = time.perf_counter() - start
    if args.json:
        print(json.dumps({"quick": args.quick, "passed": not failed, "seconds": elapsed,
                          "results": rows}, indent=2, default=float))
    else:
        print(_format_table(rows))
        print(f"\n{len(rows) - len(failed)}/{len(rows)} checks passed in {elapsed:.1f} s "
              f"({'quick' if args.quick else 'full'} sample sizes; strong orders on one shared "
              f"Brownian path per batch, intervals from Monte Carlo standard errors)")
        for r in failed:
            print(f"FAILED: {r['solver']} on {r['problem']} ({r['check']})")
    return 1 if failed else 0


def _entry_points() -> list[Any]:
    from importlib.metadata import entry_points

    return sorted(entry_points(group=PLUGIN_GROUP), key=lambda ep: ep.name)


def _cmd_plugins(args: argparse.Namespace) -> int:
    eps = _entry_points()
    rows = []
    for ep in eps:
        dist = getattr(ep, "dist", None)
        rows.append({"name": ep.name, "value": ep.value,
                     "distribution": getattr(dist, "name", None) if dist is not None else None})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no plugins found (entry-point group {PLUGIN_GROUP!r})")
        return 0
    print(f"plugins (entry-point group {PLUGIN_GROUP!r}):")
    for r in rows:
        src = f"  [{r['distribution']}]" if r["distribution"] else ""
        print(f"  {r['name']} = {r['value']}{src}")
    return 0


def _cmd_bench(argv: list[str]) -> int:
    try:
        from .benchmark import main as bench_main  # type: ignore[import-not-found]
    except ModuleNotFoundError as exc:
        if exc.name not in ("sdeflow.benchmark", f"{__package__}.benchmark"):
            raise
        print("sdeflow bench: the benchmark module (sdeflow.benchmark) is not installed in this "
              "build of sdeflow", file=sys.stderr)
        return 2
    ret = bench_main(argv)
    return int(ret or 0)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sdeflow", description="ODE/SDE solvers verified against exact solutions.")
    sub = p.add_subparsers(dest="command", metavar="{verify,plugins,bench}")
    v = sub.add_parser("verify", help="measure every solver's order on exact solutions",
                       description="Run every registered solver on the analytic problems and "
                                   "compare measured orders and moments with theory.")
    v.add_argument("--json", action="store_true", help="print the results as JSON")
    v.add_argument("--quick", action="store_true", help="smaller Monte Carlo samples")
    v.add_argument("--solver", action="append", metavar="NAME",
                   help="only this solver (repeatable)")
    pl = sub.add_parser("plugins", help=f"list entry points of group {PLUGIN_GROUP!r}")
    pl.add_argument("--json", action="store_true", help="print the list as JSON")
    sub.add_parser("bench", help="run the benchmarks (arguments are passed on)", add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sdeflow`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        return _cmd_bench(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "verify":
        return _cmd_verify(args)
    if args.command == "plugins":
        return _cmd_plugins(args)
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
