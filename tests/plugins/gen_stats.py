"""Statistics helpers for the generative-plugin tests (two-sample MMD, moment z-scores)."""

from __future__ import annotations

import torch

Tensor = torch.Tensor

BANDWIDTHS = (0.5, 1.0, 2.0)


def _kernel_sum(a: Tensor, b: Tensor, exclude_diagonal: bool = False) -> float:
    """``sum_ij k(a_i, b_j)`` for ``k = sum_h exp(-|a - b|^2 / (2 h^2))``, h in (0.5, 1, 2).

    One exp per entry: with ``e = exp(-r^2 / 8)`` (h = 2), h = 1 is ``e^4`` and h = 0.5 ``e^16``.
    """
    d2 = (a.pow(2).sum(-1, keepdim=True) + b.pow(2).sum(-1) - 2.0 * a @ b.T).clamp_min_(0.0)
    e2 = torch.exp(d2.mul_(-1.0 / 8.0))
    total = e2.sum()
    e2 = e2.mul_(e2).mul_(e2)  # two in-place squarings: e^4
    total = total + e2.sum()
    e2 = e2.mul_(e2).mul_(e2)  # e^16
    total = total + e2.sum()
    if exclude_diagonal:
        total = total - 3.0 * a.shape[0]
    return float(total)


def mmd2(x: Tensor, y: Tensor, yy: float | None = None) -> float:
    """Unbiased squared MMD between samples ``x`` ``(n, d)`` and ``y`` ``(m, d)``.

    Kernel: the sum of Gaussian kernels ``exp(-|a - b|^2 / (2 h^2))`` over ``BANDWIDTHS``
    (characteristic, so MMD = 0 iff the laws agree). ``yy`` may pass the precomputed
    ``_kernel_sum(y, y, exclude_diagonal=True)`` when ``y`` is a fixed reference.
    """
    n, m = x.shape[0], y.shape[0]
    if yy is None:
        yy = _kernel_sum(y, y, exclude_diagonal=True)
    sxx = _kernel_sum(x, x, exclude_diagonal=True) / (n * (n - 1))
    return sxx + yy / (m * (m - 1)) - 2.0 * _kernel_sum(x, y) / (n * m)


def moment_zscores(x: Tensor, mean: Tensor, cov: Tensor, fourth: Tensor) -> tuple[Tensor, Tensor]:
    """z-scores of the sample mean ``(d,)`` and sample covariance ``(d, d)`` of ``x`` ``(n, d)``.

    ``fourth[i, j] = Var[(X_i - m_i)(X_j - m_j)]`` under the law being tested against (estimated
    once from a large exact sample). SE of the mean: ``sqrt(cov_ii / n)``; SE of a covariance
    entry: ``sqrt(fourth_ij / n)`` (the CLT for sample covariances).
    """
    n = x.shape[0]
    zm = (x.mean(0) - mean) / torch.sqrt(torch.diagonal(cov) / n)
    zc = (torch.cov(x.T) - cov) / torch.sqrt(fourth / n)
    return zm, zc


def fourth_moments(x: Tensor) -> Tensor:
    """``Var[(X_i - m_i)(X_j - m_j)]`` ``(d, d)`` estimated from a sample ``x`` ``(n, d)``."""
    xc = x - x.mean(0)
    prod = xc.unsqueeze(-1) * xc.unsqueeze(-2)
    return prod.var(0)


def excess_kurtosis(v: Tensor) -> float:
    """Sample excess kurtosis of a flat sample (0 for a Gaussian; SE ``sqrt(24 / n)``)."""
    v = v.reshape(-1)
    c = v - v.mean()
    m2 = c.pow(2).mean()
    return float(c.pow(4).mean() / (m2 * m2) - 3.0)
