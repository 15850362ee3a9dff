"""Exponential integrators for semilinear problems (docs/math.md §15.2-§15.5).

Every solver here needs a :class:`~sdeflow.semilinear.SemilinearODE` (``caps.semilinear``): it
takes the linear part exactly and approximates ``N`` in the problem's variable ``tau``. Over a
step ``s -> t`` with ``h = tau(t) - tau(s)``, ``z = -k h``, the exact solution is

    x(t) = E(t)/E(s) x(s) + G(t) sum_m h^{m+1} phi_{m+1}(z) N^{(m)}(tau(s)).

A polynomial through values ``N_j`` at nodes ``tau(s) + rho_j h`` (``rho_0 = 0``; stages have
``rho in (0, 1]``, history ``rho < 0``) with Taylor coefficients ``a = V^{-1} N`` (``V_jm =
rho_j^m``) gives ``N^{(m)} ~ m! a_m / h^m`` and the update

    x(t) ~ E(t)/E(s) x(s) + G(t) sum_j W_j N_j,   W_j = h sum_m m! phi_{m+1}(z) (V^{-1})_mj

(:func:`taylor_weights`). The solvers differ in where the nodes come from:

============================  =====  =========================================================
name                          order  nodes
============================  =====  =========================================================
``ddim``                      1      ``{0}`` (DDIM = DPM-Solver-1 = ETD1)
``dpm_solver2``               2      ``{0, 1/2}``: one stage (singlestep)
``dpm_solver3``               3      ``{0, 1/3, 2/3}``: two stages, the second of order 2
``dpm_solver_pp2m``           2      ``{0, rho_{n-1}}`` (or the midpoint weight, default); warm-up 1
``dpm_solver_pp3m``           3      ``{0, rho_{n-1}, rho_{n-2}}``; warm-up by ``dpm_solver2``
``unipc2``, ``unipc3``        3, 3   UniPC predictor of order p + corrector (docs/math.md §15.4)
``dpm_solver_pp2m_sde``       weak 1 2M drift, exact linear part, exact noise variance (SDE)
============================  =====  =========================================================

Stages sit at fractions of the step in ``tau`` when the problem gives ``tau_inverse``, else at
the same fractions in ``t`` (then the weights use the actual ``rho_j``). Multistep solvers take
``lower_final`` (reduce the order of the last steps, as diffusers' ``lower_order_final``) with
the ``grid`` of the solve.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

import torch

from ..semilinear import SemilinearODE, SemilinearSDE, phi
from .base import Capabilities, Noise, Solver, StepResult, Terms

Tensor = torch.Tensor


def taylor_weights(rho: Sequence[float], h: Tensor, z: Tensor, d2_scale: float = 1.0
                   ) -> list[Tensor]:
    """``W_j = h sum_m m! phi_{m+1}(z) (V^{-1})_mj`` for nodes ``rho`` (``rho[0] = 0``).

    ``d2_scale`` multiplies the ``m = 2`` term (``0.5``: the published 3M coefficient).
    """
    p = len(rho)
    V = torch.tensor([[r ** m for m in range(p)] for r in rho], dtype=torch.float64)
    A = torch.linalg.inv(V).to(h.dtype)  # A[m, j]
    phis = [math.factorial(m) * phi(m + 1, z) for m in range(p)]
    if p > 2:
        phis[2] = phis[2] * d2_scale
    return [h * sum(A[m, j].to(z.device) * phis[m] for m in range(p)) for j in range(p)]


def _combine(base: Tensor, G: Tensor, w: list[Tensor], values: list[Tensor]) -> Tensor:
    acc = w[0] * values[0]
    for wj, vj in zip(w[1:], values[1:]):
        acc = acc + wj * vj
    return base + G * acc


class Exponential(Solver, register=False):
    """Shared machinery: the problem check, counted ``N``, step coefficients, final orders."""

    caps = Capabilities(order=1.0, semilinear=True)
    c: tuple[float, ...] = (0.0,)
    problem_types: tuple[type, ...] = (SemilinearODE,)

    def __init__(self, lower_final: int = 0, grid: Sequence[float] | Tensor | None = None
                 ) -> None:
        if isinstance(lower_final, bool) or not isinstance(lower_final, int) or lower_final < 0:
            raise ValueError(f"lower_final: expected an int >= 0, got {lower_final!r}")
        if lower_final and grid is None:
            raise ValueError("grid: lower_final > 0 needs the grid of the solve (to know how "
                             "many steps remain)")
        self.lower_final = lower_final
        self.grid: list[float] | None = None
        if grid is not None:
            g = [float(v) for v in (grid.tolist() if isinstance(grid, Tensor) else grid)]
            if len(g) < 2:
                raise ValueError(f"grid: expected at least two times, got {len(g)}")
            self.grid = g

    def check(self, problem: Any) -> None:
        if not isinstance(problem, self.problem_types):
            want = " or ".join(t.__name__ for t in self.problem_types)
            raise ValueError(f"solver: {self.name!r} is an exponential integrator and needs a "
                             f"{want} (sdeflow.SemilinearODE / sdeflow.semilinear), got "
                             f"{type(problem).__name__}")

    # ------------------------------------------------------------------------ helpers
    @staticmethod
    def _nfield(terms: Terms) -> Any:
        fld = terms.u if terms.u is not None else terms.f
        return terms.problem.counted(fld)

    @staticmethod
    def _time(v: float, like: Tensor) -> Tensor:
        return torch.tensor(v, dtype=like.dtype, device=like.device)

    @staticmethod
    def _tau(problem: Any, t: Tensor) -> float:
        v = float(problem.tau(t) if isinstance(problem, SemilinearODE) else problem.ode.tau(t))
        if not math.isfinite(v):
            raise ValueError(f"tau: the problem's variable is not finite at t={float(t):.6g} "
                             f"(e.g. lambda = log(alpha/beta) at an end of a Gaussian path); "
                             f"stop short of that time")
        return v

    def _order_cap(self, t: float, order: int) -> int:
        """``order``, capped at the number of steps remaining on the last ``lower_final`` steps
        of the grid (docs/math.md §15.3)."""
        if not self.lower_final or self.grid is None:
            return order
        g = self.grid
        inc = g[-1] > g[0]
        key = [v if inc else -v for v in g]
        i = bisect.bisect_left(key, (t if inc else -t) - 1e-12 * (abs(t) + 1.0))
        remaining = len(g) - 1 - i
        if remaining <= self.lower_final:
            return max(1, min(order, remaining))
        return order

    def _stage_time(self, problem: Any, tt: Tensor, tau_s: float, h: float, frac: float
                    ) -> tuple[Tensor, float]:
        """The time of a stage at ``frac`` of the step (in tau if the problem can invert
        it, else ``tt`` from the loop) and its node ``rho``."""
        inv = problem.tau_inverse
        if inv is not None:
            tau_u = tau_s + frac * h
            tu = inv(self._time(tau_u, tt)).to(tt)
            return tu, frac
        return tt, (self._tau(problem, tt) - tau_s) / h

    def _sub(self, problem: Any, s: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return problem.step_coefficients(s, u)


# ---------------------------------------------------------------------------- singlestep
class DDIM(Exponential, name="ddim"):
    """First order: ``x_t = E(t)/E(s) x_s + G(t) h phi_1(z) N(s, x_s)`` (DDIM, DPM-Solver-1,
    ETD1; docs/math.md §15.2). One evaluation per step."""

    caps = Capabilities(order=1.0, semilinear=True)

    def step(self, terms: Terms, tt: tuple[Tensor, ...], t: float, h: float, x: Tensor,
             state: Any, noise: Noise) -> StepResult:
        p = terms.problem
        n = self._nfield(terms)
        s, tn = tt[0], self._time(t + h, tt[0])
        self._tau(p, s), self._tau(p, tn)
        ratio, G, hh, z = p.step_coefficients(s, tn)
        n0 = n(s, x)
        x_new = _combine(ratio * x, G, taylor_weights([0.0], hh, z), [n0])
        return StepResult(x_new, None, None, state)


class DPMSolver2(Exponential, name="dpm_solver2"):
    """Singlestep order 2 (docs/math.md §15.2): a first-order stage at ``rho = 1/2``, then the
    update with
    nodes ``{0, rho}``. Two evaluations per step."""

    caps = Capabilities(order=2.0, semilinear=True)
    c = (0.0, 0.5)

    def step(self, terms: Terms, tt: tuple[Tensor, ...], t: float, h: float, x: Tensor,
             state: Any, noise: Noise) -> StepResult:
        p = terms.problem
        n = self._nfield(terms)
        s, tn = tt[0], self._time(t + h, tt[0])
        tau_s, tau_t = self._tau(p, s), self._tau(p, tn)
        H = tau_t - tau_s
        n0 = n(s, x)
        tu, r = self._stage_time(p, tt[1], tau_s, H, 0.5)
        ru, Gu, hu, zu = p.step_coefficients(s, tu)
        xu = _combine(ru * x, Gu, taylor_weights([0.0], hu, zu), [n0])
        nu = n(tu, xu)
        ratio, G, hh, z = p.step_coefficients(s, tn)
        x_new = _combine(ratio * x, G, taylor_weights([0.0, r], hh, z), [n0, nu])
        return StepResult(x_new, None, None, state)


class DPMSolver3(Exponential, name="dpm_solver3"):
    """Singlestep order 3 (docs/math.md §15.2): stages at ``rho = 1/3`` (order 1) and ``2/3``
    (order 2,
    nodes ``{0, 1/3}``), update with the quadratic through ``{0, 1/3, 2/3}``. Three evaluations
    per step."""

    caps = Capabilities(order=3.0, semilinear=True)
    c = (0.0, 1.0 / 3.0, 2.0 / 3.0)

    def step(self, terms: Terms, tt: tuple[Tensor, ...], t: float, h: float, x: Tensor,
             state: Any, noise: Noise) -> StepResult:
        p = terms.problem
        n = self._nfield(terms)
        s, tn = tt[0], self._time(t + h, tt[0])
        tau_s, tau_t = self._tau(p, s), self._tau(p, tn)
        H = tau_t - tau_s
        n0 = n(s, x)
        t1, r1 = self._stage_time(p, tt[1], tau_s, H, 1.0 / 3.0)
        a1, G1, h1, z1 = p.step_coefficients(s, t1)
        x1 = _combine(a1 * x, G1, taylor_weights([0.0], h1, z1), [n0])
        n1 = n(t1, x1)
        t2, r2 = self._stage_time(p, tt[2], tau_s, H, 2.0 / 3.0)
        a2, G2, h2, z2 = p.step_coefficients(s, t2)
        x2 = _combine(a2 * x, G2, taylor_weights([0.0, r1 / r2], h2, z2), [n0, n1])
        n2 = n(t2, x2)
        ratio, G, hh, z = p.step_coefficients(s, tn)
        x_new = _combine(ratio * x, G, taylor_weights([0.0, r1, r2], hh, z), [n0, n1, n2])
        return StepResult(x_new, None, None, state)


# ----------------------------------------------------------------------------- multistep
class _Multistep(Exponential, register=False):
    """Multistep exponential integrator of order ``order`` on the history of ``(tau_j, N_j)``.

    State: a tuple of ``(tau_j, N_j)``, newest last (never mutated)."""

    p_max = 2  # the number of history nodes
    d2_scale = 1.0
    warmup = "multistep"

    def init(self, terms: Terms, t0: float, x0: Tensor, h: float) -> Any:
        return ()

    def step(self, terms: Terms, tt: tuple[Tensor, ...], t: float, h: float, x: Tensor,
             state: Any, noise: Noise) -> StepResult:
        p = terms.problem
        n = self._nfield(terms)
        s, tn = tt[0], self._time(t + h, tt[0])
        tau_s, tau_t = self._tau(p, s), self._tau(p, tn)
        H = tau_t - tau_s
        n0 = n(s, x)
        hist = (*state, (tau_s, n0))[-self.p_max:]
        q = self._order_cap(t, min(self.p_max, len(hist)))
        ratio, G, hh, z = p.step_coefficients(s, tn)
        if (len(hist) == 1 and self.p_max > 2 and self.warmup == "singlestep"
                and self._order_cap(t, self.p_max) == self.p_max):
            # the first step by DPM-Solver-2 (one extra evaluation): keeps the global order 3
            tu, r = self._stage_time(p, tt[1] if len(tt) > 1 else tt[0], tau_s, H, 0.5)
            ru, Gu, hu, zu = p.step_coefficients(s, tu)
            xu = _combine(ru * x, Gu, taylor_weights([0.0], hu, zu), [n0])
            nu = n(tu, xu)
            x_new = _combine(ratio * x, G, taylor_weights([0.0, r], hh, z), [n0, nu])
            return StepResult(x_new, None, None, hist)
        use = hist[-q:][::-1]  # newest first: node 0 is the current point
        rho = [(tj - tau_s) / H for tj, _ in use]
        if q == 2 and getattr(self, "midpoint", False):
            w1 = hh * phi(1, z)  # (1/2) h phi_1 (N_0 - N_1) / (-rho_1) in place of h^2 phi_2 N'
            c = 0.5 * w1 / (-rho[1])
            w = [w1 + c, -c]
        else:
            w = taylor_weights(rho, hh, z, self.d2_scale)
        x_new = _combine(ratio * x, G, w, [nj for _, nj in use])
        return StepResult(x_new, None, None, hist)


class DPMSolverPP2M(_Multistep, name="dpm_solver_pp2m"):
    """Multistep order 2 (DPM-Solver++(2M), docs/math.md §15.3): nodes ``{0, rho_{n-1}}``; the
    first step
    is order 1. One evaluation per step.

    Args:
        variant: ``"midpoint"`` (default; ``(1/2) h phi_1`` on the difference ``N_n -
            N_{n-1}`` scaled by ``h / (tau_n - tau_{n-1})``: the paper's Algorithm 2 and
            diffusers' default) or ``"taylor"`` (``h^2 phi_2`` times the divided difference,
            the truncated expansion (1.2); diffusers' ``solver_type="heun"``). Both are of
            order 2; ``"midpoint"`` puts less weight on the extrapolated derivative and is the
            more accurate at 10-20 steps on every path measured (docs/fewstep.md).
        lower_final, grid: as :class:`Exponential`.
    """

    caps = Capabilities(order=2.0, stateful=True, semilinear=True)
    p_max = 2

    def __init__(self, variant: str = "midpoint", lower_final: int = 0,
                 grid: Sequence[float] | Tensor | None = None) -> None:
        super().__init__(lower_final, grid)
        if variant not in ("taylor", "midpoint"):
            raise ValueError(f"variant: expected 'taylor' or 'midpoint', got {variant!r}")
        self.variant = variant
        self.midpoint = variant == "midpoint"


class DPMSolverPP3M(_Multistep, name="dpm_solver_pp3m"):
    """Multistep order 3 (docs/math.md §15.3): the quadratic through ``{0, rho_{n-1}, rho_{n-2}}``.

    Args:
        warmup: ``"singlestep"`` (default: the first step by DPM-Solver-2, one extra
            evaluation; global order 3) or ``"multistep"`` (orders 1, 2 then 3, as diffusers:
            the order-1 first step makes the global order 2).
        variant: ``"taylor"`` (default; coefficient ``2 h phi_3`` on the second divided
            difference) or ``"published"`` (half of it, as several implementations; order 2).
        lower_final, grid: as :class:`Exponential`.
    """

    caps = Capabilities(order=3.0, stateful=True, semilinear=True)
    c = (0.0, 0.5)
    p_max = 3

    def __init__(self, warmup: str = "singlestep", variant: str = "taylor",
                 lower_final: int = 0, grid: Sequence[float] | Tensor | None = None) -> None:
        super().__init__(lower_final, grid)
        if warmup not in ("singlestep", "multistep"):
            raise ValueError(f"warmup: expected 'singlestep' or 'multistep', got {warmup!r}")
        if variant not in ("taylor", "published"):
            raise ValueError(f"variant: expected 'taylor' or 'published', got {variant!r}")
        self.warmup, self.variant = warmup, variant
        self.d2_scale = 1.0 if variant == "taylor" else 0.5


# --------------------------------------------------------------------------------- UniPC
class _UniPC(Exponential, register=False):
    """UniPC (Zhao et al. 2023; docs/math.md §15.4): a multistep predictor UniP-p and the
    corrector UniC,
    which reuses the evaluation at the predicted point (no extra evaluation) and raises the
    order by one. The last step's output is the predictor's (no evaluation follows it).

    State: ``(history, last)`` with ``history`` the ``(tau_j, N_j)`` and ``last = (x_s, t_s,
    p)`` the corrected start of the previous step and its predictor order.

    Args:
        corrector: apply UniC (default ``True``; ``False`` is UniP-p, order p).
        variant: ``"bh2"`` (default, ``B(z) = e^z - 1``) or ``"bh1"`` (``B(z) = z``).
        lower_final, grid: as :class:`Exponential`.
    """

    p_max = 2  # the predictor's order

    def __init__(self, corrector: bool = True, variant: str = "bh2", lower_final: int = 0,
                 grid: Sequence[float] | Tensor | None = None) -> None:
        super().__init__(lower_final, grid)
        if not isinstance(corrector, bool):
            raise TypeError(f"corrector: expected True or False, got {corrector!r}")
        if variant not in ("bh1", "bh2"):
            raise ValueError(f"variant: expected 'bh1' or 'bh2', got {variant!r}")
        self.corrector, self.variant = corrector, variant

    def init(self, terms: Terms, t0: float, x0: Tensor, h: float) -> Any:
        return ((), None)

    def _rhos(self, r: list[float], z: Tensor, size: int) -> tuple[list[Tensor], Tensor]:
        """``rho`` solving ``R rho = b`` (``R_ik = r_k^(i-1)``, ``b_i = i! phi_{i+1} / B~``)
        and ``B~ = B(z) / z``; a 1x1 system takes its ``z -> 0`` limit ``1/2`` (docs/math.md
        §15.4)."""
        btil = torch.ones_like(z) if self.variant == "bh1" else phi(1, z)
        if size == 1:
            return [torch.full_like(z, 0.5)], btil
        R = torch.tensor([[rk ** i for rk in r[:size]] for i in range(size)], dtype=torch.float64)
        Ri = torch.linalg.inv(R).to(z.dtype)
        b = [math.factorial(i) * phi(i + 1, z) / btil for i in range(1, size + 1)]
        return [sum(Ri[k, i].to(z.device) * b[i] for i in range(size)) for k in range(size)], btil

    def _update(self, p: Any, s: Tensor, tn: Tensor, x: Tensor, n0: Tensor,
                past: list[tuple[float, Tensor]], tau_s: float, order: int,
                n_new: Tensor | None) -> Tensor:
        ratio, G, hh, z = p.step_coefficients(s, tn)
        H = float(hh) if hh.dim() == 0 else float(hh.reshape(-1)[0])
        x_base = ratio * x + G * (hh * phi(1, z)) * n0
        r = [(tj - tau_s) / H for tj, _ in past[:order - 1]]
        d1 = [(nj - n0) / rk for (_, nj), rk in zip(past[:order - 1], r)]
        if n_new is None:  # predictor UniP-order
            if order == 1:
                return x_base
            rho, btil = self._rhos(r, z, order - 1)
        else:  # corrector UniC-order: the new point at r = 1
            r, d1 = [*r, 1.0], [*d1, n_new - n0]
            rho, btil = self._rhos(r, z, order)
        res = rho[0] * d1[0]
        for rk, dk in zip(rho[1:], d1[1:]):
            res = res + rk * dk
        return x_base + G * (hh * btil) * res

    def step(self, terms: Terms, tt: tuple[Tensor, ...], t: float, h: float, x: Tensor,
             state: Any, noise: Noise) -> StepResult:
        p = terms.problem
        n = self._nfield(terms)
        hist, last = state
        s, tn = tt[0], self._time(t + h, tt[0])
        tau_s = self._tau(p, s)
        n0 = n(s, x)
        if self.corrector and last is not None:
            x_prev, t_prev, q_prev = last
            sp = self._time(t_prev, tt[0])
            tau_p = self._tau(p, sp)
            past = list(hist[:-1][::-1])  # newest first, without the previous point itself
            x = self._update(p, sp, s, x_prev, hist[-1][1], past, tau_p, q_prev, n0)
        hist = (*hist, (tau_s, n0))[-self.p_max:]
        q = self._order_cap(t, min(self.p_max, len(hist)))
        past = list(hist[:-1][::-1])
        x_new = self._update(p, s, tn, x, n0, past, tau_s, q, None)
        return StepResult(x_new, None, None, (hist, (x, t, q)))


class UniPC2(_UniPC, name="unipc2"):
    """UniPC with the order-2 predictor: order 3 with the corrector, 2 without (docs/math.md
    §15.4)."""

    caps = Capabilities(order=3.0, stateful=True, semilinear=True)
    p_max = 2


class UniPC3(_UniPC, name="unipc3"):
    """UniPC with the order-3 predictor. With the corrector the steady steps are of order 4,
    but the multistep warm-up (a first step of predictor order 1 plus corrector, local error
    ``h^3``) caps the global order at 3 -- declared 3 (docs/math.md §15.4)."""

    caps = Capabilities(order=3.0, stateful=True, semilinear=True)
    p_max = 3


# ------------------------------------------------------------------------------------ SDE
class DPMSolverPP2MSDE(DPMSolverPP2M, name="dpm_solver_pp2m_sde"):
    """Stochastic 2M on a :class:`~sdeflow.semilinear.SemilinearSDE` (docs/math.md §15.5):

        x_t = E(t)/E(s) x_s + G(t) sum_j W_j N_j + noise_std(s, t) dW / sqrt(|t - s|),

    the drift as :class:`DPMSolverPP2M` (``variant`` ``"midpoint"``, the default: for the
    eta = 1 Gaussian-path SDE it is DPM-Solver++(2M) SDE; or ``"taylor"``), the linear part
    exact, and the noise a Gaussian of the exact step's variance drawn from the Brownian
    increment ``dW`` (so it runs on a shared ``BrownianPath``). Additive noise, Ito; weak
    order 1."""

    caps = Capabilities(sde=True, order=2.0, weak_order={"additive": 1.0},
                        noise_types=("additive",), kinds=("ito",), stateful=True,
                        semilinear=True)
    problem_types = (SemilinearSDE,)

    def step(self, terms: Terms, tt: tuple[Tensor, ...], t: float, h: float, x: Tensor,
             state: Any, noise: Noise) -> StepResult:
        res = super().step(terms, tt, t, h, x, state, None)  # the drift: 2M on the SDE's E, G
        s, tn = tt[0], self._time(t + h, tt[0])
        (dw,) = noise  # type: ignore[misc]
        x_new = res.x + terms.problem.noise_std(s, tn) * dw / math.sqrt(abs(h))
        return StepResult(x_new, None, None, res.state)


__all__ = ["taylor_weights", "Exponential", "DDIM", "DPMSolver2", "DPMSolver3", "DPMSolverPP2M",
           "DPMSolverPP3M", "UniPC2", "UniPC3", "DPMSolverPP2MSDE"]
