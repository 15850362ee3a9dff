"""The ``sdeflow`` command.

* ``sdeflow verify [--json] [--quick] [--solver NAME ...]`` -- every registered solver on the
  analytic problems (:func:`sdeflow.verify.run_suite`): a table of solver, problem, check,
  theoretical order, measured order with its 95% interval, and pass/fail (moment checks show
  their largest |z| and the chi-square p-value; "moment bias order" rows are one-sided, >=).
  Exit status 1 if any check fails, 2 for bad arguments.
* ``sdeflow plugins [--json]`` -- the entry points of group ``sdeflow.plugins``: each plugin's
  description (the first line of its docstring), the subcommands it adds, or why it failed to load.
* ``sdeflow --version``.
* Subcommands that plugins register. A module named by an entry point of group
  ``sdeflow.plugins`` may export ``SUBCOMMANDS = {name: (help, add_arguments, run)}``:
  ``add_arguments(parser)`` adds its options to an ``argparse`` subparser and
  ``run(namespace) -> int`` runs it and returns the exit status. ``sdeflow bench`` is registered
  this way by the ``sdeflow_bench`` package (``bench/``), ``sdeflow demo`` by the generative
  plugin. The core never imports a plugin by name; plugins are loaded only when a command
  other than ``verify`` or ``plugins`` (or ``--help``) is asked for.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

PLUGIN_GROUP = "sdeflow.plugins"


def _row(res: Any) -> dict[str, Any]:
    from .verify.results import OrderResult

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
            theory = f"err~tol^{r['expected']:.3g} [{lo:g},{hi:g}]"
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
    from . import verify

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

    results = verify.run_suite(names, quick=args.quick, progress=progress)
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


BUILTIN_COMMANDS = ("verify", "plugins")


@dataclass(frozen=True)
class PluginCommand:
    """A subcommand a plugin registers: ``sdeflow NAME ...`` runs ``run(namespace)``."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    plugin: str


@dataclass
class PluginInfo:
    """What ``sdeflow plugins`` reports about one entry point."""

    name: str
    value: str
    distribution: str | None
    description: str = ""
    subcommands: tuple[str, ...] = ()
    error: str | None = None


def _entry_points() -> list[Any]:
    from importlib.metadata import entry_points

    return sorted(entry_points(group=PLUGIN_GROUP), key=lambda ep: ep.name)


def _subcommands_of(obj: Any, plugin: str) -> list[PluginCommand]:
    subs = getattr(obj, "SUBCOMMANDS", None)
    if subs is None:
        return []
    if not isinstance(subs, dict):
        raise TypeError(f"SUBCOMMANDS: expected a dict name -> (help, add_arguments, run), got "
                        f"{type(subs).__name__}")
    out = []
    for name, spec in subs.items():
        if not isinstance(name, str) or not name or name.startswith("-"):
            raise TypeError(f"SUBCOMMANDS: expected command names as strings, got {name!r}")
        if not (isinstance(spec, tuple) and len(spec) == 3 and isinstance(spec[0], str)
                and callable(spec[1]) and callable(spec[2])):
            raise TypeError(f"SUBCOMMANDS[{name!r}]: expected (help: str, add_arguments(parser), "
                            f"run(namespace) -> int), got {spec!r}")
        out.append(PluginCommand(name, spec[0], spec[1], spec[2], plugin))
    return out


