"""Exponential integrators on semilinear problems (docs/math.md §15.1-§15.5).

* phi functions: the recursion identity and the series/recursion seam (hypothesis).
* A stiff semilinear ODE with a known solution (ETD): x' = L x + N(t, x), L = -50 (scalar) and
  L = diag(-1, -20), N = -L cos t - sin t + (x - cos t)^2, so x(t) = cos t from x(0) = 1 (the
  quadratic term vanishes on the solution but not near it). Fitted order of the final error
  over 160..1280 steps on [0, 2] (regression slope with a 95% Student-t interval, as
  ``sdeflow verify``) within 0.2 of the declared order.
* The published 3M coefficient (half of the Taylor one) measures order 2; UniPC without its
  corrector measures its predictor order.
* A linear semilinear SDE (N constant): the 2M SDE step is exact in law, so mean and variance
  match the exact ones at any step count (n = 40000 paths, seed 3, 4 standard errors).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import sdeflow as sf
from sdeflow.semilinear import phi
from sdeflow.solvers.base import REGISTRY
from sdeflow.verify import regression_fit as _regression_fit

F64 = torch.float64
STEPS = (160, 320, 640, 1280)
ODE_SOLVERS = ("ddim", "dpm_solver2", "dpm_solver3", "dpm_solver_pp2m", "dpm_solver_pp3m",
               "unipc2", "unipc3")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


# ------------------------------------------------------------------------------------ phi
@settings(max_examples=60, deadline=None)
@given(z=st.floats(-30.0, 30.0), j=st.integers(0, 4))
def test_phi_recursion_identity(z: float, j: int) -> None:
    """phi_j(z) = z phi_{j+1}(z) + 1/j! on both sides of the series/recursion seam."""
    zt = torch.tensor(z, dtype=F64)
    lhs = phi(j, zt)
    rhs = zt * phi(j + 1, zt) + 1.0 / math.factorial(j)
    assert float(abs(lhs - rhs)) <= 1e-12 * max(1.0, float(abs(lhs)))


def test_phi_values() -> None:
    z = torch.tensor([-2.0, -1e-9, 0.0, 0.5, 3.0], dtype=F64)
    assert torch.allclose(phi(1, z), torch.where(z == 0, torch.ones_like(z),
                                                 torch.expm1(z) / torch.where(z == 0, 1.0, z)),
                          rtol=1e-12, atol=0)
    p2 = phi(2, z)
    assert abs(float(p2[2]) - 0.5) < 1e-15 and abs(float(p2[1]) - 0.5) < 1e-9
    assert abs(float(p2[4]) - (math.exp(3.0) - 1 - 3.0) / 9.0) < 1e-12
    with pytest.raises(ValueError, match="j: expected"):
        phi(-1, z)


# --------------------------------------------------------------------------------- ETD
def _stiff(L: float | torch.Tensor) -> sf.SemilinearODE:
    def n(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        lin = L if isinstance(L, float) else L.to(x)
        return -lin * torch.cos(t) - torch.sin(t) + (x - torch.cos(t)) ** 2
    return sf.SemilinearODE.etd(L, n)


def _order(problem: sf.SemilinearODE, solver: object, x0: torch.Tensor, steps=STEPS
           ) -> tuple[float, tuple[float, float], list[float]]:
    errs = []
    for n in steps:
        y = sf.solve(problem, x0, (0.0, 2.0), solver=solver, steps=n).ys[-1]
        errs.append(float((y - math.cos(2.0)).abs().max()))
    p, ci = _regression_fit([2.0 / n for n in steps], errs, 0.95)
    return p, ci, errs


@pytest.mark.parametrize("name", ODE_SOLVERS)
@pytest.mark.parametrize("L", [-50.0, "diag"])
def test_etd_order_on_stiff_semilinear(name: str, L: object) -> None:
    lin = torch.tensor([-1.0, -20.0], dtype=F64) if L == "diag" else L
    x0 = torch.ones(2 if L == "diag" else 1, dtype=F64)
    p, ci, errs = _order(_stiff(lin), name, x0)
    want = REGISTRY[name].caps.order
    if name == "unipc3":  # declared 3 (warm-up); steady steps of order 4 dominate here
        assert want - 0.2 <= p <= want + 1.2, (name, p, ci, errs)
    else:
        assert abs(p - want) <= 0.2, (name, p, ci, errs)


def test_etd_stable_where_rk4_is_not() -> None:
    """Ten steps of h = 0.2 with L = -50 (|L h| = 10): rk4 diverges, every ETD scheme stays
    within its truncation error of cos t."""
    pr = _stiff(-50.0)
    x0 = torch.ones(1, dtype=F64)
    with pytest.raises(sf.NonFiniteError):
        sf.solve(pr, x0, (0.0, 2.0), solver="rk4", steps=10)
    for name in ODE_SOLVERS:
        y = sf.solve(pr, x0, (0.0, 2.0), solver=name, steps=10).ys[-1]
        assert float((y - math.cos(2.0)).abs()) < 0.2, name


def test_semilinear_vector_field_is_the_full_ode() -> None:
    """dopri5 on the full field (autograd derivatives of tau, log_scale) reaches cos t."""
    n = _stiff(-3.0).nonlinear_fn
    pr = sf.SemilinearODE(n, tau=lambda t: t, log_scale=lambda t: -3.0 * t, rate=3.0)
    y = sf.solve(pr, torch.ones(1, dtype=F64), (0.0, 2.0), rtol=1e-10, atol=1e-12).ys[-1]
    assert abs(float(y) - math.cos(2.0)) < 1e-8
    t = torch.tensor(0.7, dtype=F64)
    x = torch.tensor([0.3], dtype=F64)
    assert torch.allclose(pr.vector_field(t, x), -3.0 * x + n(t, x), rtol=1e-13)


def test_published_3m_coefficient_is_order_two() -> None:
    slv = REGISTRY["dpm_solver_pp3m"](variant="published")
    p, ci, errs = _order(_stiff(-50.0), slv, torch.ones(1, dtype=F64))
    assert abs(p - 2.0) <= 0.2, (p, ci, errs)


def test_multistep_warmup_caps_3m_at_order_two() -> None:
    """On a mildly damped problem (L = -1: the first step's error survives as e^{-2}) the
    order-1 first step of diffusers' warm-up makes 3M of global order 2; the singlestep warm-up
    keeps 3."""
    x0 = torch.ones(1, dtype=F64)
    p, ci, errs = _order(_stiff(-1.0), REGISTRY["dpm_solver_pp3m"](warmup="multistep"), x0)
    assert abs(p - 2.0) <= 0.2, (p, ci, errs)
    p, ci, errs = _order(_stiff(-1.0), "dpm_solver_pp3m", x0)
    assert abs(p - 3.0) <= 0.2, (p, ci, errs)


def test_unipc_corrector_raises_the_order() -> None:
    x0 = torch.ones(1, dtype=F64)
    p_off = _order(_stiff(-50.0), REGISTRY["unipc2"](corrector=False), x0)[0]
    p_on = _order(_stiff(-50.0), REGISTRY["unipc2"](), x0)[0]
    assert abs(p_off - 2.0) <= 0.2 and abs(p_on - 3.0) <= 0.2, (p_off, p_on)


def test_nfe_counts() -> None:
    pr = _stiff(-5.0)
    x0 = torch.ones(1, dtype=F64)
    per = {"ddim": 10, "dpm_solver2": 20, "dpm_solver3": 30, "dpm_solver_pp2m": 10,
           "dpm_solver_pp3m": 11, "unipc2": 10, "unipc3": 10}
    for name, nfe in per.items():
        assert sf.solve(pr, x0, (0.0, 1.0), solver=name, steps=10).stats["nfe"] == nfe, name


def test_lower_final_steps() -> None:
    """lower_final=1 makes the last 2M step a DDIM step: equal to 9 steps of 2M followed by
    one DDIM step from the same state."""
    pr = _stiff(-5.0)
    x0 = torch.ones(1, dtype=F64)
    grid = [i / 10 for i in range(11)]
    slv = REGISTRY["dpm_solver_pp2m"](lower_final=1, grid=grid)
    y = sf.solve(pr, x0, (0.0, 1.0), solver=slv, steps=10).ys[-1]
    y9 = sf.solve(pr, x0, (0.0, 0.9), solver="dpm_solver_pp2m", steps=9).ys[-1]
    y10 = sf.solve(pr, y9, (0.9, 1.0), solver="ddim", steps=1).ys[-1]
    assert torch.allclose(y, y10, rtol=1e-14, atol=0)
    full = sf.solve(pr, x0, (0.0, 1.0), solver="dpm_solver_pp2m", steps=10).ys[-1]
    assert not torch.allclose(y, full, rtol=1e-8, atol=0)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="exponential integrator and needs a SemilinearODE"):
        sf.solve(lambda t, x: -x, torch.ones(1, dtype=F64), (0.0, 1.0), solver="ddim",
                 steps=4)
    with pytest.raises(ValueError, match="grid: lower_final > 0 needs"):
        REGISTRY["dpm_solver_pp2m"](lower_final=1)
    with pytest.raises(ValueError, match="variant"):
        REGISTRY["dpm_solver_pp3m"](variant="half")
    with pytest.raises(TypeError, match="nonlinear"):
        sf.SemilinearODE(3.0, tau=lambda t: t, log_scale=lambda t: t)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gain"):
        sf.SemilinearODE(lambda t, x: x, tau=lambda t: t, log_scale=lambda t: t, gain=0.0)
    pr = sf.SemilinearODE(lambda t, x: x, tau=lambda t: torch.log(t), log_scale=lambda t: t)
    with pytest.raises(ValueError, match="tau: the problem's variable is not finite at t=0"):
        sf.solve(pr, torch.ones(1, dtype=F64), (0.0, 1.0), solver="ddim", steps=4)


def test_caps_declare_semilinear() -> None:
    for name in (*ODE_SOLVERS, "dpm_solver_pp2m_sde"):
        assert REGISTRY[name].caps.semilinear
    assert not REGISTRY["rk4"].caps.semilinear


# --------------------------------------------------------------------------------- SDE
def test_sde_step_exact_in_law_for_linear_gaussian() -> None:
    """dX = (-a X + b) dt + g dW with E = e^{-a t}, tau = t, k = a, N = b: the 2M SDE step
    is exact in law, so 4 coarse steps give mean m(T) and variance v(T) exactly
    (m = x0 e^{-aT} + b (1 - e^{-aT}) / a, v = g^2 (1 - e^{-2aT}) / (2a))."""
    a, b, g, T = 2.0, 1.5, 0.7, 1.0

    def std(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return g * torch.sqrt(-torch.expm1(-2 * a * (t - s)) / (2 * a))

    pr = sf.SemilinearSDE(lambda t, x: torch.full_like(x, b), tau=lambda t: t,
                          log_scale=lambda t: -a * t, rate=a, diffusion=lambda t: g + 0 * t,
                          noise_std=std)
    x0 = torch.zeros(40_000, 1, dtype=F64)
    y = sf.solve(pr, x0, (0.0, T), solver="dpm_solver_pp2m_sde", steps=4, seed=3).ys[-1]
    m = b * (1 - math.exp(-a * T)) / a
    v = g * g * (1 - math.exp(-2 * a * T)) / (2 * a)
    n = x0.shape[0]
    assert abs(float(y.mean()) - m) < 4 * math.sqrt(v / n)
    assert abs(float(y.var()) - v) < 4 * v * math.sqrt(2 / n)
    # the drift-only Euler--Maruyama at 4 steps is visibly off in the variance
    em = sf.solve(pr, x0, (0.0, T), solver="euler_maruyama", steps=4, seed=3).ys[-1]
    assert abs(float(em.var()) - v) > 10 * v * math.sqrt(2 / n)


# ------------------------------------------------------------------------ exactness
@settings(max_examples=25, deadline=None)
@given(L=st.floats(-40.0, 5.0), a=st.floats(-3.0, 3.0), b=st.floats(-3.0, 3.0),
       steps=st.integers(3, 12), x0=st.floats(-2.0, 2.0))
@example(L=6e-8, a=0.0, b=1.0, steps=3, x0=0.0)  # tiny L: the phi series branch
@example(L=0.0, a=1.0, b=-2.0, steps=5, x0=1.0)
def test_polynomial_forcing_is_integrated_exactly(L: float, a: float, b: float, steps: int,
                                                  x0: float) -> None:
    """x' = L x + a + b t: every solver is exact for b = 0 (the weights integrate constants);
    the solvers whose every step uses two or more nodes are exact for b != 0 too.
    Exact: x(t) = e^{Lt} x0 + int_0^t e^{L(t-r)} (a + b r) dr."""
    T = 1.0
    def exact(bb: float) -> float:  # e^z x0 + a T phi_1(z) + b T^2 phi_2(z), z = L T
        z = L * T
        if abs(z) < 1e-2:  # series (the closed forms cancel)
            p1 = 1 + z / 2 + z * z / 6 + z ** 3 / 24 + z ** 4 / 120
            p2 = 0.5 + z / 6 + z * z / 24 + z ** 3 / 120 + z ** 4 / 720
        else:
            p1, p2 = math.expm1(z) / z, (math.expm1(z) - z) / (z * z)
        return math.exp(z) * x0 + a * T * p1 + bb * T * T * p2
    x = torch.tensor([x0], dtype=F64)
    for bb, names in ((0.0, ODE_SOLVERS), (b, ("dpm_solver2", "dpm_solver3",
                                                "dpm_solver_pp3m"))):
        pr = sf.SemilinearODE.etd(L, lambda t, y, bb=bb: a + bb * t + 0 * y)
        want = exact(bb)
        for name in names:
            y = float(sf.solve(pr, x, (0.0, T), solver=name, steps=steps).ys[-1])
            assert abs(y - want) <= 1e-10 * max(1.0, abs(want)), (name, y, want)


def test_unipc3_warmup_makes_it_order_three() -> None:
    """x' = e^t (L = 0: pure quadrature): the first UniPC-3 step (UniP-1 + UniC-1, local
    error -h^3 N''/12) survives undamped, so the declared order is 3 although the steady steps
    are of order 4 (on the stiff problem above the first step's error cancels: order ~4)."""
    pr = sf.SemilinearODE.etd(0.0, lambda t, x: torch.exp(t) + 0 * x)
    x0 = torch.zeros(1, dtype=F64)
    steps = (80, 160, 320, 640)
    errs = [abs(float(sf.solve(pr, x0, (0.0, 1.0), solver="unipc3", steps=n).ys[-1])
                - (math.e - 1)) for n in steps]
    p, ci = _regression_fit([1.0 / n for n in steps], errs, 0.95)
    assert abs(p - 3.0) <= 0.2, (p, ci, errs)
