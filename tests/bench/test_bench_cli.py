"""``sdeflow bench`` argument checks: made before anything is measured, naming the argument;
the output folder is written whole at the end (never a mix of two runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sdeflow_bench as bm
from sdeflow_bench import suite

from sdeflow import cli

TINY = ["--profile", "tiny", "--no-progress", "--only", "ode_fixed", "--problems", "linear_b1"]


@pytest.fixture
def no_measuring(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("measuring started before the arguments were checked")

    monkeypatch.setattr(suite, "_run_sections", boom)


def test_out_that_is_a_file(tmp_path: Path, no_measuring: None,
                            capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "file.txt"
    f.write_text("keep me")
    assert bm.main([*TINY, "--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "not a folder" in err
    assert f.read_text() == "keep me"


def test_out_under_a_file_or_unwritable(tmp_path: Path, no_measuring: None,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert bm.main([*TINY, "--out", str(f / "sub")]) == 2
    assert "--out" in capsys.readouterr().err


def test_out_that_holds_other_files(tmp_path: Path, no_measuring: None,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert bm.main([*TINY, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "bench.json" in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_unknown_device_is_checked_first(tmp_path: Path, no_measuring: None,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    for dev in ("nonsense", "cuda:99"):
        assert bm.main([*TINY, "--device", dev, "--out", str(tmp_path / "o")]) == 2
        assert "--device" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="device"):
        cfg = bm.Config.for_profile("tiny")
        cfg.device = "nonsense"
        bm.run_suite(cfg, None)


def test_missing_or_broken_from_json(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert bm.main(["--from-json", str(tmp_path / "nope.json"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--from-json" in err and "nope.json" in err and "Traceback" not in err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert bm.main(["--from-json", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "--from-json" in capsys.readouterr().err


def test_other_bad_numbers(tmp_path: Path, no_measuring: None,
                           capsys: pytest.CaptureFixture[str]) -> None:
    assert bm.main([*TINY, "--rounds", "0", "--out", str(tmp_path / "o")]) == 2
    assert "--rounds" in capsys.readouterr().err
    assert bm.main([*TINY, "--threads", "-1", "--out", str(tmp_path / "o")]) == 2
    assert "--threads" in capsys.readouterr().err


def test_interrupted_run_leaves_the_old_folder(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "res"
    assert bm.main([*TINY, "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "bench.json" in before

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(suite, "_run_sections", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bm.main([*TINY, "--out", str(out)])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["res"]  # no temporary folder left


def test_rerun_replaces_the_folder_whole(tmp_path: Path) -> None:
    out = tmp_path / "res"
    assert bm.main([*TINY, "--out", str(out)]) == 0
    (out / "stale.png").write_bytes(b"old")
    first = json.loads((out / "bench.json").read_text())["meta"]["date"]
    assert bm.main([*TINY, "--out", str(out)]) == 0
    assert not (out / "stale.png").exists()
    assert json.loads((out / "bench.json").read_text())["meta"]["date"] >= first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]


def test_redraw_from_json_into_a_new_folder(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "res"
    assert bm.main([*TINY, "--out", str(out)]) == 0
    again = tmp_path / "again"
    assert bm.main(["--from-json", str(out / "bench.json"), "--out", str(again)]) == 0
    assert (again / "bench.md").exists() and (again / "bench.json").exists()
    assert "redrew" in capsys.readouterr().out


def test_sdeflow_bench_through_the_plugin_mechanism(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``sdeflow bench`` reaches sdeflow_bench.run through the entry point."""
    from importlib.metadata import EntryPoint

    ep = EntryPoint("bench", "sdeflow_bench", cli.PLUGIN_GROUP)
    monkeypatch.setattr(cli, "_entry_points", lambda: [ep])
    out = tmp_path / "res"
    assert cli.main(["bench", *TINY, "--out", str(out)]) == 0
    data = json.loads((out / "bench.json").read_text())
    assert data["meta"]["command"].startswith("sdeflow")
    assert {r["section"] for r in data["records"]} == {"ode_fixed"}


def test_missing_bench_extra_is_a_clear_error(tmp_path: Path, no_measuring: None,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    from sdeflow_bench import cli as bench_cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tqdm" else real(name, *a))
    assert bench_cli.missing_requirements() == ["tqdm"]
    assert bm.main([*TINY, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "tqdm" in err and "sdeflow[bench]" in err
    assert not (tmp_path / "o").exists()
