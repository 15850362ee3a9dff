"""Binomial checkpointing (``adjoint="checkpoint"``) and the replayed noise of the adjoints.

* the schedule of :mod:`sdeflow.adjoint.revolve` tapes every step once, last to first, holds at
  most ``checkpoints`` snapshots, and advances exactly Griewank's ``t(n, c)`` steps -- checked
  against an independent dynamic programme over every split;
* a solve's backward pass recomputes exactly that many steps (counted at the vector field),
  fixed and adaptive;
* the SDE adjoints ask the seed / Brownian object for each step's increments again, equal to
  what the forward loop handed the solver, and give backprop's gradients on the same path.
"""

from __future__ import annotations

import sys
from functools import cache

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sdeflow as sf
from sdeflow.adjoint import revolve as rv

torch.set_num_threads(1)
DT = torch.float64


class _Sim:
    """A checking executor: tracks the working state and the live snapshots."""

    def __init__(self, n: int, c: int, warm: bool) -> None:
        self.n, self.c = n, c
        self.snaps = set(rv.first_sweep(n, c)) if warm else {0}
        self.cur: int | None = None
        self.adv = 0
        self.taped: list[int] = []
        self.most = len(self.snaps)

    def restore(self, k: int) -> None:
        assert k in self.snaps
        self.cur = k

    def advance(self, k: int) -> None:
        assert self.cur == k
        self.cur = k + 1
        self.adv += 1

    def store(self, k: int) -> None:
        assert self.cur == k and k not in self.snaps
        self.snaps.add(k)
        self.most = max(self.most, len(self.snaps))

    def free(self, k: int) -> None:
        self.snaps.remove(k)

    def resume(self) -> None:
        self.cur = self.n - 1

    def tape(self, k: int) -> None:
        assert self.cur == k
        self.taped.append(k)
        self.cur = None


@cache
def _optimum(n: int, c: int) -> int:
    """Least advances over every recursive split (independent of the closed form)."""
    if n <= 1:
        return 0
    if c == 1:
        return n * (n - 1) // 2
    return min(m + _optimum(m, c) + _optimum(n - m, c - 1) for m in range(1, n))


def test_closed_form_is_the_optimum():
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 5000))
    for n in range(1, 61):
        for c in range(1, 8):
            assert rv.advances(n, c) == _optimum(n, c), (n, c)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), c=st.integers(1, 40), warm=st.booleans())
def test_schedule_tapes_each_step_once_within_the_snapshots(n, c, warm):
    sim = _Sim(n, c, warm)
    rv.reverse(n, c, sim, warm=warm)
    assert sim.taped == list(range(n - 1, -1, -1))
    assert sim.most <= c
    assert sim.adv == rv.advances(n, c) - ((n - 1) if warm else 0)
    r = rv.repetitions(n, c)
    assert rv.beta(c, r - 1) < n <= rv.beta(c, r) or n == 1


def test_known_counts():
    # Griewank's table: 200 steps, r = repetitions, t = r n - C(c + r, r - 1)
    assert (rv.repetitions(200, 8), rv.advances(200, 8)) == (4, 580)
    assert rv.advances(200, 200) == 199  # one sweep, nothing recomputed
    assert rv.advances(10, 1) == 45
    assert rv.default_checkpoints(200) == 19  # C(21, 2) = 210 >= 200 > C(20, 2)


