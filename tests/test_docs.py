"""Every ```python block of README.md and docs/*.md runs.

The blocks of one file run in order in one fresh namespace (a page's later blocks may use what
its earlier ones defined), in a temporary working directory, with one torch thread. A block
that defines functions named ``test_*`` (the pytest-style examples of docs/verification.md) has
them called, as pytest would. A RuntimeWarning or UserWarning raised by a block fails it.
Nothing is skipped: a page with a block that cannot run fails, and
the block is to be fixed in the page. Blocks fenced as anything but ``python`` (``bash``, text)
are not Python and are not run.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line of the block's first code line, code)`` of each ```python block."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in _FENCE.finditer(text)]


@pytest.fixture
def one_thread_in_tmp(tmp_path: Path) -> Iterator[None]:
    before, cwd = torch.get_num_threads(), os.getcwd()
    torch.set_num_threads(1)
    os.chdir(tmp_path)
    try:
        yield
    finally:
        os.chdir(cwd)
        torch.set_num_threads(before)


def test_blocks_are_found() -> None:
    """The extraction itself (so that an empty list cannot pass for a clean run)."""
    text = "a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = 2\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n"), (9, "y = 2\n")]
    assert sum(len(python_blocks(p.read_text())) for p in PAGES) >= 8


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_page_code_runs(page: Path, one_thread_in_tmp: None) -> None:
    blocks = python_blocks(page.read_text())
    ns: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for line, code in blocks:
        defined = set(ns)
        # padded so that a traceback shows the page's own line numbers
        compiled = compile("\n" * (line - 1) + code, str(page), "exec")
        with warnings.catch_warnings():
            # a warning from an example (e.g. a tolerance below the dtype's resolution) is a
            # defect of the page
            warnings.simplefilter("error", RuntimeWarning)
            warnings.simplefilter("error", UserWarning)
            exec(compiled, ns)  # noqa: S102  (the docs' own code)
            for name in sorted(set(ns) - defined):
                fn = ns[name]
                if name.startswith("test_") and callable(fn):
                    fn()
