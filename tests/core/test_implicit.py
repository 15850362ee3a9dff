"""Implicit solvers: orders on a mildly stiff linear problem, batched Newton, Jacobians,
failures, the stiffness hint, and the drift-implicit SDE scheme."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

import sdeflow as sf
from sdeflow.verify import fit_order

torch.set_num_threads(1)

D64 = torch.float64

# mildly stiff: eigenvalues -1 +- 2i and -50 (stiffness ratio 50)
A_STIFF = torch.tensor([[-1.0, 2.0, 0.0], [-2.0, -1.0, 0.0], [0.0, 10.0, -50.0]], dtype=D64)
X0 = torch.tensor([1.0, 0.5, -0.3], dtype=D64)


def linear_ode() -> sf.ODE:
    at = A_STIFF.T.contiguous()
    return sf.ODE(lambda t, x: x @ at)


def exact_linear(t1: float) -> torch.Tensor:
    return torch.linalg.matrix_exp(t1 * A_STIFF) @ X0


@pytest.mark.parametrize("name, order, steps", [
    ("implicit_euler", 1.0, (64, 128, 256, 512)),
    ("kvaerno3", 3.0, (32, 64, 128, 256)),
    ("kvaerno5", 5.0, (16, 24, 32, 48)),
    ("rodas5", 5.0, (16, 24, 32, 48)),
    ("ros3p", 3.0, (32, 64, 128, 256)),
])
def test_order_on_mildly_stiff_linear(name: str, order: float, steps: tuple[int, ...]) -> None:
    t1 = 2.0
    ex = exact_linear(t1)
    errs = [float((sf.solve(linear_ode(), X0, (0.0, t1), solver=name, steps=n).x_final - ex)
                  .norm()) for n in steps]
    p = fit_order([t1 / n for n in steps], errs)
    assert sf.solvers.get(name).caps.order == order
    assert abs(p - order) <= 0.15, (name, p, errs)


@pytest.mark.parametrize("name, order, steps", [("kvaerno5", 5.0, (8, 12, 16, 24)),
                                                ("rodas5", 5.0, (8, 12, 16, 24)),
                                                ("ros3p", 3.0, (16, 32, 64, 128))])
def test_order_non_autonomous(name: str, order: float, steps: tuple[int, ...]) -> None:
    """y' = -2 y + cos t: exercises the stage times (and the Rosenbrock du/dt term)."""
    ode = sf.ODE(lambda t, x: -2 * x + torch.cos(t))
    y0 = torch.tensor([1.0], dtype=D64)

    def exact(t: float) -> float:
        return (1.0 - 0.4) * math.exp(-2 * t) + (2 * math.cos(t) + math.sin(t)) / 5

    errs = [abs(float(sf.solve(ode, y0, (0.0, 2.0), solver=name, steps=n).x_final) - exact(2.0))
            for n in steps]
    assert abs(fit_order([2.0 / n for n in steps], errs) - order) <= 0.15, errs


def test_l_stability_implicit_euler_large_steps() -> None:
    """x' = -1e6 (x - cos t): implicit Euler with h = 0.1 stays on the slow manifold; explicit
    Euler explodes."""
    ode = sf.ODE(lambda t, x: -1e6 * (x - torch.cos(t)))
    x0 = torch.tensor([0.0], dtype=D64)
    imp = sf.solve(ode, x0, (0.0, 1.0), solver="implicit_euler", steps=10).x_final
    assert abs(float(imp) - math.cos(1.0)) < 1e-5
    exp = sf.solve(ode, x0, (0.0, 1.0), solver="euler", steps=10, on_failure="return")
    assert exp.status == "nonfinite" or abs(float(exp.x_final)) > 1e10


