"""Explicit Runge--Kutta methods as data: one engine runs every Butcher tableau (MATH.md §2).

A tableau (c, A, b) defines the step

    k_i = u(t + c_i h, x + h sum_{j<i} a_ij k_j),     x_new = x + h sum_i b_i k_i.

An embedded pair also carries ``b_err = b - b_hat``; ``h sum_i b_err_i k_i`` is the local error
estimate of the lower-order solution. A tableau validates itself on construction: sum(b) = 1,
row sums of A equal c, A strictly lower triangular, and sum(b_err) = 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..problems import Field
from .base import Noise, ODESolver, StepFn

Tensor = torch.Tensor


@dataclass(frozen=True)
class ButcherTableau:
    """Coefficients of an explicit Runge--Kutta method.

    Attributes:
        c: ``[s]`` stage times as fractions of the step.
        a: ``s`` rows; row ``i`` holds ``a_i0 .. a_i(i-1)`` (may be shorter; missing entries are 0).
        b: ``[s]`` weights of the propagated solution.
        order: order of the propagated solution.
        b_err: ``[s]`` error weights ``b - b_hat`` of an embedded pair, or ``None``.
        embedded_order: order of ``b_hat``.
        fsal: first stage of the next step equals the last stage of this one (needs
            ``a[-1] == b`` and ``c[-1] == 1``).
        dense: optional ``[s][p]`` coefficients of a continuous extension,
            ``b_i(theta) = sum_q dense[i][q] theta^(q+1)``, so that
            ``x(t + theta h) ~ x + h sum_i b_i(theta) k_i``.
    """

    c: Sequence[float]
    a: Sequence[Sequence[float]]
    b: Sequence[float]
    order: int
    b_err: Sequence[float] | None = None
    embedded_order: int | None = None
    fsal: bool = False
    dense: Sequence[Sequence[float]] | None = None
    tol: float = field(default=1e-12, repr=False)

    def __post_init__(self) -> None:
        s = len(self.c)
        if len(self.b) != s or len(self.a) != s:
            raise ValueError(f"tableau: c, a and b must have one entry per stage ({s})")
        if abs(sum(self.b) - 1.0) > self.tol:
            raise ValueError(f"tableau: sum(b) = {sum(self.b)!r}, expected 1")
        for i, row in enumerate(self.a):
            if len(row) > i:
                raise ValueError(f"tableau: row {i} of a has {len(row)} entries; explicit methods "
                                 f"need a strictly lower-triangular a")
            if abs(sum(row) - self.c[i]) > 1e-10:
                raise ValueError(f"tableau: row {i} of a sums to {sum(row)!r}, expected c[{i}] = "
                                 f"{self.c[i]!r}")
        if self.b_err is not None:
            if len(self.b_err) != s:
                raise ValueError("tableau: b_err must have one entry per stage")
            if abs(sum(self.b_err)) > 1e-10:
                raise ValueError(f"tableau: sum(b_err) = {sum(self.b_err)!r}, expected 0")
        if self.fsal:
            last = list(self.a[-1]) + [0.0] * (s - 1 - len(self.a[-1]))
            if self.c[-1] != 1.0 or any(abs(x - y) > 1e-14 for x, y in zip(last, self.b[:-1])):
                raise ValueError("tableau: fsal needs c[-1] = 1 and a[-1] = b")
        if self.dense is not None:
            for i, row in enumerate(self.dense):
                if abs(sum(row) - self.b[i]) > 1e-10:
                    raise ValueError(f"tableau: dense row {i} must give b_i at theta = 1")

    @property
    def stages(self) -> int:
        return len(self.c)


class RungeKutta(ODESolver):
    """An explicit Runge--Kutta solver defined by its :class:`ButcherTableau`.

    Subclasses only set ``name`` and ``tableau``; :meth:`build` compiles the tableau into a
    step function that skips zero coefficients and fuses ``x + a h k`` into one kernel.
    """

    tableau: ClassVar[ButcherTableau]

    def __init__(self) -> None:
        tab = self.tableau
        # distinct stage times in order of first use; stage i evaluates at c[_cidx[i]]
        distinct: list[float] = []
        for ci in tab.c:
            if ci not in distinct:
                distinct.append(ci)
        self.c = tuple(distinct)
        self._cidx = tuple(distinct.index(ci) for ci in tab.c)
        self._rows = tuple(
            tuple((j, float(a)) for j, a in enumerate(row) if a != 0.0) for row in tab.a
        )
        self._b = tuple((j, float(b)) for j, b in enumerate(tab.b) if b != 0.0)
        # a fixed step needs the stages up to the last one with a non-zero weight (dopri5: 6)
        self._n_fixed = max(j for j, _ in self._b) + 1
        self._err = (
            None if tab.b_err is None
            else tuple((j, float(e)) for j, e in enumerate(tab.b_err) if e != 0.0)
        )
        self._dense = (
            None if tab.dense is None
            else tuple((i, tuple(float(v) for v in row)) for i, row in enumerate(tab.dense)
                       if any(v != 0.0 for v in row))
        )

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # the class itself states its order (sf.solvers.get("rk4").order == 4)
        if "tableau" in cls.__dict__:
            cls.order = cls.tableau.order

    def evals_per_step(self) -> int:
        return self._n_fixed

    def stages(self, u: Field, tt: Sequence[Tensor], x: Tensor, h: float,
               k0: Tensor | None = None, n: int | None = None) -> list[Tensor]:
        """The first ``n`` (default: all) stage derivatives ``k_i`` of one step (``k0`` reuses a
        known first stage)."""
        return self._stages(u, tt, x, h, k0, n)[0]

    def _stages(self, u: Field, tt: Sequence[Tensor], x: Tensor, h: float,
                k0: Tensor | None, n: int | None,
                out: Sequence[Tensor | None] | None = None) -> tuple[list[Tensor], Tensor]:
        """``(k, x_last)``: the stage derivatives and the last stage's input. ``out[i]``, if
        given, receives stage ``i``'s input (no allocation)."""
        rows, cidx = self._rows, self._cidx
        if n is not None:
            rows = rows[:n]
        k: list[Tensor] = []
        xi = x
        for i, row in enumerate(rows):
            if i == 0 and k0 is not None:
                k.append(k0)
                continue
            xi = x
            if row:
                j, a = row[0]
                buf = out[i] if out is not None else None
                if buf is None:
                    xi = torch.add(x, k[j], alpha=a * h)
                else:
                    xi = torch.add(x, k[j], alpha=a * h, out=buf)
                for j, a in row[1:]:
                    xi.add_(k[j], alpha=a * h)
            k.append(u(tt[cidx[i]], xi))
        return k, xi

    def embedded_step(self, u: Field, tt: Sequence[Tensor], x: Tensor, h: float,
                      k0: Tensor | None = None, out: Sequence[Tensor | None] | None = None
                      ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """One step of an embedded pair (MATH.md §2): ``(x_new, err, k)``.

        ``x_new = x + h sum_i b_i k_i`` (``x``'s shape), ``err = h sum_i b_err_i k_i`` (the
        local error estimate, ``x``'s shape) and ``k`` the ``s`` stage derivatives. ``k0``
        reuses a known first stage ``u(t, x)``. For an FSAL tableau (``a[-1] == b``) ``x_new`` is
        the last stage's input, so it costs no extra combination, and ``k[-1] = u(t + h, x_new)``
        is the next step's ``k0``. ``tt`` holds one time per entry of ``self.c``.

        ``out`` (optional, ``s + 1`` tensors of ``x``'s shape or ``None``): preallocated
        buffers; ``out[i]`` receives stage ``i``'s input (for FSAL the last one is ``x_new``),
        ``out[s]`` a non-FSAL ``x_new`` and ``out[0]`` the error. Only without autograd.
        """
        if self._err is None:
            raise ValueError(f"solver: {self.name!r} has no error estimate (tableau.b_err)")
        k, x_last = self._stages(u, tt, x, h, k0, None, out)
        if self.tableau.fsal:
            x_new = x_last
        elif out is not None and out[-1] is not None:
            x_new = self._combine_into(x, k, h, self._b, out[-1])
        else:
            x_new = self.combine(x, k, h)
        terms = self._err
        j, w = terms[0]
        if out is not None and out[0] is not None:
            err = torch.mul(k[j], w * h, out=out[0])
        else:
            err = torch.mul(k[j], w * h)
        for j, w in terms[1:]:
            err.add_(k[j], alpha=w * h)
        return x_new, err, k

    @staticmethod
    def _combine_into(x: Tensor, k: Sequence[Tensor], h: float,
                      terms: Sequence[tuple[int, float]], out: Tensor) -> Tensor:
        j, w = terms[0]
        y = torch.add(x, k[j], alpha=w * h, out=out)
        for j, w in terms[1:]:
            y.add_(k[j], alpha=w * h)
        return y

    def dense_weights(self, theta: float) -> list[tuple[int, float]] | None:
        """``[(i, b_i(theta))]`` of the tableau's continuous extension, or ``None`` if it has
        none: ``x(t + theta h) ~ x + h sum_i b_i(theta) k_i`` with
        ``b_i(theta) = sum_q dense[i][q] theta^(q+1)``."""
        if self._dense is None:
            return None
        out = []
        for i, row in self._dense:
            w, p = 0.0, theta
            for v in row:
                w += v * p
                p *= theta
            out.append((i, w))
        return out

    def combine(self, x: Tensor, k: Sequence[Tensor], h: float,
                weights: Sequence[tuple[int, float]] | None = None) -> Tensor:
        """``x + h sum_i w_i k_i`` (default weights: ``b``)."""
        terms = self._b if weights is None else weights
        j, w = terms[0]
        y = torch.add(x, k[j], alpha=w * h)
        for j, w in terms[1:]:
            y.add_(k[j], alpha=w * h)
        return y

    def build(self, u: Field) -> StepFn:
        stages, combine = self.stages, self.combine

        n = self._n_fixed

        def step(tt: tuple[Tensor, ...], x: Tensor, h: float, noise: Noise = None) -> Tensor:
            return combine(x, stages(u, tt, x, h, None, n), h)

        if len(self._rows) == 1 and len(self._b) == 1:  # one-stage methods: skip the stage loop
            (_, w), = self._b

            def step1(tt: tuple[Tensor, ...], x: Tensor, h: float, noise: Noise = None) -> Tensor:
                return torch.add(x, u(tt[0], x), alpha=w * h)

            return step1
        return step


def _rk(name: str, tab: ButcherTableau, doc: str) -> type[RungeKutta]:
    cls = type(name.capitalize(), (RungeKutta,), {"name": name, "tableau": tab, "__doc__": doc})
    return cls


EULER = ButcherTableau(c=[0.0], a=[[]], b=[1.0], order=1)
MIDPOINT = ButcherTableau(c=[0.0, 0.5], a=[[], [0.5]], b=[0.0, 1.0], order=2)
HEUN = ButcherTableau(c=[0.0, 1.0], a=[[], [1.0]], b=[0.5, 0.5], order=2)
RK4 = ButcherTableau(
    c=[0.0, 0.5, 0.5, 1.0],
    a=[[], [0.5], [0.0, 0.5], [0.0, 0.0, 1.0]],
    b=[1 / 6, 1 / 3, 1 / 3, 1 / 6],
    order=4,
)

Euler = _rk("euler", EULER, "Forward Euler, order 1: ``x + h u(t, x)``.")
Midpoint = _rk("midpoint", MIDPOINT,
               "Explicit midpoint, order 2: ``x + h u(t+h/2, x+h/2 u(t,x))``.")
Heun = _rk("heun", HEUN, "Heun (explicit trapezoid), order 2.")
RK4Solver = _rk("rk4", RK4, "Classical 4-stage Runge--Kutta, order 4.")
