"""Sampling the exact fields through the core solvers reproduces the target (docs/math.md §23).

Statistics and tolerances (all seeds fixed):

* n = 2000 generated samples; reference: n = 2000 exact samples (seed 100).
* Mean: z = (mean_hat - mean) / sqrt(var / n) against the exact mixture mean; |z| < 4.
* Covariance: z = (cov_hat - cov) / sqrt(Var[(X_i - m_i)(X_j - m_j)] / n) against the exact
  covariance, the fourth moments estimated from 1e5 exact samples; |z| < 4.
* Two-sample statistic: unbiased MMD^2 (sum of Gaussian kernels, bandwidths 0.5, 1, 2) to the
  reference sample. Its null spread is measured, not assumed: 12 independent exact samples of the
  same size against the same reference give mean m0 and sd s0; the threshold is m0 + 5 s0.
  ``test_mmd_threshold_has_power`` shows a visibly biased sampler (Euler, 10 steps) exceeds it.

Discretisation is chosen so its bias is well below these tolerances (measured at n = 4000: rk4
with 10 and 25 steps give the same MMD to 3 digits; EM at 200 steps has |z| < 2).
"""

from __future__ import annotations

import pytest
import torch
from gen_stats import _kernel_sum, excess_kurtosis, fourth_moments, mmd2, moment_zscores
from sdeflow_generative import (
    CondOT,
    DiffusionSDE,
    GaussianMixture,
    GaussianPath,
    Langevin,
    ProbabilityFlowODE,
    VariancePreserving,
    datasets,
)

import sdeflow as sf

F64 = torch.float64
N = 2000
Z_TOL = 4.0
N_NULL = 12


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Reference:
    """Exact moments, a reference sample and the measured MMD^2 null for one target."""

    def __init__(self, target: GaussianMixture, seed: int) -> None:
        self.target = target
        self.y = target.sample(N, generator=_gen(seed))
        self.yy = _kernel_sum(self.y, self.y, exclude_diagonal=True)
        self.fourth = fourth_moments(target.sample(100_000, generator=_gen(seed + 1)))
        null = torch.tensor([self.mmd2(target.sample(N, generator=_gen(seed + 10 + r)))
                             for r in range(N_NULL)])
        self.null_mean, self.null_sd = float(null.mean()), float(null.std())
        self.threshold = self.null_mean + 5 * self.null_sd

    def mmd2(self, x: torch.Tensor) -> float:
        return mmd2(x, self.y, self.yy)

    def check(self, x: torch.Tensor, what: str) -> None:
        assert bool(torch.isfinite(x).all()), what
        zm, zc = moment_zscores(x, self.target.mean, self.target.covariance, self.fourth)
        assert float(zm.abs().max()) < Z_TOL, f"{what}: mean z-scores {zm.tolist()}"
        assert float(zc.abs().max()) < Z_TOL, f"{what}: covariance z-scores {zc.tolist()}"
        stat = self.mmd2(x)
        assert stat < self.threshold, (
            f"{what}: MMD^2 {stat:.3g} above the null threshold {self.threshold:.3g} "
            f"(null mean {self.null_mean:.3g}, sd {self.null_sd:.3g})"
        )


@pytest.fixture(scope="module")
def ref() -> Reference:
    return Reference(datasets.mixture2d(), seed=100)


def test_null_spread_is_sane(ref: Reference) -> None:
    # the unbiased MMD^2 of two independent exact samples is centred near 0
    assert abs(ref.null_mean) < 3 * ref.null_sd
    assert 0 < ref.null_sd < 0.01


@pytest.mark.parametrize("solver,steps", [("heun", 50), ("rk4", 20)])
def test_pf_ode_reproduces_target(ref: Reference, solver: str, steps: int) -> None:
    path = GaussianPath(CondOT())
    ode = ProbabilityFlowODE(path, path.marginal(ref.target).velocity)
    x0 = torch.randn(N, 2, generator=_gen(1), dtype=F64)  # p_0 = N(0, I) exactly
    sol = sf.solve(ode, x0, t_span=ode.t_span, solver=solver, steps=steps)
    ref.check(sol.x_final, f"PF-ODE {solver} x {steps}")


def test_mmd_threshold_has_power(ref: Reference) -> None:
    path = GaussianPath(CondOT())
    ode = ProbabilityFlowODE(path, path.marginal(ref.target).velocity)
    x0 = torch.randn(N, 2, generator=_gen(1), dtype=F64)
    x = sf.solve(ode, x0, t_span=ode.t_span, solver="euler", steps=10).x_final
    assert ref.mmd2(x) > 2 * ref.threshold


