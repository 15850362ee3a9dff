"""Semilinear problems: a linear part integrated exactly, a nonlinear part in a chosen variable.

The form (docs/math.md §15.1). With an integrating factor ``E(t) = exp(int a dt) > 0`` of the
linear coefficient ``a(t)``, a variable ``tau(t)`` (strictly monotone in ``t``), a rate ``k``
(a number, or a tensor broadcasting against ``x`` for a diagonal linear part) and a gain ``c``,

    dx/dt = a(t) x + c E(t) e^{k tau(t)} tau'(t) N(t, x),

whose solution over a step ``s -> t`` is the variation-of-constants formula

    x(t) = E(t)/E(s) x(s) + G(t) int_{tau(s)}^{tau(t)} e^{-k (tau(t) - r)} N(r) dr,
    G(t) = c E(t) e^{k tau(t)}.

Expanding ``N`` in ``r`` about ``tau(s)`` gives ``G(t) sum_m h^{m+1} phi_{m+1}(-k h) N^{(m)}``
with ``h = tau(t) - tau(s)`` and the phi functions ``phi_0(z) = e^z``,
``phi_{j+1}(z) = (phi_j(z) - 1/j!) / z`` -- the exponential integrators of
:mod:`sdeflow.solvers.exponential` estimate the ``N^{(m)}`` from stages or history.

Two families fit it:

* **stiff semilinear systems** ``dx/dt = L x + N(t, x)`` (exponential time differencing):
  ``tau = t``, ``log E = L t``, ``k = -L``, ``c = 1`` (:meth:`SemilinearODE.etd`);
* **the probability-flow ODE of a Gaussian path** ``x_t = alpha_t z + beta_t eps``: with
  ``lambda = log(alpha/beta)``, the data-prediction form has ``log E = log beta``, ``tau = lambda``,
  ``k = 1``, ``c = 1``, ``N = x0_hat`` (``G = alpha``); the noise-prediction form
  ``log E = log alpha``, ``k = -1``, ``c = -1``, ``N = eps_hat`` (``G = -beta``). The generative
  plugin builds these (``sdeflow_generative.sampling``).

:class:`SemilinearSDE` adds additive noise ``g(t) dW``; its exact step adds a Gaussian of
standard deviation ``noise_std(s, t) = sqrt(int_s^t (E(t)/E(r))^2 g(r)^2 dr)``.

Every function of time takes a 0-dim tensor ``t`` (the state's dtype and device) and returns a
tensor broadcasting against ``x`` (0-dim for a scalar linear part).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .problems import ODE, SDE, Field

Tensor = torch.Tensor
TimeFn = Callable[[Tensor], Tensor]

PHI_SERIES = 1.0  # |z| below this: the phi functions by their Taylor series
PHI_TERMS = 24


def phi(j: int, z: Tensor) -> Tensor:
    """``phi_j(z)`` elementwise (``phi_0 = e^z``, ``phi_{j+1}(z) = (phi_j(z) - 1/j!) / z``).

    ``phi_j(z) = sum_m z^m / (m + j)!``: by the recursion where ``|z| >= 1`` and by the series
    (24 terms, exact to rounding) where ``|z| < 1`` (the recursion cancels there).
    """
    if not isinstance(j, int) or j < 0:
        raise ValueError(f"j: expected an int >= 0, got {j!r}")
    if j == 0:
        return torch.exp(z)
    big = z.abs() >= PHI_SERIES
    zb = torch.where(big, z, torch.ones_like(z))
    rec = torch.expm1(zb) / zb  # phi_1
    for i in range(1, j):
        rec = (rec - 1.0 / math.factorial(i)) / zb
    zs = torch.where(big, torch.zeros_like(z), z)
    ser = torch.zeros_like(z)
    for m in range(PHI_TERMS - 1, -1, -1):  # Horner
        ser = ser * zs + 1.0 / math.factorial(m + j)
    return torch.where(big, rec, ser)


def _time_fn(v: Any, name: str) -> TimeFn | None:
    if v is None:
        return None
    if not callable(v):
        raise TypeError(f"{name}: expected a callable of t (0-dim tensor), got "
                        f"{type(v).__name__}")
    return v


def _rate(v: Any) -> float | Tensor:
    if isinstance(v, Tensor):
        if not v.is_floating_point():
            raise TypeError(f"rate: expected a float tensor, got dtype {v.dtype}")
        if not bool(torch.isfinite(v).all()):
            raise ValueError("rate: contains NaN or inf")
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise TypeError(f"rate: expected a finite number or a tensor, got {v!r}")
    return float(v)


class SemilinearODE(ODE):
    """``dx/dt = a(t) x + c E(t) e^{k tau(t)} tau'(t) N(t, x)`` (module docstring; docs/math.md
    §15.1).

    Args:
        nonlinear: ``N(t, x)``, ``t`` 0-dim, ``x`` any shape; returns ``x``'s shape.
        tau: the variable ``tau(t)`` the nonlinear part is expanded in (strictly monotone).
        log_scale: ``log E(t)``, the log of the linear part's integrating factor.
        rate: ``k`` (a number, or a tensor broadcasting against ``x``).
        gain: ``c`` (a nonzero number).
        linear: ``a(t) = d log E / dt`` (default: autograd of ``log_scale``).
        tau_dot: ``tau'(t)`` (default: autograd of ``tau``).
        tau_inverse: ``t(tau)`` (optional): lets singlestep solvers place their stages at
            fractions of the step in ``tau`` rather than in ``t``.

    ``vector_field`` is the full right-hand side (any core ODE solver solves the problem);
    exponential integrators (``caps.semilinear``) use ``nonlinear`` and :meth:`step_coefficients`.
    Evaluations of ``N`` by those solvers are counted in ``Solution.stats["nfe"]``.
    """

    def __init__(self, nonlinear: Field, *, tau: TimeFn, log_scale: TimeFn,
                 rate: float | Tensor = 0.0, gain: float = 1.0, linear: TimeFn | None = None,
                 tau_dot: TimeFn | None = None, tau_inverse: TimeFn | None = None) -> None:
        if not callable(nonlinear):
            raise TypeError(f"nonlinear: expected a callable N(t, x), got "
                            f"{type(nonlinear).__name__}")
        self.nonlinear_fn = nonlinear
        self.tau = _time_fn(tau, "tau")
        self.log_scale = _time_fn(log_scale, "log_scale")
        if self.tau is None or self.log_scale is None:
            raise TypeError("tau, log_scale: both are required callables of t")
        self.rate = _rate(rate)
        if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not (
                math.isfinite(gain) and gain != 0):
            raise ValueError(f"gain: expected a finite nonzero number, got {gain!r}")
        self.gain = float(gain)
        self.linear_fn = _time_fn(linear, "linear")
        self.tau_dot_fn = _time_fn(tau_dot, "tau_dot")
        self.tau_inverse = _time_fn(tau_inverse, "tau_inverse")
        self._nonlinear_mode = False
        super().__init__(self._dispatch)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def etd(cls, L: float | Tensor, nonlinear: Field) -> SemilinearODE:
        """``dx/dt = L x + N(t, x)`` with a constant (scalar or diagonal) ``L``:
        exponential time differencing (``tau = t``, ``log E = L t``, ``k = -L``, ``c = 1``)."""
        lin = _rate(L)
        neg = -lin if isinstance(lin, Tensor) else -lin

        def log_scale(t: Tensor) -> Tensor:
            return t * (lin.to(t) if isinstance(lin, Tensor) else lin)

        def linear(t: Tensor) -> Tensor:
            return lin.to(t) if isinstance(lin, Tensor) else torch.full_like(t, lin)

        return cls(nonlinear, tau=lambda t: t, log_scale=log_scale, rate=neg, gain=1.0,
                   linear=linear, tau_dot=torch.ones_like, tau_inverse=lambda s: s)

    @classmethod
    def from_linear(cls, A: Tensor) -> SemilinearODE:
        """``x' = A x`` split as ETD: the diagonal of ``A`` exact, the rest as ``N``
        (``sdeflow verify`` runs exponential integrators on its ``LinearODE`` this way)."""
        if not isinstance(A, Tensor) or A.dim() != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"A: expected a square matrix tensor, got {type(A).__name__}")
        diag = torch.diagonal(A).clone()
        off_t = (A - torch.diag(diag)).T.contiguous()

        def n(t: Tensor, x: Tensor) -> Tensor:
            return x @ off_t.to(x)

        return cls.etd(diag, n)

    # ------------------------------------------------------------------ the fields
    def nonlinear(self, t: Tensor, x: Tensor) -> Tensor:
        """``N(t, x)`` (uncounted; solvers call it through ``terms.u``, see :meth:`counted`)."""
        return self.nonlinear_fn(t, x)

    def _dispatch(self, t: Tensor, x: Tensor) -> Tensor:
        if self._nonlinear_mode:
            return self.nonlinear_fn(t, x)
        return self.full_field(t, x)

    def counted(self, u: Field) -> Field:
        """``N`` through the loop's counted, checked field ``u = terms.u`` of this problem."""
        def n(t: Tensor, x: Tensor) -> Tensor:
            self._nonlinear_mode = True
            try:
                return u(t, x)
            finally:
                self._nonlinear_mode = False
        return n

    def _derivative(self, fn: TimeFn, given: TimeFn | None, t: Tensor) -> Tensor:
        if given is not None:
            return given(t)
        with torch.enable_grad():
            tt = t.detach().requires_grad_(True)
            y = fn(tt)
            (g,) = torch.autograd.grad(y.sum(), tt, allow_unused=True)
        if y.dim() > 0:  # a diagonal part: one derivative per component
            jac = torch.autograd.functional.jacobian(fn, t.detach())
            return jac.reshape(y.shape)
        return torch.zeros_like(t) if g is None else g

    def linear(self, t: Tensor) -> Tensor:
        """``a(t) = d log E / dt``."""
        return self._derivative(self.log_scale, self.linear_fn, t)

    def tau_dot(self, t: Tensor) -> Tensor:
        """``tau'(t)``."""
        return self._derivative(self.tau, self.tau_dot_fn, t)

    def gain_at(self, t: Tensor) -> Tensor:
        """``G(t) = c E(t) e^{k tau(t)}``."""
        k = self.rate.to(t) if isinstance(self.rate, Tensor) else self.rate
        return self.gain * torch.exp(self.log_scale(t) + k * self.tau(t))

    def full_field(self, t: Tensor, x: Tensor) -> Tensor:
        """``a(t) x + G(t) tau'(t) N(t, x)`` (the ODE's right-hand side)."""
        n = self.nonlinear_fn(t, x)
        return self.linear(t) * x + (self.gain_at(t) * self.tau_dot(t)) * n

    def step_coefficients(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(E(t)/E(s), G(t), h, z)`` of the step ``s -> t``: ``h = tau(t) - tau(s)``,
        ``z = -k h`` (tensors of the time's dtype; ``E``, ``G``, ``z`` broadcast against x)."""
        ls, lt = self.log_scale(s), self.log_scale(t)
        h = self.tau(t) - self.tau(s)
        k = self.rate.to(t) if isinstance(self.rate, Tensor) else self.rate
        return torch.exp(lt - ls), self.gain_at(t), h, -k * h

    def __repr__(self) -> str:
        return f"SemilinearODE(rate={self.rate!r}, gain={self.gain})"


class SemilinearSDE(SDE):
    """``dX = [a X + c E e^{k tau} tau' N(t, X)] dt + g(t) dW`` (additive noise, Ito; docs/math.md
    §15.5).

    Args:
        nonlinear, tau, log_scale, rate, gain, linear, tau_dot, tau_inverse: as
            :class:`SemilinearODE`.
        diffusion: ``g(t)``, a callable of the 0-dim ``t`` returning a tensor broadcasting
            against ``x`` ``(..., d)``.
        noise_std: ``noise_std(s, t) = sqrt(int_s^t (E(t)/E(r))^2 g(r)^2 dr)``, the standard
            deviation of the noise an exact step adds.
    """

    noise = "additive"
    kind = "ito"

    def __init__(self, nonlinear: Field, *, tau: TimeFn, log_scale: TimeFn,
                 diffusion: TimeFn, noise_std: Callable[[Tensor, Tensor], Tensor],
                 rate: float | Tensor = 0.0, gain: float = 1.0, linear: TimeFn | None = None,
                 tau_dot: TimeFn | None = None, tau_inverse: TimeFn | None = None) -> None:
        self.ode = SemilinearODE(nonlinear, tau=tau, log_scale=log_scale, rate=rate, gain=gain,
                                 linear=linear, tau_dot=tau_dot, tau_inverse=tau_inverse)
        if not callable(diffusion):
            raise TypeError(f"diffusion: expected a callable g(t), got "
                            f"{type(diffusion).__name__}")
        if not callable(noise_std):
            raise TypeError(f"noise_std: expected a callable noise_std(s, t), got "
                            f"{type(noise_std).__name__}")
        self.g_fn = diffusion
        self.noise_std = noise_std
        self.tau_inverse = self.ode.tau_inverse
        super().__init__(drift=self.ode._dispatch, diffusion=self._g, noise="additive",
                         kind="ito")

    def _g(self, t: Tensor, x: Tensor) -> Tensor:
        return self.g_fn(t) * torch.ones_like(x)

    def counted(self, f: Field) -> Field:
        """``N`` through the loop's counted drift ``f = terms.f``."""
        return self.ode.counted(f)

    def step_coefficients(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.ode.step_coefficients(s, t)

    def __repr__(self) -> str:
        return f"SemilinearSDE(rate={self.ode.rate!r}, gain={self.ode.gain})"


__all__ = ["SemilinearODE", "SemilinearSDE", "phi"]
