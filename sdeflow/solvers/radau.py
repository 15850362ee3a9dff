"""Radau IIA of order 5: the 3-stage collocation method at the Radau points (docs/math.md §13.6).

Hairer & Wanner, *Solving ODEs II*, §IV.8 (the code RADAU5). One step from ``(t, x)`` of size
``h`` solves the collocation system for ``Z = (z_1, z_2, z_3)``, ``z_i = Y_i - x``,

    z_i = h sum_j a_ij u(t + c_i h, x + z_j),        c = ((4 - sqrt 6)/10, (4 + sqrt 6)/10, 1),

and sets ``x_new = x + z_3`` (stiffly accurate; order 5, L-stable). Everything below is derived
from ``c`` at import time (:func:`radau_iia_coefficients`), not tabulated:

* **Simplified Newton on the transformed system.** With ``A^-1 = T Lambda T^-1``,
  ``Lambda = diag(gamma, [[alpha, beta], [-beta, alpha]])`` and ``W = T^-1 Z``, one iteration
  solves ``(gamma/h - J) dw_1 = r_1`` (real) and ``((alpha - i beta)/h - J)(dw_2 + i dw_3) =
  r_2 + i r_3`` (complex): per factorisation one real and one complex ``D x D`` LU for each of
  the ``B`` paths (``(B, D, D)`` stacks, never ``BD x BD``). Each iteration costs 3
  evaluations of ``u``; the convergence-rate test of :mod:`sdeflow.newton` (§13.3) stops it or
  declares it divergent, which rejects the step and halves ``h`` (status ``"newton"`` at
  ``dt_min``).
* **Starting values** from the previous step's collocation polynomial, extrapolated to the new
  stage times.
* **Error estimate** (embedded order 3): ``err = (I - h gamma_0 J)^-1 [gamma_0 h u(t, x) +
  sum_j e_j z_j]`` with ``gamma_0 = 1/gamma``; on the first step and after a rejection an
  estimate above 1 is filtered once more (``u(t, x + err)`` in place of ``u(t, x)``).
* **Step size**: Gustafsson's predictive controller (the :meth:`Radau.step_factor` hook of
  the loop), with the step held when the proposal grows it by less than 20% so the LU
  factors are reused; the Jacobian is kept while Newton converges fast.
* **Dense output**: the collocation polynomial (degree 3) through ``x`` and the three stages.

Per step: 3 evaluations per Newton iteration, plus ``u(t, x)`` once per step (reused by a
retried step).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch

from ..interpolation import Interpolant
from ..newton import Newton, layout
from .base import Capabilities, Noise, StepResult, Terms
from .implicit import ImplicitSolver

Tensor = torch.Tensor

#: the Jacobian is kept after a step whose Newton iteration took at most two iterations or
#: contracted faster than this
THETA_KEEP = 1e-3
#: a proposed factor up to this keeps the step size (and so the LU factors)
HOLD = 1.2
#: the Newton tolerance is ``NEWTON_SCALE sqrt(rtol)`` (RADAU5 and scipy: 1): its error is
#: then below the order-5 local error, not at the order-3 estimate's level (Robertson at rtol
#: 1e-6: global error 2.8e-8 -> 6.1e-9 for 6% more evaluations)
NEWTON_SCALE = 0.3
#: step factor after a failed Newton iteration, and after a rejected first step
NEWTON_SHRINK = 0.5
FIRST_REJECT = 0.1


class RadauCoefficients(NamedTuple):
    """Radau IIA (3 stages) in the form the solver uses (docs/math.md §13.6).

    Attributes:
        c: ``[3]`` collocation nodes.
        A: ``[3, 3]`` the Runge-Kutta matrix; ``b = A[2]``.
        gamma, alpha, beta: eigenvalues of ``A^-1``: ``gamma`` and ``alpha +- i beta``.
        T, T_inv: ``A^-1 = T Lambda T^-1`` with
            ``Lambda = [[gamma, 0, 0], [0, alpha, beta], [0, -beta, alpha]]``.
        e: ``[3]`` error weights on ``z_j``, scaled by ``gamma``: the estimate is
            ``(gamma/h - J)^-1 (u(t, x) + (1/h) sum_j e_j z_j)``.
        b_hat: ``[4]`` the embedded (order 3) weights at nodes ``(0, c_1, c_2, c_3)``,
            ``b_hat[0] = 1/gamma``.
        P: ``[3, 3]`` the collocation polynomial ``x + sum_k theta^k sum_i P[k-1, i] z_i``.
    """

    c: np.ndarray
    A: np.ndarray
    gamma: float
    alpha: float
    beta: float
    T: np.ndarray
    T_inv: np.ndarray
    e: np.ndarray
    b_hat: np.ndarray
    P: np.ndarray


def radau_iia_coefficients() -> RadauCoefficients:
    """Every coefficient of 3-stage Radau IIA from its nodes (docs/math.md §13.6)."""
    s6 = math.sqrt(6.0)
    c = np.array([(4.0 - s6) / 10.0, (4.0 + s6) / 10.0, 1.0])
    k = np.arange(3)
    vander = c[:, None] ** k[None, :]  # [i, k] = c_i^k: Lagrange basis L_j = sum_k inv[k, j] s^k
    A = (c[:, None] ** (k[None, :] + 1) / (k[None, :] + 1)) @ np.linalg.inv(vander)
    a_inv = np.linalg.inv(A)
    lam, vec = np.linalg.eig(a_inv)
    real = int(np.argmin(np.abs(lam.imag)))
    cplx = int(np.argmax(lam.imag))  # the eigenvalue alpha + i beta, beta > 0
    gamma = float(lam[real].real)
    alpha, beta = float(lam[cplx].real), float(lam[cplx].imag)
    # A^-1 (p + i q) = (alpha + i beta)(p + i q): A^-1 p = alpha p - beta q,
    # A^-1 q = beta p + alpha q, so T = [r, p, q] gives the real block form of Lambda
    T = np.column_stack([vec[:, real].real, vec[:, cplx].real, vec[:, cplx].imag])
    T_inv = np.linalg.inv(T)
    # embedded: x + h (b_hat_0 u(t, x) + sum_i b_hat_i u(Y_i)), order 3, b_hat_0 = 1/gamma
    g0 = 1.0 / gamma
    rest = np.linalg.solve(np.vstack([np.ones(3), c, c**2]), [1.0 - g0, 0.5, 1.0 / 3.0])
    b_hat = np.concatenate([[g0], rest])
    # h u(Y_i) = sum_j (A^-1)_ij z_j: x_hat - x_new = g0 h u(t, x) + sum_j [(b_hat - b) A^-1]_j z_j
    e = gamma * ((rest - A[2]) @ a_inv)
    P = np.linalg.inv(c[:, None] ** (k[None, :] + 1))  # sum_k P_k c_i^k = z_i
    return RadauCoefficients(c, A, gamma, alpha, beta, T, T_inv, e, b_hat, P)


COEFFS = radau_iia_coefficients()


class RadauState(NamedTuple):
    """What a step hands the next: the collocation polynomial and the step it came from.

    ``poly``: ``(3, B, D)`` coefficients ``P_k`` of ``x(t + theta h) - x = sum_k P_k theta^k``.
    """

    poly: Tensor
    h: float


class Collocation(Interpolant):
    """``x(t + theta h) = x0 + theta (P_1 + theta (P_2 + theta P_3))`` (the collocation
    polynomial of the step; order 3 uniformly on the step, exact at the stages)."""

    __slots__ = ("poly",)

    def __init__(self, t: float, h: float, x0: Tensor, x1: Tensor, poly: Tensor) -> None:
        super().__init__(t, h, x0, x1)
        self.poly = poly

    def _eval(self, theta: float) -> Tensor:
        p = self.poly
        y = torch.add(p[1], p[2], alpha=theta).mul_(theta).add_(p[0]).mul_(theta)
        return y.reshape(self.x0.shape).add_(self.x0)


def _mix(m: Tensor, z: Tensor) -> Tensor:
    """``sum_j m[i, j] z[j]`` for ``z`` of shape ``(3, B, D)``: one small matrix product."""
    return torch.mm(m, z.reshape(z.shape[0], -1)).reshape(m.shape[0], *z.shape[1:])


def _newton_tol(rtol: float, eps: float) -> float:
    """The Newton stopping tolerance in tolerance-scaled units: ``max(10 eps / rtol,
    min(0.03, 0.3 sqrt(rtol)))``, tighter than RADAU5's ``sqrt(rtol)`` (``NEWTON_SCALE``)."""
    return max(10.0 * eps / rtol, min(0.03, NEWTON_SCALE * math.sqrt(rtol)))


