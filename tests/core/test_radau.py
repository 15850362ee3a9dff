"""Radau IIA (order 5): coefficients, orders, the stiff acceptance problems against scipy's
Radau, batching, dense output, Jacobians, failures and bad input (docs/math.md §13.6)."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

import sdeflow as sf
from sdeflow.solvers.radau import COEFFS, Collocation, Radau
from sdeflow.verify import fit_order

torch.set_num_threads(1)

D64 = torch.float64
RTOL, ATOL = 1e-6, 1e-10

# mildly stiff: eigenvalues -1 +- 2i and -50 (stiffness ratio 50)
A_STIFF = torch.tensor([[-1.0, 2.0, 0.0], [-2.0, -1.0, 0.0], [0.0, 10.0, -50.0]], dtype=D64)
X0 = torch.tensor([1.0, 0.5, -0.3], dtype=D64)


def linear_ode(jacobian=None) -> sf.ODE:
    at = A_STIFF.T.contiguous()
    return sf.ODE(lambda t, x: x @ at, jacobian=jacobian)


def exact_linear(t1: float, x0: torch.Tensor = X0) -> torch.Tensor:
    return x0 @ torch.linalg.matrix_exp(t1 * A_STIFF).T


# -------------------------------------------------------------------------- coefficients
def test_coefficients_order_conditions_and_transform() -> None:
    """A is the collocation matrix (C(3): sum_j a_ij c_j^(k-1) = c_i^k / k), b = A[2]
    satisfies B(5); T^-1 A^-1 T is the real block form; the embedded weights have order 3
    exactly (not 4); e is gamma (b_hat - b) A^-1; P reproduces the stages."""
    c, A = COEFFS.c, COEFFS.A
    for k in range(1, 4):
        np.testing.assert_allclose(A @ c ** (k - 1), c**k / k, rtol=0, atol=1e-14)
    b = A[2]
    for k in range(1, 6):
        assert abs(b @ c ** (k - 1) - 1.0 / k) < 1e-14, k
    assert abs(b @ c**5 - 1.0 / 6) > 1e-4  # order exactly 5
    lam = COEFFS.T_inv @ np.linalg.inv(A) @ COEFFS.T
    g, al, be = COEFFS.gamma, COEFFS.alpha, COEFFS.beta
    np.testing.assert_allclose(lam, [[g, 0, 0], [0, al, be], [0, -be, al]], atol=1e-12)
    assert be > 0 and abs(g - 3.637834252744496) < 1e-12
    nodes = np.concatenate([[0.0], c])
    bh = COEFFS.b_hat
    assert bh[0] == pytest.approx(1.0 / g)
    for k in range(1, 4):
        assert abs(bh @ nodes ** (k - 1) - 1.0 / k) < 1e-13, k
    assert abs(bh @ nodes**3 - 0.25) > 1e-3
    np.testing.assert_allclose(COEFFS.e, g * (bh[1:] - b) @ np.linalg.inv(A), atol=1e-12)
    z = np.random.default_rng(0).normal(size=3)
    poly = COEFFS.P @ z
    np.testing.assert_allclose([sum(poly[k] * ci ** (k + 1) for k in range(3)) for ci in c], z,
                               atol=1e-13)


def test_capabilities() -> None:
    caps = sf.solvers.get("radau").caps
    assert caps.implicit and caps.adaptive and caps.stateful and not caps.sde
    assert caps.order == 5.0 and caps.error_order == 3.0 and caps.interpolant == "own"


# -------------------------------------------------------------------------------- orders
def test_order_on_mildly_stiff_linear() -> None:
    t1 = 2.0
    steps = (8, 12, 16, 24, 32)
    ex = exact_linear(t1)
    errs = [float((sf.solve(linear_ode(), X0, (0.0, t1), solver="radau", steps=n).x_final - ex)
                  .norm()) for n in steps]
    assert abs(fit_order([t1 / n for n in steps], errs) - 5.0) <= 0.15, errs


def test_order_non_autonomous() -> None:
    """y' = -2 y + cos t: the stage times enter the field."""
    ode = sf.ODE(lambda t, x: -2 * x + torch.cos(t))
    y0 = torch.tensor([1.0], dtype=D64)
    exact = 0.6 * math.exp(-4.0) + (2 * math.cos(2.0) + math.sin(2.0)) / 5
    steps = (4, 6, 8, 12, 16)
    errs = [abs(float(sf.solve(ode, y0, (0.0, 2.0), solver="radau", steps=n).x_final) - exact)
            for n in steps]
    assert abs(fit_order([2.0 / n for n in steps], errs) - 5.0) <= 0.15, errs


