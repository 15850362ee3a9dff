"""Adaptive ODE solves: embedded pairs, the PI controller, dense output, structured failure.

References are exact (``expm`` for linear systems, closed forms for rotations and scalar
problems) or scipy's DOP853 at rtol = atol = 1e-13. Tolerances are stated in each test.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sdeflow as sf
from sdeflow.analytic import expm
from sdeflow.controllers import PIController
from sdeflow.solvers import Bosh3, Dopri5, HeunEuler, Terms, Tsit5
from sdeflow.verify import tolerance_proportionality

F64 = torch.float64
PAIRS = ["heun_euler", "bosh3", "dopri5", "tsit5"]
A4 = torch.tensor([[-0.5, 2.0, 0.0, 0.3], [-2.0, -0.5, 0.4, 0.0],
                   [0.0, 0.0, -1.0, 1.0], [0.1, 0.0, -1.0, -0.2]], dtype=F64)


def linear(a: torch.Tensor) -> sf.ODE:
    at = a.T.contiguous()
    return sf.ODE(lambda t, x: x @ at.to(x.dtype))


def expm_sol(a: torch.Tensor, t: float, x0: torch.Tensor) -> torch.Tensor:
    return x0.to(F64) @ expm(t * a).T


def vdp(mu: float = 2.0) -> sf.ODE:
    def f(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        p, v = x[..., 0], x[..., 1]
        return torch.stack([v, mu * (1 - p * p) * v - p], dim=-1)

    return sf.ODE(f)


# ------------------------------------------------------------------------------ tableaus, FSAL
@pytest.mark.parametrize("cls", [HeunEuler, Bosh3, Dopri5, Tsit5])
def test_pair_orders_with_fixed_steps(cls: type) -> None:
    """The propagated solution has the declared order; the embedded estimate has order p_hat."""
    slv = cls()
    p, p_hat = slv.tableau.order, slv.tableau.embedded_order
    x0 = torch.tensor([1.0, 0.0, -0.5, 0.25], dtype=F64)
    ode = linear(A4)
    exact = expm_sol(A4, 1.0, x0)
    errs = []
    ns = [8, 16, 32] if p >= 5 else [16, 32, 64]
    for n in ns:
        sol = sf.solve(ode, x0, (0.0, 1.0), solver=cls, steps=n)
        errs.append(float((sol.x_final - exact).abs().max()))
        # fixed steps evaluate only the stages the propagated solution needs
        assert sol.stats["nfe"] == n * slv.evals_per_step()
    slopes = [math.log2(a / b) for a, b in zip(errs[:-1], errs[1:])]
    assert min(slopes) > p - 0.35, (cls.name, errs, slopes)
    # local error estimate ~ h^(p_hat + 1): one step from x0 at h and h/2
    u = ode._field()
    ests = []
    for h in (0.1, 0.05, 0.025):
        tt = tuple(torch.tensor(c * h, dtype=F64) for c in slv.c)
        e = slv.step(Terms(None, u=u, adaptive=True), tt, 0.0, h, x0, None, None).err
        ests.append(float(e.abs().max()))
    est_slopes = [math.log2(a / b) for a, b in zip(ests[:-1], ests[1:])]
    assert min(est_slopes) > p_hat + 1 - 0.3, (cls.name, ests)


def test_dopri5_fsal_costs_six_evaluations_per_step() -> None:
    x0 = torch.tensor([1.0, 0.0, -0.5, 0.25], dtype=F64)
    for dt0 in (None, 0.5):  # 0.5: too large, so steps get rejected too
        opts = {} if dt0 is None else {"dt0": dt0}
        sol = sf.solve(linear(A4), x0, (0.0, 3.0), solver="dopri5", rtol=1e-6, atol=1e-8, **opts)
        st_ = sol.stats
        init = 1 if dt0 is None else 0  # Hairer's initial step costs one evaluation
        assert st_["steps"] == st_["accepted"] + st_["rejected"]
        assert st_["nfe"] == 1 + init + 6 * st_["steps"]
    assert sol.stats["rejected"] >= 1  # dt0=0.5 at rtol 1e-6 is rejected at least once
    sol = sf.solve(linear(A4), x0, (0.0, 3.0), solver="bosh3", rtol=1e-6, atol=1e-8, dt0=0.01)
    assert sol.stats["nfe"] == 1 + 3 * sol.stats["steps"]


def test_rejected_steps_are_counted_and_harmless() -> None:
    """A sharp layer forces rejections; they are counted and the answer stays accurate."""
    # x' = -50 (x - cos t): fast relaxation onto a slow manifold, started far from it
    ode = sf.ODE(lambda t, x: -50.0 * (x - torch.cos(t)))
    x0 = torch.tensor([5.0], dtype=F64)
    sol = sf.solve(ode, x0, (0.0, 2.0), solver="dopri5", rtol=1e-7, atol=1e-9, dt0=1.0)
    st_ = sol.stats
    assert st_["rejected"] >= 2
    assert st_["accepted"] + st_["rejected"] == st_["steps"]
    t = 2.0  # exact: x = c1 e^{-50 t} + (2500 cos t + 50 sin t) / 2501
    c1 = 5.0 - 2500 / 2501
    exact = c1 * math.exp(-50 * t) + (2500 * math.cos(t) + 50 * math.sin(t)) / 2501
    assert abs(float(sol.x_final) - exact) < 1e-6


# -------------------------------------------------------------------- tolerance proportionality
@pytest.mark.parametrize("solver", ["dopri5", "tsit5", "bosh3"])
@pytest.mark.parametrize("problem", ["linear", "rotation", "vdp"])
def test_tolerance_proportionality(solver: str, problem: str) -> None:
    """Global error ~ C tol: fitted slope of log(error) on log(tol) in [0.7, 1.3], and the
    error never exceeds 100 tol (rotation: 3.3 periods of accumulated phase error)."""
    res = tolerance_proportionality(solver, problem)
    assert res.passed, res.summary()
    assert 0.7 <= res.slope <= 1.3
    assert all(a > b for a, b in zip(res.nfe[1:], res.nfe[:-1]))  # tighter tol, more work


def test_tolerance_proportionality_heun_euler() -> None:
    res = tolerance_proportionality("heun_euler", "linear")
    assert res.passed, res.summary()


def test_agrees_with_scipy_dop853_at_tight_tolerance() -> None:
    from scipy.integrate import solve_ivp

    mu = 2.0
    ts = torch.linspace(0.0, 8.0, 9, dtype=F64)
    ref = solve_ivp(lambda t, y: [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]], (0.0, 8.0),
                    [2.0, 0.0], method="DOP853", rtol=1e-13, atol=1e-13, t_eval=ts.numpy())
    for solver in ("dopri5", "tsit5"):
        sol = sf.solve(vdp(mu), torch.tensor([2.0, 0.0], dtype=F64), ts=ts, solver=solver,
                       rtol=1e-11, atol=1e-11)
        diff = (sol.ys - torch.tensor(ref.y.T)).abs().max()
        assert diff < 1e-8, (solver, float(diff))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=st.integers(1, 4), seed=st.integers(0, 2**31 - 1), t_end=st.floats(0.2, 3.0))
def test_random_stable_linear_system_matches_expm(d: int, seed: int, t_end: float) -> None:
    """Property: a random stable linear system at rtol=1e-8 matches expm to 1e-6."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(d, d, generator=g, dtype=F64)
    # shift the spectrum into the left half plane: max Re(lambda) = -0.1
    a = m - (torch.linalg.eigvals(m).real.max() + 0.1) * torch.eye(d, dtype=F64)
    x0 = torch.randn(d, generator=g, dtype=F64)
    sol = sf.solve(linear(a), x0, (0.0, t_end), solver="dopri5", rtol=1e-8, atol=1e-10)
    exact = expm_sol(a, t_end, x0)
    assert float((sol.x_final - exact).abs().max()) < 1e-6 * max(1.0, float(x0.abs().max()))


