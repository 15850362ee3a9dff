"""Linear multistep methods on the stateful protocol (docs/math.md §11.2).

:class:`AdamsBashforth3` -- the explicit three-step Adams method on any (also variable) grid:

    x_{n+1} = x_n + h sum_j w_j f_j,   w_j = int_0^1 L_j(s) ds,

where ``f_j = u(t_j, x_j)`` at the last three points, ``s_j = (t_j - t_n) / h`` and ``L_j`` is
the Lagrange basis on the ``s_j`` (on an even grid ``w = (23, -16, 5) / 12``). The first two
steps, which lack a history, are taken with Kutta's third-order Runge--Kutta method reusing
``f_n`` as its first stage. The state is the history of ``(t_j, f_j)``; one field evaluation per
step once started. Dense output is the method's own polynomial,
``x_n + h int_0^theta P(s) ds`` (:class:`~sdeflow.interpolation.MultistepPolynomial`).
"""

from __future__ import annotations

from typing import Any

import torch

from ..interpolation import Hermite, Interpolant, MultistepPolynomial, lagrange_integrals
from .base import Capabilities, Noise, Solver, StepResult, Terms

Tensor = torch.Tensor

_KUTTA3_B = (1 / 6, 2 / 3, 1 / 6)


class AdamsBashforth3(Solver, name="adams_bashforth3"):
    """Adams--Bashforth 3 with a Runge--Kutta start; order 3, one evaluation per step."""

    caps = Capabilities(order=3.0, stateful=True, interpolant="multistep")
    c = (0.0, 0.5, 1.0)
    steps_back = 3

    def __init__(self) -> None:
        self._w: dict[tuple[float, ...], list[float]] = {}

    def init(self, terms: Terms, t0: float, x0: Tensor, h: float) -> Any:
        return ()  # history of (t_j, f_j), newest last

    def _weights(self, nodes: tuple[float, ...]) -> list[float]:
        key = tuple(round(s, 12) for s in nodes)
        w = self._w.get(key)
        if w is None:
            w = self._w[key] = lagrange_integrals(nodes, 1.0)
        return w

    def step(self, terms: Terms, tt: tuple[Tensor, ...], t: float, h: float, x: Tensor,
             state: Any, noise: Noise) -> StepResult:
        u = terms.u
        f0 = u(tt[0], x)  # type: ignore[misc]
        hist = (*state, (t, f0))[-self.steps_back:]
        if len(hist) < self.steps_back:
            k2 = u(tt[1], torch.add(x, f0, alpha=0.5 * h))  # type: ignore[misc]
            x3 = torch.add(x, f0, alpha=-h).add_(k2, alpha=2.0 * h)
            k3 = u(tt[2], x3)  # type: ignore[misc]
            b1, b2, b3 = _KUTTA3_B
            x_new = torch.add(x, f0, alpha=b1 * h).add_(k2, alpha=b2 * h).add_(k3, alpha=b3 * h)
            return StepResult(x_new, None, ("start", f0), hist)
        nodes = tuple((tj - t) / h for tj, _ in hist)
        w = self._weights(nodes)
        fs = [fj for _, fj in hist]
        x_new = torch.add(x, fs[0], alpha=w[0] * h)
        for wj, fj in zip(w[1:], fs[1:]):
            x_new.add_(fj, alpha=wj * h)
        return StepResult(x_new, None, (nodes, fs), hist)

    def interpolant(self, terms: Terms, t: float, h: float, x0: Tensor, x1: Tensor,
                    dense: Any) -> Interpolant:
        if dense[0] == "start":
            return Hermite.from_field(terms.u, t, h, x0, x1, dense[1], None)
        return MultistepPolynomial(t, h, x0, x1, dense[0], dense[1])


__all__ = ["AdamsBashforth3"]