def test_l_stable_on_very_stiff_decay() -> None:
    """x' = -1e8 (x - cos t) with h = 0.1: on the slow manifold after one step (R(inf) = 0)."""
    ode = sf.ODE(lambda t, x: -1e8 * (x - torch.cos(t)))
    sol = sf.solve(ode, torch.tensor([5.0], dtype=D64), (0.0, 1.0), solver="radau", steps=10)
    assert abs(float(sol.x_final) - math.cos(1.0)) < 1e-7


def test_verify_suite_measures_radau() -> None:
    """``sdeflow verify`` runs radau: order within 0.15 of 5 on the verify linear problem, and
    error proportional to tol^(5/4) (order 5, estimate of order 3) on its three problems."""
    results = sf.verify.run_suite(["radau"])
    assert len(results) == 4 and all(r.passed for r in results), [str(r) for r in results]
    order = results[0]
    assert abs(order.order - 5.0) <= 0.15
    for r in results[1:]:
        assert r.slope_range == (0.95, 1.55) and 0.95 <= r.slope <= 1.55, str(r)
        assert r.to_dict()["expected"] == 1.25
    # the usual pairs keep the classical window
    assert sf.verify.tolerance_proportionality("dopri5").slope_range == (0.7, 1.3)


# ---------------------------------------------------------------- stiff acceptance problems
def _robertson_np() -> tuple:
    def f(t, y):
        return [-0.04 * y[0] + 1e4 * y[1] * y[2],
                0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2, 3e7 * y[1] ** 2]

    def jac(t, y):
        return [[-0.04, 1e4 * y[2], 1e4 * y[1]],
                [0.04, -1e4 * y[2] - 6e7 * y[1], -1e4 * y[1]], [0.0, 6e7 * y[1], 0.0]]

    return f, jac


