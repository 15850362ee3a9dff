"""solve(): the contract (shapes, saving, dtype, autograd, seeds, NFE) and every bad input."""

from __future__ import annotations

import math

import pytest
import torch

import sdeflow as sf
from sdeflow.analytic import expm
from sdeflow.solvers import names

F64 = torch.float64
A = torch.tensor([[-0.5, 1.0], [-1.0, -0.5]], dtype=F64)


def linear_ode() -> sf.ODE:
    return sf.ODE(lambda t, x: x @ A.T)


class Counting:
    """A field that counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, t, x):
        self.calls += 1
        return self.fn(t, x)


# ----------------------------------------------------------------------------- NFE and saving
@pytest.mark.parametrize("name, per_step", [("euler", 1), ("midpoint", 2), ("heun", 2),
                                            ("rk4", 4)])
def test_nfe_counts_every_call_and_nothing_else(name: str, per_step: int) -> None:
    u = Counting(lambda t, x: -x)
    sol = sf.solve(sf.ODE(u), torch.ones(3), (0.0, 1.0), solver=name, steps=10)
    assert u.calls == per_step * 10 == sol.stats["nfe"]


@pytest.mark.parametrize("name, noise, kind", [
    ("euler_maruyama", "diagonal", "ito"), ("milstein", "diagonal", "ito"),
    ("milstein", "diagonal", "stratonovich"), ("stochastic_heun", "diagonal", "stratonovich"),
    ("sra1", "additive", "ito"), ("euler_maruyama", "general", "ito"),
])
def test_sde_nfe_matches_the_calls(name: str, noise: str, kind: str) -> None:
    f = Counting(lambda t, x: -x)
    if noise == "general":
        g = Counting(lambda t, x: torch.ones(*x.shape, 3))
    else:
        g = Counting(lambda t, x: 0.3 * torch.ones_like(x) * (1 if noise == "additive" else x))
    sde = sf.SDE(f, g, noise=noise, kind=kind)
    sol = sf.solve(sde, torch.ones(5, 2), (0.0, 1.0), solver=name, steps=7, seed=0)
    assert sol.stats["nfe_drift"] == f.calls
    assert sol.stats["nfe_diffusion"] == g.calls
    assert sol.stats["nfe"] == f.calls + g.calls


def test_t_span_saves_ends_and_save_all_saves_every_step() -> None:
    sol = sf.solve(linear_ode(), torch.ones(4, 2, dtype=F64), (0.0, 1.0), solver="rk4", steps=8)
    assert sol.ts.tolist() == [0.0, 1.0] and sol.ys.shape == (2, 4, 2)
    assert torch.equal(sol.x_final, sol.ys[-1])
    sol = sf.solve(linear_ode(), torch.ones(4, 2, dtype=F64), (0.0, 1.0), solver="rk4", steps=8,
                   save_all=True)
    assert sol.ys.shape == (9, 4, 2)
    torch.testing.assert_close(sol.ts, torch.linspace(0, 1, 9, dtype=F64))


def test_ts_outputs_are_hit_exactly_and_match_the_exact_solution() -> None:
    x0 = torch.tensor([1.0, 0.0], dtype=F64)
    ts = torch.tensor([0.0, 0.15, 0.5, 0.77, 1.0], dtype=F64)
    sol = sf.solve(linear_ode(), x0, ts=ts, solver="rk4", dt=0.01)
    assert torch.equal(sol.ts, ts)
    for t, y in zip(ts, sol.ys):
        exact = expm(t * A) @ x0
        torch.testing.assert_close(y, exact, rtol=0, atol=1e-9)


def test_float32_linspace_ts_snap_onto_the_step_grid() -> None:
    sol = sf.solve(sf.ODE(lambda t, x: -x), torch.ones(2), ts=torch.linspace(0, 1, 11),
                   solver="rk4", steps=100)
    assert sol.stats["steps"] == 100 and sol.stats["nfe"] == 400
    assert sol.ts.shape == (11,)


# --------------------------------------------------------------------- dtype, device, autograd
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["euler", "rk4", "euler_maruyama", "sra1"])
def test_dtype_and_device_are_kept(dtype: torch.dtype, name: str) -> None:
    x0 = torch.ones(3, 2, dtype=dtype)
    if name in names(sde=True):
        prob = sf.SDE(lambda t, x: -x, lambda t, x: torch.ones_like(x) * 0.1, noise="additive")
        sol = sf.solve(prob, x0, (0.0, 1.0), solver=name, steps=5, seed=1)
    else:
        sol = sf.solve(sf.ODE(lambda t, x: -x * t), x0, (0.0, 1.0), solver=name, steps=5)
    for tensor in (sol.ys, sol.ts):
        assert tensor.dtype == dtype and tensor.device == x0.device


def test_fields_receive_a_zero_dim_time_of_the_state_dtype() -> None:
    seen = []

    def u(t, x):
        seen.append((t.dim(), t.dtype))
        return -x

    sf.solve(sf.ODE(u), torch.ones(2, dtype=F64), (0.0, 1.0), solver="rk4", steps=2)
    assert set(seen) == {(0, F64)}


def test_gradient_flows_to_x0_and_to_parameters() -> None:
    theta = torch.tensor(0.7, dtype=F64, requires_grad=True)
    x0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    sol = sf.solve(sf.ODE(lambda t, x: -theta * x), x0, (0.0, 1.0), solver="rk4", steps=50)
    loss = sol.x_final.sum()
    loss.backward()
    # x(1) = x0 exp(-theta): d/dx0 = exp(-theta), d/dtheta = -sum(x0) exp(-theta)
    torch.testing.assert_close(x0.grad, torch.full((2,), math.exp(-0.7), dtype=F64))
    torch.testing.assert_close(theta.grad, torch.tensor(-3 * math.exp(-0.7), dtype=F64))


def test_gradient_flows_through_sde_solvers() -> None:
    sigma = torch.tensor(0.4, dtype=F64, requires_grad=True)
    sde = sf.SDE(lambda t, x: -x, lambda t, x: sigma * x, noise="diagonal")
    x0 = torch.ones(64, 1, dtype=F64)
    for name in ("euler_maruyama", "milstein"):
        sigma.grad = None
        sf.solve(sde, x0, (0.0, 1.0), solver=name, steps=16, seed=0).x_final.sum().backward()
        assert sigma.grad is not None and torch.isfinite(sigma.grad)


# -------------------------------------------------------------------------- seeds and paths
def test_same_seed_is_bit_identical_and_other_seed_differs() -> None:
    sde = sf.SDE(lambda t, x: -x, lambda t, x: 0.5 * torch.ones_like(x))
    x0 = torch.zeros(100, 2)
    a = sf.solve(sde, x0, (0.0, 1.0), solver="euler_maruyama", steps=300, seed=3).x_final
    b = sf.solve(sde, x0, (0.0, 1.0), solver="euler_maruyama", steps=300, seed=3).x_final
    c = sf.solve(sde, x0, (0.0, 1.0), solver="euler_maruyama", steps=300, seed=4).x_final
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_brownian_path_drives_every_noise_type_exactly() -> None:
    """With f = 0 and constant g, x_T - x_0 is the noise term of W_T: checks the noise shapes."""
    n, d, m = 50, 3, 4
    x0 = torch.zeros(n, d, dtype=F64)
    zero = lambda t, x: torch.zeros_like(x)  # noqa: E731
    g_vec = torch.linspace(0.5, 1.5, d, dtype=F64)
    # diagonal: x_T = g * W_T
    bm = sf.BrownianPath((n, d), seed=0, dtype=F64)
    sde = sf.SDE(zero, lambda t, x: g_vec.expand_as(x), noise="diagonal")
    out = sf.solve(sde, x0, (0.0, 1.0), solver="euler_maruyama", steps=8, brownian=bm).x_final
    torch.testing.assert_close(out, g_vec * bm(1.0))
    # scalar: one W per path shared by the d coordinates
    bm = sf.BrownianPath((n, 1), seed=1, dtype=F64)
    sde = sf.SDE(zero, lambda t, x: g_vec.expand_as(x), noise="scalar")
    out = sf.solve(sde, x0, (0.0, 1.0), solver="euler_maruyama", steps=8, brownian=bm).x_final
    torch.testing.assert_close(out, g_vec * bm(1.0))
    # general: x_T = G W_T with G of shape (d, m)
    G = torch.arange(d * m, dtype=F64).view(d, m) / 10
    bm = sf.BrownianPath((n, m), seed=2, dtype=F64)
    sde = sf.SDE(zero, lambda t, x: G.expand(*x.shape, m), noise="general")
    out = sf.solve(sde, x0, (0.0, 1.0), solver="euler_maruyama", steps=8, brownian=bm).x_final
    torch.testing.assert_close(out, bm(1.0) @ G.T)


def test_general_noise_without_a_path_reads_m_from_one_counted_call() -> None:
    g = Counting(lambda t, x: torch.ones(*x.shape, 3, dtype=x.dtype))
    sde = sf.SDE(lambda t, x: torch.zeros_like(x), g, noise="general")
    sol = sf.solve(sde, torch.zeros(1000, 2, dtype=F64), (0.0, 1.0), solver="euler_maruyama",
                   steps=4, seed=0)
    assert g.calls == 5 == sol.stats["nfe_diffusion"]
    # both coordinates = W1 + W2 + W3 ~ N(0, 3)
    assert abs(sol.x_final[:, 0].var().item() - 3.0) < 5 * 3.0 * math.sqrt(2 / 1000)


def test_backward_time_sde_uses_the_path_backwards() -> None:
    bm = sf.BrownianPath((10, 1), seed=0, dtype=F64)
    sde = sf.SDE(lambda t, x: torch.zeros_like(x), lambda t, x: torch.ones_like(x))
    out = sf.solve(sde, torch.zeros(10, 1, dtype=F64), (1.0, 0.0), solver="euler_maruyama",
                   steps=4, brownian=bm).x_final
    torch.testing.assert_close(out, -bm(1.0))


def test_milstein_autograd_and_difference_agree_on_gbm() -> None:
    mu, s = 0.3, 0.8
    bm = sf.BrownianPath((2000, 1), seed=7, dtype=F64)
    sde = sf.SDE(lambda t, x: mu * x, lambda t, x: s * x)
    x0 = torch.ones(2000, 1, dtype=F64)
    exact = torch.exp(torch.tensor((mu - s * s / 2), dtype=F64) + s * bm(1.0))
    outs = {}
    for deriv in ("finite_difference", "autograd"):
        slv = sf.solvers.Milstein(derivative=deriv)
        outs[deriv] = sf.solve(sde, x0, (0.0, 1.0), solver=slv, steps=256, brownian=bm).x_final
    for out in outs.values():
        assert (out - exact).abs().mean().item() < 0.01
    # EM on the same path is clearly worse: the Milstein correction is there
    em = sf.solve(sde, x0, (0.0, 1.0), solver="euler_maruyama", steps=256, brownian=bm).x_final
    assert (em - exact).abs().mean() > 3 * (outs["autograd"] - exact).abs().mean()


# ------------------------------------------------------------------------------- bad inputs
def test_wrong_vector_field_shape_is_caught_on_the_first_call() -> None:
    calls = Counting(lambda t, x: x.sum(-1, keepdim=True))  # (n, 1) would broadcast silently
    with pytest.raises(ValueError, match=r"vector_field: returned shape \(4, 1\)"):
        sf.solve(sf.ODE(calls), torch.ones(4, 2), (0.0, 1.0), solver="euler", steps=10)
    assert calls.calls == 1


@pytest.mark.parametrize("which", ["drift", "diffusion"])
def test_wrong_drift_or_diffusion_shape(which: str) -> None:
    good = lambda t, x: -x  # noqa: E731
    bad = lambda t, x: x[..., :1]  # noqa: E731  (broadcastable: hidden without the check)
    sde = sf.SDE(bad if which == "drift" else good, good if which == "drift" else bad)
    with pytest.raises(ValueError, match=which):
        sf.solve(sde, torch.ones(4, 3), (0.0, 1.0), solver="euler_maruyama", steps=3, seed=0)


def test_wrong_dtype_from_a_field() -> None:
    ode = sf.ODE(lambda t, x: (-x).float())
    with pytest.raises(ValueError, match="vector_field: returned dtype torch.float32"):
        sf.solve(ode, torch.ones(2, dtype=F64), (0.0, 1.0), solver="rk4", steps=3)


def test_general_noise_diffusion_without_m_dimension() -> None:
    sde = sf.SDE(lambda t, x: -x, lambda t, x: torch.ones_like(x), noise="general")
    with pytest.raises(ValueError, match="diffusion: general noise"):
        sf.solve(sde, torch.ones(4, 3), (0.0, 1.0), solver="euler_maruyama", steps=3, seed=0)


# The field turns NaN for t >= 0.5. Euler first evaluates there in the step from 0.50 (state NaN
# at 0.51); rk4's last stage in the step from 0.49 already evaluates at t = 0.50.
@pytest.mark.parametrize("name, t_bad", [("euler", 0.51), ("rk4", 0.50)])
def test_non_finite_state_reports_the_time_it_appeared(name: str, t_bad: float) -> None:
    def u(t, x):
        return x * float("nan") if t >= 0.5 else -x

    with pytest.raises(sf.NonFiniteError, match=f"t={t_bad:g} ") as info:
        sf.solve(sf.ODE(u), torch.ones(2, dtype=F64), (0.0, 1.0), solver=name, steps=100)
    assert info.value.t == pytest.approx(t_bad)
    assert info.value.t_reached == pytest.approx(t_bad - 0.01)


def test_non_finite_in_a_later_block_and_in_an_sde() -> None:
    ode = sf.ODE(lambda t, x: x * x)  # x' = x^2, x(0) = 1 blows up at t = 1
    with pytest.raises(sf.NonFiniteError) as info:
        sf.solve(ode, torch.ones(1, dtype=F64), (0.0, 2.0), solver="euler", steps=1000)
    assert 1.0 < info.value.t <= 2.0
    sde = sf.SDE(lambda t, x: x * x * 10, lambda t, x: torch.ones_like(x))
    with pytest.raises(sf.NonFiniteError, match="non-finite at t="):
        sf.solve(sde, torch.ones(3, 1, dtype=F64), (0.0, 5.0), solver="euler_maruyama",
                 steps=600, seed=0)


@pytest.mark.parametrize("ts", [[0.0, 0.5, 0.5, 1.0], [0.0, 0.7, 0.3, 1.0], [0.0]])
def test_non_monotone_ts(ts: list) -> None:
    with pytest.raises(ValueError, match="ts"):
        sf.solve(linear_ode(), torch.ones(2, dtype=F64), ts=torch.tensor(ts), steps=4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=4, dt=0.1), "steps, dt"),
    (dict(steps=4, rtol=1e-3), "steps, rtol"),
    (dict(dt=0.1, atol=1e-3), "dt, rtol"),
    (dict(), "steps, dt"),
    (dict(steps=0), "steps: expected a positive int"),
    (dict(steps=2.5), "steps"),
    (dict(dt=-0.1), "dt: expected a positive"),
])
def test_conflicting_or_missing_step_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sf.solve(linear_ode(), torch.ones(2, dtype=F64), (0.0, 1.0), solver="rk4", **kwargs)


def test_unknown_solver_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown solver 'rk5'.*euler_maruyama.*rk4"):
        sf.solve(linear_ode(), torch.ones(2), (0.0, 1.0), solver="rk5", steps=3)


def test_solver_family_mismatch() -> None:
    sde = sf.SDE(lambda t, x: -x, lambda t, x: torch.ones_like(x))
    with pytest.raises(ValueError, match="SDE solver but the problem is an ODE"):
        sf.solve(linear_ode(), torch.ones(2), (0.0, 1.0), solver="euler_maruyama", steps=3)
    with pytest.raises(ValueError, match="ODE solver but the problem is an SDE"):
        sf.solve(sde, torch.ones(2, 1), (0.0, 1.0), solver="rk4", steps=3)


def test_noise_type_and_kind_mismatch_name_the_solvers_that_fit() -> None:
    diag = sf.SDE(lambda t, x: -x, lambda t, x: x, noise="diagonal")
    with pytest.raises(ValueError, match="solvers that fit: euler_maruyama, milstein"):
        sf.solve(diag, torch.ones(2, 1), (0.0, 1.0), solver="sra1", steps=3, seed=0)
    strat = sf.SDE(lambda t, x: -x, lambda t, x: x, kind="stratonovich")
    with pytest.raises(ValueError, match="fit: milstein, stochastic_heun"):
        sf.solve(strat, torch.ones(2, 1), (0.0, 1.0), solver="euler_maruyama", steps=3, seed=0)
    gen = sf.SDE(lambda t, x: -x, lambda t, x: x[..., None], noise="general")
    with pytest.raises(ValueError, match="milstein"):
        sf.solve(gen, torch.ones(2, 1), (0.0, 1.0), solver="milstein", steps=3, seed=0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(t_span=(0.0, 0.0)), "t_span"),
    (dict(t_span=(0.0, 1.0, 2.0)), "t_span"),
    (dict(t_span=(0.0, 1.0), ts=[0.0, 1.0]), "t_span, ts"),
    (dict(), "t_span, ts"),
])
def test_bad_time_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sf.solve(linear_ode(), torch.ones(2), solver="rk4", steps=3, **kwargs)


def test_bad_x0_problem_and_path() -> None:
    sde = sf.SDE(lambda t, x: -x, lambda t, x: torch.ones_like(x))
    with pytest.raises(ValueError, match="x0: expected a floating"):
        sf.solve(linear_ode(), torch.ones(2, dtype=torch.int64), (0.0, 1.0), steps=3)
    with pytest.raises(ValueError, match="x0: contains NaN"):
        sf.solve(linear_ode(), torch.tensor([1.0, float("nan")]), (0.0, 1.0), steps=3)
    with pytest.raises(TypeError, match="problem"):
        sf.solve(3.0, torch.ones(2), (0.0, 1.0), steps=3)
    # a plain callable f(t, x) is an ODE (as torchdiffeq's func)
    plain = sf.solve(lambda t, x: -x, torch.ones(2), (0.0, 1.0), steps=3)
    assert torch.equal(plain.x_final, sf.solve(sf.ODE(lambda t, x: -x), torch.ones(2),
                                               (0.0, 1.0), steps=3).x_final)
    with pytest.raises(ValueError, match="x0: an SDE state"):
        sf.solve(sde, torch.tensor(1.0), (0.0, 1.0), steps=3, seed=0)
    with pytest.raises(ValueError, match="seed, brownian"):
        sf.solve(sde, torch.ones(2, 1), (0.0, 1.0), steps=3, seed=0,
                 brownian=sf.BrownianPath((2, 1)))
    with pytest.raises(ValueError, match="brownian: path shape"):
        sf.solve(sde, torch.ones(2, 1), (0.0, 1.0), steps=3, brownian=sf.BrownianPath((3, 1)))
    with pytest.raises(ValueError, match="brownian: path lives on"):
        sf.solve(sde, torch.ones(2, 1), (0.0, 2.0), steps=3, brownian=sf.BrownianPath((2, 1)))


def test_problem_construction_errors() -> None:
    with pytest.raises(TypeError, match="vector_field"):
        sf.ODE()
    with pytest.raises(TypeError, match="vector_field"):
        sf.ODE(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="noise"):
        sf.SDE(lambda t, x: x, lambda t, x: x, noise="multiplicative")
    with pytest.raises(ValueError, match="kind"):
        sf.SDE(lambda t, x: x, lambda t, x: x, kind="backward")
    with pytest.raises(TypeError, match="diffusion"):
        sf.SDE(lambda t, x: x)


def test_subclassed_problems_are_solved_like_callables() -> None:
    class Decay(sf.ODE):
        def vector_field(self, t, x):
            return -2 * x

    class OU(sf.SDE):
        noise = "additive"

        def drift(self, t, x):
            return -x

        def diffusion(self, t, x):
            return 0.1 * torch.ones_like(x)

    sol = sf.solve(Decay(), torch.ones(1, dtype=F64), (0.0, 1.0), solver="rk4", steps=64)
    torch.testing.assert_close(sol.x_final, torch.tensor([math.exp(-2)], dtype=F64))
    assert OU().noise == "additive"
    out = sf.solve(OU(), torch.ones(4, 1), (0.0, 1.0), solver="sra1", steps=8, seed=0)
    assert out.ys.shape == (2, 4, 1)
