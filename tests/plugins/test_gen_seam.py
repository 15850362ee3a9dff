"""The model seam: cond= reaches the model unchanged through every core solver; declared params."""

from __future__ import annotations

import pytest
import torch
from sdeflow_generative import (
    CondOT,
    DiffusionSDE,
    GaussianPath,
    Langevin,
    ProbabilityFlowODE,
    datasets,
    likelihood,
    nets,
)
from sdeflow_generative.models import resolve_param

import sdeflow as sf

F64 = torch.float64


def _labelled_exact():
    """Exact class-conditional velocity of the labelled 2D mixture: u(x | y) per row."""
    path = GaussianPath(CondOT())
    mix = datasets.mixture2d()
    comps = [path.marginal(mix.component(k)) for k in range(4)]

    def model(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        for k in range(4):
            m = y == k
            out[m] = comps[k].velocity(x[m], t[m])
        return out

    return path, mix, comps, model


class _Recorder:
    """Velocity model that records the labels and batch size of every call."""

    def __init__(self, inner):
        self.inner = inner
        self.seen: list[torch.Tensor] = []

    def __call__(self, x, t, y):
        self.seen.append(y.clone())
        return self.inner(x, t, y)


@pytest.mark.parametrize(
    "solver,kw",
    [("euler", {"steps": 4}), ("rk4", {"steps": 3}), ("dopri5", {"rtol": 1e-4, "atol": 1e-6}),
     ("bosh3", {"rtol": 1e-3, "atol": 1e-5})],
)
def test_labels_reach_model_unchanged_ode(solver: str, kw: dict) -> None:
    path, _, _, exact = _labelled_exact()
    rec = _Recorder(exact)
    y = torch.tensor([3, 0, 2, 1, 1, 0, 3, 2])
    x0 = torch.randn(8, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    sf.solve(ProbabilityFlowODE(path, rec, cond={"y": y}), x0, t_span=(0.0, 1.0), solver=solver,
             **kw)
    assert len(rec.seen) > 3
    assert all(torch.equal(s, y) for s in rec.seen)


@pytest.mark.parametrize(
    "solver,kw",
    [("euler_maruyama", {"steps": 5}), ("sra1", {"steps": 5}),
     ("adaptive_em", {"rtol": 1e-2, "atol": 1e-2})],
)
def test_labels_reach_model_unchanged_sde(solver: str, kw: dict) -> None:
    path, _, _, exact = _labelled_exact()
    rec = _Recorder(exact)
    y = torch.tensor([1, 1, 0, 3, 2, 2])
    x0 = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    sde = DiffusionSDE(path, rec, eta=0.5, cond={"y": y})
    sf.solve(sde, x0, t_span=sde.t_span, solver=solver, seed=0, **kw)
    assert len(rec.seen) > 3
    assert all(torch.equal(s, y) for s in rec.seen)


def test_conditional_sampling_hits_each_component() -> None:
    """Samples of the exact u(x|y) field land on component y: mean within 4 SE of mu_y."""
    path, mix, _, exact = _labelled_exact()
    y = torch.arange(4).repeat_interleave(500)
    x0 = torch.randn(2000, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    xs = sf.solve(ProbabilityFlowODE(path, exact, cond={"y": y}), x0, t_span=(0.0, 1.0),
                  solver="rk4", steps=40).x_final
    for k in range(4):
        pts = xs[y == k]
        se = torch.sqrt(torch.diagonal(mix.covs[k]) / pts.shape[0])
        assert ((pts.mean(0) - mix.means[k]).abs() / se).max() < 4.0


def test_log_prob_takes_cond() -> None:
    """log p_1(x | y) by the divergence ODE equals the component's exact log-density."""
    path, mix, _, exact = _labelled_exact()
    g = torch.Generator().manual_seed(3)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    x = mix.means[y] + 0.2 * torch.randn(6, 2, dtype=F64, generator=g)
    lp = likelihood.log_prob(path, exact, x, cond={"y": y}, steps=100)
    ref = torch.stack([mix.component(int(k)).log_prob(x[i]) for i, k in enumerate(y)])
    assert (lp - ref).abs().max() < 1e-3


def test_langevin_takes_cond() -> None:
    seen = []

    def score(x, scale):
        seen.append(scale)
        return -x / scale

    sol = sf.solve(Langevin(score, sigma=1.0, cond={"scale": 2.0}), torch.zeros(4000, 1,
                   dtype=F64), t_span=(0.0, 20.0), solver="euler_maruyama", steps=400, seed=0)
    assert set(seen) == {2.0}
    var = float(sol.x_final.var())  # stationary law N(0, 2); SE of a variance ~ 2 sqrt(2/n)
    assert abs(var - 2.0) < 5 * 2.0 * (2.0 / 4000) ** 0.5 + 0.05  # + Euler bias h/2 ~ 0.025


def test_declared_param_is_used_and_checked() -> None:
    net = nets.MLP(2, hidden=8, depth=1, param="eps", seed=0)
    path = GaussianPath(CondOT())
    assert ProbabilityFlowODE(path, net).param == "eps"
    assert ProbabilityFlowODE(path, net).t_span == (1e-3, 1.0)
    assert resolve_param(lambda x, t: x, None) == "velocity"
    with pytest.raises(ValueError, match="param: 'velocity' contradicts"):
        ProbabilityFlowODE(path, net, "velocity")
    with pytest.raises(ValueError, match="param: expected one of"):
        ProbabilityFlowODE(path, lambda x, t: x, "noise")


def test_bad_model_output_names_model() -> None:
    path = GaussianPath(CondOT())
    x0 = torch.zeros(3, 2, dtype=F64)
    with pytest.raises(ValueError, match="model: expected an output of x's shape"):
        sf.solve(ProbabilityFlowODE(path, lambda x, t: x[:, :1]), x0, t_span=(0, 1),
                 solver="euler", steps=1)
    with pytest.raises(TypeError, match="model: expected an output of x's dtype"):
        sf.solve(ProbabilityFlowODE(path, lambda x, t: x.float()), x0, t_span=(0, 1),
                 solver="euler", steps=1)
    with pytest.raises(TypeError, match="cond: expected a dict"):
        ProbabilityFlowODE(path, lambda x, t: x, cond=[1, 2])
