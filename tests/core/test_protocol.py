"""The solver protocol: capabilities, init/step, a stateful solver from outside the package,
interpolated saving at ``ts``, and the multistep method that proves the protocol.

All problems here are linear with exact solutions (float64); no randomness except where a seed
is stated.
"""

from __future__ import annotations

import math

import pytest
import torch

import sdeflow as sf
from sdeflow.interpolation import Hermite, MultistepPolynomial
from sdeflow.solvers import Capabilities, Solver, StepResult

F64 = torch.float64
A = torch.tensor([[-0.5, 1.0], [-1.0, -0.5]], dtype=F64)  # damped rotation


def linear() -> sf.ODE:
    return sf.ODE(lambda t, x: x @ A.T)


def exact(t: float, x0: torch.Tensor) -> torch.Tensor:
    return x0 @ torch.linalg.matrix_exp(A * t).T


class AB2PC(Solver):
    """A user's stateful solver: Adams-Bashforth 2 predictor, trapezoid (AM2) corrector, with
    the predictor-corrector difference as its error estimate (Milne's device). The state is
    the slope at the previous point; the first step is a Heun step."""

    name = "user_ab2pc"
    caps = Capabilities(order=2.0, adaptive=True, error_order=1.0, stateful=True)
    c = (0.0, 1.0)

    def init(self, terms, t0, x0, h):  # type: ignore[no-untyped-def]
        return None

    def step(self, terms, tt, t, h, x, state, noise):  # type: ignore[no-untyped-def]
        u = terms.u
        f0 = u(tt[0], x)
        if state is None:
            xp = x + h * f0
        else:
            t_prev, f_prev = state
            r = h / (t - t_prev)
            xp = x + h * ((1 + r / 2) * f0 - (r / 2) * f_prev)
        f1 = u(tt[1], xp)
        x_new = x + 0.5 * h * (f0 + f1)
        return StepResult(x_new, x_new - xp, (f0, f1), (t, f0))


def test_user_stateful_solver_runs_fixed_and_adaptive() -> None:
    x0 = torch.tensor([1.0, 0.0], dtype=F64)
    errs = []
    for n in (20, 40, 80):
        sol = sf.solve(linear(), x0, (0.0, 2.0), solver=AB2PC(), steps=n)
        errs.append(float((sol.x_final - exact(2.0, x0)).abs().max()))
        assert sol.stats["nfe"] == 2 * n  # counted by the wrapped field
    slopes = [math.log2(a / b) for a, b in zip(errs[:-1], errs[1:])]
    assert min(slopes) > 1.8, slopes
    for tol in (1e-4, 1e-6):
        sol = sf.solve(linear(), x0, (0.0, 2.0), solver=AB2PC, rtol=tol, atol=tol)
        assert sol.success and sol.stats["accepted"] > 5
        assert float((sol.x_final - exact(2.0, x0)).abs().max()) < 50 * tol


def test_capabilities_are_frozen_per_class_and_validated() -> None:
    caps = sf.solvers.get("dopri5").caps
    assert caps.order == 5 and caps.error_order == 4 and caps.fsal and caps.adaptive
    assert caps.interpolant == "table"
    with pytest.raises(AttributeError):
        caps.order = 3  # type: ignore[misc]
    em = sf.solvers.get("euler_maruyama").caps
    assert em.strong("additive") == 1.0 and em.strong("diagonal") == 0.5 and em.sde
    assert sf.solvers.get("sra1").caps.space_time
    assert sf.solvers.get("adams_bashforth3").caps.stateful
    with pytest.raises(ValueError, match="error_order"):
        Capabilities(adaptive=True)
    with pytest.raises(ValueError, match="noise_types"):
        Capabilities(sde=True, noise_types=("pink",))
    with pytest.raises(ValueError, match="interpolant"):
        Capabilities(interpolant="spline")


def test_class_names_are_explicit_and_kind_variants_are_separate_solvers() -> None:
    assert sf.solvers.get("rk4").__name__ == "RK4Solver"
    assert sf.solvers.get("euler").__name__ == "Euler"
    m = sf.solvers.Milstein()
    s = m.for_kind("stratonovich")
    assert type(s).__name__ == "MilsteinStratonovich" and s is not m
    assert m.caps.kinds == ("ito",)  # the user's instance is not mutated
    assert sf.solvers.get("milstein_stratonovich").caps.kinds == ("stratonovich",)


