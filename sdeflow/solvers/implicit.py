"""Implicit solvers for stiff problems, as data (docs/math.md §13).

* ESDIRK methods (explicit first stage, singly diagonally implicit, stiffly accurate), one
  engine :class:`ESDIRK` for every :class:`ESDIRKTableau`:

  ====================  =====  ========  =======================================
  name                  order  embedded  tableau
  ====================  =====  ========  =======================================
  ``implicit_euler``    1      --        backward Euler (a 2-stage ESDIRK form)
  ``kvaerno3``          3      2         Kvaerno (2004), 4 stages, L-stable
  ``kvaerno5``          5      4         Kvaerno (2004), 7 stages, L-stable
  ====================  =====  ========  =======================================

  Stage ``i`` solves ``z_i = x + h sum_{j<i} a_ij k_j + h gamma u(t + c_i h, z_i)`` by
  simplified Newton (:class:`~sdeflow.newton.Newton`, one LU of ``I - h gamma J`` per step) and
  sets ``k_i = (z_i - r_i) / (h gamma)``; ``x_new = z_s`` (stiffly accurate), the error estimate
  is ``h sum_i (b_i - b_hat_i) k_i``.
* ``rodas5``: the linearly implicit Rosenbrock method of Di Marzo (1993), 8 stages, order 5(4),
  :class:`RosenbrockTableau` in Hairer's transformed form (one Jacobian and one LU per step, no
  Newton iteration); its published estimate is completed by a filtered quadrature defect.
* ``ros3p``: the Rosenbrock method ROS3P of Lang & Verwer (2001), 3 stages, order 3, A-stable,
  with a fourth (FSAL) stage for an order-2 estimate; the same engine and tableau form.
* ``implicit_euler_maruyama``: the drift-implicit theta-method for Ito SDEs,
  ``x_new = x + h [(1 - theta) f(t, x) + theta f(t + h, x_new)] + g(t, x) dW``.

Dense output: cubic Hermite from ``u`` at both ends of a step (both are stages: no extra
evaluation). Tableau sources: Kvaerno, BIT 44 (2004) 489-502 (the coefficients and stage
predictors as tabulated in diffrax / OrdinaryDiffEq.jl); Di Marzo, RODAS5(4), Geneva (1993);
Lang & Verwer, BIT 41 (2001) 731-738 (ROS3P; as tabulated in OrdinaryDiffEq.jl).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import NewtonError
from ..hints import register as register_hint
from ..newton import Jacobian, Newton, layout
from .base import Capabilities, Noise, Solver, StepResult, Terms, sde_orders

Tensor = torch.Tensor

#: Jacobians are re-evaluated after a step whose Newton contraction rate exceeded this
THETA_JACOBIAN = 0.05
FIXED_MAX_ITER = 50  # Newton iterations allowed per stage with fixed steps


# -------------------------------------------------------------------------------- tableaus
@dataclass(frozen=True)
class ESDIRKTableau:
    """An ESDIRK method: ``a`` lower triangular with ``a[0] = 0`` and diagonal ``gamma``.

    Attributes:
        c: ``[s]`` stage times (``c[0] = 0``).
        a: ``s`` rows of the strictly lower part (row ``i`` has ``i`` entries).
        gamma: the diagonal of stages ``1 .. s-1``.
        order: order of ``x_new = z_s`` (the last row is ``b``: stiffly accurate).
        b_hat: weights of the embedded solution (``None``: fixed steps only).
        embedded_order: its order.
        predictor: optional rows ``alpha_i`` of the stage guess ``x + h sum_j alpha_ij k_j``.
    """

    c: Sequence[float]
    a: Sequence[Sequence[float]]
    gamma: float
    order: int
    b_hat: Sequence[float] | None = None
    embedded_order: int | None = None
    predictor: Sequence[Sequence[float]] | None = None

    def __post_init__(self) -> None:
        s = len(self.c)
        if len(self.a) != s or self.c[0] != 0.0:
            raise ValueError("tableau: expected one row of a per stage and c[0] = 0")
        for i, row in enumerate(self.a):
            if len(row) != i:
                raise ValueError(f"tableau: row {i} of a must have {i} entries")
            if i and abs(sum(row) + self.gamma - self.c[i]) > 1e-10:
                raise ValueError(f"tableau: row {i} of a plus gamma must sum to c[{i}]")
        if abs(sum(self.a[-1]) + self.gamma - 1.0) > 1e-10:
            raise ValueError("tableau: the last row (b) must sum to 1")
        if self.b_hat is not None and abs(sum(self.b_hat) - 1.0) > 1e-10:
            raise ValueError("tableau: b_hat must sum to 1")

    @property
    def b(self) -> list[float]:
        return [*self.a[-1], self.gamma]


IMPLICIT_EULER = ESDIRKTableau(c=[0.0, 1.0], a=[[], [0.0]], gamma=1.0, order=1)

_G3 = 0.43586652150
KVAERNO3 = ESDIRKTableau(
    c=[0.0, 2 * _G3, 1.0, 1.0],
    a=[[], [_G3],
       [(-4 * _G3**2 + 6 * _G3 - 1) / (4 * _G3), (-2 * _G3 + 1) / (4 * _G3)],
       [(6 * _G3 - 1) / (12 * _G3), -1 / ((24 * _G3 - 12) * _G3),
        (-6 * _G3**2 + 6 * _G3 - 1) / (6 * _G3 - 3)]],
    gamma=_G3, order=3, embedded_order=2,
    # the embedded solution is stage 3: b_hat = (a_30, a_31, gamma, 0)
    b_hat=[(-4 * _G3**2 + 6 * _G3 - 1) / (4 * _G3), (-2 * _G3 + 1) / (4 * _G3), _G3, 0.0],
    predictor=[[], [1.0], [1.0 - 1 / (2 * _G3), 1 / (2 * _G3)],
               [(-4 * _G3**2 + 6 * _G3 - 1) / (4 * _G3), (-2 * _G3 + 1) / (4 * _G3), _G3]],
)

_G5 = 0.26
_K5_A6 = [0.13855640231268224, 0.0, -0.04245337201752043, 0.02446657898003141,
          0.61943039072480676]
KVAERNO5 = ESDIRKTableau(
    c=[0.0, 0.52, 1.230333209967908, 0.8957659843500759, 0.43639360985864756, 1.0, 1.0],
    a=[[], [_G5], [0.13, 0.84033320996790809],
       [0.22371961478320505, 0.47675532319799699, -0.06470895363112615],
       [0.16648564323248321, 0.10450018841591720, 0.03631482272098715, -0.13090704451073998],
       _K5_A6,
       [0.13659751177640291, 0.0, -0.05496908796538376, -0.04118626728321046,
        0.62993304899016403, 0.06962479448202728]],
    gamma=_G5, order=5, embedded_order=4,
    b_hat=[*_K5_A6, _G5, 0.0],  # the embedded solution is stage 6
    predictor=[[], [1.0], [-1.366025403784441, 2.3660254037844357],
               [-0.19650552613122207, 0.8113579546496623, 0.38514757148155954],
               [0.10375304369958693, 0.937994698066431, -0.04174774176601781, 0.0],
               [-0.17281112873898072, 0.6235784481025847, 0.5492326806363959, 0.0, 0.0],
               [*_K5_A6, _G5]],
)


@dataclass(frozen=True)
class RosenbrockTableau:
    """A Rosenbrock method in Hairer's transformed form (docs/math.md §13.2).

    ``(I / (h gamma) - J) U_i = u(t + alpha_i h, x + sum_j a_ij U_j) + sum_j C_ij / h U_j
    + h gamma_i u_t``, ``x_new = x + sum_i m_i U_i``, error ``E = sum_i (m_i - m_hat_i) U_i``.

    ``defect_weight = K > 0`` adds a second, independent estimate, the filtered quadrature
    defect ``D = K (I - h gamma J)^-1 [x_new - x - h/6 (u_0 + 4 u_mid + u_1)]`` with
    ``u_1 = u(t + h, x_new)`` (FSAL) and ``u_mid = u(t + h/2, x_mid)`` at the cubic Hermite
    midpoint ``x_mid = (x + x_new)/2 + h/8 (u_0 - u_1)``: ``O(h^5)`` on every smooth
    solution, and the error is ``sqrt(E^2 + D^2)`` per element (docs/math.md §13.2).
    """

    alpha: Sequence[float]
    gamma_sum: Sequence[float]
    gamma: float
    a: Sequence[Sequence[float]]
    C: Sequence[Sequence[float]]
    m: Sequence[float]
    m_hat: Sequence[float]
    order: int
    embedded_order: int
    defect_weight: float = 0.0

    def __post_init__(self) -> None:
        s = len(self.alpha)
        if not self.defect_weight >= 0.0:
            raise ValueError("tableau: defect_weight must be >= 0")
        if not (len(self.a) == len(self.C) == s and len(self.m) == len(self.m_hat) == s):
            raise ValueError("tableau: alpha, a, C, m and m_hat need one entry per stage")
        for i in range(s):
            if len(self.a[i]) != i or len(self.C[i]) != i:
                raise ValueError(f"tableau: rows {i} of a and C must have {i} entries")


_R5_X = [-14.09640773051259, 6.925207756232704, -41.47510893210728, 2.343771018586405,
         24.13215229196062]
RODAS5 = RosenbrockTableau(
    alpha=[0.0, 0.38, 0.3878509998321533, 0.4839718937873840, 0.4570477008819580, 1.0, 1.0,
           1.0],
    gamma_sum=[0.19, -0.1823079225333714636, -0.319231832186874912, 0.3449828624725343,
               -0.377417564392089818, 0.0, 0.0, 0.0],
    gamma=0.19,
    a=[[], [2.0], [3.040894194418781, 1.041747909077569],
       [2.576417536461461, 1.622083060776640, -0.9089668560264532],
       [2.760842080225597, 1.446624659844071, -0.3036980084553738, 0.2877498600325443],
       _R5_X, [*_R5_X, 1.0], [*_R5_X, 1.0, 1.0]],
    C=[[], [-10.31323885133993], [-21.04823117650003, -7.234992135176716],
       [32.22751541853323, -4.943732386540191, 19.44922031041879],
       [-20.69865579590063, -8.816374604402768, 1.260436877740897, -0.7495647613787146],
       [-46.22004352711257, -17.49534862857472, -289.6389582892057, 93.60855400400906,
        318.3822534212147],
       [34.20013733472935, -14.15535402717690, 57.82335640988400, 25.83362985412365,
        1.408950972071624, -6.551835421242162],
       [42.57076742291101, -13.80770672017997, 93.98938432427124, 18.77919633714503,
        -31.58359187223370, -6.685968952921985, -5.810979938412932]],
    # x_new = (input of stage 8) + U_8; the embedded solution stops at the input
    m=[*_R5_X, 1.0, 1.0, 1.0],
    m_hat=[*_R5_X, 1.0, 1.0, 0.0],
    order=5, embedded_order=4,
    # U_8 is blind to bushy terms and quadratures (Rodas5 docstring): add the filtered
    # Simpson defect, whose h^5 term (1/2880 of the fourth derivative) K = 24 scales to the
    # Taylor coefficient 1/5! of an order-4 estimate
    defect_weight=24.0,
)

# Lang & Verwer (2001), ROS3P: gamma = 1/2 + sqrt(3)/6; in Hairer's transformed form the
# coefficients of the three stages are rational functions of 1/gamma. The published embedded
# row (2.113248654051871, 1, 0.4226497308103742) differs from m by a multiple of U_1 - U_2 in
# the classical form, which vanishes identically on linear autonomous problems (stages 1 and 2
# have the same stability function there), so the estimate would be blind to every linear
# error. Here a fourth stage at (t + h, x_new) (classical row beta_4 = (b, gamma), so a_4 = m,
# C_4 = 0; FSAL: its slope is the next step's first, no extra evaluation, one extra solve)
# carries an order-2 estimate with classical error weights e = (-1/3, -1/3, e_3, e_4), e_4 =
# (sqrt 3 / 2) e_3, e . c^2 = 1/3, which sees the linear order-3 term too (derivation and the
# order conditions in tests/core/test_implicit.py).
_G3P = 0.5 + math.sqrt(3.0) / 6.0
_I3P = 1.0 / _G3P
_C3P = -_I3P * (2.0 - 0.5 * _I3P)  # C_32
_M3P = _I3P * (2.0 / 3.0 - _I3P / 6.0)  # m_2
_ROS3P_M = [_I3P * (1.0 + _M3P), _M3P, _I3P / 3.0]
ROS3P = RosenbrockTableau(
    alpha=[0.0, 1.0, 1.0, 1.0],
    gamma_sum=[_G3P, _G3P - 1.0, 0.5 - 2.0 * _G3P, _G3P],
    gamma=_G3P,
    a=[[], [_I3P], [_I3P, 0.0], _ROS3P_M],
    C=[[], [-_I3P**2], [-_I3P * (1.0 - _C3P), _C3P], [0.0, 0.0, 0.0]],
    m=[*_ROS3P_M, 0.0],
    m_hat=[1.7209438086386066, 0.38119784648299354, -0.03034488539711087,
           -0.39230484541326427],
    order=3, embedded_order=2,
)


# ------------------------------------------------------------------------------ shared part
def _combine(x: Tensor, ks: Sequence[Tensor], w: Sequence[tuple[int, float]], h: float
             ) -> Tensor:
    y = x.clone() if not w else torch.add(x, ks[w[0][0]], alpha=w[0][1] * h)
    for j, a in w[1:]:
        y.add_(ks[j], alpha=a * h)
    return y


def _nonzero(row: Sequence[float]) -> tuple[tuple[int, float], ...]:
    return tuple((j, float(v)) for j, v in enumerate(row) if v != 0.0)


class ImplicitSolver(Solver, register=False):
    """Common part: the Newton/Jacobian cache of one solve, tolerances, stats, failures.

    The loop calls ``begin(rtol, atol)`` at the start of each solve (``None`` for fixed
    steps), merges :meth:`stats` into ``Solution.stats``, and asks :meth:`failure` for the
    reason of a run of rejected steps.
    """

    #: Newton tolerances of fixed-step solves (relative and absolute, per element)
    fixed_tol: float = 1e-12

    def __init__(self, kappa: float = 0.03, max_iter: int = 10) -> None:
        if not (isinstance(kappa, (int, float)) and 0 < kappa < 1):
            raise ValueError(f"kappa: expected a Newton tolerance in (0, 1), got {kappa!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter: expected a positive int, got {max_iter!r}")
        self.kappa, self.max_iter = float(kappa), max_iter
        self._nw: Newton | None = None
        self._problem: Any = None
        self._failure: NewtonError | None = None
        self.rtol = self.atol = self.fixed_tol
        self._fixed = True

    # --------------------------------------------------------------------- loop hooks
    def begin(self, rtol: float | None, atol: float | None) -> None:
        self._nw = None
        self._failure = None
        self._fixed = rtol is None
        self.rtol = self.fixed_tol if rtol is None else rtol
        self.atol = self.fixed_tol if atol is None else atol

    def stats(self) -> dict[str, int]:
        return self._nw.stats() if self._nw is not None else {
            "njac": 0, "nlu": 0, "nnewton": 0, "nnewton_fail": 0}

    def failure(self) -> NewtonError | None:
        return self._failure

    # ------------------------------------------------------------------------- helpers
    def _field_and_jac(self, terms: Terms) -> tuple[Any, Any]:
        p = terms.problem
        if terms.u is not None:
            return p._field(), getattr(p, "jacobian", None)
        return p._fields()[0], getattr(p, "drift_jacobian", None)

    def newton(self, terms: Terms) -> Newton:
        if self._nw is None or self._problem is not terms.problem:
            field, user = self._field_and_jac(terms)
            # fixed steps converge to round-off, which a simplified Newton iteration on a
            # nonlinear field reaches only linearly: allow more iterations there
            limit = max(self.max_iter, FIXED_MAX_ITER) if self._fixed else self.max_iter
            self._nw = Newton(Jacobian(field, user), self.kappa, limit)
            self._problem = terms.problem
        return self._nw

    def scale(self, x: Tensor) -> Tensor:
        tol = max(self.rtol, 4 * torch.finfo(x.dtype).eps) if self._fixed else self.rtol
        atol = max(self.atol, 4 * torch.finfo(x.dtype).eps) if self._fixed else self.atol
        return x.detach().abs().mul(tol).add_(atol)

    def _fail(self, t: float, h: float, x: Tensor, n: float, terms: Terms) -> StepResult:
        err = NewtonError(
            f"the Newton iteration of {self.name!r} did not converge at t={t:.6g} (step "
            f"h={h:.3g}, last scaled increment {n:.3g}, {self.max_iter} iterations allowed); "
            f"the problem may be singular there, or loosen rtol/atol", t=t, residual=n,
            t_reached=t, x=x)
        self._failure = err
        if not terms.adaptive:
            raise err
        return StepResult(x, torch.full_like(x, math.inf), None, None)

    def init(self, terms: Terms, t0: float, x0: Tensor, h: float) -> Any:
        if self._nw is not None:
            self._nw.stale = True  # a restart (a jump): the old Jacobian is out of date
        return None

    def check(self, problem: Any) -> None:
        if torch.is_inference_mode_enabled() and getattr(problem, "jacobian", None) is None:
            raise ValueError(
                f"solver: {self.name!r} needs autograd for the Jacobian, which "
                f"torch.inference_mode disables; run under torch.no_grad() or pass "
                f"ODE(..., jacobian=J)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kappa={self.kappa}, max_iter={self.max_iter})"


# ------------------------------------------------------------------------------------ ESDIRK
class ESDIRK(ImplicitSolver, register=False):
    """The engine of every :class:`ESDIRKTableau` (module docstring; docs/math.md §13.1)."""

    coefficients: ESDIRKTableau

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        tab = cls.__dict__.get("coefficients")
        if tab is None:
            return
        embedded = tab.b_hat is not None
        cls.caps = Capabilities(order=float(tab.order),
                                error_order=float(tab.embedded_order) if embedded else None,
                                adaptive=embedded, implicit=True, stateful=True, fsal=True,
                                interpolant="hermite")
        cls.order = tab.order

    def __init__(self, kappa: float = 0.03, max_iter: int = 10) -> None:
        super().__init__(kappa, max_iter)
        tab = self.coefficients
        distinct: list[float] = []
        for ci in tab.c:
            if ci not in distinct:
                distinct.append(ci)
        self.c = tuple(distinct)
        self._cidx = tuple(distinct.index(ci) for ci in tab.c)
        self._rows = tuple(_nonzero(r) for r in tab.a)
        self._pred = tuple(_nonzero(r) for r in tab.predictor) if tab.predictor else None
        self._err = (_nonzero([b - bh for b, bh in zip(tab.b, tab.b_hat)])
                     if tab.b_hat is not None else None)

    def step(self, terms: Terms, tt: tuple[Tensor, ...], t: float, h: float, x: Tensor,
             state: Any, noise: Noise) -> StepResult:
        u, tab = terms.u, self.coefficients
        nw = self.newton(terms)
        k1 = state if state is not None else u(tt[0], x)  # type: ignore[misc]
        nw.prepare(tt[0], x)
        scale = self.scale(x)
        ch = h * tab.gamma
        for _attempt in range(2):
            nw.theta = 0.0
            ks, ok, n = [k1], True, 0.0
            z = x
            for i in range(1, len(tab.c)):
                r = _combine(x, ks, self._rows[i], h)
                if self._pred is not None:
                    z0 = _combine(x, ks, self._pred[i], h)
                else:
                    z0 = torch.add(r, ks[-1], alpha=ch)
                ti = tt[self._cidx[i]]
                z, ok, n, _ = nw.iterate(lambda zz, ti=ti: u(ti, zz), z0, ch, r, scale)  # type: ignore[misc]
                if not ok:
                    break
                ks.append((z - r) / ch)
            if ok or nw.fresh:
                break
            nw.jacobian(tt[0], x)  # the Jacobian was old: refresh it and retry once
        if not ok:
            nw.stale = True
            return self._fail(t, h, x, n, terms)
        self._failure = None
        nw.stale = nw.theta > THETA_JACOBIAN
        err = None
        if terms.adaptive and self._err is not None:
            err = _combine(torch.zeros_like(x), ks, self._err, h)
        return StepResult(z, err, (k1, ks[-1]), ks[-1])


class ImplicitEuler(ESDIRK, name="implicit_euler"):
    """Backward Euler ``x_new = x + h u(t + h, x_new)``, order 1, L-stable (fixed steps)."""

    coefficients = IMPLICIT_EULER


class Kvaerno3(ESDIRK, name="kvaerno3"):
    """Kvaerno's ESDIRK 3(2), 4 stages, L-stable, stiffly accurate, adaptive."""

    coefficients = KVAERNO3