def robertson(k: torch.Tensor | None = None, jacobian=None) -> sf.ODE:
    """Robertson's kinetics (Hairer & Wanner II, §IV.1); ``k``: ``(B, 3)`` rate constants."""
    def u(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        k1, k2, k3 = (0.04, 3e7, 1e4) if k is None else (k[..., 0], k[..., 1], k[..., 2])
        y1, y2, y3 = x[..., 0], x[..., 1], x[..., 2]
        return torch.stack([-k1 * y1 + k3 * y2 * y3, k1 * y1 - k3 * y2 * y3 - k2 * y2**2,
                            k2 * y2**2], -1)
    return sf.ODE(u, jacobian=jacobian)


@functools.lru_cache(maxsize=4)
def robertson_reference(t1: float, rtol: float) -> np.ndarray:
    from scipy.integrate import solve_ivp

    f, jac = _robertson_np()
    s = solve_ivp(f, (0.0, t1), [1.0, 0.0, 0.0], method="Radau", rtol=rtol, atol=1e-20,
                  jac=jac)
    assert s.success
    return s.y[:, -1]


def test_robertson_1e5_componentwise() -> None:
    ref = robertson_reference(1e5, 1e-12)
    x0 = torch.tensor([1.0, 0.0, 0.0], dtype=D64)
    sol = sf.solve(robertson(), x0, (0.0, 1e5), solver="radau", rtol=RTOL, atol=ATOL)
    rel = np.abs(sol.x_final.numpy() - ref) / np.abs(ref)
    assert rel.max() <= 1e-5, rel  # component-wise, y2 ~ 7e-8 included
    st = sol.stats
    # the work of 3-stage Radau: about 200 steps, 3 evaluations per Newton iteration
    assert st["steps"] < 400 and st["nfe"] >= 3 * st["nnewton"] >= 3 * st["accepted"]
    assert st["nlu"] % 2 == 0 and st["nlu"] // 2 < st["steps"] and st["njac"] < st["steps"]


@pytest.mark.slow
def test_robertson_1e11() -> None:
    """y1 ~ 2e-8 and y2 ~ 8e-14 at t = 1e11 lie below atol = 1e-10: relative to the state's
    size there; component-wise with atol below them."""
    ref = robertson_reference(1e11, 1e-12)
    x0 = torch.tensor([1.0, 0.0, 0.0], dtype=D64)
    sol = sf.solve(robertson(), x0, (0.0, 1e11), solver="radau", rtol=RTOL, atol=ATOL)
    assert np.abs(sol.x_final.numpy() - ref).max() / np.abs(ref).max() <= 1e-5
    fine = sf.solve(robertson(), x0, (0.0, 1e11), solver="radau", rtol=RTOL, atol=1e-14)
    rel = np.abs(fine.x_final.numpy() - ref) / np.abs(ref)
    assert rel.max() <= 1e-5, rel


@functools.lru_cache(maxsize=1)
def vdp_reference() -> np.ndarray:
    """scipy Radau at rtol 1e-10 / atol 1e-12: it agrees with rtol 1e-12 / atol 1e-14 to
    1.4e-14 relative to the state's size (measured), and takes 8 s here instead of 19 s."""
    from scipy.integrate import solve_ivp

    mu = 1000.0
    return solve_ivp(lambda t, y: [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]], (0.0, 3000.0),
                     [2.0, 0.0], method="Radau", rtol=1e-10, atol=1e-12,
                     jac=lambda t, y: [[0.0, 1.0], [-2 * mu * y[0] * y[1] - 1,
                                                    mu * (1 - y[0] ** 2)]]).y[:, -1]


@pytest.mark.slow
def test_van_der_pol_mu_1000() -> None:
    """mu = 1000 to t = 3000; error relative to the state's size (x' ~ 1e-3 at t = 3000 on a
    scale of O(mu))."""
    mu = 1000.0
    ode = sf.ODE(lambda t, x: torch.stack([x[..., 1], mu * (1 - x[..., 0] ** 2) * x[..., 1]
                                           - x[..., 0]], -1))
    sol = sf.solve(ode, torch.tensor([2.0, 0.0], dtype=D64), (0.0, 3000.0), solver="radau",
                   rtol=RTOL, atol=ATOL)
    ref = vdp_reference()
    assert np.abs(sol.x_final.numpy() - ref).max() / np.abs(ref).max() <= 1e-5
    assert sol.stats["steps"] < 3000


def test_float32_backward_and_state_shapes() -> None:
    """float32 (complex64 LU), time running backwards, a 0-dim state and a (B, 2, 2) state
    (each path a 4-dim system)."""
    a32 = A_STIFF.float()
    s = sf.solve(sf.ODE(lambda t, x: x @ a32.T), X0.float(), (0.0, 2.0), solver="radau",
                 rtol=1e-4, atol=1e-6)
    assert s.x_final.dtype == torch.float32
    assert float((s.x_final.double() - exact_linear(2.0)).abs().max()) < 1e-5
    a2 = A_STIFF[:2, :2].clone()  # the damped rotation (backwards the -50 mode would blow up)
    x1 = torch.tensor([1.0, 0.0], dtype=D64)
    back = sf.solve(sf.ODE(lambda t, x: x @ a2.T), x1, (2.0, 0.0), solver="radau", rtol=1e-8,
                    atol=1e-10)
    torch.testing.assert_close(back.x_final, torch.linalg.matrix_exp(-2.0 * a2) @ x1,
                               rtol=1e-7, atol=1e-9)
    zero = sf.solve(sf.ODE(lambda t, x: -x), torch.tensor(1.0, dtype=D64), (0.0, 1.0),
                    solver="radau", rtol=1e-8, atol=1e-10)
    assert zero.x_final.shape == () and abs(float(zero.x_final) - math.exp(-1.0)) < 1e-9
    rate = torch.arange(1, 5, dtype=D64)[:, None, None]
    xb = torch.randn(4, 2, 2, dtype=D64, generator=torch.Generator().manual_seed(0))
    sb = sf.solve(sf.ODE(lambda t, x: -rate * x), xb, (0.0, 1.0), solver="radau", rtol=1e-8,
                  atol=1e-10)
    torch.testing.assert_close(sb.x_final, xb * torch.exp(-rate), rtol=1e-7, atol=1e-10)


