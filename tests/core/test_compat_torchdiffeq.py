"""``sdeflow.compat.odeint`` / ``odeint_adjoint`` on torchdiffeq's own test problems.

Ported from rtqichen/torchdiffeq ``tests/problems.py`` (ConstantODE, SineODE, LinearODE,
``construct_problem``: t in [1, 8], 10 points, forward and reversed), ``tests/odeint_tests.py``
(relative-error thresholds per method and problem), ``tests/gradient_tests.py`` (gradcheck of
odeint and odeint_adjoint w.r.t. y0 and t on ConstantODE; adjoint-vs-odeint gradients with
eps 1e-12 / 1e-5 / 5e-3; TestCompareAdjointGradient with eps (3e-4, 1e-4, 2e-3)). The problems
are rewritten, not copied; the thresholds are theirs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torchdiffeq

from sdeflow import compat

torch.set_num_threads(1)


class ConstantODE(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.2))
        self.b = torch.nn.Parameter(torch.tensor(3.0))

    def forward(self, t, y):
        return self.a + (y - (self.a * t + self.b)) ** 5

    def y_exact(self, t):
        return self.a * t + self.b


class SineODE(torch.nn.Module):
    def forward(self, t, y):
        return 2 * y / t + t ** 4 * torch.sin(2 * t) - t ** 2 + 4 * t ** 3

    def y_exact(self, t):
        return (-0.5 * t ** 4 * torch.cos(2 * t) + 0.5 * t ** 3 * torch.sin(2 * t)
                + 0.25 * t ** 2 * torch.cos(2 * t) - t ** 3 + 2 * t ** 4
                + (math.pi - 0.25) * t ** 2)


class LinearODE(torch.nn.Module):
    def __init__(self, dim: int = 10) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.dim = dim
        u = torch.randn(dim, dim, generator=g) * 0.1
        self.A = torch.nn.Parameter(2 * u - (u + u.T))
        self.initial_val = np.ones((dim, 1))

    def forward(self, t, y):
        return torch.mm(self.A, y.reshape(self.dim, 1)).reshape(-1)

    def y_exact(self, t):
        a = self.A.detach().cpu().numpy()
        out = [np.matmul(scipy.linalg.expm(a * ti), self.initial_val).reshape(-1)
               for ti in t.detach().cpu().numpy()]
        return torch.tensor(np.stack(out)).to(t)


PROBLEMS = {"constant": ConstantODE, "linear": LinearODE, "sine": SineODE}
FIXED = ("euler", "midpoint", "heun2", "heun3", "rk4")
ADAPTIVE = ("adaptive_heun", "bosh3", "dopri5", "tsit5")


def construct_problem(ode="constant", reverse=False, dtype=torch.float64, npts=10):
    f = PROBLEMS[ode]().to(dtype=dtype)
    t = torch.linspace(1, 8, npts, dtype=torch.float64, requires_grad=True)
    sol = f.y_exact(t).to(dtype)
    if reverse:
        t = t.flip(0).clone().detach()
        sol = sol.flip(0).clone().detach()
    return f, sol[0].detach().requires_grad_(True), t, sol


def rel_error(true, est):
    return ((true - est) / true).abs().max()


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", FIXED + ADAPTIVE)
def test_odeint_exact_solutions(reverse, dtype, method):
    problems = PROBLEMS if method in ADAPTIVE else ("constant",)
    if method == "adaptive_heun":
        # second order at rtol 1e-7: SineODE takes ~10^4 steps (20 s here); the others suffice
        problems = ("constant", "linear")
    for ode in problems:
        eps = (4e-3 if method in ("adaptive_heun", "bosh3") else 2e-3 if ode == "linear"
               else 3e-4)
        f, y0, t, sol = construct_problem(ode, reverse, dtype)
        y = compat.odeint(f, y0, t.to(dtype), method=method)
        assert rel_error(sol, y) < eps, (ode, method)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("ode", list(PROBLEMS))
def test_odeint_adjoint_exact_solutions(reverse, ode):
    for dtype in (torch.float32, torch.float64):
        eps = 2e-3 if ode == "linear" else 1e-4
        f, y0, t, sol = construct_problem(ode, reverse, dtype)
        y = compat.odeint_adjoint(f, y0, t.to(dtype))
        assert rel_error(sol, y) < eps


@pytest.mark.parametrize("method", FIXED + ("dopri5", "bosh3", "adaptive_heun"))
@pytest.mark.parametrize("adjoint", [False, True])
def test_gradcheck_y0_and_t(method, adjoint):
    f, y0, t, _ = construct_problem()
    fn = compat.odeint_adjoint if adjoint else compat.odeint
    assert torch.autograd.gradcheck(lambda y0, t: fn(f, y0, t, method=method), (y0, t))


@pytest.mark.parametrize("ode, eps", [("constant", 1e-12), ("linear", 1e-5), ("sine", 5e-3)])
@pytest.mark.parametrize("t_grad", [True, False])
def test_adjoint_against_odeint(ode, eps, t_grad):
    f, y0, t, _ = construct_problem(ode)
    t.requires_grad_(t_grad)
    ys = compat.odeint(f, y0, t, rtol=1e-9, atol=1e-12)
    gradys = torch.rand(ys.shape, dtype=ys.dtype, generator=torch.Generator().manual_seed(0))
    ys.backward(gradys)
    reg = [y0.grad.clone()] + ([t.grad.clone()] if t_grad else []) + [
        p.grad.clone() for p in f.parameters()]
    y0.grad = None
    t.grad = None
    for p in f.parameters():
        p.grad = None
    ys = compat.odeint_adjoint(f, y0, t, rtol=1e-9, atol=1e-12)
    ys.backward(gradys)
    adj = [y0.grad] + ([t.grad] if t_grad else []) + [p.grad for p in f.parameters()]
    for r, a in zip(reg, adj):
        assert (r - a).abs().max() < eps


def test_compare_adjoint_gradient_against_dopri5():
    class Odefunc(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.A = torch.nn.Parameter(torch.tensor([[-0.1, 2.0], [-2.0, -0.1]]))
            self.unused_module = torch.nn.Linear(2, 5)

        def forward(self, t, y):
            return torch.mm(y ** 3, self.A)

    def problem():
        y0 = torch.tensor([[2.0, 0.0]], requires_grad=True)
        t = torch.linspace(0.0, 25.0, 10, requires_grad=True)
        torch.manual_seed(0)
        return Odefunc(), y0, t

    func, y0, t = problem()
    ys = compat.odeint_adjoint(func, y0, t, method="dopri5")
    gradys = torch.rand(ys.shape, generator=torch.Generator().manual_seed(1)) * 0.1
    ys.backward(gradys)
    adj = (y0.grad, t.grad, func.A.grad)
    assert func.unused_module.weight.grad.abs().max() == 0
    func2, y0b, tb = problem()
    func2.load_state_dict(func.state_dict())
    ys = compat.odeint(func2, y0b, tb, method="dopri5")
    ys.backward(gradys)
    assert (y0b.grad - adj[0]).abs().max() < 3e-4
    assert (tb.grad - adj[1]).abs().max() < 1e-4
    assert (func2.A.grad - adj[2]).abs().max() < 2e-3


# --------------------------------------------------------------------- side by side


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun2", "heun3", "rk4"])
def test_fixed_grid_methods_equal_torchdiffeq(method):
    f, y0, t, _ = construct_problem("sine")
    a = torchdiffeq.odeint(f, y0, t.detach(), method=method)
    b = compat.odeint(f, y0, t.detach(), method=method)
    torch.testing.assert_close(b, a, rtol=1e-13, atol=1e-12)
    opts = {"step_size": 0.25}
    a = torchdiffeq.odeint(f, y0, t.detach()[[0, -1]], method=method, options=opts)
    b = compat.odeint(f, y0, t.detach()[[0, -1]], method=method, options=opts)
    torch.testing.assert_close(b, a, rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
@pytest.mark.parametrize("ode", list(PROBLEMS))
def test_adaptive_methods_match_torchdiffeq_to_tolerance(method, ode):
    """Both solutions lie within the same distance of the exact one (global errors of a few
    times rtol); so do they of each other."""
    f, y0, t, sol = construct_problem(ode)
    rtol, atol = 1e-7, 1e-9
    a = torchdiffeq.odeint(f, y0, t.detach(), method=method, rtol=rtol, atol=atol)
    b = compat.odeint(f, y0, t.detach(), method=method, rtol=rtol, atol=atol)
    err_a = rel_error(sol, a)
    err_b = rel_error(sol, b)
    assert err_b < max(10 * err_a, 1e3 * rtol)
    assert rel_error(a, b) < max(10 * err_a, 1e3 * rtol)


def test_tuple_state_and_options():
    def func(t, y):
        x, v = y
        return v, -x

    y0 = (torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64))
    t = torch.linspace(0, 2 * math.pi, 5, dtype=torch.float64)
    x, v = compat.odeint(func, y0, t, method="dopri5",
                         options={"first_step": 0.01, "jump_t": [1.0], "max_num_steps": 5000})
    torch.testing.assert_close(x[:, 0], torch.cos(t), rtol=0, atol=1e-6)
    torch.testing.assert_close(v[:, 0], -torch.sin(t), rtol=0, atol=1e-6)
    x, v = compat.odeint(func, y0, t, method="rk4", options={"step_size": 0.01, "perturb": True})
    torch.testing.assert_close(x[:, 0], torch.cos(t), rtol=0, atol=1e-8)


def test_bad_input():
    f, y0, t, _ = construct_problem()
    with pytest.raises(ValueError, match="method.*dopri5"):
        compat.odeint(f, y0, t, method="dopri8")
    with pytest.raises(ValueError, match="options.*step_size"):
        compat.odeint(f, y0, t, method="rk4", options={"grid_constructor": None})
    with pytest.raises(ValueError, match="adjoint_params"):
        compat.odeint_adjoint(lambda t, y: -y, y0, t)
    with pytest.raises(ValueError, match="event_fn"):
        compat.odeint(f, y0, t, event_fn=lambda t, y: y)
    with pytest.raises(ValueError, match="t"):
        compat.odeint(f, y0, t[:1])