# ------------------------------------------------------------------------------- dense output
@pytest.mark.parametrize("solver", PAIRS)
def test_dense_output_at_ts_within_ten_tolerances(solver: str) -> None:
    """Saving at 101 times does not force steps onto them (the same steps as without ts), and
    the interpolant's error at the saved times stays within 10 x tol (|x| <= ~1,
    rtol = atol = tol; bosh3's own global error at the steps is ~7 tol here)."""
    tol = 1e-6 if solver != "heun_euler" else 1e-4
    x0 = torch.tensor([1.0, 0.0, -0.5, 0.25], dtype=F64)
    ts = torch.linspace(0.0, 1.0, 101, dtype=F64)
    sol = sf.solve(linear(A4), x0, ts=ts, solver=solver, rtol=tol, atol=tol)
    span = sf.solve(linear(A4), x0, (0.0, 1.0), solver=solver, rtol=tol, atol=tol)
    exact = torch.stack([expm_sol(A4, float(t), x0) for t in ts])
    assert sol.ts.shape == ts.shape and torch.equal(sol.ts, ts)
    assert sol.stats == span.stats and torch.equal(sol.x_final, span.x_final)
    assert float((sol.ys - exact).abs().max()) <= 10 * tol


@pytest.mark.parametrize("solver,order", [("dopri5", 4), ("tsit5", 4), ("bosh3", 3),
                                          ("heun_euler", 2)])