# ------------------------------------------------------------------------------ Robertson
def robertson(k: torch.Tensor | None = None) -> sf.ODE:
    """Robertson's chemical kinetics (Hairer & Wanner II, §IV.1); ``k`` (B, 3) rate constants."""
    def u(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        k1, k2, k3 = ((0.04, 3e7, 1e4) if k is None else (k[..., 0], k[..., 1], k[..., 2]))
        y1, y2, y3 = x[..., 0], x[..., 1], x[..., 2]
        return torch.stack([-k1 * y1 + k3 * y2 * y3, k1 * y1 - k3 * y2 * y3 - k2 * y2**2,
                            k2 * y2**2], -1)
    return sf.ODE(u)


def robertson_reference(t1: float, rtol: float = 1e-12) -> np.ndarray:
    from scipy.integrate import solve_ivp

    def f(t, y):
        return [-0.04 * y[0] + 1e4 * y[1] * y[2],
                0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2, 3e7 * y[1] ** 2]

    def jac(t, y):
        return [[-0.04, 1e4 * y[2], 1e4 * y[1]],
                [0.04, -1e4 * y[2] - 6e7 * y[1], -1e4 * y[1]], [0.0, 6e7 * y[1], 0.0]]

    s = solve_ivp(f, (0.0, t1), [1.0, 0.0, 0.0], method="Radau", rtol=rtol, atol=1e-20,
                  jac=jac)
    assert s.success
    return s.y[:, -1]


@pytest.fixture(scope="module")
def rob_ref_1e5() -> np.ndarray:
    return robertson_reference(1e5)


@pytest.mark.parametrize("name, rtol", [("kvaerno5", 1e-6), ("rodas5", 1e-6),
                                        # third order: at rtol 1e-6 the global error of y1
                                        # and y2 is 1.6e-5 (16 rtol); 3e-7 gives 7e-6
                                        ("ros3p", 3e-7)])
def test_robertson_1e5(name: str, rtol: float, rob_ref_1e5: np.ndarray) -> None:
    x0 = torch.tensor([1.0, 0.0, 0.0], dtype=D64)
    sol = sf.solve(robertson(), x0, (0.0, 1e5), solver=name, rtol=rtol, atol=1e-10)
    rel = np.abs(sol.x_final.numpy() - rob_ref_1e5) / np.abs(rob_ref_1e5)
    assert rel.max() <= 1e-5, rel  # component-wise, y2 ~ 7e-8 included
    assert sol.stats["njac"] >= 1 and sol.stats["nlu"] >= sol.stats["njac"]
    assert sol.stats["steps"] < 1000


@pytest.mark.slow
@pytest.mark.parametrize("name", ["kvaerno5", "rodas5"])
def test_robertson_1e11(name: str) -> None:
    """At t = 1e11, y1 ~ 2e-8 and y2 ~ 8e-14 lie below atol = 1e-10: at that atol the error is
    relative to the state's size; component-wise relative accuracy needs atol below them."""
    ref = robertson_reference(1e11, rtol=1e-11)
    x0 = torch.tensor([1.0, 0.0, 0.0], dtype=D64)
    sol = sf.solve(robertson(), x0, (0.0, 1e11), solver=name, rtol=1e-6, atol=1e-10)
    assert np.abs(sol.x_final.numpy() - ref).max() / np.abs(ref).max() <= 1e-5
    fine = sf.solve(robertson(), x0, (0.0, 1e11), solver=name, rtol=1e-6, atol=1e-14)
    rel = np.abs(fine.x_final.numpy() - ref) / np.abs(ref)
    assert rel.max() <= 1e-5, rel


@functools.lru_cache(maxsize=1)
def vdp_reference() -> np.ndarray:
    """scipy Radau at rtol 1e-10 (1e-12 takes ~30 s here; 1e-10 is 1e4 below the bound)."""
    from scipy.integrate import solve_ivp

    mu = 1000.0
    return solve_ivp(lambda t, y: [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]], (0.0, 3000.0),
                     [2.0, 0.0], method="Radau", rtol=1e-10, atol=1e-12,
                     jac=lambda t, y: [[0.0, 1.0], [-2 * mu * y[0] * y[1] - 1,
                                                    mu * (1 - y[0] ** 2)]]).y[:, -1]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["kvaerno5", "rodas5", "ros3p"])
def test_van_der_pol_mu_1000(name: str) -> None:
    """x'' = mu (1 - x^2) x' - x, mu = 1000, to t = 3000 (two relaxation periods). Error
    relative to the state's size (x' passes near 0 at t = 3000 on a scale of O(mu)); ros3p
    (third order) takes ~12000 steps (~9 s here) and meets the bound at rtol 1e-6 (3.4e-7)."""
    mu = 1000.0
    ref = vdp_reference()
    ode = sf.ODE(lambda t, x: torch.stack([x[..., 1], mu * (1 - x[..., 0] ** 2) * x[..., 1]
                                           - x[..., 0]], -1))
    sol = sf.solve(ode, torch.tensor([2.0, 0.0], dtype=D64), (0.0, 3000.0), solver=name,
                   rtol=1e-6, atol=1e-10)
    err = np.abs(sol.x_final.numpy() - ref).max() / np.abs(ref).max()
    assert err <= 1e-5, (sol.x_final, ref)


