"""Adapters that turn a model of a Gaussian path into a core ``sf.ODE`` / ``sf.SDE``.

The fields are those of docs/math.md §23.

Nothing here steps in time: solve the returned problems with ``sdeflow.solve``. A ``model`` is any
callable ``model(x, t, **cond)`` returning the parameterization ``param`` (``"velocity"``,
``"score"``, ``"eps"`` or ``"x0"``; by default the model's declared ``param``) with ``x``
``(..., d)`` and ``t`` of shape ``x.shape[:-1]``; the adapters broadcast the core's 0-dim ``t`` to
that shape before calling it, and pass ``cond`` (e.g. ``{"y": labels}``) at every call (see
:mod:`sdeflow_generative.models`). An
:class:`~sdeflow_generative.paths.ExactMarginal`'s methods are such models (no training needed).

Time spans and their defaults
-----------------------------
Each field has a ``t_span`` attribute, the interval on which it is finite, to pass to ``solve``:
``(0.0, 1.0)`` unless the chosen parameterization (or the SDE's coefficients) is singular at an end,
in which case that end moves in by ``t_eps`` (default ``1e-3``). For example, with ``CondOT``:

===================================================  ===================
field                                                default ``t_span``
===================================================  ===================
``ProbabilityFlowODE(param="velocity")``             ``(0, 1)``
``ProbabilityFlowODE(param="score" or "eps")``       ``(1e-3, 1)``
``ProbabilityFlowODE(param="x0")``                   ``(0, 1 - 1e-3)``
``DiffusionSDE(eta=...)`` (needs ``alpha_t > 0``)    ``(1e-3, 1)``
``DiffusionSDE(sigma=..., param="velocity")``        ``(0, 1 - 1e-3)``
===================================================  ===================

With ``VariancePreserving`` (``alpha_0 > 0``) the start stays at 0. Stopping early at
``t = 1 - eps`` gives samples of ``p_{1-eps}``, not of ``p_1``; starting late at ``t = eps`` needs
samples of ``p_eps``, which ``N(0, I)`` only approximates (the ``eta > 0`` SDEs forget that error
quickly).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

import sdeflow as sf

from ._utils import expand_time
from .models import Model, call_model, check_cond, resolve_param
from .paths import GaussianPath
from .targets import Target

Tensor = torch.Tensor

__all__ = ["ProbabilityFlowODE", "DiffusionSDE", "Langevin", "default_t_span"]


def _check_common(path: object, model: object, param: str | None) -> str:
    if not isinstance(path, GaussianPath):
        raise TypeError(f"path: expected a GaussianPath, got {type(path).__name__}")
    return resolve_param(model, param)


def _check_t_eps(t_eps: object) -> float:
    if isinstance(t_eps, bool) or not isinstance(t_eps, (int, float)):
        raise TypeError(f"t_eps: expected a float in (0, 0.5), got {type(t_eps).__name__}")
    if not 0.0 < float(t_eps) < 0.5:
        raise ValueError(f"t_eps: expected a float in (0, 0.5), got {t_eps}")
    return float(t_eps)


def default_t_span(singular_at_0: bool, singular_at_1: bool, t_eps: float) -> tuple[float, float]:
    """``(t_eps if singular_at_0 else 0, 1 - t_eps if singular_at_1 else 1)``."""
    return (t_eps if singular_at_0 else 0.0, 1.0 - t_eps if singular_at_1 else 1.0)


def _call_model(model: Model, x: Tensor, t: Tensor, cond: dict[str, Any]) -> Tensor:
    return call_model(model, x, expand_time(t, x), cond)


class ProbabilityFlowODE(sf.ODE):
    """Probability-flow ODE ``dx/dt = u_t(x)`` of a model (docs/math.md §23, sigma = 0).

    ``u_t`` is ``model(x, t)`` converted from ``param`` to the velocity with
    :meth:`GaussianPath.convert`. Solving from ``x ~ p_0`` over ``t_span`` gives samples of ``p_1``.

    Args:
        path: the :class:`GaussianPath` the model belongs to.
        model: ``model(x, t, **cond)`` -> ``param`` field, ``x`` ``(..., d)``, ``t``
            ``x.shape[:-1]`` (see :mod:`sdeflow_generative.models`).
        param: ``"velocity"``, ``"score"``, ``"eps"`` or ``"x0"``; default: the model's declared
            ``param``, else ``"velocity"``.
        cond: keyword arguments passed to the model at every call, e.g. ``{"y": labels}`` with
            ``labels`` ``(B,)`` for a batch ``x`` ``(B, d)``; they reach the model unchanged
            through every core solver.
        t_eps: how far ``t_span`` stays from an end where the conversion is singular.

    Attributes:
        t_span: ``(t_start, t_end)`` default interval (module docstring).
    """

    def __init__(
        self,
        path: GaussianPath,
        model: Model,
        param: str | None = None,
        *,
        cond: Mapping[str, Any] | None = None,
        t_eps: float = 1e-3,
    ) -> None:
        self.param = _check_common(path, model, param)
        self.path = path
        self.model = model
        self.cond = check_cond(cond)
        self.t_eps = _check_t_eps(t_eps)
        self.t_span = default_t_span(*path.singular_ends(self.param, "velocity"), self.t_eps)
        super().__init__()

    def velocity(self, x: Tensor, t: Tensor) -> Tensor:
        """``u_t(x)`` ``(..., d)`` for a 0-dim (or ``x.shape[:-1]``) ``t``."""
        out = _call_model(self.model, x, t, self.cond)
        if self.param == "velocity":
            return out
        return self.path.convert(out, x, t, self.param, "velocity")

    def vector_field(self, t: Tensor, x: Tensor) -> Tensor:
        """Core convention ``u(t, x)``: ``t`` 0-dim, ``x`` ``(..., d)``."""
        return self.velocity(x, t)

    def __repr__(self) -> str:
        return f"ProbabilityFlowODE({self.path!r}, param={self.param!r}, t_span={self.t_span})"


class DiffusionSDE(sf.SDE):
    """SDE ``dX = [u_t(X) + sigma_t^2 / 2 s_t(X)] dt + sigma_t dW`` (docs/math.md §23).

    Its marginals are those of the path: ``X_t ~ p_t``.

    Give exactly one of

    * ``sigma``: a callable ``sigma(t)`` (0-dim ``t`` -> float or tensor ``>= 0``) or a constant
      float; the drift is ``u + sigma_t^2 / 2 s`` with ``u`` and ``s`` converted from ``param``;
    * ``eta >= 0``: the eta-family ``sigma_t^2 = 2 eta b_t``, ``b_t = beta^2 alpha_dot / alpha -
      beta beta_dot``. Since ``u = b s + (alpha_dot / alpha) x``, the drift is written
      ``(1 + eta) u - eta (alpha_dot / alpha) x``: no division by ``beta``, so it is finite up to
      ``t = 1`` whenever ``u`` is. It needs ``alpha_t > 0``. ``eta = 0`` is the probability-flow
      ODE; ``eta = 1`` the time reversal of the forward noising SDE.

    Noise type ``"additive"`` (``sigma`` depends on ``t`` only), Ito. ``diffusion`` returns
    ``sigma_t`` broadcast to ``x``'s shape ``(..., d)``.

    Args:
        path, model, param, cond, t_eps: as :class:`ProbabilityFlowODE`.
        sigma: callable or float, see above.
        eta: float, see above.

    Attributes:
        t_span: default interval (module docstring); for the eta-family with ``alpha_0 = 0`` it
            starts at ``t_eps``.
    """

    noise = "additive"
    kind = "ito"

    def __init__(
        self,
        path: GaussianPath,
        model: Model,
        param: str | None = None,
        sigma: Callable[[Tensor], Tensor | float] | float | None = None,
        eta: float | None = None,
        *,
        cond: Mapping[str, Any] | None = None,
        t_eps: float = 1e-3,
    ) -> None:
        self.param = _check_common(path, model, param)
        self.path = path
        self.model = model
        self.cond = check_cond(cond)
        self.t_eps = _check_t_eps(t_eps)
        if (sigma is None) == (eta is None):
            raise ValueError("sigma, eta: give exactly one of sigma (callable or float) and eta")
        self.eta: float | None = None
        self.sigma: Callable[[Tensor], Tensor | float] | None = None
        if eta is not None:
            if isinstance(eta, bool) or not isinstance(eta, (int, float)):
                raise TypeError(f"eta: expected a float >= 0, got {type(eta).__name__}")
            if not (math.isfinite(eta) and eta >= 0):
                raise ValueError(f"eta: expected a finite float >= 0, got {eta}")
            self.eta = float(eta)
            at0, at1 = path.singular_ends(self.param, "velocity")
            at0 = at0 or path.singular_ends("score", "velocity")[0]  # alpha_0 = 0
        else:
            if isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
                if not (math.isfinite(sigma) and sigma >= 0):
                    raise ValueError(f"sigma: expected a finite float >= 0, got {sigma}")
                const = float(sigma)
                self.sigma = lambda t: const
            elif callable(sigma):
                self.sigma = sigma
            else:
                raise TypeError(
                    f"sigma: expected a callable sigma(t) or a float, got {type(sigma).__name__}"
                )
            u0, u1 = path.singular_ends(self.param, "velocity")
            s0, s1 = path.singular_ends(self.param, "score")
            at0, at1 = u0 or s0, u1 or s1
        self.t_span = default_t_span(at0, at1, self.t_eps)
        super().__init__()

    def sigma_t(self, t: Tensor | float) -> Tensor:
        """``sigma_t`` with ``t``'s shape/dtype/device (``sqrt(2 eta b_t)`` for the eta-family)."""
        t = t if isinstance(t, torch.Tensor) else torch.as_tensor(float(t))
        if self.sigma is not None:
            return torch.as_tensor(self.sigma(t), dtype=t.dtype, device=t.device).expand(t.shape)
        eta = 0.0 if self.eta is None else self.eta
        if eta == 0.0:
            return torch.zeros_like(t)
        k = self.path.coefficients(t, t.unsqueeze(-1))
        self.path._raise_if(k, ("alpha",), "DiffusionSDE(eta=...) sigma_t")
        b = (k.D / k.alpha).clamp_min(0.0)  # b_t = beta^2 alpha_dot / alpha - beta beta_dot
        return torch.sqrt(2.0 * eta * b).reshape(t.shape)

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        """``u + sigma_t^2 / 2 s`` (sigma) or ``(1 + eta) u - eta (alpha_dot / alpha) x`` (eta)."""
        out = _call_model(self.model, x, t, self.cond)
        u = out
        if self.param != "velocity":
            u = self.path.convert(out, x, t, self.param, "velocity")
        if self.eta is not None:
            if self.eta == 0.0:
                return u
            k = self.path.coefficients(t, x)
            self.path._raise_if(k, ("alpha",), "DiffusionSDE(eta=...) drift")
            return (1.0 + self.eta) * u - self.eta * (k.alpha_dot / k.alpha) * x
        s = out if self.param == "score" else self.path.convert(out, x, t, self.param, "score")
        sig = self.sigma_t(t.to(dtype=x.dtype, device=x.device))
        return u + 0.5 * sig * sig * s

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        """``sigma_t`` broadcast to ``x``'s shape ``(..., d)``."""
        sig = self.sigma_t(t.to(dtype=x.dtype, device=x.device))
        return sig * torch.ones_like(x)

    def __repr__(self) -> str:
        how = f"eta={self.eta}" if self.eta is not None else "sigma=<callable>"
        return f"DiffusionSDE({self.path!r}, param={self.param!r}, {how}, t_span={self.t_span})"


