"""Exact marginal paths of mixture targets (docs/math.md §22), checked against independent
computations:
autograd of log p_t, self-normalised Monte Carlo of E[u(x|z) | x], and the continuity and
Fokker-Planck equations by finite differences."""

from __future__ import annotations

import math

import pytest
import torch
from sdeflow_generative import (
    CondOT,
    Cosine,
    DiffusionSDE,
    Empirical,
    GaussianMixture,
    GaussianPath,
    SquareRoot,
    VariancePreserving,
    datasets,
)
from sdeflow_generative.schedules import Schedule

F64 = torch.float64
SCHEDULES = [CondOT(), SquareRoot(), Cosine(), VariancePreserving()]
IDS = ["condot", "sqrt", "cosine", "vp"]
T_NEAR_ENDS = [0.0, 1e-4, 0.2, 0.5, 0.8, 1 - 1e-4, 1.0]


def _points(n: int = 40, seed: int = 0) -> torch.Tensor:
    return 2.0 * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("sched", SCHEDULES, ids=IDS)
def test_score_is_autograd_of_log_prob(sched: Schedule) -> None:
    m = GaussianPath(sched).marginal(datasets.mixture2d())
    x = _points()
    for t in T_NEAR_ENDS:
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(m.log_prob(xg, t).sum(), xg)
        torch.testing.assert_close(m.score(x, t), grad, rtol=1e-10, atol=1e-10,
                                   msg=lambda s, t=t: f"t={t}: {s}")