# ------------------------------------------------------------------------------- batching
def test_batched_paths_match_separate_solves() -> None:
    """B Robertson problems with different rate constants in one call: each path equals its
    separate solve to within the tolerance (the steps differ: the batch's norm is the worst
    path's), and a batch of identical copies reproduces the single solve."""
    g = torch.Generator().manual_seed(0)
    k = torch.tensor([0.04, 3e7, 1e4], dtype=D64) * (1 + 0.4 * (torch.rand(3, 3, generator=g,
                                                                          dtype=D64) - 0.5))
    x0 = torch.tensor([[1.0, 0.0, 0.0]] * 3, dtype=D64)
    batch = sf.solve(robertson(k), x0, (0.0, 10.0), solver="radau", rtol=1e-7, atol=1e-12)
    for i in range(3):
        one = sf.solve(robertson(k[i : i + 1]), x0[i : i + 1], (0.0, 10.0), solver="radau",
                       rtol=1e-7, atol=1e-12)
        rel = (batch.x_final[i] - one.x_final[0]).abs() / one.x_final[0].abs()
        assert float(rel.max()) < 1e-5, rel
    same = k[:1].expand(3, 3)
    copies = sf.solve(robertson(same), x0, (0.0, 10.0), solver="radau", rtol=1e-7, atol=1e-12)
    single = sf.solve(robertson(k[:1]), x0[:1], (0.0, 10.0), solver="radau", rtol=1e-7,
                      atol=1e-12)
    assert copies.stats["steps"] == single.stats["steps"]
    torch.testing.assert_close(copies.x_final, single.x_final.expand(3, 3), rtol=1e-12,
                               atol=0.0)


# ---------------------------------------------------------------------------- dense output
def test_dense_output_order_and_accuracy() -> None:
    """The collocation polynomial: the interior error of one step is O(h^4) (the stage order
    3 plus one), and an adaptive solve's interior outputs stay within the tolerance."""
    rot = sf.ODE(lambda t, x: torch.stack([x[..., 1], -x[..., 0]], -1))  # non-stiff
    y0 = torch.tensor([1.0, 0.0], dtype=D64)
    errs, hs = [], (0.4, 0.2, 0.1, 0.05)
    for h in hs:
        res = sf.solve(rot, y0, (0.0, h), solver="radau", steps=1, dense=True)
        th = 0.37 * h
        mid = res.evaluate(th)
        errs.append(float((mid - torch.tensor([math.cos(th), -math.sin(th)], dtype=D64))
                          .norm()))
    assert abs(fit_order(list(hs), errs) - 4.0) <= 0.15, errs
    ts = torch.linspace(0.0, 3.0, 31, dtype=D64)
    sol = sf.solve(linear_ode(), X0, ts=ts, solver="radau", rtol=1e-6, atol=1e-9)
    ends = sf.solve(linear_ode(), X0, (0.0, 3.0), solver="radau", rtol=1e-6, atol=1e-9,
                    save_all=True)
    assert sol.stats["accepted"] == ends.stats["accepted"] > 30  # outputs inside steps
    e_out = float((sol.ys - torch.stack([exact_linear(float(t)) for t in ts])).abs().max())
    e_end = float((ends.ys - torch.stack([exact_linear(float(t)) for t in ends.ts])).abs()
                  .max())
    # the step ends are superconvergent (order 5), the polynomial is of order 3 inside: its
    # error stays well inside the tolerance (a chord would be ~1e-4 here)
    assert e_end < e_out < 0.1 * 1e-6, (e_out, e_end)