def test_dense_output_order(solver: str, order: int) -> None:
    """One step of size h from the exact state, output at theta = 0.37: the interpolation error
    falls like h^(order + 1) (4th-order interpolants for dopri5/tsit5, Hermite for the others;
    heun_euler's Hermite is limited by its 2nd-order endpoint)."""
    x0 = torch.tensor([1.0, 0.0, -0.5, 0.25], dtype=F64)
    big = PIController(rtol=1e6, atol=1e6)  # accept any step
    errs = []
    for h in (0.2, 0.1, 0.05):
        sol = sf.solve(linear(A4), x0, ts=[0.0, 0.37 * h, h], solver=solver, controller=big,
                       dt0=h)
        assert sol.stats["steps"] == 1
        errs.append(float((sol.ys[1] - expm_sol(A4, 0.37 * h, x0)).abs().max()))
    slopes = [math.log2(a / b) for a, b in zip(errs[:-1], errs[1:])]
    assert min(slopes) > order + 1 - 0.4, (solver, errs, slopes)


def test_evaluate_dense_solution() -> None:
    x0 = torch.tensor([1.0, 0.0, -0.5, 0.25], dtype=F64)
    tol = 1e-7
    for solver in PAIRS:
        sol = sf.solve(linear(A4), x0, (0.0, 1.0), solver=solver, rtol=tol, atol=tol,
                       dense=True)
        for t in (0.0, 0.123, 0.5, 0.999, 1.0):
            assert float((sol.evaluate(t) - expm_sol(A4, t, x0)).abs().max()) < 10 * tol
    sol = sf.solve(linear(A4), x0, (0.0, 3.0), solver="tsit5", rtol=tol, atol=tol, dense=True)
    for t in (0.0, 0.123, 1.5, 2.999, 3.0):
        assert float((sol.evaluate(t) - expm_sol(A4, t, x0)).abs().max()) < 10 * tol
    tq = torch.tensor([0.3, 0.7, 2.2], dtype=F64)
    out = sol.evaluate(tq)
    assert out.shape == (3, 4)
    assert torch.allclose(out[1], sol.evaluate(0.7))
    with pytest.raises(ValueError, match="t"):
        sol.evaluate(3.5)
    plain = sf.solve(linear(A4), x0, (0.0, 3.0), solver="tsit5", rtol=tol, atol=tol)
    with pytest.raises(ValueError, match="dense=True"):
        plain.evaluate(1.0)


