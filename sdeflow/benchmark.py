"""Benchmarks against peer libraries: the engine behind ``sdeflow bench [--quick] [--out DIR]``.

Everything is measured in one process, on the same problems, with the same callables handed to
every library. Because this kind of machine drifts by +-30% (and more when it is shared), timed
runs are *interleaved*: round after round every variant of a case is run once (A B C, C B A,
then seeded random orders), and the median over rounds is reported. Each
timed measurement repeats a call until it lasts at least ``min_time`` seconds; measurements
shorter than ``CHEAP`` get a few extra rounds. Torch runs on one intra-op thread by default
(``Config.threads``).

Sections:

* ``handloop`` -- the performance target of issue 2: per-step cost of sdeflow's fixed-step loop
  against a minimal hand-written torch loop of the same method (euler and rk4 on a 4-d linear ODE at
  batch 1 and 10,000; Euler--Maruyama on OU, batch 10,000 x 2, at 128 and 1024 steps). The fields
  take a 0-dim time tensor, so the hand loop indexes a precomputed time grid (``t = tg[i]``).
  torchdiffeq, torchode and torchsde run the same cases.
* ``ode_fixed`` -- error against wall time and against NFE of the fixed-step ODE solvers (sdeflow,
  torchdiffeq, torchode) on a linear 4x4 ODE (float64, batch 1 and 10,000), Van der Pol (mu = 1, 5),
  Lotka--Volterra and a curved MLP neural ODE (float32, batch 256 and 4096).
* ``ode_adaptive`` -- the same problems with the embedded pairs (sdeflow bosh3/dopri5/tsit5,
  torchdiffeq, torchode, scipy's ``solve_ivp``) at matched tolerances, plus every peer at its own
  defaults. Runs only when sdeflow registers ``dopri5``; skipped with a note otherwise.
* ``sde`` -- strong and weak error against wall time and NFE (batch 10,000): OU and GBM with
  Euler--Maruyama against torchsde's Euler with its ``BrownianInterval``; Milstein (GBM, Ito) and
  stochastic Heun (GBM, Stratonovich) against torchsde's; sra1 against torchsde's srk on an
  additive-noise SDE with a nonlinear drift; torchsde at its defaults (srk, dt = 1e-3) on OU and
  GBM. SDE states are float32.

Errors. ODE: relative RMS error of the final state against the exact solution (linear) or
scipy's DOP853 at rtol = atol = 1e-12 in float64. SDE: strong error ``E|X_T - X^h_T|`` (Euclidean
norm over the state) on the same Brownian path as the reference: exact for GBM (a function of
``W_T``); for OU the exact transition with the stochastic integral expanded on the finest grid of
the path (:func:`ou_exact_path`, error ~1e-8); for the additive SDE the library's own
strong-order-1.5 scheme (sdeflow sra1 / torchsde srk) on a 16x finer grid of the same path; weak
error ``|E phi(X^h_T) - E phi(X_T)|`` for ``phi(x) = |x|^2 / d``, estimated
on the same paths (a coupled estimator: its Monte Carlo noise is the spread of the difference, far
below that of either term). Errors are measured in untimed accuracy passes that share a path
object (sdeflow: ``BrownianPath``, in batch chunks; torchsde: one ``BrownianInterval``); the timed
runs call each library the way a user would (sdeflow ``seed=``, torchsde ``sdeint`` with its default
``BrownianInterval``). The error of a scheme at a step count is a property of the scheme, so it is
attributed to the timed run of the same library, method and step count.

A peer that is missing or fails is skipped with a note, never an error. ``torchode`` is imported
lazily (it is not a dependency).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import random
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import solvers as _solvers
from .brownian import BrownianPath
from .problems import ODE, SDE
from .solve import solve

Tensor = torch.Tensor
Field = Callable[[Tensor, Tensor], Tensor]

LIB_COLORS = {
    "sdeflow": "#1f77b4", "torchdiffeq": "#ff7f0e", "torchode": "#2ca02c", "scipy": "#d62728",
    "torchsde": "#9467bd", "hand": "#7f7f7f",
}
MARKERS = "osD^v<>Ph*Xd"

# sdeflow fixed-step ODE solver -> the same method in the peers
TDQ_FIXED = {"euler": "euler", "midpoint": "midpoint", "heun": "heun2", "rk4": "rk4"}
TODE_FIXED = {"euler": "Euler", "heun": "Heun"}
# sdeflow adaptive ODE solver -> the peers' methods it is matched with
TDQ_ADAPTIVE = {"bosh3": "bosh3", "dopri5": "dopri5"}
TODE_ADAPTIVE = {"dopri5": "Dopri5", "tsit5": "Tsit5"}
SCIPY_ADAPTIVE = {"bosh3": "RK23", "dopri5": "RK45", "tsit5": "RK45"}


# ===================================================================================== config
CHEAP = 0.06  # seconds: a measurement this short gets CHEAP_EXTRA_ROUNDS more rounds
CHEAP_EXTRA_ROUNDS = 3


@dataclass
class Config:
    """What one benchmark run measures. ``Config.for_profile(name)`` gives the presets.

    Attributes:
        profile: ``"full"``, ``"quick"`` (< 2 min on 2 cores) or ``"tiny"`` (seconds; tests).
        rounds: interleaved timing rounds of the work-precision sections (medians over them).
        hl_rounds: interleaved timing rounds of the hand-loop section.
        cheap_extra_rounds: extra rounds for measurements shorter than ``CHEAP`` seconds.
        min_time: a timed measurement repeats the call until it lasts this long (seconds).
        sections: which sections to run (``handloop``, ``ode_fixed``, ``ode_adaptive``, ``sde``).
        device: where the tensors live.
        problems: restrict the work-precision problems to these keys (``None``: all).
        seed: seed of every random draw.
        threads: torch intra-op threads during the run (0: leave torch's setting). The default
            is 1: on a shared machine a multi-threaded op waits at OpenMP's barrier for a thread
            that another process has preempted, and timings then swing by 100x.
    """

    profile: str = "full"
    rounds: int = 3
    hl_rounds: int = 5
    cheap_extra_rounds: int = CHEAP_EXTRA_ROUNDS
    min_time: float = 0.02
    sections: tuple[str, ...] = ("handloop", "ode_fixed", "ode_adaptive", "sde")
    device: str = "cpu"
    problems: tuple[str, ...] | None = None
    seed: int = 0
    threads: int = 1
    # handloop
    hl_ode_batches: tuple[int, ...] = (1, 10_000)
    hl_ode_steps: dict[tuple[str, int], int] = field(default_factory=lambda: {
        ("euler", 1): 2000, ("rk4", 1): 1000, ("euler", 10_000): 200, ("rk4", 10_000): 100})
    hl_sde_batch: int = 10_000
    hl_sde_steps: tuple[int, ...] = (128, 1024)
    # work-precision
    ode_large_batch: int = 10_000
    mlp_batches: tuple[int, ...] = (256, 4096)
    fixed_stride: int = 1
    max_fixed_steps: int = 4096
    max_fixed_points: int = 12
    tols: tuple[float, ...] = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
    tols_large: tuple[float, ...] = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
    tols_f32: tuple[float, ...] = (1e-3, 1e-4, 1e-5)
    low_order_min_tol: float = 1e-5
    scipy_max_batch: int = 256
    sde_batch: int = 10_000
    em_steps: tuple[int, ...] = (128, 256, 512, 1024, 2048, 4096)
    ho_steps: tuple[int, ...] = (16, 64, 256, 1024)
    sra_steps: tuple[int, ...] = (8, 16, 32, 64)
    sra_ref_steps: int = 1024
    sde_default_problems: tuple[str, ...] = ("ou",)

    @classmethod
    def for_profile(cls, profile: str) -> Config:
        """The preset for ``"full"``, ``"quick"`` or ``"tiny"``."""
        if profile == "full":
            return cls()
        if profile == "quick":
            return cls(
                profile="quick", rounds=3, hl_rounds=3, min_time=0.01,
                cheap_extra_rounds=0,
                hl_ode_steps={("euler", 1): 400, ("rk4", 1): 200, ("euler", 10_000): 30,
                              ("rk4", 10_000): 15},
                hl_sde_batch=1000, hl_sde_steps=(128, 1024),
                ode_large_batch=2000, mlp_batches=(256,), fixed_stride=2,
                max_fixed_steps=1024, max_fixed_points=3, tols=(1e-3, 1e-6),
                tols_f32=(1e-3, 1e-5), low_order_min_tol=1e-3,
                sde_batch=2000, em_steps=(128, 512), ho_steps=(16, 64), sra_steps=(8, 32),
                sra_ref_steps=256, sde_default_problems=(), tols_large=(1e-3, 1e-6),
                problems=("linear_b1", "linear_b2000", "vdp1", "mlp_b256", "ou", "gbm",
                          "gbm_milstein", "gbm_strat", "additive"),
            )
        if profile == "tiny":
            return cls(
                profile="tiny", rounds=2, hl_rounds=2, min_time=0.0, cheap_extra_rounds=0,
                hl_ode_batches=(1, 64),
                hl_ode_steps={("euler", 1): 20, ("rk4", 1): 10, ("euler", 64): 10,
                              ("rk4", 64): 5},
                hl_sde_batch=64, hl_sde_steps=(16,),
                ode_large_batch=64, mlp_batches=(32,), fixed_stride=1,
                max_fixed_steps=4096, max_fixed_points=2, tols=(1e-3, 1e-5), tols_f32=(1e-3,),
                sde_batch=64, em_steps=(8, 16), ho_steps=(8,), sra_steps=(4, 8),
                sra_ref_steps=32, sde_default_problems=(), tols_large=(1e-3, 1e-5),
                problems=("linear_b1", "vdp1", "mlp_b32", "ou", "additive"),
            )
        raise ValueError(f"profile: expected 'full', 'quick' or 'tiny', got {profile!r}")


# ===================================================================================== timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timed:
    """One timed variant of a case: ``fn`` is called, the wall time per call is recorded."""

    key: str
    fn: Callable[[], Any]
    reps: int = 1
    walls: list[float] = field(default_factory=list)
    extra_rounds: int = 0

    @property
    def median(self) -> float:
        return _median(self.walls) if self.walls else math.nan


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    if n == 0:
        return math.nan
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def _once(fn: Callable[[], Any], reps: int, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / reps


def calibrate(t: Timed, first_call: float, min_time: float,
              extra_rounds: int = CHEAP_EXTRA_ROUNDS) -> None:
    """Set ``t.reps`` so that one measurement lasts about ``min_time`` seconds.

    Cheap measurements (under ``CHEAP`` seconds) also get ``extra_rounds`` more rounds:
    they cost little, and a short measurement is the one a burst of activity from another
    process can spoil in most of the rounds.
    """
    if first_call <= 0 or min_time <= 0:
        t.reps = 1
    else:
        t.reps = int(min(200, max(1, math.ceil(min_time / first_call))))
    t.extra_rounds = extra_rounds if 0 < first_call * t.reps < CHEAP else 0


def interleave(items: Sequence[Timed], rounds: int, device: torch.device,
               tick: Callable[[int], Any] | None = None) -> None:
    """Time every item once per round: round 0 forwards, round 1 backwards, later rounds in a
    seeded random order.

    Medians over the rounds (``Timed.median``) are robust to the machine's drift: every variant
    sees the same slow and fast periods; the changing order keeps an effect of the position in
    a round (what ran just before) from hitting the same variant in most rounds. Items with
    ``extra_rounds`` keep going (interleaved among themselves) for that many more rounds.
    """
    gc_was = gc.isenabled()
    total = rounds + max((it.extra_rounds for it in items), default=0)
    rng = random.Random(len(items))
    try:
        for r in range(total):
            todo = [it for it in items if r < rounds + it.extra_rounds]
            if r == 1:
                todo.reverse()
            elif r >= 2:
                rng.shuffle(todo)
            order = todo
            gc.collect()
            gc.disable()
            for it in order:
                it.walls.append(_once(it.fn, it.reps, device))
                if tick is not None and r < rounds:
                    tick(1)
            gc.enable()
    finally:
        if gc_was:
            gc.enable()


def _warm(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """Call ``fn`` once (warm-up); return its result and the time it took."""
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


# ===================================================================================== peers
def peer_versions() -> dict[str, str | None]:
    """Installed versions of the peers (``None``: not importable)."""
    out: dict[str, str | None] = {}
    for name in ("torchdiffeq", "torchsde", "torchode", "scipy"):
        try:
            mod = __import__(name)
            out[name] = str(getattr(mod, "__version__", "?"))
        except Exception:  # noqa: BLE001  (a broken peer is skipped, never an error)
            out[name] = None
    return out


def _import(name: str) -> Any:
    return __import__(name) if name != "scipy" else __import__("scipy.integrate").integrate


class Counter:
    """Wraps a field and counts its calls (``n``)."""

    def __init__(self, fn: Field) -> None:
        self.fn, self.n = fn, 0

    def __call__(self, t: Tensor, x: Tensor) -> Tensor:
        self.n += 1
        return self.fn(t, x)


def sdeflow_adaptive_available() -> bool:
    """Whether sdeflow registers the adaptive solvers (``dopri5``)."""
    return "dopri5" in _solvers.names()


# ===================================================================================== problems
def linear_matrix(dtype: torch.dtype = torch.float64, device: Any = "cpu") -> Tensor:
    """The 4x4 test matrix: two damped oscillators (frequencies 2 and 4), weakly coupled."""
    a = torch.tensor([[-0.3, 2.0, 0.1, 0.0],
                      [-2.0, -0.3, 0.0, 0.2],
                      [0.0, 0.1, -0.5, 4.0],
                      [-0.1, 0.0, -4.0, -0.5]], dtype=torch.float64)
    return a.to(dtype=dtype, device=device)


def linear_field(dtype: torch.dtype = torch.float64, device: Any = "cpu") -> Field:
    """``u(t, x) = x A^T`` for :func:`linear_matrix` (``x``: ``(..., 4)``)."""
    at = linear_matrix(dtype, device).T.contiguous()

    def u(t: Tensor, x: Tensor) -> Tensor:
        return torch.matmul(x, at)

    return u


def vdp_field(mu: float) -> Callable[[torch.dtype, Any], Field]:
    """Van der Pol ``y' = v, v' = mu (1 - y^2) v - y`` (state ``(..., 2)``)."""

    def make(dtype: torch.dtype, device: Any) -> Field:
        def u(t: Tensor, x: Tensor) -> Tensor:
            y, v = x[..., 0], x[..., 1]
            return torch.stack((v, mu * (1.0 - y * y) * v - y), dim=-1)

        return u

    return make


def lv_field(a: float = 1.5, b: float = 1.0, c: float = 3.0, d: float = 1.0
             ) -> Callable[[torch.dtype, Any], Field]:
    """Lotka--Volterra ``x' = a x - b x y, y' = -c y + d x y`` (state ``(..., 2)``)."""

    def make(dtype: torch.dtype, device: Any) -> Field:
        def u(t: Tensor, x: Tensor) -> Tensor:
            p, q = x[..., 0], x[..., 1]
            return torch.stack((a * p - b * p * q, -c * q + d * p * q), dim=-1)

        return u

    return make


class CurvedMLP(torch.nn.Module):
    """A small neural ODE field with real curvature (fixed weights, no training).

    ``u(t, x) = W2 tanh(W1 x + b1 + t w_t) + Omega x - x |x|^2 / (2 d)`` with ``d = 4`` and 64
    hidden units. ``W1`` has a large scale (pre-activations of order 3, so ``tanh`` works in its
    nonlinear range), ``t w_t`` makes the field time dependent, ``Omega`` is a rotation at two
    frequencies (3 and 6) and the cubic term keeps the flow bounded. On ``[0, 2]`` dopri5 at
    rtol 1e-6 needs ~85 steps whose sizes vary 5-fold; a default-initialised MLP would be solved
    in a handful of even steps. ``t`` may be 0-dim or ``(batch,)`` (torchode's convention).
    """

    def __init__(self, d: int = 4, hidden: int = 64, seed: int = 1234) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        f64 = torch.float64
        self.lin1 = torch.nn.Linear(d, hidden)
        self.lin2 = torch.nn.Linear(hidden, d, bias=False)
        om = torch.zeros(d, d, dtype=f64)
        om[0, 1], om[1, 0] = 3.0, -3.0
        if d >= 4:
            om[2, 3], om[3, 2] = 6.0, -6.0
        with torch.no_grad():
            self.lin1.weight.copy_(torch.randn(hidden, d, generator=g, dtype=f64)
                                   * (2.5 / math.sqrt(d)))
            self.lin1.bias.copy_(torch.randn(hidden, generator=g, dtype=f64))
            self.lin2.weight.copy_(torch.randn(d, hidden, generator=g, dtype=f64)
                                   * (3.0 / math.sqrt(hidden)))
        self.register_buffer("wt", torch.randn(hidden, generator=g, dtype=f64) * 3.0)
        self.register_buffer("omega_t", om.T.contiguous())
        self.d = d
        self.requires_grad_(False)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        tt = t.reshape(-1, 1) if t.dim() == 1 else t
        h = torch.tanh(self.lin1(x) + tt * self.wt)
        return self.lin2(h) + torch.matmul(x, self.omega_t) \
            - x * (x * x).sum(-1, keepdim=True) * (0.5 / self.d)


def mlp_field(dtype: torch.dtype, device: Any) -> Field:
    """A :class:`CurvedMLP` in ``dtype`` on ``device``."""
    return CurvedMLP().to(dtype=dtype, device=device)


@dataclass
class ODECase:
    """A work-precision ODE problem: ``x(t1)`` from ``x0`` under ``make_field(dtype, device)``."""

    key: str
    title: str
    make_field: Callable[[torch.dtype, Any], Field]
    x0: Tensor               # float64, CPU
    dtype: torch.dtype
    t1: float
    steps: list[int]
    tols: tuple[float, ...]
    exact: Callable[[Tensor], Tensor] | None = None

    @property
    def batch(self) -> int:
        return int(self.x0.shape[0])


def ode_cases(cfg: Config) -> list[ODECase]:
    """The ODE problems of the work-precision sections (filtered by ``cfg.problems``)."""
    g = torch.Generator().manual_seed(cfg.seed + 7)
    f64 = torch.float64

    def steps(lo: int, hi: int) -> list[int]:
        # powers of two from lo (where every method is stable) to hi, every `stride`-th one
        out, n = [], lo
        while n <= min(hi, cfg.max_fixed_steps) and len(out) < cfg.max_fixed_points:
            out.append(n)
            n *= 2**cfg.fixed_stride
        return out or [lo]

    a = linear_matrix()

    def lin_exact(t1: float) -> Callable[[Tensor], Tensor]:
        e = torch.linalg.matrix_exp(t1 * a)
        return lambda x0: x0.to(f64) @ e.T

    nb = cfg.ode_large_batch
    cases = [
        ODECase("linear_b1", "linear 4x4, float64, batch 1", lambda dt, dev: linear_field(dt, dev),
                torch.tensor([[1.0, 0.0, 0.5, -0.5]], dtype=f64), f64, 3.0,
                steps(16, 2048), cfg.tols, lin_exact(3.0)),
        ODECase(f"linear_b{nb}", f"linear 4x4, float64, batch {nb}",
                lambda dt, dev: linear_field(dt, dev),
                torch.randn(nb, 4, generator=g, dtype=f64), f64, 3.0,
                steps(16, 256), cfg.tols_large, lin_exact(3.0)),
        ODECase("vdp1", "Van der Pol mu=1, float64, batch 1", vdp_field(1.0),
                torch.tensor([[2.0, 0.0]], dtype=f64), f64, 10.0, steps(32, 2048), cfg.tols),
        ODECase("vdp5", "Van der Pol mu=5, float64, batch 1", vdp_field(5.0),
                torch.tensor([[2.0, 0.0]], dtype=f64), f64, 10.0, steps(128, 2048), cfg.tols),
        ODECase("lotka_volterra", "Lotka-Volterra, float64, batch 1", lv_field(),
                torch.tensor([[10.0, 5.0]], dtype=f64), f64, 15.0, steps(256, 2048), cfg.tols),
    ]
    for b in cfg.mlp_batches:
        cases.append(ODECase(
            f"mlp_b{b}", f"curved MLP neural ODE, float32, batch {b}", mlp_field,
            torch.randn(b, 4, generator=g, dtype=f64), torch.float32, 2.0,
            steps(16, 512 if b <= 256 else 128), cfg.tols_f32,
        ))
    if cfg.problems is not None:
        cases = [c for c in cases if c.key in cfg.problems]
    return cases


def ode_reference(case: ODECase) -> Tensor:
    """``x(t1)`` in float64 on the CPU: exact, or scipy DOP853 at rtol = atol = 1e-12."""
    if case.exact is not None:
        return case.exact(case.x0)
    import numpy as np  # noqa: PLC0415
    from scipy.integrate import solve_ivp  # noqa: PLC0415

    u = case.make_field(torch.float64, "cpu")
    shape = case.x0.shape

    def fun(t: float, y: Any) -> Any:
        with torch.no_grad():
            out = u(torch.tensor(t, dtype=torch.float64), torch.from_numpy(y).view(shape))
        return out.reshape(-1).numpy()

    sol = solve_ivp(fun, (0.0, case.t1), case.x0.reshape(-1).numpy(), method="DOP853",
                    rtol=1e-12, atol=1e-12)
    if not sol.success:
        raise RuntimeError(f"reference solve failed for {case.key}: {sol.message}")
    return torch.from_numpy(np.ascontiguousarray(sol.y[:, -1])).view(shape)


def rel_error(x: Tensor, ref: Tensor) -> float:
    """Relative RMS error ``|x - ref|_2 / |ref|_2`` over every element."""
    x64 = x.detach().to("cpu", torch.float64)
    num = torch.linalg.vector_norm(x64 - ref)
    den = torch.linalg.vector_norm(ref)
    return float(num / den) if float(den) > 0 else float(num)


# ---------------------------------------------------------------------------------- SDE problems
@dataclass
class SDECase:
    """A work-precision SDE problem on ``[0, t1]``; ``x0`` is ``(batch, d)``.

    ``drift``/``diffusion`` follow sdeflow's contract (diffusion of ``x``'s shape). ``noise`` is
    ``"diagonal"`` or ``"additive"``; ``kind`` ``"ito"`` or ``"stratonovich"``. ``exact(x0, W_t1)``
    gives the pathwise solution when it depends on ``W_t1`` only; ``exact_path(x0, dW, I, h)``
    when it needs the path on a grid (``dW``, ``I``: ``[ref_steps, *x0.shape]`` increments and
    space-time integrals ``int (W_s - W_t) ds`` of the ``ref_steps`` equal steps of size ``h``);
    otherwise the reference is a strong-order-1.5 scheme on ``ref_steps`` steps of the path.
    ``pairs`` lists (sdeflow solver, torchsde method, torchsde options) to compare at ``steps``.
    """

    key: str
    title: str
    drift: Field
    diffusion: Field
    noise: str
    kind: str
    x0: Tensor
    t1: float
    steps: tuple[int, ...]
    pairs: list[tuple[str, str, dict[str, Any]]]
    exact: Callable[[Tensor, Tensor], Tensor] | None = None
    ref_steps: int = 0
    weak: bool = True
    exact_path: Callable[[Tensor, Tensor, Tensor, float], Tensor] | None = None


def sde_cases(cfg: Config, dtype: torch.dtype = torch.float32) -> list[SDECase]:
    """OU, GBM (Ito and Stratonovich) and an additive-noise SDE with a nonlinear drift."""
    dev = torch.device(cfg.device)
    b, d = cfg.sde_batch, 2
    x0 = torch.ones(b, d, dtype=dtype, device=dev)
    theta, sig_ou = 1.0, 0.5
    mu, sig = 0.5, 0.5
    em = ("euler_maruyama", "euler", {})

    def gbm_exact_ito(x: Tensor, w: Tensor) -> Tensor:
        return x * torch.exp((mu - 0.5 * sig * sig) + sig * w)

    def gbm_exact_strat(x: Tensor, w: Tensor) -> Tensor:
        return x * torch.exp(mu + sig * w)

    def add_drift(t: Tensor, x: Tensor) -> Tensor:
        return torch.sin(2.0 * x) - x

    def add_diff(t: Tensor, x: Tensor) -> Tensor:
        return (0.5 + 0.5 * t).expand_as(x)

    ho = tuple(cfg.ho_steps)
    cases = [
        SDECase("ou", f"OU dX = -X dt + 0.5 dW, batch {b}x{d}",
                lambda t, x: -theta * x, lambda t, x: torch.full_like(x, sig_ou),
                "diagonal", "ito", x0, 1.0, cfg.em_steps, [em],
                ref_steps=max(cfg.em_steps), exact_path=ou_exact_path(theta, sig_ou)),
        SDECase("gbm", f"GBM dX = 0.5 X dt + 0.5 X dW (Ito), batch {b}x{d}",
                lambda t, x: mu * x, lambda t, x: sig * x, "diagonal", "ito", x0, 1.0,
                cfg.em_steps, [em], exact=gbm_exact_ito),
        SDECase("gbm_milstein", f"GBM (Ito), Milstein, batch {b}x{d}",
                lambda t, x: mu * x, lambda t, x: sig * x, "diagonal", "ito", x0, 1.0, ho,
                [("milstein", "milstein", {"grad_free": True})], exact=gbm_exact_ito,
                weak=False),
        SDECase("gbm_strat", f"GBM (Stratonovich), stochastic Heun, batch {b}x{d}",
                lambda t, x: mu * x, lambda t, x: sig * x, "diagonal", "stratonovich", x0, 1.0,
                ho, [("stochastic_heun", "heun", {})], exact=gbm_exact_strat, weak=False),
        SDECase("additive", f"additive dX = (sin 2X - X) dt + (1+t)/2 dW, batch {b}x{d}",
                add_drift, add_diff, "additive", "ito", 0.5 * x0, 1.0, cfg.sra_steps,
                [("sra1", "srk", {}), em], ref_steps=cfg.sra_ref_steps),
    ]
    if cfg.problems is not None:
        cases = [c for c in cases if c.key in cfg.problems]
    return cases


def ou_exact_path(theta: float, sigma: float
                  ) -> Callable[[Tensor, Tensor, Tensor, float], Tensor]:
    """OU's ``X_T`` from the path on a grid of equal steps ``h`` (MATH.md §3).

    ``X_T = e^{-theta T} x0 + sigma int_0^T e^{-theta (T - s)} dW_s``; on each step
    ``int e^{-theta (t + h - s)} dW_s = dW - theta I + O(h^2.5)`` with ``I = int (W_s - W_t) ds``
    (a Taylor expansion of the kernel; ``int (t + h - s) dW_s = I``), so the reference is exact
    up to a mean-zero global error of order ``theta^2 h^2 / sqrt(20)`` (1e-8 at h = 1/4096).
    """

    def ref(x0: Tensor, dw: Tensor, it: Tensor, h: float) -> Tensor:
        n = dw.shape[0]
        a = math.exp(-theta * h)
        w = torch.tensor([a ** (n - 1 - k) for k in range(n)], dtype=torch.float64,
                         device=dw.device)
        incr = dw.to(torch.float64) - theta * it.to(torch.float64)
        return a**n * x0.to(torch.float64) + sigma * torch.tensordot(w, incr, dims=1)

    return ref


class _TorchsdeSDE(torch.nn.Module):
    """The same callables in torchsde's interface (additive noise as a diagonal matrix)."""

    def __init__(self, f: Field, g: Field, noise: str, kind: str) -> None:
        super().__init__()
        self.noise_type, self.sde_type = noise, kind
        self._f, self._g = f, g
        self._additive = noise == "additive"

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        return self._f(t, y)

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        gy = self._g(t, y)
        return torch.diag_embed(gy) if self._additive else gy


# ===================================================================================== records
@dataclass
class Record:
    """One point of a work-precision diagram (or a hand-loop measurement)."""

    section: str
    problem: str
    library: str
    method: str
    setting: str          # "steps=128", "rtol=1e-06", "default"
    mode: str             # "matched" or "default"
    steps: int | None = None
    rtol: float | None = None
    error: float = math.nan
    error_se: float = math.nan
    weak_error: float = math.nan
    weak_se: float = math.nan
    nfe: float = math.nan
    wall: float = math.nan
    wall_min: float = math.nan
    walls: list[float] = field(default_factory=list)
    reps: int = 1
    note: str = ""

    def set_timing(self, t: Timed) -> None:
        """Copy a :class:`Timed` item's median, minimum and every round into this record."""
        self.wall, self.walls, self.reps = t.median, list(t.walls), t.reps
        self.wall_min = min(t.walls) if t.walls else math.nan

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for k, v in d.items():
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None
        return d


class Notes:
    """Notes of skipped peers and failed runs, de-duplicated, in order."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, msg: str) -> None:
        if msg not in self.items:
            self.items.append(msg)


def _short_exc(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0][:160] if msg else ''}"


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm  # noqa: PLC0415

    return tqdm(total=total, desc=desc, leave=False, disable=not enabled, file=sys.stderr,
                dynamic_ncols=True)


# ===================================================================================== handloop
def _hand_euler(u: Field, x0: Tensor, tg: Tensor, h: float) -> Callable[[], Tensor]:
    n = len(tg) - 1

    def run() -> Tensor:
        x = x0
        for i in range(n):
            x = x + h * u(tg[i], x)
        return x

    return run


def _hand_rk4(u: Field, x0: Tensor, tg: Tensor, h: float) -> Callable[[], Tensor]:
    n = len(tg) - 1
    tm = (tg[:-1] + tg[1:]) * 0.5
    h2, h6 = 0.5 * h, h / 6.0

    def run() -> Tensor:
        x = x0
        for i in range(n):
            t, t2, t1 = tg[i], tm[i], tg[i + 1]
            k1 = u(t, x)
            k2 = u(t2, x + h2 * k1)
            k3 = u(t2, x + h2 * k2)
            k4 = u(t1, x + h * k3)
            x = x + h6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return x

    return run


def _hand_em(f: Field, g: Field, x0: Tensor, tg: Tensor, h: float) -> Callable[[], Tensor]:
    n = len(tg) - 1
    sh = math.sqrt(h)

    def run() -> Tensor:
        x = x0
        for i in range(n):
            t = tg[i]
            x = x + h * f(t, x) + g(t, x) * sh * torch.randn_like(x)
        return x

    return run


def _torchode_fixed(u: Field, x0: Tensor, t1: float, h: float, method: str
                    ) -> Callable[[], Tensor]:
    to = _import("torchode")
    term = to.ODETerm(u)
    adj = to.AutoDiffAdjoint(getattr(to, method)(term), to.FixedStepController())
    b = x0.shape[0]
    t_eval = torch.tensor([0.0, t1], dtype=x0.dtype, device=x0.device).expand(b, 2)
    prob = to.InitialValueProblem(y0=x0, t_start=t_eval[:, 0], t_end=t_eval[:, -1],
                                  t_eval=t_eval)
    dt0 = torch.full((b,), h, dtype=x0.dtype, device=x0.device)

    def run() -> Tensor:
        return adj.solve(prob, dt0=dt0).ys[:, -1]

    return run


def handloop_section(cfg: Config, notes: Notes, progress: bool) -> list[Record]:
    """Per-step cost against a minimal hand-written loop (issue 2's target)."""
    dev = torch.device(cfg.device)
    f64 = torch.float64
    versions = peer_versions()
    cases: list[tuple[str, str, int, list[tuple[str, str, Callable[[], Any]]]]] = []
    gen = torch.Generator().manual_seed(cfg.seed + 11)
    u = linear_field(f64, dev)
    for batch in cfg.hl_ode_batches:
        x0 = torch.randn(batch, 4, generator=gen, dtype=f64).to(dev)
        for method in ("euler", "rk4"):
            n = cfg.hl_ode_steps.get((method, batch), 100)
            tg = torch.linspace(0.0, 1.0, n + 1, dtype=f64, device=dev)
            h = 1.0 / n
            ode = ODE(u)
            hand = (_hand_euler if method == "euler" else _hand_rk4)(u, x0, tg, h)
            variants: list[tuple[str, str, Callable[[], Any]]] = [
                ("hand", method, hand),
                ("sdeflow", method,
                 lambda ode=ode, x0=x0, m=method, n=n: solve(ode, x0, (0.0, 1.0), solver=m,
                                                             steps=n).x_final),
            ]
            if versions["torchdiffeq"]:
                tdq = _import("torchdiffeq")
                tspan = tg[[0, -1]]
                tm = TDQ_FIXED[method]
                variants.append(("torchdiffeq", tm + (" (3/8 rule)" if tm == "rk4" else ""),
                                 lambda tdq=tdq, x0=x0, tspan=tspan, tm=tm, h=h: tdq.odeint(
                                     u, x0, tspan, method=tm, options={"step_size": h})[-1]))
            if versions["torchode"] and method in TODE_FIXED:
                try:
                    variants.append(("torchode", method,
                                     _torchode_fixed(u, x0, 1.0, h, TODE_FIXED[method])))
                except Exception as exc:  # noqa: BLE001
                    notes.add(f"torchode fixed-step {method} skipped: {_short_exc(exc)}")
            cases.append((f"{method}, linear 4-d ODE, float64, batch {batch}", method, n,
                          variants))
    # Euler--Maruyama on OU
    theta, sig = 1.0, 0.5

    def f(t: Tensor, x: Tensor) -> Tensor:
        return -theta * x

    def g(t: Tensor, x: Tensor) -> Tensor:
        return torch.full_like(x, sig)

    b = cfg.hl_sde_batch
    x0s = torch.ones(b, 2, dtype=f64, device=dev)
    sde = SDE(f, g, noise="diagonal", kind="ito")
    for n in cfg.hl_sde_steps:
        tg = torch.linspace(0.0, 1.0, n + 1, dtype=f64, device=dev)
        h = 1.0 / n
        variants = [
            ("hand", "euler_maruyama", _hand_em(f, g, x0s, tg, h)),
            ("sdeflow", "euler_maruyama (seed)",
             lambda n=n: solve(sde, x0s, (0.0, 1.0), solver="euler_maruyama", steps=n,
                               seed=1).x_final),
            ("sdeflow", "euler_maruyama (BrownianPath)",
             lambda n=n: solve(sde, x0s, (0.0, 1.0), solver="euler_maruyama", steps=n,
                               brownian=BrownianPath((b, 2), seed=1, dtype=f64,
                                                     device=dev)).x_final),
        ]
        if versions["torchsde"]:
            tsde = _import("torchsde")
            ts_sde = _TorchsdeSDE(f, g, "diagonal", "ito")
            tspan = tg[[0, -1]]
            variants.append(("torchsde", "euler (default BrownianInterval)",
                             lambda tsde=tsde, ts_sde=ts_sde, tspan=tspan, h=h: tsde.sdeint(
                                 ts_sde, x0s, tspan, method="euler", dt=h)[-1]))
            variants.append(("torchsde", "euler (BrownianInterval dt=h)",
                             lambda tsde=tsde, ts_sde=ts_sde, tspan=tspan, h=h: tsde.sdeint(
                                 ts_sde, x0s, tspan, method="euler", dt=h,
                                 bm=tsde.BrownianInterval(0.0, 1.0, size=(b, 2), dtype=f64,
                                                          device=dev, dt=h))[-1]))
        cases.append((f"euler_maruyama, OU, float64, batch {b}x2", "euler_maruyama", n,
                      variants))

    total = sum(len(v) for *_, v in cases) * (cfg.hl_rounds + 1)
    bar = _progress(total, "handloop", progress)
    records: list[Record] = []
    try:
        for title, _method, n, variants in cases:
            timed: list[tuple[str, str, Timed]] = []
            for lib, meth, fn in variants:
                try:
                    _, t_first = _warm(fn, dev)
                    if t_first < 0.5:  # a second warm-up where it is cheap
                        _, t_first = _warm(fn, dev)
                except Exception as exc:  # noqa: BLE001
                    notes.add(f"handloop: {lib} {meth} on '{title}' failed: {_short_exc(exc)}")
                    bar.update(cfg.hl_rounds + 1)
                    continue
                t = Timed(f"{lib}:{meth}", fn)
                calibrate(t, t_first, cfg.min_time, cfg.cheap_extra_rounds)
                timed.append((lib, meth, t))
                bar.update(1)
            interleave([t for *_, t in timed], cfg.hl_rounds, dev, bar.update)
            for lib, meth, t in timed:
                rec = Record("handloop", title, lib, meth, f"steps={n}", "matched", steps=n)
                rec.set_timing(t)
                records.append(rec)
    finally:
        bar.close()
    return records


# ===================================================================================== ODE runs
@dataclass
class ODERun:
    """One (library, method, setting) of an ODE case: ``fn()`` returns ``(x_final, nfe)``."""

    library: str
    method: str
    setting: str
    mode: str
    fn: Callable[[], tuple[Tensor, int]]
    steps: int | None = None
    rtol: float | None = None


def _sdeflow_fixed(u: Field, x0: Tensor, t1: float, method: str, n: int
                   ) -> Callable[[], tuple[Tensor, int]]:
    ode = ODE(u)

    def run() -> tuple[Tensor, int]:
        sol = solve(ode, x0, (0.0, t1), solver=method, steps=n)
        return sol.x_final, int(sol.stats["nfe"])

    return run


def _sdeflow_adaptive(u: Field, x0: Tensor, t1: float, method: str, rtol: float | None,
                      atol: float | None) -> Callable[[], tuple[Tensor, int]]:
    ode = ODE(u)
    kw: dict[str, Any] = {} if rtol is None else {"rtol": rtol, "atol": atol}

    def run() -> tuple[Tensor, int]:
        sol = solve(ode, x0, (0.0, t1), solver=method, **kw)
        return sol.x_final, int(sol.stats["nfe"])

    return run


def _tdq_run(u: Field, x0: Tensor, t1: float, method: str | None, options: dict[str, Any],
             rtol: float | None, atol: float | None) -> Callable[[], tuple[Tensor, int]]:
    tdq = _import("torchdiffeq")
    tspan = torch.tensor([0.0, t1], dtype=x0.dtype, device=x0.device)
    kw: dict[str, Any] = {}
    if method is not None:
        kw["method"] = method
    if options:
        kw["options"] = options
    if rtol is not None:
        kw.update(rtol=rtol, atol=atol)
    c = Counter(u)

    def run() -> tuple[Tensor, int]:
        c.n = 0
        y = tdq.odeint(c, x0, tspan, **kw)
        return y[-1], c.n

    return run


def _tode_run(u: Field, x0: Tensor, t1: float, method: str, *, h: float | None = None,
              rtol: float | None = None, atol: float | None = None, default: bool = False
              ) -> Callable[[], tuple[Tensor, int]]:
    to = _import("torchode")
    c = Counter(u)
    term = to.ODETerm(c)
    b = x0.shape[0]
    t_eval = torch.tensor([0.0, t1], dtype=x0.dtype, device=x0.device).expand(b, 2)
    if default:
        def run_default() -> tuple[Tensor, int]:
            c.n = 0
            sol = to.solve_ivp(term, x0, t_eval)
            _tode_check(sol)
            return sol.ys[:, -1], c.n

        return run_default
    if h is not None:
        ctrl = to.FixedStepController()
        dt0: Tensor | None = torch.full((b,), h, dtype=x0.dtype, device=x0.device)
    else:
        ctrl = to.PIDController(atol=atol, rtol=rtol, pcoeff=0.2, icoeff=0.5, dcoeff=0.0,
                                term=term)
        dt0 = None
    adj = to.AutoDiffAdjoint(getattr(to, method)(term), ctrl)
    prob = to.InitialValueProblem(y0=x0, t_start=t_eval[:, 0], t_end=t_eval[:, -1],
                                  t_eval=t_eval)

    def run() -> tuple[Tensor, int]:
        c.n = 0
        sol = adj.solve(prob, dt0=dt0)
        _tode_check(sol)
        return sol.ys[:, -1], c.n

    return run


def _tode_check(sol: Any) -> None:
    if bool((sol.status != 0).any()):
        raise RuntimeError(f"torchode status {sol.status.unique().tolist()}")


def _scipy_run(u: Field, x0: Tensor, t1: float, method: str | None, rtol: float | None,
               atol: float | None) -> Callable[[], tuple[Tensor, int]]:
    si = _import("scipy")
    shape, dtype, device = x0.shape, x0.dtype, x0.device
    y0 = x0.detach().to("cpu", torch.float64).reshape(-1).numpy()
    kw: dict[str, Any] = {}
    if method is not None:
        kw["method"] = method
    if rtol is not None:
        kw.update(rtol=rtol, atol=atol)
    c = Counter(u)

    def fun(t: float, y: Any) -> Any:
        with torch.no_grad():
            x = torch.from_numpy(y).view(shape).to(dtype=dtype, device=device)
            out = c(torch.tensor(t, dtype=dtype, device=device), x)
        return out.reshape(-1).to("cpu", torch.float64).numpy()

    def run() -> tuple[Tensor, int]:
        c.n = 0
        sol = si.solve_ivp(fun, (0.0, t1), y0, **kw)
        if not sol.success:
            raise RuntimeError(f"scipy: {sol.message}")
        return torch.from_numpy(sol.y[:, -1].copy()).view(shape), c.n

    return run


def ode_runs(case: ODECase, section: str, cfg: Config, notes: Notes) -> list[ODERun]:
    """Every run of ``case`` in ``section`` (``ode_fixed`` or ``ode_adaptive``)."""
    dev = torch.device(cfg.device)
    u = case.make_field(case.dtype, dev)
    x0 = case.x0.to(dtype=case.dtype, device=dev)
    versions = peer_versions()
    runs: list[ODERun] = []
    if section == "ode_fixed":
        fixed = [n for n in _solvers.names(sde=False)
                 if not getattr(_solvers.get(n), "adaptive", False)
                 and n in ("euler", "midpoint", "heun", "rk4")]
        for m in fixed:
            for n in case.steps:
                runs.append(ODERun("sdeflow", m, f"steps={n}", "matched",
                                   _sdeflow_fixed(u, x0, case.t1, m, n), steps=n))
                if versions["torchdiffeq"] and m in TDQ_FIXED:
                    tm = TDQ_FIXED[m]
                    runs.append(ODERun("torchdiffeq", tm, f"steps={n}", "matched",
                                       _tdq_run(u, x0, case.t1, tm, {"step_size": case.t1 / n},
                                                None, None), steps=n))
                if versions["torchode"] and m in TODE_FIXED:
                    runs.append(ODERun("torchode", m, f"steps={n}", "matched",
                                       _tode_run(u, x0, case.t1, TODE_FIXED[m], h=case.t1 / n),
                                       steps=n))
        return runs
    # adaptive
    mine = [m for m in ("bosh3", "dopri5", "tsit5") if m in _solvers.names(sde=False)]
    peer_methods: dict[str, set[str]] = {"torchdiffeq": set(), "torchode": set(), "scipy": set()}
    for m in mine:
        if m in TDQ_ADAPTIVE:
            peer_methods["torchdiffeq"].add(TDQ_ADAPTIVE[m])
        if m in TODE_ADAPTIVE:
            peer_methods["torchode"].add(TODE_ADAPTIVE[m])
        peer_methods["scipy"].add(SCIPY_ADAPTIVE[m])
    peer_methods["scipy"].add("DOP853")
    low_order = {"bosh3", "RK23"}
    # scipy integrates the whole batch as one system with one step size: kept where that is
    # still a sensible way to solve the problem
    use_scipy = bool(versions["scipy"]) and case.batch <= cfg.scipy_max_batch
    if versions["scipy"] and not use_scipy:
        notes.add(f"ode_adaptive/{case.key}: scipy skipped (batch {case.batch} > "
                  f"{cfg.scipy_max_batch}: solve_ivp treats a batch as one big system)")
    for rtol in case.tols:
        atol = rtol * 1e-2
        st = f"rtol={rtol:.0e}"

        def keep(method: str, rtol: float = rtol) -> bool:
            # third-order pairs at tight tolerances cost 10x more and add nothing to compare
            floor = cfg.low_order_min_tol * (10.0 if case.dtype == torch.float32 else 1.0)
            return method not in low_order or rtol >= floor * 0.999

        for m in filter(keep, mine):
            runs.append(ODERun("sdeflow", m, st, "matched",
                               _sdeflow_adaptive(u, x0, case.t1, m, rtol, atol), rtol=rtol))
        if versions["torchdiffeq"]:
            for tm in filter(keep, sorted(peer_methods["torchdiffeq"])):
                runs.append(ODERun("torchdiffeq", tm, st, "matched",
                                   _tdq_run(u, x0, case.t1, tm, {}, rtol, atol), rtol=rtol))
        if versions["torchode"]:
            for tm in filter(keep, sorted(peer_methods["torchode"])):
                runs.append(ODERun("torchode", tm.lower(), st, "matched",
                                   _tode_run(u, x0, case.t1, tm, rtol=rtol, atol=atol),
                                   rtol=rtol))
        if use_scipy:
            for sm in filter(keep, sorted(peer_methods["scipy"])):
                runs.append(ODERun("scipy", sm, st, "matched",
                                   _scipy_run(u, x0, case.t1, sm, rtol, atol), rtol=rtol))
    # defaults
    runs.append(ODERun("sdeflow", "dopri5", "default", "default",
                       _sdeflow_adaptive(u, x0, case.t1, "dopri5", None, None)))
    if versions["torchdiffeq"]:
        runs.append(ODERun("torchdiffeq", "dopri5", "default", "default",
                           _tdq_run(u, x0, case.t1, None, {}, None, None)))
    if versions["torchode"]:
        runs.append(ODERun("torchode", "tsit5", "default", "default",
                           _tode_run(u, x0, case.t1, "Tsit5", default=True)))
    if use_scipy:
        runs.append(ODERun("scipy", "RK45", "default", "default",
                           _scipy_run(u, x0, case.t1, None, None, None)))
    return runs


def ode_section(section: str, cfg: Config, notes: Notes, progress: bool) -> list[Record]:
    """Work-precision of the fixed-step or adaptive ODE solvers on every ODE case."""
    dev = torch.device(cfg.device)
    cases = ode_cases(cfg)
    records: list[Record] = []
    for case in cases:
        try:
            ref = ode_reference(case)
        except Exception as exc:  # noqa: BLE001
            notes.add(f"{section}: {case.key} skipped, no reference: {_short_exc(exc)}")
            continue
        runs = ode_runs(case, section, cfg, notes)
        bar = _progress(len(runs) * (cfg.rounds + 1), f"{section} {case.key}", progress)
        timed: list[tuple[ODERun, Record, Timed]] = []
        try:
            for run in runs:
                rec = Record(section, case.key, run.library, run.method, run.setting, run.mode,
                             steps=run.steps, rtol=run.rtol)
                try:
                    with torch.no_grad():
                        (x, nfe), t_first = _warm(run.fn, dev)
                    err = rel_error(x, ref)
                    if not math.isfinite(err):
                        raise FloatingPointError("non-finite final state")
                    if err >= 1.0:
                        raise FloatingPointError(f"diverged (relative error {err:.2g})")
                except Exception as exc:  # noqa: BLE001
                    rec.note = _short_exc(exc)
                    if run.mode == "default" and run.library == "sdeflow":
                        notes.add(f"{section}: sdeflow has no default tolerances "
                                  f"({rec.note}); no sdeflow default point")
                    records.append(rec)
                    bar.update(cfg.rounds + 1)
                    continue
                rec.error, rec.nfe = err, float(nfe)
                t = Timed(f"{run.library}:{run.method}:{run.setting}",
                          _no_grad(run.fn))
                calibrate(t, t_first, cfg.min_time, cfg.cheap_extra_rounds)
                timed.append((run, rec, t))
                bar.update(1)
            interleave([t for *_, t in timed], cfg.rounds, dev, bar.update)
        finally:
            bar.close()
        for _, rec, t in timed:
            rec.set_timing(t)
            records.append(rec)
        _note_failures(section, case.key, records, notes)
    return records


def _no_grad(fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with torch.no_grad():
            return fn()

    return run


def _note_failures(section: str, problem: str, records: list[Record], notes: Notes) -> None:
    bad: dict[tuple[str, str], list[str]] = {}
    diverged: list[str] = []
    for r in records:
        if r.section != section or r.problem != problem or not r.note or r.mode != "matched":
            continue
        if r.note.startswith("FloatingPointError: diverged"):
            diverged.append(f"{r.library} {r.method} {r.setting}")
        else:
            bad.setdefault((r.library, r.method), []).append(r.setting)
    for (lib, meth), settings in bad.items():
        ex = next(r.note for r in records if r.section == section and r.problem == problem
                  and r.library == lib and r.method == meth and r.note)
        notes.add(f"{section}/{problem}: {lib} {meth} failed at {', '.join(settings)} ({ex})")
    if diverged:
        notes.add(f"{section}/{problem}: {len(diverged)} run(s) with relative error >= 1 "
                  f"(unstable or pre-asymptotic step counts) left out of the timing: "
                  f"{'; '.join(diverged[:6])}{'; ...' if len(diverged) > 6 else ''}")


# ===================================================================================== SDE runs
@dataclass
class SDESpec:
    """One (library, method, steps) of an SDE case."""

    library: str
    method: str
    steps: int | None         # None: the library's default step
    mode: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def setting(self) -> str:
        return "default" if self.steps is None else f"steps={self.steps}"


def sde_specs(case: SDECase, cfg: Config, versions: dict[str, str | None]) -> list[SDESpec]:
    """Every run of an SDE case: each (sdeflow, torchsde) pair at each step count."""
    specs: list[SDESpec] = []
    for mine, theirs, opts in case.pairs:
        for n in case.steps:
            specs.append(SDESpec("sdeflow", mine, n, "matched"))
            if versions["torchsde"]:
                specs.append(SDESpec("torchsde", theirs, n, "matched", dict(opts)))
    if versions["torchsde"] and case.key in cfg.sde_default_problems:
        specs.append(SDESpec("torchsde", _torchsde_default_method(case), None, "default"))
    return specs


def _torchsde_default_method(case: SDECase) -> str:
    """torchsde's default method for the case's noise type and kind, and its default dt."""
    if case.kind == "stratonovich":
        return "midpoint, dt=1e-3"
    return ("srk" if case.noise in ("diagonal", "additive", "scalar") else "euler") + ", dt=1e-3"


def _phi(x: Tensor) -> Tensor:
    return (x.to(torch.float64) ** 2).mean(-1)


class _ErrAcc:
    """Accumulates strong and weak error statistics over batch chunks."""

    def __init__(self) -> None:
        self.n = 0
        self.s1 = self.s2 = self.w1 = self.w2 = 0.0

    def add(self, xh: Tensor, ref: Tensor) -> None:
        e = torch.linalg.vector_norm((xh.to(torch.float64) - ref.to(torch.float64)), dim=-1)
        w = _phi(xh) - _phi(ref)
        self.n += e.numel()
        self.s1 += float(e.sum())
        self.s2 += float((e * e).sum())
        self.w1 += float(w.sum())
        self.w2 += float((w * w).sum())

    def result(self) -> tuple[float, float, float, float]:
        n = max(1, self.n)
        m, mw = self.s1 / n, self.w1 / n
        se = math.sqrt(max(0.0, self.s2 / n - m * m) / n)
        wse = math.sqrt(max(0.0, self.w2 / n - mw * mw) / n)
        return m, se, abs(mw), wse


def sdeflow_accuracy(case: SDECase, specs: list[SDESpec], cfg: Config
                     ) -> dict[int, tuple[float, float, float, float, int]]:
    """Strong/weak errors and NFE of the sdeflow specs, on shared ``BrownianPath`` chunks.

    Returns ``{index in specs: (strong, strong_se, weak, weak_se, nfe)}``.
    """
    dev = case.x0.device
    dtype = case.x0.dtype
    b, d = case.x0.shape
    idx = [i for i, s in enumerate(specs) if s.library == "sdeflow"]
    if not idx:
        return {}
    finest = max([specs[i].steps or 0 for i in idx] + [case.ref_steps])
    chunk = int(max(1, min(b, 2**24 // max(1, 2 * finest * d))))
    sde = SDE(case.drift, case.diffusion, noise=case.noise, kind=case.kind)
    ref_sde = SDE(case.drift, case.diffusion, noise="additive", kind=case.kind)
    accs = {i: _ErrAcc() for i in idx}
    nfe: dict[int, int] = {}
    for c, lo in enumerate(range(0, b, chunk)):
        x0 = case.x0[lo:lo + chunk]
        bm = BrownianPath(tuple(x0.shape), 0.0, case.t1, seed=cfg.seed * 1000 + c, dtype=dtype,
                          device=dev)
        with torch.no_grad():
            if case.exact is not None:
                ref = case.exact(x0, bm(case.t1))
            elif case.exact_path is not None:
                n = case.ref_steps
                dw, it = bm.grid([case.t1 * k / n for k in range(n + 1)], space_time=True)
                ref = case.exact_path(x0, dw, it, case.t1 / n)
                del dw, it
            else:
                ref = solve(ref_sde, x0, (0.0, case.t1), solver="sra1", steps=case.ref_steps,
                            brownian=bm).x_final
            for i in idx:
                sp = specs[i]
                sol = solve(sde, x0, (0.0, case.t1), solver=sp.method,
                            steps=sp.steps, brownian=bm)
                accs[i].add(sol.x_final, ref)
                nfe[i] = int(sol.stats["nfe"])
        del bm
    return {i: (*accs[i].result(), nfe[i]) for i in idx}


def torchsde_accuracy(case: SDECase, specs: list[SDESpec], cfg: Config
                      ) -> dict[int, tuple[float, float, float, float, int]]:
    """Strong/weak errors and NFE of the torchsde specs on one shared ``BrownianInterval``.

    The solves run from the coarsest grid to the finest and the reference last: a
    ``BrownianInterval`` queried on a coarse grid after a fine one recomputes every fine value
    through its tree (5x slower here).
    """
    tsde = _import("torchsde")
    idx = [i for i, s in enumerate(specs) if s.library == "torchsde"]
    if not idx:
        return {}
    x0 = case.x0
    b, d = x0.shape
    cf, cg = Counter(case.drift), Counter(case.diffusion)
    sde = _TorchsdeSDE(cf, cg, case.noise, case.kind)
    tspan = torch.tensor([0.0, case.t1], dtype=x0.dtype, device=x0.device)
    finest = max([specs[i].steps or 1000 for i in idx] + [case.ref_steps])
    bm = tsde.BrownianInterval(0.0, case.t1, size=(b, d), dtype=x0.dtype, device=x0.device,
                               levy_area_approximation="space-time",
                               entropy=cfg.seed * 1000 + 17, dt=case.t1 / finest)
    finals: dict[int, tuple[Tensor, int]] = {}
    with torch.no_grad():
        for i in sorted(idx, key=lambda i: specs[i].steps or 1000):
            sp = specs[i]
            cf.n = cg.n = 0
            kw: dict[str, Any] = {"bm": bm}
            if sp.steps is not None:
                kw.update(method=sp.method, dt=case.t1 / sp.steps)
            if sp.options:
                kw["options"] = dict(sp.options)
            finals[i] = (tsde.sdeint(sde, x0, tspan, **kw)[-1], cf.n + cg.n)
        if case.exact is not None:
            ref = case.exact(x0, bm(0.0, case.t1))
        elif case.exact_path is not None:
            n = case.ref_steps
            h = case.t1 / n
            pairs = [bm(k * h, (k + 1) * h, return_U=True) for k in range(n)]
            dw = torch.stack([p[0] for p in pairs])
            it = torch.stack([p[1] for p in pairs])
            del pairs
            ref = case.exact_path(x0, dw, it, h)
            del dw, it
        else:
            ref = tsde.sdeint(sde, x0, tspan, bm=bm, method="srk",
                              dt=case.t1 / case.ref_steps)[-1]
    out: dict[int, tuple[float, float, float, float, int]] = {}
    for i, (y, nfe) in finals.items():
        acc = _ErrAcc()
        acc.add(y, ref)
        out[i] = (*acc.result(), nfe)
    return out


def _sde_timed_fn(case: SDECase, sp: SDESpec) -> Callable[[], Any]:
    if sp.library == "sdeflow":
        sde = SDE(case.drift, case.diffusion, noise=case.noise, kind=case.kind)
        solver = sp.method

        def run() -> Any:
            return solve(sde, case.x0, (0.0, case.t1), solver=solver, steps=sp.steps,
                         seed=12345).x_final

        return run
    tsde = _import("torchsde")
    ts_sde = _TorchsdeSDE(case.drift, case.diffusion, case.noise, case.kind)
    tspan = torch.tensor([0.0, case.t1], dtype=case.x0.dtype, device=case.x0.device)
    kw: dict[str, Any] = {}
    if sp.steps is not None:
        kw.update(method=sp.method, dt=case.t1 / sp.steps)
    if sp.options:
        kw["options"] = dict(sp.options)

    def run_ts() -> Any:
        return tsde.sdeint(ts_sde, case.x0, tspan, **kw)[-1]

    return run_ts


def sde_section(cfg: Config, notes: Notes, progress: bool) -> list[Record]:
    """Strong and weak work-precision of the SDE solvers against torchsde."""
    dev = torch.device(cfg.device)
    versions = peer_versions()
    if not versions["torchsde"]:
        notes.add("sde: torchsde is not importable; only sdeflow is measured")
    records: list[Record] = []
    for case in sde_cases(cfg):
        specs = sde_specs(case, cfg, versions)
        recs = [Record("sde", case.key, s.library, s.method, s.setting, s.mode, steps=s.steps)
                for s in specs]
        bar = _progress(len(specs) * (cfg.rounds + 1) + 2, f"sde {case.key}", progress)
        try:
            for lib, fn in (("sdeflow", sdeflow_accuracy), ("torchsde", torchsde_accuracy)):
                try:
                    acc = fn(case, specs, cfg)
                except Exception as exc:  # noqa: BLE001
                    msg = _short_exc(exc)
                    notes.add(f"sde/{case.key}: {lib} accuracy pass failed ({msg})")
                    for i, s in enumerate(specs):
                        if s.library == lib:
                            recs[i].note = msg
                    acc = {}
                for i, (se_, sse, we, wse, nfe) in acc.items():
                    r = recs[i]
                    r.error, r.error_se, r.nfe = se_, sse, float(nfe)
                    if case.weak:
                        r.weak_error, r.weak_se = we, wse
                    if not math.isfinite(se_):
                        r.note = "non-finite result"
                bar.update(1)
            timed: list[tuple[Record, Timed]] = []
            for sp, r in zip(specs, recs):
                if r.note:
                    bar.update(cfg.rounds + 1)
                    continue
                fn = _no_grad(_sde_timed_fn(case, sp))
                try:
                    _, t_first = _warm(fn, dev)
                except Exception as exc:  # noqa: BLE001
                    r.note = _short_exc(exc)
                    notes.add(f"sde/{case.key}: {sp.library} {sp.method} failed ({r.note})")
                    bar.update(cfg.rounds + 1)
                    continue
                t = Timed(f"{sp.library}:{sp.method}:{sp.setting}", fn)
                calibrate(t, t_first, cfg.min_time, cfg.cheap_extra_rounds)
                timed.append((r, t))
                bar.update(1)
            interleave([t for _, t in timed], cfg.rounds, dev, bar.update)
            for r, t in timed:
                r.set_timing(t)
        finally:
            bar.close()
        records.extend(recs)
    return records


# ===================================================================================== ratios
def _pareto(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Non-dominated (error, cost) points, by increasing error and decreasing cost."""
    pts = sorted((e, c) for e, c in points if _finite(e) and _finite(c) and e > 0 and c > 0)
    res: list[tuple[float, float]] = []
    best = math.inf
    for e, c in pts:
        if c < best:
            res.append((e, c))
            best = c
    return res


def _interp_cost(front: list[tuple[float, float]], err: float) -> float:
    """Cost to reach ``err`` on a front (log-log linear interpolation); nan outside its range."""
    if not front:
        return math.nan
    es = [math.log(e) for e, _ in front]
    cs = [math.log(c) for _, c in front]
    le = math.log(err)
    if le < es[0] - 1e-12 or le > es[-1] + 1e-12:
        return math.nan
    for k in range(len(es) - 1):
        if es[k] <= le <= es[k + 1]:
            w = 0.0 if es[k + 1] == es[k] else (le - es[k]) / (es[k + 1] - es[k])
            return math.exp(cs[k] + w * (cs[k + 1] - cs[k]))
    return math.exp(cs[-1]) if abs(le - es[-1]) < 1e-9 else math.exp(cs[0])


def equal_error_ratio(mine: list[tuple[float, float]], theirs: list[tuple[float, float]],
                      k: int = 9) -> float:
    """Geometric mean over the common error range of cost_mine(err) / cost_theirs(err).

    Each side is reduced to its Pareto front (the cheapest way it has to reach an error);
    ``nan`` when the error ranges do not overlap.
    """
    a, b = _pareto(mine), _pareto(theirs)
    if len(a) < 1 or len(b) < 1:
        return math.nan
    lo = max(a[0][0], b[0][0])
    hi = min(a[-1][0], b[-1][0])
    if not lo <= hi:
        return math.nan
    if lo == hi:
        errs = [lo]
    else:
        errs = [math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * i / (k - 1))
                for i in range(k)]
    logs = []
    for e in errs:
        ca, cb = _interp_cost(a, e), _interp_cost(b, e)
        if math.isfinite(ca) and math.isfinite(cb):
            logs.append(math.log(ca / cb))
    return math.exp(sum(logs) / len(logs)) if logs else math.nan


def _ok(r: Record) -> bool:
    return not r.note and math.isfinite(r.wall) and math.isfinite(r.error)


def matched_ratios(records: list[Record], section: str,
                   pairs: dict[str, dict[str, list[str]]]) -> list[dict[str, Any]]:
    """Ratios sdeflow / peer at the same setting, for each problem and method pair.

    ``pairs[peer][sdeflow_method]`` lists the peer's methods matched with it. Returns rows with
    the median (and range) over settings of the wall-time, error and NFE ratios, and the
    equal-error wall-time ratio of the two methods' curves.
    """
    rows: list[dict[str, Any]] = []
    sec = [r for r in records if r.section == section and r.mode == "matched"]
    problems = list(dict.fromkeys(r.problem for r in sec))
    for prob in problems:
        pr = [r for r in sec if r.problem == prob]
        for peer, mapping in pairs.items():
            for mine, theirs_list in mapping.items():
                for theirs in theirs_list:
                    a = {r.setting: r for r in pr if r.library == "sdeflow" and r.method == mine
                         and _ok(r)}
                    b = {r.setting: r for r in pr if r.library == peer and r.method == theirs
                         and _ok(r)}
                    common = [s for s in a if s in b]
                    if not common:
                        continue
                    wr = [a[s].wall / b[s].wall for s in common]
                    er = [a[s].error / b[s].error for s in common if b[s].error > 0]
                    nr = [a[s].nfe / b[s].nfe for s in common if b[s].nfe > 0]
                    eq = equal_error_ratio([(r.error, r.wall) for r in a.values()],
                                           [(r.error, r.wall) for r in b.values()])
                    rows.append({
                        "section": section, "problem": prob, "peer": peer, "sdeflow": mine,
                        "peer_method": theirs, "n_settings": len(common),
                        "time_ratio": _median(wr), "time_ratio_min": min(wr),
                        "time_ratio_max": max(wr),
                        "error_ratio": _median(er) if er else math.nan,
                        "nfe_ratio": _median(nr) if nr else math.nan,
                        "equal_error_time_ratio": eq,
                    })
    return rows


def library_ratios(records: list[Record], section: str, kind: str = "error"
                   ) -> list[dict[str, Any]]:
    """Equal-error wall-time ratio sdeflow / peer, each library's best method at each error."""
    rows: list[dict[str, Any]] = []
    sec = [r for r in records if r.section == section and _ok(r)]
    for prob in dict.fromkeys(r.problem for r in sec):
        pr = [r for r in sec if r.problem == prob]
        mine = [(getattr(r, kind), r.wall) for r in pr if r.library == "sdeflow"]
        for peer in dict.fromkeys(r.library for r in pr if r.library != "sdeflow"):
            theirs = [(getattr(r, kind), r.wall) for r in pr if r.library == peer]
            rows.append({"section": section, "problem": prob, "peer": peer,
                         "equal_error_time_ratio": equal_error_ratio(mine, theirs)})
    return rows


def handloop_ratios(records: list[Record]) -> list[dict[str, Any]]:
    """Per case: per-step time of each variant and its ratio to the hand loop."""
    rows: list[dict[str, Any]] = []
    for case in dict.fromkeys((r.problem, r.setting) for r in records
                              if r.section == "handloop"):
        rs = [r for r in records if r.section == "handloop" and (r.problem, r.setting) == case]
        hand = next((r for r in rs if r.library == "hand"), None)
        if hand is None:
            continue
        for r in rs:
            rows.append({"case": case[0], "steps": r.steps, "library": r.library,
                         "method": r.method, "us_per_step": r.wall / (r.steps or 1) * 1e6,
                         "ratio_to_hand": r.wall / hand.wall,
                         "ratio_to_hand_min": r.wall_min / hand.wall_min})
    return rows


PAIRS_FIXED = {
    "torchdiffeq": {m: [TDQ_FIXED[m]] for m in TDQ_FIXED},
    "torchode": {m: [m] for m in TODE_FIXED},
}
PAIRS_ADAPTIVE = {
    "torchdiffeq": {"bosh3": ["bosh3"], "dopri5": ["dopri5"]},
    "torchode": {"dopri5": ["dopri5"], "tsit5": ["tsit5", "dopri5"]},
    "scipy": {"bosh3": ["RK23"], "dopri5": ["RK45"], "tsit5": ["RK45"]},
}
PAIRS_SDE = {"torchsde": {"euler_maruyama": ["euler"], "milstein": ["milstein"],
                          "stochastic_heun": ["heun"], "sra1": ["srk"]}}


# ===================================================================================== report
def _fmt(x: float, spec: str = ".2f") -> str:
    return "-" if x is None or not math.isfinite(x) else format(x, spec)


def format_tables(result: dict[str, Any]) -> str:
    """The printed report: ratio tables per section (``< 1``: sdeflow is faster)."""
    lines: list[str] = []
    meta = result["meta"]
    lines.append(f"sdeflow bench ({meta['profile']}): {meta['date']}, {meta['machine']}, "
                 f"torch {meta['torch']}, {meta['threads']} thread(s); medians of "
                 f"{meta.get('hl_rounds', '?')} (hand loop) / {meta.get('rounds', '?')} "
                 f"(work-precision) "
                 f"interleaved rounds")
    hl = result["ratios"].get("handloop", [])
    if hl:
        lines += ["", "Per-step cost against a minimal hand-written torch loop "
                  "(ratio = wall / hand loop wall; issue 2 target <= 1.15)"]
        lines.append(f"  {'case':<44} {'steps':>5}  {'library':<11} {'method':<32} "
                     f"{'us/step':>9} {'ratio':>6}")
        for r in hl:
            lines.append(f"  {r['case']:<44} {r['steps']:>5}  {r['library']:<11} "
                         f"{r['method']:<32} {_fmt(r['us_per_step'], '.1f'):>9} "
                         f"{_fmt(r['ratio_to_hand']):>6}")
    for sec, title in (("ode_fixed", "Fixed-step ODE"), ("ode_adaptive", "Adaptive ODE"),
                       ("sde", "SDE")):
        rows = result["ratios"].get(sec, [])
        if not rows:
            continue
        setting = "tolerance" if sec == "ode_adaptive" else "step count"
        lines += ["", f"{title}: sdeflow / peer at the same method and {setting} (median over "
                  f"{setting}s; < 1 = sdeflow cheaper); eq-err = wall-time ratio at equal error"]
        lines.append(f"  {'problem':<16} {'peer':<11} {'sdeflow':<16} {'peer method':<12} "
                     f"{'time':>6} {'[min-max]':>13} {'error':>7} {'nfe':>6} {'eq-err':>7}")
        for r in rows:
            rng = f"[{_fmt(r['time_ratio_min'])}-{_fmt(r['time_ratio_max'])}]"
            lines.append(f"  {r['problem']:<16} {r['peer']:<11} {r['sdeflow']:<16} "
                         f"{r['peer_method']:<12} {_fmt(r['time_ratio']):>6} {rng:>13} "
                         f"{_fmt(r['error_ratio']):>7} {_fmt(r['nfe_ratio']):>6} "
                         f"{_fmt(r['equal_error_time_ratio']):>7}")
        lib = result["ratios"].get(sec + "_library", [])
        if lib:
            lines.append("  best method of each library, wall-time ratio at equal error:")
            for r in lib:
                lines.append(f"    {r['problem']:<16} sdeflow / {r['peer']:<11} "
                             f"{_fmt(r['equal_error_time_ratio'])}")
    ahead = peer_ahead(result["ratios"])
    lines += ["", "Where a peer is ahead (cheaper at equal error, or sdeflow above the 1.15 "
              "hand-loop target):"]
    lines += [f"  - {a}" for a in ahead] if ahead else ["  (none)"]
    if result["notes"]:
        lines += ["", "Notes:"] + [f"  - {n}" for n in result["notes"]]
    return "\n".join(lines)


def markdown_tables(result: dict[str, Any]) -> str:
    """The ratio tables as Markdown (written to ``bench.md``; pasted into docs/benchmarks.md)."""
    r = result["ratios"]
    md: list[str] = []
    hl = r.get("handloop", [])
    if hl:
        md += ["### Per-step cost against a minimal hand-written loop", "",
               "| case | steps | library | method | us/step | ratio to hand loop |",
               "|---|---:|---|---|---:|---:|"]
        md += [f"| {x['case']} | {x['steps']} | {x['library']} | {x['method']} | "
               f"{_fmt(x['us_per_step'], '.1f')} | {_fmt(x['ratio_to_hand'])} |" for x in hl]
        md.append("")
    titles = {"ode_fixed": "Fixed-step ODE (same method, same step counts)",
              "ode_adaptive": "Adaptive ODE (same tolerances)",
              "sde": "SDE (same method, same step counts)"}
    for sec, title in titles.items():
        rows = r.get(sec, [])
        if not rows:
            continue
        md += [f"### {title}", "",
               "| problem | peer | sdeflow | peer method | time ratio (median) | range | "
               "error ratio | NFE ratio | time ratio at equal error |",
               "|---|---|---|---|---:|---:|---:|---:|---:|"]
        md += [f"| {x['problem']} | {x['peer']} | {x['sdeflow']} | {x['peer_method']} | "
               f"{_fmt(x['time_ratio'])} | {_fmt(x['time_ratio_min'])}-"
               f"{_fmt(x['time_ratio_max'])} | {_fmt(x['error_ratio'])} | "
               f"{_fmt(x['nfe_ratio'])} | {_fmt(x['equal_error_time_ratio'])} |" for x in rows]
        md.append("")
        lib = r.get(sec + "_library", [])
        if lib:
            probs = list(dict.fromkeys(x["problem"] for x in lib))
            peers = list(dict.fromkeys(x["peer"] for x in lib))
            md += ["Best method of each library, wall-time ratio sdeflow / peer at equal error:",
                   "", "| problem | " + " | ".join(peers) + " |",
                   "|---|" + "---:|" * len(peers)]
            for pr in probs:
                cells = []
                for pe in peers:
                    v = next((x["equal_error_time_ratio"] for x in lib
                              if x["problem"] == pr and x["peer"] == pe), math.nan)
                    cells.append(_fmt(v))
                md.append(f"| {pr} | " + " | ".join(cells) + " |")
            md.append("")
    ahead = peer_ahead(r)
    md += ["### Where a peer is ahead", ""]
    md += [f"- {a}" for a in ahead] if ahead else ["- none"]
    return "\n".join(md) + "\n"


def peer_ahead(ratios: dict[str, Any]) -> list[str]:
    """Every comparison a peer wins, as sentences (from the ratio tables of a result)."""
    out: list[str] = []
    hl = ratios.get("handloop", [])
    for case in dict.fromkeys((r["case"], r["steps"]) for r in hl):
        rs = [r for r in hl if (r["case"], r["steps"]) == case]
        mine = [r for r in rs if r["library"] == "sdeflow"]
        if not mine:
            continue
        best = min(r["ratio_to_hand"] for r in mine)
        for r in mine:
            if r["ratio_to_hand"] > 1.15:
                out.append(f"hand loop, {case[0]}, {case[1]} steps: sdeflow {r['method']} "
                           f"is {r['ratio_to_hand']:.2f}x the hand loop (target 1.15)")
        for r in rs:
            if r["library"] not in ("sdeflow", "hand") and r["ratio_to_hand"] < best:
                out.append(f"hand loop, {case[0]}, {case[1]} steps: {r['library']} "
                           f"{r['method']} {r['ratio_to_hand']:.2f}x the hand loop, sdeflow "
                           f"{best:.2f}x")
    for sec in ("ode_fixed", "ode_adaptive", "sde"):
        for r in ratios.get(sec, []):
            t, e, q = r["time_ratio"], r["error_ratio"], r["equal_error_time_ratio"]
            # ahead = cheaper at equal error; without an overlap of the error ranges, slower at
            # the same setting without being more accurate
            if (_finite(q) and q > 1.0) or (not _finite(q) and _finite(t) and t > 1.0
                                            and not (_finite(e) and e < 0.9)):
                out.append(f"{sec}/{r['problem']}: {r['peer']} {r['peer_method']} vs sdeflow "
                           f"{r['sdeflow']}: time ratio {_fmt(t)} at the same setting (error "
                           f"ratio {_fmt(e)}), {_fmt(q)} at equal error")
        for r in ratios.get(sec + "_library", []):
            q = r["equal_error_time_ratio"]
            if _finite(q) and q > 1.0:
                out.append(f"{sec}/{r['problem']}: {r['peer']}'s best method reaches equal "
                           f"error {q:.2f}x faster than sdeflow's best")
    return out


# ===================================================================================== plots
def _series(records: list[Record]) -> dict[tuple[str, str], list[Record]]:
    out: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        if r.mode == "matched":
            out.setdefault((r.library, r.method), []).append(r)
    return out


def plot_workprecision(records: list[Record], problems: list[str], titles: dict[str, str],
                       xkey: str, ykey: str, path: Path, suptitle: str) -> Path | None:
    """One log-log panel per problem: ``ykey`` (error) against ``xkey`` (wall or nfe)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    probs = [p for p in problems if any(r.problem == p and _finite(getattr(r, ykey))
                                        and _finite(getattr(r, xkey)) for r in records)]
    if not probs:
        return None
    ncol = min(4, len(probs))
    nrow = math.ceil(len(probs) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.6 * nrow + 1.2), squeeze=False)
    handles: dict[str, Any] = {}
    method_marker: dict[str, str] = {}
    for ax, prob in zip(axes.flat, probs):
        pr = [r for r in records if r.problem == prob and not r.note]
        for (lib, meth), rs in _series(pr).items():
            # connect the points in the order of the setting (more steps / tighter rtol), not
            # of the measured time, so that timing noise does not zig-zag the curves
            ordered = sorted(rs, key=lambda r: (r.steps or 0, -(r.rtol or 0.0)))
            pts = [(getattr(r, xkey), getattr(r, ykey)) for r in ordered
                   if _finite(getattr(r, xkey)) and _finite(getattr(r, ykey))
                   and getattr(r, ykey) > 0]
            if not pts:
                continue
            mk = method_marker.setdefault(meth, MARKERS[len(method_marker) % len(MARKERS)])
            ls = "-" if lib == "sdeflow" else "--"
            (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], ls, marker=mk,
                              color=LIB_COLORS.get(lib, "k"), ms=4, lw=1.2, alpha=0.9)
            handles.setdefault(f"{lib} {meth}", line)
        for r in pr:
            if r.mode == "default" and _finite(getattr(r, xkey)) and _finite(getattr(r, ykey)) \
                    and getattr(r, ykey) > 0:
                (pt,) = ax.plot([getattr(r, xkey)], [getattr(r, ykey)], "*", ms=13,
                                color=LIB_COLORS.get(r.library, "k"), mec="k", mew=0.6)
                handles.setdefault(f"{r.library} default ({r.method})", pt)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_ticks(ax)
        ax.set_title(titles.get(prob, prob), fontsize=9)
        ax.set_xlabel("wall time [s]" if xkey == "wall" else "NFE", fontsize=8)
        ax.set_ylabel(_ylabel(ykey), fontsize=8)
        ax.tick_params(which="both", labelsize=6)
        ax.grid(True, which="major", alpha=0.3)
    for ax in list(axes.flat)[len(probs):]:
        ax.set_visible(False)
    fig.suptitle(suptitle, fontsize=11)
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center",
               ncol=min(5, len(handles)), fontsize=7, frameon=False)
    nleg = math.ceil(len(handles) / 5)
    fig.tight_layout(rect=(0, min(0.35, 0.045 * nleg + 0.02) / nrow * 1.2, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _log_ticks(ax: Any) -> None:
    """Readable log ticks: labels at 1-2-5 steps on short ranges, decades on long ones."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: PLC0415

    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis.get_scale() != "log" or lo <= 0 or hi <= 0:
            continue
        decades = math.log10(hi / lo)
        subs = (1.0, 2.0, 5.0) if decades < 2.5 else (1.0,)
        axis.set_major_locator(LogLocator(base=10.0, subs=subs))
        axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.0e}" if v < 1e-2
                                               or v >= 1e4 else f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())


def _ylabel(key: str) -> str:
    return {"error": "error", "weak_error": "weak error |E phi(X) - E phi(X_h)|"}.get(key, key)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def plot_handloop(records: list[Record], path: Path) -> Path | None:
    """Bars: wall time of each variant divided by the hand loop's, grouped by case."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = [r for r in handloop_ratios(records) if r["library"] != "hand"]
    if not rows:
        return None
    cases = list(dict.fromkeys((r["case"], r["steps"]) for r in rows))
    ys: list[float] = []
    labels: list[str] = []
    y = 0.0
    fig, ax = plt.subplots(figsize=(9.5, 0.24 * len(rows) + 0.45 * len(cases) + 1.2))
    for case, steps in cases:
        ax.text(0.0, y - 0.15, f"{case}, {steps} steps", transform=ax.get_yaxis_transform(),
                fontsize=7.5, fontweight="bold", va="bottom", ha="left")
        y += 0.55
        for r in (r for r in rows if (r["case"], r["steps"]) == (case, steps)):
            ratio = r["ratio_to_hand"]
            ax.barh(y, ratio, height=0.8, color=LIB_COLORS.get(r["library"], "k"), alpha=0.8)
            ax.text(ratio, y, f" {ratio:.2f}", va="center", fontsize=6.5)
            ys.append(y)
            labels.append(f"{r['library']} {r['method']}")
            y += 1.0
        y += 0.6
    ax.axvline(1.0, color="k", lw=0.8)
    ax.axvline(1.15, color="k", lw=0.8, ls=":")
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=6.5)
    ax.set_ylim(y - 0.4, -0.6)
    ax.set_xscale("log")
    _log_ticks(ax)
    ax.tick_params(which="both", labelsize=7)
    ax.set_xlabel("wall time / minimal hand-written torch loop of the same method "
                  "(log scale; solid: 1, dotted: 1.15)", fontsize=8)
    ax.set_title("Per-step cost relative to a hand-written loop (medians of interleaved rounds)",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_plots(records: list[Record], out: Path, titles: dict[str, str]) -> list[str]:
    """Every PNG of a run; returns their file names."""
    made: list[Path | None] = []
    made.append(plot_handloop(records, out / "bench_handloop.png"))
    for sec, name, sup in (("ode_fixed", "ode_fixed", "Fixed-step ODE solvers"),
                           ("ode_adaptive", "ode_adaptive", "Adaptive ODE solvers")):
        rs = [r for r in records if r.section == sec]
        probs = list(dict.fromkeys(r.problem for r in rs))
        made.append(plot_workprecision(rs, probs, titles, "wall", "error",
                                       out / f"bench_{name}.png",
                                       f"{sup}: relative error vs wall time"))
        made.append(plot_workprecision(rs, probs, titles, "nfe", "error",
                                       out / f"bench_{name}_nfe.png",
                                       f"{sup}: relative error vs NFE"))
    rs = [r for r in records if r.section == "sde"]
    probs = list(dict.fromkeys(r.problem for r in rs))
    made.append(plot_workprecision(rs, probs, titles, "wall", "error",
                                   out / "bench_sde_strong.png",
                                   "SDE solvers: strong error E|X_T - X^h_T| vs wall time"))
    made.append(plot_workprecision(rs, probs, titles, "nfe", "error",
                                   out / "bench_sde_strong_nfe.png",
                                   "SDE solvers: strong error vs NFE (drift + diffusion)"))
    made.append(plot_workprecision(rs, probs, titles, "wall", "weak_error",
                                   out / "bench_sde_weak.png",
                                   "SDE solvers: weak error (phi = |x|^2/d) vs wall time"))
    return [p.name for p in made if p is not None]


# ===================================================================================== suite
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Date, machine, cores, torch and peer versions."""
    return {
        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": f"{_cpu_model()} ({platform.system()} {platform.machine()}), "
                   f"{os.cpu_count()} cores",
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "peers": peer_versions(),
    }


def run_suite(cfg: Config, out: Path | str | None = None, progress: bool = True,
              command: str | None = None) -> dict[str, Any]:
    """Run the sections of ``cfg``; write ``bench.json`` and the PNGs to ``out`` (if given).

    Returns the result dictionary (``meta``, ``records``, ``ratios``, ``notes``, ``files``).
    """
    t_start = time.perf_counter()
    threads_before = torch.get_num_threads()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    try:
        return _run_suite(cfg, out, progress, command, t_start)
    finally:
        torch.set_num_threads(threads_before)


def _run_suite(cfg: Config, out: Path | str | None, progress: bool, command: str | None,
               t_start: float) -> dict[str, Any]:
    meta = machine_info()  # the date is the start of the run
    notes = Notes()
    for name, ver in peer_versions().items():
        if ver is None:
            notes.add(f"{name} is not importable: its rows are skipped")
    records: list[Record] = []
    timings: dict[str, float] = {}
    sections = list(cfg.sections)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records += _run_sections(cfg, sections, notes, progress, timings)
    seen: set[str] = set()
    for w in caught:
        msg = f"warning ({w.category.__name__}): {str(w.message).splitlines()[0][:200]}"
        if msg not in seen and len(seen) < 12:
            seen.add(msg)
            notes.add(msg)

    ratios = compute_ratios(records)
    titles = problem_titles(cfg)
    meta.update(profile=cfg.profile, rounds=cfg.rounds, hl_rounds=cfg.hl_rounds,
                min_time=cfg.min_time,
                device=cfg.device, command=command or "", seconds=0.0,
                section_seconds=timings)
    result: dict[str, Any] = {"meta": meta, "notes": notes.items, "ratios": ratios,
                              "records": records, "files": []}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        try:
            result["files"] = make_plots(records, out, titles)
        except Exception as exc:  # noqa: BLE001
            notes.add(f"plots failed: {_short_exc(exc)}")
            traceback.print_exc(file=sys.stderr)
        (out / "bench.md").write_text(markdown_tables(result))
        meta["seconds"] = time.perf_counter() - t_start
        write_json(result, out / "bench.json")
        result["files"] += ["bench.json", "bench.md"]
    meta["seconds"] = time.perf_counter() - t_start
    return result


def _run_sections(cfg: Config, sections: list[str], notes: Notes, progress: bool,
                  timings: dict[str, float]) -> list[Record]:
    known = Config().sections
    bad = [sec for sec in sections if sec not in known]
    if bad:
        raise ValueError(f"sections: unknown section(s) {bad}; known: {', '.join(known)}")
    records: list[Record] = []
    for sec in sections:
        t0 = time.perf_counter()
        try:
            if sec == "handloop":
                records += handloop_section(cfg, notes, progress)
            elif sec == "ode_fixed":
                records += ode_section("ode_fixed", cfg, notes, progress)
            elif sec == "ode_adaptive":
                if not sdeflow_adaptive_available():
                    notes.add("ode_adaptive skipped: sdeflow registers no 'dopri5' solver yet "
                              "(the adaptive solvers have not landed)")
                    continue
                records += ode_section("ode_adaptive", cfg, notes, progress)
            else:
                records += sde_section(cfg, notes, progress)
        except Exception as exc:  # noqa: BLE001  (one broken section must not lose the rest)
            notes.add(f"section {sec} aborted: {_short_exc(exc)}")
            traceback.print_exc(file=sys.stderr)
        timings[sec] = time.perf_counter() - t0
        if progress:
            print(f"[sdeflow bench] {sec}: {timings[sec]:.0f} s", file=sys.stderr)
    return records


def compute_ratios(records: list[Record]) -> dict[str, Any]:
    """Every ratio table of a run, from its records."""
    return {
        "handloop": handloop_ratios(records),
        "ode_fixed": matched_ratios(records, "ode_fixed", PAIRS_FIXED),
        "ode_adaptive": matched_ratios(records, "ode_adaptive", PAIRS_ADAPTIVE),
        "ode_adaptive_library": library_ratios(records, "ode_adaptive"),
        "sde": matched_ratios(records, "sde", PAIRS_SDE),
    }


def problem_titles(cfg: Config) -> dict[str, str]:
    """Panel titles of the problems of ``cfg``."""
    titles = {c.key: c.title for c in ode_cases(cfg)}
    titles.update({c.key: c.title for c in sde_cases(cfg)})
    return titles


def load_result(path: Path | str) -> dict[str, Any]:
    """Read a ``bench.json`` back (records as :class:`Record`, ratios recomputed)."""
    data = json.loads(Path(path).read_text())
    names = set(Record.__dataclass_fields__)
    floats = {k for k, f in Record.__dataclass_fields__.items() if f.type in ("float", float)}
    recs = []
    for r in data["records"]:
        kw = {k: (math.nan if v is None and k in floats else v) for k, v in r.items()
              if k in names}
        recs.append(Record(**kw))
    data["records"] = recs
    data["ratios"] = compute_ratios(recs)
    return data


def _clean(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, Record):
        return _clean(x.as_dict())
    return x


def write_json(result: dict[str, Any], path: Path) -> None:
    """Write the result as JSON (non-finite numbers as ``null``)."""
    path.write_text(json.dumps(_clean(result), indent=1))


# ===================================================================================== CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sdeflow bench",
        description="Benchmarks against torchdiffeq, torchsde, torchode and scipy: per-step "
                    "cost against a hand-written loop, work-precision diagrams (PNG), JSON.",
    )
    p.add_argument("--quick", action="store_true",
                   help="small sizes and 3 rounds (< 2 minutes on 2 cores)")
    p.add_argument("--profile", choices=("full", "quick", "tiny"), default=None,
                   help="preset (default: full; --quick is --profile quick)")
    p.add_argument("--out", default="bench_out", help="output folder (default: bench_out)")
    p.add_argument("--only", default=None,
                   help="comma-separated sections: handloop, ode_fixed, ode_adaptive, sde")
    p.add_argument("--problems", default=None,
                   help="comma-separated problem keys to keep (e.g. vdp1,ou)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: stable timings on a shared machine; "
                        "0 keeps torch's default)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    p.add_argument("--from-json", default=None, metavar="FILE",
                   help="run nothing: re-print the tables and redraw the PNGs (into --out) "
                        "from a bench.json")
    return p


def main(argv: list[str] | None = None) -> int:
    """``sdeflow bench [--quick] [--out DIR]``: run, print the ratio tables, write JSON + PNG."""
    args = build_parser().parse_args(argv)
    if args.from_json:
        result = load_result(args.from_json)
        cfg = Config.for_profile(result["meta"].get("profile", "full"))
        out = Path(args.out)
        result["files"] = make_plots(result["records"], out, problem_titles(cfg))
        (out / "bench.md").write_text(markdown_tables(result))
        result["files"].append("bench.md")
        print(format_tables(result))
        print(f"\nredrew {', '.join(result['files'])} in {out}")
        return 0
    profile = args.profile or ("quick" if args.quick else "full")
    cfg = Config.for_profile(profile)
    if args.only:
        secs = tuple(s.strip().replace("-", "_") for s in args.only.split(",") if s.strip())
        bad = [s for s in secs if s not in Config().sections]
        if bad:
            print(f"--only: unknown section(s) {', '.join(bad)}; known: "
                  f"{', '.join(Config().sections)}", file=sys.stderr)
            return 2
        cfg.sections = secs
    if args.problems:
        cfg.problems = tuple(s.strip() for s in args.problems.split(",") if s.strip())
    if args.rounds is not None:
        if args.rounds < 1:
            print("--rounds: expected a positive integer", file=sys.stderr)
            return 2
        cfg.rounds = cfg.hl_rounds = args.rounds
    cfg.device, cfg.seed, cfg.threads = args.device, args.seed, args.threads
    command = "sdeflow bench " + " ".join(argv if argv is not None else sys.argv[1:])
    result = run_suite(cfg, args.out, progress=not args.no_progress, command=command.strip())
    print(format_tables(result))
    print(f"\nwrote {', '.join(result['files'])} to {args.out} "
          f"in {result['meta']['seconds']:.0f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
