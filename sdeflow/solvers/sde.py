"""Fixed-step SDE schemes (docs/math.md §6). ``h`` is the step, ``dW = W(t+h) - W(t)``.

* :class:`EulerMaruyama` -- ``x + h f + g dW``; Ito, every noise type; strong 0.5 (1.0 for additive
  noise), weak 1.0. ``g dW`` is a matrix-vector product for general noise and for additive noise
  given as a ``(..., d, m)`` matrix.
* :class:`Milstein` -- ``x + h f + g dW + 1/2 (g'g) (dW^2 - h)`` (Ito) or ``... + 1/2 (g'g) dW^2``
  (Stratonovich); diagonal and scalar noise; strong 1.0. ``g'g`` (the derivative of g along g,
  ``J_g g``) comes from a derivative-free difference by default, or from autograd.
* :class:`StochasticHeun` -- predictor ``x' = x + h f + g dW``, corrector
  ``x + h/2 (f(t,x) + f(t+h,x')) + 1/2 (g(t,x) + g(t+h,x')) dW``; Stratonovich; strong 1.0 for
  commutative noise (additive, scalar, diagonal), 0.5 for general noise.
* :class:`SRA1` -- Roessler's (2010) stochastic Runge--Kutta for additive noise (elementwise, or
  a ``(..., d, m)`` matrix), a :class:`SRATableau` run by one engine; strong 1.5, weak 2.0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..problems import Field
from .base import Capabilities, Noise, Solver, StepResult, Terms, noise_term, sde_orders

Tensor = torch.Tensor


_ALL = ("diagonal", "scalar", "additive", "general")


class EulerMaruyama(Solver, name="euler_maruyama"):
    """Euler--Maruyama: ``x_new = x + h f(t, x) + g(t, x) dW`` (docs/math.md §6.1)."""

    caps = Capabilities(sde=True, order=1.0, noise_types=_ALL, kinds=("ito",),
                        **sde_orders({"diagonal": 0.5, "scalar": 0.5, "general": 0.5,
                                      "additive": 1.0}, 1.0))
    c = (0.0,)

    def step(self, terms: Terms, tt: tuple[Tensor, ...], t: float, h: float, x: Tensor,
             state: Any, noise: Noise) -> StepResult:
        t0, dw = tt[0], noise[0]  # type: ignore[index]
        if terms.matrix:  # general noise, or additive noise given as a matrix
            gdw = torch.matmul(terms.g(t0, x), dw.unsqueeze(-1)).squeeze(-1)  # type: ignore[misc]
            return StepResult(torch.add(x, terms.f(t0, x), alpha=h).add_(gdw),  # type: ignore[misc]
                              None, None, None)
        return StepResult(torch.add(x, terms.f(t0, x), alpha=h).addcmul_(terms.g(t0, x), dw),  # type: ignore[misc]
                          None, None, None)


class Milstein(Solver, name="milstein"):
    """Milstein's scheme, Ito form, for diagonal, scalar and additive noise (docs/math.md §6.2).

    ``x + h f + g dW + 1/2 L (dW^2 - h)`` with ``L = J_g g`` (for diagonal noise, where ``g_i``
    depends on ``x`` only through ``x_i``, ``L_i = g_i dg_i/dx_i``). ``derivative``:

    * ``"finite_difference"`` (default, derivative-free, Kloeden--Platen):
      ``L ~ (g(x + g sqrt|h|) - g(x)) / sqrt|h|`` (1 extra diffusion call per step);
    * ``"autograd"``: ``L = J_g g`` exactly by a Jacobian-vector product on the step's one call
      of ``g`` (plus one probe call per solve); parameter gradients flow through it whenever
      autograd is enabled. Not usable under ``torch.inference_mode``
      (use ``torch.no_grad()`` or the finite difference there).

    On a Stratonovich problem ``solve`` uses :class:`MilsteinStratonovich` with the same
    ``derivative`` (:meth:`for_kind`); the two are separate registered solvers. On additive noise
    (elementwise or a ``(..., d, m)`` matrix) ``L = 0`` and the step is Euler--Maruyama's, with
    one diffusion call.
    """

    caps = Capabilities(sde=True, order=1.0, noise_types=("diagonal", "scalar", "additive"),
                        kinds=("ito",), **sde_orders(1.0, 1.0, ("diagonal", "scalar",
                                                                "additive")))
    c = (0.0,)
    ito: ClassVar[bool] = True

    def __init__(self, derivative: str = "finite_difference") -> None:
        if derivative not in ("finite_difference", "autograd"):
            raise ValueError(
                f"derivative: expected 'finite_difference' or 'autograd', got {derivative!r}"
            )
        self.derivative = derivative

    def for_kind(self, kind: str) -> Solver:
        if kind == "stratonovich" and self.ito:
            return MilsteinStratonovich(self.derivative)
        if kind == "ito" and not self.ito:
            return Milstein(self.derivative)
        return self

    def check(self, problem: Any) -> None:
        if self.derivative == "autograd" and torch.is_inference_mode_enabled():
            raise ValueError(
                "solver: Milstein(derivative='autograd') needs autograd, which "
                "torch.inference_mode disables; run under torch.no_grad() instead, or use "
                "derivative='finite_difference'")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(derivative={self.derivative!r})"

    def step(self, terms: Terms, tt: tuple[Tensor, ...], t: float, h: float, x: Tensor,
             state: Any, noise: Noise) -> StepResult:
        f, g = terms.f, terms.g
        t0, dw = tt[0], noise[0]  # type: ignore[index]
        if terms.noise == "additive":  # J_g = 0: the correction vanishes, Milstein is EM
            gdw = noise_term("additive")(g(t0, x), dw)  # type: ignore[misc]
            return StepResult(torch.add(x, f(t0, x), alpha=h).add_(gdw), None, None, state)  # type: ignore[misc]
        ah = abs(h)
        new_state = state
        if self.derivative == "autograd":
            if state is None:
                # once per solve: does g carry trainable parameters? (then its output keeps a
                # graph; otherwise the private leaf of the JVP must not leak into x_new)
                with torch.enable_grad():
                    new_state = bool(g(t0, x.detach()).requires_grad)  # type: ignore[misc]
            gx, lg = _g_and_jvp(g, t0, x, keep_graph=new_state or x.requires_grad)  # type: ignore[arg-type]
        else:
            gx = g(t0, x)  # type: ignore[misc]
        if self.derivative == "autograd":
            pass
        elif self.ito:
            s = math.sqrt(ah)
            lg = (g(t0, torch.add(x, gx, alpha=s)) - gx) / s  # type: ignore[misc]
        else:
            s = math.sqrt(ah)
            lg = (g(t0, torch.add(x, gx, alpha=s))  # type: ignore[misc]
                  - g(t0, torch.add(x, gx, alpha=-s))) / (2 * s)  # type: ignore[misc]
        sq = dw * dw
        corr = sq - ah if self.ito else sq
        x_new = torch.add(x, f(t0, x), alpha=h).addcmul_(gx, dw).addcmul_(lg, corr, value=0.5)  # type: ignore[misc]
        return StepResult(x_new, None, None, new_state)


def _g_and_jvp(g: Field, t: Tensor, x: Tensor, keep_graph: bool = True
               ) -> tuple[Tensor, Tensor]:
    """``(g(t, x), J_g(x) g(t, x))`` from one call of ``g``, by the double-vjp trick
    (docs/math.md §6.2).

    Both products are formed on a fresh leaf ``xl = x.detach()``, so the two ``autograd.grad``
    calls walk this step's graph only (on ``x`` itself they would walk the graph of every step
    so far: O(n^2) time over n steps). When ``x`` carries a graph, :class:`_Reattach` joins the
    outputs to it: their vector-Jacobian product in ``xl`` is handed on to ``x``, differentiably
    (so ``create_graph`` backprop and higher derivatives still work). The graph is kept whenever
    autograd is enabled and ``keep_graph`` (the diffusion has trainable parameters, or ``x``
    requires grad), so gradients reach ``x`` and the diffusion's parameters; a diffusion that does
    not depend on ``x`` (additive noise) has ``J_g = 0``.
    """
    keep = torch.is_grad_enabled() and keep_graph
    with torch.enable_grad():
        xl = x.detach().requires_grad_(True)
        gx = g(t, xl)
        if not gx.requires_grad:
            return gx.detach(), torch.zeros_like(gx)
        u = torch.zeros_like(gx, requires_grad=True)
        (vjp,) = torch.autograd.grad(gx, xl, grad_outputs=u, create_graph=True,
                                     allow_unused=True)
        if vjp is None or not vjp.requires_grad:
            jv = torch.zeros_like(gx)
        else:
            (jv,) = torch.autograd.grad(vjp, u, grad_outputs=gx if keep else gx.detach(),
                                        create_graph=keep)
    if not keep:
        return gx.detach(), jv.detach()
    if x.requires_grad:
        params = _graph_leaves((gx, jv), (xl, u))
        gx, jv = _Reattach.apply(([xl, *params], (gx, jv)), x, *params)
    return gx, jv


def _graph_leaves(outs: Sequence[Tensor], skip: Sequence[Tensor]) -> list[Tensor]:
    """The leaf tensors (parameters) the graph of ``outs`` reaches, other than ``skip``: one
    walk of this step's graph, which ends at leaves."""
    found: list[Tensor] = []
    seen: set[int] = set()
    stack = [o.grad_fn for o in outs if o.grad_fn is not None]
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        var = getattr(fn, "variable", None)
        if var is not None:
            if not any(var is s for s in skip) and not any(var is v for v in found):
                found.append(var)
            continue
        stack.extend(nf for nf, _ in fn.next_functions)
    return found


