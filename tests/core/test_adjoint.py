"""Gradient strategies of ``sf.solve(..., adjoint=...)`` (issue 11).

* checkpoint and reversible gradients equal backpropagation through the same steps to 1e-10
  (relative, float64): fixed and adaptive, ODE and SDE, for x0 and for parameters;
* backsolve gradients converge to them as the steps shrink, at the solver's order;
* ``torch.autograd.gradcheck`` on small problems;
* time gradients; bad input naming the argument.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sdeflow as sf

torch.set_num_threads(1)
DT = torch.float64


class Field(torch.nn.Module):
    """u(t, x) = W2 tanh(W1 x + b) cos(t): a small neural vector field."""

    def __init__(self, d: int = 3, width: int = 8, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.nn.Parameter(torch.randn(width, d, generator=g, dtype=DT) * 0.5)
        self.b = torch.nn.Parameter(torch.randn(width, generator=g, dtype=DT) * 0.1)
        self.w2 = torch.nn.Parameter(torch.randn(d, width, generator=g, dtype=DT) * 0.5)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ self.w1.T + self.b) @ self.w2.T * torch.cos(t)


class DiagSDE(torch.nn.Module):
    """dX = a sin(X) dt + b cos(X) dW, diagonal noise, parameters a, b."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor([-0.5, 0.3], dtype=DT))
        self.b = torch.nn.Parameter(torch.tensor([0.4, 0.2], dtype=DT))

    def drift(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.a * torch.sin(x)

    def diffusion(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.b * torch.cos(x)


def _grads(problem, params, x0, **kw) -> torch.Tensor:
    sol = sf.solve(problem, x0, **kw)
    w = torch.linspace(0.5, 1.5, sol.ys.numel(), dtype=DT).view_as(sol.ys)
    loss = (w * sol.ys ** 2).sum()
    inputs = [x0, *params] if x0.requires_grad else list(params)
    g = torch.autograd.grad(loss, inputs)
    return torch.cat([v.reshape(-1) for v in g])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


ODE_CASES = [
    dict(solver="rk4", steps=40),
    dict(solver="dopri5", rtol=1e-6, atol=1e-8),
    dict(solver="tsit5", rtol=1e-5, atol=1e-7),
    dict(solver="adams_bashforth3", steps=30),
    dict(solver="midpoint", steps=25, jump_ts=[0.37]),
]


@pytest.mark.parametrize("kw", ODE_CASES, ids=lambda k: k["solver"])
@pytest.mark.parametrize("x0_grad", [True, False])
def test_checkpoint_equals_backprop_ode(kw, x0_grad):
    u = Field()
    x0 = torch.randn(4, 3, dtype=DT, generator=torch.Generator().manual_seed(1))
    x0.requires_grad_(x0_grad)
    ts = torch.linspace(0.0, 1.0, 6, dtype=DT)
    ref = _grads(sf.ODE(u), list(u.parameters()), x0, ts=ts, **kw)
    for c in (None, 1, 3):
        got = _grads(sf.ODE(u), list(u.parameters()), x0, ts=ts, adjoint="checkpoint",
                     checkpoints=c, **kw)
        assert _rel(got, ref) < 1e-10, (kw, c)


def test_checkpoint_save_all_and_backwards_time():
    u = Field()
    x0 = torch.randn(2, 3, dtype=DT, requires_grad=True)
    for kw in (dict(t_span=(1.0, 0.0), steps=17, solver="heun", save_all=True),
               dict(t_span=(0.0, -1.0), rtol=1e-5, atol=1e-7, solver="bosh3")):
        ref = _grads(u, list(u.parameters()), x0, **kw)
        got = _grads(u, list(u.parameters()), x0, adjoint="checkpoint", checkpoints=2, **kw)
        assert _rel(got, ref) < 1e-10


SDE_CASES = [
    ("ito", dict(solver="euler_maruyama", steps=64)),
    ("ito", dict(solver="milstein", steps=64)),
    ("ito", dict(solver=sf.solvers.Milstein(derivative="autograd"), steps=32)),
    ("stratonovich", dict(solver="stochastic_heun", steps=64)),
    ("stratonovich", dict(solver="reversible_heun", steps=64)),
    ("ito", dict(solver="adaptive_milstein", rtol=1e-2, atol=1e-2)),
    ("stratonovich", dict(solver="adaptive_stochastic_heun", rtol=1e-2, atol=1e-2)),
]


@pytest.mark.parametrize("kind, kw", SDE_CASES, ids=lambda v: str(v)[:40])
@pytest.mark.parametrize("noise_source", ["seed", "brownian"])
def test_checkpoint_equals_backprop_sde(kind, kw, noise_source):
    m = DiagSDE()
    sde = sf.SDE(m.drift, m.diffusion, noise="diagonal", kind=kind)
    x0 = torch.full((4, 2), 0.3, dtype=DT, requires_grad=True)
    ts = torch.linspace(0.0, 1.0, 5, dtype=DT)

    def src():
        if noise_source == "seed" and "rtol" not in kw:
            return dict(seed=5)
        return dict(brownian=sf.BrownianPath((4, 2), 0.0, 1.0, seed=5, dtype=DT))

    ref = _grads(sde, list(m.parameters()), x0, ts=ts, **src(), **kw)
    got = _grads(sde, list(m.parameters()), x0, ts=ts, adjoint="checkpoint", checkpoints=3,
                 **src(), **kw)
    assert _rel(got, ref) < 1e-10


def test_checkpoint_sra1_general_and_scalar_noise():
    a = torch.tensor([0.7, -0.4], dtype=DT, requires_grad=True)
    cases = [
        (sf.SDE(lambda t, x: -a * x, lambda t, x: a.abs() * torch.ones_like(x) * (1 + t),
                noise="additive"), "sra1"),
        (sf.SDE(lambda t, x: -a * x, lambda t, x: torch.stack([torch.sin(x), a * x], -1),
                noise="general"), "euler_maruyama"),
        (sf.SDE(lambda t, x: -a * x, lambda t, x: 0.3 * torch.cos(a * x), noise="scalar",
                kind="stratonovich"), "stochastic_heun"),
    ]
    x0 = torch.full((3, 2), 0.5, dtype=DT, requires_grad=True)
    for sde, solver in cases:
        kw = dict(t_span=(0.0, 1.0), steps=40, seed=2, solver=solver)
        ref = _grads(sde, [a], x0, **kw)
        got = _grads(sde, [a], x0, adjoint="checkpoint", adjoint_params=[a], **kw)
        assert _rel(got, ref) < 1e-10


@pytest.mark.parametrize("kind", ["ode", "sde"])
def test_reversible_equals_backprop(kind):
    if kind == "ode":
        u = Field()
        prob, params = sf.ODE(u), list(u.parameters())
        x0 = torch.randn(3, 3, dtype=DT, requires_grad=True)
        kws = [dict(steps=50), dict(rtol=1e-6, atol=1e-8, solver="dopri5")]
        ts = torch.linspace(0.0, 2.0, 5, dtype=DT)
        for kw in kws[:1]:
            ref = _grads(prob, params, x0, ts=ts, step_ts=ts, solver="reversible_heun_ode",
                         **kw)
            got = _grads(prob, params, x0, ts=ts, adjoint="reversible", **kw)
            assert _rel(got, ref) < 1e-10
        return
    m = DiagSDE()
    sde = sf.SDE(m.drift, m.diffusion, noise="diagonal", kind="stratonovich")
    x0 = torch.full((4, 2), 0.3, dtype=DT, requires_grad=True)
    ts = torch.linspace(0.0, 1.0, 5, dtype=DT)
    for steps in (20, 200):
        bm = sf.BrownianPath((4, 2), 0.0, 1.0, seed=9, dtype=DT)
        ref = _grads(sde, list(m.parameters()), x0, ts=ts, steps=steps, brownian=bm,
                     solver="reversible_heun")
        got = _grads(sde, list(m.parameters()), x0, ts=ts, steps=steps, brownian=bm,
                     solver="reversible_heun", adjoint="reversible")
        assert _rel(got, ref) < 1e-10


def test_reversible_heun_inverts_exactly():
    """The inverse step recovers (y, yh) to round-off (as torchsde's test_reversibility)."""
    from sdeflow.solvers.base import Terms
    from sdeflow.solvers.reversible import rev_init, rev_inverse, rev_step

    m = DiagSDE()
    terms = Terms(None, f=m.drift, g=m.diffusion, noise="diagonal", kind="stratonovich")
    y = torch.full((5, 2), 0.2, dtype=DT)
    t = torch.tensor(0.0, dtype=DT)
    st0 = rev_init(terms, t, y)
    path = [(y, st0)]
    gen = torch.Generator().manual_seed(0)
    h = 0.01
    dws = [torch.randn(5, 2, generator=gen, dtype=DT) * math.sqrt(h) for _ in range(100)]
    with torch.no_grad():
        for k, dw in enumerate(dws):
            y, st = path[-1]
            path.append(rev_step(terms, torch.tensor((k + 1) * h, dtype=DT), h, y, st, dw))
        y, st = path[-1]
        for k in range(len(dws) - 1, -1, -1):
            y, st = rev_inverse(terms, torch.tensor(k * h, dtype=DT), h, y, st, dws[k])
            torch.testing.assert_close(y, path[k][0], rtol=1e-12, atol=1e-12)


def test_backsolve_converges_at_the_solver_order_ode():
    """rk4 with n steps: |backsolve - backprop| ~ n^-4 (both are 4th-order accurate)."""
    u = Field(width=6)
    x0 = torch.randn(2, 3, dtype=DT, generator=torch.Generator().manual_seed(3),
                     requires_grad=True)
    errs = []
    ns = (8, 16, 32)
    for n in ns:
        kw = dict(t_span=(0.0, 2.0), steps=n, solver="rk4")
        ref = _grads(u, list(u.parameters()), x0, **kw)
        got = _grads(u, list(u.parameters()), x0, adjoint="backsolve", **kw)
        errs.append(_rel(got, ref))
    slopes = [math.log2(errs[i] / errs[i + 1]) for i in range(len(errs) - 1)]
    assert all(3.5 < s < 4.6 for s in slopes), (errs, slopes)


def test_backsolve_adaptive_gap_shrinks_with_tolerance():
    u = Field()
    x0 = torch.randn(2, 3, dtype=DT, requires_grad=True)
    errs = []
    for tol in (1e-4, 1e-6, 1e-8):
        kw = dict(t_span=(0.0, 2.0), rtol=tol, atol=tol * 1e-2, solver="dopri5")
        ref = _grads(u, list(u.parameters()), x0, **kw)
        got = _grads(u, list(u.parameters()), x0, adjoint="backsolve", **kw)
        errs.append(_rel(got, ref))
    assert errs[0] > 10 * errs[1] > 100 * errs[2], errs
    assert errs[-1] < 1e-6


def test_backsolve_sde_converges_at_strong_order_one():
    """Stochastic Heun forward, adjoint SDE backward on one Brownian path: the gap to
    backprop shrinks like h (strong order 1 of Heun on diagonal noise). Seed 11, batch 64."""
    m = DiagSDE()
    sde = sf.SDE(m.drift, m.diffusion, noise="diagonal", kind="stratonovich")
    x0 = torch.full((64, 2), 0.3, dtype=DT, requires_grad=True)
    errs = []
    ns = (32, 128, 512)
    for n in ns:
        bm = sf.BrownianPath((64, 2), 0.0, 1.0, seed=11, dtype=DT)
        kw = dict(t_span=(0.0, 1.0), steps=n, solver="stochastic_heun", brownian=bm)
        ref = _grads(sde, list(m.parameters()), x0, **kw)
        got = _grads(sde, list(m.parameters()), x0, adjoint="backsolve", **kw)
        errs.append(_rel(got, ref))
    rate = math.log(errs[0] / errs[-1]) / math.log(ns[-1] / ns[0])
    assert 0.75 < rate < 1.4, (errs, rate)


def test_backsolve_sde_ito_matches_backprop_in_the_limit():
    """An Ito problem (converted to Stratonovich for the adjoint): the gap shrinks too."""
    m = DiagSDE()
    sde = sf.SDE(m.drift, m.diffusion, noise="diagonal", kind="ito")
    x0 = torch.full((16, 2), 0.3, dtype=DT, requires_grad=True)
    errs = []
    for n in (64, 1024):
        bm = sf.BrownianPath((16, 2), 0.0, 1.0, seed=4, dtype=DT)
        kw = dict(t_span=(0.0, 1.0), steps=n, solver="milstein", brownian=bm)
        ref = _grads(sde, list(m.parameters()), x0, **kw)
        got = _grads(sde, list(m.parameters()), x0, adjoint="backsolve", **kw)
        errs.append(_rel(got, ref))
    assert errs[1] < errs[0] / 8 and errs[1] < 1e-3, errs


@pytest.mark.parametrize("mode", ["checkpoint", "backsolve", "reversible"])
def test_gradcheck_small_problems(mode):
    a = torch.tensor([0.3, -0.7], dtype=DT, requires_grad=True)
    x0 = torch.tensor([[0.5, -0.2]], dtype=DT, requires_grad=True)
    if mode == "backsolve":
        # the continuous adjoint is the gradient of the flow: tight steps make it match
        kw = dict(t_span=(0.0, 1.0), rtol=1e-10, atol=1e-12, solver="dopri5")
    elif mode == "reversible":
        kw = dict(t_span=(0.0, 1.0), steps=20)
    else:
        kw = dict(t_span=(0.0, 1.0), steps=20, solver="rk4")

    def fn(x0, a):
        ode = sf.ODE(lambda t, x: torch.sin(a * x) - 0.1 * x * t)
        return sf.solve(ode, x0, adjoint=mode, adjoint_params=[a], **kw).ys

    assert torch.autograd.gradcheck(fn, (x0, a), atol=1e-6 if mode == "backsolve" else 1e-8)


def test_gradcheck_sde_checkpoint():
    a = torch.tensor([0.3, -0.7], dtype=DT, requires_grad=True)
    x0 = torch.tensor([[0.5, -0.2]], dtype=DT, requires_grad=True)

    def fn(x0, a):
        sde = sf.SDE(lambda t, x: a * x, lambda t, x: 0.2 * torch.sin(a * x))
        return sf.solve(sde, x0, t_span=(0.0, 1.0), steps=16, seed=1, solver="milstein",
                        adjoint="checkpoint", adjoint_params=[a]).ys

    assert torch.autograd.gradcheck(fn, (x0, a))


@pytest.mark.parametrize("mode", ["backprop", "checkpoint", "backsolve"])
def test_time_gradients(mode):
    """dL/dts against central differences of the exact flow of x' = a x."""
    from sdeflow.adjoint import solve_with

    a = -0.8
    x0 = torch.tensor([1.3], dtype=DT, requires_grad=True)
    ts = torch.tensor([0.2, 0.7, 1.5], dtype=DT, requires_grad=True)
    args = dict(problem=lambda t, x: a * x, x0=x0, t_span=None, ts=ts, solver="dopri5",
                steps=None, dt=None, rtol=1e-10, atol=1e-12, controller=None, seed=None,
                brownian=None, save_all=False, dense=False, step_ts=None, jump_ts=None,
                max_steps=None, dt0=None, on_failure="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ys = solve_with(args, mode).ys
    w = torch.tensor([0.3, -1.0, 2.0], dtype=DT)
    (ys[:, 0] * w).sum().backward()
    # exact: y_i = x0 exp(a (t_i - t_0))
    e = torch.exp(a * (ts.detach() - ts.detach()[0]))
    dt_i = w * a * x0.detach() * e
    exact = dt_i.clone()
    exact[0] = -(dt_i[1:]).sum()
    torch.testing.assert_close(ts.grad, exact, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(x0.grad, (w * e).sum().view(1), rtol=1e-7, atol=1e-9)


@settings(max_examples=15, deadline=None)
@given(steps=st.integers(1, 40), checkpoints=st.integers(1, 50))
def test_checkpoint_any_count_is_exact(steps, checkpoints):
    u = Field(width=4)
    x0 = torch.ones(1, 3, dtype=DT, requires_grad=True)
    kw = dict(t_span=(0.0, 1.0), steps=steps, solver="heun")
    ref = _grads(u, list(u.parameters()), x0, **kw)
    got = _grads(u, list(u.parameters()), x0, adjoint="checkpoint", checkpoints=checkpoints,
                 **kw)
    assert _rel(got, ref) < 1e-10


def test_checkpoint_keeps_at_most_the_asked_carries():
    u = Field()
    x0 = torch.ones(1, 3, dtype=DT, requires_grad=True)
    sol = sf.solve(u, x0, t_span=(0.0, 30.0), rtol=1e-8, atol=1e-10, solver="dopri5",
                   adjoint="checkpoint", checkpoints=5)
    assert sol.stats["accepted"] > 20
    assert 1 <= sol.stats["checkpoints"] <= 5
    sol.ys.sum().backward()
    assert x0.grad is not None and torch.isfinite(x0.grad).all()


# ------------------------------------------------------------------------------ bad input
def test_bad_adjoint_value():
    with pytest.raises(ValueError, match="adjoint"):
        sf.solve(lambda t, x: -x, torch.ones(1), t_span=(0, 1), steps=2, adjoint="magic")


def test_reversible_needs_reversible_solver():
    with pytest.raises(ValueError, match="solver.*reversible_heun"):
        sf.solve(lambda t, x: -x, torch.ones(1), t_span=(0, 1), steps=2, solver="rk4",
                 adjoint="reversible")


def test_adjoint_params_must_be_leaves():
    a = torch.ones(1, requires_grad=True)
    with pytest.raises(ValueError, match="adjoint_params"):
        sf.solve(lambda t, x: -a * x, torch.ones(1), t_span=(0, 1), steps=2,
                 adjoint="checkpoint", adjoint_params=[a * 2])
    with pytest.raises(TypeError, match="adjoint_params"):
        sf.solve(lambda t, x: -a * x, torch.ones(1), t_span=(0, 1), steps=2,
                 adjoint="checkpoint", adjoint_params=["a"])
    with pytest.raises(ValueError, match="adjoint_params"):
        sf.solve(lambda t, x: -a * x, torch.ones(1), t_span=(0, 1), steps=2,
                 adjoint_params=[a])


def test_checkpoints_argument():
    with pytest.raises(ValueError, match="checkpoints"):
        sf.solve(lambda t, x: -x, torch.ones(1), t_span=(0, 1), steps=2, adjoint="checkpoint",
                 checkpoints=0)
    with pytest.raises(ValueError, match="checkpoints"):
        sf.solve(lambda t, x: -x, torch.ones(1), t_span=(0, 1), steps=2, adjoint="backsolve",
                 checkpoints=3)


def test_backsolve_without_parameters_warns():
    x0 = torch.ones(2, requires_grad=True, dtype=DT)
    with pytest.warns(RuntimeWarning, match="no parameters"):
        sol = sf.solve(lambda t, x: -x, x0, t_span=(0, 1), steps=20, adjoint="backsolve")
    sol.ys[-1].sum().backward()
    torch.testing.assert_close(x0.grad, torch.full((2,), math.exp(-1.0), dtype=DT),
                               rtol=1e-5, atol=0)


def test_dense_and_on_failure_refused():
    u = Field()
    x0 = torch.ones(1, 3, dtype=DT)
    with pytest.raises(ValueError, match="dense"):
        sf.solve(u, x0, t_span=(0, 1), steps=2, adjoint="checkpoint", dense=True)
    with pytest.raises(ValueError, match="on_failure"):
        sf.solve(u, x0, t_span=(0, 1), steps=2, adjoint="backsolve", on_failure="return")


def test_sde_time_gradients_refused():
    sde = sf.SDE(lambda t, x: -x, lambda t, x: torch.ones_like(x))
    ts = torch.linspace(0, 1, 3, dtype=DT, requires_grad=True)
    with pytest.raises(ValueError, match="ts"):
        sf.solve(sde, torch.ones(1, 1, dtype=DT), ts=ts, steps=4, seed=0,
                 adjoint="checkpoint")


def test_reversible_heun_strong_order_one_on_gbm():
    """Stratonovich GBM dX = 0.5 X dt + 0.8 X o dW, X = exp(0.5 t + 0.8 W); 1000 paths, seed 0,
    n = 16..128 steps: strong order 1 (commutative noise), as declared."""
    sde = sf.SDE(lambda t, x: 0.5 * x, lambda t, x: 0.8 * x, kind="stratonovich")
    x0 = torch.ones(1000, 1, dtype=DT)
    errs = []
    ns = (16, 32, 64, 128)
    for n in ns:
        bm = sf.BrownianPath((1000, 1), 0.0, 1.0, seed=0, dtype=DT)
        y = sf.solve(sde, x0, t_span=(0.0, 1.0), steps=n, solver="reversible_heun",
                     brownian=bm).ys[-1]
        errs.append(float((y - torch.exp(0.5 + 0.8 * bm(1.0))).abs().mean()))
    rate = math.log(errs[0] / errs[-1]) / math.log(ns[-1] / ns[0])
    assert abs(rate - sf.solvers.get("reversible_heun").caps.strong("diagonal")) < 0.2, errs


def test_backsolve_refuses_implicit_solvers():
    a = torch.tensor(-2.0, dtype=DT, requires_grad=True)
    with pytest.raises(ValueError, match="solver: adjoint='backsolve'.*implicit_euler"):
        sf.solve(lambda t, x: a * x, torch.ones(2, dtype=DT), t_span=(0, 1), steps=4,
                 solver="implicit_euler", adjoint="backsolve", adjoint_params=[a])


def test_plain_solve_refuses_time_gradients():
    ts = torch.linspace(0, 1, 3, dtype=DT, requires_grad=True)
    with pytest.raises(ValueError, match="ts: gradients with respect to the times"):
        sf.solve(lambda t, x: -x, torch.ones(1, dtype=DT), ts=ts, steps=4)


def test_reversible_time_gradients():
    """adjoint='reversible' (outputs on steps) also gives dL/dts: against the exact flow."""
    a = -0.8
    x0 = torch.tensor([1.3], dtype=DT, requires_grad=True)
    ts = torch.tensor([0.2, 0.7, 1.5], dtype=DT, requires_grad=True)
    ys = sf.solve(lambda t, x: a * x, x0, ts=ts, steps=400, adjoint="reversible").ys
    w = torch.tensor([0.3, -1.0, 2.0], dtype=DT)
    (ys[:, 0] * w).sum().backward()
    e = torch.exp(a * (ts.detach() - ts.detach()[0]))
    exact = w * a * x0.detach() * e
    exact[0] = -exact[1:].sum()
    torch.testing.assert_close(ts.grad, exact, rtol=1e-4, atol=1e-6)


def test_additive_matrix_noise_adjoints() -> None:
    """Additive noise given as a (..., d, m) matrix with m != d (d = 3, m = 2; sra1, seed 3):
    checkpoint gradients equal backprop's; backsolve's converge to them as the steps grow."""
    torch.manual_seed(0)
    d, m = 3, 2
    f64 = torch.float64
    bmat = torch.randn(d, m, dtype=f64)
    lin = torch.nn.Linear(d, d, dtype=f64)
    sde = sf.SDE(lambda t, x: lin(x), lambda t, x: bmat.expand(*x.shape[:-1], d, m),
                 noise="additive")
    x0 = torch.randn(4, d, dtype=f64, requires_grad=True)

    def grads(adj: str, steps: int) -> torch.Tensor:
        x0.grad = None
        lin.zero_grad()
        kw = {} if adj == "backprop" else dict(adjoint=adj, adjoint_params=tuple(lin.parameters()))
        sol = sf.solve(sde, x0, (0.0, 1.0), solver="sra1", steps=steps, seed=3, **kw)
        sol.ys[-1].pow(2).sum().backward()
        return torch.cat([x0.grad.reshape(-1), lin.weight.grad.reshape(-1)])

    errs = []
    for steps in (25, 100):
        ref = grads("backprop", steps)
        assert torch.allclose(grads("checkpoint", steps), ref, rtol=1e-10, atol=0)
        errs.append(float((grads("backsolve", steps) - ref).norm() / ref.norm()))
    assert errs[1] < 0.5 * errs[0] and errs[1] < 1e-2
