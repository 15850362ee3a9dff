"""Gaussian paths: conditional fields and the velocity/score/eps/x0 conversions
(docs/math.md §20-§21).

Conversions are checked against the exact GMM fields, which are computed directly (posterior
means), not through ``convert``: ``score``, ``eps = E[eps|x]``, ``x0 = E[z|x]`` and
``velocity = E[alpha_dot z + beta_dot eps | x]``. The t-grid reaches 1e-4 from both ends (float64).
"""

from __future__ import annotations

import itertools

import pytest
import torch
from sdeflow_generative import (
    PARAMETERIZATIONS,
    CondOT,
    Cosine,
    GaussianPath,
    SquareRoot,
    VariancePreserving,
    datasets,
)
from sdeflow_generative.schedules import Schedule

F64 = torch.float64
SCHEDULES = [CondOT(), SquareRoot(), Cosine(), VariancePreserving()]
IDS = ["condot", "sqrt", "cosine", "vp"]
T_GRID = [0.0, 1e-4, 1e-3, 0.05, 0.3, 0.5, 0.7, 0.95, 1 - 1e-3, 1 - 1e-4, 1.0]
PAIRS = [(a, b) for a, b in itertools.product(PARAMETERIZATIONS, repeat=2) if a != b]


def _points(n: int = 64, seed: int = 0) -> torch.Tensor:
    return 2.0 * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _ends(path: GaussianPath, src: str, dst: str) -> tuple[bool, bool]:
    return path.singular_ends(src, dst)


@pytest.mark.parametrize("sched", SCHEDULES, ids=IDS)
def test_sample_and_conditional_fields(sched: Schedule) -> None:
    path = GaussianPath(sched)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(100, 3, generator=g, dtype=F64)
    eps = torch.randn(100, 3, generator=g, dtype=F64)
    t = torch.rand(100, generator=g, dtype=F64) * 0.98 + 0.01
    v = sched(t)
    x = path.sample(z, t, eps)
    torch.testing.assert_close(x, v.alpha[:, None] * z + v.beta[:, None] * eps, rtol=0, atol=0)
    # u(x|z) at x = alpha z + beta eps is alpha_dot z + beta_dot eps, which is d/dt of the sample
    u = path.conditional_velocity(x, z, t)
    torch.testing.assert_close(u, v.alpha_dot[:, None] * z + v.beta_dot[:, None] * eps,
                               rtol=1e-10, atol=1e-10)
    tg = t.clone().requires_grad_(True)
    xs = path.sample(z, tg, eps)
    dxdt = torch.stack([torch.autograd.grad(xs[:, i].sum(), tg, retain_graph=True)[0]
                        for i in range(3)], -1)
    torch.testing.assert_close(u, dxdt, rtol=1e-9, atol=1e-10)
    # score = -eps / beta = grad_x log N(x; alpha z, beta^2 I)
    s = path.conditional_score(x, z, t)
    torch.testing.assert_close(s, -eps / v.beta[:, None], rtol=1e-10, atol=1e-10)
    xg = x.clone().requires_grad_(True)
    lp = torch.distributions.Normal(v.alpha[:, None] * z, v.beta[:, None]).log_prob(xg).sum()
    torch.testing.assert_close(s, torch.autograd.grad(lp, xg)[0], rtol=1e-10, atol=1e-10)
    # scalar t and random eps (shape and dtype)
    x2 = path.sample(z, 0.5, generator=torch.Generator().manual_seed(0))
    assert x2.shape == z.shape and x2.dtype == F64


def test_conditional_fields_raise_at_beta_zero() -> None:
    path = GaussianPath(CondOT())
    z = torch.zeros(4, 2, dtype=F64)
    with pytest.raises(ValueError, match="t=1"):
        path.conditional_velocity(z, z, 1.0)
    with pytest.raises(ValueError, match="t=1"):
        path.conditional_score(z, z, 1.0)


