"""The result of :func:`sdeflow.solve`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

Tensor = torch.Tensor


@dataclass
class Solution:
    """Saved times and states of a solve.

    Attributes:
        ts: ``[T]`` saved times (dtype and device of the state).
        ys: ``[T, *x0.shape]`` saved states; ``ys[i]`` is the state at ``ts[i]``.
        stats: counters: ``nfe`` (every evaluation of a vector field, drift or diffusion),
            ``steps``, ``accepted``, ``rejected``; SDE solves also give ``nfe_drift`` and
            ``nfe_diffusion``.
        status: ``"success"``, or with ``on_failure="return"`` the reason the solve stopped
            (``"max_steps"``, ``"dt_min"``, ``"nonfinite"``).
        t_reached: the last time the solve reached.
        event_t, event_x, event_index: with ``solve(..., event=...)``, per path the event
            time (NaN: none), the state there, and which event of a tuple fired (``-1``:
            none); see :mod:`sdeflow.events`. ``None`` without events.
    """

    ts: Tensor
    ys: Tensor
    stats: dict[str, Any] = field(default_factory=dict)
    status: str = "success"
    t_reached: float | None = None
    event_t: Tensor | None = None
    event_x: Tensor | None = None
    event_index: Tensor | None = None
    _interp: Any = field(default=None, repr=False)

    @property
    def x_final(self) -> Tensor:
        """The last saved state, ``ys[-1]``."""
        return self.ys[-1]

    @property
    def success(self) -> bool:
        return self.status == "success"

    def evaluate(self, t: float | Tensor) -> Tensor:
        """The solution at time(s) ``t`` inside the solved span, by the solver's dense output.

        ``t`` is a float or 0-dim tensor (returns ``x0``'s shape) or a 1-D tensor of times
        (returns ``[len(t), *x0.shape]``).
        """
        if self._interp is None:
            raise ValueError(
                "evaluate: this solution keeps no dense output; solve an adaptive problem "
                "with dense=True"
            )
        return self._interp(t)
