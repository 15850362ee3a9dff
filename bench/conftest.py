"""Shared set-up of the benchmark suites under ``bench/``.

``bench/micro`` holds pytest-benchmark micro-benchmarks (``pytest bench/micro``);
``bench/workprecision`` holds the work-precision runs against the peer libraries
(``python bench/workprecision/run.py``, the same engine as ``sdeflow bench``). Neither is
collected by the test suite (``testpaths = ["tests"]``), and no timing is ever asserted.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

pytest.importorskip("pytest_benchmark", reason="the micro-benchmarks need pytest-benchmark")

# One intra-op thread unless SDEFLOW_BENCH_THREADS says otherwise (0: torch's default): on a
# shared machine multi-threaded ops stall at OpenMP's barrier and timings swing 100-fold.
_THREADS = int(os.environ.get("SDEFLOW_BENCH_THREADS", "1"))
if _THREADS > 0:
    torch.set_num_threads(_THREADS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group the micro-benchmarks by file in pytest-benchmark's table."""
    for item in items:
        if "benchmark" in getattr(item, "fixturenames", ()):
            group = item.module.__name__.rsplit(".", 1)[-1]  # type: ignore[attr-defined]
            item.add_marker(pytest.mark.benchmark(group=group))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the derived quantities (us per step, overhead ratios) the tests collected."""
    common = sys.modules.get("micro_common")
    rows = getattr(common, "SUMMARY", None)
    if not rows:
        return
    tr = terminalreporter
    tr.section("sdeflow micro-benchmarks: derived quantities (medians)")
    for line in common.format_summary(rows):  # type: ignore[union-attr]
        tr.write_line(line)
