"""sdeflow.testing: the strategies draw what they promise, and the helpers judge user solvers.

A user-written Euler--Maruyama and Ralston's RK2 pass; a subtly broken scheme (noise scaled by
0.9) is caught by both helpers. Sample sizes and seeds are stated per test.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sdeflow as sf
import sdeflow.testing as sft
from sdeflow import analytic as an
from sdeflow.solvers import ButcherTableau, Capabilities, RungeKutta, Solver, StepResult

F64 = torch.float64
SETTINGS = settings(max_examples=20, deadline=None, derandomize=True)


# ------------------------------------------------------------------------------ user solvers
class UserEM(Solver):
    """A user's Euler--Maruyama for elementwise noise: x + h f + g dW (the solver protocol:
    capabilities plus ``step``)."""

    name = "user_em"
    caps = Capabilities(sde=True, order=1.0, noise_types=("diagonal", "additive"),
                        kinds=("ito",), strong_order={"diagonal": 0.5, "additive": 0.5},
                        weak_order={"diagonal": 1.0, "additive": 1.0})
    c = (0.0,)
    noise_scale = 1.0

    def step(self, terms, tt, t, h, x, state, noise):  # type: ignore[no-untyped-def]
        f, g = terms.f, terms.g
        x_new = x + h * f(tt[0], x) + self.noise_scale * g(tt[0], x) * noise[0]
        return StepResult(x_new, None, None, None)


class BrokenEM(UserEM):
    """The same with the noise scaled by 0.9: right drift, wrong diffusion."""

    name = "broken_em"
    noise_scale = 0.9


class Ralston(RungeKutta):
    """Ralston's second-order method, as a user would add it: a Butcher tableau."""

    name = "ralston"
    tableau = ButcherTableau(c=[0.0, 2 / 3], a=[[], [2 / 3]], b=[0.25, 0.75], order=2)


# ------------------------------------------------------------------------------ strategies
@SETTINGS
@given(sft.stable_matrices(dim=(1, 4), decay=(0.1, 1.0)))
def test_stable_matrices_are_contractive(a: torch.Tensor) -> None:
    assert a.dtype == F64 and a.shape[0] == a.shape[1]
    sym = (a + a.T) / 2
    assert torch.linalg.eigvalsh(sym).max() <= -0.1 + 1e-12
    assert torch.linalg.eigvals(a).real.max() <= -0.1 + 1e-12
    assert torch.linalg.matrix_norm(torch.linalg.matrix_exp(a), ord=2) <= math.exp(-0.1) + 1e-12


@SETTINGS
@given(sft.ou_processes(theta=(0.5, 2.0), sigma=(0.2, 1.0), mu=(-1.0, 1.0), dim=(1, 3)))
def test_ou_processes_respect_their_ranges(ou: an.OrnsteinUhlenbeck) -> None:
    assert 0.5 <= ou.theta <= 2.0 and 0.2 <= ou.sigma <= 1.0 and -1.0 <= ou.mu <= 1.0
    assert 1 <= ou.dim <= 3 and ou.problem.noise == "additive"


@SETTINGS
@given(sft.linear_sdes(dim=(1, 3), m=(1, 2)), sft.gbms())
def test_linear_sdes_and_gbms_are_well_formed(lin: an.LinearSDE, gbm: an.GeometricBrownianMotion
                                              ) -> None:
    assert lin.noise in ("additive", "general")
    assert lin.B_matrix.shape[0] == lin.dim
    if lin.noise == "general":
        assert 1 <= lin.m <= 2
    assert 0.1 <= lin.B.abs().min() and lin.B.abs().max() <= 1.0
    assert torch.linalg.eigvals(lin.A).real.max() < 0
    assert -1.0 <= gbm.mu <= 1.0 and 0.1 <= gbm.sigma <= 1.0


def test_strategy_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="dim"):
        sft.stable_matrices(dim=(3, 1))
    with pytest.raises(ValueError, match="m"):
        sft.linear_sdes(m=0)
    with pytest.raises(ValueError, match="decay"):
        sft.stable_matrices(decay=(0.0, 1.0))
    with pytest.raises(ValueError, match="noise"):
        sft.linear_sdes(noise="diagonal")
    with pytest.raises(ValueError, match="theta"):
        sft.ou_processes(theta=(-1.0, 1.0))


