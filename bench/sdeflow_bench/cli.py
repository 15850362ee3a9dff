"""The ``sdeflow bench`` subcommand: its arguments, the checks made before measuring, ``main``.

Registered with sdeflow's command line through :data:`sdeflow_bench.SUBCOMMANDS` (entry-point
group ``sdeflow.plugins``); ``python -m sdeflow_bench`` runs the same.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .config import Config
from .output import OutputFolder
from .plots import make_plots
from .report import format_tables, markdown_tables
from .suite import load_result, problem_titles, run_suite

HELP = "run the benchmarks against torchdiffeq, torchsde, torchode and scipy"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``sdeflow bench`` on parser ``p``."""
    p.description = ("Benchmarks against torchdiffeq, torchsde, torchode and scipy: per-step "
                     "cost against a hand-written loop, work-precision diagrams (PNG), JSON.")
    p.add_argument("--quick", action="store_true",
                   help="small sizes and 3 rounds (< 2 minutes on 2 cores)")
    p.add_argument("--profile", choices=("full", "quick", "tiny"), default=None,
                   help="preset (default: full; --quick is --profile quick)")
    p.add_argument("--out", default="bench_out",
                   help="output folder (default: bench_out); written whole at the end of a run")
    p.add_argument("--only", default=None,
                   help="comma-separated sections: handloop, ode_fixed, ode_adaptive, sde")
    p.add_argument("--problems", default=None,
                   help="comma-separated problem keys to keep (e.g. vdp1,ou)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: stable timings on a shared machine; "
                        "0 keeps torch's default)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    p.add_argument("--from-json", default=None, metavar="FILE",
                   help="run nothing: re-print the tables and redraw the PNGs (into --out) "
                        "from a bench.json")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sdeflow bench")
    add_arguments(p)
    return p


def check_device(device: str) -> torch.device:
    """``device`` as a ``torch.device`` that can hold a tensor here; ``ValueError`` otherwise."""
    try:
        dev = torch.device(device)
        torch.empty(1, device=dev)
    except (RuntimeError, ValueError, AssertionError) as exc:
        msg = str(exc).strip().splitlines()
        raise ValueError(f"--device: {device!r} is not a usable torch device here "
                         f"({msg[0] if msg else type(exc).__name__})") from None
    return dev


REQUIRED = ("matplotlib", "tqdm")
"""What ``sdeflow bench`` cannot run without (the plots and progress bars); the peers
(torchdiffeq, torchsde, torchode) are optional: a missing one is skipped with a note."""


def missing_requirements() -> list[str]:
    """The modules of :data:`REQUIRED` that cannot be imported here."""
    import importlib.util

    return [m for m in REQUIRED if importlib.util.find_spec(m) is None]


def _usage(msg: str) -> int:
    print(f"sdeflow bench: {msg}", file=sys.stderr)
    return 2


def _redraw(args: argparse.Namespace) -> int:
    src = Path(args.from_json)
    if not src.is_file():
        return _usage(f"--from-json: {args.from_json!r} is not a file; expected a bench.json "
                      "written by an earlier run")
    try:
        result = load_result(src)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return _usage(f"--from-json: {args.from_json!r} is not a readable bench.json "
                      f"({type(exc).__name__}: {exc})")
    try:
        out = OutputFolder(args.out, "--out")
    except ValueError as exc:
        return _usage(str(exc))
    try:
        cfg = Config.for_profile(result["meta"].get("profile", "full"))
        result["files"] = make_plots(result["records"], out.tmp, problem_titles(cfg))
        (out.tmp / "bench.md").write_text(markdown_tables(result))
        (out.tmp / "bench.json").write_text(src.read_text())
        out.commit()
    finally:
        out.discard()
    result["files"] += ["bench.md", "bench.json"]
    print(format_tables(result))
    print(f"\nredrew {', '.join(result['files'])} in {args.out}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``sdeflow bench`` with parsed arguments; returns the exit status (2: bad arguments).

    Every argument is checked before anything is measured: the required modules, the device,
    the sections, the rounds, and the output folder (created as a temporary folder beside it).
    """
    missing = missing_requirements()
    if missing:
        return _usage(f"needs {', '.join(missing)} (the [bench] extra: "
                      "pip install 'sdeflow[bench]')")
    if args.from_json:
        return _redraw(args)
    try:
        check_device(args.device)
    except ValueError as exc:
        return _usage(str(exc))
    profile = args.profile or ("quick" if args.quick else "full")
    cfg = Config.for_profile(profile)
    if args.only:
        secs = tuple(s.strip().replace("-", "_") for s in args.only.split(",") if s.strip())
        bad = [s for s in secs if s not in Config().sections]
        if bad:
            return _usage(f"--only: unknown section(s) {', '.join(bad)}; known: "
                          f"{', '.join(Config().sections)}")
        cfg.sections = secs
    if args.problems:
        cfg.problems = tuple(s.strip() for s in args.problems.split(",") if s.strip())
    if args.rounds is not None:
        if args.rounds < 1:
            return _usage(f"--rounds: expected a positive integer, got {args.rounds}")
        cfg.rounds = cfg.hl_rounds = args.rounds
    if args.threads < 0:
        return _usage(f"--threads: expected 0 (torch's default) or a positive integer, got "
                      f"{args.threads}")
    cfg.device, cfg.seed, cfg.threads = args.device, args.seed, args.threads
    try:
        out = OutputFolder(args.out, "--out")
    except ValueError as exc:
        return _usage(str(exc))
    command = getattr(args, "command_line", None) or "sdeflow " + " ".join(sys.argv[1:])
    result = run_suite(cfg, out, progress=not args.no_progress, command=command.strip())
    print(format_tables(result))
    print(f"\nwrote {', '.join(result['files'])} to {args.out} "
          f"in {result['meta']['seconds']:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``sdeflow bench [--quick] [--out DIR]``: run, print the ratio tables, write JSON + PNG."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command_line = "sdeflow bench " + " ".join(argv)
    return run(args)
