"""sf.ensemble in one process: chunk-size invariance, exact merging, truth, memory, bad input.

Problems: OU dX = -theta X dt + sigma dW, GBM dX = mu X dt + s X dW (Ito, diagonal), and a
nonlinear double well dX = (X - X^3) dt + sqrt(1 + X^2)/2 dW (arithmetic and sqrt only, which
are correctly rounded in vector and scalar kernels), and dX = (sin 3X - tanh X) dt +
0.3 exp(-X^2) dW (transcendental kernels: each chunk runs on a multiple of 64 rows, so no path
falls in a kernel's scalar tail). Seeds are stated per test.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sdeflow as sf
from sdeflow.ensemble import Moments

torch.set_num_threads(1)
D64 = torch.float64

THETA, SIGMA = 1.0, 0.5
OU = sf.SDE(lambda t, x: -THETA * x, lambda t, x: SIGMA * torch.ones_like(x), noise="diagonal")
MU, S = 0.05, 0.3
GBM = sf.SDE(lambda t, x: MU * x, lambda t, x: S * x, noise="diagonal")
WELL = sf.SDE(lambda t, x: x - x * x * x, lambda t, x: 0.5 * torch.sqrt(1.0 + x * x),
              noise="diagonal")
TRIG = sf.SDE(lambda t, x: torch.sin(3 * x) - torch.tanh(x),
              lambda t, x: 0.3 * torch.exp(-x * x), noise="diagonal")
PROBLEMS = {"ou": (OU, torch.tensor([1.0, -0.5], dtype=D64)),
            "trig": (TRIG, torch.tensor([0.3, -1.2], dtype=D64)),
            "gbm": (GBM, torch.tensor([1.0, 2.0], dtype=D64)),
            "well": (WELL, torch.tensor([0.3, -1.2], dtype=D64))}


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_samples_do_not_depend_on_chunk_size(name: str) -> None:
    """Seed 11, 2500 paths, 16 steps: chunk sizes 700 and 37 (do not divide), 500, 1024,
    2500."""
    prob, x0 = PROBLEMS[name]
    runs = [sf.ensemble(prob, x0, 2500, ts=[0.0, 0.5, 1.0], steps=16, seed=11,
                        chunk_size=c, keep_samples=True) for c in (700, 500, 1024, 2500, 37)]
    for r in runs[1:]:
        assert torch.equal(r.samples, runs[0].samples)
        torch.testing.assert_close(r.mean, runs[0].mean, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(r.cov, runs[0].cov, rtol=1e-12, atol=1e-14)
    # and they are the rows of one big solve with the same seed
    full = sf.solve(prob, x0.expand(2500, 2).clone(), ts=[0.0, 0.5, 1.0], steps=16, seed=11)
    assert torch.equal(full.ys, runs[0].samples)


def test_different_seeds_differ_and_paths_are_independent_of_n_paths() -> None:
    a = sf.ensemble(OU, torch.ones(1, dtype=D64), 900, t_span=(0, 1), steps=8, seed=1,
                    keep_samples=True, chunk_size=300)
    b = sf.ensemble(OU, torch.ones(1, dtype=D64), 2000, t_span=(0, 1), steps=8, seed=1,
                    keep_samples=True, chunk_size=777)
    c = sf.ensemble(OU, torch.ones(1, dtype=D64), 900, t_span=(0, 1), steps=8, seed=2,
                    keep_samples=True)
    assert torch.equal(a.samples, b.samples[:, :900])
    assert not torch.equal(a.samples[-1], c.samples[-1])


def test_merged_statistics_equal_the_statistics_of_the_samples() -> None:
    """Chan merging over 7 uneven chunks equals a direct computation on the samples."""
    r = sf.ensemble(WELL, torch.tensor([0.3, -1.2], dtype=D64), 3100, ts=[0.0, 0.3, 1.0],
                    steps=12, seed=5, chunk_size=450, keep_samples=True,
                    statistics=("mean", "cov", "var", lambda ys: ys[-1, :, 0:1] ** 2))
    ys = r.samples
    mean = ys.mean(1)
    c = ys - mean.unsqueeze(1)
    cov = torch.einsum("tnd,tne->tde", c, c) / (ys.shape[1] - 1)
    torch.testing.assert_close(r.mean, mean, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(r.cov, cov, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(r.var, torch.diagonal(cov, dim1=-2, dim2=-1), rtol=1e-12,
                               atol=1e-13)
    torch.testing.assert_close(r.stderr["mean"], (torch.diagonal(cov, dim1=-2, dim2=-1)
                                                  / 3100).sqrt(), rtol=1e-10, atol=0)
    label = next(iter(r.stats))
    torch.testing.assert_close(r.stats[label], (ys[-1, :, 0:1] ** 2).mean(0), rtol=1e-12,
                               atol=0)
    assert len(r.chunk_times) == 7 and bool((r.chunk_times > 0).all())


def test_chan_merge_is_exact_for_any_split() -> None:
    g = torch.Generator().manual_seed(0)
    v = torch.randn(1000, 3, 2, generator=g, dtype=D64) * 3 + 7
    whole = Moments.of(v, outer=True)
    for cut in (1, 17, 500, 999):
        m = Moments.of(v[:cut], True).merge(Moments.of(v[cut:], True), True)
        assert m.n == whole.n
        torch.testing.assert_close(m.mean, whole.mean, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(m.m2, whole.m2, rtol=1e-12, atol=1e-11)


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(1, 399), min_size=1, max_size=6, unique=True),
       shift=st.floats(-1e3, 1e3))
def test_chan_merge_property(cuts: list[int], shift: float) -> None:
    """Any split of 400 values into consecutive pieces merges to the whole's moments."""
    g = torch.Generator().manual_seed(len(cuts))
    v = torch.randn(400, 2, 3, generator=g, dtype=D64) + shift
    edges = [0, *sorted(cuts), 400]
    m = Moments.of(v[: edges[1]], True)
    for a, b in zip(edges[1:-1], edges[2:]):
        m = m.merge(Moments.of(v[a:b], True), True)
    whole = Moments.of(v, True)
    assert m.n == 400
    torch.testing.assert_close(m.mean, whole.mean, rtol=1e-12, atol=1e-12 * (1 + abs(shift)))
    torch.testing.assert_close(m.m2, whole.m2, rtol=1e-10, atol=1e-9)


