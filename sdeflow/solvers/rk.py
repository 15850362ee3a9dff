"""Explicit Runge--Kutta methods as data: one engine runs every Butcher tableau (docs/math.md §3.1).

A tableau (c, A, b) defines the step

    k_i = u(t + c_i h, x + h sum_{j<i} a_ij k_j),     x_new = x + h sum_i b_i k_i.

An embedded pair also carries ``b_err = b - b_hat``; ``h sum_i b_err_i k_i`` is the local error
estimate of the lower-order solution. A tableau validates itself on construction: sum(b) = 1,
row sums of A equal c, A strictly lower triangular, and sum(b_err) = 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..interpolation import Hermite, Interpolant, Table
from ..problems import Field
from .base import Capabilities, Noise, Solver, StepResult, Terms

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


class RungeKutta(Solver, register=False):
    """An explicit Runge--Kutta solver given by its :class:`ButcherTableau` (docs/math.md §3).

    Subclasses set ``name`` and ``tableau``; the capabilities follow from the tableau (order,
    embedded error order, FSAL, dense table). One step evaluates

        k_i = u(t + c_i h, x + h sum_{j<i} a_ij k_j),   x_new = x + h sum_i b_i k_i,

    and, when the loop asks for an error estimate (``terms.adaptive``), ``err = h sum_i
    b_err_i k_i``. An FSAL tableau hands ``k_s = u(t + h, x_new)`` to the next step as its
    state; without an error estimate only the stages the propagated solution needs are
    evaluated (dopri5: 6). Zero coefficients are skipped and ``x + a h k`` is one fused kernel.
    """

    tableau: ClassVar[ButcherTableau]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        tab = cls.__dict__.get("tableau")
        if tab is None:
            return
        embedded = tab.b_err is not None
        cls.caps = Capabilities(
            order=float(tab.order),
            error_order=float(min(tab.order, tab.embedded_order or tab.order))
            if embedded else None,
            adaptive=embedded, stateful=tab.fsal, fsal=tab.fsal,
            interpolant="table" if tab.dense is not None else "hermite",
        )
        cls.order = tab.order

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
        self._one_stage = len(self._rows) == 1 and len(self._b) == 1
        self._w1 = self._b[0][1]

    def evals_per_step(self) -> int:
        """Field evaluations of one fixed step (no error estimate)."""
        return self._n_fixed

    def _stages(self, u: Field, tt: Sequence[Tensor], x: Tensor, h: float,
                k0: Tensor | None, n: int | None) -> tuple[list[Tensor], Tensor]:
        """``(k, x_last)``: the first ``n`` stage derivatives and the last stage's input."""
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
                xi = torch.add(x, k[j], alpha=a * h)
                for j, a in row[1:]:
                    xi.add_(k[j], alpha=a * h)
            k.append(u(tt[cidx[i]], xi))
        return k, xi

    def _workspace(self, x: Tensor) -> _Workspace:
        key = (x.shape, x.dtype, x.device)
        ws = self.__dict__.get("_ws")
        if ws is None or ws.key != key:
            ws = self._ws = _Workspace(key, self.tableau, x)
        return ws

    def _fused_step(self, u: Field, tt: Sequence[Tensor], x: Tensor, h: float,
                    k0: Tensor | None) -> tuple[list[Tensor], Tensor, Tensor] | None:
        """One embedded step with the stages stacked in one ``[s, N]`` buffer (docs/math.md
        §11.4): stage ``i``'s input is one matrix-vector product ``x + h K[:i]^T a_i`` into a
        reused buffer, and the error ``h K^T b_err`` one more; no allocation besides the
        field's own outputs and ``x_new``. Only without autograd (``None`` when a field's
        output needs gradients: the caller takes the plain path)."""
        ws = self._workspace(x)
        tab, cidx = self.tableau, self._cidx
        s = tab.stages
        kbuf, xf = ws.k, x.reshape(-1)
        k: list[Tensor] = []
        x_new = x
        for i in range(s):
            if i == 0 and k0 is not None:
                ki = k0
            else:
                if i == 0:
                    xi = x
                else:
                    last = i == s - 1 and tab.fsal
                    out = None if last else ws.stage[i]
                    flat = torch.addmv(xf, kbuf[:i].T, ws.a[i], alpha=h, out=out)
                    xi = flat.view(x.shape)
                    if last:
                        x_new = xi
                ki = u(tt[cidx[i]], xi)
            if ki.requires_grad:
                return None
            kbuf[i].copy_(ki.reshape(-1))
            k.append(ki)
        if not tab.fsal:
            x_new = torch.addmv(xf, kbuf.T, ws.b, alpha=h).view(x.shape)
        err = torch.mv(kbuf.T, ws.e, out=ws.err).mul_(h).view(x.shape)
        return k, x_new, err

    @staticmethod
    def combine(x: Tensor, k: Sequence[Tensor], h: float,
                terms: Sequence[tuple[int, float]]) -> Tensor:
        """``x + h sum_i w_i k_i`` over ``terms = [(i, w_i)]``."""
        j, w = terms[0]
        y = torch.add(x, k[j], alpha=w * h)
        for j, w in terms[1:]:
            y.add_(k[j], alpha=w * h)
        return y

    def step(self, terms: Terms, tt: tuple[Tensor, ...], t: float, h: float, x: Tensor,
             state: Any, noise: Noise) -> StepResult:
        u = terms.u
        if isinstance(state, Slope):
            # the end slope of the previous step, valid only for that step's very state (a
            # hook may have replaced it, or a replay may hand in another tensor)
            k0 = state.get(tt[0]) if state.x is x else None
        else:
            k0 = state
        fsal = self.tableau.fsal
        want_err = terms.adaptive and self._err is not None
        if self._one_stage and not want_err:
            k1 = u(tt[0], x) if k0 is None else k0  # type: ignore[misc]
            x_new = torch.add(x, k1, alpha=self._w1 * h)
            if not terms.dense:
                return _result((x_new, None, None, None))
            slope = Slope(u, x_new)  # type: ignore[arg-type]
            return StepResult(x_new, None, ([k1], slope), slope)
        if not want_err:
            chain = fsal and k0 is not None and not isinstance(state, Slope)
            k, x_last = self._stages(u, tt, x, h, k0, None if chain else self._n_fixed)  # type: ignore[arg-type]
            x_new = x_last if chain else self.combine(x, k, h, self._b)
            if chain:
                return StepResult(x_new, None, (k, None), k[-1])
            if not terms.dense:
                return _result((x_new, None, None, None))
            slope = Slope(u, x_new)  # type: ignore[arg-type]
            return StepResult(x_new, None, (k, slope), slope)
        if (x.is_contiguous() and x.numel() > FUSE_MIN and not x.requires_grad
                and x.dtype in (torch.float32, torch.float64)):
            fused = self._fused_step(u, tt, x, h, k0)  # type: ignore[arg-type]
            if fused is not None:
                k, x_new, err = fused
                if fsal:
                    return StepResult(x_new, err, (k, None), k[-1])
                slope = Slope(u, x_new)  # type: ignore[arg-type]
                return StepResult(x_new, err, (k, slope), slope)
        k, x_last = self._stages(u, tt, x, h, k0, None)  # type: ignore[arg-type]
        x_new = x_last if fsal else self.combine(x, k, h, self._b)
        j, w = self._err[0]  # type: ignore[index]
        err = torch.mul(k[j], w * h)
        for j, w in self._err[1:]:  # type: ignore[index]
            err.add_(k[j], alpha=w * h)
        if fsal:
            return StepResult(x_new, err, (k, None), k[-1])
        slope = Slope(u, x_new)  # type: ignore[arg-type]
        return StepResult(x_new, err, (k, slope), slope)

    def interpolant(self, terms: Terms, t: float, h: float, x0: Tensor, x1: Tensor,
                    dense: Any) -> Interpolant:
        k, slope = dense
        if self._dense is not None and len(k) == self.tableau.stages:
            return Table(t, h, x0, x1, k, self._dense)
        if slope is not None:
            return Hermite(t, h, x0, x1, k[0], None,
                           lambda: slope.get(torch.full((), t + h, dtype=x1.dtype,
                                                        device=x1.device)))
        f1 = k[-1] if self.tableau.fsal and len(k) == self.tableau.stages else None
        return Hermite.from_field(terms.u, t, h, x0, x1, k[0], f1)


