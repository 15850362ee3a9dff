"""Adaptive SDE solves: step doubling on one Brownian path.

Strong errors are measured against exact pathwise solutions (geometric Brownian motion with a
time-dependent rate: X_T = x0 exp(int_0^T a - sigma^2 T / 2 + sigma W_T), a function of W_T only)
on shared :class:`sdeflow.BrownianPath` objects; seeds are fixed, sample sizes stated.
"""

from __future__ import annotations

import math

import pytest
import torch

import sdeflow as sf
from sdeflow.control import PIController
from sdeflow.solvers import AdaptiveMilstein, AdaptiveStochasticHeun, StepDoubling

F64 = torch.float64
MU, SIG = 0.5, 0.8


def gbm(kind: str = "ito") -> sf.SDE:
    return sf.SDE(lambda t, x: MU * x, lambda t, x: SIG * x, noise="diagonal", kind=kind)


def gbm_exact(x0: torch.Tensor, w: torch.Tensor, t: float, kind: str = "ito") -> torch.Tensor:
    drift = MU - SIG**2 / 2 if kind == "ito" else MU
    return x0 * torch.exp(drift * t + SIG * w)


@pytest.mark.parametrize("kind", ["ito", "stratonovich"])
def test_strong_error_falls_with_rtol_on_a_shared_path(kind: str) -> None:
    """200 GBM paths on one BrownianPath; rtol = 1e-1, 1e-2, 1e-3: the mean strong error at
    T = 1 falls each time (by at least 2x per decade), and stays near rtol * E|X|."""
    n = 200
    bm = sf.BrownianPath((n, 1), seed=11, dtype=F64)
    x0 = torch.ones(n, 1, dtype=F64)
    exact = gbm_exact(x0, bm(1.0), 1.0, kind)
    errs = []
    for rtol in (1e-1, 1e-2, 1e-3):
        sol = sf.solve(gbm(kind), x0, (0.0, 1.0), rtol=rtol, atol=rtol * 1e-2, brownian=bm)
        errs.append(float((sol.x_final - exact).abs().mean()))
        assert sol.stats["accepted"] + sol.stats["rejected"] == sol.stats["steps"]
    assert errs[0] > 2 * errs[1] > 4 * errs[2], errs
    assert errs[-1] < 1e-2


def test_default_schemes() -> None:
    x0 = torch.ones(4, 1, dtype=F64)
    ito = sf.solve(gbm("ito"), x0, (0.0, 1.0), rtol=1e-2, seed=0)
    assert ito.stats["nfe_diffusion"] == 2 * ito.stats["nfe_drift"]  # Milstein: g twice, f once
    strat = sf.solve(gbm("stratonovich"), x0, (0.0, 1.0), rtol=1e-2, seed=0)
    assert strat.stats["nfe_diffusion"] == strat.stats["nfe_drift"]  # stochastic Heun: 2 + 2
    assert AdaptiveMilstein.fits("diagonal", "ito")
    assert AdaptiveStochasticHeun.fits("diagonal", "stratonovich")
    assert not AdaptiveStochasticHeun.fits("diagonal", "ito")
    # same seed, same answer; every attempt makes three base steps
    again = sf.solve(gbm("ito"), x0, (0.0, 1.0), rtol=1e-2, seed=0)
    assert torch.equal(ito.x_final, again.x_final)
    assert ito.stats["nfe_drift"] == 3 * ito.stats["steps"]


def test_rejected_steps_requery_the_same_path() -> None:
    """Every attempt queries [t, t + h/2, t + h] of the one path; after a rejection the retry
    starts at the same t with a shorter step (the bridge fills in the new times), and the result
    equals the pathwise exact solution, which depends on W(1) only."""
    calls: list[list[float]] = []

    class Spy(sf.BrownianPath):
        def grid(self, ts, space_time=False):  # type: ignore[override]
            calls.append([float(v) for v in ts])
            return super().grid(ts, space_time)

    n = 50
    bm = Spy((n, 1), seed=5, dtype=F64)
    w1 = bm(1.0).clone()
    x0 = torch.ones(n, 1, dtype=F64)
    sol = sf.solve(gbm(), x0, (0.0, 1.0), rtol=1e-3, atol=1e-5, brownian=bm, dt0=0.5)
    assert sol.stats["rejected"] >= 1
    starts = [c[0] for c in calls]
    retried = [i for i in range(1, len(calls)) if starts[i] == starts[i - 1]]
    assert retried, "no rejected step was retried"
    for i in retried:
        assert calls[i][2] < calls[i - 1][2]  # shorter step from the same start
    assert torch.equal(bm(1.0), w1)  # the path's endpoint never changed
    assert float((sol.x_final - gbm_exact(x0, w1, 1.0)).abs().mean()) < 0.02


