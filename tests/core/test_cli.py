"""The ``sdeflow`` command: verify (table and --json), plugins and their subcommands, --version,
exit statuses.

The CLI plumbing is exercised on *every registered solver* with reduced samples (gbm 100 paths,
additive 100, weak 1000, moments 2000, three coarse steps, seed 0) so that it runs in seconds; the
numerics at the real sample sizes are asserted in test_orders.py / test_moments.py, and one real
``--quick`` run of a single solver is checked here.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import types
from typing import Any

import pytest

import sdeflow as sf
from sdeflow import cli, verify

# every registered solver except the semilinear SDE samplers, whose problems (a SemilinearSDE)
# the suite does not have: tests/core/test_exponential.py verifies those
VERIFIED = {n for n in sf.solvers.names()
            if not (sf.solvers.get(n).caps.semilinear and sf.solvers.get(n).caps.sde)}


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def small_runs() -> dict[str, tuple[int, str, str]]:
    real = verify.default_suite

    def small(quick: bool = False) -> dict[str, Any]:
        cfg = real(quick)
        cfg.update(gbm_paths=100, additive_paths=100, weak_paths=1000, moment_paths=2000,
                   gbm_dts=(2**-3, 2**-4, 2**-5), additive_dts=(2**-2, 2**-3, 2**-4),
                   weak_dts=(2**-2, 2**-3, 2**-4), n_fine=256,
                   tolerance_problems=("linear",), sde_tolerance_paths=50)
        return cfg

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(verify.suite, "default_suite", small)
        return {"json": _run(["verify", "--json", "--quick"]),
                "table": _run(["verify", "--solver", "euler", "--solver", "sra1"])}


def test_verify_json_parses_and_covers_every_solver(small_runs: dict) -> None:
    rc, out, _ = small_runs["json"]
    data = json.loads(out)
    assert data["quick"] is True
    solvers = {r["solver"] for r in data["results"]}
    assert solvers == VERIFIED
    for r in data["results"]:
        assert {"solver", "problem", "check", "passed"} <= set(r)
        if r["mode"] != "moments":
            assert len(r["ci"]) == 2 and "order" in r and "expected" in r
    assert rc == (0 if data["passed"] else 1)
    assert data["passed"] == all(r["passed"] for r in data["results"])


def test_verify_table_lists_every_solver(small_runs: dict) -> None:
    """The table printed for the full run's rows names every registered solver; a table-mode
    run (two solvers) prints the header, the rows and the summary, progress on stderr."""
    rows = json.loads(small_runs["json"][1])["results"]
    lines = cli._format_table(rows).splitlines()
    header = ["solver", "problem", "check", "theory", "measured", "[95%", "CI]", "result"]
    assert lines[0].split() == header and set(lines[1]) <= {"-", " "}
    assert {ln.split()[0] for ln in lines[2:]} == VERIFIED
    assert all(ln.split()[-1] in ("pass", "FAIL") for ln in lines[2:])
    rc, out, err = small_runs["table"]
    lines = out.splitlines()
    assert lines[0].split() == header
    assert {ln.split()[0] for ln in lines[2:] if ln and not ln[0].isspace()} >= {"euler", "sra1"}
    assert "checks passed in" in out
    assert rc in (0, 1) and (rc == 0) == ("FAILED" not in out)
    assert "..." in err  # progress goes to stderr, the table to stdout


def test_verify_real_run_of_selected_solvers_passes() -> None:
    """Real (full) settings for two ODE solvers: the exit status is 0 and every row passes
    (the SDE rows at real sample sizes are the assertions of test_orders / test_moments)."""
    rc, out, _ = _run(["verify", "--json", "--solver", "rk4", "--solver", "midpoint"])
    data = json.loads(out)
    assert rc == 0 and data["passed"] and data["quick"] is False
    assert [(r["solver"], r["check"]) for r in data["results"]] == [
        ("rk4", "ode order"), ("midpoint", "ode order")]


def test_verify_exits_nonzero_on_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = verify.ode_order("euler", expected=3.0)

    def fake_suite(names: Any, quick: bool = False, progress: Any = None) -> list:
        return [bad]

    monkeypatch.setattr(verify, "run_suite", fake_suite)
    rc, out, _ = _run(["verify"])
    assert rc == 1 and "FAIL" in out and "FAILED: euler" in out
    rc, out, _ = _run(["verify", "--json"])
    assert rc == 1 and json.loads(out)["passed"] is False


def test_verify_rejects_an_unknown_solver() -> None:
    rc, _, err = _run(["verify", "--solver", "nope"])
    assert rc == 2 and "known solvers" in err


def _fake_plugin(monkeypatch: pytest.MonkeyPatch, modname: str, subcommands: Any,
                 doc: str = "A fake plugin.") -> Any:
    mod = types.ModuleType(modname)
    mod.__doc__ = doc
    if subcommands is not None:
        mod.SUBCOMMANDS = subcommands  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, modname, mod)
    return mod


def _use_entry_points(monkeypatch: pytest.MonkeyPatch, pairs: list[tuple[str, str]]) -> None:
    from importlib.metadata import EntryPoint

    eps = [EntryPoint(n, v, cli.PLUGIN_GROUP) for n, v in pairs]
    monkeypatch.setattr(cli, "_entry_points", lambda: sorted(eps, key=lambda e: e.name))


def test_plugins_lists_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_plugin(monkeypatch, "pkg_a", None, doc="Alpha plugin.\n\nMore text.")
    zeta = _fake_plugin(monkeypatch, "pkg_z", None)
    zeta.plugin = types.SimpleNamespace(  # type: ignore[attr-defined]
        __doc__="Zeta object.", SUBCOMMANDS={"zz": ("zeta things", lambda p: None, lambda a: 0)})
    _use_entry_points(monkeypatch, [("zeta", "pkg_z:plugin"), ("alpha", "pkg_a")])
    rc, out, _ = _run(["plugins"])
    assert rc == 0 and out.index("alpha = pkg_a") < out.index("zeta = pkg_z:plugin")
    assert "Alpha plugin." in out and "More text" not in out and "subcommands: zz" in out
    rc, out, _ = _run(["plugins", "--json"])
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["alpha", "zeta"]
    assert rows[1]["subcommands"] == ["zz"] and rows[0]["error"] is None
    monkeypatch.setattr(cli, "_entry_points", lambda: [])
    rc, out, _ = _run(["plugins"])
    assert rc == 0 and "no plugins found" in out


def test_plugins_reads_the_installed_metadata() -> None:
    rc, out, _ = _run(["plugins", "--json"])
    assert rc == 0 and isinstance(json.loads(out), list)


def test_plugin_subcommand_gets_its_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    def add_arguments(p: Any) -> None:
        p.add_argument("--quick", action="store_true")
        p.add_argument("-k", default=None)

    def run(ns: Any) -> int:
        seen.append((ns.quick, ns.k))
        return 3

    _fake_plugin(monkeypatch, "fake_bench", {"fakebench": ("fake help", add_arguments, run)})
    _use_entry_points(monkeypatch, [("fb", "fake_bench")])
    rc, _, _ = _run(["fakebench", "--quick", "-k", "euler"])
    assert rc == 3 and seen == [(True, "euler")]
    rc, out, _ = _run([])  # the help lists plugin subcommands
    assert rc == 2 and "fakebench" in out and "fake help" in out


def test_plugin_subcommand_errors_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    ok = ("help", lambda p: None, lambda a: 0)
    _fake_plugin(monkeypatch, "p_clash", {"verify": ok})
    _fake_plugin(monkeypatch, "p_bad", {"x": ("help", "not callable", None)})
    _fake_plugin(monkeypatch, "p_list", ["not", "a", "dict"])
    _use_entry_points(monkeypatch, [("clash", "p_clash"), ("bad", "p_bad"), ("lst", "p_list"),
                                    ("gone", "no_such_module_xyz")])
    infos, commands = cli.load_plugins()
    assert commands == {}
    err = {i.name: i.error for i in infos}
    assert "'verify'" in err["clash"] and "already taken" in err["clash"]
    assert "SUBCOMMANDS['x']" in err["bad"]
    assert "SUBCOMMANDS" in err["lst"] and "dict" in err["lst"]
    assert "no_such_module_xyz" in err["gone"]
    rc, _, errtext = _run_catching(["nosuchcmd"])
    assert rc == 2 and "plugin 'gone'" in errtext and "invalid choice" in errtext


def test_plugin_run_must_return_an_int(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_plugin(monkeypatch, "p_none", {"nothing": ("help", lambda p: None, lambda a: None)})
    _use_entry_points(monkeypatch, [("none", "p_none")])
    with pytest.raises(TypeError, match="run\\(\\) of 'nothing'"):
        cli.main(["nothing"])


def test_installed_bench_plugin_registers_bench() -> None:
    """sdeflow_bench exports the ``bench`` subcommand in the SUBCOMMANDS form."""
    import sdeflow_bench

    cmds = cli._subcommands_of(sdeflow_bench, "bench")
    assert [c.name for c in cmds] == ["bench"]


def test_version() -> None:
    rc, out, _ = _run_catching(["--version"])
    assert rc == 0 and out.strip() == f"sdeflow {sf.__version__}"


def _run_catching(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv)
        except SystemExit as exc:  # argparse: --version, usage errors
            rc = int(exc.code or 0)
    return rc, out.getvalue(), err.getvalue()


def test_no_command_prints_help() -> None:
    rc, out, _ = _run([])
    assert rc == 2 and "verify" in out


def test_module_entry_point_runs() -> None:
    proc = subprocess.run([sys.executable, "-m", "sdeflow.cli", "plugins"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