def test_collocation_interpolant_hits_the_stages() -> None:
    """At theta = c_i the polynomial is the stage value x + z_i (by construction)."""
    g = torch.Generator().manual_seed(3)
    z = torch.randn(3, 2, 4, dtype=D64, generator=g)
    x0 = torch.randn(2, 4, dtype=D64, generator=g)
    poly = torch.tensordot(torch.tensor(COEFFS.P, dtype=D64), z, dims=1)
    it = Collocation(0.0, 0.5, x0, x0 + z[2], poly)
    for i, ci in enumerate(COEFFS.c[:2]):
        torch.testing.assert_close(it(float(ci)), x0 + z[i])
    torch.testing.assert_close(it._eval(1.0), x0 + z[2])


def test_events_located_on_the_collocation_polynomial() -> None:
    """Per-path terminal events x = 1/2 on x' = -x: crossing times log(2 x0) from the dense
    output, to well below the tolerance."""
    x0 = torch.tensor([[1.0], [2.0], [4.0]], dtype=D64)
    sol = sf.solve(sf.ODE(lambda t, x: -x), x0, (0.0, 5.0), solver="radau", rtol=1e-8,
                   atol=1e-10, event=sf.Event(lambda t, x: x[..., 0] - 0.5, terminal=True))
    exact = torch.log(2 * x0[:, 0])
    assert sol.status == "event"
    torch.testing.assert_close(sol.event_t, exact, rtol=1e-8, atol=0.0)