def test_moments_match_fokker_planck_within_standard_errors() -> None:
    """OU from x0 = 1, sigma = 0.5, 10^6 paths in chunks of 10^5, seed 2026, 40 Euler steps.

    Exact: E X_t = e^{-t}, Var X_t = sigma^2 (1 - e^{-2t}) / 2. Euler-Maruyama's own moments
    are known in closed form (m_{k+1} = (1 - h) m_k, v_{k+1} = (1 - h)^2 v_k + sigma^2 h), so
    the test allows 4 standard errors plus that known bias, and separately checks the scheme's
    exact moments within 4 standard errors.
    """
    n, steps, T = 10**6, 40, 1.0
    ts = [0.0, 0.5, 1.0]
    r = sf.ensemble(OU, torch.ones(1, dtype=D64), n, ts=ts, steps=steps, seed=2026,
                    chunk_size=10**5, statistics=("mean", "var"))
    h = T / steps
    for i, t in enumerate(ts):
        k = round(t / h)
        m_em = (1 - h) ** k
        v_em = SIGMA**2 * h * sum((1 - h) ** (2 * j) for j in range(k))
        m_ex = math.exp(-t)
        v_ex = SIGMA**2 * (1 - math.exp(-2 * t)) / 2
        se_m, se_v = float(r.stderr["mean"][i, 0]), float(r.stderr["var"][i, 0])
        if t > 0:
            assert se_m > 0 and se_v > 0
        assert abs(float(r.mean[i, 0]) - m_em) <= 4 * se_m + 1e-15
        assert abs(float(r.var[i, 0]) - v_em) <= 4 * se_v + 1e-15
        assert abs(float(r.mean[i, 0]) - m_ex) <= 4 * se_m + abs(m_em - m_ex) + 1e-15
        assert abs(float(r.var[i, 0]) - v_ex) <= 4 * se_v + abs(v_em - v_ex) + 1e-15
    # the variance's standard error is the right size: sqrt((m4 - v^2)/n) = sqrt(2/n) v
    torch.testing.assert_close(r.stderr["var"][-1, 0],
                               torch.tensor(math.sqrt(2 / n) * v_em, dtype=D64), rtol=0.02,
                               atol=0)


