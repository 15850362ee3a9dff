"""Look-back event checks (sdeflow/lookback.py): the loop runs stretches of steps without the
event monitor and lets it check each stretch at once. Everything must come out bitwise as if
the monitor had seen every step: the same saved outputs, event times and states, dense output
and step counts, for fixed and adaptive steps, ODEs and SDEs, stateful solvers, jumps, tuples
of events, terminal and non-terminal ones, and fns that cannot be vmapped."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sdeflow as sf
from sdeflow import events

torch.set_num_threads(1)
D64 = torch.float64


def _both(monkeypatch: pytest.MonkeyPatch, *args: Any, **kw: Any) -> tuple[sf.Solution, ...]:
    """The solve with look-back (the default) and with the monitor called on every step."""
    looked = sf.solve(*args, **kw)
    with monkeypatch.context() as m:
        m.setattr(events.Monitor, "defer", lambda self: False)
        every = sf.solve(*args, **kw)
    return looked, every


def _same(a: sf.Solution, b: sf.Solution) -> None:
    for name in ("ts", "ys", "event_t", "event_x", "event_index"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0,
                                   equal_nan=True, msg=name)
    assert a.status == b.status and a.t_reached == b.t_reached
    for k in ("accepted", "rejected", "events"):
        assert a.stats[k] == b.stats[k], (k, a.stats[k], b.stats[k])


W = torch.linspace(0.5, 5.0, 300, dtype=D64)
OSC = sf.ODE(lambda t, x: torch.stack([x[..., 1], -(W**2) * x[..., 0]], -1))
X_OSC = torch.stack([torch.ones(300, dtype=D64), torch.zeros(300, dtype=D64)], -1)


@pytest.mark.parametrize("kw", [
    dict(rtol=1e-8, atol=1e-10),                       # dopri5
    dict(solver="tsit5", rtol=1e-7, atol=1e-9),
    dict(solver="bosh3", rtol=1e-6, atol=1e-8),
    dict(solver="rk4", steps=700),
    dict(solver="adams_bashforth3", steps=900),        # stateful (multistep history)
    dict(solver="heun_euler", rtol=1e-5, atol=1e-7),
])
@pytest.mark.parametrize("terminal", [True, False])
def test_oscillator_batch_same_as_every_step(monkeypatch: pytest.MonkeyPatch, kw: dict,
                                             terminal: bool) -> None:
    """300 oscillators crossing zero at pi/(2w): 300 events spread over the solve (busy
    stretches), saved outputs between steps and the dense output."""
    ev = sf.Event(lambda t, x: x[..., 0], terminal=terminal, direction=0)
    ts = torch.linspace(0.0, 4.0, 37, dtype=D64)
    a, b = _both(monkeypatch, OSC, X_OSC, ts=ts, event=ev, dense=True, **kw)
    _same(a, b)
    for tq in (0.37, 1.9, 0.97 * a.t_reached):
        torch.testing.assert_close(a.evaluate(tq), b.evaluate(tq), rtol=0, atol=0)
    assert int(torch.isfinite(a.event_t).sum()) == 300


def test_rare_event_after_long_quiet_stretches(monkeypatch: pytest.MonkeyPatch) -> None:
    """One path of 50 crosses late (t = 9.5) after many clean stretches; a second event
    of the tuple never fires; an event fn that returns one value for every path."""
    ode = sf.ODE(lambda t, x: torch.ones_like(x))
    x0 = torch.full((50, 1), -100.0, dtype=D64)
    x0[17] = -9.5
    evs = (sf.Event(lambda t, x: x[..., 0]), sf.Event(lambda t, x: t - 20.0),
           sf.Event(lambda t, x: x[..., 0].mean() + 1000.0, terminal=False))
    for kw in (dict(rtol=1e-9, dt0=1e-3, controller=sf.PIController(dt_max=0.01)),
               dict(solver="rk4", steps=2000)):
        a, b = _both(monkeypatch, ode, x0, (0.0, 10.0), event=evs, **kw)
        _same(a, b)
        assert float(a.event_t[17]) == pytest.approx(9.5, abs=1e-9)
        assert int(a.event_index[17]) == 0 and int((a.event_index == 0).sum()) == 1


@pytest.mark.parametrize("solver", ["euler_maruyama", "milstein", "stochastic_heun", "sra1",
                                    "reversible_heun"])
def test_first_passage_same_as_every_step(monkeypatch: pytest.MonkeyPatch,
                                          solver: str) -> None:
    """Brownian motion / OU with a level: terminal first passage of 2,000 paths, 500 fixed
    steps (some paths stop in every stretch), seed 3."""
    noise = "additive" if solver == "sra1" else "diagonal"
    kind = "stratonovich" if solver in ("stochastic_heun", "reversible_heun") else "ito"
    ou = sf.SDE(lambda t, x: -0.5 * x, lambda t, x: torch.full_like(x, 0.8), noise=noise,
                kind=kind)
    ev = sf.Event(lambda t, x: x[..., 0] - 0.9, direction=1)
    a, b = _both(monkeypatch, ou, torch.zeros(2000, 1, dtype=D64), steps=500, seed=3,
                 solver=solver, event=ev, ts=torch.linspace(0.0, 2.0, 11, dtype=D64))
    _same(a, b)
    hit = torch.isfinite(a.event_t)
    assert 200 < int(hit.sum()) < 1900
    torch.testing.assert_close(a.x_final[hit], a.event_x[hit], rtol=0, atol=0)


def test_jumps_and_a_fn_that_cannot_be_vmapped(monkeypatch: pytest.MonkeyPatch) -> None:
    """``jump_ts`` restart the solver inside a stretch; ``float(t)`` in fn cannot run under
    vmap, so the monitor evaluates the stretch state by state (same results)."""
    ode = sf.ODE(lambda t, x: torch.cos(3 * t) * torch.ones_like(x))
    x0 = torch.linspace(-0.4, 0.3, 40, dtype=D64).reshape(40, 1)
    ev = sf.Event(lambda t, x: x[..., 0] - 0.1 * math.cos(float(t.reshape(-1)[0])) - 0.2)
    for kw in (dict(rtol=1e-8), dict(solver="rk4", steps=400)):
        a, b = _both(monkeypatch, ode, x0, (0.0, 4.0), event=ev, jump_ts=[1.0, 2.5], **kw)
        _same(a, b)
        assert int(torch.isfinite(a.event_t).sum()) > 10


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.05, 3.95), min_size=1, max_size=12),
       st.sampled_from([-1, 0, 1]), st.booleans(), st.sampled_from([None, 97, 400]))
def test_random_crossings_property(times: list[float], direction: int, terminal: bool,
                                   steps: int | None) -> None:
    """x_i = c_i + sin(3 t) crosses at times set by c_i (up and down); any direction,
    terminal or not, adaptive or fixed: look-back equals every-step bitwise."""
    c = torch.tensor([-math.sin(3 * s) for s in times], dtype=D64).reshape(-1, 1)
    ode = sf.ODE(lambda t, x: 3 * torch.cos(3 * t) * torch.ones_like(x))
    ev = sf.Event(lambda t, x: x[..., 0], terminal=terminal, direction=direction)
    kw: dict = dict(rtol=1e-8) if steps is None else dict(solver="rk4", steps=steps)
    looked = sf.solve(ode, c, (0.0, 4.0), event=ev, **kw)
    orig = events.Monitor.defer
    events.Monitor.defer = lambda self: False  # type: ignore[method-assign]
    try:
        every = sf.solve(ode, c, (0.0, 4.0), event=ev, **kw)
    finally:
        events.Monitor.defer = orig  # type: ignore[method-assign]
    _same(looked, every)


def test_a_sign_flip_inside_a_stretch_is_seen() -> None:
    """fn dips below zero at exactly one step end (t = 0.305 on a grid of 0.005) and is back
    above at the next: the stretch check still sees that step."""
    ode = sf.ODE(lambda t, x: torch.zeros_like(x))
    bm = sf.SDE(lambda t, x: torch.zeros_like(x), lambda t, x: torch.zeros_like(x))
    ev = sf.Event(lambda t, x: torch.where((t > 0.3025) & (t < 0.3075), -1.0, 1.0)
                  + 0.0 * x[..., 0], terminal=False, direction=-1)
    x0 = torch.zeros(5, 1, dtype=D64)
    sde = sf.solve(bm, x0, (0.0, 1.0), steps=200, seed=0, event=ev)
    assert torch.allclose(sde.event_t, torch.full((5,), 0.305, dtype=D64))
    ode_sol = sf.solve(ode, x0, (0.0, 1.0), solver="rk4", steps=200, event=ev)
    assert bool(((ode_sol.event_t > 0.3) & (ode_sol.event_t <= 0.305)).all())


@pytest.mark.parametrize("kw", [dict(rtol=1e-9), dict(solver="rk4", steps=300)])
def test_gradients_through_a_solve_with_events(monkeypatch: pytest.MonkeyPatch,
                                               kw: dict) -> None:
    """Backpropagation through a solve whose paths stop at different times: the re-run
    steps keep the graph, so d x_final / d (x0, k) equal the every-step ones (and the
    closed form: a path frozen at its crossing has x_final = level, gradient 0)."""
    k = torch.tensor(0.7, dtype=D64, requires_grad=True)
    ode = sf.ODE(lambda t, x: -k * x)
    x0 = torch.linspace(1.0, 3.0, 20, dtype=D64).reshape(20, 1).requires_grad_(True)
    ev = sf.Event(lambda t, x: x[..., 0] - 1.2, direction=-1)
    grads = []
    for defer in (True, False):
        with monkeypatch.context() as m:
            if not defer:
                m.setattr(events.Monitor, "defer", lambda self: False)
            sol = sf.solve(ode, x0, (0.0, 1.0), event=ev, **kw)
        grads.append(torch.autograd.grad(sol.x_final.sum(), (x0, k)))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    live = (x0.detach()[:, 0] * math.exp(-0.7) > 1.2)
    assert 0 < int(live.sum()) < 20
    torch.testing.assert_close(grads[0][0][live, 0],
                               torch.full((int(live.sum()),), math.exp(-0.7), dtype=D64),
                               rtol=1e-6, atol=0)


# ------------------------------------------------------------- how fn sees a stretch
def test_an_elementwise_fn_is_called_on_the_stacked_stretch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """fn elementwise per path: after the first stretch (which compares the two), each
    stretch is one call of fn on the K stacked states, x of shape (K, 300, 2) and t of
    shape (K, 300), one time per step; the results are still those of every step."""
    seen: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def fn(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not torch._C._functorch.is_batchedtensor(x):
            seen.append((tuple(t.shape), tuple(x.shape)))
        return x[..., 0] - 0.5 * t

    a, b = _both(monkeypatch, OSC, X_OSC, (0.0, 4.0), solver="rk4", steps=700,
                 event=sf.Event(fn))
    _same(a, b)
    stacked = [(ts, xs) for ts, xs in seen if len(xs) == 3]
    assert len(stacked) >= 3
    assert all(xs[1:] == (300, 2) and ts == xs[:2] for ts, xs in stacked)


def test_a_fn_that_couples_the_paths_is_not_called_on_the_stack(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """fn = x - (max over the batch) + 0.5: on K stacked states the max would run over all K
    steps. Path 0 falls from 3 (dx/dt = -1), the other 19 sit at 0.3, so theirs rises through
    zero when 3 - t = 0.8, at t = 2.2, in the second stretch or later (on the stack, the max
    of a stretch holding earlier steps would hide it). The first stretch shows that the
    stacked call gives other values, so fn is vmapped instead: the crossings are found, as on
    every step."""
    ode = sf.ODE(lambda t, x: torch.cat([-torch.ones_like(x[:1]), torch.zeros_like(x[1:])]))
    x0 = torch.full((20, 1), 0.3, dtype=D64)
    x0[0] = 3.0
    ev = sf.Event(lambda t, x: x[..., 0] - x[..., 0].amax() + 0.5, direction=1)
    for kw in (dict(solver="rk4", steps=600),
               dict(rtol=1e-10, controller=sf.PIController(dt_max=0.005))):
        a, b = _both(monkeypatch, ode, x0, (0.0, 3.0), event=ev, **kw)
        _same(a, b)
        assert a.stats["accepted"] >= 600
        # found in the step holding t = 2.2 (where in it is not meaningful for a coupled g:
        # while a crossing is located the other paths, path 0 among them, sit at the step's
        # end)
        assert bool(((a.event_t[1:] > 2.19) & (a.event_t[1:] < 2.21)).all())
        assert bool(torch.isnan(a.event_t[0]))


def test_an_unbatched_state_and_a_fn_returning_a_view(monkeypatch: pytest.MonkeyPatch) -> None:
    """A single state (2,) with fn = x[0] - 0.5 (on a stack, x[0] is the first state: the
    wrong shape, so not used), and a batch with fn = x[..., 0], a view of the stretch's
    buffer, which the next stretch overwrites (the monitor keeps copies)."""
    one = sf.ODE(lambda t, x: torch.stack([x[1], -x[0]]))
    x1 = torch.tensor([1.0, 0.0], dtype=D64)
    for fn, prob, x0 in ((lambda t, x: x[0] - 0.5, one, x1),
                         (lambda t, x: x[..., 0], OSC, X_OSC)):
        ev = sf.Event(fn, terminal=False)
        a, b = _both(monkeypatch, prob, x0, (0.0, 12.0), solver="rk4", steps=3000, event=ev)
        _same(a, b)
        assert bool(torch.isfinite(a.event_t).all())
    assert float(a.event_t[0]) == pytest.approx(math.pi / (2 * float(W[0])), abs=1e-9)


def test_large_states_are_checked_on_every_step() -> None:
    """Above LOOK_STATE_MAX bytes a check is bound by memory traffic: the loop calls the
    monitor on every step (while the state is still in the cache) instead of looking back."""
    from sdeflow.lookback import LOOK_BYTES, LOOK_STATE_MAX, MIN_STRETCH, Lookback  # noqa: PLC0415

    class Hook:
        def defer(self) -> bool:
            return True

    small = torch.zeros(LOOK_STATE_MAX // 8, dtype=D64)
    big = torch.zeros(LOOK_STATE_MAX // 8 + 1, dtype=D64)
    look = Lookback.make([Hook()], small, 10_000)
    assert look is not None and look.size == LOOK_BYTES // LOOK_STATE_MAX >= MIN_STRETCH
    assert Lookback.make([Hook()], big, 10_000) is None
    assert Lookback.make([Hook()], torch.zeros(4, dtype=D64), 100).size == 100
