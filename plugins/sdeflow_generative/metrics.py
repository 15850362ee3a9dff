"""Sample-quality figures used by the demo and the benchmarks: MMD and diversity.

* :func:`mmd` -- the biased (V-statistic) maximum mean discrepancy between two samples with the
  kernel ``k(a, b) = sum_h exp(-|a - b|^2 / (2 h^2))`` over ``bandwidths``:
  ``MMD^2 = mean k(x, x') + mean k(y, y') - 2 mean k(x, y)`` (all pairs, diagonals included, so
  it is >= 0). Two samples of the same law of size n sit at ``O(n^-1/2)``; report a generated
  sample's MMD to held-out data *as a ratio* to the MMD between two held-out data samples.
* :func:`mean_pairwise_distance` -- mean Euclidean distance over distinct pairs of a sample: a
  collapse (all samples alike) drives it to 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

Tensor = torch.Tensor

__all__ = ["mmd", "mean_pairwise_distance", "BANDWIDTHS"]

BANDWIDTHS = (0.1, 0.25, 0.5, 1.0)


def _kernel_mean(a: Tensor, b: Tensor, bandwidths: Sequence[float]) -> float:
    d2 = torch.cdist(a, b).pow(2)
    return float(sum(torch.exp(-d2 / (2.0 * h * h)).mean() for h in bandwidths))


def mmd(x: Tensor, y: Tensor, bandwidths: Sequence[float] = BANDWIDTHS) -> float:
    """Biased MMD (not squared) between ``x`` ``(n, d)`` and ``y`` ``(m, d)`` (module docstring)."""
    for name, v in (("x", x), ("y", y)):
        if not isinstance(v, torch.Tensor) or v.dim() != 2:
            raise ValueError(f"{name}: expected a tensor of shape (n, d)")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"y: expected dimension {x.shape[1]}, got {y.shape[1]}")
    x, y = x.double(), y.double()
    m2 = _kernel_mean(x, x, bandwidths) + _kernel_mean(y, y, bandwidths) - 2.0 * _kernel_mean(
        x, y, bandwidths
    )
    return math.sqrt(max(m2, 0.0))


def mean_pairwise_distance(x: Tensor) -> float:
    """Mean ``|x_i - x_j|`` over pairs ``i != j`` of ``x`` ``(n, ...)`` (flattened per sample)."""
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] < 2:
        raise ValueError("x: expected a tensor of shape (n, ...) with n >= 2")
    f = x.reshape(x.shape[0], -1).double()
    n = f.shape[0]
    return float(torch.cdist(f, f).sum() / (n * (n - 1)))