@pytest.mark.parametrize("sched", SCHEDULES, ids=IDS)
def test_exact_fields_are_consistent(sched: Schedule) -> None:
    """x = alpha x0 + beta eps, u = alpha_dot x0 + beta_dot eps, eps = -beta s (exact fields)."""
    path = GaussianPath(sched)
    m = path.marginal(datasets.mixture2d())
    x = _points()
    for t in [1e-4, 0.3, 0.9, 1 - 1e-4]:
        v = sched(torch.tensor(t, dtype=F64))
        eps, x0 = m.eps(x, t), m.x0(x, t)
        torch.testing.assert_close(v.alpha * x0 + v.beta * eps, x, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(v.alpha_dot * x0 + v.beta_dot * eps, m.velocity(x, t),
                                   rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(-v.beta * m.score(x, t), eps, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("sched", SCHEDULES, ids=IDS)
@pytest.mark.parametrize("src,dst", PAIRS)
def test_conversions_against_exact_fields(sched: Schedule, src: str, dst: str) -> None:
    """convert(exact src) == exact dst, and the round trip returns src, on a t-grid that reaches
    1e-4 from both ends; exactly at an end the conversion either matches or raises (if singular)."""
    path = GaussianPath(sched)
    m = path.marginal(datasets.mixture2d())
    x = _points()
    at0, at1 = _ends(path, src, dst)
    back0, back1 = _ends(path, dst, src)
    for t in T_GRID:
        exact_src = m.model(src)(x, t)
        exact_dst = m.model(dst)(x, t)
        singular = (t == 0.0 and at0) or (t == 1.0 and at1)
        if singular:
            with pytest.raises(ValueError, match="t=0" if t == 0.0 else "t=1"):
                path.convert(exact_src, x, t, src, dst)
            continue
        out = path.convert(exact_src, x, t, src, dst)
        _assert_within(out, exact_dst, _tol(path, exact_src, x, t, src, dst), f"t={t}")
        if not ((t == 0.0 and back0) or (t == 1.0 and back1)):
            back = path.convert(out, x, t, dst, src)
            _assert_within(back, exact_src, _tol(path, out, x, t, dst, src), f"round trip t={t}")


def _assert_within(out: torch.Tensor, ref: torch.Tensor, bound: torch.Tensor, what: str) -> None:
    err = (out - ref).abs()
    ok = err <= bound
    ratio = (err / bound)[~ok].max().item() if not bool(ok.all()) else 0.0
    assert bool(ok.all()), f"{what}: error is {ratio:.3g} x the rounding-error bound"


def _tol(path: GaussianPath, value: torch.Tensor, x: torch.Tensor, t: float, src: str,
         dst: str) -> torch.Tensor:
    """Rounding-error bound of a conversion ``dst = A value + B x`` (linear in its inputs).

    The inputs carry float64 rounding errors ~ eps * |input|; the conversion amplifies them by
    |A| and |B| (1/alpha, 1/beta^2, ... near the singular end), so the achievable accuracy is
    ``K eps (|A| |value| + |B| |x| + |dst|)``. K = 200 covers the few roundings in the exact fields
    and the formula; any wrong coefficient gives errors of order |dst| itself.
    """
    one = torch.ones(1, 1, dtype=F64)
    a = path.convert(one, 0 * one, t, src, dst).abs()
    b = path.convert(0 * one, one, t, src, dst).abs()
    dst_val = (a * value + b * x).abs()
    return 200 * torch.finfo(F64).eps * (a * value.abs() + b * x.abs() + dst_val)


def test_singular_ends_table() -> None:
    """The documented policy: which conversions are singular at which end."""
    cond = GaussianPath(CondOT())
    assert cond.singular_ends("velocity", "score") == (False, True)
    assert cond.singular_ends("velocity", "eps") == (False, False)
    assert cond.singular_ends("velocity", "x0") == (False, False)
    assert cond.singular_ends("score", "velocity") == (True, False)
    assert cond.singular_ends("eps", "velocity") == (True, False)
    assert cond.singular_ends("x0", "velocity") == (False, True)
    assert cond.singular_ends("score", "eps") == (False, False)
    sq = GaussianPath(SquareRoot())
    assert sq.singular_ends("velocity", "score") == (False, False)  # D(1) = 1/2
    assert sq.singular_ends("eps", "velocity") == (True, True)  # beta_dot(1) = -inf
    vp = GaussianPath(VariancePreserving())
    assert vp.singular_ends("score", "velocity") == (False, False)  # alpha_0 > 0
    assert vp.singular_ends("eps", "velocity") == (False, True)


def test_convert_time_shapes_and_dtype() -> None:
    path = GaussianPath(Cosine())
    m = path.marginal(datasets.mixture2d())
    x = _points(12).reshape(3, 4, 2)
    t = torch.rand(3, 4, generator=torch.Generator().manual_seed(0), dtype=F64) * 0.9 + 0.05
    s = m.score(x, t)
    u = path.convert(s, x, t, "score", "velocity")
    torch.testing.assert_close(u, m.velocity(x, t), rtol=1e-10, atol=1e-10)
    # per-point t equals evaluating each point at its own scalar t
    u00 = path.convert(s[0, 0], x[0, 0], float(t[0, 0]), "score", "velocity")
    torch.testing.assert_close(u[0, 0], u00, rtol=1e-13, atol=1e-13)
    # (..., 1) time shape accepted; float32 follows x
    u2 = path.convert(s, x, t.unsqueeze(-1), "score", "velocity")
    torch.testing.assert_close(u2, u)
    u32 = path.convert(s.float(), x.float(), t.float(), "score", "velocity")
    assert u32.dtype == torch.float32


def test_convert_bad_arguments() -> None:
    path = GaussianPath(CondOT())
    x = torch.zeros(5, 2, dtype=F64)
    with pytest.raises(ValueError, match="src"):
        path.convert(x, x, 0.5, "noise", "score")
    with pytest.raises(ValueError, match="dst"):
        path.convert(x, x, 0.5, "score", "v")
    with pytest.raises(ValueError, match="value"):
        path.convert(torch.zeros(5, 3), x, 0.5, "score", "eps")
    with pytest.raises(ValueError, match="t"):
        path.convert(x, x, torch.rand(4), "score", "eps")
    with pytest.raises(TypeError, match="schedule"):
        GaussianPath("condot")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="target"):
        path.marginal(object())  # type: ignore[arg-type]
