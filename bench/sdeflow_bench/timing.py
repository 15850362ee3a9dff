"""Interleaved timing: repeat a call to a minimum time, rounds in shifting orders, medians."""

from __future__ import annotations

import gc
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .config import CHEAP, CHEAP_EXTRA_ROUNDS

Tensor = torch.Tensor
Field = Callable[[Tensor, Tensor], Tensor]

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
        return median_of(self.walls) if self.walls else math.nan


def median_of(xs: Sequence[float]) -> float:
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


def warm_up(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """Call ``fn`` once (warm-up); return its result and the time it took."""
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


