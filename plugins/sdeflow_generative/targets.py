"""Data distributions with exact sampling, density and score (docs/math.md §22).

* :class:`Gaussian` ``N(mean, cov)``;
* :class:`GaussianMixture` ``sum_k pi_k N(mu_k, S_k)``;
* :class:`Empirical` ``(1/N) sum_i delta_{z_i}``, a mixture of Dirac masses at data points. It has
  no density: :meth:`Empirical.log_prob` and :meth:`Empirical.score` raise :class:`NoDensityError`.
  (Its path marginals ``p_t``, ``t < 1``, do have densities: see
  :meth:`sdeflow_generative.GaussianPath.marginal`.)

Every target has ``sample(n, generator=None)`` -> ``(n, d)``, ``log_prob(x)`` ``(..., d) -> (...)``,
``score(x)`` ``(..., d) -> (..., d)``, and the exact ``mean`` ``(d,)`` and ``covariance``
``(d, d)``.
Parameters keep the dtype/device they were given with; ``log_prob``/``score`` follow ``x``'s
dtype/device, ``sample`` uses the parameters' dtype/device (pass a ``generator`` on that device).

Covariances are stored by eigendecomposition ``S = Q diag(lam) Q^T``, so densities, scores and the
path marginals ``alpha^2 S + beta^2 I`` need no matrix inverse at evaluation time.
"""

from __future__ import annotations

import math

import torch

from . import _mixture
from ._mixture import MixtureParams
from ._utils import check_positive_int, check_state

Tensor = torch.Tensor

__all__ = ["Target", "Gaussian", "GaussianMixture", "Empirical", "NoDensityError"]


class NoDensityError(NotImplementedError):
    """Raised when a density or score is asked of a distribution that has none (``Empirical``)."""


def _as_float_tensor(value: object, name: str) -> Tensor:
    if isinstance(value, torch.Tensor):
        t = value
    else:
        try:
            t = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"{name}: expected a tensor or nested sequence of floats") from exc
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: expected finite values")
    return t