class _Reattach(torch.autograd.Function):
    """Outputs computed from local leaves, as functions of the real tensors they stand for.

    ``_Reattach.apply((locals, outs), *reals)`` returns copies of ``outs`` (tensors whose graph
    ends at the leaves ``locals``; ``locals[i]`` has the value of ``reals[i]``, a detached copy of
    the state or a parameter itself). Backward: the vector-Jacobian product of ``outs`` in each
    local leaf goes to its real tensor. With ``create_graph=True`` those products (functions of
    the local leaves and of the incoming gradients) are re-attached the same way, so derivatives
    of every order are right, and every ``autograd.grad`` call walks one step's graph only.
    """

    @staticmethod
    def forward(ctx: Any, spec: tuple[list[Tensor], tuple[Tensor, ...]], *reals: Tensor
                ) -> tuple[Tensor, ...]:
        ctx.save_for_backward(*reals)
        ctx.locals, ctx.outs = spec
        return tuple(o.detach().clone() for o in ctx.outs)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        n = len(ctx.locals)
        out: list[Tensor | None] = [None] * n
        pairs = [(o, d) for o, d in zip(ctx.outs, grads) if o.requires_grad and d is not None]
        want = [i for i in range(n) if ctx.needs_input_grad[i + 1]]
        if not pairs or not want:
            return (None, *out)
        create = torch.is_grad_enabled()
        ds = [d for _, d in pairs]
        with torch.enable_grad():
            dl = [d.detach().requires_grad_(True) if create and d.requires_grad else d
                  for d in ds]
            res = torch.autograd.grad([o for o, _ in pairs], [ctx.locals[i] for i in want], dl,
                                      retain_graph=True, create_graph=create,
                                      allow_unused=True)
        vals = [torch.zeros_like(ctx.locals[i]) if r is None else r for i, r in zip(want, res)]
        if create:
            live = [k for k, v in enumerate(vals) if v.requires_grad]
            if live:
                extra = [(c, d) for c, d in zip(dl, ds) if d.requires_grad]
                spec = ([*ctx.locals, *(c for c, _ in extra)], tuple(vals[k] for k in live))
                tied = _Reattach.apply(spec, *ctx.saved_tensors, *(d for _, d in extra))
                for k, v in zip(live, tied):
                    vals[k] = v
        for i, v in zip(want, vals):
            out[i] = v
        return (None, *out)