def test_memory_is_bounded_by_the_chunk() -> None:
    """The merge state does not grow with n_paths; the chunk's working set grows with
    chunk_size only."""
    kw = dict(t_span=(0.0, 1.0), steps=4, seed=3)
    x0 = torch.ones(2, dtype=D64)
    small = sf.ensemble(OU, x0, 4096, chunk_size=2048, **kw)
    big = sf.ensemble(OU, x0, 2**18, chunk_size=2048, **kw)
    bigger_chunk = sf.ensemble(OU, x0, 2**18, chunk_size=8192, **kw)
    assert small.bytes_kept == big.bytes_kept
    assert small.chunk_bytes == big.chunk_bytes
    assert big.samples is None
    assert bigger_chunk.chunk_bytes > 3 * big.chunk_bytes
    # states at 2 times + initial states + noise counters, per path: d * 8 * (T + 1 + 1)
    assert big.chunk_bytes <= 2048 * 2 * 8 * 4 + 1024 * 8


def test_user_statistic_tail_probability_and_quantiles() -> None:
    """GBM from 1: P(X_1 > K) and quantiles of X_1 against the samples and the lognormal law
    (seed 9, 20000 paths, 50 steps)."""
    n, k_strike = 20000, 1.3
    q = sf.Quantiles([0.1, 0.5, 0.9], lo=0.0, hi=4.0, bins=4000)
    r = sf.ensemble(GBM, torch.ones(1, dtype=D64), n, t_span=(0.0, 1.0), steps=50, seed=9,
                    chunk_size=3000, keep_samples=True,
                    statistics={"tail": lambda ys: (ys[-1, :, 0] > k_strike).double(),
                                "q": q})
    x1 = r.samples[-1, :, 0]
    p = float((x1 > k_strike).double().mean())
    assert float(r.stats["tail"]) == pytest.approx(p, rel=1e-12)
    assert float(r.stderr["tail"]) == pytest.approx(math.sqrt(p * (1 - p) / (n - 1)), rel=1e-6)
    emp = torch.quantile(x1, torch.tensor([0.1, 0.5, 0.9], dtype=D64))
    width = 4.0 / 4000
    assert torch.all((r.quantiles[:, -1, 0] - emp).abs() <= width + 1e-12)
    # exact lognormal median exp(mu - s^2/2) within a few standard errors (density-based)
    med = math.exp(MU - S**2 / 2)
    dens = 1 / (med * S * math.sqrt(2 * math.pi))
    se = math.sqrt(0.25 / n) / dens
    assert abs(float(r.quantiles[1, -1, 0]) - med) <= 4 * se + width + 0.01  # + Euler bias


def test_quantiles_out_of_range_are_nan() -> None:
    q = sf.Quantiles([0.01, 0.99], lo=0.9, hi=1.1, bins=10)
    r = sf.ensemble(GBM, torch.ones(1, dtype=D64), 2000, t_span=(0.0, 1.0), steps=5, seed=1,
                    statistics=(q,))
    assert torch.isnan(r.quantiles[:, -1, 0]).all()
    assert not torch.isnan(r.quantiles[:, 0, 0]).any()  # at t=0 every path is at 1.0


