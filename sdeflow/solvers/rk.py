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

    @property
    def order(self) -> int:  # type: ignore[override]
        return self.tableau.order

    def evals_per_step(self) -> int:
        return self.tableau.stages

    def stages(self, u: Field, tt: Sequence[Tensor], x: Tensor, h: float,
               k0: Tensor | None = None) -> list[Tensor]:
        """All stage derivatives ``k_i`` of one step (``k0`` reuses a known first stage)."""
        rows, cidx = self._rows, self._cidx
        k: list[Tensor] = []
        for i, row in enumerate(rows):
            if i == 0 and k0 is not None:
                k.append(k0)
                continue
            xi = x
            if row:
                j, a = row[0]
                xi = torch.add(x, k[j], alpha=a * h)
                for j, a in row[1:]:
                    xi.add_(k[j], alpha=a * h)
            k.append(u(tt[cidx[i]], xi))
        return k

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

        def step(tt: tuple[Tensor, ...], x: Tensor, h: float, noise: Noise = None) -> Tensor:
            return combine(x, stages(u, tt, x, h), h)

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