class StochasticHeun(Solver, name="stochastic_heun"):
    """Stochastic Heun for Stratonovich SDEs (docs/math.md §6.3).

    ``x' = x + h f(t,x) + g(t,x) dW``;
    ``x_new = x + h/2 (f(t,x) + f(t+h,x')) + 1/2 (g(t,x) + g(t+h,x')) dW``.
    Strong order 1 for commutative noise (additive, scalar, diagonal), 0.5 for general noise.
    """

    caps = Capabilities(sde=True, order=2.0, noise_types=_ALL, kinds=("stratonovich",),
                        **sde_orders({"diagonal": 1.0, "scalar": 1.0, "additive": 1.0,
                                      "general": 0.5}, 1.0))
    c = (0.0, 1.0)

    def step(self, terms: Terms, tt: tuple[Tensor, ...], t: float, h: float, x: Tensor,
             state: Any, noise: Noise) -> StepResult:
        f, g = terms.f, terms.g
        mul = noise_term(terms.noise)  # type: ignore[arg-type]
        t0, t1 = tt
        dw = noise[0]  # type: ignore[index]
        f0, g0 = f(t0, x), g(t0, x)  # type: ignore[misc]
        xp = torch.add(x, f0, alpha=h).add_(mul(g0, dw))
        f1, g1 = f(t1, xp), g(t1, xp)  # type: ignore[misc]
        x_new = torch.add(x, f0 + f1, alpha=0.5 * h).add_(mul(g0 + g1, dw), alpha=0.5)
        return StepResult(x_new, None, None, None)