FUSE_MIN = 4096  # states with more elements take the fused (stacked-stage) adaptive step


class _Workspace:
    """Buffers of the fused adaptive step for one state shape/dtype/device: the stacked
    stages ``k [s, N]``, stage inputs, the error, and the coefficient vectors as tensors.
    (A solver instance keeps one; do not share an instance between threads.)"""

    def __init__(self, key: Any, tab: ButcherTableau, x: Tensor) -> None:
        self.key = key
        s, n = tab.stages, x.numel()
        opts = dict(dtype=x.dtype, device=x.device)
        self.k = torch.empty((s, n), **opts)  # type: ignore[arg-type]
        self.stage = [torch.empty(n, **opts) for _ in range(s)]  # type: ignore[arg-type]
        self.err = torch.empty(n, **opts)  # type: ignore[arg-type]

        def vec(row: Sequence[float], m: int) -> Tensor:
            v = list(row) + [0.0] * (m - len(row))
            return torch.tensor(v[:m], dtype=torch.float64).to(**opts)  # type: ignore[arg-type]

        self.a = [None] + [vec(tab.a[i], i) for i in range(1, s)]
        self.b = vec(tab.b, s)
        self.e = vec(tab.b_err or [0.0] * s, s)


def _result(values: tuple[Any, Any, Any, Any]) -> StepResult:
    """A :class:`StepResult` without the named-tuple constructor's Python-level call."""
    return tuple.__new__(StepResult, values)