# ---------------------------------------------------------------------- time, dtypes, batches
@pytest.mark.parametrize("solver", PAIRS)
def test_backward_time(solver: str) -> None:
    x1 = torch.tensor([0.3, -0.2, 0.1, 0.4], dtype=F64)
    tol = 1e-8 if solver != "heun_euler" else 1e-6
    sol = sf.solve(linear(A4), x1, (2.0, 0.5), solver=solver, rtol=tol, atol=tol)
    exact = expm_sol(A4, -1.5, x1)
    assert float((sol.x_final - exact).abs().max()) < 100 * tol
    ts = torch.linspace(2.0, 0.5, 7, dtype=F64)
    sol = sf.solve(linear(A4), x1, ts=ts, solver=solver, rtol=tol, atol=tol)
    exact = torch.stack([expm_sol(A4, float(t) - 2.0, x1) for t in ts])
    assert float((sol.ys - exact).abs().max()) < 100 * tol


@pytest.mark.parametrize("dtype,tol,bound", [(torch.float32, 1e-5, 2e-4),
                                             (torch.float64, 1e-9, 1e-7)])
@pytest.mark.parametrize("solver", ["dopri5", "tsit5", "bosh3"])
def test_float32_and_float64(dtype: torch.dtype, tol: float, bound: float, solver: str) -> None:
    x0 = torch.tensor([[1.0, 0.0, -0.5, 0.25], [0.1, 0.2, 0.3, 0.4]], dtype=dtype)
    ts = torch.linspace(0.0, 2.0, 5, dtype=dtype)
    sol = sf.solve(linear(A4), x0, ts=ts, solver=solver, rtol=tol, atol=tol)
    assert sol.ys.dtype == dtype and sol.ts.dtype == dtype
    exact = torch.stack([expm_sol(A4, float(t), x0) for t in ts])
    assert float((sol.ys.to(F64) - exact).abs().max()) < bound


def test_worst_path_decides_the_step() -> None:
    """Error norm: RMS within a path, then the worst path. A batch of an easy and a hard path
    takes exactly the steps of the hard path alone; norm='rms' averages over the batch and takes
    fewer steps."""
    fast = sf.ODE(lambda t, x: torch.stack([-x[:, 0], -x[:, 1] * (1 + 30 * x[:, 2] ** 2),
                                            torch.zeros_like(x[:, 2])], dim=-1))
    hard = torch.tensor([[1.0, 1.0, 1.0]], dtype=F64)
    easy = torch.tensor([[1.0, 1.0, 0.0]], dtype=F64)
    kw = dict(solver="dopri5", rtol=1e-6, atol=1e-9, dt0=0.01)
    alone = sf.solve(fast, hard, (0.0, 1.0), **kw)
    both = sf.solve(fast, torch.cat([easy] * 7 + [hard]), (0.0, 1.0), **kw)
    assert both.stats["steps"] == alone.stats["steps"]
    assert torch.equal(both.x_final[-1], alone.x_final[0])
    rms = sf.solve(fast, torch.cat([easy] * 7 + [hard]), (0.0, 1.0),
                   controller=PIController(norm="rms"), **kw)
    assert rms.stats["steps"] < both.stats["steps"]


def test_gradients_flow_through_adaptive_solve() -> None:
    x0 = torch.tensor([1.0, 0.0, -0.5, 0.25], dtype=F64, requires_grad=True)
    sol = sf.solve(linear(A4), x0, (0.0, 1.0), solver="dopri5", rtol=1e-9, atol=1e-11)
    sol.x_final.sum().backward()
    expected = expm(A4).T @ torch.ones(4, dtype=F64)
    assert torch.allclose(x0.grad, expected, atol=1e-7)


