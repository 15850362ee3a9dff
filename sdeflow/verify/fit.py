"""Order fits: least-squares slope of log error on log step, with confidence intervals
(delta method, bootstrap, regression residuals); docs/math.md §10."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

Tensor = torch.Tensor
_F64 = torch.float64

Tensor = torch.Tensor
_F64 = torch.float64


def _normal_quantile(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2))


def _slope_weights(dts: Sequence[float]) -> Tensor:
    x = torch.log(torch.tensor(list(dts), dtype=_F64))
    xc = x - x.mean()
    return xc / (xc * xc).sum()


def fit_order(dts: Sequence[float], errors: Sequence[float]) -> float:
    """Least-squares slope of ``log(errors)`` on ``log(dts)`` (docs/math.md §10.4)."""
    if len(dts) != len(errors) or len(dts) < 2:
        raise ValueError("dts, errors: expected two sequences of equal length >= 2")
    e = torch.tensor(list(errors), dtype=_F64)
    if not bool((e > 0).all()):
        raise ValueError(f"errors: expected positive errors to take logs of, got {list(errors)}")
    return float((_slope_weights(dts) * torch.log(e)).sum())


def _mc_fit(dts: Sequence[float], samples: Tensor, *, absolute: bool, ci_level: float,
            ci_method: str, n_boot: int, seed: int) -> tuple[list[float], list[float], float,
                                                            tuple[float, float]]:
    """Errors, standard errors, slope and interval from per-path samples ``[K, n]``.

    ``absolute=False``: error_k = mean_i samples (strong, samples >= 0);
    ``absolute=True``: error_k = |mean_i samples| (weak, signed differences).
    """
    k, n = samples.shape
    means = samples.mean(1)
    cov = torch.cov(samples) / n if n > 1 else torch.zeros(k, k, dtype=_F64)
    cov = cov.reshape(k, k)
    se = cov.diagonal().clamp_min(0).sqrt()
    errors = means.abs() if absolute else means
    w = _slope_weights(dts)
    if not bool((errors > 0).all()):
        return errors.tolist(), se.tolist(), math.nan, (math.nan, math.nan)
    p = float((w * torch.log(errors)).sum())
    if ci_method == "delta":
        g = w / means  # d p / d mean_k  (sign cancels inside |.|)
        sd = float((g @ cov @ g).clamp_min(0).sqrt())
        z = _normal_quantile(ci_level)
        ci = (p - z * sd, p + z * sd)
    elif ci_method == "bootstrap":
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randint(0, n, (n_boot, n), generator=gen)
        ps = []
        for b in range(0, n_boot, 64):
            m = samples[:, idx[b:b + 64]].mean(-1)  # [K, B]
            m = m.abs() if absolute else m
            ps.append((w.view(-1, 1) * torch.log(m.clamp_min(1e-300))).sum(0))
        pb = torch.cat(ps)
        lo, hi = torch.quantile(pb, torch.tensor([0.5 - ci_level / 2, 0.5 + ci_level / 2],
                                                 dtype=_F64)).tolist()
        ci = (lo, hi)
    else:
        raise ValueError(f"ci_method: expected 'delta' or 'bootstrap', got {ci_method!r}")
    return errors.tolist(), se.tolist(), p, ci

def regression_fit(dts: Sequence[float], errors: Sequence[float], ci_level: float = 0.95
                   ) -> tuple[float, tuple[float, float]]:
    """``(order, (lo, hi))``: the slope of ``log(error)`` on ``log(dt)`` and its Student-t
    interval from the residuals of the straight-line fit (deterministic errors; docs/math.md
    §10.4)."""
    if any(not e > 0 for e in errors):
        return math.nan, (math.nan, math.nan)
    p = fit_order(dts, errors)
    k = len(dts)
    if k <= 2:
        return p, (p, p)
    from scipy.stats import t as student_t

    x = torch.log(torch.tensor(list(dts), dtype=_F64))
    y = torch.log(torch.tensor(list(errors), dtype=_F64))
    xc = x - x.mean()
    intercept = y.mean() - p * x.mean()
    rss = float(((y - intercept - p * x) ** 2).sum())
    sd = math.sqrt(rss / (k - 2) / float((xc * xc).sum()))
    q = float(student_t.ppf(0.5 + ci_level / 2, k - 2))
    return p, (p - q * sd, p + q * sd)


_regression_fit = regression_fit  # the name the verify modules use
