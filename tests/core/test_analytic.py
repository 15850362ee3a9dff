"""sdeflow.analytic: the exact solutions and moments are themselves checked (docs/math.md §8).

Independent checks: scipy's expm and solve_ivp for the moment ODEs, closed forms against the
Van Loan construction, Monte Carlo of the exact laws (sample sizes and seeds in each test), the
order of the fine-grid references, and bad-input errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

import sdeflow as sf
import sdeflow.testing as sft
from sdeflow import analytic as an

F64 = torch.float64
SETTINGS = settings(max_examples=15, deadline=None, derandomize=True)


# ------------------------------------------------------------------------------ LinearODE
@SETTINGS
@given(sft.linear_odes(dim=(1, 4)), st.floats(0.0, 2.0))
def test_linear_ode_exact_matches_scipy_expm(ode: an.LinearODE, t: float) -> None:
    x0 = torch.linspace(-1, 1, ode.dim, dtype=F64).expand(3, -1)
    want = x0.numpy() @ scipy.linalg.expm(t * ode.A.numpy()).T
    np.testing.assert_allclose(ode.exact(t, x0).numpy(), want, rtol=1e-10, atol=1e-12)


@SETTINGS
@given(sft.linear_odes(dim=(1, 3)), st.floats(0.05, 1.0), st.floats(0.05, 1.0))
def test_linear_ode_semigroup_and_vector_field(ode: an.LinearODE, s: float, t: float) -> None:
    x0 = ode.default_x0()
    # flow property psi_{s+t} = psi_t o psi_s  (docs/math.md §1.1)
    torch.testing.assert_close(ode.exact(s + t, x0), ode.exact(t, ode.exact(s, x0)),
                               rtol=1e-10, atol=1e-12)
    # d/dt x(t) = u(t, x(t)) by a central difference (error O(eps^2 |A|^3))
    eps = 1e-5
    deriv = (ode.exact(t + eps, x0) - ode.exact(t - eps, x0)) / (2 * eps)
    u = ode.problem.vector_field(torch.tensor(t, dtype=F64), ode.exact(t, x0))
    torch.testing.assert_close(deriv, u, rtol=1e-6, atol=1e-7)


def test_linear_ode_scalar_and_dtype() -> None:
    ode = an.LinearODE(-2.0)  # x' = -2 x: x0 e^{-2t} (docs/math.md §8.1)
    x0 = torch.tensor([[1.5]], dtype=torch.float32)
    out = ode.exact(0.7, x0)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(1.5 * math.exp(-1.4), rel=1e-6)
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    assert ode.exact(ts, x0.double()).shape == (3, 1, 1)
    assert ode.covariance(1.0).abs().max() == 0


def test_linear_ode_bad_input() -> None:
    with pytest.raises(ValueError, match="A"):
        an.LinearODE([[1.0, 2.0]])
    with pytest.raises(ValueError, match="A"):
        an.LinearODE([[float("nan")]])
    ode = an.LinearODE(torch.eye(2))
    with pytest.raises(ValueError, match="x0"):
        ode.exact(1.0, torch.ones(3))
    with pytest.raises(ValueError, match="t"):
        ode.exact(float("inf"), torch.ones(2))


# ------------------------------------------------------------------------------ GBM
def test_gbm_exact_formula_and_moments_by_monte_carlo() -> None:
    """n = 200000 exact samples X_1 = x0 exp((mu - sigma^2/2) + sigma W_1), seed 0: mean and
    variance within 4 standard errors of x0 e^mu and x0^2 e^{2mu}(e^{sigma^2} - 1)."""
    gbm = an.GeometricBrownianMotion(0.3, 0.4)
    x0 = torch.tensor([2.0], dtype=F64)
    w = torch.randn(200_000, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    x = gbm.exact(1.0, x0.expand(200_000, 1), w)
    torch.testing.assert_close(x[:3], 2.0 * torch.exp(0.3 - 0.08 + 0.4 * w[:3]))
    n = x.shape[0]
    m, v = gbm.mean(1.0, x0), gbm.variance(1.0, x0)
    assert abs(x.mean() - m) <= 4 * math.sqrt(v.item() / n)
    fourth = ((x - m) ** 4).mean()
    assert abs(x.var() - v) <= 4 * math.sqrt((fourth - v**2).item() / n)
    assert gbm.covariance(1.0, x0.expand(5, 1)).shape == (5, 1, 1)


def test_gbm_pathwise_is_exact_on_the_path_and_stratonovich_form() -> None:
    gbm = an.GeometricBrownianMotion(0.5, 1.0)
    x0 = torch.ones(4, 2, dtype=F64)
    bm = sf.BrownianPath((4, 2), seed=3, dtype=F64)
    torch.testing.assert_close(gbm.pathwise(1.0, x0, bm), gbm.exact(1.0, x0, bm(1.0)))
    strat = gbm.problem_as("stratonovich")
    ito = gbm.problem
    assert (strat.kind, ito.kind, strat.noise) == ("stratonovich", "ito", "diagonal")
    t, x = torch.tensor(0.0, dtype=F64), torch.full((1, 1), 2.0, dtype=F64)
    # f_S = f_I - 1/2 g dg/dx = mu x - sigma^2/2 x
    assert strat.drift(t, x).item() == pytest.approx(2.0 * (0.5 - 0.5))
    assert ito.drift(t, x).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="kind"):
        gbm.problem_as("forward")


def test_gbm_euler_maruyama_moments_formula() -> None:
    gbm = an.GeometricBrownianMotion(0.5, 0.5)
    x0 = torch.ones(1, dtype=F64)
    mean, second = gbm.euler_maruyama_moments(1.0, x0, 4)
    assert mean.item() == pytest.approx(1.125**4)
    assert second.item() == pytest.approx((1.125**2 + 0.0625) ** 4)
    # converges to the exact moments as h -> 0
    mean, second = gbm.euler_maruyama_moments(1.0, x0, 2**16)
    exact2 = gbm.variance(1.0, x0) + gbm.mean(1.0, x0) ** 2
    assert mean.item() == pytest.approx(math.exp(0.5), rel=1e-4)
    assert second.item() == pytest.approx(exact2.item(), rel=1e-4)


# ------------------------------------------------------------------------------ OU
@SETTINGS
@given(sft.ou_processes(dim=(1, 3)), st.floats(0.01, 3.0))
def test_ou_closed_forms_equal_the_linear_sde_moment_equations(ou: an.OrnsteinUhlenbeck,
                                                               t: float) -> None:
    x0 = torch.linspace(-1.5, 2.0, ou.dim, dtype=F64)
    lin = ou.as_linear_sde()
    torch.testing.assert_close(ou.mean(t, x0), lin.mean(t, x0), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ou.covariance(t, x0), lin.covariance(t, x0), rtol=1e-9,
                               atol=1e-12)


def test_ou_stationary_law_and_transition() -> None:
    ou = an.OrnsteinUhlenbeck(2.0, 0.6, mu=-0.5)
    assert ou.stationary() == (-0.5, 0.09)
    x0 = torch.tensor([3.0], dtype=F64)
    assert ou.variance(50.0) == pytest.approx(0.09, rel=1e-12)
    assert ou.mean(50.0, x0).item() == pytest.approx(-0.5, abs=1e-12)
    # exact transition: composing two half steps with xi = 0 gives the mean; the transition
    # variance over h equals Var X_h from a fixed start
    half = ou.transition(0.4, ou.transition(0.4, x0, torch.zeros(1, dtype=F64)),
                         torch.zeros(1, dtype=F64))
    torch.testing.assert_close(half, ou.mean(0.8, x0))
    sd = ou.transition(0.8, x0, torch.ones(1, dtype=F64)) - ou.mean(0.8, x0)
    assert sd.item() ** 2 == pytest.approx(ou.variance(0.8), rel=1e-12)


def test_ou_euler_maruyama_moments_match_the_recursion() -> None:
    ou = an.OrnsteinUhlenbeck(1.5, 0.8, mu=0.3)
    x0 = torch.tensor([1.0, -1.0], dtype=F64)
    for steps in (1, 3, 16):
        m1, v1 = ou.euler_maruyama_moments(1.0, x0, steps)
        m2, p2 = ou.as_linear_sde(2).euler_maruyama_moments(1.0, x0, steps)
        torch.testing.assert_close(m1, m2)
        torch.testing.assert_close(v1 * torch.eye(2, dtype=F64), p2)
    # one step of EM from x0: mean x0 + h theta (mu - x0), variance sigma^2 h
    m1, v1 = ou.euler_maruyama_moments(0.5, x0, 1)
    torch.testing.assert_close(m1, x0 + 0.5 * 1.5 * (0.3 - x0))
    assert v1 == pytest.approx(0.64 * 0.5)


def test_ou_pathwise_reference_is_second_order_and_has_the_right_law() -> None:
    """The quadrature reference on one path converges at order 2 in the cell width; across
    n = 20000 paths (seed 5, 256 cells) its mean/variance match docs/math.md §8.3 within 4 s.e."""
    ou = an.OrnsteinUhlenbeck(1.0, 1.0, mu=0.5)
    x0 = torch.full((8, 1), 2.0, dtype=F64)
    bm = sf.BrownianPath((8, 1), seed=1, dtype=F64)
    fine = ou.pathwise(1.0, x0, bm, n_fine=4096)
    e64 = (ou.pathwise(1.0, x0, bm, n_fine=64) - fine).abs().mean().item()
    e256 = (ou.pathwise(1.0, x0, bm, n_fine=256) - fine).abs().mean().item()
    assert math.log(e64 / e256) / math.log(4) > 1.7  # order 2 (error sd <= theta^2 delta^2)
    assert e256 < 1e-4
    n = 20000
    xs = torch.full((n, 1), 2.0, dtype=F64)
    x = ou.pathwise(1.0, xs, sf.BrownianPath((n, 1), seed=5, dtype=F64), n_fine=256)
    v = ou.variance(1.0)
    assert abs(x.mean().item() - ou.mean(1.0, xs[0]).item()) <= 4 * math.sqrt(v / n)
    assert abs(x.var().item() - v) <= 4 * v * math.sqrt(2 / n)


def test_ou_bad_parameters() -> None:
    with pytest.raises(ValueError, match="theta"):
        an.OrnsteinUhlenbeck(0.0, 1.0)
    with pytest.raises(ValueError, match="sigma"):
        an.OrnsteinUhlenbeck(1.0, -1.0)
    with pytest.raises(ValueError, match="mu"):
        an.OrnsteinUhlenbeck(1.0, 1.0, mu=float("nan"))
    ou = an.OrnsteinUhlenbeck(1.0, 1.0)
    bm = sf.BrownianPath((2, 1), seed=0, t1=0.5)
    with pytest.raises(ValueError, match="bm"):
        ou.pathwise(1.0, torch.ones(2, 1), bm)  # path too short
    with pytest.raises(ValueError, match="bm"):
        ou.pathwise(0.5, torch.ones(3, 1), bm)  # wrong shape


# ------------------------------------------------------------------------------ LinearSDE
def _moment_odes(lin: an.LinearSDE, x0: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """m' = A m + a, P' = A P + P A^T + B B^T by scipy's RK45 at rtol 1e-11 (independent)."""
    a, av = lin.A.numpy(), lin.a.numpy()
    bbt = lin.diffusion_covariance().numpy()
    d = lin.dim

    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        m, p = y[:d], y[d:].reshape(d, d)
        return np.concatenate([a @ m + av, (a @ p + p @ a.T + bbt).ravel()])

    y0 = np.concatenate([x0, np.zeros(d * d)])
    sol = solve_ivp(rhs, (0.0, t), y0, rtol=1e-11, atol=1e-13)
    return sol.y[:d, -1], sol.y[d:, -1].reshape(d, d)