class _Counted(torch.nn.Module):
    """u(t, x) = tanh(W x) cos(t), counting calls with and without autograd."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.w = torch.nn.Parameter(torch.randn(3, 3, generator=g, dtype=DT) * 0.4)
        self.calls = {True: 0, False: 0}

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.calls[torch.is_grad_enabled()] += 1
        return torch.tanh(x @ self.w.T) * torch.cos(t)


class _StepCount(sf.solvers.base.Solver, register=False):
    """Wraps a solver; counts its steps with and without autograd."""

    def __init__(self, inner) -> None:
        self.inner, self.caps, self.c = inner, inner.caps, inner.c
        self.noise_points, self.name = inner.noise_points, inner.name
        self.calls = {True: 0, False: 0}

    def init(self, terms, t0, x0, h):
        return self.inner.init(terms, t0, x0, h)

    def step(self, terms, tt, t, h, x, state, noise):
        self.calls[torch.is_grad_enabled()] += 1
        return self.inner.step(terms, tt, t, h, x, state, noise)

    def interpolant(self, terms, t, h, x0, x1, dense):
        return self.inner.interpolant(terms, t, h, x0, x1, dense)

    def controller_order(self, noise):
        return self.inner.controller_order(noise)


def _counted_solve(u, x0, c, **kw):
    from sdeflow.solvers.registry import resolve

    slv = _StepCount(resolve(kw.pop("solver")))
    sol = sf.solve(u, x0, solver=slv, adjoint="checkpoint", checkpoints=c, **kw)
    before = dict(slv.calls)
    assert before[True] == 0  # the forward pass keeps no graph
    sol.ys[-1].pow(2).sum().backward()
    return sol, slv.calls[False] - before[False], slv.calls[True] - before[True]


@pytest.mark.parametrize("n, c", [(40, 3), (40, 6), (57, 2), (12, 12), (30, 1), (200, 19)])
def test_fixed_steps_recompute_the_binomial_count(n, c):
    u = _Counted()
    x0 = torch.ones(2, 3, dtype=DT, requires_grad=True)
    sol, advanced, taped = _counted_solve(u, x0, c, t_span=(0.0, 1.0), steps=n, solver="rk4")
    expected = rv.advances(n, c) - (n - 1)
    assert advanced == expected == sol.stats["checkpoint_advances"]
    assert taped == n  # every step taped once
    assert sol.stats["checkpoint_snapshots"] <= c
    # and the gradient is backprop's
    x1 = x0.detach().clone().requires_grad_(True)
    ref = torch.autograd.grad(sf.solve(u, x1, t_span=(0.0, 1.0), steps=n, solver="rk4")
                              .ys[-1].pow(2).sum(), [x1, u.w])
    torch.testing.assert_close(x0.grad, ref[0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(u.w.grad, ref[1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("c", [4, 500])
def test_adaptive_steps_record_then_revolve(c):
    u = _Counted()
    x0 = torch.ones(2, 3, dtype=DT, requires_grad=True)
    kw = dict(t_span=(0.0, 8.0), rtol=1e-7, atol=1e-9, solver="dopri5")
    sol, advanced, taped = _counted_solve(u, x0, c, **dict(kw))
    n = sol.stats["accepted"]
    assert n > 20 and taped == n
    # more steps than snapshots: the optimal schedule from x0; else every carry was kept
    expected = rv.advances(n, c) if n > c else 0
    assert advanced == expected == sol.stats["checkpoint_advances"]
    assert sol.stats["checkpoint_snapshots"] <= min(c, n)
    x1 = x0.detach().clone().requires_grad_(True)
    ref = torch.autograd.grad(sf.solve(u, x1, **kw).ys[-1].pow(2).sum(), [x1, u.w])
    torch.testing.assert_close(x0.grad, ref[0], rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(u.w.grad, ref[1], rtol=1e-10, atol=1e-13)


def test_default_count_keeps_small_carries_and_bounds_large_ones():
    from sdeflow.adjoint import checkpoint as cp

    u = _Counted()
    x0 = torch.ones(2, 3, dtype=DT, requires_grad=True)
    sol = sf.solve(u, x0, t_span=(0.0, 1.0), steps=50, solver="rk4", adjoint="checkpoint")
    assert sol.stats["checkpoints"] == 50  # 50 carries of 48 bytes fit: nothing recomputed
    sol.ys.sum().backward()
    assert sol.stats["checkpoint_advances"] == 0
    old = cp.DEFAULT_BYTES
    try:
        cp.DEFAULT_BYTES = 48 * 3  # three carries fit: the one-replay count (C(c+2, 2) >= n)
        sol = sf.solve(u, x0, t_span=(0.0, 1.0), steps=50, solver="rk4", adjoint="checkpoint")
        assert sol.stats["checkpoints"] == rv.default_checkpoints(50) == 9
        sol.ys.sum().backward()
        assert sol.stats["checkpoint_advances"] == rv.advances(50, 9) - 49 <= 50
    finally:
        cp.DEFAULT_BYTES = old


# ---------------------------------------------------------------------------- the noise
class _Spy(sf.solvers.base.Solver, register=False):
    """Wraps a solver and keeps the noise the loop handed each step."""

    def __init__(self, inner) -> None:
        self.inner, self.caps, self.c = inner, inner.caps, inner.c
        self.noise_points, self.name = inner.noise_points, inner.name
        self.seen: list = []

    def init(self, terms, t0, x0, h):
        return self.inner.init(terms, t0, x0, h)

    def step(self, terms, tt, t, h, x, state, noise):
        self.seen.append((t, h, noise))
        return self.inner.step(terms, tt, t, h, x, state, noise)

    def interpolant(self, terms, t, h, x0, x1, dense):
        return self.inner.interpolant(terms, t, h, x0, x1, dense)

    def controller_order(self, noise):
        return self.inner.controller_order(noise)

    def check(self, problem):
        self.inner.check(problem)

    def for_kind(self, kind):
        return self


def _flat(noise) -> list[torch.Tensor]:
    if isinstance(noise, list):
        return [v for tup in noise for v in tup]
    return list(noise)


@pytest.mark.parametrize("source", ["seed", "tree", "path"])
@pytest.mark.parametrize("solver", ["euler_maruyama", "sra1"])
def test_noise_replay_equals_the_loops_noise(source, solver):
    from sdeflow.adjoint._common import NoiseReplay, setup
    from sdeflow.solvers.registry import resolve

    sde = sf.SDE(lambda t, x: -x, lambda t, x: 0.5 * torch.ones_like(x), noise="additive")
    x0 = torch.zeros(3, 2, dtype=DT)
    noise = (dict(seed=7) if source == "seed" else dict(brownian=(
        sf.BrownianTree if source == "tree" else sf.BrownianPath)((3, 2), 0.0, 1.0, seed=7,
                                                                  dtype=DT)))
    args = dict(problem=sde, x0=x0, t_span=(0.0, 1.0), ts=None, solver=solver, steps=13,
                dt=None, rtol=None, atol=None, controller=None, seed=None, brownian=None,
                save_all=False, dense=False, step_ts=None, jump_ts=None, max_steps=None,
                dt0=None, on_failure="raise")
    args.update(noise)
    s = setup(args, "checkpoint", None, None)
    spy = _Spy(resolve(solver))
    replay = NoiseReplay.prepare(s, args, spy)
    sf.solve(**dict(args, solver=spy))
    assert len(spy.seen) == 13
    for k in reversed(range(13)):  # asked backwards, as the adjoints do
        t, h, got = spy.seen[k]
        again = replay.at(k, t, h, t + h)
        for a, b in zip(_flat(got), _flat(again), strict=True):
            assert torch.equal(a, b)
        assert torch.equal(replay.increment(k, t, h, t + h), _flat(got)[0])


def test_seeded_adjoints_run_on_backprops_path():
    """With ``seed=`` (fixed steps) every strategy integrates the same path as backprop."""

    class M(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Parameter(torch.tensor([-0.5, 0.3], dtype=DT))

        def f(self, t, x):
            return self.a * torch.sin(x)

        def g(self, t, x):
            return 0.3 * torch.cos(x)

    m = M()
    sde = sf.SDE(m.f, m.g, noise="diagonal", kind="stratonovich")
    x0 = torch.full((4, 2), 0.2, dtype=DT)
    kw = dict(t_span=(0.0, 1.0), steps=40, seed=11, solver="reversible_heun")
    ref = sf.solve(sde, x0, **kw).ys
    for mode in ("checkpoint", "backsolve", "reversible"):
        got = sf.solve(sde, x0, adjoint=mode, **kw).ys
        torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_adaptive_sde_adjoints_run_on_a_tree_from_the_seed():
    """Adaptive SDE steps with ``seed=``: the adjoints drive the solve with a BrownianTree of
    that seed (a path the backward pass can ask again), and checkpointing is exact on it."""
    a = torch.tensor([0.6, -0.4], dtype=DT, requires_grad=True)
    sde = sf.SDE(lambda t, x: a * x, lambda t, x: 0.3 * torch.cos(x), noise="diagonal")
    x0 = torch.full((2, 2), 0.5, dtype=DT, requires_grad=True)
    kw = dict(t_span=(0.0, 1.0), rtol=1e-2, atol=1e-2, solver="euler_maruyama")
    tree = sf.BrownianTree((2, 2), 0.0, 1.0, seed=4, dtype=DT)
    ref_sol = sf.solve(sde, x0, brownian=tree, **kw)
    ref = torch.autograd.grad(ref_sol.ys.pow(2).sum(), [x0, a])
    sol = sf.solve(sde, x0, seed=4, adjoint="checkpoint", adjoint_params=[a], checkpoints=3,
                   **kw)
    torch.testing.assert_close(sol.ys, ref_sol.ys, rtol=0, atol=0)
    got = torch.autograd.grad(sol.ys.pow(2).sum(), [x0, a])
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-13)


def test_gradcheck_with_recomputation():
    """gradcheck backpropagates the same graph many times: the schedule reruns intact."""
    a = torch.tensor([0.3, -0.7], dtype=DT, requires_grad=True)
    x0 = torch.tensor([[0.5, -0.2]], dtype=DT, requires_grad=True)

    def fn(x0, a):
        ode = sf.ODE(lambda t, x: torch.sin(a * x) - 0.1 * x * t)
        return sf.solve(ode, x0, t_span=(0.0, 1.0), steps=12, solver="rk4",
                        adjoint="checkpoint", adjoint_params=[a], checkpoints=2).ys

    assert torch.autograd.gradcheck(fn, (x0, a), atol=1e-8)
