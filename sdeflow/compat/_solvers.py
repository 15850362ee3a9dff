"""Schemes torchsde offers that the core does not register: the Stratonovich midpoint and
Euler--Heun methods, and SRA1 on additive noise given as a constant ``(..., d, m)`` matrix.

Formulas (``dW`` the increment, ``g dW`` elementwise or a matrix-vector product):

* midpoint: ``x' = x + h/2 f(t, x) + 1/2 g(t, x) dW``,
  ``x_new = x + h f(t + h/2, x') + g(t + h/2, x') dW`` (strong order 1/2; 1 for commutative
  noise);
* Euler--Heun: ``x' = x + g(t, x) dW``,
  ``x_new = x + h f(t, x) + 1/2 (g(t, x) + g(t + h, x')) dW``;
* SRA1 (matrix): the core's SRA1 tableau with ``g`` applied as a matrix.
"""

from __future__ import annotations

from typing import Any

import torch

from ..solvers.base import Capabilities, Noise, Solver, StepResult, Terms, noise_term, sde_orders
from ..solvers.sde import SRA, SRA1_TABLEAU

Tensor = torch.Tensor
_ALL = ("diagonal", "scalar", "additive", "general")


class SDEMidpoint(Solver, register=False):
    """torchsde's ``midpoint`` (Stratonovich)."""

    name = "midpoint_sde"
    caps = Capabilities(sde=True, order=2.0, noise_types=_ALL, kinds=("stratonovich",),
                        **sde_orders({"diagonal": 1.0, "scalar": 1.0, "additive": 1.0,
                                      "general": 0.5}, 1.0))
    c = (0.0, 0.5)

    def step(self, terms: Terms, tt: tuple[Tensor, ...], t: float, h: float, x: Tensor,
             state: Any, noise: Noise) -> StepResult:
        f, g, mul = terms.f, terms.g, noise_term(terms.noise)  # type: ignore[arg-type]
        dw = noise[0]  # type: ignore[index]
        xp = x + 0.5 * h * f(tt[0], x) + 0.5 * mul(g(tt[0], x), dw)  # type: ignore[misc]
        x_new = x + h * f(tt[1], xp) + mul(g(tt[1], xp), dw)  # type: ignore[misc]
        return StepResult(x_new, None, None, None)


class EulerHeun(Solver, register=False):
    """torchsde's ``euler_heun`` (Stratonovich)."""

    name = "euler_heun"
    caps = Capabilities(sde=True, order=1.0, noise_types=_ALL, kinds=("stratonovich",),
                        **sde_orders({"diagonal": 0.5, "scalar": 0.5, "additive": 1.0,
                                      "general": 0.5}, 1.0))
    c = (0.0, 1.0)

    def step(self, terms: Terms, tt: tuple[Tensor, ...], t: float, h: float, x: Tensor,
             state: Any, noise: Noise) -> StepResult:
        f, g, mul = terms.f, terms.g, noise_term(terms.noise)  # type: ignore[arg-type]
        dw = noise[0]  # type: ignore[index]
        g0 = g(tt[0], x)  # type: ignore[misc]
        gdw = mul(g0, dw)
        g1 = g(tt[1], x + gdw)  # type: ignore[misc]
        x_new = x + h * f(tt[0], x) + 0.5 * (gdw + mul(g1, dw))  # type: ignore[misc]
        return StepResult(x_new, None, None, None)


class SRA1Matrix(SRA, register=False):
    """SRA1 for additive noise whose diffusion is a constant ``(..., d, m)`` matrix (declared
    ``general``; the caller guarantees that ``g`` does not depend on ``x``)."""

    name = "sra1"
    tableau = SRA1_TABLEAU

    def __init__(self) -> None:
        super().__init__()
        self.caps = Capabilities(sde=True, order=2.0, noise_types=("general",),  # type: ignore[misc]
                                 kinds=("ito", "stratonovich"), space_time=True,
                                 **sde_orders(1.5, 2.0, ("general",)))

    def step(self, terms: Terms, tt: tuple[Tensor, ...], t: float, h: float, x: Tensor,
             state: Any, noise: Noise) -> StepResult:
        f, g = terms.f, terms.g
        mv = noise_term("general")
        dw, i10 = noise  # type: ignore[misc]
        ih = i10 / h
        gs = {j: g(tt[self._i1[j]], x) for j in self._g_used}  # type: ignore[misc]
        fs: list[Tensor] = []
        for i in range(len(self._i0)):
            hi = x
            if self._a0[i] or self._b0[i]:
                hi = x.clone()
                for j, a in self._a0[i]:
                    hi = hi + a * h * fs[j]
                for j, b in self._b0[i]:
                    hi = hi + mv(gs[j], ih * b)
            fs.append(f(tt[self._i0[i]], hi))  # type: ignore[misc]
        y = x
        for i, a in self._alpha:
            y = y + a * h * fs[i]
        for j, b1, b2 in self._out_w:
            y = y + mv(gs[j], dw * b1 + ih * b2)
        return StepResult(y, None, None, None)


__all__ = ["SDEMidpoint", "EulerHeun", "SRA1Matrix"]
