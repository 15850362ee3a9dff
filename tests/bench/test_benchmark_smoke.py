"""Smoke test of the benchmark package (``sdeflow_bench``) on a tiny configuration.

Checks that the suite runs end to end, prints its ratio tables and writes JSON and PNG files;
that a missing peer is skipped with a note; and the equal-error ratio arithmetic. Nothing here
asserts a timing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import sdeflow_bench as bm
import torch
from sdeflow_bench import handloop, ode, ratios, sde, suite

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_bench_tiny_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    rc = bm.main(["--profile", "tiny", "--out", str(out), "--no-progress",
                  "--problems", "linear_b1,vdp1,ou"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "hand-written torch loop" in printed
    assert "Fixed-step ODE" in printed and "SDE" in printed

    data = json.loads((out / "bench.json").read_text())
    assert {"meta", "records", "ratios", "notes", "files"} <= set(data)
    assert data["meta"]["profile"] == "tiny"
    assert data["meta"]["torch"]
    sections = {r["section"] for r in data["records"]}
    assert {"handloop", "ode_fixed", "sde"} <= sections
    hand = [r for r in data["ratios"]["handloop"] if r["library"] == "sdeflow"]
    assert hand and all(r["ratio_to_hand"] > 0 for r in hand)
    ok = [r for r in data["records"] if r["section"] == "ode_fixed" and r["wall"] is not None]
    assert ok and all(r["error"] is not None and r["nfe"] > 0 for r in ok)
    sde = [r for r in data["records"] if r["section"] == "sde" and r["library"] == "sdeflow"]
    assert sde and all(r["error"] is not None and r["error"] > 0 for r in sde)

    pngs = [f for f in data["files"] if f.endswith(".png")]
    assert "bench_handloop.png" in pngs and "bench_ode_fixed.png" in pngs
    assert "bench_sde_strong.png" in pngs
    for name in pngs:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC


def test_missing_peer_is_skipped_with_a_note(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    real = bm.peer_versions

    def without_torchode() -> dict[str, str | None]:
        return {**real(), "torchode": None}

    for mod in (suite, handloop, ode, sde):  # every module that asks which peers exist
        monkeypatch.setattr(mod, "peer_versions", without_torchode)
    cfg = bm.Config.for_profile("tiny")
    cfg.sections = ("ode_fixed",)
    cfg.problems = ("linear_b1",)
    result = bm.run_suite(cfg, tmp_path, progress=False)
    libs = {r.library for r in result["records"]}
    assert "torchode" not in libs and "sdeflow" in libs
    assert any("torchode" in n and "skipped" in n for n in result["notes"])
    assert (tmp_path / "bench.json").exists()


def test_bad_section_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert bm.main(["--only", "nonsense", "--no-progress"]) == 2
    assert "unknown section" in capsys.readouterr().err


def test_equal_error_ratio_of_shifted_curves() -> None:
    # cost = 1/err for the peer; sdeflow reaches every error at half the cost
    theirs = [(10.0 ** -k, 10.0**k) for k in range(1, 6)]
    mine = [(e, c / 2) for e, c in theirs]
    assert bm.equal_error_ratio(mine, theirs) == pytest.approx(0.5)
    # disjoint error ranges: no ratio
    far = [(e * 1e-9, c) for e, c in theirs]
    assert math.isnan(bm.equal_error_ratio(far, theirs))
    # dominated points are dropped from the front
    front = ratios._pareto([(1e-2, 5.0), (1e-3, 4.0), (1e-4, 8.0)])
    assert front == [(1e-4, 8.0), (1e-3, 4.0)]


def test_interleave_runs_every_item_once_per_round() -> None:
    calls: list[str] = []
    items = [bm.Timed(k, (lambda k=k: calls.append(k))) for k in "ABC"]
    items[2].extra_rounds = 2
    bm.interleave(items, 4, torch.device("cpu"))
    assert calls[:6] == ["A", "B", "C", "C", "B", "A"]
    for r in range(4):  # every round runs every item once
        assert sorted(calls[3 * r: 3 * r + 3]) == ["A", "B", "C"]
    assert calls[12:] == ["C", "C"]  # extra rounds for C only
    assert [len(t.walls) for t in items] == [4, 4, 6]
    assert all(t.median >= 0 for t in items)
