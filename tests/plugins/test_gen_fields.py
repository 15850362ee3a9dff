"""Field adapters: the core sf.ODE/sf.SDE they build, time conventions, defaults, consistency."""

from __future__ import annotations

import pytest
import torch
from sdeflow_generative import (
    CondOT,
    Cosine,
    DiffusionSDE,
    GaussianPath,
    Langevin,
    ProbabilityFlowODE,
    SquareRoot,
    VariancePreserving,
    datasets,
)

import sdeflow as sf

F64 = torch.float64


def _exact(sched=None):
    path = GaussianPath(sched or CondOT())
    return path, path.marginal(datasets.mixture2d())


def test_fields_are_core_problems() -> None:
    path, m = _exact()
    assert isinstance(ProbabilityFlowODE(path, m.velocity), sf.ODE)
    sde = DiffusionSDE(path, m.velocity, eta=1.0)
    assert isinstance(sde, sf.SDE) and sde.noise == "additive" and sde.kind == "ito"
    lang = Langevin(datasets.mixture2d(), sigma=1.0)
    assert isinstance(lang, sf.SDE) and lang.noise == "additive"


def test_model_receives_t_of_shape_batch() -> None:
    path, m = _exact()
    seen: list[tuple[tuple[int, ...], torch.dtype]] = []

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append((tuple(t.shape), t.dtype))
        return m.velocity(x, t)

    x0 = torch.randn(5, 3, 2, dtype=F64)
    sol = sf.solve(ProbabilityFlowODE(path, model), x0, t_span=(0.0, 1.0), solver="euler", steps=3)
    assert sol.ys.shape == (2, 5, 3, 2)
    assert seen and all(s == ((5, 3), F64) for s in seen)
    seen.clear()
    sde = DiffusionSDE(path, model, eta=0.5)
    sf.solve(sde, x0, t_span=sde.t_span, solver="euler_maruyama", steps=3, seed=0)
    assert seen and all(s == ((5, 3), F64) for s in seen)


def test_default_t_spans() -> None:
    cond = GaussianPath(CondOT())
    _, m = _exact()
    assert ProbabilityFlowODE(cond, m.velocity).t_span == (0.0, 1.0)
    assert ProbabilityFlowODE(cond, m.score, "score").t_span == (1e-3, 1.0)
    assert ProbabilityFlowODE(cond, m.eps, "eps").t_span == (1e-3, 1.0)
    assert ProbabilityFlowODE(cond, m.x0, "x0").t_span == (0.0, 1.0 - 1e-3)
    assert ProbabilityFlowODE(cond, m.x0, "x0", t_eps=1e-2).t_span == (0.0, 0.99)
    assert DiffusionSDE(cond, m.velocity, eta=1.0).t_span == (1e-3, 1.0)
    assert DiffusionSDE(cond, m.velocity, sigma=0.5).t_span == (0.0, 1.0 - 1e-3)
    assert DiffusionSDE(cond, m.score, "score", sigma=0.5).t_span == (1e-3, 1.0)
    vp = GaussianPath(VariancePreserving())
    assert ProbabilityFlowODE(vp, m.score, "score").t_span == (0.0, 1.0)
    assert DiffusionSDE(vp, m.velocity, eta=1.0).t_span == (0.0, 1.0)
    assert ProbabilityFlowODE(vp, m.eps, "eps").t_span == (0.0, 1.0 - 1e-3)
    sq = GaussianPath(SquareRoot())
    assert ProbabilityFlowODE(sq, m.eps, "eps").t_span == (1e-3, 1.0 - 1e-3)


@pytest.mark.parametrize("sched", [CondOT(), Cosine(), VariancePreserving()],
                         ids=["condot", "cosine", "vp"])
@pytest.mark.parametrize("param", ["score", "eps", "x0"])
def test_pf_ode_same_field_for_every_parameterization(sched, param: str) -> None:
    path, m = _exact(sched)
    ref = ProbabilityFlowODE(path, m.velocity)
    ode = ProbabilityFlowODE(path, m.model(param), param)
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    lo, hi = ode.t_span
    for t in torch.linspace(lo, hi, 7, dtype=F64):
        torch.testing.assert_close(ode.vector_field(t, x), ref.vector_field(t, x), rtol=1e-9,
                                   atol=1e-9)


@pytest.mark.parametrize("sched", [CondOT(), Cosine(), VariancePreserving()],
                         ids=["condot", "cosine", "vp"])