class Langevin(sf.SDE):
    """Langevin dynamics ``dX = sigma^2 / 2 grad log p(X) dt + sigma dW`` for a static ``p``.

    ``p`` is its stationary law (docs/math.md §8.6). Noise ``"additive"``, Ito; run it over any
    ``t_span`` (e.g. ``(0, T)``), long enough to mix.

    Args:
        score: callable ``score(x, **cond)`` ``(..., d) -> (..., d)``, or a target with a
            ``score`` method (e.g. a :class:`~sdeflow_generative.targets.GaussianMixture`).
        sigma: noise level ``> 0``.
        cond: keyword arguments passed to ``score`` at every call.
    """

    noise = "additive"
    kind = "ito"

    def __init__(
        self,
        score: Callable[..., Tensor] | Target,
        sigma: float = 1.0,
        *,
        cond: Mapping[str, Any] | None = None,
    ) -> None:
        fn = score.score if isinstance(score, Target) else score
        if not callable(fn):
            raise TypeError(
                f"score: expected a callable score(x) or a target, got {type(score).__name__}"
            )
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
            raise TypeError(f"sigma: expected a float > 0, got {type(sigma).__name__}")
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma: expected a finite float > 0, got {sigma}")
        self.score = fn
        self.sigma = float(sigma)
        self.cond = check_cond(cond)
        super().__init__()

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        """``sigma^2 / 2 * score(x)``."""
        s = self.score(x, **self.cond)
        if not isinstance(s, torch.Tensor) or s.shape != x.shape:
            raise ValueError(f"score: expected an output of x's shape {tuple(x.shape)}")
        return (0.5 * self.sigma * self.sigma) * s

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        """``sigma`` broadcast to ``x``'s shape."""
        return torch.full_like(x, self.sigma)

    def __repr__(self) -> str:
        return f"Langevin(sigma={self.sigma})"