def test_capability_mismatches_are_clear_errors() -> None:
    sde = sf.SDE(lambda t, x: -x, lambda t, x: torch.ones(*x.shape, 2, dtype=x.dtype),
                 noise="general")
    with pytest.raises(ValueError, match="solver: 'milstein' supports noise"):
        sf.solve(sde, torch.ones(3, 2), (0.0, 1.0), solver="milstein", steps=4, seed=0)
    with pytest.raises(ValueError, match="is an SDE solver but the problem is an ODE"):
        sf.solve(linear(), torch.ones(2, dtype=F64), (0.0, 1.0), solver="euler_maruyama",
                 steps=4)
    with pytest.raises(ValueError, match="no error estimate"):
        sf.solve(linear(), torch.ones(2, dtype=F64), (0.0, 1.0), solver="adams_bashforth3",
                 rtol=1e-3)


def test_adams_bashforth3_is_third_order_with_one_evaluation_per_step() -> None:
    x0 = torch.tensor([1.0, 0.0], dtype=F64)
    errs = []
    for n in (40, 80, 160):
        sol = sf.solve(linear(), x0, (0.0, 2.0), solver="adams_bashforth3", steps=n)
        errs.append(float((sol.x_final - exact(2.0, x0)).abs().max()))
        assert sol.stats["nfe"] == n + 4  # two Kutta RK3 start steps cost 3 each
    slopes = [math.log2(a / b) for a, b in zip(errs[:-1], errs[1:])]
    assert all(abs(s - 3.0) < 0.15 for s in slopes), slopes


def test_fixed_step_saving_interpolates_and_step_ts_forces_the_steps() -> None:
    """steps=100 with 1,001 output times takes 100 steps, and every saved value is within the
    interpolant's bound (Hermite: O(h^4) local, here h = 0.02 -> below 1e-6 with rk4's own
    1e-9 global error); step_ts=ts forces the steps onto the output times."""
    x0 = torch.tensor([1.0, 0.0], dtype=F64)
    ts = torch.linspace(0.0, 2.0, 1001, dtype=F64)
    sol = sf.solve(linear(), x0, ts=ts, solver="rk4", steps=100)
    assert sol.stats["accepted"] == 100 and sol.ys.shape == (1001, 2)
    ref = torch.stack([exact(float(t), x0) for t in ts])
    h = 0.02
    assert float((sol.ys - ref).abs().max()) < 0.1 * h ** 4  # Hermite remainder bound
    assert float((sol.ys - ref).abs().max()) > 1e-12  # really interpolated, not stepped
    # the values at the step ends equal the plain solve's
    plain = sf.solve(linear(), x0, (0.0, 2.0), solver="rk4", steps=100)
    assert torch.equal(sol.x_final, plain.x_final)
    forced = sf.solve(linear(), x0, ts=ts[::50], solver="rk4", steps=100, step_ts=ts[::50])
    assert forced.stats["accepted"] == 100
    few = sf.solve(linear(), x0, ts=ts[::100], solver="rk4", steps=7, step_ts=ts[::100])
    assert few.stats["accepted"] >= 10  # stepped onto each of the 11 times


@pytest.mark.parametrize("solver", ["euler", "heun", "rk4", "adams_bashforth3", "dopri5"])
def test_dense_output_of_fixed_steps(solver: str) -> None:
    x0 = torch.tensor([1.0, 0.0], dtype=F64)
    sol = sf.solve(linear(), x0, (0.0, 2.0), solver=solver, steps=200, dense=True)
    for t in (0.013, 0.5, 1.2345, 1.999):
        got = sol.evaluate(t)
        p = sf.solvers.get(solver).caps.order
        bound = 5 * (0.01 ** min(p, 3))  # interpolant (Hermite or own) + global error
        assert float((got - exact(t, x0)).abs().max()) < bound
    assert torch.equal(sol.evaluate(2.0), sol.x_final)


