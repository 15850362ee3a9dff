"""Fixed-step SDE schemes (MATH.md §2). ``h`` is the step, ``dW = W(t+h) - W(t)``.

* :class:`EulerMaruyama` -- ``x + h f + g dW``; Ito, every noise type; strong 0.5 (1.0 for additive
  noise), weak 1.0.
* :class:`Milstein` -- ``x + h f + g dW + 1/2 (g'g) (dW^2 - h)`` (Ito) or ``... + 1/2 (g'g) dW^2``
  (Stratonovich); diagonal and scalar noise; strong 1.0. ``g'g`` (the derivative of g along g,
  ``J_g g``) comes from a derivative-free difference by default, or from autograd.
* :class:`StochasticHeun` -- predictor ``x' = x + h f + g dW``, corrector
  ``x + h/2 (f(t,x) + f(t+h,x')) + 1/2 (g(t,x) + g(t+h,x')) dW``; Stratonovich; strong 1.0 for
  commutative noise (additive, scalar, diagonal), 0.5 for general noise.
* :class:`SRA1` -- Roessler's (2010) stochastic Runge--Kutta for additive noise, a
  :class:`SRATableau` run by one engine; strong 1.5, weak 2.0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..problems import Field
from .base import Noise, SDESolver, StepFn, noise_term

Tensor = torch.Tensor


class EulerMaruyama(SDESolver):
    """Euler--Maruyama: ``x_new = x + h f(t, x) + g(t, x) dW`` (MATH.md §2)."""

    name = "euler_maruyama"
    strong_order = 0.5
    weak_order = 1.0
    kinds = ("ito",)
    c = (0.0,)

    @classmethod
    def strong_order_for(cls, noise: str) -> float:
        return 1.0 if noise == "additive" else 0.5

    def evals_per_step(self) -> tuple[int, int]:
        return (1, 1)

    def build(self, f: Field, g: Field, noise: str) -> StepFn:
        if noise == "general":
            def step(tt: tuple[Tensor, ...], x: Tensor, h: float, nz: Noise) -> Tensor:
                t = tt[0]
                gdw = torch.matmul(g(t, x), nz[0].unsqueeze(-1)).squeeze(-1)
                return torch.add(x, f(t, x), alpha=h).add_(gdw)
            return step

        def step_elementwise(tt: tuple[Tensor, ...], x: Tensor, h: float, nz: Noise) -> Tensor:
            t = tt[0]
            return torch.add(x, f(t, x), alpha=h).addcmul_(g(t, x), nz[0])
        return step_elementwise


class Milstein(SDESolver):
    """Milstein's scheme for diagonal and scalar noise (MATH.md §2).

    Ito: ``x + h f + g dW + 1/2 L (dW^2 - h)``; Stratonovich: ``x + h f + g dW + 1/2 L dW^2``,
    where ``L = J_g g`` (for diagonal noise, where ``g_i`` depends on ``x_i`` only, this is
    ``g_i dg_i/dx_i``). ``derivative`` chooses how ``L`` is obtained:

    * ``"finite_difference"`` (default, derivative-free, Kloeden--Platen):
      Ito ``L ~ (g(x + g sqrt|h|) - g(x)) / sqrt|h|`` (1 extra diffusion call per step);
      Stratonovich uses the central difference ``(g(x + g s) - g(x - g s)) / (2 s)``, ``s =
      sqrt|h|`` (2 extra calls), because the forward difference's O(sqrt h) bias, multiplied by
      ``dW^2`` with non-zero mean, would cost the strong order.
    * ``"autograd"``: ``L = J_g g`` exactly, by a Jacobian-vector product (no extra call to g
      beyond autograd's own work).

    Diagonal noise needs ``g_i`` to depend on ``x`` only through ``x_i`` (commutative noise);
    otherwise the Levy-area terms are missing and the strong order drops to 0.5.
    """

    name = "milstein"
    strong_order = 1.0
    weak_order = 1.0
    noise_types = ("diagonal", "scalar", "additive")
    kinds = ("ito", "stratonovich")
    c = (0.0,)

    def __init__(self, derivative: str = "finite_difference") -> None:
        if derivative not in ("finite_difference", "autograd"):
            raise ValueError(
                f"derivative: expected 'finite_difference' or 'autograd', got {derivative!r}"
            )
        self.derivative = derivative
        self.kind = "ito"  # set by solve() through configure()

    def configure(self, kind: str) -> None:
        """Choose the Ito or Stratonovich correction (called by ``solve``)."""
        self.kind = kind

    def evals_per_step(self) -> tuple[int, int]:
        if self.derivative == "autograd":
            return (1, 1)
        return (1, 2 if self.kind == "ito" else 3)

    def __repr__(self) -> str:
        return f"Milstein(derivative={self.derivative!r})"

    def build(self, f: Field, g: Field, noise: str) -> StepFn:
        ito = self.kind == "ito"
        autograd = self.derivative == "autograd"

        def step(tt: tuple[Tensor, ...], x: Tensor, h: float, nz: Noise) -> Tensor:
            t, dw = tt[0], nz[0]
            gx = g(t, x)
            ah = abs(h)
            if autograd:
                lg = _jvp(g, t, x, gx)
            elif ito:
                s = math.sqrt(ah)
                lg = (g(t, torch.add(x, gx, alpha=s)) - gx) / s
            else:
                s = math.sqrt(ah)
                lg = (g(t, torch.add(x, gx, alpha=s)) - g(t, torch.add(x, gx, alpha=-s))) / (2 * s)
            sq = dw * dw
            corr = sq - ah if ito else sq
            return torch.add(x, f(t, x), alpha=h).addcmul_(gx, dw).addcmul_(lg, corr, value=0.5)

        return step


def _jvp(g: Field, t: Tensor, x: Tensor, v: Tensor) -> Tensor:
    """``J_g(x) v`` by the double-vjp trick; keeps the graph when ``x`` needs gradients."""
    keep = x.requires_grad
    with torch.enable_grad():
        xr = x if keep else x.detach().requires_grad_(True)
        gx = g(t, xr)
        u = torch.zeros_like(gx, requires_grad=True)
        (vjp,) = torch.autograd.grad(gx, xr, grad_outputs=u, create_graph=True)
        (jv,) = torch.autograd.grad(vjp, u, grad_outputs=v, create_graph=keep)
    return jv


class StochasticHeun(SDESolver):
    """Stochastic Heun for Stratonovich SDEs (MATH.md §2).

    ``x' = x + h f(t,x) + g(t,x) dW``;
    ``x_new = x + h/2 (f(t,x) + f(t+h,x')) + 1/2 (g(t,x) + g(t+h,x')) dW``.
    """

    name = "stochastic_heun"
    strong_order = 1.0
    weak_order = 1.0
    kinds = ("stratonovich",)
    c = (0.0, 1.0)

    @classmethod
    def strong_order_for(cls, noise: str) -> float:
        return 0.5 if noise == "general" else 1.0

    def evals_per_step(self) -> tuple[int, int]:
        return (2, 2)

    def build(self, f: Field, g: Field, noise: str) -> StepFn:
        mul = noise_term(noise)

        def step(tt: tuple[Tensor, ...], x: Tensor, h: float, nz: Noise) -> Tensor:
            t, t1 = tt
            dw = nz[0]
            f0, g0 = f(t, x), g(t, x)
            xp = torch.add(x, f0, alpha=h).add_(mul(g0, dw))
            f1, g1 = f(t1, xp), g(t1, xp)
            return (torch.add(x, f0 + f1, alpha=0.5 * h).add_(mul(g0 + g1, dw), alpha=0.5))

        return step


@dataclass(frozen=True)
class SRATableau:
    """Coefficients of a Roessler SRA method for additive noise (MATH.md §2).

    Stages ``H_i = x + h sum_j A0_ij f(t + c0_j h, H_j) + sum_j B0_ij g(t + c1_j h) I10/h`` and
    ``x_new = x + h sum_i alpha_i f(t + c0_i h, H_i)
    + sum_i g(t + c1_i h) (beta1_i dW + beta2_i I10/h)``.
    """

    c0: Sequence[float]
    c1: Sequence[float]
    a0: Sequence[Sequence[float]]
    b0: Sequence[Sequence[float]]
    alpha: Sequence[float]
    beta1: Sequence[float]
    beta2: Sequence[float]
    strong_order: float
    weak_order: float

    def __post_init__(self) -> None:
        s = len(self.c0)
        lens = {len(self.c1), len(self.a0), len(self.b0), len(self.alpha), len(self.beta1),
                len(self.beta2)}
        if lens != {s}:
            raise ValueError(f"SRA tableau: every coefficient needs one entry per stage ({s})")
        if abs(sum(self.alpha) - 1.0) > 1e-12 or abs(sum(self.beta1) - 1.0) > 1e-12:
            raise ValueError("SRA tableau: sum(alpha) and sum(beta1) must be 1")
        if abs(sum(self.beta2)) > 1e-12:
            raise ValueError("SRA tableau: sum(beta2) must be 0")
        for i, row in enumerate(self.a0):
            if abs(sum(row) - self.c0[i]) > 1e-12:
                raise ValueError(f"SRA tableau: row {i} of A0 must sum to c0[{i}]")


class SRA(SDESolver):
    """Engine for :class:`SRATableau` methods (additive noise; Ito = Stratonovich there)."""

    tableau: ClassVar[SRATableau]
    noise_types = ("additive",)
    kinds = ("ito", "stratonovich")
    needs_space_time = True

    def __init__(self) -> None:
        tab = self.tableau
        distinct: list[float] = []
        for ci in (*tab.c0, *tab.c1):
            if ci not in distinct:
                distinct.append(ci)
        self.c = tuple(distinct)
        self._i0 = tuple(distinct.index(ci) for ci in tab.c0)
        self._i1 = tuple(distinct.index(ci) for ci in tab.c1)
        self._a0 = tuple(tuple((j, a) for j, a in enumerate(r) if a != 0.0) for r in tab.a0)
        self._b0 = tuple(tuple((j, b) for j, b in enumerate(r) if b != 0.0) for r in tab.b0)
        # g is needed wherever B0 or the output weights use it
        used = {j for r in self._b0 for j, _ in r}
        used |= {i for i in range(len(tab.c1)) if tab.beta1[i] != 0.0 or tab.beta2[i] != 0.0}
        self._g_used = tuple(sorted(used))

    def evals_per_step(self) -> tuple[int, int]:
        return (len(self.tableau.c0), len(self._g_used))

    def build(self, f: Field, g: Field, noise: str) -> StepFn:
        tab = self.tableau
        a0, b0, i0, i1, used = self._a0, self._b0, self._i0, self._i1, self._g_used
        alpha = [(i, a) for i, a in enumerate(tab.alpha) if a != 0.0]
        out_w = [(i, tab.beta1[i], tab.beta2[i]) for i in used]

        def step(tt: tuple[Tensor, ...], x: Tensor, h: float, nz: Noise) -> Tensor:
            dw, i10 = nz
            ih = i10 / h
            gs = {j: g(tt[i1[j]], x) for j in used}
            fs: list[Tensor] = []
            for i in range(len(i0)):
                hi = x
                if a0[i] or b0[i]:
                    hi = x.clone()
                    for j, a in a0[i]:
                        hi.add_(fs[j], alpha=a * h)
                    for j, b in b0[i]:
                        hi.addcmul_(gs[j], ih, value=b)
                fs.append(f(tt[i0[i]], hi))
            y = x.clone()
            for i, a in alpha:
                y.add_(fs[i], alpha=a * h)
            for j, b1, b2 in out_w:
                y.addcmul_(gs[j], dw * b1 + ih * b2)
            return y

        return step


SRA1_TABLEAU = SRATableau(
    c0=(0.0, 0.75), c1=(1.0, 0.0),
    a0=((0.0, 0.0), (0.75, 0.0)), b0=((0.0, 0.0), (1.5, 0.0)),
    alpha=(1 / 3, 2 / 3), beta1=(1.0, 0.0), beta2=(-1.0, 1.0),
    strong_order=1.5, weak_order=2.0,
)


class SRA1(SRA):
    """Roessler's SRA1 for additive noise: strong order 1.5, weak order 2.0 (MATH.md §2)."""

    name = "sra1"
    tableau = SRA1_TABLEAU
    strong_order = 1.5
    weak_order = 2.0