def test_fewer_steps_than_fixed_on_a_stiff_transient() -> None:
    """dX = a(t) X dt + 0.5 X dW with a(t) = 0.5 - L exp(-((t - 0.4)/w)^2), w = 0.01, L = 113:
    a drift 200x larger than elsewhere on an interval of width ~0.04. At rtol = 1e-2 (dt_max =
    0.05, so no step can jump the bump unseen) the adaptive solve's strong error (100 paths) is
    beaten by fixed-step Milstein only with more than 10x its steps (and more evaluations)."""
    w, sig, c, t_end = 0.01, 0.5, 0.4, 1.0
    lam = 2.0 / (w * math.sqrt(math.pi))

    def a(t: torch.Tensor) -> torch.Tensor:
        return 0.5 - lam * torch.exp(-(((t - c) / w) ** 2))

    integral = 0.5 * t_end - lam * w * math.sqrt(math.pi) / 2 * (
        math.erf((t_end - c) / w) + math.erf(c / w))
    sde = sf.SDE(lambda t, x: a(t) * x, lambda t, x: sig * x, noise="diagonal")
    n = 100
    bm = sf.BrownianPath((n, 1), seed=3, dtype=F64)
    x0 = torch.ones(n, 1, dtype=F64)
    exact = x0 * torch.exp(integral - sig**2 * t_end / 2 + sig * bm(t_end))
    ad = sf.solve(sde, x0, (0.0, t_end), rtol=1e-2, atol=1e-4, brownian=bm,
                  controller=PIController(dt_max=0.05))
    err_ad = float((ad.x_final - exact).abs().mean())
    steps_ad = ad.stats["steps"]  # attempted steps, rejected ones included
    fixed = sf.solve(sde, x0, (0.0, t_end), solver="milstein", steps=10 * steps_ad, brownian=bm)
    err_fixed = float((fixed.x_final - exact).abs().mean())
    assert err_fixed > err_ad, (err_fixed, err_ad, steps_ad)
    assert fixed.stats["nfe"] > ad.stats["nfe"]


def test_sra1_and_general_noise_adaptive() -> None:
    """Any fixed-step scheme runs adaptively by step doubling: SRA1 (needs the space-time
    integral of each half and of the whole step) on an OU process, checked against its exact
    mean and variance at T = 1 (2000 paths, 5 standard errors); general noise defaults to
    adaptive Euler--Maruyama."""
    theta, sig = 2.0, 0.7
    ou = sf.SDE(lambda t, x: -theta * x, lambda t, x: sig * torch.ones_like(x), noise="additive")
    n = 2000
    x0 = torch.ones(n, 1, dtype=F64)
    sol = sf.solve(ou, x0, (0.0, 1.0), solver="sra1", rtol=1e-2, atol=1e-3, seed=1)
    xs = sol.x_final.squeeze(-1)
    mean, var = math.exp(-theta), sig**2 / (2 * theta) * (1 - math.exp(-2 * theta))
    assert abs(float(xs.mean()) - mean) < 5 * math.sqrt(var / n)
    assert abs(float(xs.var()) - var) < 5 * var * math.sqrt(2 / n)
    b = torch.tensor([[0.3, 0.1], [0.0, 0.2]], dtype=F64)
    gen = sf.SDE(lambda t, x: -x, lambda t, x: b.expand(*x.shape[:-1], 2, 2), noise="general")
    out = sf.solve(gen, torch.ones(3, 2, dtype=F64), (0.0, 1.0), rtol=1e-2, seed=0)
    assert out.success and out.x_final.shape == (3, 2)
    assert isinstance(StepDoubling("sra1"), StepDoubling)


def test_outputs_land_on_ts_and_backward_time() -> None:
    """SDE steps land on every output time (an interpolant is not a sample of the solution);
    backward in time on the same path works as well."""
    n = 100
    bm = sf.BrownianPath((n, 1), seed=2, dtype=F64)
    x0 = torch.ones(n, 1, dtype=F64)
    ts = torch.linspace(0.0, 1.0, 6, dtype=F64)
    sol = sf.solve(gbm(), x0, ts=ts, rtol=1e-3, atol=1e-5, brownian=bm)
    assert torch.equal(sol.ts, ts)
    for t, y in zip(ts.tolist(), sol.ys):
        assert float((y - gbm_exact(x0, bm(t), t)).abs().mean()) < 0.01
    # backward: dX = -mu X dt - sigma X dW run from t = 1 to t = 0 reverses nothing in law, but
    # for additive drift-free noise the exact answer is X_0 = X_1 + sigma (W_0 - W_1)
    bw = sf.SDE(lambda t, x: torch.zeros_like(x), lambda t, x: 0.3 * torch.ones_like(x),
                noise="additive")
    back = sf.solve(bw, x0, (1.0, 0.0), rtol=1e-3, brownian=bm)
    assert torch.allclose(back.x_final, x0 + 0.3 * (bm(0.0) - bm(1.0)), atol=1e-12)


def test_sde_failures_and_options() -> None:
    x0 = torch.ones(10, 1, dtype=F64)
    with pytest.raises(sf.MaxStepsError, match="max_steps=3"):
        sf.solve(gbm(), x0, (0.0, 1.0), rtol=1e-4, seed=0, max_steps=3)
    part = sf.solve(gbm(), x0, (0.0, 1.0), rtol=1e-4, seed=0, max_steps=3, on_failure="return")
    assert part.status == "max_steps" and part.t_reached < 1.0
    with pytest.raises(ValueError, match="seed, brownian"):
        sf.solve(gbm(), x0, (0.0, 1.0), rtol=1e-3, seed=0,
                 brownian=sf.BrownianPath((10, 1), seed=0, dtype=F64))
    with pytest.raises(ValueError, match="brownian"):
        sf.solve(gbm(), x0, (0.0, 1.0), rtol=1e-3, brownian=sf.BrownianPath((3, 1), seed=0))
    with pytest.raises(ValueError, match="solver"):
        sf.solve(gbm("stratonovich"), x0, (0.0, 1.0), rtol=1e-3, solver="adaptive_em")
    dense = sf.solve(gbm(), x0, (0.0, 1.0), rtol=1e-2, seed=0, dense=True, save_all=True)
    mid = 0.5 * (dense.ts[1] + dense.ts[2])
    assert torch.allclose(dense.evaluate(mid), 0.5 * (dense.ys[1] + dense.ys[2]))
