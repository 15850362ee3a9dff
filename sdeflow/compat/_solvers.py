"""Schemes torchsde offers that the core does not register: the Stratonovich midpoint and
Euler--Heun methods (SRA1 on torchsde's ``(..., d, m)`` additive noise is the core's ``sra1``).

Formulas (``dW`` the increment, ``g dW`` elementwise or a matrix-vector product):

* midpoint: ``x' = x + h/2 f(t, x) + 1/2 g(t, x) dW``,
  ``x_new = x + h f(t + h/2, x') + g(t + h/2, x') dW`` (strong order 1/2; 1 for commutative
  noise);
* Euler--Heun: ``x' = x + g(t, x) dW``,
  ``x_new = x + h f(t, x) + 1/2 (g(t, x) + g(t + h, x')) dW``;
"""

from __future__ import annotations

from typing import Any

import torch

from ..solvers.base import Capabilities, Noise, Solver, StepResult, Terms, noise_term, sde_orders

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


__all__ = ["SDEMidpoint", "EulerHeun"]
