"""Milstein(derivative="autograd"): parameter gradients are right when x0 does not require
grad (the usual training setup), and additive noise (g independent of x) does not crash.

One GBM step from x0 = 1 with a fixed increment dW = 0.3, h = 0.1, float64: the loss is the
state after the step; its derivative in sigma is compared with a central finite difference.
"""

from __future__ import annotations

import torch

import sdeflow as sf

F64 = torch.float64


def one_step(sigma: torch.Tensor, x0: torch.Tensor, derivative: str) -> torch.Tensor:
    sde = sf.SDE(lambda t, x: 0.5 * x, lambda t, x: sigma * x)
    bm = sf.BrownianPath((1,), seed=0, dtype=F64)
    sol = sf.solve(sde, x0, (0.0, 0.1), solver=sf.solvers.Milstein(derivative=derivative),
                   steps=1, brownian=bm)
    return sol.x_final.sum()


def test_parameter_gradient_matches_finite_differences_with_and_without_x0_grad() -> None:
    for x_grad in (False, True):
        sigma = torch.tensor(0.7, dtype=F64, requires_grad=True)
        x0 = torch.ones(1, dtype=F64, requires_grad=x_grad)
        (g,) = torch.autograd.grad(one_step(sigma, x0, "autograd"), sigma)
        eps = 1e-6
        with torch.no_grad():
            fd = (one_step(sigma + eps, x0, "autograd") - one_step(sigma - eps, x0,
                                                                    "autograd")) / (2 * eps)
        assert abs(float(g) - float(fd)) < 1e-8 * max(1.0, abs(float(fd))), (x_grad, g, fd)


def test_autograd_milstein_on_additive_noise() -> None:
    sde = sf.SDE(lambda t, x: -x, lambda t, x: 0.5 * torch.ones_like(x), noise="additive")
    x0 = torch.ones(4, 2, dtype=F64)
    a = sf.solve(sde, x0, (0.0, 1.0), solver=sf.solvers.Milstein(derivative="autograd"),
                 steps=8, seed=3)
    b = sf.solve(sde, x0, (0.0, 1.0), solver="euler_maruyama", steps=8, seed=3)
    # L = J_g g = 0: Milstein is Euler-Maruyama on additive noise
    assert torch.allclose(a.x_final, b.x_final, rtol=0, atol=1e-14)
