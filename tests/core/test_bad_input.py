"""Issue 8's audit of bad input: each case is an exception naming the argument, raised before
any work (or, for field outputs, at the call that went wrong, with its time)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import sdeflow as sf

ODE = sf.ODE(lambda t, x: -x)
SDE_ = sf.SDE(lambda t, x: -x, lambda t, x: torch.ones_like(x))
X = torch.ones(2)


def calls_counted() -> tuple[sf.ODE, list[int]]:
    n = [0]

    def u(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        n[0] += 1
        return -x

    return sf.ODE(u), n


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(t_span={0.0, 1.0}), TypeError, "t_span"),
    (dict(t_span=1.0), TypeError, "t_span"),
    (dict(t_span=(None, 1.0)), TypeError, "t_span"),
    (dict(t_span=(0.0, 1j)), TypeError, "t_span"),
    (dict(t_span=("0", 1.0)), TypeError, "t_span"),
    (dict(t_span=(-1e308, 1e308)), ValueError, "t_span.*overflow"),
    (dict(t_span=(1e8, 1e8 + 1)), ValueError, "t_span.*float32"),
    (dict(ts=torch.linspace(0, 1, 3).requires_grad_()), ValueError, "ts.*detach"),
    (dict(ts=torch.zeros(2, 2)), ValueError, "ts: expected a 1-D"),
    (dict(ts=torch.zeros(3, device="meta")), ValueError, "ts: a meta tensor"),
    (dict(ts=torch.linspace(0, 1, 11)), None, None),  # fine
    (dict(t_span=torch.linspace(0, 1, 11)), ValueError, "t_span.*ts="),
])
def test_times(kwargs: dict, exc: type | None, match: str | None) -> None:
    ode, n = calls_counted()
    kwargs.setdefault("steps", 2)
    if exc is None:
        sf.solve(ode, X, **kwargs)
        return
    with pytest.raises(exc, match=match):
        sf.solve(ode, X, **kwargs)
    assert n[0] == 0  # no work was done


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(dt=1e-300), ValueError, "dt: 1e-300 makes"),
    (dict(dt=True), ValueError, "dt"),
    (dict(dt=torch.ones(2)), ValueError, "dt: expected a number"),
    (dict(rtol=math.inf), ValueError, "rtol"),
    (dict(atol=math.inf), ValueError, "atol"),
    (dict(rtol="1e-3"), TypeError, "rtol"),
    (dict(steps=2, save_all="no"), ValueError, "save_all"),
    (dict(steps=2, dense=1), ValueError, "dense"),
    (dict(steps=10**9), ValueError, "steps"),
    (dict(steps=2, controller=sf.PIController()), ValueError, "controller"),
    (dict(controller=sf.ConstantController(steps=2), rtol=1e-3), ValueError, "controller"),
    (dict(steps=2, bogus=1), ValueError, "bogus"),
])
def test_step_and_tolerance_arguments(kwargs: dict, exc: type, match: str) -> None:
    ode, n = calls_counted()
    with pytest.raises(exc, match=match):
        sf.solve(ode, X, (0.0, 1.0), **kwargs)
    assert n[0] == 0


@pytest.mark.parametrize("seed,exc", [("a", TypeError), (1.5, TypeError), (True, TypeError),
                                      (torch.tensor(1), TypeError), (2**70, ValueError),
                                      (-1, ValueError)])
@pytest.mark.parametrize("mode", [dict(steps=2), dict(rtol=1e-2)])
def test_seeds_fixed_and_adaptive(seed: object, exc: type, mode: dict) -> None:
    with pytest.raises(exc, match="seed"):
        sf.solve(SDE_, X, (0.0, 1.0), seed=seed, **mode)


def test_fields() -> None:
    with pytest.raises(TypeError, match="vector_field.*two arguments"):
        sf.ODE(lambda x: -x)
    with pytest.raises(TypeError, match="drift.*two arguments"):
        sf.SDE(lambda x: -x, lambda t, x: x)
    with pytest.raises(TypeError, match="vector_field.*two arguments"):
        sf.solve(lambda x: -x, X, (0.0, 1.0), steps=2)
    # a wrong shape after the first step is caught, with its time
    late = sf.ODE(lambda t, x: -x if float(t) < 0.5 else -x[:1])
    with pytest.raises(ValueError, match=r"vector_field: returned shape \(1,\).*t=0.5"):
        sf.solve(late, X, (0.0, 1.0), steps=4)
    # the wrong device (a meta tensor stands in for another device)
    with pytest.raises(ValueError, match="vector_field: returned a tensor on meta"):
        sf.solve(sf.ODE(lambda t, x: torch.empty_like(x, device="meta")), X, (0.0, 1.0),
                 steps=2)
    # general noise whose m changes
    gen = sf.SDE(lambda t, x: -x,
                 lambda t, x: torch.ones(*x.shape, 2 if float(t) < 0.5 else 3),
                 noise="general")
    with pytest.raises(ValueError, match="diffusion: general noise: returned m=3"):
        sf.solve(gen, torch.ones(3, 2), (0.0, 1.0), steps=4, seed=0)
    # general noise disagreeing with the path
    gen2 = sf.SDE(lambda t, x: -x, lambda t, x: torch.ones(*x.shape, 2), noise="general")
    with pytest.raises(ValueError, match="diffusion: general noise: returned m=2"):
        sf.solve(gen2, torch.ones(3, 2), (0.0, 1.0), steps=4,
                 brownian=sf.BrownianPath((3, 3), dtype=torch.float32))
    # additive noise that depends on x
    bad = sf.SDE(lambda t, x: -x, lambda t, x: x, noise="additive")
    with pytest.raises(ValueError, match="diffusion: noise='additive' needs g"):
        sf.solve(bad, X, (0.0, 1.0), steps=2, seed=0)


def test_brownian_arguments() -> None:
    with pytest.raises(TypeError, match="brownian: expected"):
        sf.solve(SDE_, X, (0.0, 1.0), steps=2, brownian=torch.ones(2))
    with pytest.raises(ValueError, match="brownian: an ODE"):
        sf.solve(ODE, X, (0.0, 1.0), steps=2, brownian=sf.BrownianPath((2,)))
    with pytest.raises(ValueError, match="brownian: the path's dtype"):
        sf.solve(SDE_, X.double(), (0.0, 1.0), steps=2,
                 brownian=sf.BrownianPath((2,), dtype=torch.float32))
    with pytest.raises(ValueError, match="seed: an ODE"):
        sf.solve(ODE, X, (0.0, 1.0), steps=2, seed=0)


def test_float32_tolerance_warning_only_below_resolution() -> None:
    x32 = torch.ones(2, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sf.solve(ODE, x32, (0.0, 1.0), rtol=1e-6, atol=1e-6)  # resolvable: no warning
    with pytest.warns(RuntimeWarning, match="rtol=1e-08 is below"):
        sf.solve(ODE, x32, (0.0, 1.0), rtol=1e-8, atol=1e-6, max_steps=50,
                 on_failure="return")


def test_inference_mode_autograd_milstein_says_what_to_do() -> None:
    gbm = sf.SDE(lambda t, x: 0.1 * x, lambda t, x: 0.2 * x)
    with torch.inference_mode(), pytest.raises(ValueError, match="torch.no_grad"):
        sf.solve(gbm, X, (0.0, 1.0), steps=2, seed=0,
                 solver=sf.solvers.Milstein(derivative="autograd"))
    with torch.no_grad():  # the documented alternative works
        sf.solve(gbm, X, (0.0, 1.0), steps=2, seed=0,
                 solver=sf.solvers.Milstein(derivative="autograd"))
