"""BrownianPath: statistics, refinement consistency, reproducibility, errors.

Monte Carlo checks use n = 200,000 independent paths (the entries of ``shape``), float64, fixed
seeds, and a tolerance of 5 standard errors of the estimator: for a sample variance of a
N(0, v) sample the standard error is v sqrt(2/n); for a covariance of two unit-scaled variables
it is about sqrt((v1 v2 + c^2)/n).
"""

from __future__ import annotations

import math

import pytest
import torch

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
    dw, _ = bm.grid(ts)
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
    dw_c, i_c = bm.grid(coarse)
    dw_c, i_c = dw_c.clone(), i_c.clone()
    fine = torch.linspace(0, 1, 65, dtype=F64)
    dw_f, i_f = bm.grid(fine)
    # increments add up, and integrals add up as I = sum_e [I_e + (W_e - W_start) h_e]
    torch.testing.assert_close(dw_f.view(4, 16, 1000, 2).sum(1), dw_c, rtol=0, atol=1e-12)
    w_f = torch.cat([torch.zeros(1, 1000, 2, dtype=F64), dw_f.cumsum(0)])
    h = 1 / 64
    for k in range(4):
        pieces = [i_f[j] + (w_f[j] - w_f[16 * k]) * h for j in range(16 * k, 16 * k + 16)]
        torch.testing.assert_close(torch.stack(pieces).sum(0), i_c[k], rtol=0, atol=1e-12)
    # asking the coarse grid again returns the values first given
    dw_c2, i_c2 = bm.grid(coarse)
    torch.testing.assert_close(dw_c2, dw_c, rtol=0, atol=1e-12)
    torch.testing.assert_close(i_c2, i_c, rtol=0, atol=1e-12)


def test_fine_first_then_coarse_statistics() -> None:
    """Whatever the query order, the path has Brownian statistics at every resolution."""
    bm = sf.BrownianPath((N,), seed=5, dtype=F64)
    fine = torch.linspace(0, 1, 33, dtype=F64)
    bm.grid(fine)
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
    fw, fi = bm.grid([0.0, 0.5, 1.0])
    bw, bi = bm.grid([1.0, 0.5, 0.0])
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