class Kvaerno5(ESDIRK, name="kvaerno5"):
    """Kvaerno's ESDIRK 5(4), 7 stages, L-stable, stiffly accurate, adaptive."""

    coefficients = KVAERNO5


# ------------------------------------------------------------------------------- Rosenbrock
def _rosenbrock_fsal(tab: RosenbrockTableau) -> bool:
    """Whether the last stage's input is ``x_new`` at ``t + h`` (then its slope is
    ``u(t + h, x_new)``, reused by the dense output and the next step)."""
    return (len(tab.alpha) > 1 and tab.alpha[-1] == 1.0
            and list(tab.a[-1]) == list(tab.m[:-1]) and tab.m[-1] == 0.0)


class Rosenbrock(ImplicitSolver, register=False):
    """The engine of every :class:`RosenbrockTableau` (docs/math.md §13.2).

    One exact Jacobian ``J = du/dx`` and ``u_t = du/dt`` at ``(t, x)`` per step (reused when a
    rejected step is retried from the same point), one LU of ``I - h gamma J``, one linear
    solve per stage. The last stage is evaluated at ``x_new`` (stiffly accurate), so its slope
    serves the dense output and the next step (FSAL).
    """

    coefficients: RosenbrockTableau

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        tab = cls.__dict__.get("coefficients")
        if tab is None:
            return
        cls.caps = Capabilities(order=float(tab.order), error_order=float(tab.embedded_order),
                                adaptive=True, implicit=True, stateful=True,
                                fsal=_rosenbrock_fsal(tab) or tab.defect_weight > 0,
                                interpolant="hermite")
        cls.order = tab.order

    def __init__(self, autonomous: bool = False) -> None:
        super().__init__()
        if not isinstance(autonomous, bool):
            raise TypeError(f"autonomous: expected a bool, got {autonomous!r}")
        self.autonomous = autonomous
        tab = self.coefficients
        distinct: list[float] = []
        for ci in tab.alpha:
            if ci not in distinct:
                distinct.append(ci)
        self.c = tuple(distinct)
        self._cidx = tuple(distinct.index(ci) for ci in tab.alpha)
        self._a = tuple(tuple((j, float(v)) for j, v in enumerate(r) if v != 0.0)
                        for r in tab.a)
        self._C = tuple(tuple((j, float(v)) for j, v in enumerate(r) if v != 0.0)
                        for r in tab.C)
        self._m = tuple((j, float(v)) for j, v in enumerate(tab.m) if v != 0.0)
        self._e = tuple((j, float(a - b)) for j, (a, b) in enumerate(zip(tab.m, tab.m_hat))
                        if a != b)
        self._fsal = _rosenbrock_fsal(tab)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(autonomous={self.autonomous})"

    def step(self, terms: Terms, tt: tuple[Tensor, ...], t: float, h: float, x: Tensor,
             state: Any, noise: Noise) -> StepResult:
        u, tab = terms.u, self.coefficients
        nw = self.newton(terms)
        nw.jacobian(tt[0], x, with_t=not self.autonomous)
        ut = nw.J_t
        ch = h * tab.gamma
        nw.factor(ch)
        b, d = layout(x)
        shape = x.shape
        f1 = state if state is not None else u(tt[0], x)  # type: ignore[misc]
        us: list[Tensor] = []
        fi = f1
        for i in range(len(tab.alpha)):
            if i:
                yi = _combine(x, us, self._a[i], 1.0)
                fi = u(tt[self._cidx[i]], yi)  # type: ignore[misc]
            rhs = fi.reshape(b, d)
            if self._C[i]:
                rhs = rhs + _combine(torch.zeros_like(x), us, self._C[i], 1.0 / h).reshape(b, d)
            if ut is not None and tab.gamma_sum[i] != 0.0:
                rhs = rhs.add(ut, alpha=h * tab.gamma_sum[i])
            # out of place: lu_solve's backward needs its output
            us.append(torch.mul(nw.solve(rhs), ch).reshape(shape))
        x_new = _combine(x, us, self._m, 1.0)
        if not bool(torch.isfinite(x_new).all()) and terms.adaptive:
            return StepResult(x, torch.full_like(x, math.inf), None, state)
        err = _combine(torch.zeros_like(x), us, self._e, 1.0) if terms.adaptive else None
        f_end = fi if self._fsal else None
        if err is not None and tab.defect_weight > 0.0:
            f_end = u(tt[self._cidx[-1]] if tab.alpha[-1] == 1.0 else tt[0] + h, x_new)  # type: ignore[misc]
            x_mid = torch.add(x, x_new).mul_(0.5).add_(f1 - f_end, alpha=h / 8)
            f_mid = u(tt[0] + 0.5 * h, x_mid)  # type: ignore[misc]
            dfc = (x_new - x).sub_(f1 + 4.0 * f_mid + f_end, alpha=h / 6)
            dfc = torch.mul(nw.solve(dfc.reshape(b, d)).reshape(shape), tab.defect_weight)
            err = torch.hypot(err, dfc)
        return StepResult(x_new, err, (f1, f_end), f_end)


