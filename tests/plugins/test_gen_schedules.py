"""Schedules (docs/math.md §20.1): analytic derivatives vs autograd, boundary values,
monotonicity."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sdeflow_generative.schedules import (
    CondOT,
    Cosine,
    Schedule,
    ScheduleValues,
    SquareRoot,
    VariancePreserving,
)

SCHEDULES = [CondOT(), SquareRoot(), Cosine(), VariancePreserving(), VariancePreserving(0.5, 5.0)]
IDS = ["condot", "sqrt", "cosine", "vp", "vp_0.5_5"]
F64 = torch.float64

# interior grid, including points within 1e-4 of both ends
T_GRID = torch.tensor([1e-6, 1e-4, 1e-3, 0.1, 0.25, 0.5, 0.75, 0.9, 1 - 1e-3, 1 - 1e-4], dtype=F64)


def _autograd_derivatives(sched: Schedule, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    t = t.clone().requires_grad_(True)
    v = sched(t)
    (da,) = torch.autograd.grad(v.alpha.sum(), t, retain_graph=True)
    (db,) = torch.autograd.grad(v.beta.sum(), t)
    return da, db


@pytest.mark.parametrize("sched", SCHEDULES, ids=IDS)
def test_derivatives_match_autograd_on_grid(sched: Schedule) -> None:
    v = sched(T_GRID)
    da, db = _autograd_derivatives(sched, T_GRID)
    torch.testing.assert_close(v.alpha_dot, da, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(v.beta_dot, db, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("sched", SCHEDULES, ids=IDS)
@settings(max_examples=60, deadline=None)
@given(t=st.floats(min_value=0.0, max_value=1.0 - 1e-6))
def test_derivatives_match_autograd_hypothesis(sched: Schedule, t: float) -> None:
    tt = torch.tensor([t], dtype=F64)
    v = sched(tt)
    da, db = _autograd_derivatives(sched, tt)
    torch.testing.assert_close(v.alpha_dot, da, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(v.beta_dot, db, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("sched", SCHEDULES, ids=IDS)
def test_beta_beta_dot_is_the_finite_product(sched: Schedule) -> None:
    v = sched(T_GRID)
    torch.testing.assert_close(sched.beta_beta_dot(T_GRID), v.beta * v.beta_dot, rtol=1e-12, atol=0)
    ends = sched.beta_beta_dot(torch.tensor([0.0, 1.0], dtype=F64))
    assert bool(torch.isfinite(ends).all())


@pytest.mark.parametrize("sched", [CondOT(), SquareRoot(), Cosine()], ids=IDS[:3])
def test_boundary_values_exact(sched: Schedule) -> None:
    for dtype in (torch.float32, F64):
        v = sched(torch.tensor([0.0, 1.0], dtype=dtype))
        assert v.alpha.tolist() == [0.0, 1.0]
        assert v.beta.tolist() == [1.0, 0.0]


def test_boundary_values_named() -> None:
    # CondOT: alpha=t, beta=1-t, alpha_dot=1, beta_dot=-1
    v = CondOT()(torch.tensor([0.0, 0.3, 1.0], dtype=F64))
    assert v.alpha.tolist() == [0.0, 0.3, 1.0]
    assert v.alpha_dot.tolist() == [1.0, 1.0, 1.0]
    assert v.beta_dot.tolist() == [-1.0, -1.0, -1.0]
    # SquareRoot: beta_dot -> -inf at t = 1, beta*beta_dot = -1/2 everywhere
    s = SquareRoot()
    assert s(torch.tensor(1.0, dtype=F64)).beta_dot.item() == -math.inf
    assert s.beta_beta_dot(1.0).item() == -0.5
    # Cosine derivatives at the ends: alpha_dot(0) = pi/2, beta_dot(1) = -pi/2, and exact zeros
    c = Cosine()(torch.tensor([0.0, 1.0], dtype=F64))
    assert c.alpha_dot.tolist() == [math.pi / 2, 0.0]
    assert c.beta_dot.tolist() == [0.0, -math.pi / 2]


@pytest.mark.parametrize("bmin,bmax", [(0.1, 20.0), (0.5, 5.0)])
def test_vp_ends_and_variance_preserving(bmin: float, bmax: float) -> None:
    vp = VariancePreserving(bmin, bmax)
    v0, v1 = vp(torch.tensor(0.0, dtype=F64)), vp(torch.tensor(1.0, dtype=F64))
    assert v1.alpha.item() == 1.0 and v1.beta.item() == 0.0
    alpha0 = math.exp(-(bmin + bmax) / 4)
    assert vp.alpha_0 == pytest.approx(alpha0, rel=1e-15)
    assert v0.alpha.item() == pytest.approx(alpha0, rel=1e-14)
    assert 0.0 < v0.alpha.item() < 0.3  # small but not zero (documented)
    assert v0.beta.item() == pytest.approx(math.sqrt(1 - alpha0**2), rel=1e-14)
    v = vp(T_GRID)
    torch.testing.assert_close(v.alpha**2 + v.beta**2, torch.ones_like(T_GRID), rtol=0, atol=1e-15)
    # alpha_dot = r(1 - t) alpha / 2 with the score-SDE rate r(s) = bmin + s (bmax - bmin)
    rate = bmin + (1 - T_GRID) * (bmax - bmin)
    torch.testing.assert_close(v.alpha_dot, 0.5 * rate * v.alpha, rtol=1e-14, atol=0)
    assert vp(torch.tensor(1.0, dtype=F64)).beta_dot.item() == -math.inf
    assert vp.beta_beta_dot(1.0).item() == pytest.approx(-bmin / 2)


def test_vp_beta_keeps_relative_precision_near_one() -> None:
    vp = VariancePreserving()
    t = torch.tensor(1 - 1e-12, dtype=F64)
    # beta^2 = 1 - exp(-B(s)) ~ B(s) ~ beta_min * s for small s
    assert vp(t).beta.item() ** 2 == pytest.approx(0.1 * 1e-12, rel=1e-6)


@pytest.mark.parametrize("sched", SCHEDULES, ids=IDS)
@settings(max_examples=80, deadline=None)
@given(a=st.floats(0.0, 1.0), b=st.floats(0.0, 1.0))
def test_monotone(sched: Schedule, a: float, b: float) -> None:
    lo, hi = min(a, b), max(a, b)
    v = sched(torch.tensor([lo, hi], dtype=F64))
    assert v.alpha[0] <= v.alpha[1]
    assert v.beta[0] >= v.beta[1]
    assert bool((v.alpha_dot >= 0).all()) and bool((v.beta_dot <= 0).all())
    assert bool(((v.alpha >= 0) & (v.alpha <= 1) & (v.beta >= 0) & (v.beta <= 1)).all())


@pytest.mark.parametrize("sched", SCHEDULES, ids=IDS)
def test_values_follow_dtype_and_shape(sched: Schedule) -> None:
    t = torch.rand(3, 4, dtype=torch.float32) * 0.98 + 0.01
    v = sched(t)
    assert isinstance(v, ScheduleValues)
    for field in v:
        assert field.dtype == torch.float32 and field.shape == (3, 4)
    v_scalar = sched(0.5)
    assert v_scalar.alpha.dim() == 0


@pytest.mark.parametrize("sched", SCHEDULES, ids=IDS)
def test_out_of_range_t_raises(sched: Schedule) -> None:
    with pytest.raises(ValueError, match="t"):
        sched(torch.tensor([-0.01, 0.5]))
    with pytest.raises(ValueError, match="t"):
        sched(1.5)
    with pytest.raises(ValueError, match="t"):
        sched(torch.tensor(float("nan")))
    with pytest.raises(TypeError, match="t"):
        sched("0.5")  # type: ignore[arg-type]
    # a few ulps outside [0, 1] (rounding in a solver's stage times) is clamped, not an error
    v = sched(torch.tensor([1.0 + 2e-16, -2e-16], dtype=F64))
    assert bool(torch.isfinite(v.alpha).all())


def test_vp_bad_arguments() -> None:
    with pytest.raises(ValueError, match="beta_min"):
        VariancePreserving(beta_min=0.0)
    with pytest.raises(ValueError, match="beta_max"):
        VariancePreserving(beta_min=1.0, beta_max=0.5)
    with pytest.raises(TypeError, match="beta_max"):
        VariancePreserving(beta_max="20")  # type: ignore[arg-type]
