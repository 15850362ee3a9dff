"""Targets: exact densities against torch.distributions, scores against autograd, sampling."""

from __future__ import annotations

import math

import pytest
import torch
from sdeflow_generative import datasets
from sdeflow_generative.targets import Empirical, Gaussian, GaussianMixture, NoDensityError

F64 = torch.float64


def _reference_gmm(t: GaussianMixture) -> torch.distributions.Distribution:
    D = torch.distributions
    comp = D.MultivariateNormal(t.means, covariance_matrix=t.covs)
    return D.MixtureSameFamily(D.Categorical(probs=t.weights), comp)


def _targets() -> list[GaussianMixture]:
    g = torch.Generator().manual_seed(3)
    A = torch.randn(3, 3, 3, generator=g, dtype=F64)
    full3 = GaussianMixture(
        torch.randn(3, 3, generator=g, dtype=F64), A @ A.transpose(-1, -2) + 0.3 * torch.eye(3),
        torch.tensor([0.2, 0.5, 0.3], dtype=F64),
    )
    diag = GaussianMixture(torch.tensor([[0.0, 1.0], [2.0, -1.0]], dtype=F64),
                           torch.tensor([[0.5, 0.2], [1.0, 2.0]], dtype=F64))
    iso = GaussianMixture(torch.tensor([[0.0], [3.0]], dtype=F64),
                          torch.tensor([0.5, 2.0], dtype=F64), [1.0, 3.0])
    return [datasets.mixture2d(), full3, diag, iso]


@pytest.mark.parametrize("target", _targets(), ids=["mixture2d", "full3", "diag", "iso1d"])
def test_log_prob_matches_torch_distributions(target: GaussianMixture) -> None:
    x = torch.randn(7, 5, target.dim, generator=torch.Generator().manual_seed(0), dtype=F64) * 2
    ref = _reference_gmm(target).log_prob(x)
    torch.testing.assert_close(target.log_prob(x), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("target", _targets(), ids=["mixture2d", "full3", "diag", "iso1d"])
def test_score_is_gradient_of_log_prob(target: GaussianMixture) -> None:
    x = torch.randn(50, target.dim, generator=torch.Generator().manual_seed(1), dtype=F64) * 2
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(target.log_prob(xg).sum(), xg)
    torch.testing.assert_close(target.score(x), grad, rtol=1e-11, atol=1e-12)


def test_exact_moments_and_samples() -> None:
    target = datasets.mixture2d()
    ref = _reference_gmm(target)
    torch.testing.assert_close(target.mean, ref.mean, rtol=1e-13, atol=1e-14)
    second = sum(w * (S + torch.outer(m, m)) for w, m, S in zip(target.weights, target.means,
                                                                  target.covs))
    exact_cov = second - torch.outer(ref.mean, ref.mean)
    torch.testing.assert_close(target.covariance, exact_cov, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(torch.diagonal(target.covariance), ref.variance, rtol=1e-13, atol=0)
    n = 200_000
    x = target.sample(n, generator=torch.Generator().manual_seed(5))
    assert x.shape == (n, 2) and x.dtype == F64
    # z-test of the sample mean, SE = sqrt(var / n); 4 standard errors
    z = (x.mean(0) - target.mean) / torch.sqrt(torch.diagonal(target.covariance) / n)
    assert bool((z.abs() < 4).all()), z
    # sample covariance within 4 SE (SE from the sample's own fourth moments)
    xc = x - x.mean(0)
    se = (xc.unsqueeze(-1) * xc.unsqueeze(-2)).std(0) / math.sqrt(n)
    assert bool(((torch.cov(x.T) - target.covariance).abs() < 4 * se).all())
    # same generator seed -> same samples
    y = target.sample(n, generator=torch.Generator().manual_seed(5))
    assert torch.equal(x, y)


def test_gaussian_forms_and_dtype_following() -> None:
    mean = torch.tensor([1.0, -1.0], dtype=F64)
    cov = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=F64)
    g = Gaussian(mean, cov)
    x = torch.randn(10, 2, dtype=F64)
    ref = torch.distributions.MultivariateNormal(mean, cov).log_prob(x)
    torch.testing.assert_close(g.log_prob(x), ref, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(g.score(x), -(x - mean) @ torch.linalg.inv(cov), rtol=1e-12,
                               atol=1e-12)
    # diagonal and isotropic forms
    gd = Gaussian(mean, torch.tensor([2.0, 0.5], dtype=F64))
    torch.testing.assert_close(gd.log_prob(x), torch.distributions.Normal(
        mean, torch.tensor([2.0, 0.5], dtype=F64).sqrt()).log_prob(x).sum(-1))
    gi = Gaussian(mean, 3.0)
    torch.testing.assert_close(gi.covariance, 3.0 * torch.eye(2, dtype=F64))
    # float32 input on a float64 target: result follows the input
    out = g.log_prob(x.float())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref.float(), rtol=1e-5, atol=1e-5)


def test_empirical_samples_points_and_has_no_density() -> None:
    pts = torch.tensor([[0.0, 0.0], [1.0, 2.0], [-3.0, 1.0]], dtype=F64)
    e = Empirical(pts)
    s = e.sample(3000, generator=torch.Generator().manual_seed(0))
    # every sample is one of the points, each with frequency ~1/3 (binomial SE ~ 0.0086)
    match = (s.unsqueeze(1) == pts).all(-1)
    assert bool(match.any(-1).all())
    freq = match.double().mean(0)
    assert bool(((freq - 1 / 3).abs() < 4 * math.sqrt(2 / 9 / 3000)).all())
    torch.testing.assert_close(e.mean, pts.mean(0))
    with pytest.raises(NoDensityError, match="no density"):
        e.log_prob(pts)
    with pytest.raises(NoDensityError, match="no density"):
        e.score(pts)


def test_bad_arguments_raise_naming_the_argument() -> None:
    with pytest.raises(ValueError, match="means"):
        GaussianMixture(torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="covs"):
        GaussianMixture(torch.zeros(2, 2), torch.ones(2, 3, 3))
    with pytest.raises(ValueError, match="covs"):
        GaussianMixture(torch.zeros(1, 2), torch.tensor([[[1.0, 2.0], [2.0, 1.0]]]))  # not PD
    with pytest.raises(ValueError, match="covs"):
        GaussianMixture(torch.zeros(1, 2), torch.tensor([[[1.0, 0.5], [0.0, 1.0]]]))  # asymmetric
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture(torch.zeros(2, 2), torch.ones(2), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture(torch.zeros(2, 2), torch.ones(2), torch.tensor([1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="cov"):
        Gaussian(torch.zeros(2), torch.ones(3))
    with pytest.raises(ValueError, match="points"):
        Empirical(torch.zeros(3))
    with pytest.raises(ValueError, match="n"):
        datasets.mixture2d().sample(0)
    with pytest.raises(TypeError, match="n"):
        datasets.mixture2d().sample(2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="x"):
        datasets.mixture2d().log_prob(torch.zeros(4, 3, dtype=F64))
    with pytest.raises(ValueError, match="means"):
        GaussianMixture(torch.tensor([[float("nan"), 0.0]]), torch.ones(1))