class Rodas5(Rosenbrock, name="rodas5"):
    """Di Marzo's RODAS5(4): Rosenbrock, 8 stages, order 5 (8 evaluations per step, one per
    stage).

    The published error estimate is ``U_8`` (the main solution minus the stage-8 input): its
    weights live on the three stages at ``t + h`` only, so it vanishes on every "bushy"
    elementary differential ``u^(k)(u, ..., u)``: it is exactly zero on quadratures
    ``x' = g(t)``, and the main method's largest order-6 defect (the bushy tree, 0.0058) is
    invisible to it. This is a property of the published coefficients, not of this
    implementation (tests/core/test_implicit.py checks the order conditions of both rows).
    So the estimate adds the filtered quadrature defect of :class:`RosenbrockTableau`
    (``defect_weight = 24``): 9 evaluations per step (8 stages, ``u_mid`` and the FSAL
    ``u(t + h, x_new)``, less the reused first stage) and one extra solve.

    ``autonomous=True`` skips ``du/dt`` (exact for fields without explicit time dependence).
    """

    coefficients = RODAS5


class Ros3p(Rosenbrock, name="ros3p"):
    """Lang & Verwer's ROS3P: Rosenbrock, 3 stages, order 3, A-stable with
    ``R(inf) = 1 - sqrt(3)`` (not L-stable: stiff transients are damped by 0.73 per step
    only), order 3 also for index-1 DAEs and free of order reduction on parabolic problems.

    The error estimate is not the published one (blind to linear problems, see ``ROS3P``): a
    fourth solve at ``(t + h, x_new)`` gives an order-2 estimate that sees linear, quadrature
    and nonlinear terms. Per step: 3 evaluations (FSAL), one Jacobian, one LU, 4 solves.

    ``autonomous=True`` skips ``du/dt`` (exact for fields without explicit time dependence).
    """

    coefficients = ROS3P