# --------------------------------------------------------------------------- batched Newton
def test_batched_newton_matches_single_paths() -> None:
    """B independent Robertson problems in one call equal the B separate solves (each path's
    Newton system is its own d x d block) to well within the tolerance."""
    g = torch.Generator().manual_seed(0)
    base = torch.tensor([0.04, 3e7, 1e4], dtype=D64)
    k = base * (1 + 0.4 * (torch.rand(3, 3, generator=g, dtype=D64) - 0.5))
    x0 = torch.tensor([[1.0, 0.0, 0.0]] * 3, dtype=D64)
    batch = sf.solve(robertson(k), x0, (0.0, 10.0), solver="kvaerno5", rtol=1e-7, atol=1e-12)
    for i in range(3):
        one = sf.solve(robertson(k[i : i + 1]), x0[i : i + 1], (0.0, 10.0),
                       solver="kvaerno5", rtol=1e-7, atol=1e-12)
        ref = robertson_reference_k(k[i].tolist(), 10.0)
        e_b = np.abs(batch.x_final[i].numpy() - ref) / np.abs(ref)
        e_1 = np.abs(one.x_final[0].numpy() - ref) / np.abs(ref)
        assert e_b.max() < 1e-5 and e_1.max() < 1e-5


def robertson_reference_k(k: list[float], t1: float) -> np.ndarray:
    from scipy.integrate import solve_ivp

    k1, k2, k3 = k
    s = solve_ivp(lambda t, y: [-k1 * y[0] + k3 * y[1] * y[2],
                                k1 * y[0] - k3 * y[1] * y[2] - k2 * y[1] ** 2, k2 * y[1] ** 2],
                  (0.0, t1), [1.0, 0.0, 0.0], method="Radau", rtol=1e-11, atol=1e-20)
    return s.y[:, -1]


def test_jacobian_batched_shape_and_values() -> None:
    from sdeflow.newton import Jacobian

    ode = robertson()
    x = torch.tensor([[1.0, 1e-5, 0.1], [0.5, 2e-5, 0.4]], dtype=D64)
    t = torch.zeros((), dtype=D64)
    jac, ut = Jacobian(ode._field(), None)(t, x, with_t=True)
    assert jac.shape == (2, 3, 3) and ut is not None and ut.shape == (2, 3)
    for i in range(2):
        full = torch.autograd.functional.jacobian(lambda y: ode._field()(t, y), x[i])
        torch.testing.assert_close(jac[i], full)
    assert float(ut.abs().max()) == 0.0  # autonomous
    # a wide system takes the vmap(jacrev) route; same values
    w = torch.randn(20, 20, dtype=D64, generator=torch.Generator().manual_seed(1))
    lin = sf.ODE(lambda t, x: torch.tanh(x @ w.T))
    xb = torch.randn(3, 20, dtype=D64, generator=torch.Generator().manual_seed(2))
    jb, _ = Jacobian(lin._field(), None)(t, xb)
    for i in range(3):
        full = torch.autograd.functional.jacobian(lambda y: torch.tanh(y @ w.T), xb[i])
        torch.testing.assert_close(jb[i], full)


