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


def _neural_milstein(x0: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, steps: int,
                     kind: str = "ito") -> torch.Tensor:
    """A tiny diagonal SDE whose diffusion mixes x through a weight (``J_g`` not diagonal)."""
    sde = sf.SDE(lambda t, x: -x + 0.3 * torch.tanh(x @ w1),
                 lambda t, x: 0.4 * torch.sigmoid(x @ w2) * (1 + 0.1 * t), kind=kind)
    bm = sf.BrownianPath((2, 3), seed=11, dtype=F64)
    sol = sf.solve(sde, x0, (0.0, 1.0), solver=sf.solvers.Milstein(derivative="autograd"),
                   steps=steps, brownian=bm)
    return sol.x_final


def _inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(5)
    x0 = (0.5 * torch.randn(2, 3, generator=g, dtype=F64)).requires_grad_(True)
    w1 = (0.5 * torch.randn(3, 3, generator=g, dtype=F64)).requires_grad_(True)
    w2 = (0.5 * torch.randn(3, 3, generator=g, dtype=F64)).requires_grad_(True)
    return x0, w1, w2


def test_autograd_milstein_gradcheck_through_many_steps() -> None:
    """gradcheck (float64, finite differences, default tolerances) of the final state in x0 and
    both weights through 12 Milstein steps, Ito and Stratonovich: the step's ``J_g g`` product is
    formed on a detached leaf and re-attached to x's graph, so x's gradient must still include
    its path through g and J_g g."""
    for kind in ("ito", "stratonovich"):
        assert torch.autograd.gradcheck(
            lambda a, b, c, k=kind: _neural_milstein(a, b, c, 12, k), _inputs())


def test_autograd_milstein_gradgradcheck() -> None:
    """Second derivatives (create_graph backprop through the re-attached product)."""
    assert torch.autograd.gradgradcheck(lambda a, b, c: _neural_milstein(a, b, c, 4),
                                        _inputs())


def test_autograd_milstein_values_unchanged_by_the_reattachment() -> None:
    """With and without x0 requiring grad the forward values agree bit for bit, and the x0
    gradient equals the one of the finite-difference-free reference: Milstein written out by hand
    with torch.func.jacrev for J_g (8 steps)."""
    x0, w1, w2 = _inputs()
    a = _neural_milstein(x0, w1, w2, 8)
    b = _neural_milstein(x0.detach(), w1.detach(), w2.detach(), 8)
    assert torch.equal(a.detach(), b)
    bm = sf.BrownianPath((2, 3), seed=11, dtype=F64)
    grid = [k / 8 for k in range(9)]
    dws, _ = bm.grid(grid, space_time=False)
    x = x0
    for k in range(8):
        t = torch.tensor(grid[k], dtype=F64)

        def gfun(y: torch.Tensor, t: torch.Tensor = t) -> torch.Tensor:
            return 0.4 * torch.sigmoid(y @ w2) * (1 + 0.1 * t)

        gx = gfun(x)
        jac = torch.func.vmap(torch.func.jacrev(gfun))(x)  # [2, 3, 3]
        lg = torch.einsum("bij,bj->bi", jac, gx)
        dw = dws[k]
        x = x + (1 / 8) * (-x + 0.3 * torch.tanh(x @ w1)) + gx * dw + 0.5 * lg * (dw * dw - 1 / 8)
    torch.testing.assert_close(a, x, rtol=1e-13, atol=1e-14)
    ga = torch.autograd.grad(a.sum(), (x0, w1, w2))
    gb = torch.autograd.grad(x.sum(), (x0, w1, w2))
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-13)
