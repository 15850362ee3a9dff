"""Look-back checking of hooks: the loop runs a stretch of steps without calling the hooks,
then lets them check the whole stretch at once (docs/events.md, "Cost").

A hook that can do this (an event monitor without the bridge correction) has ``defer()`` and
``scan(ts, xs)``: given the end times and states of ``K`` accepted steps it either finds
nothing, or names the first step that needs it, having moved its memory to that step's
start. The loop then restores what it had at that step's start (kept here as references,
nothing copied) and runs that step again with the hooks called, exactly as it would have
without look-back: the steps and the noise are the same, so the re-run step is bitwise the
same step. For an event that never fires, ``fn`` runs once per stretch (on the stacked states)
instead of once per step, and the loop reads back to the host once or twice per stretch. Only
states of up to :data:`LOOK_STATE_MAX` bytes are looked back over: for larger ones a check is
bound by memory traffic, and it costs least right after the step, while the state is still in
the cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

Tensor = torch.Tensor

#: most bytes of states kept for one stretch (they are the loop's own tensors, not copies; the
#: check stacks them once more into one buffer)
LOOK_BYTES = 2**20
#: states larger than this are checked on every step instead: a check is then bound by memory
#: traffic, not by the cost of calling operations, and it is cheapest while the state is
#: still in the cache (bench/stiff/events_results.md)
LOOK_STATE_MAX = 2**16
#: stretches shorter than this are not worth it: the hooks see every step
MIN_STRETCH = 8


class Lookback:
    """The steps since the hooks last looked (at most ``size`` of them): per step, what the
    loop needs to re-run it (``entries``, appended by the loop), the time it ended at (``ts``,
    adaptive loop) and the state it ended in (``xs``)."""

    def __init__(self, hook: Any, size: int) -> None:
        self.hook, self.size_max, self.size = hook, size, size
        self.hold = 0  # steps still to run with the hooks called before the next stretch
        self.hold_len = MIN_STRETCH
        self.k0 = 0
        self.entries: list[Any] = []
        self.xs: list[Tensor] = []
        self.ts: list[float] = []

    @staticmethod
    def make(hooks: Sequence[Any], x0: Tensor, longest: int) -> Lookback | None:
        """A look-back for ``hooks`` (one hook that can defer), stretches of at most
        ``longest`` steps and :data:`LOOK_BYTES` of states; ``None``: call them every step
        (also for a state over :data:`LOOK_STATE_MAX` bytes)."""
        if len(hooks) != 1 or not callable(getattr(hooks[0], "defer", None)) \
                or not hooks[0].defer():
            return None
        b = max(1, x0.numel() * x0.element_size())
        if b > LOOK_STATE_MAX:
            return None
        size = min(longest, LOOK_BYTES // b)
        return Lookback(hooks[0], size) if size >= MIN_STRETCH else None

    def start(self, k: int) -> None:
        """A new stretch from step ``k``."""
        self.k0 = k
        self.entries.clear()
        self.xs.clear()
        self.ts.clear()

    def scan(self, ts: list[float] | Tensor | None = None) -> int | None:
        """The hook's verdict on the stretch (``ts``: its step ends, if not kept here).

        The stretches adapt to how often the hook finds something: a clean stretch doubles
        the next one (up to the most); a find at step ``f`` makes the next one ``f + 1``
        steps, and where that is shorter than :data:`MIN_STRETCH` the hooks are called on
        every step for a while (doubling while the finds go on), so a busy stretch of events
        costs at most a few re-run steps in :data:`MIN_STRETCH` + ``hold``."""
        if not self.xs:
            return None
        first = self.hook.scan(self.ts if ts is None else ts, self.xs)
        if first is None:
            self.size = min(self.size_max, 2 * self.size)
            self.hold_len = MIN_STRETCH
        elif first + 1 < MIN_STRETCH:
            self.hold = self.hold_len
            self.hold_len = min(2 * self.hold_len, 64 * MIN_STRETCH)
            self.size = MIN_STRETCH
        else:
            self.size = first + 1
            self.hold_len = MIN_STRETCH
        return first

    def rewind(self, first: int) -> Any:
        """The entry of step ``first`` of the stretch; the stretch is emptied."""
        entry = self.entries[first]
        self.start(self.k0 + first)
        return entry


__all__ = ["Lookback", "LOOK_BYTES", "LOOK_STATE_MAX", "MIN_STRETCH"]