def test_multistep_polynomial_reproduces_its_step_and_integrates_polynomials() -> None:
    x0, x1 = torch.zeros(1, dtype=F64), torch.zeros(1, dtype=F64)
    # slopes of u(s) = 1 + s at nodes 0, -1, -2: the integral int_0^theta (1 + s) ds is exact
    fs = [torch.tensor([1.0 + s], dtype=F64) for s in (0.0, -1.0, -2.0)]
    ip = MultistepPolynomial(0.0, 1.0, x0, x1, (0.0, -1.0, -2.0), fs)
    for th in (0.25, 0.5, 0.75):
        assert float(ip(th)) == pytest.approx(th + th * th / 2, abs=1e-14)
    # Hermite is exact for cubics
    xa, xb = torch.tensor([0.0], dtype=F64), torch.tensor([1.0], dtype=F64)
    her = Hermite(0.0, 1.0, xa, xb, torch.tensor([0.0], dtype=F64),
                  torch.tensor([3.0], dtype=F64))
    assert float(her(0.5)) == pytest.approx(0.125, abs=1e-14)


def test_sde_solves_still_step_onto_ts() -> None:
    sde = sf.SDE(lambda t, x: -x, lambda t, x: 0.3 * torch.ones_like(x))
    ts = torch.tensor([0.0, 0.123, 0.5, 1.0], dtype=F64)
    bm = sf.BrownianPath((4, 1), seed=0, dtype=F64)
    sol = sf.solve(sde, torch.ones(4, 1, dtype=F64), ts=ts, solver="euler_maruyama",
                   steps=10, brownian=bm)
    assert sol.stats["steps"] == 11  # 10 steps plus the interior output time off the grid
    assert torch.equal(sol.ts, ts)


def test_fused_adaptive_step_equals_the_plain_engine() -> None:
    """Large states take the stacked-stage step (no autograd); with x0 requiring grad the
    plain engine runs: the two agree to rounding, step for step."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3000, 2, dtype=F64, generator=g)  # 6,000 elements: fused
    a = sf.solve(linear(), x0, (0.0, 2.0), solver="dopri5", rtol=1e-7, atol=1e-9)
    b = sf.solve(linear(), x0.clone().requires_grad_(), (0.0, 2.0), solver="dopri5",
                 rtol=1e-7, atol=1e-9)
    assert a.stats == b.stats
    assert torch.allclose(a.x_final, b.x_final.detach(), rtol=1e-13, atol=1e-13)
    assert float((a.x_final - exact(2.0, x0)).abs().max()) < 1e-6


def test_fixed_nonfinite_returns_the_partial_solution() -> None:
    blow = sf.ODE(lambda t, x: x * x)  # x' = x^2 from 1 blows up at t = 1
    with pytest.raises(sf.NonFiniteError, match="non-finite at t="):
        sf.solve(blow, torch.ones(1, dtype=F64), (0.0, 2.0), solver="euler", steps=2000)
    sol = sf.solve(blow, torch.ones(1, dtype=F64), (0.0, 2.0), solver="euler", steps=2000,
                   on_failure="return")
    assert sol.status == "nonfinite" and bool(torch.isfinite(sol.ys).all())
    assert 1.0 < sol.t_reached < 2.0


def test_pid_gain_changes_the_step_sequence_and_is_validated() -> None:
    x0 = torch.tensor([1.0, 0.0], dtype=F64)
    pi = sf.solve(linear(), x0, (0.0, 5.0), controller=sf.PIController(rtol=1e-6, atol=1e-8,
                                                                       beta1=0.7, beta2=0.4))
    pid = sf.solve(linear(), x0, (0.0, 5.0), controller=sf.PIController(
        rtol=1e-6, atol=1e-8, beta1=0.7, beta2=0.4, beta3=0.1))
    assert pi.stats["steps"] != pid.stats["steps"] or not torch.equal(pi.x_final, pid.x_final)
    assert float((pid.x_final - exact(5.0, x0)).abs().max()) < 1e-5
    with pytest.raises(ValueError, match="beta3"):
        sf.PIController(beta3=-0.1)
