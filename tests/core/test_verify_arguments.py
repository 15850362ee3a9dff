"""Bad arguments to the verification kit fail before any work, naming the argument.

Strategies of ``sdeflow.testing`` check their bounds when they are built, not when hypothesis
first draws from them.
"""

from __future__ import annotations

import pytest

import sdeflow as sf
from sdeflow import testing as sft
from sdeflow import verify

GBM = sf.analytic.GeometricBrownianMotion(1.0, 1.0)


def _boom(*args: object, **kwargs: object) -> None:
    raise AssertionError("work started before the arguments were checked")


@pytest.fixture
def no_solves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any solve raises: a check that passes only if it fails first."""
    for mod in (verify.ode, verify.sde_order, verify.moment_checks, verify.tolerance):
        monkeypatch.setattr(mod, "solve", _boom)


def test_run_suite_rejects_a_string(no_solves: None) -> None:
    with pytest.raises(TypeError, match=r"solvers: .*\['rk4'\]"):
        verify.run_suite("rk4")


def test_run_suite_rejects_unknown_names_before_running(no_solves: None) -> None:
    with pytest.raises(ValueError, match="solver: unknown solver 'nope'"):
        verify.run_suite(["rk4", "nope"])
    with pytest.raises(TypeError, match="quick"):
        verify.run_suite(["rk4"], quick="yes")
    with pytest.raises(TypeError, match="progress"):
        verify.run_suite(["rk4"], progress=3)


@pytest.mark.parametrize("level", ["x", 0.0, 1.0, 1.5, True, None])
def test_ci_level_is_checked(no_solves: None, level: object) -> None:
    with pytest.raises(ValueError, match="ci_level"):
        verify.ode_order("rk4", ci_level=level)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ci_level"):
        verify.strong_order("milstein", GBM, ci_level=level)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ci_level"):
        verify.weak_order("milstein", GBM, ci_level=level)  # type: ignore[arg-type]
    lin = verify.default_suite()["linear"]
    with pytest.raises(ValueError, match="ci_level"):
        verify.bias_order("euler_maruyama", lin, ci_level=level)  # type: ignore[arg-type]


@pytest.mark.parametrize("tols", ["abc", 1e-3, [1e-3], [1e-3, "x"], [1e-3, -1.0],
                                  [1e-3, float("inf")], [True, False]])
def test_tols_are_checked(no_solves: None, tols: object) -> None:
    with pytest.raises((TypeError, ValueError), match="tols"):
        verify.tolerance_proportionality("dopri5", tols=tols)  # type: ignore[arg-type]
    with pytest.raises((TypeError, ValueError), match="tols"):
        verify.sde_tolerance_order("adaptive_milstein", tols=tols)  # type: ignore[arg-type]


def test_tolerance_proportionality_other_arguments(no_solves: None) -> None:
    with pytest.raises(ValueError, match="slope_range"):
        verify.tolerance_proportionality("dopri5", slope_range=(1.3, 0.7))
    with pytest.raises(ValueError, match="slope_range"):
        verify.tolerance_proportionality("dopri5", slope_range="ab")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_ratio"):
        verify.tolerance_proportionality("dopri5", max_ratio=-1.0)
    with pytest.raises(ValueError, match="solver: expected an adaptive ODE solver"):
        verify.tolerance_proportionality("rk4")
    with pytest.raises(ValueError, match="problem"):
        verify.tolerance_proportionality("dopri5", problem="nope")


def test_discrete_moments_rejects_an_ode_solver(no_solves: None) -> None:
    lin = verify.default_suite()["linear"]
    with pytest.raises(ValueError, match="solver"):
        verify.discrete_moments("rk4", lin, 1.0, 8, lin.default_x0())


@pytest.mark.parametrize("call", [
    lambda: sft.stable_matrices(decay=(-1.0, 1.0)),
    lambda: sft.stable_matrices(decay=(0.0, 1.0)),
    lambda: sft.stable_matrices(decay="ab"),
    lambda: sft.stable_matrices(decay=(1.0, float("inf"))),
    lambda: sft.stable_matrices(rotation=(2.0, 1.0)),
    lambda: sft.linear_odes(decay=(float("nan"), 1.0)),
    lambda: sft.linear_sdes(decay=(-1.0, 1.0)),
    lambda: sft.linear_sdes(rotation=(3.0, 1.0)),
    lambda: sft.linear_sdes(dim=(0, 2)),
    lambda: sft.linear_sdes(scale=(-1.0, 1.0)),
    lambda: sft.linear_sdes(m=(2, 1)),
    lambda: sft.linear_sdes(noise=()),
    lambda: sft.linear_sdes(noise="diagonal"),
    lambda: sft.ou_processes(theta=(-1.0, 1.0)),
    lambda: sft.ou_processes(sigma=(-1.0, 1.0)),
    lambda: sft.gbms(sigma=(-0.5, 1.0)),
    lambda: sft.gbms(mu=(1, "x")),
])
def test_strategies_check_bounds_when_built(call: object) -> None:
    """The error comes from building the strategy, naming the argument."""
    with pytest.raises(ValueError) as info:
        call()  # type: ignore[operator]
    name = str(info.value).split(":")[0]
    assert name in ("decay", "rotation", "dim", "scale", "m", "noise", "theta", "sigma", "mu")


def test_assert_helpers_check_arguments(no_solves: None) -> None:
    with pytest.raises(ValueError, match="mode"):
        sft.assert_order("milstein", mode="medium")
    with pytest.raises(ValueError, match="min_p_value"):
        sft.assert_moments("euler_maruyama", min_p_value=2.0)