@pytest.mark.parametrize(
    "sched,eta",
    [(CondOT(), 0.5), (CondOT(), 1.0), (VariancePreserving(), 1.0)],
    ids=["condot-eta0.5", "condot-eta1", "vp-eta1"],
)
def test_diffusion_sde_euler_maruyama_reproduces_target(ref: Reference, sched, eta: float) -> None:
    """EM with 200 steps over the SDE's default t_span, started from exact samples of p_{t0}
    (t0 = 1e-3 for CondOT, where alpha_0 = 0 makes the eta-drift singular; 0 for VP)."""
    path = GaussianPath(sched)
    m = path.marginal(ref.target)
    sde = DiffusionSDE(path, m.velocity, eta=eta)
    x0 = m.sample(N, sde.t_span[0], generator=_gen(2))
    sol = sf.solve(sde, x0, t_span=sde.t_span, solver="euler_maruyama", steps=200, seed=3)
    ref.check(sol.x_final, f"{type(sched).__name__} eta={eta} EM x 200")


def test_langevin_converges_to_gmm() -> None:
    """Langevin dX = s(X) dt + sqrt(2) dW on an overlapping 2-component GMM, from N(0, 3^2 I),
    500 EM steps of h = 0.01 (T = 5, over 10 relaxation times). EM's stationary bias is O(h):
    h / (2 lambda_min(S)) ~ 1.25% of the variances here, under 1 SE at n = 2000."""
    target = GaussianMixture(torch.tensor([[-1.0, 0.0], [1.0, 0.5]], dtype=F64),
                             torch.tensor([[0.5, 0.1], [0.1, 0.5]], dtype=F64),
                             torch.tensor([0.6, 0.4], dtype=F64))
    r = Reference(target, seed=300)
    x0 = 3.0 * torch.randn(N, 2, generator=_gen(4), dtype=F64)
    sol = sf.solve(Langevin(target, sigma=2**0.5), x0, t_span=(0.0, 5.0), solver="euler_maruyama",
                   steps=500, seed=5)
    r.check(sol.x_final, "Langevin")
    # and it did move: the start is far from the target in MMD
    assert r.mmd2(x0) > 10 * r.threshold


def test_euler_maruyama_increments_are_gaussian() -> None:
    """Noise increments must be N(0, h I): variance 1 and excess kurtosis 0 after scaling by
    sigma sqrt(h). A product of two normals (MIT lab 2's bug) has excess kurtosis 6, uniform
    noise -1.2; with 2e5 increments the SE of the kurtosis is sqrt(24 / 2e5) = 0.011 and of the
    variance sqrt(2 / 2e5) = 0.0032; tolerance 5 SE."""
    zero = Langevin(lambda x: torch.zeros_like(x), sigma=0.7)
    x0 = torch.zeros(20_000, 2, dtype=F64)
    sol = sf.solve(zero, x0, t_span=(0.0, 1.0), solver="euler_maruyama", steps=5, seed=6,
                   save_all=True)
    inc = (sol.ys[1:] - sol.ys[:-1]) / (0.7 * 0.2**0.5)
    n = inc.numel()
    assert abs(float(inc.mean())) < 5 * (1 / n) ** 0.5
    assert abs(float(inc.var()) - 1.0) < 5 * (2 / n) ** 0.5
    assert abs(excess_kurtosis(inc)) < 5 * (24 / n) ** 0.5
    # increments of different steps and coordinates are uncorrelated
    flat = inc.reshape(5, -1)
    corr = torch.corrcoef(flat)
    assert float((corr - torch.eye(5, dtype=F64)).abs().max()) < 5 / (flat.shape[1] ** 0.5)
    # the test has power: a product of two normals is rejected
    g = _gen(7)
    bad = torch.randn(n, generator=g, dtype=F64) * torch.randn(n, generator=g, dtype=F64)
    assert abs(excess_kurtosis(bad)) > 100 * (24 / n) ** 0.5


def test_diffusion_sde_noise_residuals_are_standard_normal() -> None:
    """For the plugin's own SDE: (x_{k+1} - x_k - h f(t_k, x_k)) / (sigma_{t_k} sqrt(h)) ~ N(0, 1)
    iid, on every EM step (CondOT, eta = 1, 2e5 residuals, 5 SE tolerances as above)."""
    path = GaussianPath(CondOT())
    m = path.marginal(datasets.mixture2d())
    sde = DiffusionSDE(path, m.velocity, eta=1.0)
    t0, t1, steps = 0.1, 1.0, 20
    x0 = m.sample(5000, t0, generator=_gen(8))
    sol = sf.solve(sde, x0, t_span=(t0, t1), solver="euler_maruyama", steps=steps, seed=9,
                   save_all=True)
    ts = sol.ts
    h = (t1 - t0) / steps
    res = []
    for k in range(steps):
        f = sde.drift(ts[k], sol.ys[k])
        g = sde.diffusion(ts[k], sol.ys[k])
        res.append((sol.ys[k + 1] - sol.ys[k] - h * f) / (g * h**0.5))
    r = torch.stack(res)
    n = r.numel()
    assert abs(float(r.mean())) < 5 * (1 / n) ** 0.5
    assert abs(float(r.var()) - 1.0) < 5 * (2 / n) ** 0.5
    assert abs(excess_kurtosis(r)) < 5 * (24 / n) ** 0.5
