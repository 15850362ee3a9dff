"""Closed-form Gaussian-mixture algebra shared by the targets and the exact marginals (internal).

A mixture is stored as ``means`` ``(K, d)``, ``log_weights`` ``(K,)`` and each covariance through
its eigendecomposition ``S_k = Q_k diag(lam_k) Q_k^T`` (``Q`` ``(K, d, d)``, or ``None`` when every
``S_k`` is diagonal; ``lam`` ``(K, d)``). The marginal of the Gaussian path at time t is the mixture
(docs/math.md §22)

    p_t(x) = sum_k pi_k N(x; alpha mu_k, C_k),   C_k = alpha^2 S_k + beta^2 I
           = Q_k diag(v_k) Q_k^T,                v_k = alpha^2 lam_k + beta^2,

so with ``delta_k = x - alpha mu_k``, rotated ``y_k = Q_k^T delta_k`` and ``w_k = y_k / v_k``
(``C_k^-1 delta_k = Q_k w_k``), everything is closed form and costs O(K d^2) per point, for a
scalar ``t`` or one ``t`` per point alike:

* log N_k = -(|y_k / sqrt(v_k)|^2 + sum log v_k + d log 2 pi) / 2; responsibilities r = softmax.
* score      = -sum_k r_k Q_k w_k
* E[eps | x] = beta sum_k r_k Q_k w_k                   (Cov(eps, x | k) = beta I)
* E[z | x]   = sum_k r_k (mu_k + alpha Q_k (lam_k w_k)) (Cov(z, x | k) = alpha S_k)
* velocity   = alpha_dot E[z | x] + beta_dot E[eps | x]
             = sum_k r_k (alpha_dot mu_k + Q_k ((alpha_dot alpha lam_k + beta beta_dot) w_k)),
  which uses ``beta beta_dot`` (finite at t = 1 for every schedule) instead of ``beta_dot``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

Tensor = torch.Tensor


# Small problems (K d <= _BLOCK_MAX) rotate with one block-diagonal matmul; reductions over short
# last dimensions use a matmul with a ones vector (much faster than .sum(-1) on CPU for d = 2).
_BLOCK_MAX = 128


@dataclass(frozen=True)
class MixtureParams:
    """Mixture parameters on one dtype/device (see the module docstring)."""

    means: Tensor  # (K, d)
    log_weights: Tensor  # (K,)
    Q: Tensor | None  # (K, d, d) or None (all covariances diagonal)
    lam: Tensor  # (K, d)

    def to(self, like: Tensor) -> MixtureParams:
        """The same parameters on ``like``'s dtype and device."""
        kw = {"dtype": like.dtype, "device": like.device}
        return MixtureParams(
            self.means.to(**kw),
            self.log_weights.to(**kw),
            None if self.Q is None else self.Q.to(**kw),
            self.lam.to(**kw),
        )

    @functools.cached_property
    def blocks(self) -> tuple[Tensor, Tensor] | None:
        """``(blockdiag(Q_k), stack_k Q_k^T)`` ``((K d, K d), (K d, d))`` for small problems."""
        K, d = self.means.shape
        if self.Q is None or K * d > _BLOCK_MAX:
            return None
        return torch.block_diag(*self.Q), self.Q.transpose(-1, -2).reshape(K * d, d)

    @functools.cached_property
    def eye_stack(self) -> Tensor | None:
        """``stack_k I_d`` ``(K d, d)`` (sums over components by one matmul) for small problems."""
        K, d = self.means.shape
        if K * d > _BLOCK_MAX:
            return None
        return torch.eye(d, dtype=self.means.dtype, device=self.means.device).repeat(K, 1)


def _sum_last(a: Tensor) -> Tensor:
    """``a.sum(-1)`` as a matmul with ones (fast for short last dimensions)."""
    return a @ a.new_ones(a.shape[-1])


