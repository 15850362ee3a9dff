"""SDE references with exact solutions or exact moments: GBM, Ornstein--Uhlenbeck, linear SDEs
and a nonlinear additive SDE (docs/math.md §8, §9). The conventions are those of
:mod:`sdeflow.verify.references`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..problems import SDE
from ._refbase import (
    _F64,
    ArrayLike,
    Tensor,
    TimeLike,
    _Cast,
    _check_bm,
    _check_state,
    _expm,
    _fine_grid,
    _scalar,
    _tensor64,
    _time,
    expm,
    linear_recursion_moments,
)

__all__ = ["AnalyticSDE", "GeometricBrownianMotion", "OrnsteinUhlenbeck", "LinearSDE",
           "NonlinearAdditiveSDE"]


# --------------------------------------------------------------------------- SDE base
class AnalyticSDE:
    """Common interface of the SDE references used by :mod:`sdeflow.verify`.

    Subclasses set ``noise``, ``dim`` (default state dimension), ``pathwise_exact`` and
    implement :meth:`problem_as`, :meth:`pathwise` and, where known, :meth:`mean` /
    :meth:`covariance` / :meth:`exact`.
    """

    noise: str = "diagonal"
    kind = "ito"
    dim: int = 1
    pathwise_exact: bool = False
    has_moments: bool = True

    @property
    def problem(self) -> SDE:
        """The Ito form of the SDE."""
        return self.problem_as("ito")

    def problem_as(self, kind: str) -> SDE:  # pragma: no cover - abstract
        raise NotImplementedError

    def _elementwise(self, dim: int) -> None:
        """Set up a reference that acts elementwise on states ``(..., dim)`` (any ``d`` works;
        ``dim`` is the default one) with an empty cache of its SDE forms."""
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim: expected a positive int, got {dim!r}")
        self.dim = dim
        self._problems: dict[str, SDE] = {}

    def _check_kind(self, kind: str) -> None:
        if kind not in ("ito", "stratonovich"):
            raise ValueError(f"kind: expected 'ito' or 'stratonovich', got {kind!r}")

    def brownian_shape(self, x_shape: Sequence[int] | torch.Size) -> tuple[int, ...]:
        """Shape of the Brownian motion driving a state of shape ``x_shape``."""
        return tuple(x_shape)

    def default_x0(self, dtype: torch.dtype = _F64, device: Any = None) -> Tensor:
        """``[d]`` initial state used when none is given (ones)."""
        return torch.ones(self.dim, dtype=dtype, device=device)

    def pathwise(self, t: TimeLike, x0: Tensor, bm: Any, *, t0: TimeLike | None = None,
                 n_fine: int | None = None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def mean(self, t: TimeLike, x0: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} has no exact mean")

    def covariance(self, t: TimeLike, x0: Tensor | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} has no exact covariance")

    def __repr__(self) -> str:
        return self.name

    @property
    def name(self) -> str:  # pragma: no cover - overridden
        return type(self).__name__


# --------------------------------------------------------------------------- GBM
class GeometricBrownianMotion(AnalyticSDE):
    """Geometric Brownian motion ``dX = mu X dt + sigma X dW`` (Ito, diagonal; docs/math.md §8.2).

    Acts elementwise on a state ``(..., d)``, one Brownian motion per coordinate.

    * exact: ``X_t = x0 exp((mu - sigma^2/2) t + sigma W_t)`` -- a function of ``W_t`` only, so it
      measures strong errors directly (``pathwise_exact = True``);
    * ``E X_t = x0 e^{mu t}``, ``Var X_t = x0^2 e^{2 mu t} (e^{sigma^2 t} - 1)`` per coordinate,
      coordinates independent;
    * Stratonovich form (``problem_as("stratonovich")``):
      ``dX = (mu - sigma^2/2) X dt + sigma X o dW``, same solution.

    Args:
        mu, sigma: real drift rate and volatility (``sigma >= 0``).
        dim: state dimension used by :meth:`default_x0` (any ``d`` works).
    """

    noise = "diagonal"
    pathwise_exact = True

    def __init__(self, mu: float, sigma: float, *, dim: int = 1) -> None:
        self.mu = _scalar(mu, "mu")
        self.sigma = _scalar(sigma, "sigma", nonneg=True)
        self._elementwise(dim)

    @property
    def name(self) -> str:
        return f"GBM(mu={self.mu:g}, sigma={self.sigma:g})"

    def problem_as(self, kind: str) -> SDE:
        """The SDE in Ito form (drift ``mu x``) or Stratonovich form (``(mu - sigma^2/2) x``)."""
        self._check_kind(kind)
        if kind not in self._problems:
            rate = self.mu if kind == "ito" else self.mu - 0.5 * self.sigma**2
            sigma = self.sigma
            self._problems[kind] = SDE(
                drift=lambda t, x: rate * x,
                diffusion=lambda t, x: sigma * x,
                noise="diagonal",
                kind=kind,
            )
        return self._problems[kind]

    def exact(self, t: TimeLike, x0: Tensor, W: Tensor, t0: TimeLike = 0.0) -> Tensor:
        """``X_t = x0 exp((mu - sigma^2/2)(t - t0) + sigma (W_t - W_t0))``.

        Args:
            t: time; x0: ``[..., d]``; W: ``W_t - W_t0``, shape of ``x0`` (or broadcastable).
        """
        x0 = _check_state(x0, None)
        tau = _time(t) - _time(t0, "t0")
        if not isinstance(W, Tensor):
            raise ValueError(f"W: expected a tensor, got {type(W).__name__}")
        return x0 * torch.exp((self.mu - 0.5 * self.sigma**2) * tau + self.sigma * W)

    def pathwise(self, t: TimeLike, x0: Tensor, bm: Any, *, t0: TimeLike | None = None,
                 n_fine: int | None = None) -> Tensor:
        """Exact ``X_t`` on the path ``bm`` (``n_fine`` is ignored: nothing is approximated)."""
        x0 = _check_state(x0, None)
        s = bm.t0 if t0 is None else _time(t0, "t0")
        tf = _time(t)
        _check_bm(bm, self.brownian_shape(x0.shape), s, tf)
        w = bm.increment(s, tf).to(dtype=x0.dtype, device=x0.device)
        return self.exact(tf, x0, w, s)

    def mean(self, t: TimeLike, x0: Tensor) -> Tensor:
        """``E X_t = x0 e^{mu t}``, shape of ``x0``."""
        x0 = _check_state(x0, None)
        return x0 * math.exp(self.mu * _time(t))

    def variance(self, t: TimeLike, x0: Tensor) -> Tensor:
        """``Var X_t = x0^2 e^{2 mu t} (e^{sigma^2 t} - 1)``, shape of ``x0``."""
        x0 = _check_state(x0, None)
        tt = _time(t)
        return x0**2 * math.exp(2 * self.mu * tt) * math.expm1(self.sigma**2 * tt)

    def covariance(self, t: TimeLike, x0: Tensor | None = None) -> Tensor:
        """``[..., d, d]``: diagonal, with :meth:`variance` on the diagonal."""
        if x0 is None:
            raise ValueError("x0: GBM's covariance depends on x0; pass it")
        return torch.diag_embed(self.variance(t, x0))

    def euler_maruyama_moments(self, t: TimeLike, x0: Tensor, steps: int
                               ) -> tuple[Tensor, Tensor]:
        """Exact mean and second moment (shape of ``x0``) of Euler--Maruyama, ``steps`` steps.

        EM on GBM is ``x_{n+1} = x_n (1 + mu h + sigma dW)``, so ``E x_N = x0 (1 + mu h)^N`` and
        ``E x_N^2 = x0^2 ((1 + mu h)^2 + sigma^2 h)^N`` (``h = t/N``): the exact weak errors.
        """
        x0 = _check_state(x0, None)
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps: expected a positive int, got {steps!r}")
        h = _time(t) / steps
        mean = x0 * (1 + self.mu * h) ** steps
        second = x0**2 * ((1 + self.mu * h) ** 2 + self.sigma**2 * h) ** steps
        return mean, second


# --------------------------------------------------------------------------- OU
class OrnsteinUhlenbeck(AnalyticSDE):
    """Ornstein--Uhlenbeck ``dX = theta (mu - X) dt + sigma dW`` (additive; docs/math.md §8.3).

    Acts elementwise on a state ``(..., d)`` (independent coordinates). With additive noise the
    Ito and Stratonovich forms coincide.

    * ``E X_t = mu + (x0 - mu) e^{-theta t}``; ``Var X_t = sigma^2/(2 theta) (1 - e^{-2 theta t})``;
    * exact transition ``X_{t+h} = mu + (X_t - mu) e^{-theta h}
      + sigma sqrt((1 - e^{-2 theta h})/(2 theta)) xi`` (:meth:`transition`);
    * stationary law ``N(mu, sigma^2/(2 theta))``.

    Args:
        theta: mean-reversion rate (> 0); sigma: noise level (>= 0); mu: long-run mean.
        dim: state dimension used by :meth:`default_x0`.
    """

    noise = "additive"
    pathwise_exact = False

    def __init__(self, theta: float, sigma: float, mu: float = 0.0, *, dim: int = 1) -> None:
        self.theta = _scalar(theta, "theta", positive=True)
        self.sigma = _scalar(sigma, "sigma", nonneg=True)
        self.mu = _scalar(mu, "mu")
        self._elementwise(dim)

    @property
    def name(self) -> str:
        return f"OU(theta={self.theta:g}, sigma={self.sigma:g}, mu={self.mu:g})"

    def problem_as(self, kind: str) -> SDE:
        """The SDE (same drift for both kinds: additive noise)."""
        self._check_kind(kind)
        if kind not in self._problems:
            theta, sigma, mu = self.theta, self.sigma, self.mu
            self._problems[kind] = SDE(
                drift=lambda t, x: theta * (mu - x),
                diffusion=lambda t, x: torch.full_like(x, sigma),
                noise="additive",
                kind=kind,
            )
        return self._problems[kind]

    def mean(self, t: TimeLike, x0: Tensor) -> Tensor:
        """``mu + (x0 - mu) e^{-theta t}``, shape of ``x0``."""
        x0 = _check_state(x0, None)
        return self.mu + (x0 - self.mu) * math.exp(-self.theta * _time(t))

    def variance(self, t: TimeLike, x0: Tensor | None = None) -> float:
        """``sigma^2/(2 theta) (1 - e^{-2 theta t})`` (the same for every coordinate)."""
        return -(self.sigma**2) / (2 * self.theta) * math.expm1(-2 * self.theta * _time(t))

    def covariance(self, t: TimeLike, x0: Tensor | None = None) -> Tensor:
        """``Var X_t I_d``: ``[d, d]`` (``d`` from ``x0`` if given, else ``self.dim``)."""
        d = self.dim if x0 is None else _check_state(x0, None).shape[-1]
        ref = x0 if isinstance(x0, Tensor) else torch.zeros((), dtype=_F64)
        return self.variance(t) * torch.eye(d, dtype=ref.dtype, device=ref.device)

    def stationary(self) -> tuple[float, float]:
        """``(mean, variance)`` of the stationary law ``N(mu, sigma^2/(2 theta))``."""
        return self.mu, self.sigma**2 / (2 * self.theta)

    def transition(self, h: TimeLike, x: Tensor, xi: Tensor) -> Tensor:
        """Exact transition from ``x`` over a step ``h`` (docs/math.md §8.3).

        ``mu + (x - mu) e^{-theta h} + sigma sqrt((1 - e^{-2 theta h}) / (2 theta)) xi`` with
        ``xi`` standard normal of ``x``'s shape.
        """
        hh = _time(h, "h")
        sd = self.sigma * math.sqrt(-math.expm1(-2 * self.theta * hh) / (2 * self.theta))
        return self.mu + (x - self.mu) * math.exp(-self.theta * hh) + sd * xi

    def euler_maruyama_moments(self, t: TimeLike, x0: Tensor, steps: int) -> tuple[Tensor, float]:
        """Exact mean ``[..., d]`` and variance of Euler--Maruyama with ``steps`` equal steps.

        EM on OU is the linear recursion ``x_{n+1} = (1 - theta h) x_n + theta mu h + sigma dW``:
        ``E x_N = mu + (x0 - mu) r^N`` and ``Var x_N = sigma^2 h (1 - r^{2N}) / (1 - r^2)`` with
        ``r = 1 - theta h`` (``sigma^2 h N`` when ``r^2 = 1``).
        """
        x0 = _check_state(x0, None)
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps: expected a positive int, got {steps!r}")
        h = _time(t) / steps
        r = 1.0 - self.theta * h
        mean = self.mu + (x0 - self.mu) * r**steps
        if abs(1.0 - r * r) < 1e-300:
            var = self.sigma**2 * h * steps
        else:
            var = self.sigma**2 * h * (1.0 - r ** (2 * steps)) / (1.0 - r * r)
        return mean, var

    def pathwise(self, t: TimeLike, x0: Tensor, bm: Any, *, t0: TimeLike | None = None,
                 n_fine: int | None = None) -> Tensor:
        """X_t on the path ``bm`` by a second-order quadrature of the stochastic integral.

        ``X_t = mu + (x0 - mu) e^{-theta tau} + sigma int_{t0}^t e^{-theta (t - s)} dW_s``. On each
        cell ``[s_k, s_k + delta]`` of a uniform grid of ``n_fine`` cells (default 4096),
        ``e^{-theta (t - s)} = e^{-theta (t - s_k)} (1 + theta (s - s_k) + O(delta^2))`` and
        ``int (s - s_k) dW = delta dW_k - I_k`` with ``I_k = int (W_s - W_{s_k}) ds``
        (``bm.grid``), so the cell contributes ``e^{-theta (t - s_k)} ((1 + theta delta) dW_k -
        theta I_k)``. The neglected remainder has standard deviation
        ``<= sigma theta^2 delta^2 sqrt(tau / 20)`` (about ``1e-8`` for theta = sigma = tau = 1):
        a *reference* on the same path, far below any strong error it is compared with.
        """
        x0 = _check_state(x0, None)
        s = bm.t0 if t0 is None else _time(t0, "t0")
        tf = _time(t)
        _check_bm(bm, self.brownian_shape(x0.shape), s, tf)
        grid = _fine_grid(s, tf, 4096 if n_fine is None else n_fine)
        dw, it = bm.grid(grid, space_time=True)
        dw, it = dw.to(_F64), it.to(_F64)
        delta = (tf - s) / (len(grid) - 1)
        sk = torch.tensor(grid[:-1], dtype=_F64, device=dw.device)
        w = torch.exp(-self.theta * (tf - sk)).view((-1,) + (1,) * (dw.dim() - 1))
        stoch = (w * ((1 + self.theta * delta) * dw - self.theta * it)).sum(0)
        det = self.mu + (x0.to(_F64) - self.mu) * math.exp(-self.theta * (tf - s))
        return (det + self.sigma * stoch.to(det.device)).to(x0.dtype)

    def as_linear_sde(self, dim: int | None = None) -> LinearSDE:
        """The same process as a :class:`LinearSDE` of dimension ``dim`` (default ``self.dim``).

        ``A = -theta I``, ``a = theta mu``, ``B = sigma`` (additive noise).
        """
        d = self.dim if dim is None else dim
        return LinearSDE(
            -self.theta * torch.eye(d, dtype=_F64),
            torch.full((d,), self.theta * self.mu, dtype=_F64),
            torch.full((d,), self.sigma, dtype=_F64),
        )


# --------------------------------------------------------------------------- LinearSDE
class LinearSDE(AnalyticSDE):
    """``dX = (A X + a) dt + B dW`` with exact moments (docs/math.md §8.4, §9.1).

    Args:
        A: ``[d, d]``; a: ``[d]`` (``None`` = 0);
        B: ``[d]`` -> *additive* noise ``g = B`` elementwise, Brownian motion ``(..., d)``;
        or ``[d, m]`` -> diffusion ``(..., d, m)``, Brownian motion ``(..., m)``, declared
        *general* noise, or *additive* noise (a constant matrix) with ``noise="additive"``.
        noise: ``None`` (the default above), ``"general"`` or ``"additive"`` (both only for a
            ``[d, m]`` matrix ``B``).

    Moments (the Fokker--Planck moment equations) ``m' = A m + a``, ``P' = A P + P A^T + B B^T``
    are solved exactly with matrix exponentials: ``m(t) = e^{tA} m0 + int_0^t e^{sA} ds a`` from the
    augmented exponential ``expm(t [[A, a], [0, 0]])``, and
    ``P(t) = e^{tA} P0 e^{tA^T} + Q(t)``, ``Q(t) = int_0^t e^{sA} B B^T e^{sA^T} ds`` by Van Loan's
    method: ``expm(t [[-A, B B^T], [0, A^T]]) = [[., F12], [0, F22]]``, ``Q = F22^T F12``.
    Ito and Stratonovich forms coincide (the noise does not depend on X).
    """

    pathwise_exact = False

    def __init__(self, A: ArrayLike, a: ArrayLike | None, B: ArrayLike,
                 noise: str | None = None) -> None:
        am = _tensor64(A, "A")
        if am.dim() == 0:
            am = am.reshape(1, 1)
        if am.dim() != 2 or am.shape[0] != am.shape[1]:
            raise ValueError(f"A: expected a square [d, d] matrix, got shape {tuple(am.shape)}")
        d = am.shape[0]
        av = torch.zeros(d, dtype=_F64) if a is None else _tensor64(a, "a").reshape(-1)
        if av.shape != (d,):
            raise ValueError(f"a: expected shape ({d},), got {tuple(av.shape)}")
        if noise not in (None, "general", "additive"):
            raise ValueError(f"noise: expected None, 'general' or 'additive', got {noise!r}")
        bm = _tensor64(B, "B")
        if noise is not None and bm.dim() != 2:
            raise ValueError(f"noise: {noise!r} is for a [d, m] matrix B; got B of shape "
                             f"{tuple(bm.shape)} (leave noise=None)")
        if bm.dim() == 0:
            bm = bm.expand(d).clone()
        if bm.dim() == 1:
            if bm.shape[0] != d:
                raise ValueError(f"B: expected shape ({d},) or ({d}, m), got {tuple(bm.shape)}")
            self.noise = "additive"
            self.B_matrix = torch.diag(bm)
        elif bm.dim() == 2:
            if bm.shape[0] != d:
                raise ValueError(f"B: expected shape ({d}, m), got {tuple(bm.shape)}")
            self.noise = noise or "general"
            self.B_matrix = bm
        else:
            raise ValueError(f"B: expected shape ({d},) or ({d}, m), got {tuple(bm.shape)}")
        self.A, self.a, self.B = am, av, bm
        self.dim = d
        self.m = self.B_matrix.shape[1]
        self._at, self._a, self._b = _Cast(am.T.contiguous()), _Cast(av), _Cast(bm)
        self._problems: dict[str, SDE] = {}

    @property
    def name(self) -> str:
        matrix = self.noise == "additive" and self.B.dim() == 2
        return f"LinearSDE(d={self.dim}, {self.noise}{f', m={self.m}' if matrix else ''})"

    def brownian_shape(self, x_shape: Sequence[int] | torch.Size) -> tuple[int, ...]:
        return (*tuple(x_shape)[:-1], self.m)

    def problem_as(self, kind: str) -> SDE:
        """The SDE; drift ``x A^T + a`` ``(..., d)``, diffusion ``B`` expanded per path."""
        self._check_kind(kind)
        if kind not in self._problems:
            at, av, bv = self._at, self._a, self._b
            if self.B.dim() == 1:
                def diffusion(t: Tensor, x: Tensor) -> Tensor:
                    return bv.like(x).expand(x.shape)
            else:
                def diffusion(t: Tensor, x: Tensor) -> Tensor:
                    b = bv.like(x)
                    return b.expand(*x.shape[:-1], *b.shape)

            self._problems[kind] = SDE(
                drift=lambda t, x: x @ at.like(x) + av.like(x),
                diffusion=diffusion,
                noise=self.noise,
                kind=kind,
            )
        return self._problems[kind]

    def diffusion_covariance(self) -> Tensor:
        """``B B^T`` ``[d, d]`` (float64)."""
        return self.B_matrix @ self.B_matrix.T

    def mean(self, t: TimeLike, x0: Tensor) -> Tensor:
        """``m(t) = e^{tA} x0 + int_0^t e^{sA} ds a``; ``x0`` ``[..., d]`` -> ``[..., d]``."""
        x0 = _check_state(x0, self.dim)
        d = self.dim
        aug = torch.zeros(d + 1, d + 1, dtype=_F64)
        aug[:d, :d] = self.A
        aug[:d, d] = self.a
        e = _expm(_time(t), aug)
        phi, psi = e[:d, :d], e[:d, d]
        out = x0.to(_F64).cpu() @ phi.T + psi
        return out.to(dtype=x0.dtype, device=x0.device)

    def covariance(self, t: TimeLike, x0: Tensor | None = None, cov0: Tensor | None = None
                   ) -> Tensor:
        """``P(t) = e^{tA} P0 e^{tA^T} + Q(t)`` by Van Loan's method; ``[d, d]``.

        ``P0 = cov0`` (default 0: a deterministic start). The result has ``x0``'s dtype and device
        when ``x0`` is given, float64 otherwise.
        """
        tt = _time(t)
        d = self.dim
        c = torch.zeros(2 * d, 2 * d, dtype=_F64)
        c[:d, :d] = -self.A
        c[:d, d:] = self.diffusion_covariance()
        c[d:, d:] = self.A.T
        f = _expm(tt, c)
        q = f[d:, d:].T @ f[:d, d:]
        q = 0.5 * (q + q.T)
        if cov0 is not None:
            p0 = _tensor64(cov0, "cov0")
            if p0.shape != (d, d):
                raise ValueError(f"cov0: expected shape ({d}, {d}), got {tuple(p0.shape)}")
            phi = _expm(tt, self.A)
            q = q + phi @ p0 @ phi.T
        if x0 is not None:
            x0 = _check_state(x0, d)
            return q.to(dtype=x0.dtype, device=x0.device)
        return q

    def euler_maruyama_moments(self, t: TimeLike, x0: Tensor, steps: int,
                               cov0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Exact mean ``[..., d]`` and covariance ``[d, d]`` (float64) of Euler--Maruyama.

        EM with ``steps`` equal steps ``h = t/steps`` is ``x_{n+1} = (I + hA) x_n + h a + B dW``:
        see :func:`linear_recursion_moments` with ``M = I + hA``, ``c = h a``, ``Q = h B B^T``.
        """
        x0 = _check_state(x0, self.dim)
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps: expected a positive int, got {steps!r}")
        h = _time(t) / steps
        m = torch.eye(self.dim, dtype=_F64) + h * self.A
        return linear_recursion_moments(
            m, h * self.a, h * self.diffusion_covariance(), steps, x0.to(_F64).cpu(),
            None if cov0 is None else _tensor64(cov0, "cov0"),
        )

    def pathwise(self, t: TimeLike, x0: Tensor, bm: Any, *, t0: TimeLike | None = None,
                 n_fine: int | None = None) -> Tensor:
        """X_t on the path ``bm`` by a second-order quadrature of the stochastic integral.

        ``X_t = e^{tau A} x0 + int e^{sA} ds a + int_{t0}^t e^{(t-s)A} B dW_s``; on each cell
        ``[s_k, s_k + delta]`` (``n_fine`` cells, default 4096)
        ``e^{(t-s)A} = e^{(t-s_k)A} (I - (s - s_k) A + O(delta^2))``, and with
        ``int (s - s_k) dW = delta dW_k - I_k`` the cell contributes
        ``e^{(t-s_k)A} ((I - delta A) B dW_k + A B I_k)``. Remainder standard deviation
        ``O(|A|^2 |B| delta^2)``: a reference on the same path, not an exact value.
        """
        x0 = _check_state(x0, self.dim)
        s = bm.t0 if t0 is None else _time(t0, "t0")
        tf = _time(t)
        _check_bm(bm, self.brownian_shape(x0.shape), s, tf)
        grid = _fine_grid(s, tf, 4096 if n_fine is None else n_fine)
        dw, it = bm.grid(grid, space_time=True)
        dev = dw.device
        dw, it = dw.to(_F64), it.to(_F64)
        delta = (tf - s) / (len(grid) - 1)
        a, b = self.A.to(dev), self.B_matrix.to(dev)
        eye = torch.eye(self.dim, dtype=_F64, device=dev)
        # v_k = (I - delta A) B dW_k + A B I_k, shape [n, ..., d]
        v = dw @ ((eye - delta * a) @ b).T + it @ (a @ b).T
        sk = torch.tensor(grid[:-1], dtype=_F64, device=dev)
        ek = expm((tf - sk).view(-1, 1, 1) * a)  # [n, d, d]
        n = v.shape[0]
        stoch = torch.einsum("kij,kbj->bi", ek, v.reshape(n, -1, self.dim))
        stoch = stoch.reshape(v.shape[1:])
        det = self.mean(tf - s, x0.to(_F64).to(dev))
        return (det + stoch).to(dtype=x0.dtype, device=x0.device)