class Radau(ImplicitSolver, name="radau"):
    """3-stage Radau IIA, order 5, embedded order 3, L-stable, stiffly accurate (module
    docstring; docs/math.md §13.6).

    Args:
        kappa: Newton tolerance in units of the error norm (``None``: ``max(10 eps / rtol,
            min(0.03, 0.3 sqrt(rtol)))``, see ``NEWTON_SCALE``).
        max_iter: Newton iterations per step before the step counts as failed (7, as RADAU5;
            fixed steps allow 50).

    Stats (merged into ``Solution.stats``): ``njac`` Jacobians, ``nlu`` LU factorisations
    (the real and the complex one counted separately), ``nnewton`` Newton iterations (3
    evaluations each), ``nnewton_fail`` failed Newton solves; ``nfe`` counts every evaluation.
    """

    caps = Capabilities(order=5.0, error_order=3.0, adaptive=True, implicit=True,
                        stateful=True, interpolant="own")
    c = (0.0, float(COEFFS.c[0]), float(COEFFS.c[1]), 1.0)

    def __init__(self, kappa: float | None = None, max_iter: int = 7) -> None:
        super().__init__(0.03 if kappa is None else kappa, max_iter)
        self._kappa_given = kappa is not None
        self._tables: dict[tuple[torch.dtype, torch.device], tuple[Tensor, ...]] = {}
        self._reset()

    def __repr__(self) -> str:
        k = self.kappa if self._kappa_given else None
        return f"{type(self).__name__}(kappa={k}, max_iter={self.max_iter})"

    # --------------------------------------------------------------------- loop hooks
    def _reset(self) -> None:
        self._lu: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
        self._lu_key: tuple[float, Tensor | None] = (math.nan, None)
        self._f0: Tensor | None = None
        self._f0_key: tuple[float, Tensor | None] = (math.nan, None)
        self._accepted = 0
        self._rejected_last = False
        self._h_acc: float | None = None
        self._err_acc = 1e-2
        self._nit = 1
        self._shrink: float | None = None
        self._eta = 1.0

    def begin(self, rtol: float | None, atol: float | None) -> None:
        super().begin(rtol, atol)
        self._reset()

    def init(self, terms: Terms, t0: float, x0: Tensor, h: float) -> Any:
        super().init(terms, t0, x0, h)
        return None  # no polynomial to extrapolate from (start, or after a jump)

    def newton(self, terms: Terms) -> Newton:
        nw = super().newton(terms)
        if not self._fixed:
            nw.max_iter = self.max_iter
        return nw

    def step_factor(self, ctrl: Any, q: float, err: float, h: float, accepted: bool,
                    after_reject: bool) -> float | None:
        """The loop's step-size hook: Gustafsson's predictive controller (docs/math.md §13.6).

        ``fac = min(s err^(-1/q), s err^(-1/q) (h / h_acc) (err_acc / err)^(1/q))`` after an
        accepted step (``h_acc, err_acc``: the previous accepted step), clipped to the
        controller's ``[fac_min, fac_max]``, with the safety ``s`` lowered when Newton needed
        many iterations; a proposal ``fac <= 1.2`` (less than 20% growth, or a shrink) keeps
        ``h`` and so the LU factors while the Jacobian is kept (a step that is then too large
        is rejected; Van der Pol mu = 1000: 1,006 LUs instead of 2,314 when only
        ``1 <= fac <= 1.2`` holds as in RADAU5, and 1% fewer evaluations). Rejections:
        ``s err^(-1/q)``, ``0.1`` on a first step, ``0.5`` after a failed Newton iteration.
        A PI/PID controller (``beta2`` or ``beta3`` nonzero) is the user's choice: then
        ``None`` (the controller's own factor).
        """
        if getattr(ctrl, "beta2", 0.0) or getattr(ctrl, "beta3", 0.0):
            self._note(accepted, h, err)
            return None
        m = self.max_iter
        safety = float(ctrl.safety) * (1 + 2 * m) / (self._nit + 2 * m)
        if not accepted:
            shrink = self._shrink
            self._note(False, h, err)
            if shrink is not None:
                return shrink
            if self._accepted == 0:
                return FIRST_REJECT
            if not math.isfinite(err):
                return float(ctrl.fac_min)
            return min(1.0, max(float(ctrl.fac_min), safety * err ** (-1.0 / q)))
        if err <= 0.0:
            fac = float(ctrl.fac_max)
        else:
            fac = safety * err ** (-1.0 / q)
            if self._h_acc is not None:
                fac = min(fac, fac * (h / self._h_acc) * (self._err_acc / err) ** (1.0 / q))
            fac = min(float(ctrl.fac_max), max(float(ctrl.fac_min), fac))
        if after_reject:
            fac = min(fac, 1.0)
        nw = self._nw
        if fac <= HOLD and nw is not None and not nw.stale:
            fac = 1.0
        self._note(True, h, err)
        return fac

    def _note(self, accepted: bool, h: float, err: float) -> None:
        if accepted:
            self._accepted += 1
            self._h_acc, self._err_acc = h, max(err, 1e-2)
        self._rejected_last = not accepted

    # ------------------------------------------------------------------------- numerics
    def _coeffs(self, like: Tensor) -> tuple[Tensor, ...]:
        key = (like.dtype, like.device)
        tab = self._tables.get(key)
        if tab is None:
            def f(a: np.ndarray) -> Tensor:
                return torch.tensor(a, dtype=torch.float64).to(dtype=like.dtype,
                                                               device=like.device)
            tab = (f(COEFFS.T), f(COEFFS.T_inv), f(COEFFS.P), f(COEFFS.e))
            self._tables[key] = tab
        return tab

    def _factor(self, nw: Newton, h: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """LU of ``gamma/h - J`` (real) and ``(alpha - i beta)/h - J`` (complex), per path;
        reused while ``h`` and ``J`` hold."""
        J = nw.J
        if self._lu is not None and self._lu_key[0] == h and self._lu_key[1] is J:
            return self._lu
        d = J.shape[-1]  # type: ignore[union-attr]
        eye = torch.eye(d, dtype=J.dtype, device=J.device)  # type: ignore[union-attr]
        lr, pr = torch.linalg.lu_factor(eye * (COEFFS.gamma / h) - J)
        cd = torch.complex64 if J.dtype == torch.float32 else torch.complex128  # type: ignore[union-attr]
        mc = eye.to(cd) * complex(COEFFS.alpha / h, -COEFFS.beta / h) - J.to(cd)  # type: ignore[union-attr]
        lc, pc = torch.linalg.lu_factor(mc)
        nw.nlu += 2
        self._lu, self._lu_key = (lr, pr, lc, pc), (h, J)
        return self._lu

    def _iterate(self, u: Any, tt: tuple[Tensor, ...], x2: Tensor, shape: torch.Size,
                 h: float, z: Tensor, inv: Tensor, lu: tuple[Tensor, ...], tol: float,
                 nw: Newton) -> tuple[Tensor, bool, float, int, float]:
        """Simplified Newton on ``W = T^-1 Z``; ``z``: ``(3, B, D)`` guess. Returns
        ``(Z, converged, last scaled increment, iterations, max contraction rate)``."""
        T, T_inv = self._coeffs(x2)[:2]
        lr, pr, lc, pc = lu
        g, a, b = COEFFS.gamma / h, COEFFS.alpha / h, COEFFS.beta / h
        w = _mix(T_inv, z)
        prev, theta_max = math.inf, 0.0
        eta = max(self._eta, 1e-16) ** 0.8
        limit = nw.max_iter
        n = math.inf
        for k in range(limit):
            f = torch.stack([u(tt[i + 1], (x2 + z[i]).reshape(shape)).reshape(x2.shape)
                             for i in range(3)])
            nw.nnewton += 1
            r = _mix(T_inv, f)
            r1 = r[0] - g * w[0]
            # r_2 + i r_3 - (alpha - i beta)/h (w_2 + i w_3)
            r2 = r[1] - a * w[1] - b * w[2]
            r3 = r[2] - a * w[2] + b * w[1]
            d1 = torch.linalg.lu_solve(lr, pr, r1.unsqueeze(-1)).squeeze(-1)
            dc = torch.linalg.lu_solve(lc, pc, torch.complex(r2, r3).unsqueeze(-1)).squeeze(-1)
            dw = torch.stack([d1, dc.real, dc.imag])
            n = float(((dw * inv) ** 2).mean(dim=(0, 2)).amax().sqrt())
            if not math.isfinite(n):
                return z, False, n, k + 1, theta_max
            w = w + dw
            z = _mix(T, w)
            if k > 0:
                theta = n / prev
                theta_max = max(theta_max, theta)
                if theta >= 0.99 or theta ** (limit - 1 - k) / (1.0 - theta) * n > tol:
                    return z, False, n, k + 1, theta_max
                eta = theta / (1.0 - theta)
            if eta * n <= tol or n == 0.0:
                self._eta = eta
                return z, True, n, k + 1, theta_max
            prev = n
        return z, False, n, limit, theta_max

    def step(self, terms: Terms, tt: tuple[Tensor, ...], t: float, h: float, x: Tensor,
             state: Any, noise: Noise) -> StepResult:
        u = terms.u
        nw = self.newton(terms)
        b, d = layout(x)
        shape = x.shape
        x2 = x.reshape(b, d)
        P = self._coeffs(x2)[2]
        self._shrink = None
        # u(t, x): once per step start (a retried step reuses it)
        if self._f0 is not None and self._f0_key[0] == t and self._f0_key[1] is x:
            f0 = self._f0
        else:
            f0 = u(tt[0], x).reshape(b, d)  # type: ignore[misc]
            self._f0, self._f0_key = f0, (t, x)
        # starting values: the last step's collocation polynomial at the new stage times
        if isinstance(state, RadauState):
            r = h / state.h
            th = torch.tensor([[(1.0 + ci * r) ** kk - 1.0 for kk in (1, 2, 3)]
                               for ci in COEFFS.c], dtype=torch.float64).to(x2)
            z0 = _mix(th, state.poly)
        else:
            z0 = x2.new_zeros((3, b, d))
        scale = self.scale(x).reshape(b, d)
        inv = 1.0 / scale
        rtol = max(self.rtol, 4 * torch.finfo(x.dtype).eps) if self._fixed else self.rtol
        tol = self.kappa if self._kappa_given else _newton_tol(rtol, torch.finfo(x.dtype).eps)
        nw.prepare(tt[0], x)
        nit, ok, n, theta = 0, False, math.inf, 0.0
        for _attempt in range(2):
            lu = self._factor(nw, h)
            z, ok, n, k, theta = self._iterate(u, tt, x2, shape, h, z0, inv, lu, tol, nw)
            nit += k
            if ok or nw.fresh:
                break
            nw.nfail += 1
            nw.jacobian(tt[0], x)  # the Jacobian was old: refresh it and retry once
        self._nit = min(nit, self.max_iter)
        if not ok:
            nw.nfail += 1
            nw.stale = True
            self._shrink = NEWTON_SHRINK
            return self._fail(t, h, x, n, terms)
        self._failure = None
        nw.stale = nit > 2 and theta > THETA_KEEP
        x_new2 = x2 + z[2]
        err = None
        if terms.adaptive:
            err = self._estimate(u, tt[0], x, x2, x_new2, f0, z, h)
        poly = _mix(P, z)
        return StepResult(x_new2.reshape(shape), err, poly, RadauState(poly, h))

    def _estimate(self, u: Any, t0: Tensor, x: Tensor, x2: Tensor, x_new2: Tensor, f0: Tensor,
                  z: Tensor, h: float) -> Tensor:
        """``(gamma/h - J)^-1 (u(t, x) + (1/h) sum e_j z_j)``, filtered again on a first step
        or after a rejection when above 1 (docs/math.md §13.6)."""
        lr, pr = self._lu[0], self._lu[1]  # type: ignore[index]
        e = self._coeffs(x2)[3]
        ez = torch.mv(z.reshape(3, -1).T, e).reshape(z.shape[1:]).div_(h)
        err = torch.linalg.lu_solve(lr, pr, (f0 + ez).unsqueeze(-1)).squeeze(-1)
        if self._accepted == 0 or self._rejected_last:
            sc = torch.maximum(x2.abs(), x_new2.abs()).mul_(self.rtol).add_(self.atol)
            big = float(((err / sc) ** 2).mean(-1).amax()) > 1.0
            if big:
                f1 = u(t0, (x2 + err).reshape(x.shape)).reshape(x2.shape)
                err = torch.linalg.lu_solve(lr, pr, (f1 + ez).unsqueeze(-1)).squeeze(-1)
        return err.reshape(x.shape)

    def interpolant(self, terms: Terms, t: float, h: float, x0: Tensor, x1: Tensor,
                    dense: Any) -> Interpolant:
        return Collocation(t, h, x0, x1, dense)


__all__ = ["Radau", "RadauCoefficients", "RadauState", "Collocation", "COEFFS",
           "radau_iia_coefficients"]