def load_plugins() -> tuple[list[PluginInfo], dict[str, PluginCommand]]:
    """Load every entry point of group ``sdeflow.plugins``.

    Returns the report of each plugin and the subcommands they add. A plugin that fails to
    import, exports a malformed ``SUBCOMMANDS`` or claims a name already taken (a built-in
    command or an earlier plugin's) keeps its report with ``error`` set and adds nothing.
    """
    infos: list[PluginInfo] = []
    commands: dict[str, PluginCommand] = {}
    for ep in _entry_points():
        dist = getattr(ep, "dist", None)
        info = PluginInfo(ep.name, ep.value, getattr(dist, "name", None) if dist else None)
        infos.append(info)
        try:
            obj = ep.load()
            doc = (getattr(obj, "__doc__", None) or "").strip()
            info.description = doc.splitlines()[0] if doc else ""
            subs = _subcommands_of(obj, ep.name)
        except Exception as exc:  # noqa: BLE001  (a broken plugin must not break the CLI)
            info.error = f"{type(exc).__name__}: {exc}"
            continue
        taken = [c.name for c in subs if c.name in BUILTIN_COMMANDS or c.name in commands]
        if taken:
            owner = {c: commands[c].plugin if c in commands else "sdeflow" for c in taken}
            info.error = "subcommand name(s) already taken: " + ", ".join(
                f"{c!r} (by {owner[c]})" for c in taken)
            continue
        for c in subs:
            commands[c.name] = c
        info.subcommands = tuple(c.name for c in subs)
    return infos, commands


def _cmd_plugins(args: argparse.Namespace) -> int:
    infos, _ = load_plugins()
    if args.json:
        print(json.dumps([vars(i) for i in infos], indent=2))
        return 0
    if not infos:
        print(f"no plugins found (entry-point group {PLUGIN_GROUP!r})")
        return 0
    print(f"plugins (entry-point group {PLUGIN_GROUP!r}):")
    for i in infos:
        src = f"  [{i.distribution}]" if i.distribution else ""
        print(f"  {i.name} = {i.value}{src}")
        if i.description:
            print(f"      {i.description}")
        if i.subcommands:
            print(f"      subcommands: {', '.join(i.subcommands)}")
        if i.error:
            print(f"      not loaded: {i.error}")
    return 0


def _version() -> str:
    from . import __version__

    return __version__


def _parser(commands: dict[str, PluginCommand] | None = None) -> argparse.ArgumentParser:
    commands = commands or {}
    p = argparse.ArgumentParser(
        prog="sdeflow", description="ODE/SDE solvers verified against exact solutions.")
    p.add_argument("--version", action="version", version=f"sdeflow {_version()}")
    names = ",".join((*BUILTIN_COMMANDS, *commands))
    sub = p.add_subparsers(dest="command", metavar=f"{{{names}}}")
    v = sub.add_parser("verify", help="measure every solver's order on exact solutions",
                       description="Run every registered solver on the analytic problems and "
                                   "compare measured orders and moments with theory.")
    v.add_argument("--json", action="store_true", help="print the results as JSON")
    v.add_argument("--quick", action="store_true", help="smaller Monte Carlo samples")
    v.add_argument("--solver", action="append", metavar="NAME",
                   help="only this solver (repeatable)")
    pl = sub.add_parser("plugins", help=f"list entry points of group {PLUGIN_GROUP!r}")
    pl.add_argument("--json", action="store_true", help="print the list as JSON")
    for c in commands.values():
        sp = sub.add_parser(c.name, help=f"{c.help} [plugin {c.plugin}]", description=c.help)
        c.add_arguments(sp)
        sp.set_defaults(plugin_command=c)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sdeflow`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands: dict[str, PluginCommand] = {}
    first = next((a for a in argv if not a.startswith("-")), None)
    wants_help = not argv or any(a in ("-h", "--help") for a in argv[:1])
    if first not in BUILTIN_COMMANDS and (first is not None or wants_help):
        infos, commands = load_plugins()
        if first is not None and first not in commands:
            broken = [i for i in infos if i.error]
            for i in broken:
                print(f"sdeflow: plugin {i.name!r} ({i.value}) not loaded: {i.error}",
                      file=sys.stderr)
    parser = _parser(commands)
    args = parser.parse_args(argv)
    if args.command == "verify":
        return _cmd_verify(args)
    if args.command == "plugins":
        return _cmd_plugins(args)
    plugin_command = getattr(args, "plugin_command", None)
    if plugin_command is not None:
        rc = plugin_command.run(args)
        if not isinstance(rc, int) or isinstance(rc, bool):
            raise TypeError(f"plugin {plugin_command.plugin!r}: run() of {args.command!r} "
                            f"returned {rc!r}, expected an int exit status")
        return rc
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
