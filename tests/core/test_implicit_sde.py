"""The drift-implicit theta-method for Ito SDEs: mean-square stability, strong and weak
order."""

from __future__ import annotations

import math

import pytest
import torch

import sdeflow as sf
from sdeflow.verify import fit_order

torch.set_num_threads(1)
D64 = torch.float64


# ---------------------------------------------------------------------- drift-implicit SDE
def test_implicit_em_mean_square_stable() -> None:
    """dX = -50 X dt + X dW, h = 0.1: explicit EM's second moment grows by (1 + h l)^2 + h
    mu^2 = 16.1 per step; the drift-implicit scheme (theta = 1) decays by (1 + h mu^2) /
    (1 - h l)^2 = 0.0306 per step. 4,000 paths, seed 0, 20 steps."""
    sde = sf.SDE(lambda t, x: -50.0 * x, lambda t, x: x, noise="diagonal")
    x0 = torch.ones(4000, 1, dtype=D64)
    imp = sf.solve(sde, x0, (0.0, 2.0), solver="implicit_euler_maruyama", steps=20, seed=0)
    em = sf.solve(sde, x0, (0.0, 2.0), solver="euler_maruyama", steps=20, seed=0,
                  on_failure="return")
    m_imp = float((imp.x_final**2).mean())
    assert m_imp < 1e-20
    assert em.status == "nonfinite" or float((em.x_final**2).mean()) > 1e15


@pytest.mark.parametrize("theta", [1.0, 0.5])
def test_implicit_em_strong_order_additive(theta: float) -> None:
    """Ornstein--Uhlenbeck dX = -X dt + 0.5 dW (additive: strong order 1), errors against a
    fine drift-implicit reference on the same Brownian path; 500 paths, seed 1."""
    sde = sf.SDE(lambda t, x: -x, lambda t, x: torch.full_like(x, 0.5), noise="additive")
    n = 500
    bm = sf.BrownianPath((n, 1), t0=0.0, t1=1.0, seed=1, dtype=D64)
    x0 = torch.ones(n, 1, dtype=D64)
    slv = sf.solvers.ImplicitEulerMaruyama(theta=theta)
    ref = sf.solve(sde, x0, (0.0, 1.0), solver=slv, steps=2048, brownian=bm).x_final
    steps = (8, 16, 32, 64)
    errs = [float((sf.solve(sde, x0, (0.0, 1.0), solver=slv, steps=k, brownian=bm).x_final
                   - ref).abs().mean()) for k in steps]
    p = fit_order([1.0 / k for k in steps], errs)
    expected = 1.0 if theta == 1.0 else 2.0  # trapezoid drift, additive noise: no noise error
    if theta == 1.0:
        assert abs(p - expected) <= 0.15, (p, errs)
    else:
        assert p >= 1.0 - 0.15, (p, errs)


def test_implicit_em_weak_order_gbm() -> None:
    """E[X_T] for GBM dX = mu X dt + sigma X dW is x0 e^{mu T}; the theta = 1 scheme's mean
    is exactly x0 (1 - mu h)^{-n} (its noise term has mean zero), so the weak error of the
    mean falls as O(h) -- checked against that closed form with 20,000 paths, seed 2."""
    mu, sig = -1.0, 0.5
    sde = sf.SDE(lambda t, x: mu * x, lambda t, x: sig * x, noise="diagonal")
    n = 20_000
    for k in (4, 16):
        sol = sf.solve(sde, torch.ones(n, 1, dtype=D64), (0.0, 1.0),
                       solver="implicit_euler_maruyama", steps=k, seed=2)
        mean = float(sol.x_final.mean())
        exact_scheme = (1 - mu / k) ** (-k)
        se = float(sol.x_final.std()) / math.sqrt(n)
        assert abs(mean - exact_scheme) < 4 * se
