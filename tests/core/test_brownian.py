"""BrownianPath: statistics, refinement consistency, reproducibility, row slices, memory, errors.

Monte Carlo checks use n = 200,000 independent paths (the entries of ``shape``), float64, fixed
seeds, and a tolerance of 5 standard errors of the estimator: for a sample variance of a
N(0, v) sample the standard error is v sqrt(2/n); for a covariance of two unit-scaled variables
it is about sqrt((v1 v2 + c^2)/n).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sdeflow as sf

N = 200_000
F64 = torch.float64


def _var_ok(sample: torch.Tensor, v: float) -> None:
    se = v * math.sqrt(2.0 / sample.numel())
    assert abs(sample.var().item() - v) < 5 * se, (sample.var().item(), v, se)


def _cov_ok(a: torch.Tensor, b: torch.Tensor, c: float, va: float, vb: float) -> None:
    se = math.sqrt((va * vb + c * c) / a.numel())
    est = (a * b).mean().item()
    assert abs(est - c) < 5 * se, (est, c, se)


def test_increments_have_variance_h_and_are_independent() -> None:
    bm = sf.BrownianPath((N,), t0=0.0, t1=2.0, seed=1, dtype=F64)
    ts = torch.linspace(0.0, 2.0, 9, dtype=F64)
    dw, _ = bm.grid(ts, space_time=True)
    h = 0.25
    for k in range(8):
        _var_ok(dw[k], h)
    for k in range(7):
        _cov_ok(dw[k], dw[k + 1], 0.0, h, h)
    _cov_ok(dw[0], dw[7], 0.0, h, h)


def test_bridge_variance_when_the_end_is_known_first() -> None:
    bm = sf.BrownianPath((N,), seed=2, dtype=F64)
    w1 = bm(1.0).clone()
    w3 = bm(0.3)
    # W_0.3 | W_1 ~ N(0.3 W_1, 0.3 * 0.7)
    _var_ok(w3 - 0.3 * w1, 0.3 * 0.7)
    _cov_ok(w3 - 0.3 * w1, w1, 0.0, 0.21, 1.0)
    _var_ok(w3, 0.3)


def test_space_time_integral_moments_fresh_and_refined() -> None:
    bm = sf.BrownianPath((N,), seed=3, dtype=F64)
    i01 = bm.space_time(0.0, 1.0)
    _var_ok(i01, 1.0 / 3.0)
    _cov_ok(i01, bm.increment(0.0, 1.0), 0.5, 1.0 / 3.0, 1.0)
    # a refined child interval keeps the unconditional law
    h = 0.25
    i_child = bm.space_time(0.5, 0.75)
    dw_child = bm.increment(0.5, 0.75)
    _var_ok(i_child, h**3 / 3)
    _var_ok(dw_child, h)
    _cov_ok(i_child, dw_child, h**2 / 2, h**3 / 3, h)


def test_finer_query_agrees_with_coarser_one_exactly() -> None:
    bm = sf.BrownianPath((1000, 2), seed=4, dtype=F64)
    coarse = torch.linspace(0, 1, 5, dtype=F64)
    dw_c, i_c = bm.grid(coarse, space_time=True)
    dw_c, i_c = dw_c.clone(), i_c.clone()
    fine = torch.linspace(0, 1, 65, dtype=F64)
    dw_f, i_f = bm.grid(fine, space_time=True)
    # increments add up, and integrals add up as I = sum_e [I_e + (W_e - W_start) h_e]
    torch.testing.assert_close(dw_f.view(4, 16, 1000, 2).sum(1), dw_c, rtol=0, atol=1e-12)
    w_f = torch.cat([torch.zeros(1, 1000, 2, dtype=F64), dw_f.cumsum(0)])
    h = 1 / 64
    for k in range(4):
        pieces = [i_f[j] + (w_f[j] - w_f[16 * k]) * h for j in range(16 * k, 16 * k + 16)]
        torch.testing.assert_close(torch.stack(pieces).sum(0), i_c[k], rtol=0, atol=1e-12)
    # asking the coarse grid again returns the values first given
    dw_c2, i_c2 = bm.grid(coarse, space_time=True)
    torch.testing.assert_close(dw_c2, dw_c, rtol=0, atol=1e-12)
    torch.testing.assert_close(i_c2, i_c, rtol=0, atol=1e-12)


def test_fine_first_then_coarse_statistics() -> None:
    """Whatever the query order, the path has Brownian statistics at every resolution."""
    bm = sf.BrownianPath((N,), seed=5, dtype=F64)
    fine = torch.linspace(0, 1, 33, dtype=F64)
    bm.grid(fine, space_time=True)
    # non-dyadic times inserted afterwards: bridges inside stored intervals
    w = bm(torch.tensor([0.1, 0.37, 0.71], dtype=F64))
    _var_ok(w[0], 0.1)
    _var_ok(w[1] - w[0], 0.27)
    _cov_ok(w[1] - w[0], w[2] - w[1], 0.0, 0.27, 0.34)


def test_reproducible_by_seed_and_different_across_seeds() -> None:
    qs = [0.5, 0.1, 0.9, 0.33]
    a = sf.BrownianPath((7, 3), seed=11)
    b = sf.BrownianPath((7, 3), seed=11)
    c = sf.BrownianPath((7, 3), seed=12)
    va = [a(t) for t in qs]
    vb = [b(t) for t in qs]
    for x, y in zip(va, vb):
        assert torch.equal(x, y)
    assert not torch.equal(va[0], c(0.5))
    assert torch.equal(a(0.5), va[0])  # stored values never change
    assert torch.equal(a(0.0), torch.zeros(7, 3))


def test_backward_grid_is_the_reverse_of_the_forward_one() -> None:
    bm = sf.BrownianPath((N,), seed=6, dtype=F64)
    fw, fi = bm.grid([0.0, 0.5, 1.0], space_time=True)
    bw, bi = bm.grid([1.0, 0.5, 0.0], space_time=True)
    torch.testing.assert_close(bw[0], -fw[1])
    # reversed step from a to b (b < a), h = b - a: Cov(dW, I) = h/2 * |h| < 0
    _cov_ok(bi[0], bw[0], -0.125, 0.5**3 / 3, 0.5)
    torch.testing.assert_close(bi[0], bm.space_time(1.0, 0.5))


def test_dtype_and_default_dtype() -> None:
    assert sf.BrownianPath(3, seed=0)(0.5).dtype == torch.get_default_dtype()
    assert sf.BrownianPath(3, seed=0, dtype=F64)(0.5).dtype == F64


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(shape=(2,), t0=1.0, t1=0.0), "t0, t1"),
        (dict(shape=(2,), dtype=torch.int64), "dtype"),
        (dict(shape=(2,), seed=1.5), "seed"),
    ],
)
def test_bad_construction(kwargs: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        sf.BrownianPath(**kwargs)


def test_query_outside_interval_names_the_argument() -> None:
    bm = sf.BrownianPath((2,), t0=0.0, t1=1.0, seed=0)
    with pytest.raises(ValueError, match="t: time 1.5"):
        bm(1.5)
    with pytest.raises(ValueError, match="ts"):
        bm.grid([0.0, 2.0])


# ------------------------------------------------------------------ v2: storage and refinement
def test_refinement_of_mixed_parents_leaves_no_duplicate_and_keeps_values() -> None:
    """The defect found by torchsde's consistency tests: one query refining intervals with and
    without a stored space-time integral once duplicated a time (or crashed)."""
    bm = sf.BrownianPath((6,), seed=0, dtype=F64)
    g1 = [0.0, 0.2, 0.4, 0.6, 0.8]
    dw1, _ = bm.grid(g1)
    w1 = torch.cat([torch.zeros(1, 6, dtype=F64), dw1.cumsum(0)])
    i46 = bm.space_time(0.4, 0.6).clone()
    bm.grid([0.1, 0.5, 0.7], space_time=True)
    times = bm._t.tolist()
    assert times == sorted(set(times)) == [0.0, 0.1, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8]
    for t, w in zip(g1, w1):
        torch.testing.assert_close(bm(t), w, rtol=0, atol=1e-14)
    # the refined integral still adds up to the one given before
    dw, it = bm.grid([0.4, 0.5, 0.6], space_time=True)
    torch.testing.assert_close(it[0] + it[1] + dw[0] * 0.1, i46, rtol=0, atol=1e-14)


def test_mixed_refinement_keeps_the_brownian_law() -> None:
    """Refining, in one query, an interval with a stored integral and one without: the children
    keep Var h and the space-time covariances (N = 200,000, seed 8, 5 standard errors)."""
    bm = sf.BrownianPath((N,), seed=8, dtype=F64)
    bm.grid([0.0, 0.5, 1.0])
    bm.space_time(0.5, 1.0)
    dw, it = bm.grid([0.0, 0.25, 0.5, 0.75, 1.0], space_time=True)
    for k in range(4):
        _var_ok(dw[k], 0.25)
        _var_ok(it[k], 0.25**3 / 3)
        _cov_ok(it[k], dw[k], 0.25**2 / 2, 0.25**3 / 3, 0.25)
    _cov_ok(dw[2], dw[3], 0.0, 0.25, 0.25)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 63), min_size=1, max_size=12), st.booleans())
def test_stored_values_never_change_under_any_queries(ks: list[int], with_i: bool) -> None:
    """Property: whatever is asked later, W at a stored time is returned unchanged and
    increments over a grid add up to W."""
    bm = sf.BrownianPath((3, 2), seed=1, dtype=F64)
    base = bm(torch.tensor([0.25, 0.5, 1.0], dtype=F64)).clone()
    if with_i:
        bm.space_time(0.25, 0.5)
    for k in ks:
        bm.increment(k / 64, (k + 0.5) / 64)
    again = bm(torch.tensor([0.25, 0.5, 1.0], dtype=F64))
    assert torch.equal(again, base)
    ts = sorted({0.0, *(k / 64 for k in ks), 1.0})
    dw, _ = bm.grid(ts)
    torch.testing.assert_close(dw.sum(0), base[2], rtol=0, atol=1e-13)
    assert bm.stored_times == len(set(bm._t.tolist()))


def test_row_slices_of_a_path_are_bit_identical() -> None:
    full = sf.BrownianPath((2500, 2), seed=3, dtype=F64)
    part = sf.BrownianPath((2500, 2), seed=3, dtype=F64, batch_slice=slice(1024, 2500))
    assert tuple(part.shape) == (1476, 2)
    for bm in (full, part):
        bm.grid([0.0, 0.5, 1.0])
        bm.space_time(0.5, 1.0)
    qf = full.grid([0.1, 0.25, 0.7, 0.9], space_time=True)
    qp = part.grid([0.1, 0.25, 0.7, 0.9], space_time=True)
    assert torch.equal(qf[0][:, 1024:], qp[0]) and torch.equal(qf[1][:, 1024:], qp[1])
    assert torch.equal(full(0.33)[1024:], part(0.33))


def test_a_users_path_keeps_what_it_was_asked() -> None:
    """Memory counted in stored bytes: a path asked for a grid of n times holds n rows."""
    bm = sf.BrownianPath((100, 2), seed=0, dtype=F64)
    row = 100 * 2 * 8
    bm.grid([k / 64 for k in range(65)])
    assert bm.stored_times == 65
    assert 65 * row <= bm.nbytes() <= 2 * 65 * row + 4096   # arena capacity doubles
    dw, _ = bm.grid([k / 64 for k in range(65)])
    assert bm.stored_times == 65
    assert bm.nbytes() <= 2 * 65 * row + 4096


def test_release_keeps_memory_bounded_in_a_forward_sweep() -> None:
    """An owned path asked step-doubling queries [t, t + h/2, t + h] with a release behind t
    after each step holds a few rows whatever the number of steps (1,024 steps here)."""
    bm = sf.BrownianPath((1000, 2), seed=0, dtype=F64)
    row = 1000 * 2 * 8
    n = 1024
    h = 1.0 / n
    peak = 0
    for k in range(n):
        t = k * h
        bm.grid([t, t + h / 2, t + h], space_time=True)
        if k % 7 == 3:   # a rejected attempt: a shorter step from the same t
            bm.grid([t, t + h / 4, t + h / 2], space_time=True)
        bm.release_before(t + h)
        peak = max(peak, bm.nbytes())
    assert peak <= 32 * 2 * row, peak        # <= 16 rows of W and 16 of I
    assert bm.stored_times <= 4
    with pytest.raises(ValueError, match="released"):
        bm(0.5)


def test_release_after_for_backward_sweeps() -> None:
    bm = sf.BrownianPath((10,), seed=0, dtype=F64)
    w1 = bm(1.0).clone()
    for k in range(64, 0, -1):
        t = k / 64
        bm.grid([t, t - 1 / 128, t - 1 / 64])
        bm.release_after(t - 1 / 64)
    assert bm.stored_times <= 3
    assert torch.equal(bm(0.0), torch.zeros(10, dtype=F64))
    with pytest.raises(ValueError, match="released"):
        bm.increment(0.0, 1.0)
    del w1


def test_bad_queries_and_construction_v2() -> None:
    with pytest.raises(TypeError, match="dtype"):
        sf.BrownianPath(3, dtype="float32")  # type: ignore[arg-type]
    bm = sf.BrownianPath((2,), seed=0)
    with pytest.raises(ValueError, match="s, t: expected two distinct"):
        bm.space_time(0.3, 0.3)
    with pytest.raises(ValueError, match="ts: expected strictly monotone"):
        bm.grid([0.0, 0.5, 0.4])
    with pytest.raises(ValueError, match="ts: expected at least two"):
        bm.grid([0.5])
    with pytest.raises(ValueError, match="t: time -0.1"):
        bm(-0.1)


@pytest.mark.parametrize(
    "sl, match",
    [(slice(0, 3000), "0 <= a < b"), (slice(512, 2048), "multiples of the block size 1024"),
     (slice(0, 1500), "multiples"), (slice(1024, 1024), "0 <= a < b"),
     (slice(0, 2048, 2), "step 1")],
)
def test_bad_batch_slice(sl: slice, match: str) -> None:
    with pytest.raises(ValueError, match="batch_slice: .*" + match):
        sf.BrownianPath((2048, 2), seed=0, batch_slice=sl)


def test_solve_rejects_a_path_of_another_dtype_or_device() -> None:
    sde = sf.SDE(lambda t, x: -x, lambda t, x: torch.ones_like(x), noise="diagonal")
    x0 = torch.ones(4, 1, dtype=F64)
    bm32 = sf.BrownianPath((4, 1), seed=0, dtype=torch.float32)
    with pytest.raises(ValueError, match="brownian: the path's dtype torch.float32"):
        sf.solve(sde, x0, (0.0, 1.0), steps=4, brownian=bm32)
    with pytest.raises(ValueError, match="brownian: the path's dtype"):
        sf.solve(sde, x0, (0.0, 1.0), rtol=1e-2, brownian=bm32)
    meta = sf.BrownianPath((4, 1), seed=0, dtype=F64, device="meta")
    with pytest.raises(ValueError, match="brownian: the path lives on device meta"):
        sf.solve(sde, x0, (0.0, 1.0), steps=4, brownian=meta)
    with pytest.raises(TypeError, match="brownian: expected an sdeflow BrownianPath"):
        sf.solve(sde, x0, (0.0, 1.0), steps=4, brownian=object())  # type: ignore[arg-type]