@SETTINGS
@given(sft.linear_sdes(dim=(1, 3)), st.floats(0.1, 2.0))
def test_linear_sde_van_loan_matches_the_moment_odes(lin: an.LinearSDE, t: float) -> None:
    x0 = np.linspace(-1.0, 1.0, lin.dim)
    m_ref, p_ref = _moment_odes(lin, x0, t)
    m = lin.mean(t, torch.tensor(x0, dtype=F64)).numpy()
    p = lin.covariance(t).numpy()
    np.testing.assert_allclose(m, m_ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(p, p_ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(p, p.T, atol=1e-14)
    assert np.linalg.eigvalsh(p).min() > -1e-12


def test_linear_sde_covariance_from_a_random_start() -> None:
    """cov0: P(t) = e^{tA} P0 e^{tA^T} + Q(t); Q(t + s) = e^{sA} Q(t) e^{sA^T} + Q(s)."""
    lin = an.LinearSDE([[-1.0, 0.5], [-0.5, -1.5]], [0.5, -0.2], [[0.6, 0.2], [0.0, 0.4]])
    q1 = lin.covariance(0.4)
    torch.testing.assert_close(lin.covariance(1.0), lin.covariance(0.6, cov0=q1))
    x0 = torch.zeros(2, dtype=torch.float32)
    assert lin.covariance(1.0, x0).dtype == torch.float32


def test_linear_sde_shapes_and_noise_types() -> None:
    add = an.LinearSDE(-torch.eye(3), None, [0.1, 0.2, 0.3])
    gen = an.LinearSDE(-torch.eye(3), torch.ones(3), torch.ones(3, 2))
    assert (add.noise, add.m, gen.noise, gen.m) == ("additive", 3, "general", 2)
    x = torch.ones(5, 3, dtype=F64)
    t = torch.tensor(0.0, dtype=F64)
    assert add.problem.diffusion(t, x).shape == (5, 3)
    assert gen.problem.diffusion(t, x).shape == (5, 3, 2)
    assert gen.brownian_shape(x.shape) == (5, 2)
    mat = an.LinearSDE(-torch.eye(3), None, torch.ones(3, 2), noise="additive")
    assert (mat.noise, mat.m) == ("additive", 2)
    assert mat.problem.diffusion(t, x).shape == (5, 3, 2)
    assert mat.brownian_shape(x.shape) == (5, 2)
    torch.testing.assert_close(mat.covariance(1.0), gen.covariance(1.0))
    with pytest.raises(ValueError, match="noise: 'additive' is for a"):
        an.LinearSDE(-torch.eye(3), None, torch.ones(3), noise="additive")
    with pytest.raises(ValueError, match="noise: expected"):
        an.LinearSDE(-torch.eye(3), None, torch.ones(3, 2), noise="diagonal")
    with pytest.raises(ValueError, match="B"):
        an.LinearSDE(-torch.eye(3), None, torch.ones(2, 2))
    with pytest.raises(ValueError, match="a"):
        an.LinearSDE(-torch.eye(3), torch.ones(2), torch.ones(3))
    with pytest.raises(ValueError, match="A"):
        an.LinearSDE(torch.ones(2, 3), None, torch.ones(2))


def test_linear_sde_pathwise_agrees_with_ou_and_has_the_right_law() -> None:
    """Diagonal case: the matrix quadrature equals the scalar one on the same path (1e-12).
    General noise (d=2, m=3), n = 20000 paths, seed 2, 128 cells: Monte Carlo mean and
    covariance of the reference match the Van Loan moments within 4 standard errors."""
    ou = an.OrnsteinUhlenbeck(1.3, 0.7, mu=0.4)
    x0 = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    bm = sf.BrownianPath((6, 2), seed=4, dtype=F64)
    torch.testing.assert_close(ou.pathwise(1.0, x0, bm), ou.as_linear_sde(2).pathwise(1.0, x0, bm),
                               rtol=1e-12, atol=1e-12)
    lin = an.LinearSDE([[-1.0, 0.5], [-0.5, -1.5]], [0.5, -0.2],
                       [[0.6, 0.2, -0.3], [0.0, 0.4, 0.5]])
    n = 20000
    xs = torch.ones(n, 2, dtype=F64)
    x = lin.pathwise(1.0, xs, sf.BrownianPath((n, 3), seed=2, dtype=F64), n_fine=128)
    m, p = lin.mean(1.0, xs[0]), lin.covariance(1.0)
    se_m = (p.diagonal() / n).sqrt()
    assert ((x.mean(0) - m).abs() <= 4 * se_m).all()
    xc = x - m
    prods = xc.unsqueeze(-1) * xc.unsqueeze(-2)
    se_p = prods.std(0) / math.sqrt(n)
    assert ((prods.mean(0) - p).abs() <= 4 * se_p).all()


def test_linear_recursion_moments() -> None:
    m = torch.tensor([[0.5]], dtype=F64)
    mean, cov = an.linear_recursion_moments(m, torch.tensor([1.0], dtype=F64),
                                            torch.tensor([[2.0]], dtype=F64), 2,
                                            torch.tensor([4.0], dtype=F64))
    assert mean.item() == pytest.approx(0.5 * (0.5 * 4 + 1) + 1)
    assert cov.item() == pytest.approx(0.25 * 2 + 2)
    with pytest.raises(ValueError, match="steps"):
        an.linear_recursion_moments(m, m[0], m, -1, m[0])


# ------------------------------------------------------------------------------ nonlinear
def test_nonlinear_reference_converges_at_order_1_5() -> None:
    """The Taylor 1.5 reference of dX = -sin X dt + 2 dW, on one shared path (16 paths,
    seed 7), against itself on 2^13 cells: slope of log error vs log cell width ~ 1.5."""
    ref = an.NonlinearAdditiveSDE(2.0)
    x0 = torch.ones(16, 1, dtype=F64)
    bm = sf.BrownianPath((16, 1), seed=7, dtype=F64)
    best = ref.pathwise(1.0, x0, bm, n_fine=2**13)
    ns = [2**6, 2**7, 2**8, 2**9]
    errs = [(ref.pathwise(1.0, x0, bm, n_fine=n) - best).abs().mean().item() for n in ns]
    slope = np.polyfit(np.log([1 / n for n in ns]), np.log(errs), 1)[0]
    assert 1.3 < slope < 1.8
    assert ref.problem.noise == "additive"
    assert ref.problem_as("stratonovich").kind == "stratonovich"
    assert not ref.has_moments and not ref.pathwise_exact


def test_suite_runs_additive_solvers_on_the_noise_matrix() -> None:
    """`sdeflow verify` checks sra1's moments on the suite's full 2x2 noise matrix declared as
    additive noise (not on its diagonal): bias order >= 2 and Monte Carlo moments pass."""
    from sdeflow.verify import run_suite

    res = [r for r in run_suite(["sra1"], quick=True) if "LinearSDE" in r.problem]
    assert {r.problem for r in res} == {"LinearSDE(d=2, additive, m=2)"}
    assert len(res) == 2 and all(r.passed for r in res)
