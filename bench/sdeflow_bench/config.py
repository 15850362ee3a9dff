"""Benchmark configuration: the presets (full, quick, tiny) and the peers' method names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

Tensor = torch.Tensor
Field = Callable[[Tensor, Tensor], Tensor]

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