class Slope:
    """``u(t1, x1)`` at a step's end, evaluated at most once: the next step's first stage and
    the Hermite interpolant's end slope share it (``t1`` comes from whoever asks first)."""

    __slots__ = ("u", "x", "v")

    def __init__(self, u: Field, x: Tensor) -> None:
        self.u, self.x, self.v = u, x, None

    def get(self, t: Tensor) -> Tensor:
        if self.v is None:
            self.v = self.u(t, self.x)
        return self.v


EULER = ButcherTableau(c=[0.0], a=[[]], b=[1.0], order=1)
MIDPOINT = ButcherTableau(c=[0.0, 0.5], a=[[], [0.5]], b=[0.0, 1.0], order=2)
HEUN = ButcherTableau(c=[0.0, 1.0], a=[[], [1.0]], b=[0.5, 0.5], order=2)
RK4 = ButcherTableau(
    c=[0.0, 0.5, 0.5, 1.0],
    a=[[], [0.5], [0.0, 0.5], [0.0, 0.0, 1.0]],
    b=[1 / 6, 1 / 3, 1 / 3, 1 / 6],
    order=4,
)



class Euler(RungeKutta, name="euler"):
    """Forward Euler, order 1: ``x + h u(t, x)``."""

    tableau = EULER


class Midpoint(RungeKutta, name="midpoint"):
    """Explicit midpoint, order 2: ``x + h u(t + h/2, x + h/2 u(t, x))``."""

    tableau = MIDPOINT


class Heun(RungeKutta, name="heun"):
    """Heun (explicit trapezoid), order 2."""

    tableau = HEUN


class RK4Solver(RungeKutta, name="rk4"):
    """Classical 4-stage Runge--Kutta, order 4."""

    tableau = RK4
