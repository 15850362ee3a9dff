"""Classifier-free guidance: the notes' convention, the same field in every parameterization."""

from __future__ import annotations

import pytest
import torch
from sdeflow_generative import (
    ClassifierFree,
    CondOT,
    Cosine,
    GaussianPath,
    ProbabilityFlowODE,
    datasets,
    nets,
)

F64 = torch.float64
NULL = 4


def _exact_conditional(path: GaussianPath, param: str):
    """The exact p_t(x | y) of the labelled 2D mixture (y = component) in ``param``, and the exact
    unconditional p_t(x) for the null label, each from the closed-form marginals (no convert)."""
    mix = datasets.mixture2d()
    fields = [path.marginal(mix.component(k)).model(param) for k in range(4)]
    fields.append(path.marginal(mix).model(param))

    def model(x, t, y):
        out = torch.empty_like(x)
        for k in range(5):
            m = y == k
            if bool(m.any()):
                out[m] = fields[k](x[m], t[m])
        return out

    return model


@pytest.mark.parametrize("schedule", [CondOT(), Cosine()])
def test_guiding_any_parameterization_gives_the_same_field(schedule) -> None:
    path = GaussianPath(schedule)
    g = torch.Generator().manual_seed(0)
    x = 2.0 * torch.randn(64, 2, generator=g, dtype=F64)
    y = torch.randint(0, 4, (64,), generator=g)
    w = 2.5
    u_cond = _exact_conditional(path, "velocity")
    for t in (0.2, 0.5, 0.8):
        tt = torch.tensor(t, dtype=F64)
        tb = tt.expand(64)
        # (1 - w) u(x|null) + w u(x|y) in velocity, written out
        ref = (1 - w) * u_cond(x, tb, torch.full_like(y, NULL)) + w * u_cond(x, tb, y)
        for param in ("velocity", "score", "eps", "x0"):
            guided = ClassifierFree(_exact_conditional(path, param), w, NULL, param=param)
            flow = ProbabilityFlowODE(path, guided, cond={"y": y})
            assert flow.param == param
            torch.testing.assert_close(flow.velocity(x, tt), ref, rtol=1e-9, atol=1e-9)


def test_scale_one_and_zero() -> None:
    path = GaussianPath(CondOT())
    m = _exact_conditional(path, "velocity")
    x = torch.randn(10, 2, dtype=F64)
    t = torch.full((10,), 0.4, dtype=F64)
    y = torch.arange(10) % 4
    torch.testing.assert_close(ClassifierFree(m, 1.0, NULL)(x, t, y), m(x, t, y))
    torch.testing.assert_close(ClassifierFree(m, 0.0, NULL)(x, t, y),
                               m(x, t, torch.full_like(y, NULL)))


def test_one_model_call_on_the_doubled_batch() -> None:
    net = nets.MLP(2, hidden=8, depth=1, num_classes=4, param="eps", seed=0)
    calls = []

    def spy(x, t, y):
        calls.append(x.shape[0])
        return net(x, t, y)

    spy.num_classes = 4  # type: ignore[attr-defined]
    spy.param = "eps"  # type: ignore[attr-defined]
    x, t, y = torch.randn(6, 2), torch.rand(6), torch.tensor([0, 1, 2, 3, 0, 1])
    out = ClassifierFree(spy, 3.0, 4)(x, t, y)
    assert calls == [12]
    ref = -2.0 * net(x, t, torch.full_like(y, 4)) + 3.0 * net(x, t, y)
    torch.testing.assert_close(out, ref)
    assert ClassifierFree(net, 3.0, 4).param == "eps"


def test_bad_input() -> None:
    net = nets.MLP(2, hidden=8, depth=1, num_classes=4, seed=0)
    with pytest.raises(ValueError, match="null_label: classifier-free guidance needs"):
        ClassifierFree(net, 2.0, None)
    with pytest.raises(ValueError, match="null_label: 3 is a real class"):
        ClassifierFree(net, 2.0, 3)
    with pytest.raises(ValueError, match="scale: expected a finite float"):
        ClassifierFree(net, float("nan"), 4)
    with pytest.raises(ValueError, match="y: classifier-free guidance needs labels"):
        ClassifierFree(net, 2.0, 4)(torch.randn(3, 2), torch.rand(3))
    with pytest.raises(ValueError, match=r"y: expected labels in \[0, 4\]"):
        ClassifierFree(net, 2.0, 4)(torch.randn(3, 2), torch.rand(3), torch.tensor([0, 7, 1]))
    with pytest.raises(ValueError, match="param: 'score' contradicts"):
        ClassifierFree(net, 2.0, 4, param="score")