class Target:
    """Base class: a distribution on R^d given by mixture parameters (see module docstring)."""

    _params: MixtureParams
    _has_density: bool = True

    def __init__(self, params: MixtureParams) -> None:
        self._params = params
        self._cache: dict[tuple[torch.dtype, torch.device], MixtureParams] = {}

    # ------------------------------------------------------------------ parameters
    @property
    def dim(self) -> int:
        """Dimension d of the data."""
        return int(self._params.means.shape[-1])

    @property
    def dtype(self) -> torch.dtype:
        return self._params.means.dtype

    @property
    def device(self) -> torch.device:
        return self._params.means.device

    @property
    def weights(self) -> Tensor:
        """Mixture weights ``pi`` ``(K,)``."""
        return self._params.log_weights.exp()

    @property
    def means(self) -> Tensor:
        """Component means ``mu`` ``(K, d)``."""
        return self._params.means

    @property
    def covs(self) -> Tensor:
        """Component covariances ``S_k = Q_k diag(lam_k) Q_k^T`` ``(K, d, d)``."""
        p = self._params
        if p.Q is None:
            return torch.diag_embed(p.lam.expand(p.means.shape))
        return p.Q @ (p.lam.unsqueeze(-1) * p.Q.transpose(-1, -2))

    def params_like(self, x: Tensor) -> MixtureParams:
        """Mixture parameters on ``x``'s dtype/device (cached)."""
        key = (x.dtype, x.device)
        if key == (self.dtype, self.device):
            return self._params
        if key not in self._cache:
            self._cache[key] = self._params.to(x)
        return self._cache[key]

    @property
    def mean(self) -> Tensor:
        """Exact mean ``sum_k pi_k mu_k`` ``(d,)``."""
        return self.weights @ self._params.means

    @property
    def covariance(self) -> Tensor:
        """Exact covariance ``sum_k pi_k (S_k + mu_k mu_k^T) - m m^T`` ``(d, d)``."""
        w = self.weights
        mu = self._params.means
        m = w @ mu
        second = torch.einsum("k,kij->ij", w, self.covs) + torch.einsum("k,ki,kj->ij", w, mu, mu)
        return second - torch.outer(m, m)

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact samples ``(n, d)``: ``k ~ pi``, then ``mu_k + Q_k (sqrt(lam_k) eps)``."""
        return self.sample_labelled(n, generator)[0]

    def sample_labelled(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(x, k)``: ``n`` exact samples ``(n, d)`` and their component indices ``(n,)``
        (int64). Same draws as :meth:`sample` (which returns ``x`` of this call)."""
        n = check_positive_int(n, "n")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator: expected a torch.Generator, got {type(generator).__name__}"
            )
        p = self._params
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = p.means[k]
        if self._has_density or bool((p.lam > 0).any()):
            eps = torch.randn(
                n, self.dim, generator=generator, dtype=self.dtype, device=self.device
            )
            g = torch.sqrt(p.lam.expand(p.means.shape)[k]) * eps
            z = z + (g if p.Q is None else torch.einsum("nij,nj->ni", p.Q[k], g))
        return z, k

    def component(self, k: int) -> GaussianMixture:
        """Component ``k`` as a one-component :class:`GaussianMixture` ``N(mu_k, S_k)`` (for the
        exact class-conditional path ``p_t(x | y = k)`` of a labelled mixture)."""
        if not self._has_density:
            raise NoDensityError(f"{type(self).__name__} has no Gaussian components")
        K = int(self._params.means.shape[0])
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < K:
            raise ValueError(f"k: expected a component index in [0, {K}), got {k!r}")
        return GaussianMixture(self.means[k : k + 1], self.covs[k : k + 1])

    # ------------------------------------------------------------------ density
    def _evaluate(self, x: Tensor) -> _mixture.MixtureEval:
        if not self._has_density:
            raise NoDensityError(
                f"{type(self).__name__} is a mixture of Dirac masses and has no density; "
                "its path marginals p_t (t < 1) do: use GaussianPath(...).marginal(target)"
            )
        check_state(x, "x", self.dim)
        one = torch.ones((), dtype=x.dtype, device=x.device)
        return _mixture.evaluate(x, self.params_like(x), one, torch.zeros_like(one))

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` for ``x`` ``(..., d)``; returns ``(...)``."""
        return self._evaluate(x).log_prob

    def score(self, x: Tensor) -> Tensor:
        """``grad_x log p(x)`` ``(..., d)``: ``-sum_k r_k(x) S_k^-1 (x - mu_k)``."""
        return self._evaluate(x).score()


def _covariance_eig(covs: Tensor, K: int, d: int, name: str) -> tuple[Tensor | None, Tensor]:
    """Eigendecomposition of covariances given as ``(K, d, d)``, ``(K, d)`` (diagonal) or ``(K,)``
    (isotropic); checks symmetry and positive definiteness."""
    if covs.shape == (K, d, d):
        if not torch.allclose(covs, covs.transpose(-1, -2), rtol=1e-6, atol=1e-12):
            raise ValueError(f"{name}: covariance matrices must be symmetric")
        lam, Q = torch.linalg.eigh(covs)
        if bool((lam <= 0).any()):
            raise ValueError(f"{name}: covariance matrices must be positive definite")
        return Q, lam
    if covs.shape == (K, d):
        lam = covs
    elif covs.shape == (K,):
        lam = covs.unsqueeze(-1).expand(K, d).clone()
    else:
        raise ValueError(
            f"{name}: expected shape (K, d, d)=({K}, {d}, {d}), (K, d)=({K}, {d}) for diagonal "
            f"or (K,)=({K},) for isotropic covariances, got {tuple(covs.shape)}"
        )
    if bool((lam <= 0).any()):
        raise ValueError(f"{name}: variances must be > 0")
    return None, lam


def _log_weights(weights: object | None, K: int, like: Tensor) -> Tensor:
    if weights is None:
        return torch.full((K,), -math.log(K), dtype=like.dtype, device=like.device)
    w = _as_float_tensor(weights, "weights").to(dtype=like.dtype, device=like.device)
    if w.shape != (K,):
        raise ValueError(f"weights: expected shape (K,)=({K},), got {tuple(w.shape)}")
    if bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError("weights: expected non-negative weights with a positive sum")
    w = w / w.sum()
    return torch.log(w)


class GaussianMixture(Target):
    """``sum_k pi_k N(mu_k, S_k)``.

    Args:
        means: ``(K, d)``.
        covs: ``(K, d, d)`` (symmetric positive definite), ``(K, d)`` (diagonal) or ``(K,)``
            (isotropic variances).
        weights: ``(K,)`` non-negative, normalised to sum 1; ``None`` for uniform.
    """

    def __init__(self, means: object, covs: object, weights: object | None = None) -> None:
        mu = _as_float_tensor(means, "means")
        if mu.dim() != 2:
            raise ValueError(f"means: expected shape (K, d), got {tuple(mu.shape)}")
        K, d = mu.shape
        if K == 0 or d == 0:
            raise ValueError(f"means: expected K >= 1 components of dimension d >= 1, got {(K, d)}")
        c = _as_float_tensor(covs, "covs").to(dtype=mu.dtype, device=mu.device)
        Q, lam = _covariance_eig(c, K, d, "covs")
        super().__init__(MixtureParams(mu, _log_weights(weights, K, mu), Q, lam))

    @property
    def n_components(self) -> int:
        return int(self._params.means.shape[0])

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.n_components}, d={self.dim}, dtype={self.dtype})"


class Gaussian(GaussianMixture):
    """``N(mean, cov)``; ``cov`` is ``(d, d)``, ``(d,)`` (diagonal) or a float (isotropic)."""

    def __init__(self, mean: object, cov: object) -> None:
        mu = _as_float_tensor(mean, "mean")
        if mu.dim() != 1:
            raise ValueError(f"mean: expected shape (d,), got {tuple(mu.shape)}")
        d = mu.shape[0]
        c = _as_float_tensor(cov, "cov").to(dtype=mu.dtype, device=mu.device)
        if c.dim() == 0:
            c = c.reshape(1)
        elif c.shape == (d, d) or c.shape == (d,):
            c = c.unsqueeze(0)
        else:
            raise ValueError(
                f"cov: expected shape (d, d)=({d}, {d}), (d,) or a float, got {tuple(c.shape)}"
            )
        super().__init__(mu.unsqueeze(0), c, None)

    def __repr__(self) -> str:
        return f"Gaussian(d={self.dim}, dtype={self.dtype})"


class Empirical(Target):
    """``(1/N) sum_i delta_{z_i}``: uniform mixture of Dirac masses at ``points`` ``(N, d)``.

    ``sample`` draws data points with replacement; ``log_prob`` and ``score`` raise
    :class:`NoDensityError`. Its path marginals (``S_k = 0``) are exact for ``t < 1``.
    """

    _has_density = False

    def __init__(self, points: object) -> None:
        z = _as_float_tensor(points, "points")
        if z.dim() != 2 or z.shape[0] == 0 or z.shape[1] == 0:
            raise ValueError(f"points: expected shape (N, d) with N, d >= 1, got {tuple(z.shape)}")
        N, d = z.shape
        lam = torch.zeros((1, d), dtype=z.dtype, device=z.device).expand(N, d)
        super().__init__(MixtureParams(z, _log_weights(None, N, z), None, lam))

    @property
    def points(self) -> Tensor:
        return self._params.means

    def __repr__(self) -> str:
        return f"Empirical(N={self.points.shape[0]}, d={self.dim})"
