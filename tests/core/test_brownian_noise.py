"""SeededNoise (the noise of ``solve(..., seed=)``) and the counter-based draws behind every
Brownian source: independence of call grouping, row slices, law, and the solve's use of it.

Monte Carlo: 100,000 x 2 entries, float64, seed 4, tolerance 5 standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sdeflow as sf
from sdeflow.brownian import BLOCK_ROWS, SeededNoise
from sdeflow.brownian._random import normals

F64 = torch.float64


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 7), min_size=1, max_size=6), st.booleans())
def test_values_do_not_depend_on_how_steps_are_grouped(groups: list[int], st_: bool) -> None:
    n = sum(groups)
    h = torch.full((n,), 0.01, dtype=F64)
    one = SeededNoise((40, 3), seed=5, dtype=F64)
    dw, it = one.increments(h, space_time=True)
    other = SeededNoise((40, 3), seed=5, dtype=F64)
    parts, ints = [], []
    i = 0
    for g in groups:
        d, s = other.increments(h[i:i + g], space_time=st_)
        parts.append(d)
        ints.append(s)
        i += g
    assert torch.equal(torch.cat(parts), dw)        # dW never depends on space_time either
    if st_:
        assert torch.equal(torch.cat(ints), it)     # type: ignore[arg-type]


@pytest.mark.parametrize("sl", [slice(0, 1024), slice(1024, 2048), slice(2048, 2500),
                                slice(1024, 2500)])
def test_row_slices_are_bit_identical(sl: slice) -> None:
    h = torch.tensor([0.1, 0.2, 0.05], dtype=F64)
    full = SeededNoise((2500, 2), seed=9, dtype=F64).increments(h, space_time=True)
    part_src = SeededNoise((2500, 2), seed=9, dtype=F64, batch_slice=sl)
    assert part_src.shape == (sl.stop - sl.start, 2)
    part = part_src.increments(h, space_time=True)
    assert torch.equal(full[0][:, sl], part[0]) and torch.equal(full[1][:, sl], part[1])


def test_bit_identical_across_thread_counts_and_layouts() -> None:
    """The transcendental steps run on padded layouts: the same entries come out whatever the
    number of intra-op threads and whatever else is drawn in the same call."""
    keys = torch.tensor([11, -5, 2**40], dtype=torch.int64)
    elems = torch.arange(70_001, dtype=torch.int64) * 0x3C6EF372
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = normals(keys, elems, F64, pair=True)
        torch.set_num_threads(2)
        b = normals(keys, elems, F64, pair=True)
        c = normals(keys[1:2], elems[5:77], F64, pair=True)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(a, b)
    assert torch.equal(c, a[:, 1:2, 5:77])


def test_law_of_increments_and_space_time_integrals() -> None:
    n, h = 100_000, 0.04
    src = SeededNoise((n, 2), seed=4, dtype=F64)
    dw, it = src.increments(torch.tensor([h, -h], dtype=F64), space_time=True)
    m = dw[0].numel()
    for k in range(2):
        d, i = dw[k].reshape(-1), it[k].reshape(-1)  # type: ignore[index]
        assert abs(d.mean().item()) < 5 * math.sqrt(h / m)
        assert abs(d.var().item() - h) < 5 * h * math.sqrt(2 / m)
        assert abs(i.var().item() - h**3 / 3) < 5 * h**3 / 3 * math.sqrt(2 / m)
        c = h * h / 2 * (1 if k == 0 else -1)      # Cov(dW, I) = h |h| / 2
        se = math.sqrt((h * h**3 / 3 + c * c) / m)
        assert abs((d * i).mean().item() - c) < 5 * se
    z = dw[0].reshape(-1) / math.sqrt(h)
    assert abs((z**4).mean().item() - 3) < 5 * math.sqrt(96 / m)   # Var z^4 = 96
    assert abs((dw[0] * dw[1]).mean().item()) < 5 * h / math.sqrt(m)


def test_solve_with_seed_draws_from_seeded_noise() -> None:
    """``solve(seed=s)`` is Euler-Maruyama on SeededNoise(shape, s): rows a:b of a seeded solve
    can be reproduced from SeededNoise(..., batch_slice=slice(a, b)) alone."""
    sde = sf.SDE(lambda t, x: -x, lambda t, x: 0.5 * x, noise="diagonal")
    b, d, steps = 2 * BLOCK_ROWS + 100, 2, 16
    x0 = torch.ones(b, d, dtype=F64)
    sol = sf.solve(sde, x0, (0.0, 1.0), solver="euler_maruyama", steps=steps, seed=123)
    src = SeededNoise((b, d), seed=123, dtype=F64, batch_slice=slice(BLOCK_ROWS, b))
    x = x0[BLOCK_ROWS:].clone()
    h = 1.0 / steps
    for _ in range(steps):
        dw, _ = src.increments(torch.tensor([h], dtype=F64))
        x = x + (-x) * h + 0.5 * x * dw[0]
    torch.testing.assert_close(sol.x_final[BLOCK_ROWS:], x, rtol=1e-14, atol=0)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="batch_slice"):
        SeededNoise((2048,), seed=0, batch_slice=slice(0, 1000))
    with pytest.raises(ValueError, match="batch_slice: a 0-dim"):
        SeededNoise((), seed=0, batch_slice=slice(0, 1))
    with pytest.raises(TypeError, match="seed"):
        SeededNoise((3,), seed="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dtype"):
        SeededNoise((3,), seed=0, dtype="float32")  # type: ignore[arg-type]