def test_marginal_ends() -> None:
    target = datasets.mixture2d()
    x = _points()
    std_normal = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(-1)
    for sched in (CondOT(), SquareRoot(), Cosine()):
        m = GaussianPath(sched).marginal(target)
        torch.testing.assert_close(m.log_prob(x, 1.0), target.log_prob(x), rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(m.log_prob(x, 0.0), std_normal, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(m.score(x, 0.0), -x, rtol=1e-13, atol=1e-13)
    # CondOT at t=0: u_0(x) = E[z] - x (x is independent of z there)
    m = GaussianPath(CondOT()).marginal(target)
    torch.testing.assert_close(m.velocity(x, 0.0), target.mean - x, rtol=1e-12, atol=1e-12)
    # VP at t=0: p_0 = sum_k pi_k N(alpha_0 mu_k, alpha_0^2 S_k + beta_0^2 I), close to N(0, I)
    mvp = GaussianPath(VariancePreserving()).marginal(target)
    assert (mvp.log_prob(x, 0.0) - std_normal).abs().max() < 0.05


def test_marginal_follows_dtype_and_time_shapes() -> None:
    m = GaussianPath(CondOT()).marginal(datasets.mixture2d())
    x = _points(6).reshape(2, 3, 2)
    t = torch.tensor([[0.1, 0.5, 0.9], [0.2, 0.3, 0.4]], dtype=F64)
    u = m.velocity(x, t)
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(u[i, j], m.velocity(x[i, j], float(t[i, j])), rtol=1e-13,
                                       atol=1e-14)
    assert m.log_prob(x, t).shape == (2, 3)
    assert m.score(x.float(), t.float()).dtype == torch.float32


def _mc_conditional_expectation(path: GaussianPath, target: GaussianMixture, x: torch.Tensor,
                                t: float, n_z: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Self-normalised importance estimate of E[u(x|z) | x] and E[grad log p(x|z) | x].

    z_j ~ p_data, w_j ∝ p_t(x | z_j) = N(x; alpha z_j, beta^2 I). SE per coordinate by the delta
    method: sqrt(sum_j w_j^2 (f_j - f_hat)^2) / sum_j w_j.
    """
    z = target.sample(n_z, generator=torch.Generator().manual_seed(seed))
    v = path.schedule(torch.tensor(t, dtype=F64))
    xs = x.unsqueeze(1).expand(-1, n_z, -1)  # (P, n_z, d)
    zs = z.expand(x.shape[0], -1, -1)
    w = torch.softmax(-((xs - v.alpha * zs) ** 2).sum(-1) / (2 * v.beta**2), dim=1)  # (P, n_z)
    res = []
    for f in (path.conditional_velocity(xs, zs, t), path.conditional_score(xs, zs, t)):
        est = torch.einsum("pj,pjd->pd", w, f)
        se = torch.sqrt(torch.einsum("pj,pjd->pd", w**2, (f - est.unsqueeze(1)) ** 2))
        res += [est, se]
    return tuple(res)


@pytest.mark.parametrize("sched", [CondOT(), VariancePreserving()], ids=["condot", "vp"])
@pytest.mark.parametrize("t", [0.2, 0.5, 0.8])
def test_velocity_and_score_equal_monte_carlo_posterior_means(sched: Schedule, t: float) -> None:
    """Exact u_t(x) and s_t(x) vs self-normalised MC with 2e5 data samples, within 5 SE.

    Points x are drawn from p_t itself (where the posterior is well sampled). The SE comes from the
    delta method; 5 SE on 8 points x 2 coordinates x 2 fields keeps false alarms < 1e-4.
    """
    path = GaussianPath(sched)
    target = datasets.mixture2d()
    m = path.marginal(target)
    x = m.sample(8, t, generator=torch.Generator().manual_seed(11))
    u_hat, u_se, s_hat, s_se = _mc_conditional_expectation(path, target, x, t, 200_000, seed=7)
    u, s = m.velocity(x, t), m.score(x, t)
    assert bool(((u - u_hat).abs() <= 5 * u_se).all()), ((u - u_hat) / u_se)
    assert bool(((s - s_hat).abs() <= 5 * s_se).all()), ((s - s_hat) / s_se)
    # the MC is informative: SEs are small compared with the fields
    assert float(u_se.max()) < 0.05 and float(s_se.max()) < 0.1


def test_empirical_marginal_is_softmax_of_conditional_fields() -> None:
    """Empirical data (S_k = 0):
    u_t(x) = sum_k softmax_k(-|x - alpha z_k|^2 / 2 beta^2) u_t(x|z_k)."""
    pts = datasets.moons(50, seed=0, dtype=F64)
    path = GaussianPath(CondOT())
    m = path.marginal(Empirical(pts))
    x = _points(10)
    for t in [0.0, 1e-4, 0.3, 0.9, 1 - 1e-4]:
        v = path.schedule(torch.tensor(t, dtype=F64))
        logits = -((x.unsqueeze(1) - v.alpha * pts) ** 2).sum(-1) / (2 * v.beta**2)
        w = torch.softmax(logits, -1)
        xs, zs = x.unsqueeze(1).expand(-1, 50, -1), pts.expand(10, -1, -1)
        u_ref = (w.unsqueeze(-1) * path.conditional_velocity(xs, zs, t)).sum(1)
        s_ref = (w.unsqueeze(-1) * path.conditional_score(xs, zs, t)).sum(1)
        torch.testing.assert_close(m.velocity(x, t), u_ref, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(m.score(x, t), s_ref, rtol=1e-9, atol=1e-9)
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(m.log_prob(xg, t).sum(), xg)
        torch.testing.assert_close(m.score(x, t), grad, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="t=1"):
        m.velocity(x, 1.0)


# ------------------------------------------------------------------ PDEs by finite differences
def _fd_log_p_terms(m, x: torch.Tensor, t: float, h: float = 1e-4) -> tuple[torch.Tensor, ...]:
    """Central differences: d/dt log p, grad log p, Laplacian log p (x: (n, d))."""
    dt_logp = (m.log_prob(x, t + h) - m.log_prob(x, t - h)) / (2 * h)
    d = x.shape[-1]
    hx = 1e-3
    grad = torch.zeros_like(x)
    lap = torch.zeros(x.shape[0], dtype=x.dtype)
    lp0 = m.log_prob(x, t)
    for i in range(d):
        e = torch.zeros(d, dtype=x.dtype)
        e[i] = hx
        lp_p, lp_m = m.log_prob(x + e, t), m.log_prob(x - e, t)
        grad[:, i] = (lp_p - lp_m) / (2 * hx)
        lap = lap + (lp_p - 2 * lp0 + lp_m) / hx**2
    return dt_logp, grad, lap


def _fd_div(f, x: torch.Tensor, hx: float = 1e-4) -> torch.Tensor:
    d = x.shape[-1]
    div = torch.zeros(x.shape[0], dtype=x.dtype)
    for i in range(d):
        e = torch.zeros(d, dtype=x.dtype)
        e[i] = hx
        div = div + (f(x + e)[:, i] - f(x - e)[:, i]) / (2 * hx)
    return div


def _fd_pde_targets() -> list[GaussianMixture]:
    one_d = GaussianMixture(torch.tensor([[-1.5], [1.0]], dtype=F64),
                            torch.tensor([0.2, 0.5], dtype=F64),
                            torch.tensor([0.3, 0.7], dtype=F64))
    return [one_d, datasets.mixture2d()]


@pytest.mark.parametrize("target", _fd_pde_targets(), ids=["1d", "2d"])
@pytest.mark.parametrize("sched", [CondOT(), Cosine(), VariancePreserving()],
                         ids=["condot", "cosine", "vp"])
def test_continuity_equation_by_finite_differences(
    target: GaussianMixture, sched: Schedule
) -> None:
    """d/dt p_t = -div(p_t u_t), in log form: d/dt log p + div u + u . grad log p = 0.

    Central differences in t (h=1e-4) and x (1e-3 for log p, 1e-4 for u): truncation
    O(h^2 * derivatives) ~ 1e-6 and rounding ~ 1e-12, so a 1e-4 residual bound (relative to the
    size of the terms) separates a correct field from any wrong one.
    """
    m = GaussianPath(sched).marginal(target)
    x = m.sample(30, 0.5, generator=torch.Generator().manual_seed(2))
    for t in [0.01, 0.3, 0.6, 0.9, 0.99]:
        dt_logp, grad, _ = _fd_log_p_terms(m, x, t)
        u = m.velocity(x, t)
        div_u = _fd_div(lambda y, t=t: m.velocity(y, t), x)
        residual = dt_logp + div_u + (u * grad).sum(-1)
        scale = dt_logp.abs() + div_u.abs() + (u * grad).sum(-1).abs()
        assert float((residual.abs() / scale.clamp_min(1.0)).max()) < 1e-4, (t, residual)


@pytest.mark.parametrize("target", _fd_pde_targets(), ids=["1d", "2d"])
@pytest.mark.parametrize("how", ["eta", "sigma", "sigma_score_param"])
def test_fokker_planck_by_finite_differences(target: GaussianMixture, how: str) -> None:
    """The DiffusionSDE's own drift f and diffusion sigma satisfy
    d/dt p = -div(p f) + sigma^2/2 Lap p, i.e. in log form
    d/dt log p + div f + f . grad log p - sigma^2/2 (Lap log p + |grad log p|^2) = 0."""
    path = GaussianPath(CondOT())
    m = path.marginal(target)
    if how == "eta":
        sde = DiffusionSDE(path, m.velocity, eta=0.7)
    elif how == "sigma":
        sde = DiffusionSDE(path, m.velocity, sigma=lambda t: 0.3 + t)
    else:
        sde = DiffusionSDE(path, m.score, param="score", sigma=lambda t: 0.3 + t)
    x = m.sample(30, 0.5, generator=torch.Generator().manual_seed(3))
    for t in [0.05, 0.3, 0.6, 0.9]:
        tt = torch.tensor(t, dtype=F64)
        dt_logp, grad, lap = _fd_log_p_terms(m, x, t)
        f = sde.drift(tt, x)
        sig = sde.diffusion(tt, x)
        assert torch.allclose(sig, sig[:1, :1].expand_as(sig))  # sigma_t I
        s2 = float(sig[0, 0]) ** 2
        div_f = _fd_div(lambda y, tt=tt: sde.drift(tt, y), x)
        diff_term = 0.5 * s2 * (lap + (grad * grad).sum(-1))
        residual = dt_logp + div_f + (f * grad).sum(-1) - diff_term
        scale = dt_logp.abs() + div_f.abs() + (f * grad).sum(-1).abs() + diff_term.abs()
        assert float((residual.abs() / scale.clamp_min(1.0)).max()) < 1e-4, (t, residual)
        if how == "eta":  # sigma_t^2 = 2 eta b_t, b_t = beta^2 alpha_dot/alpha - beta beta_dot
            b = (1 - t) ** 2 / t + (1 - t)
            assert s2 == pytest.approx(2 * 0.7 * b, rel=1e-12)


def test_wrong_drift_sign_violates_fokker_planck() -> None:
    """Power check of the test above: u - sigma^2/2 s instead of u + sigma^2/2 s fails it."""
    path = GaussianPath(CondOT())
    m = path.marginal(datasets.mixture2d())
    x = m.sample(30, 0.5, generator=torch.Generator().manual_seed(3))
    t, sig = 0.5, 0.8
    dt_logp, grad, lap = _fd_log_p_terms(m, x, t)

    def wrong(y: torch.Tensor) -> torch.Tensor:
        return m.velocity(y, t) - 0.5 * sig**2 * m.score(y, t)

    residual = dt_logp + _fd_div(wrong, x) + (wrong(x) * grad).sum(-1) - 0.5 * sig**2 * (
        lap + (grad * grad).sum(-1))
    assert float(residual.abs().max()) > 1e-1
    assert math.isfinite(float(residual.abs().max()))