# ---------------------------------------------------------------------- drift-implicit SDE
class ImplicitEulerMaruyama(ImplicitSolver, name="implicit_euler_maruyama"):
    """The drift-implicit theta-method for Ito SDEs (docs/math.md §13.4):

    ``x_new = x + h [(1 - theta) f(t, x) + theta f(t + h, x_new)] + g(t, x) dW``.

    ``theta = 1`` (default: backward Euler in the drift) or ``1/2`` (trapezoidal drift); any
    ``theta`` in [0, 1]. Mean-square stable on ``dX = lambda X dt + mu X dW`` for every
    ``h > 0`` when ``theta = 1`` and ``2 lambda + mu^2 < 0``. Strong order 1/2 (1 for additive
    noise), weak order 1, every noise type.
    """

    caps = Capabilities(sde=True, order=1.0, implicit=True, noise_types=(
        "diagonal", "scalar", "additive", "general"), kinds=("ito",),
        **sde_orders({"diagonal": 0.5, "scalar": 0.5, "general": 0.5, "additive": 1.0}, 1.0))
    c = (0.0, 1.0)

    def __init__(self, theta: float = 1.0, kappa: float = 0.03, max_iter: int = 10) -> None:
        super().__init__(kappa, max_iter)
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not (
                0.0 <= theta <= 1.0):
            raise ValueError(f"theta: expected a number in [0, 1], got {theta!r}")
        self.theta = float(theta)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(theta={self.theta})"

    def step(self, terms: Terms, tt: tuple[Tensor, ...], t: float, h: float, x: Tensor,
             state: Any, noise: Noise) -> StepResult:
        f, g = terms.f, terms.g
        dw = noise[0]  # type: ignore[index]
        gx = g(tt[0], x)  # type: ignore[misc]
        gdw = (torch.matmul(gx, dw.unsqueeze(-1)).squeeze(-1) if terms.matrix
               else gx * dw)
        r = x + gdw
        th = self.theta
        if th < 1.0:
            r = r.add(f(tt[0], x), alpha=(1.0 - th) * h)  # type: ignore[misc]
        if th == 0.0:
            return StepResult(r, None, None, None)
        nw = self.newton(terms)
        nw.prepare(tt[1], x)
        ch = th * h
        z0 = r
        nw.theta = 0.0
        for _attempt in range(2):
            z, ok, n, _ = nw.iterate(lambda zz: f(tt[1], zz), z0, ch, r, self.scale(x))  # type: ignore[misc]
            if ok or nw.fresh:
                break
            nw.jacobian(tt[1], x)
        if not ok:
            nw.stale = True
            return self._fail(t, h, x, n, terms)
        self._failure = None
        nw.stale = nw.theta > THETA_JACOBIAN
        return StepResult(z, None, None, None)