def test_saved_states_are_not_overwritten_by_later_steps() -> None:
    """Without autograd the solver reuses buffers; states saved by reference (outputs that
    fall on step ends, save_all) must keep their values, and a field returning its own input
    (u = x) must not be corrupted by the reuse."""
    x0 = torch.tensor([1.0, 0.0, -0.5, 0.25], dtype=F64)
    ts = torch.linspace(0.0, 2.0, 9, dtype=F64)
    for kw in (dict(ts=ts, step_ts=ts), dict(t_span=(0.0, 2.0), save_all=True)):
        sol = sf.solve(linear(A4), x0, solver="dopri5", rtol=1e-9, atol=1e-9, **kw)
        exact = torch.stack([expm_sol(A4, float(t), x0) for t in sol.ts])
        assert float((sol.ys - exact).abs().max()) < 1e-7
    ident = sf.solve(sf.ODE(lambda t, x: x), torch.ones(3, dtype=F64), ts=ts, solver="tsit5",
                     rtol=1e-9, atol=1e-9, dense=True)
    assert torch.allclose(ident.ys[:, 0], torch.exp(ts), rtol=1e-7)
    for t in (0.1, 0.77, 1.9):  # the stored stages of every step are intact
        assert float(ident.evaluate(t)[0]) == pytest.approx(math.exp(t), rel=1e-7)


# ----------------------------------------------------------------- step_ts, jump_ts, failures
def test_step_ts_and_jump_ts() -> None:
    """u = +1 before t = 0.5 and -1 from it on: x(1) = 0 exactly. With jump_ts the steps land
    on 0.5, the stages there see the left limit and the next step starts from the right one."""
    ode = sf.ODE(lambda t, x: torch.where(t < 0.5, 1.0, -1.0) * torch.ones_like(x))
    x0 = torch.zeros(1, dtype=F64)
    kw = dict(solver="dopri5", rtol=1e-8, atol=1e-10, save_all=True)
    plain = sf.solve(ode, x0, (0.0, 1.0), **kw)
    jump = sf.solve(ode, x0, (0.0, 1.0), jump_ts=[0.5], **kw)
    step = sf.solve(ode, x0, (0.0, 1.0), step_ts=torch.tensor([0.5, 7.0]), **kw)
    assert 0.5 in jump.ts.tolist() and 0.5 in step.ts.tolist()
    assert abs(float(jump.x_final)) < 1e-14
    assert jump.stats["rejected"] == 0 and jump.stats["nfe"] < plain.stats["nfe"]
    assert abs(float(plain.x_final)) < 1e-5 and abs(float(step.x_final)) < 1e-5


def test_max_steps_raises_or_returns_partial() -> None:
    x0 = torch.tensor([1.0, 0.0, -0.5, 0.25], dtype=F64)
    with pytest.raises(sf.MaxStepsError, match="max_steps=5") as exc:
        sf.solve(linear(A4), x0, (0.0, 10.0), solver="dopri5", rtol=1e-10, atol=1e-12,
                 max_steps=5)
    assert 0.0 < exc.value.t_reached < 10.0
    assert f"t={exc.value.t_reached:.6g}" in str(exc.value)
    sol = sf.solve(linear(A4), x0, (0.0, 10.0), solver="dopri5", rtol=1e-10, atol=1e-12,
                   max_steps=5, on_failure="return")
    assert sol.status == "max_steps" and not sol.success
    assert sol.t_reached == pytest.approx(float(sol.ts[-1]))
    assert sol.stats["steps"] == 5
    exact = expm_sol(A4, sol.t_reached, x0)
    assert float((sol.x_final - exact).abs().max()) < 1e-8
    ts = torch.linspace(0.0, 10.0, 11, dtype=F64)
    part = sf.solve(linear(A4), x0, ts=ts, solver="dopri5", rtol=1e-10, atol=1e-12,
                    max_steps=40, on_failure="return")
    assert part.status == "max_steps"
    k = len(part.ts)
    assert 1 <= k < 11 and torch.equal(part.ts, ts[:k]) and part.t_reached >= float(ts[k - 1])


