"""Problems with exact solutions and exact moments: the ground truth of verification.

The formulas are docs/math.md §8 (and §9 for moments).

Every class here wraps one differential equation and what is known exactly about it:

==============================  =============  ==========================================
class                           ``.problem``   exact
==============================  =============  ==========================================
:class:`LinearODE`              ODE            ``exact(t, x0) = expm(t A) x0``
:class:`GeometricBrownianMotion`  SDE, diagonal  ``exact(t, x0, W)``, mean, covariance
:class:`OrnsteinUhlenbeck`      SDE, additive  mean, covariance, transition law
:class:`LinearSDE`              SDE, additive  mean, covariance (moment ODEs, Van Loan)
                                or general
:class:`NonlinearAdditiveSDE`   SDE, additive  nothing: a *fine-grid reference* only
==============================  =============  ==========================================

Conventions.

* A state has shape ``(..., d)``: leading dimensions are independent paths (batch), the last one
  is the state. ``t`` is a float or a 0-dim tensor; problems are autonomous and start at
  ``t0 = 0`` unless ``t0`` is given.
* Results keep ``x0``'s dtype and device. Matrix functions (``expm``, Van Loan) are evaluated in
  float64 and cast back, so a float32 ``x0`` still gets float32-rounded exact values.
* ``pathwise(t, x0, bm)`` is X_t on the Brownian path ``bm`` (an :class:`sdeflow.BrownianPath`
  whose shape is ``brownian_shape(x0.shape)``): that is what strong errors are measured against.
  ``pathwise_exact`` says whether it is exact (GBM: a function of W_t only) or a quadrature /
  fine-grid reference on the same path (OU, LinearSDE, NonlinearAdditiveSDE), with the error bound
  stated in each docstring.
* ``problem_as(kind)`` gives an SDE of the requested kind (``"ito"`` or ``"stratonovich"``) with
  the *same* solution, by the Ito--Stratonovich drift correction ``f_S = f_I - 1/2 g dg/dx``
  (diagonal noise); for additive noise the two coincide.

Bad input raises ``ValueError`` naming the argument.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..problems import ODE
from ._refbase import (
    _F64,
    ArrayLike,
    Tensor,
    TimeLike,
    _Cast,
    _check_state,
    _expm,
    _tensor64,
    _time,
    expm,
    linear_recursion_moments,
)
from .sde_references import (
    AnalyticSDE,
    GeometricBrownianMotion,
    LinearSDE,
    NonlinearAdditiveSDE,
    OrnsteinUhlenbeck,
)

__all__ = [
    "LinearODE",
    "GeometricBrownianMotion",
    "OrnsteinUhlenbeck",
    "LinearSDE",
    "NonlinearAdditiveSDE",
    "AnalyticSDE",
    "linear_recursion_moments",
    "default_linear_ode",
    "tolerance_problem",
    "expm",
]


# --------------------------------------------------------------------------- ODE
class LinearODE:
    """``dx/dt = A x`` with exact solution ``x(t) = expm((t - t0) A) x0`` (docs/math.md §8.1).

    Args:
        A: ``[d, d]`` matrix (a scalar gives ``d = 1``), any real entries.

    Attributes:
        problem: the :class:`sdeflow.ODE`; its vector field maps ``(..., d) -> (..., d)``,
            ``u(t, x) = x A^T`` (row-vector convention, i.e. ``A x`` per path).
        dim: ``d``.
    """

    kind = "ode"

    def __init__(self, A: ArrayLike) -> None:
        a = _tensor64(A, "A")
        if a.dim() == 0:
            a = a.reshape(1, 1)
        if a.dim() != 2 or a.shape[0] != a.shape[1]:
            raise ValueError(f"A: expected a square [d, d] matrix, got shape {tuple(a.shape)}")
        self.A = a
        self.dim = a.shape[0]
        self._at = _Cast(a.T.contiguous())
        self.problem = ODE(self._vector_field)

    def _vector_field(self, t: Tensor, x: Tensor) -> Tensor:
        return x @ self._at.like(x)

    @property
    def name(self) -> str:
        return f"LinearODE(d={self.dim})"

    def default_x0(self, dtype: torch.dtype = _F64, device: Any = None) -> Tensor:
        """``[d]`` initial state used when none is given: ``(1, -1/2, 1/3, ...)``."""
        v = [(-1.0) ** k / (k + 1) for k in range(self.dim)]
        return torch.tensor(v, dtype=dtype, device=device)

    def exact(self, t: TimeLike, x0: Tensor, t0: TimeLike = 0.0) -> Tensor:
        """``x(t) = expm((t - t0) A) x0``; ``x0`` ``[..., d]`` -> ``[..., d]``.

        A 1-D tensor ``t`` of ``T`` times gives ``[T, ..., d]``.
        """
        x0 = _check_state(x0, self.dim)
        s = _time(t0, "t0")
        if isinstance(t, Tensor) and t.dim() == 1:
            return torch.stack([self.exact(ti, x0, s) for ti in t])
        tau = _time(t) - s
        e = _expm(tau, self.A).to(dtype=x0.dtype, device=x0.device)
        return x0 @ e.T

    def mean(self, t: TimeLike, x0: Tensor) -> Tensor:
        """Same as :meth:`exact` (a deterministic solution)."""
        return self.exact(t, x0)

    def covariance(self, t: TimeLike, x0: Tensor | None = None) -> Tensor:
        """Zero ``[d, d]``: a deterministic solution has no spread."""
        _time(t)
        ref = x0 if isinstance(x0, Tensor) else torch.zeros((), dtype=_F64)
        return torch.zeros(self.dim, self.dim, dtype=ref.dtype, device=ref.device)

    def __repr__(self) -> str:
        return f"LinearODE(A={self.A.tolist()})"


# --------------------------------------------------------------------------- defaults
def default_linear_ode() -> LinearODE:
    """The ODE reference of :func:`sdeflow.verify.ode_order`: a damped rotation coupled to a
    decaying mode, ``A = [[-0.5, 2, 0.3], [-2, -0.5, 0], [0, 0, -1]]`` (non-normal, complex
    eigenvalues)."""
    return LinearODE([[-0.5, 2.0, 0.3], [-2.0, -0.5, 0.0], [0.0, 0.0, -1.0]])


def tolerance_problem(name: str, dtype: torch.dtype = torch.float64
                      ) -> tuple[ODE, Tensor, tuple[float, float], Tensor]:
    """``(ode, x0, t_span, exact x(t1))``: a tolerance-proportionality problem (docs/math.md §10.5).

    ``"linear"``: a 4x4 non-normal linear system over ``[0, 5]``, exact by ``expm``;
    ``"rotation"``: the harmonic oscillator (period 1) over 3.3 periods, exact;
    ``"vdp"``: Van der Pol with ``mu = 2`` over ``[0, 6]`` against scipy's DOP853 at rtol = atol =
    1e-13. ``x0`` and the field use ``dtype``; ``exact`` is float64.
    """
    f64 = torch.float64
    if name == "linear":
        a = torch.tensor([[-0.5, 2.0, 0.0, 0.3], [-2.0, -0.5, 0.4, 0.0],
                          [0.0, 0.0, -1.0, 1.0], [0.1, 0.0, -1.0, -0.2]], dtype=f64)
        x0 = torch.tensor([1.0, 0.0, -0.5, 0.25], dtype=f64)
        t_end = 5.0
        exact = expm(t_end * a) @ x0
        at = a.to(dtype)
        return ODE(lambda t, x: x @ at.T), x0.to(dtype), (0.0, t_end), exact
    if name == "rotation":
        w = 2.0 * math.pi
        x0 = torch.tensor([1.0, 0.0], dtype=f64)
        t_end = 3.3
        exact = torch.tensor([math.cos(w * t_end), -math.sin(w * t_end)], dtype=f64)
        rot = torch.tensor([[0.0, w], [-w, 0.0]], dtype=dtype)
        return ODE(lambda t, x: x @ rot.T), x0.to(dtype), (0.0, t_end), exact
    if name == "vdp":
        mu, t_end = 2.0, 6.0
        x0 = torch.tensor([2.0, 0.0], dtype=f64)
        from scipy.integrate import solve_ivp  # noqa: PLC0415

        ref = solve_ivp(lambda t, y: [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]], (0.0, t_end),
                        x0.tolist(), method="DOP853", rtol=1e-13, atol=1e-13)
        exact = torch.tensor(ref.y[:, -1], dtype=f64)

        def vdp(t: Tensor, x: Tensor) -> Tensor:
            p, v = x[..., 0], x[..., 1]
            return torch.stack([v, mu * (1 - p * p) * v - p], dim=-1)

        return ODE(vdp), x0.to(dtype), (0.0, t_end), exact
    raise ValueError(f"problem: expected 'linear', 'rotation' or 'vdp', got {name!r}")