class MilsteinStratonovich(Milstein, name="milstein_stratonovich"):
    """Milstein's scheme, Stratonovich form: ``x + h f + g dW + 1/2 L dW^2``.

    The finite difference is central, ``L ~ (g(x + g s) - g(x - g s)) / (2 s)``, ``s =
    sqrt|h|`` (2 extra calls): a forward difference's O(sqrt h) bias, times ``dW^2`` of non-zero
    mean, would cost the strong order.
    """

    caps = Capabilities(sde=True, order=1.0, noise_types=("diagonal", "scalar", "additive"),
                        kinds=("stratonovich",), **sde_orders(1.0, 1.0, ("diagonal", "scalar",
                                                                         "additive")))
    ito = False


@dataclass(frozen=True)
class SRATableau:
    """Coefficients of a Roessler SRA method for additive noise (docs/math.md §6.4).

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


class SRA(Solver, register=False):
    """Engine for :class:`SRATableau` methods (additive noise; Ito = Stratonovich there).

    ``g`` is elementwise ``(..., d)`` (``g * dW``) or a constant-in-x matrix ``(..., d, m)``
    driven by ``m`` Brownian motions (``g @ dW``, ``g @ I``: docs/math.md §6.4).
    """

    tableau: ClassVar[SRATableau]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        tab = cls.__dict__.get("tableau")
        if tab is not None:
            cls.caps = Capabilities(sde=True, order=2.0, noise_types=("additive",),
                                    kinds=("ito", "stratonovich"), space_time=True,
                                    **sde_orders(tab.strong_order, tab.weak_order,
                                                 ("additive",)))

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
        self._alpha = [(i, a) for i, a in enumerate(tab.alpha) if a != 0.0]
        self._out_w = [(i, tab.beta1[i], tab.beta2[i]) for i in self._g_used]

    def step(self, terms: Terms, tt: tuple[Tensor, ...], t: float, h: float, x: Tensor,
             state: Any, noise: Noise) -> StepResult:
        f, g = terms.f, terms.g
        a0, b0, i0, i1 = self._a0, self._b0, self._i0, self._i1
        dw, i10 = noise  # type: ignore[misc]
        ih = i10 / h
        gs = {j: g(tt[i1[j]], x) for j in self._g_used}  # type: ignore[misc]
        if terms.matrix:
            return self._matrix_step(terms, tt, h, x, dw, ih, gs)
        fs: list[Tensor] = []
        for i in range(len(i0)):
            hi = x
            if a0[i] or b0[i]:
                hi = x.clone()
                for j, a in a0[i]:
                    hi.add_(fs[j], alpha=a * h)
                for j, b in b0[i]:
                    hi.addcmul_(gs[j], ih, value=b)
            fs.append(f(tt[i0[i]], hi))  # type: ignore[misc]
        y = x.clone()
        for i, a in self._alpha:
            y.add_(fs[i], alpha=a * h)
        for j, b1, b2 in self._out_w:
            y.addcmul_(gs[j], dw * b1 + ih * b2)
        return StepResult(y, None, None, None)

    def _matrix_step(self, terms: Terms, tt: tuple[Tensor, ...], h: float, x: Tensor,
                     dw: Tensor, ih: Tensor, gs: dict[int, Tensor]) -> StepResult:
        """The step with ``g`` a ``(..., d, m)`` matrix: each noise term is ``g @ v`` for the
        ``(..., m)`` combination ``v`` of ``dW`` and ``I/h`` (docs/math.md §6.4)."""
        f = terms.f
        fs: list[Tensor] = []
        for i in range(len(self._i0)):
            hi = x
            if self._a0[i] or self._b0[i]:
                hi = x.clone()
                for j, a in self._a0[i]:
                    hi.add_(fs[j], alpha=a * h)
                for j, b in self._b0[i]:
                    hi.add_(_matvec(gs[j], ih), alpha=b)
            fs.append(f(tt[self._i0[i]], hi))  # type: ignore[misc]
        y = x.clone()
        for i, a in self._alpha:
            y.add_(fs[i], alpha=a * h)
        for j, b1, b2 in self._out_w:
            y.add_(_matvec(gs[j], dw * b1 + ih * b2))
        return StepResult(y, None, None, None)


def _matvec(g: Tensor, v: Tensor) -> Tensor:
    return torch.matmul(g, v.unsqueeze(-1)).squeeze(-1)


SRA1_TABLEAU = SRATableau(
    c0=(0.0, 0.75), c1=(1.0, 0.0),
    a0=((0.0, 0.0), (0.75, 0.0)), b0=((0.0, 0.0), (1.5, 0.0)),
    alpha=(1 / 3, 2 / 3), beta1=(1.0, 0.0), beta2=(-1.0, 1.0),
    strong_order=1.5, weak_order=2.0,
)


class SRA1(SRA, name="sra1"):
    """Roessler's SRA1 for additive noise: strong order 1.5, weak order 2.0 (docs/math.md §6.4)."""

    tableau = SRA1_TABLEAU