def test_dt_min_singularity() -> None:
    """x' = x^2, x(0) = 1 blows up at t = 1: the step shrinks below dt_min there."""
    ode = sf.ODE(lambda t, x: x * x)
    x0 = torch.ones(1, dtype=F64)
    with pytest.raises(sf.StepSizeError, match="dt_min") as exc:
        sf.solve(ode, x0, (0.0, 2.0), solver="dopri5", rtol=1e-6, atol=1e-9,
                 controller=PIController(dt_min=1e-8))
    assert exc.value.t_reached == pytest.approx(1.0, abs=1e-3)
    assert "t=0.99" in str(exc.value) or "t=1" in str(exc.value)
    sol = sf.solve(ode, x0, (0.0, 2.0), solver="dopri5", rtol=1e-6, atol=1e-9,
                   controller=PIController(dt_min=1e-8), on_failure="return")
    assert sol.status == "dt_min" and sol.t_reached == pytest.approx(1.0, abs=1e-3)


def test_nan_estimate_rejects_and_shrinks_then_succeeds() -> None:
    """x' = -sqrt(x): a too-large trial step overshoots to x < 0 and gives NaN; it is rejected
    and shrunk, and the solve succeeds: x(1.5) = (1 - 1.5/2)^2."""
    ode = sf.ODE(lambda t, x: -torch.sqrt(x))
    sol = sf.solve(ode, torch.ones(1, dtype=F64), (0.0, 1.5), solver="dopri5", rtol=1e-8,
                   atol=1e-10, dt0=10.0)
    assert sol.status == "success" and sol.stats["rejected"] >= 1
    assert abs(float(sol.x_final) - 0.0625) < 1e-7


def test_nan_field_raises_nonfinite_with_time() -> None:
    ode = sf.ODE(lambda t, x: torch.where(t > 0.5, torch.nan, -1.0) * x)
    x0 = torch.ones(1, dtype=F64)
    with pytest.raises(sf.NonFiniteError, match="dt_min") as exc:
        sf.solve(ode, x0, (0.0, 1.0), solver="dopri5", rtol=1e-6, atol=1e-9)
    assert exc.value.t_reached == pytest.approx(0.5, abs=1e-9)
    assert exc.value.t == pytest.approx(0.5, abs=1e-9)
    sol = sf.solve(ode, x0, (0.0, 1.0), solver="dopri5", rtol=1e-6, atol=1e-9,
                   on_failure="return")
    assert sol.status == "nonfinite" and bool(torch.isfinite(sol.ys).all())
    assert sol.x_final.item() == pytest.approx(math.exp(-0.5), rel=1e-5)


def test_inf_state_is_never_accepted() -> None:
    """x' = 1e308 overflows near t = 1.8 while the error estimate stays finite (the stages are
    equal): a state that overflows to inf still makes the step's error NaN, so it is rejected
    (never a silent inf), and the solve ends with status "nonfinite"."""
    ode = sf.ODE(lambda t, x: torch.full_like(x, 1e308))
    sol = sf.solve(ode, torch.ones(1, dtype=F64), (0.0, 10.0), solver="dopri5",
                   on_failure="return")
    assert sol.status == "nonfinite" and bool(torch.isfinite(sol.ys).all())
    assert 1.0 < sol.t_reached < 1.8