def _rotate_in(delta: Tensor, p: MixtureParams) -> Tensor:
    """``Q_k^T delta_k`` (as row vectors: ``delta_k Q_k``) for ``delta`` ``(..., K, d)``."""
    if p.Q is None:
        return delta
    blocks = p.blocks
    if blocks is not None:
        return (delta.flatten(-2) @ blocks[0]).view(delta.shape)
    return torch.einsum("...ki,kij->...kj", delta, p.Q)


def _weighted_out(r: Tensor, g: Tensor, p: MixtureParams) -> Tensor:
    """``sum_k r_k Q_k g_k`` ``(..., d)`` for ``r`` ``(..., K)`` and ``g`` ``(..., K, d)``."""
    rg = r.unsqueeze(-1) * g
    if p.Q is None:
        eye = p.eye_stack
        if eye is not None:
            return rg.flatten(-2) @ eye
        return rg.sum(-2)
    blocks = p.blocks
    if blocks is not None:
        return rg.flatten(-2) @ blocks[1]
    return torch.einsum("kij,...kj->...i", p.Q, rg)


@dataclass
class MixtureEval:
    """Intermediate quantities of one evaluation (shapes: ``(..., K)`` or ``(..., K, d)``)."""

    log_prob: Tensor  # log p(x), (...)
    resp: Tensor  # responsibilities r_k(x), (..., K)
    w: Tensor  # rotated C_k^-1 delta_k, (..., K, d)
    params: MixtureParams

    def score(self) -> Tensor:
        return -_weighted_out(self.resp, self.w, self.params)


def evaluate(x: Tensor, params: MixtureParams, alpha: Tensor, beta: Tensor) -> MixtureEval:
    """The mixture ``sum_k pi_k N(alpha mu_k, alpha^2 S_k + beta^2 I)`` at ``x`` ``(..., d)``.

    ``alpha`` and ``beta`` are 0-dim or of shape ``(*x.shape[:-1], 1)``.
    """
    a = alpha.unsqueeze(-1) if alpha.dim() > 0 else alpha  # broadcasts against (..., K, d)
    b = beta.unsqueeze(-1) if beta.dim() > 0 else beta
    delta = x.unsqueeze(-2) - a * params.means
    y = _rotate_in(delta, params)
    v = a * a * params.lam + b * b
    w = y / v
    d = x.shape[-1]
    logn = -0.5 * (_sum_last(y * w) + _sum_last(torch.log(v)) + d * math.log(2.0 * math.pi))
    logits = params.log_weights + logn
    mx = logits.amax(-1, keepdim=True).detach()
    e = torch.exp(logits - mx)
    tot = _sum_last(e).unsqueeze(-1)
    return MixtureEval((mx + torch.log(tot)).squeeze(-1), e / tot, w, params)


def velocity(
    ev: MixtureEval, alpha: Tensor, alpha_dot: Tensor, beta_beta_dot: Tensor
) -> Tensor:
    """``E[alpha_dot z + beta_dot eps | x]`` (module docstring), using ``beta * beta_dot``."""
    a = alpha.unsqueeze(-1) if alpha.dim() > 0 else alpha
    ad = alpha_dot.unsqueeze(-1) if alpha_dot.dim() > 0 else alpha_dot
    c = beta_beta_dot.unsqueeze(-1) if beta_beta_dot.dim() > 0 else beta_beta_dot
    r = ev.resp
    p = ev.params
    return alpha_dot * (r @ p.means) + _weighted_out(r, (ad * a * p.lam + c) * ev.w, p)


def posterior_mean(ev: MixtureEval, alpha: Tensor) -> Tensor:
    """``E[z | x_t = x] = sum_k r_k (mu_k + alpha Q_k (lam_k w_k))``."""
    a = alpha.unsqueeze(-1) if alpha.dim() > 0 else alpha
    r = ev.resp
    p = ev.params
    return r @ p.means + _weighted_out(r, a * p.lam * ev.w, p)


def posterior_eps(ev: MixtureEval, beta: Tensor) -> Tensor:
    """``E[eps | x_t = x] = beta sum_k r_k Q_k w_k`` (= ``-beta * score``)."""
    return beta * _weighted_out(ev.resp, ev.w, ev.params)