# --------------------------------------------------------------------------- nonlinear
class NonlinearAdditiveSDE(AnalyticSDE):
    """``dX = -sin(X) dt + sigma dW``: nonlinear drift, additive noise, *no* exact solution.

    It exists to measure SRA1's strong order 1.5 (docs/math.md §6.4, §8.5: with a *linear*
    drift SRA1 converges at order 2, so order 1.5 must be tested on a nonlinear drift).
    Elementwise on ``(..., d)``.

    :meth:`pathwise` is a **reference**, not an exact solution: the order-1.5 strong Ito--Taylor
    scheme for additive noise (Kloeden & Platen 1992, §10.4, with ``f' = -cos``, ``f'' = sin``),

        ``x_{k+1} = x + f h + sigma dW + f' sigma I + 1/2 (f f' + sigma^2/2 f'') h^2``,

    with ``I = int (W_s - W_{s_k}) ds`` from the same :class:`BrownianPath`, on ``n_fine`` cells
    (default 4096). Its strong error is ``O(delta^{1.5})`` (about ``1e-6`` at the default), an
    independent scheme from every solver of the library. Ito and Stratonovich forms coincide.
    """

    noise = "additive"
    pathwise_exact = False
    has_moments = False

    def __init__(self, sigma: float = 2.0, *, dim: int = 1) -> None:
        self.sigma = _scalar(sigma, "sigma", nonneg=True)
        self._elementwise(dim)

    @property
    def name(self) -> str:
        return f"SineDrift(sigma={self.sigma:g})"

    def problem_as(self, kind: str) -> SDE:
        """The SDE: drift ``-sin(x)``, diffusion ``sigma`` (both kinds identical)."""
        self._check_kind(kind)
        if kind not in self._problems:
            sigma = self.sigma
            self._problems[kind] = SDE(
                drift=lambda t, x: -torch.sin(x),
                diffusion=lambda t, x: torch.full_like(x, sigma),
                noise="additive",
                kind=kind,
            )
        return self._problems[kind]

    def pathwise(self, t: TimeLike, x0: Tensor, bm: Any, *, t0: TimeLike | None = None,
                 n_fine: int | None = None) -> Tensor:
        """Reference X_t on the path ``bm`` (order-1.5 Taylor scheme on a fine grid; see class)."""
        x0 = _check_state(x0, None)
        s = bm.t0 if t0 is None else _time(t0, "t0")
        tf = _time(t)
        _check_bm(bm, self.brownian_shape(x0.shape), s, tf)
        grid = _fine_grid(s, tf, 4096 if n_fine is None else n_fine)
        dw, it = bm.grid(grid, space_time=True)
        dw, it = dw.to(_F64), it.to(_F64)
        h = (tf - s) / (len(grid) - 1)
        sg = self.sigma
        x = x0.to(_F64).to(dw.device)
        for k in range(dw.shape[0]):
            sn, cs = torch.sin(x), torch.cos(x)
            f, fp, fpp = -sn, -cs, sn
            x = x + f * h + sg * dw[k] + fp * (sg * it[k]) + (0.5 * h * h) * (
                f * fp + 0.5 * sg * sg * fpp
            )
        return x.to(dtype=x0.dtype, device=x0.device)