def test_user_jacobian_used_and_same_result() -> None:
    calls = []
    at = A_STIFF.T.contiguous()

    def jac(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return A_STIFF.expand(x.shape[0], 3, 3) if x.dim() == 2 else A_STIFF

    x0 = X0.expand(2, 3).clone()
    a = sf.solve(sf.ODE(lambda t, x: x @ at, jacobian=jac), x0, (0.0, 1.0), solver="kvaerno5",
                 rtol=1e-8, atol=1e-10)
    b = sf.solve(sf.ODE(lambda t, x: x @ at), x0, (0.0, 1.0), solver="kvaerno5",
                 rtol=1e-8, atol=1e-10)
    assert calls and a.stats["njac"] == len(calls)
    torch.testing.assert_close(a.x_final, b.x_final, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(a.x_final[0], exact_linear(1.0), rtol=1e-6, atol=1e-8)


def test_jacobian_reuse_and_stats() -> None:
    """Linear problem: the Jacobian never changes, so it is evaluated about once; every step
    refactors (the step size changes) and Newton converges in few iterations."""
    sol = sf.solve(linear_ode(), X0, (0.0, 5.0), solver="kvaerno5", rtol=1e-8, atol=1e-10)
    st = sol.stats
    assert st["njac"] <= 3
    assert st["nlu"] >= st["accepted"]
    assert st["nnewton"] <= 3 * 6 * st["steps"]
    assert st["nfe"] >= st["nnewton"]
    ros = sf.solve(linear_ode(), X0, (0.0, 5.0), solver="rodas5", rtol=1e-8, atol=1e-10).stats
    assert ros["njac"] == ros["accepted"] and ros["nnewton"] == 0


# -------------------------------------------------------------------------------- failures
def test_newton_failure_raises_and_returns() -> None:
    """A field that is NaN from t = 0.5 on: Newton cannot converge past it."""
    def u(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.where(t > 0.5, torch.full_like(x, math.nan), -x)

    x0 = torch.tensor([1.0, 2.0], dtype=D64)
    with pytest.raises(sf.NewtonError) as ei:
        sf.solve(sf.ODE(u), x0, (0.0, 1.0), solver="kvaerno3", rtol=1e-6, atol=1e-8)
    assert 0.45 < ei.value.t <= 0.5 and isinstance(ei.value, sf.SolverError)
    assert "Newton" in str(ei.value) and "t=" in str(ei.value)
    sol = sf.solve(sf.ODE(u), x0, (0.0, 1.0), solver="kvaerno3", rtol=1e-6, atol=1e-8,
                   on_failure="return")
    assert sol.status == "newton" and 0.45 < sol.t_reached <= 0.5
    torch.testing.assert_close(sol.x_final, x0 * math.exp(-sol.t_reached), rtol=1e-4,
                               atol=1e-6)
    fixed = sf.solve(sf.ODE(u), x0, (0.0, 1.0), solver="implicit_euler", steps=10,
                     on_failure="return")
    assert fixed.status == "newton" and abs(fixed.t_reached - 0.5) < 1e-12
    with pytest.raises(sf.NewtonError):
        sf.solve(sf.ODE(u), x0, (0.0, 1.0), solver="implicit_euler", steps=10)


def test_non_differentiable_field_says_so() -> None:
    def u(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(-x.detach().numpy().copy())

    with pytest.raises(ValueError, match="jacobian: the vector field is not differentiable"):
        sf.solve(sf.ODE(u), torch.tensor([1.0, 2.0], dtype=D64), (0.0, 1.0),
                 solver="kvaerno5", rtol=1e-6)


@pytest.mark.parametrize("bad", [lambda t, x: torch.zeros(3, 3, dtype=D64),
                                 lambda t, x: torch.zeros(2, 2, 3, dtype=D64)])
def test_user_jacobian_wrong_shape(bad) -> None:
    ode = sf.ODE(lambda t, x: -x, jacobian=bad)
    with pytest.raises(ValueError, match=r"jacobian: J\(t, x\) returned shape"):
        sf.solve(ode, torch.ones(2, 2, dtype=D64), (0.0, 1.0), solver="kvaerno5", rtol=1e-6)


def test_bad_solver_arguments() -> None:
    with pytest.raises(TypeError, match="jacobian"):
        sf.ODE(lambda t, x: -x, jacobian=3)
    with pytest.raises(ValueError, match="kappa"):
        sf.solvers.Kvaerno5(kappa=2.0)
    with pytest.raises(ValueError, match="max_iter"):
        sf.solvers.Kvaerno5(max_iter=0)
    with pytest.raises(ValueError, match="theta"):
        sf.solvers.ImplicitEulerMaruyama(theta=1.5)
    with pytest.raises(TypeError, match="autonomous"):
        sf.solvers.Rodas5(autonomous=1)
    with pytest.raises(ValueError, match="solver: 'implicit_euler' has no error estimate"):
        sf.solve(linear_ode(), X0, (0.0, 1.0), solver="implicit_euler", rtol=1e-6)


def test_stiffness_hint_in_max_steps_error() -> None:
    x0 = torch.tensor([1.0, 0.0, 0.0], dtype=D64)
    with pytest.raises(sf.MaxStepsError, match="kvaerno5"):
        sf.solve(robertson(), x0, (0.0, 1e5), solver="dopri5", rtol=1e-6, atol=1e-10,
                 max_steps=2000)
    # an implicit solver's failure does not suggest itself
    with pytest.raises(sf.MaxStepsError) as ei:
        sf.solve(robertson(), x0, (0.0, 1e5), solver="kvaerno5", rtol=1e-6, atol=1e-10,
                 max_steps=20)
    assert "looks stiff" not in str(ei.value)


def test_capabilities() -> None:
    for name in ("implicit_euler", "kvaerno3", "kvaerno5", "rodas5", "ros3p",
                 "implicit_euler_maruyama"):
        assert sf.solvers.get(name).caps.implicit
    ros = sf.solvers.get("ros3p").caps
    assert ros.adaptive and ros.order == 3 and ros.error_order == 2 and ros.fsal
    assert sf.solvers.get("kvaerno5").caps.adaptive
    assert not sf.solvers.get("implicit_euler").caps.adaptive
    iem = sf.solvers.get("implicit_euler_maruyama").caps
    assert iem.sde and iem.strong("diagonal") == 0.5 and iem.strong("additive") == 1.0
    assert iem.weak("general") == 1.0


def test_field_independent_of_the_state() -> None:
    """u = cos t does not depend on x: the Jacobian is zero (not an autograd failure)."""
    ode = sf.ODE(lambda t, x: torch.cos(t).expand_as(x).clone())
    exact = torch.full((3, 2), math.sin(2.0), dtype=D64)
    x0 = torch.zeros(3, 2, dtype=D64)
    sol = sf.solve(ode, x0, (0.0, 2.0), solver="kvaerno5", rtol=1e-8, atol=1e-10)
    assert sol.stats["njac"] >= 1
    torch.testing.assert_close(sol.x_final, exact, rtol=1e-7, atol=1e-9)
    for name in ("kvaerno5", "rodas5"):  # fifth order: 20 steps give ~1e-9
        fixed = sf.solve(ode, x0, (0.0, 2.0), solver=name, steps=20)
        torch.testing.assert_close(fixed.x_final, exact, rtol=0.0, atol=5e-9)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["kvaerno5", "rodas5"])
def test_hires(name: str) -> None:
    """HIRES (Hairer & Wanner II, §IV.10; the IVP test set of Mazzia et al.) to t = 321.8122,
    component-wise relative error against scipy's Radau at rtol 1e-12."""
    from scipy.integrate import solve_ivp

    def f(t, y):
        return [-1.71 * y[0] + 0.43 * y[1] + 8.32 * y[2] + 0.0007, 1.71 * y[0] - 8.75 * y[1],
                -10.03 * y[2] + 0.43 * y[3] + 0.035 * y[4], 8.32 * y[1] + 1.71 * y[2] - 1.12 * y[3],
                -1.745 * y[4] + 0.43 * y[5] + 0.43 * y[6],
                -280 * y[5] * y[7] + 0.69 * y[3] + 1.71 * y[4] - 0.43 * y[5] + 0.69 * y[6],
                280 * y[5] * y[7] - 1.81 * y[6], -280 * y[5] * y[7] + 1.81 * y[6]]

    def u(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y1, y2, y3, y4, y5, y6, y7, y8 = x.unbind(-1)
        return torch.stack([-1.71 * y1 + 0.43 * y2 + 8.32 * y3 + 0.0007, 1.71 * y1 - 8.75 * y2,
                            -10.03 * y3 + 0.43 * y4 + 0.035 * y5,
                            8.32 * y2 + 1.71 * y3 - 1.12 * y4, -1.745 * y5 + 0.43 * y6 + 0.43 * y7,
                            -280 * y6 * y8 + 0.69 * y4 + 1.71 * y5 - 0.43 * y6 + 0.69 * y7,
                            280 * y6 * y8 - 1.81 * y7, -280 * y6 * y8 + 1.81 * y7], -1)

    y0 = [1.0, 0, 0, 0, 0, 0, 0, 0.0057]
    t1 = 321.8122
    ref = solve_ivp(f, (0.0, t1), y0, method="Radau", rtol=1e-12, atol=1e-14).y[:, -1]
    sol = sf.solve(sf.ODE(u), torch.tensor(y0, dtype=D64), (0.0, t1), solver=name, rtol=1e-6,
                   atol=1e-10)
    rel = np.abs(sol.x_final.numpy() - ref) / np.abs(ref)
    assert rel.max() <= 1e-5, rel


# ------------------------------------------------------------- rodas5: tableau and estimate
def _rodas5_untransformed() -> tuple[np.ndarray, ...]:
    from sdeflow.solvers.implicit import RODAS5

    return _untransformed(RODAS5)


def _untransformed(tab) -> tuple[np.ndarray, ...]:
    """A tableau in Hairer's transformed form back in the classical form (HW II, §IV.7):
    ``Gamma = (I / gamma - C)^-1``, ``alpha = a Gamma``, ``b = m Gamma``,
    ``b_hat = m_hat Gamma``."""
    s = len(tab.alpha)
    a, c = np.zeros((s, s)), np.zeros((s, s))
    for i in range(s):
        a[i, :i], c[i, :i] = tab.a[i], tab.C[i]
    gam = np.linalg.inv(np.eye(s) / tab.gamma - c)
    return (a @ gam, gam, np.asarray(tab.m) @ gam, np.asarray(tab.m_hat) @ gam,
            np.asarray(tab.alpha), np.asarray(tab.gamma_sum), tab.gamma)


def _conditions(alpha: np.ndarray, beta: np.ndarray, g: float
                ) -> tuple[np.ndarray, list[float]]:
    """The Rosenbrock order conditions up to order 4 (HW II, Table IV.7.1): orders 1, 2, 3, 3,
    4, 4, 4, 4 (rows of ``weights @ rows.T == want``)."""
    bp, al = beta.sum(1), alpha.sum(1)
    rows = [np.ones(len(al)), bp, al**2, beta @ bp, al**3, al * (alpha @ bp), beta @ al**2,
            beta @ (beta @ bp)]
    want = [1, 0.5 - g, 1 / 3, 1 / 6 - g + g * g, 0.25, 1 / 8 - g / 3, 1 / 12 - g / 3,
            1 / 24 - g / 2 + 1.5 * g * g - g**3]
    return np.array(rows), want


def test_rodas5_tableau_order_conditions() -> None:
    """Both weight rows satisfy the eight Rosenbrock conditions up to order 4 (HW II, Table
    IV.7.1), the stage times and ``gamma_i`` are the row sums, and the main row also meets the
    order-5 quadrature condition that the embedded error cannot see."""
    alpha, gam, b, bh, c, gsum, g = _rodas5_untransformed()
    np.testing.assert_allclose(alpha.sum(1), c, atol=1e-12)
    np.testing.assert_allclose(gam.sum(1), gsum, atol=1e-12)
    beta = alpha + gam - np.diag(np.diag(gam))
    al = alpha.sum(1)
    rows, want = _conditions(alpha, beta, g)
    for w in (b, bh):
        np.testing.assert_allclose(rows @ w, want, atol=1e-11)
    assert abs(b @ al**4 - 0.2) < 1e-11
    # the error weights live on the three stages at t + h (alpha_i = 1, gamma_i = 0)
    e = b - bh
    assert np.abs(e[:5]).max() < 1e-11 and np.abs(e[5:]).min() > 1e-3


def _vdp(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    p, v = x[..., 0], x[..., 1]
    return torch.stack([v, 2.0 * (1 - p * p) * v - p], dim=-1)


def test_rosenbrock_defect_weight_checked() -> None:
    from sdeflow.solvers.implicit import RODAS5, RosenbrockTableau

    with pytest.raises(ValueError, match="defect_weight"):
        RosenbrockTableau(RODAS5.alpha, RODAS5.gamma_sum, RODAS5.gamma, RODAS5.a, RODAS5.C,
                          RODAS5.m, RODAS5.m_hat, 5, 4, defect_weight=-1.0)


def test_rodas5_local_error_and_estimate_orders() -> None:
    """On Van der Pol (mu = 2) from a generic state, one rodas5 step has local error ~ h^6
    (order 5) and its estimate ~ h^5 (order-4 embedded) that exceeds the true local error."""
    from scipy.integrate import solve_ivp

    from sdeflow.solvers.base import Terms
    from sdeflow.solvers.implicit import Rodas5

    def ref(x0: list[float], h: float) -> np.ndarray:
        def f(t: float, x: np.ndarray) -> list[float]:
            return [x[1], 2.0 * (1 - x[0] ** 2) * x[1] - x[0]]
        return solve_ivp(f, (0.0, h), x0, method="DOP853", rtol=1e-13, atol=1e-16).y[:, -1]

    ode, x0 = sf.ODE(_vdp), [1.5, -0.5]
    hs, true, est = [0.08, 0.04, 0.02, 0.01], [], []
    for h in hs:
        s = Rodas5()
        s.begin(1e-6, 1e-6)
        terms = Terms(ode, u=ode._field(), adaptive=True)
        tt = tuple(torch.tensor(c * h, dtype=D64) for c in s.c)
        r = s.step(terms, tt, 0.0, h, torch.tensor(x0, dtype=D64), None, None)
        true.append(float(np.abs(r.x.numpy() - ref(x0, h)).max()))
        est.append(float(r.err.abs().max()))
    assert abs(fit_order(hs, true) - 6.0) < 0.4, true
    assert abs(fit_order(hs, est) - 5.0) < 0.4, est
    assert all(e > t for e, t in zip(est, true))


# ------------------------------------------------------------- ros3p: tableau and estimate
def _stability(alpha: np.ndarray, gam: np.ndarray, w: np.ndarray, z: complex) -> complex:
    """``R(z) = 1 + z w^T (I - z (alpha + Gamma))^-1 1`` (HW II, §IV.7)."""
    s = len(w)
    return complex(1 + z * w @ np.linalg.solve(np.eye(s) - z * (alpha + gam), np.ones(s)))


def test_ros3p_tableau_order_conditions_and_stability() -> None:
    """ROS3P (Lang & Verwer 2001): the main row meets the four conditions of order 3 and not
    the quadrature one of order 4; its first three stages are the published method (classical
    weights b = (2/3, 0, 1/3), gamma = 1/2 + sqrt(3)/6); A-stable with R(inf) = 1 - sqrt(3).
    The embedded row meets the two conditions of order 2 and its error weights see both an
    order-3 quadrature term and the order-3 linear term (beta beta 1), on which the published
    embedded row is blind; the estimate's stability function differs from R on z = iy."""
    from sdeflow.solvers.implicit import ROS3P

    alpha, gam, b, bh, c, gsum, g = _untransformed(ROS3P)
    assert abs(g - (0.5 + math.sqrt(3) / 6)) < 1e-15
    np.testing.assert_allclose(alpha.sum(1), c, atol=1e-12)
    np.testing.assert_allclose(gam.sum(1), gsum, atol=1e-12)
    np.testing.assert_allclose(b, [2 / 3, 0, 1 / 3, 0], atol=1e-12)
    beta = alpha + gam - np.diag(np.diag(gam))
    rows, want = _conditions(alpha, beta, g)
    np.testing.assert_allclose(rows[:4] @ b, want[:4], atol=1e-12)
    assert abs(rows[4] @ b - want[4]) > 1e-3  # order 3, not 4
    np.testing.assert_allclose(rows[:2] @ bh, want[:2], atol=1e-12)
    e = b - bh
    assert abs(rows[2] @ e) > 0.1 and abs(rows[3] @ e) > 0.05  # sees c^2 and beta beta 1
    # the published embedded row, classically m_hat Gamma: order 2, but it meets the linear
    # order-3 condition (so its error sees no linear term), failing only the c^2 one
    pub = np.array([2.113248654051871, 1.0, 0.4226497308103742]) @ gam[:3, :3]
    np.testing.assert_allclose(rows[[0, 1, 3], :3] @ pub, np.array(want)[[0, 1, 3]],
                               atol=1e-12)
    assert abs(rows[2, :3] @ pub - want[2]) > 0.1
    assert abs(_stability(alpha, gam, b, -1e12) - (1 - math.sqrt(3))) < 1e-9
    for y in np.linspace(-50, 50, 101):
        assert abs(_stability(alpha, gam, b, 1j * y)) <= 1 + 1e-12
        for x in (-1.0, -10.0, -1e3):
            assert abs(_stability(alpha, gam, b, x + 1j * y)) <= 1 + 1e-12
    assert abs(_stability(alpha, gam, b, 0.5j) - _stability(alpha, gam, bh, 0.5j)) > 1e-3


@pytest.mark.parametrize("name, p_true, p_est", [("ros3p", 4.0, 3.0)])
def test_local_error_and_estimate_orders(name: str, p_true: float, p_est: float) -> None:
    """On Van der Pol (mu = 2) from a generic state, one step has local error ~ h^(p+1) and
    its estimate ~ h^p (order p-1 embedded), for the Rosenbrock pairs."""
    from scipy.integrate import solve_ivp

    from sdeflow.solvers.base import Terms

    def ref(x0: list[float], h: float) -> np.ndarray:
        def f(t: float, x: np.ndarray) -> list[float]:
            return [x[1], 2.0 * (1 - x[0] ** 2) * x[1] - x[0]]
        return solve_ivp(f, (0.0, h), x0, method="DOP853", rtol=1e-13, atol=1e-16).y[:, -1]

    ode, x0 = sf.ODE(_vdp), [1.5, -0.5]
    hs, true, est = [0.04, 0.02, 0.01, 0.005], [], []
    for h in hs:
        s = sf.solvers.get(name)()
        s.begin(1e-6, 1e-6)
        terms = Terms(ode, u=ode._field(), adaptive=True)
        tt = tuple(torch.tensor(c * h, dtype=D64) for c in s.c)
        r = s.step(terms, tt, 0.0, h, torch.tensor(x0, dtype=D64), None, None)
        true.append(float(np.abs(r.x.numpy() - ref(x0, h)).max()))
        est.append(float(r.err.abs().max()))
    assert abs(fit_order(hs, true) - p_true) < 0.4, true
    assert abs(fit_order(hs, est) - p_est) < 0.4, est


@pytest.mark.parametrize("name", ["ros3p", "rodas5"])
@pytest.mark.parametrize("problem", ["linear", "rotation", "vdp"])
def test_rosenbrock_tolerance_proportionality(name: str, problem: str) -> None:
    """err ~ tol on the three problems of ``sdeflow verify`` (the published ROS3P estimate
    is identically zero on the first two, every step would be accepted; rodas5's published
    estimate alone gives slope 0.51 on vdp)."""
    res = sf.verify.tolerance_proportionality(name, problem)
    assert res.passed, (res.slope, res.errors)


@pytest.mark.parametrize("name", ["ros3p", "rodas5"])
def test_quadrature_error_falls_with_rtol(name: str) -> None:
    """x' = cos t over [0, 10]: the estimate sees quadrature errors, so the final error falls
    in proportion to rtol (slope in [0.7, 1.3]) and stays within 10 rtol (rodas5's published
    estimate alone is exactly zero here: error 9.85 at every rtol, in 6 steps)."""
    ode = sf.ODE(lambda t, x: torch.cos(t).expand_as(x).clone())
    x0 = torch.zeros(1, dtype=D64)
    tols = [1e-4, 1e-5, 1e-6, 1e-7]
    errs = [abs(float(sf.solve(ode, x0, (0.0, 10.0), solver=name, rtol=r, atol=r).x_final)
                - math.sin(10.0)) for r in tols]
    assert all(e <= 10 * r for e, r in zip(errs, tols)), errs
    assert 0.7 <= fit_order(tols, errs) <= 1.3, errs


@pytest.mark.parametrize("solver", ["rodas5", "ros3p", "kvaerno5", "radau"])
def test_backprop_through_implicit_solvers(solver: str) -> None:
    """Autograd through an adaptive implicit solve (Rosenbrock: through lu_solve, whose output
    its backward needs) gives d sum x(1) / d x0 = expm(A)^T 1 on a stiff linear system."""
    f64 = torch.float64
    a = torch.tensor([[-50.0, 1.0], [0.5, -1.0]], dtype=f64)
    ode = sf.ODE(lambda t, x: x @ a.T)
    x0 = torch.tensor([[1.0, -0.5], [0.3, 0.2]], dtype=f64, requires_grad=True)
    sol = sf.solve(ode, x0, (0.0, 1.0), solver=solver, rtol=1e-9, atol=1e-12)
    sol.ys[-1].sum().backward()
    exact = (torch.linalg.matrix_exp(a).T @ torch.ones(2, dtype=f64)).expand(2, 2)
    assert torch.allclose(x0.grad, exact, rtol=1e-5, atol=1e-8)
