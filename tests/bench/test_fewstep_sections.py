"""bench/generative/fewstep.py ``--out``: the summary above the sections survives a rewrite."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from types import ModuleType

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "generative" / "fewstep.py"


@pytest.fixture(scope="module")
def fewstep() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_fewstep_bench", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look the module up by name
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules[spec.name]
    return mod


def test_write_sections_keeps_a_summary_that_names_the_markers(
        fewstep: ModuleType, tmp_path: pathlib.Path) -> None:
    head = ("# Results\n\nSections between `<!-- fewstep.py NAME -->` markers (e.g. "
            "`<!-- fewstep.py table -->`) are written by --out; this summary is kept.\n\n")
    old = (head + "<!-- fewstep.py orders -->\nold orders\n<!-- /fewstep.py orders -->\n\n"
           "<!-- fewstep.py table -->\nold table\n<!-- /fewstep.py table -->\n")
    f = tmp_path / "results.md"
    f.write_text(old)
    fewstep.write_sections(str(f), {"table": ["new table"], "peers": ["new peers"]})
    text = f.read_text()
    assert text.startswith(head.rstrip("\n") + "\n")
    assert "old orders" in text and "old table" not in text
    assert text.count("new table") == 1 and text.count("new peers") == 1
    sections = [line for line in text.splitlines() if line.startswith("<!-- fewstep.py ")]
    assert sections == [f"<!-- fewstep.py {n} -->" for n in ("orders", "table", "peers")]
    fewstep.write_sections(str(f), {})  # idempotent
    assert f.read_text() == text


def test_write_sections_new_file(fewstep: ModuleType, tmp_path: pathlib.Path) -> None:
    f = tmp_path / "new.md"
    fewstep.write_sections(str(f), {"sde": ["sde rows"]})
    text = f.read_text()
    assert text.startswith("# Few-step samplers: measured")
    assert "<!-- fewstep.py sde -->\nsde rows\n<!-- /fewstep.py sde -->" in text
