"""bench/stiff/bench_events.py runs: its cases never fire, the look-back leaves the steps as
they are, and its load-independent op count shows the look-back's saving."""

from __future__ import annotations

import importlib.util
import pathlib
from types import ModuleType

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "stiff" / "bench_events.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_bench_events", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sde_case_measures(bench: ModuleType) -> None:
    """One repeat of the SDE case: the table has its row; with the look-back the event adds
    well under one ATen op per step (the monitor on every step adds fn's two plus five)."""
    res = bench.measure(1, ["sde"])
    r = res["sde"]
    assert r["steps"] == 2000
    assert 0.0 <= r["ops_event"] - r["ops_plain"] < 0.5
    assert "| sde | 2000 |" in bench.table(res, 1)
    from sdeflow import events

    defer = events.Monitor.defer
    bench._child("sde", "every", 0)  # the valgrind child runs (here without valgrind)
    assert events.Monitor.defer is defer  # and leaves the monitor as it was


def test_fresh_process_comparison_runs(bench: ModuleType) -> None:
    """``--processes``: one fresh process of each kind gives a row with three times."""
    out = bench.processes(["sde"], 1, n=1)
    row = out.splitlines()[-1]
    assert row.startswith("| sde |") and row.count("ms") == 3
