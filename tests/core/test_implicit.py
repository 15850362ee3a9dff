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
])
def test_order_on_mildly_stiff_linear(name: str, order: float, steps: tuple[int, ...]) -> None:
    t1 = 2.0
    ex = exact_linear(t1)
    errs = [float((sf.solve(linear_ode(), X0, (0.0, t1), solver=name, steps=n).x_final - ex)
                  .norm()) for n in steps]
    p = fit_order([t1 / n for n in steps], errs)
    assert sf.solvers.get(name).caps.order == order
    assert abs(p - order) <= 0.15, (name, p, errs)


@pytest.mark.parametrize("name", ["kvaerno5", "rodas5"])
def test_order_non_autonomous(name: str) -> None:
    """y' = -2 y + cos t: exercises the stage times (and rodas5's du/dt term)."""
    ode = sf.ODE(lambda t, x: -2 * x + torch.cos(t))
    y0 = torch.tensor([1.0], dtype=D64)

    def exact(t: float) -> float:
        return (1.0 - 0.4) * math.exp(-2 * t) + (2 * math.cos(t) + math.sin(t)) / 5

    steps = (8, 12, 16, 24)
    errs = [abs(float(sf.solve(ode, y0, (0.0, 2.0), solver=name, steps=n).x_final) - exact(2.0))
            for n in steps]
    assert abs(fit_order([2.0 / n for n in steps], errs) - 5.0) <= 0.15, errs


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


@pytest.mark.parametrize("name", ["kvaerno5", "rodas5"])
def test_robertson_1e5(name: str, rob_ref_1e5: np.ndarray) -> None:
    x0 = torch.tensor([1.0, 0.0, 0.0], dtype=D64)
    sol = sf.solve(robertson(), x0, (0.0, 1e5), solver=name, rtol=1e-6, atol=1e-10)
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
@pytest.mark.parametrize("name", ["kvaerno5", "rodas5"])
def test_van_der_pol_mu_1000(name: str) -> None:
    """x'' = mu (1 - x^2) x' - x, mu = 1000, to t = 3000 (two relaxation periods). Error
    relative to the state's size (x' passes near 0 at t = 3000 on a scale of O(mu))."""
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
    for name in ("implicit_euler", "kvaerno3", "kvaerno5", "rodas5", "implicit_euler_maruyama"):
        assert sf.solvers.get(name).caps.implicit
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