def test_eta_family_equals_sigma_form(sched) -> None:
    """(1 + eta) u - eta (alpha_dot/alpha) x  ==  u + sigma^2/2 s  with sigma^2 = 2 eta b_t."""
    path, m = _exact(sched)
    eta = 0.8
    a = DiffusionSDE(path, m.velocity, eta=eta)
    b = DiffusionSDE(path, m.velocity, sigma=a.sigma_t)
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    for t in [0.05, 0.3, 0.7, 0.99]:
        tt = torch.tensor(t, dtype=F64)
        torch.testing.assert_close(a.drift(tt, x), b.drift(tt, x), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(a.diffusion(tt, x), b.diffusion(tt, x), rtol=1e-14, atol=0)
    # eta = 0 is the probability-flow ODE: drift u, zero diffusion
    c = DiffusionSDE(path, m.velocity, eta=0.0)
    tt = torch.tensor(0.4, dtype=F64)
    torch.testing.assert_close(c.drift(tt, x), m.velocity(x, tt))
    assert float(c.diffusion(tt, x).abs().max()) == 0.0


def test_eta_drift_is_finite_at_t_one() -> None:
    """No division by beta: the eta-family drift is finite at t=1 (beta_1 = 0)."""
    for sched in (CondOT(), VariancePreserving(), SquareRoot()):
        path, m = _exact(sched)
        sde = DiffusionSDE(path, m.velocity, eta=1.0)
        x = torch.randn(10, 2, dtype=F64)
        one = torch.tensor(1.0, dtype=F64)
        assert bool(torch.isfinite(sde.drift(one, x)).all())
        assert bool(torch.isfinite(sde.diffusion(one, x)).all())
    path, m = _exact(CondOT())
    with pytest.raises(ValueError, match="t=0"):
        DiffusionSDE(path, m.velocity, eta=1.0).drift(torch.tensor(0.0, dtype=F64),
                                                      torch.zeros(3, 2, dtype=F64))


def test_vp_eta_one_is_the_reverse_vp_sde() -> None:
    """VP: b_t = r(1 - t)/2, so eta = 1 gives sigma_t^2 = r(1 - t) (the score-SDE reverse SDE)."""
    vp = VariancePreserving()
    path, m = _exact(vp)
    sde = DiffusionSDE(path, m.velocity, eta=1.0)
    for t in [0.0, 0.5, 1.0]:
        rate = 0.1 + (1 - t) * (20.0 - 0.1)
        assert float(sde.sigma_t(torch.tensor(t, dtype=F64))) ** 2 == pytest.approx(rate, rel=1e-12)


def test_float32_runs_and_keeps_dtype() -> None:
    path = GaussianPath(CondOT())
    m = path.marginal(datasets.mixture2d(dtype=torch.float32))
    x0 = torch.randn(100, 2)
    sol = sf.solve(ProbabilityFlowODE(path, m.velocity), x0, t_span=(0.0, 1.0), solver="rk4",
                   steps=10)
    assert sol.x_final.dtype == torch.float32 and bool(torch.isfinite(sol.x_final).all())
    sde = DiffusionSDE(path, m.velocity, eta=1.0)
    sol = sf.solve(sde, x0, t_span=sde.t_span, solver="euler_maruyama", steps=20, seed=0)
    assert sol.x_final.dtype == torch.float32 and bool(torch.isfinite(sol.x_final).all())


def test_bad_arguments_raise_naming_the_argument() -> None:
    path, m = _exact()
    with pytest.raises(TypeError, match="path"):
        ProbabilityFlowODE("path", m.velocity)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model"):
        ProbabilityFlowODE(path, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="param"):
        ProbabilityFlowODE(path, m.velocity, "noise")
    with pytest.raises(ValueError, match="t_eps"):
        ProbabilityFlowODE(path, m.velocity, t_eps=0.0)
    with pytest.raises(ValueError, match="sigma, eta"):
        DiffusionSDE(path, m.velocity)
    with pytest.raises(ValueError, match="sigma, eta"):
        DiffusionSDE(path, m.velocity, sigma=1.0, eta=1.0)
    with pytest.raises(ValueError, match="eta"):
        DiffusionSDE(path, m.velocity, eta=-0.5)
    with pytest.raises(ValueError, match="sigma"):
        DiffusionSDE(path, m.velocity, sigma=-1.0)
    with pytest.raises(TypeError, match="sigma"):
        DiffusionSDE(path, m.velocity, sigma="big")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sigma"):
        Langevin(datasets.mixture2d(), sigma=0.0)
    with pytest.raises(TypeError, match="score"):
        Langevin(5, sigma=1.0)  # type: ignore[arg-type]
    bad = ProbabilityFlowODE(path, lambda x, t: x[..., :1])
    with pytest.raises(ValueError, match="model"):
        bad.vector_field(torch.tensor(0.5, dtype=F64), torch.zeros(4, 2, dtype=F64))
