"""Shared set-up of the generative-plugin tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_intra_op_thread() -> Iterator[None]:
    """Run each plugin test module with one intra-op thread, restoring the setting afterwards.

    These tests use many small tensors (2-D states, a few thousand points); on a 2-core machine
    that is also busy, torch's intra-op thread pool makes them up to 10x slower, not faster.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