def test_callable_x0_is_row_addressable() -> None:
    def x0(gen: torch.Generator, n: int) -> torch.Tensor:
        return torch.randn(n, 2, generator=gen, dtype=D64)

    runs = [sf.ensemble(OU, x0, 2300, t_span=(0.0, 1.0), steps=6, seed=4, chunk_size=c,
                        keep_samples=True) for c in (2300, 333, 1024)]
    for r in runs[1:]:
        assert torch.equal(r.samples, runs[0].samples)
    # initial states: block 0 and block 1 are different draws, N(0, 1)
    s0 = runs[0].samples[0]
    assert not torch.equal(s0[:1024], s0[1024:2048])
    assert abs(float(s0.mean())) < 4 / math.sqrt(s0.numel())


def test_event_statistics() -> None:
    """OU from 1 with a terminal event at X = 0.5: fraction fired and mean event time equal
    those of one big solve with the same seed (seed 8, 3000 paths)."""
    ev = sf.Event(lambda t, x: x[..., 0] - 0.5)
    r = sf.ensemble(OU, torch.ones(1, dtype=D64), 3000, t_span=(0.0, 2.0), steps=40, seed=8,
                    chunk_size=1100, event=ev)
    full = sf.solve(OU, torch.ones(3000, 1, dtype=D64), (0.0, 2.0), steps=40, seed=8, event=ev)
    et = full.event_t.reshape(-1)
    fired = ~torch.isnan(et)
    assert float(r.event["p"]) == pytest.approx(float(fired.double().mean()), rel=1e-12)
    assert r.event["n_fired"] == int(fired.sum())
    assert float(r.event["t_mean"]) == pytest.approx(float(et[fired].mean()), rel=1e-12)
    assert 0.3 < float(r.event["p"]) < 1.0


def test_adaptive_ensemble_runs_and_is_close_to_truth() -> None:
    """Adaptive EM on OU, 4000 paths, seed 6: the mean at t=1 within 4 standard errors plus the
    tolerance-driven bias bound rtol=1e-2 (a loose check that adaptive chunks run)."""
    r = sf.ensemble(OU, torch.ones(1, dtype=D64), 4000, t_span=(0.0, 1.0), rtol=1e-2,
                    atol=1e-3, seed=6, chunk_size=1500)
    assert abs(float(r.mean[-1, 0]) - math.exp(-1)) <= 4 * float(r.stderr["mean"][-1, 0]) + 0.01


def test_progress_bar_runs() -> None:
    r = sf.ensemble(OU, torch.ones(1, dtype=D64), 300, t_span=(0, 1), steps=2, seed=0,
                    chunk_size=100, progress=True)
    assert r.n_paths == 300 and len(r.chunk_times) == 3


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_paths=0), "n_paths"),
    (dict(n_paths=-3), "n_paths"),
    (dict(n_paths=2.5), "n_paths"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(chunk_size=-1), "chunk_size"),
    (dict(statistics=("mean", "kurtosis")), "statistics"),
    (dict(statistics=(lambda ys: ys.sum(),)), "statistics"),
    (dict(x0=lambda gen, n: torch.zeros(n + 1, 1, dtype=D64)), "x0"),
    (dict(x0=lambda gen, n: torch.zeros(n, dtype=D64)), "x0"),
    (dict(x0=torch.zeros(5, 1, dtype=D64)), "x0"),
    (dict(seed=1.5), "seed"),
    (dict(keep_samples=1), "keep_samples"),
])
def test_bad_input_names_the_argument(kwargs: dict, match: str) -> None:
    args = dict(problem=OU, x0=torch.ones(1, dtype=D64), n_paths=100, t_span=(0.0, 1.0),
                steps=4, seed=0)
    args.update(kwargs)
    calls = []
    prob = args.pop("problem")

    def spy(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape)
        return -x

    spied = sf.SDE(spy, lambda t, x: torch.ones_like(x), noise="diagonal")
    del prob
    with pytest.raises((ValueError, TypeError), match=match):
        sf.ensemble(spied, args.pop("x0"), args.pop("n_paths"), **args)
    assert calls == [] or all(s[0] == 1 for s in calls)  # at most the 1-path probe ran