# ------------------------------------------------------------------------------- Jacobians
def test_user_jacobian_used_and_same_result() -> None:
    calls = []

    def jac(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return A_STIFF.expand(x.shape[0], 3, 3) if x.dim() == 2 else A_STIFF

    x0 = X0.expand(2, 3).clone()
    a = sf.solve(linear_ode(jac), x0, (0.0, 1.0), solver="radau", rtol=1e-8, atol=1e-10)
    b = sf.solve(linear_ode(), x0, (0.0, 1.0), solver="radau", rtol=1e-8, atol=1e-10)
    assert calls and a.stats["njac"] == len(calls) <= 3  # linear: J is kept
    torch.testing.assert_close(a.x_final, b.x_final, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(a.x_final[0], exact_linear(1.0), rtol=1e-7, atol=1e-9)


def test_user_jacobian_on_robertson() -> None:
    def jac(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y2, y3 = x[1], x[2]
        z = torch.zeros((), dtype=x.dtype)
        return torch.stack([torch.stack([z - 0.04, 1e4 * y3, 1e4 * y2]),
                            torch.stack([z + 0.04, -1e4 * y3 - 6e7 * y2, -1e4 * y2]),
                            torch.stack([z, 6e7 * y2, z])])

    x0 = torch.tensor([1.0, 0.0, 0.0], dtype=D64)
    a = sf.solve(robertson(jacobian=jac), x0, (0.0, 100.0), solver="radau", rtol=RTOL,
                 atol=ATOL)
    b = sf.solve(robertson(), x0, (0.0, 100.0), solver="radau", rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(a.x_final, b.x_final, rtol=1e-10, atol=1e-16)
    assert a.stats["njac"] == b.stats["njac"] >= 2


def test_jacobian_reuse_on_linear_problem() -> None:
    """J never changes: evaluated about once, and Newton converges in one or two iterations
    (exact J: the first iteration solves the linear collocation system)."""
    st = sf.solve(linear_ode(), X0, (0.0, 5.0), solver="radau", rtol=1e-8, atol=1e-10).stats
    assert st["njac"] <= 2
    assert st["nnewton"] <= 2 * st["steps"]
    assert st["nlu"] % 2 == 0 and st["nlu"] <= 2 * st["steps"]


def test_pi_controller_is_respected() -> None:
    """A PI controller is the user's choice (the predictive formula applies to the default
    I-controller only); both meet the tolerance."""
    x0 = torch.tensor([1.0, 0.0, 0.0], dtype=D64)
    ref = robertson_reference(1e5, 1e-12)
    pi = sf.solve(robertson(), x0, (0.0, 1e5), solver="radau",
                  controller=sf.PIController(rtol=RTOL, atol=ATOL, beta1=0.7, beta2=0.4))
    default = sf.solve(robertson(), x0, (0.0, 1e5), solver="radau", rtol=RTOL, atol=ATOL)
    assert pi.stats["steps"] != default.stats["steps"]
    rel = np.abs(pi.x_final.numpy() - ref) / np.abs(ref)
    assert rel.max() <= 1e-5


# -------------------------------------------------------------------------------- failures
def test_newton_failure_raises_and_returns() -> None:
    """A field that is NaN from t = 0.5 on: Newton cannot converge past it."""
    def u(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.where(t > 0.5, torch.full_like(x, math.nan), -x)

    x0 = torch.tensor([1.0, 2.0], dtype=D64)
    with pytest.raises(sf.NewtonError) as ei:
        sf.solve(sf.ODE(u), x0, (0.0, 1.0), solver="radau", rtol=1e-6, atol=1e-8)
    assert 0.4 < ei.value.t <= 0.5 and "Newton" in str(ei.value) and "'radau'" in str(ei.value)
    sol = sf.solve(sf.ODE(u), x0, (0.0, 1.0), solver="radau", rtol=1e-6, atol=1e-8,
                   on_failure="return")
    assert sol.status == "newton" and 0.4 < sol.t_reached <= 0.5
    torch.testing.assert_close(sol.x_final, x0 * math.exp(-sol.t_reached), rtol=1e-5,
                               atol=1e-7)
    assert sol.stats["nnewton_fail"] >= 1
    with pytest.raises(sf.NewtonError):
        sf.solve(sf.ODE(u), x0, (0.0, 1.0), solver="radau", steps=10)


def test_divergent_newton_shrinks_the_step() -> None:
    """x' = -x^3 from x = 30 with a large first step: the simplified Newton iteration diverges
    at first; the step is rejected, halved, and the solve still meets the tolerance."""
    ode = sf.ODE(lambda t, x: -(x**3))
    x0 = torch.tensor([30.0], dtype=D64)
    sol = sf.solve(ode, x0, (0.0, 2.0), solver="radau", rtol=1e-8, atol=1e-10,
                   dt0=0.5)
    exact = 30.0 / math.sqrt(1 + 2 * 900 * 2.0)
    assert abs(float(sol.x_final) - exact) < 1e-7
    assert sol.stats["rejected"] >= 1 and sol.stats["nnewton_fail"] >= 1


# ------------------------------------------------------------------------------- bad input
def test_bad_input() -> None:
    with pytest.raises(ValueError, match="kappa"):
        Radau(kappa=2.0)
    with pytest.raises(ValueError, match="max_iter"):
        Radau(max_iter=0)
    with pytest.raises(ValueError, match=r"jacobian: J\(t, x\) returned shape"):
        sf.solve(sf.ODE(lambda t, x: -x, jacobian=lambda t, x: torch.zeros(3, 3, dtype=D64)),
                 torch.ones(2, 2, dtype=D64), (0.0, 1.0), solver="radau", rtol=1e-6)

    def numpy_field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(-x.detach().numpy().copy())

    with pytest.raises(ValueError, match="jacobian: the vector field is not differentiable"):
        sf.solve(sf.ODE(numpy_field), torch.tensor([1.0, 2.0], dtype=D64), (0.0, 1.0),
                 solver="radau", rtol=1e-6)
    sde = sf.SDE(lambda t, x: -x, lambda t, x: torch.ones_like(x), noise="diagonal")
    with pytest.raises(ValueError, match="solver"):
        sf.solve(sde, torch.ones(2, 1, dtype=D64), (0.0, 1.0), solver="radau", steps=4)
