"""The ``sdeflow`` command: verify (table and --json), plugins, bench, exit statuses.

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
        mp.setattr(verify, "default_suite", small)
        return {"json": _run(["verify", "--json", "--quick"]),
                "table": _run(["verify", "--solver", "euler", "--solver", "sra1"])}


def test_verify_json_parses_and_covers_every_solver(small_runs: dict) -> None:
    rc, out, _ = small_runs["json"]
    data = json.loads(out)
    assert data["quick"] is True
    solvers = {r["solver"] for r in data["results"]}
    assert solvers == set(sf.solvers.names())
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
    assert {ln.split()[0] for ln in lines[2:]} == set(sf.solvers.names())
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


def test_plugins_lists_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    eps = [EntryPoint("zeta", "pkg_z:plugin", cli.PLUGIN_GROUP),
           EntryPoint("alpha", "pkg_a", cli.PLUGIN_GROUP)]
    monkeypatch.setattr(cli, "_entry_points", lambda: sorted(eps, key=lambda e: e.name))
    rc, out, _ = _run(["plugins"])
    assert rc == 0 and out.index("alpha = pkg_a") < out.index("zeta = pkg_z:plugin")
    rc, out, _ = _run(["plugins", "--json"])
    assert [r["name"] for r in json.loads(out)] == ["alpha", "zeta"]
    monkeypatch.setattr(cli, "_entry_points", lambda: [])
    rc, out, _ = _run(["plugins"])
    assert rc == 0 and "no plugins found" in out


def test_plugins_reads_the_installed_metadata() -> None:
    rc, out, _ = _run(["plugins", "--json"])
    assert rc == 0 and isinstance(json.loads(out), list)


def test_bench_passes_its_arguments_through(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    fake = types.ModuleType("sdeflow.benchmark")
    fake.main = lambda argv: seen.append(list(argv)) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sdeflow.benchmark", fake)
    monkeypatch.setattr(sf, "benchmark", fake, raising=False)
    rc, _, _ = _run(["bench", "--quick", "-k", "euler"])
    assert rc == 0 and seen == [["--quick", "-k", "euler"]]


def test_bench_without_the_benchmark_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sdeflow.benchmark", None)  # import raises
    rc, _, err = _run(["bench"])
    assert rc == 2 and "sdeflow.benchmark" in err


def test_no_command_prints_help() -> None:
    rc, out, _ = _run([])
    assert rc == 2 and "verify" in out


def test_module_entry_point_runs() -> None:
    proc = subprocess.run([sys.executable, "-m", "sdeflow.cli", "plugins"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