def test_one_host_sync_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading a tensor's value on the host (item, bool, float, tolist) is the only kind of
    host synchronisation: it happens once per attempted step (the accept/reject decision, with
    the NaN check folded in), plus a constant number at the start (initial step) and end."""
    counter = {"n": 0}
    for name in ("item", "__bool__", "__float__", "__int__", "tolist"):
        orig = getattr(torch.Tensor, name)

        def wrapped(self, *a, _orig=orig, **k):  # type: ignore[no-untyped-def]
            counter["n"] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    x0 = torch.randn(64, 4, dtype=F64, generator=torch.Generator().manual_seed(0))
    ts = torch.linspace(0.0, 5.0, 11, dtype=F64)
    counter["n"] = 0
    sol = sf.solve(linear(A4), x0, ts=ts, solver="dopri5", rtol=1e-8, atol=1e-8)
    monkeypatch.undo()
    assert sol.stats["steps"] > 20
    assert counter["n"] <= sol.stats["steps"] + 6, (counter["n"], sol.stats)


# ------------------------------------------------------------------------ controller, options
def test_pi_gains_and_controller_options() -> None:
    x0 = torch.tensor([2.0, 0.0], dtype=F64)
    ref = sf.solve(vdp(), x0, (0.0, 6.0), solver="dopri5", rtol=1e-12, atol=1e-12).x_final
    pi = PIController(beta1=0.7, beta2=0.4, rtol=1e-7, atol=1e-7)
    assert pi.safety == pytest.approx(0.9 ** 0.3)
    sol = sf.solve(vdp(), x0, (0.0, 6.0), solver="dopri5", controller=pi)
    assert float((sol.x_final - ref).abs().max()) < 1e-4
    capped = sf.solve(vdp(), x0, (0.0, 6.0), solver="dopri5", rtol=1e-4, atol=1e-4,
                      controller=PIController(dt_max=0.05), save_all=True)
    assert float(torch.diff(capped.ts).max()) <= 0.05 + 1e-12


def test_adaptive_solver_without_tolerances_uses_defaults() -> None:
    x0 = torch.tensor([1.0, 0.0, -0.5, 0.25], dtype=F64)
    sol = sf.solve(linear(A4), x0, (0.0, 1.0), solver="dopri5")  # rtol 1e-3, atol 1e-6
    assert sol.stats["steps"] >= 2
    assert float((sol.x_final - expm_sol(A4, 1.0, x0)).abs().max()) < 1e-2
    same = sf.solve(linear(A4), x0, (0.0, 1.0), solver="dopri5", rtol=1e-3, atol=1e-6)
    assert torch.equal(sol.x_final, same.x_final)
    default = sf.solve(linear(A4), x0, (0.0, 1.0), rtol=1e-3)  # default adaptive ODE: dopri5
    assert torch.equal(default.x_final, same.x_final)


@pytest.mark.parametrize("kwargs,match", [
    (dict(rtol=1e-3, controller=PIController(rtol=1e-4)), "rtol"),
    (dict(rtol=1e-3, bogus=1), "bogus"),
    (dict(rtol=1e-3, max_steps=0), "max_steps"),
    (dict(rtol=1e-3, dt0=-1.0), "dt0"),
    (dict(rtol=1e-3, on_failure="ignore"), "on_failure"),
    (dict(rtol=1e-3, dense="yes"), "dense"),
    (dict(rtol=1e-3, step_ts=[0.5, float("nan")]), "step_ts"),
    (dict(rtol=0.0, atol=0.0), "rtol, atol"),
    (dict(rtol=1e-3, solver="rk4"), "no error estimate"),
    (dict(rtol=1e-3, controller="pi"), "controller"),
])
def test_bad_options_name_the_argument(kwargs: dict, match: str) -> None:
    x0 = torch.ones(2, dtype=F64)
    kwargs.setdefault("solver", "dopri5")
    with pytest.raises(ValueError, match=match):
        sf.solve(sf.ODE(lambda t, x: -x), x0, (0.0, 1.0), **kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(safety=1.5), "safety"), (dict(fac_min=1.2), "fac_min"), (dict(fac_max=0.5), "fac_max"),
    (dict(beta1=0.0), "beta1"), (dict(beta2=-1.0), "beta2"), (dict(rtol=-1.0), "rtol"),
    (dict(dt_max=0.0), "dt_max"), (dict(dt_min=1.0, dt_max=0.1), "dt_min"),
    (dict(norm="l1"), "norm"),
])
def test_controller_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PIController(**kwargs)


def test_low_rtol_for_float32_warns() -> None:
    with pytest.warns(RuntimeWarning, match="rtol"):
        sf.solve(sf.ODE(lambda t, x: -x), torch.ones(2), (0.0, 0.1), solver="dopri5",
                 rtol=1e-9, atol=1e-3)


def test_sf_picontroller_is_exported() -> None:
    assert sf.PIController is PIController