# ------------------------------------------------------------------------------ assert_order
@settings(max_examples=10, deadline=None, derandomize=True)
@given(sft.linear_odes(dim=(1, 3)), st.sampled_from(["midpoint", "rk4"]))
def test_assert_order_on_random_stable_linear_odes(ode: an.LinearODE, name: str) -> None:
    """Steps chosen so h|A| runs from <= 1/4 down by halvings (the asymptotic range), three
    step sizes; errors stay far above float64 round-off."""
    norm = torch.linalg.matrix_norm(ode.A, ord=2).item()
    n0 = 2 ** max(0, math.ceil(math.log2(4 * norm)))
    res = sft.assert_order(name, ode, steps=(n0, 2 * n0, 4 * n0))
    assert not res.notes


@pytest.mark.parametrize("spec", ["rk4", sf.solvers.get("rk4"), sf.solvers.get("rk4")()],
                         ids=["name", "class", "instance"])
def test_assert_order_takes_a_name_a_class_or_an_instance(spec: object) -> None:
    res = sft.assert_order(spec)
    assert res.solver == "rk4" and res.expected == 4


def test_assert_order_passes_a_users_rk_tableau() -> None:
    res = sft.assert_order(Ralston)
    assert res.solver == "ralston" and abs(res.order - 2) < 0.05


def test_assert_order_passes_a_users_sde_solver_and_defaults_to_the_verify_problems() -> None:
    """UserEM on GBM(1, 1), dt = 2^-5..2^-9 (defaults), n = 1000, seed 0: strong 0.5; weak
    order on GBM(0.5, 0.5), phi = x^2, n = 20000, seed 0: 1."""
    res = sft.assert_order(UserEM(), n_paths=1000, seed=0)
    assert res.problem.startswith("GBM") and res.mode == "strong"
    weak = sft.assert_order(UserEM, mode="weak", n_paths=20000, seed=0)
    assert weak.mode == "weak"


def test_assert_order_picks_the_additive_problem_for_additive_only_solvers() -> None:
    """sra1 cannot take GBM's diagonal noise: the default is dX = -sin X dt + 2 dW
    (dt = 2^-3..2^-7, n = 500, seed 0)."""
    res = sft.assert_order("sra1", n_paths=500, seed=0)
    assert res.problem.startswith("SineDrift")


def test_assert_order_fails_loudly() -> None:
    with pytest.raises(AssertionError, match="order check failed") as info:
        sft.assert_order("euler", expected=2.0)
    assert "local orders" in str(info.value)
    # the broken scheme does not converge to the solution: strong order ~0 (n = 400, seed 0)
    with pytest.raises(AssertionError, match="order check failed"):
        sft.assert_order(BrokenEM(), n_paths=400, seed=0)
    with pytest.raises(ValueError, match="mode"):
        sft.assert_order("euler_maruyama", mode="sideways")


# ------------------------------------------------------------------------------ assert_moments
def test_assert_moments_passes_builtin_and_user_solvers() -> None:
    """Default reference: the 2-d LinearSDE of `sdeflow verify` (diagonal-noise version for
    solvers without general noise), 64 steps, n = 20000, seed 0, scheme bias probed from the
    solver's own step function."""
    for spec in ("euler_maruyama", UserEM):
        res = sft.assert_moments(spec, steps=64, n_paths=20000, seed=0)
        assert res.bias.startswith("scheme")


@settings(max_examples=5, deadline=None, derandomize=True)
@given(sft.ou_processes(dim=(1, 2)))
def test_assert_moments_on_random_ou_processes(ou: an.OrnsteinUhlenbeck) -> None:
    """Random OU (derandomized), UserEM, 32 steps, n = 20000 paths, seed 1."""
    sft.assert_moments(UserEM(), ou, steps=32, n_paths=20000, seed=1)


def test_assert_moments_catches_a_wrong_diffusion() -> None:
    """BrokenEM's variance is 0.81 of the right one. With the default scheme bias, its own
    discrete moments would match its Monte Carlo; the exact bias-convergence check catches it
    (the bias tends to -19% of the variance, not 0). Without a bias (n = 20000, seed 0) the
    variance is off by far more than 4 s.e.; the p-value requirement fails too."""
    ou = an.OrnsteinUhlenbeck(1.0, 1.0)
    with pytest.raises(AssertionError, match="do not converge"):
        sft.assert_moments(BrokenEM(), ou, n_paths=20000, seed=0)
    with pytest.raises(AssertionError, match="moment check failed"):
        sft.assert_moments(BrokenEM(), ou, n_paths=20000, seed=0, bias=None)
    with pytest.raises(AssertionError, match="required p"):
        sft.assert_moments(BrokenEM(), ou, n_paths=20000, seed=0, bias=None, steps=256,
                           n_sigma=100.0, min_p_value=1e-3)
