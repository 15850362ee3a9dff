"""Every Python code block of docs/fewstep.md runs (each in a fresh namespace)."""

from __future__ import annotations

import pathlib
import re

import pytest
import torch

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "fewstep.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_doc_has_blocks() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_doc_block_runs(i: int, capsys: pytest.CaptureFixture[str]) -> None:
    torch.set_num_threads(1)
    exec(compile(BLOCKS[i], f"{DOC.name}[{i}]", "exec"), {"__name__": "__doc_block__"})
    assert capsys.readouterr().out.strip()  # every block prints what it shows