# ----------------------------------------------------------------------- the stiffness hint
def stiffness_hint(stats: dict[str, Any]) -> str:
    """A sentence for ``MaxStepsError``/``StepSizeError`` of an explicit solve that looks stiff
    (registered in ``sdeflow.hints``): many rejected steps, or many steps with few of them
    rejected (a stability-limited step size), and no Jacobian in the stats (an explicit
    solver)."""
    if "njac" in stats:
        return ""
    acc, rej = int(stats.get("accepted", 0)), int(stats.get("rejected", 0))
    steps = acc + rej
    if steps < 100:
        return ""
    share = rej / steps
    if share >= 0.1 or steps >= 10_000:
        return (f". This looks stiff ({steps} steps, {100 * share:.0f}% rejected): try an "
                f"implicit solver, solver='radau', solver='kvaerno5' or solver='rodas5' (or "
                f"'kvaerno3'/'ros3p' at loose tolerances)")
    return ""


__all__ = ["ESDIRKTableau", "RosenbrockTableau", "ESDIRK", "Rosenbrock", "ImplicitSolver",
           "ImplicitEuler", "Kvaerno3", "Kvaerno5", "Rodas5", "Ros3p",
           "ImplicitEulerMaruyama", "IMPLICIT_EULER", "KVAERNO3", "KVAERNO5", "RODAS5", "ROS3P",
           "stiffness_hint"]


register_hint(stiffness_hint)
