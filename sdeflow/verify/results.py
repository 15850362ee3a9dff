"""Result types of the verification kit: orders, moments and tolerance checks."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

Tensor = torch.Tensor
_F64 = torch.float64

Tensor = torch.Tensor
_F64 = torch.float64


@dataclass(frozen=True)
class OrderResult:
    """Result of :func:`ode_order`, :func:`strong_order` or :func:`weak_order`.

    Attributes:
        solver, problem: display names.
        mode: ``"ode"``, ``"strong"``, ``"weak"`` or ``"bias"`` (:func:`bias_order`).
        dts: step sizes ``h_k``; errors: measured errors ``e_k``; std_errors: their Monte Carlo
            standard errors (0 for ODEs).
        order: fitted slope ``p``; ci: ``(lo, hi)`` at level ``ci_level`` by ``ci_method``.
        expected: theoretical order (``None`` when unknown); tolerance: allowed ``|p - expected|``.
        n_paths, seed: Monte Carlo sample size and seed (``None`` for ODEs).
        notes: warnings about the measurement (e.g. errors at round-off level).
        at_least: one-sided criterion (see :attr:`passed`).
    """

    solver: str
    problem: str
    mode: str
    dts: tuple[float, ...]
    errors: tuple[float, ...]
    std_errors: tuple[float, ...]
    order: float
    ci: tuple[float, float]
    ci_level: float
    ci_method: str
    expected: float | None
    tolerance: float
    n_paths: int | None = None
    seed: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    at_least: bool = False

    @property
    def passed(self) -> bool:
        """``|order - expected| <= tolerance``; with ``at_least`` (the ``"bias"`` mode, where a
        scheme may converge faster on a linear problem) ``order >= expected - tolerance``.
        ``True`` when there is no expectation and the order is finite."""
        if self.expected is None:
            return math.isfinite(self.order)
        if self.at_least:
            return bool(self.order >= self.expected - self.tolerance)
        return bool(abs(self.order - self.expected) <= self.tolerance)

    @property
    def local_orders(self) -> tuple[float, ...]:
        """Slopes between consecutive step sizes, ``log(e_k+1/e_k) / log(h_k+1/h_k)``."""
        out = []
        pairs = list(zip(self.dts, self.errors))
        for (h0, e0), (h1, e1) in zip(pairs, pairs[1:]):
            out.append(math.log(e1 / e0) / math.log(h1 / h0) if e0 > 0 and e1 > 0 else math.nan)
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        d["local_orders"] = list(self.local_orders)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    def __str__(self) -> str:
        exp = "?" if self.expected is None else f"{self.expected:g}"
        return (f"{self.solver} on {self.problem} ({self.mode}): order {self.order:.3f} "
                f"[{self.ci[0]:.3f}, {self.ci[1]:.3f}] vs {exp} +- {self.tolerance:g}: "
                f"{'pass' if self.passed else 'FAIL'}")


@dataclass(frozen=True)
class MomentsResult:
    """Result of :func:`moments` (every array a nested list of floats, float64 precision).

    Attributes:
        mean_mc ``[d]``: sample mean; cov_mc ``[d, d]``: mean of ``(x - m*)(x - m*)^T`` about the
            target mean ``m*`` (the estimator tested); mean_se, cov_se: their standard errors.
        mean_exact, cov_exact: moment equations at ``t1``; mean_target, cov_target: exact plus
            the bias (equal to exact when ``bias`` is None).
        z_mean ``[d]``, z_cov ``[d, d]``: ``(estimate - target) / se``.
        statistic: Wald statistic ``n (F - mu)^T S^-1 (F - mu)`` over the ``d + d(d+1)/2``
            features ``F = (x, vech((x - m*)(x - m*)^T))``; asymptotically chi-square with ``dof``
            degrees of freedom under the hypothesis that the targets are the true moments.
        p_value: ``P(chi2_dof >= statistic)``.
        passed: every ``|z| <= n_sigma``.
    """

    solver: str
    problem: str
    t1: float
    steps: int
    n_paths: int
    seed: int
    mean_mc: list[float]
    mean_se: list[float]
    mean_exact: list[float]
    mean_target: list[float]
    cov_mc: list[list[float]]
    cov_se: list[list[float]]
    cov_exact: list[list[float]]
    cov_target: list[list[float]]
    z_mean: list[float]
    z_cov: list[list[float]]
    statistic: float
    dof: int
    p_value: float
    n_sigma: float
    bias: str

    @property
    def max_abs_z(self) -> float:
        zs = [abs(z) for z in self.z_mean] + [abs(z) for row in self.z_cov for z in row]
        return max(zs) if zs else 0.0

    @property
    def passed(self) -> bool:
        return bool(self.max_abs_z <= self.n_sigma)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        d["max_abs_z"] = self.max_abs_z
        return d

    def __str__(self) -> str:
        return (f"{self.solver} on {self.problem} (moments, n={self.n_paths}, steps={self.steps}):"
                f" max|z| {self.max_abs_z:.2f} (<= {self.n_sigma:g}), chi2 {self.statistic:.2f} "
                f"on {self.dof} dof, p = {self.p_value:.3g}: {'pass' if self.passed else 'FAIL'}")

@dataclass
class ToleranceProportionality:
    """Result of :func:`tolerance_proportionality`.

    Attributes:
        solver, problem: what was run.
        tols: the tolerances (``rtol = atol = tol``).
        errors: the max-abs error at the final time against the exact/reference solution.
        nfe: function evaluations of each solve.
        slope: least-squares slope of ``log(error)`` on ``log(tol)`` (ideal: 1; ``p / (p_hat +
            1)`` for a method of order ``p`` with an estimate of order ``p_hat``).
        slope_range: the accepted interval for ``slope``.
        passed: ``slope`` inside ``slope_range`` and every error below ``max_ratio * tol``.
    """

    solver: str
    problem: str
    tols: list[float]
    errors: list[float]
    nfe: list[int]
    slope: float
    slope_range: tuple[float, float]
    max_ratio: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # the expected slope: the window's centre (p / (p_hat + 1) for the default window)
        expected = round(0.5 * (self.slope_range[0] + self.slope_range[1]), 6)
        d.update(mode="tolerance", order=self.slope, expected=expected, ci=(self.slope, self.slope),
                 worst_ratio=max(e / t for e, t in zip(self.errors, self.tols)))
        return d

    def summary(self) -> str:
        status = "PASS" if self.passed else "FAIL"
        return (f"{self.solver} on {self.problem}: error ~ tol^{self.slope:.2f} (expected in "
                f"[{self.slope_range[0]}, {self.slope_range[1]}]), worst error/tol "
                f"{max(e / t for e, t in zip(self.errors, self.tols)):.2g} -> {status}")

@dataclass
class SDEToleranceResult:
    """Result of :func:`sde_tolerance_order`: strong error against the tolerance.

    Attributes:
        solver, problem: what was run.
        tols: the tolerances (``rtol = atol = tol``).
        errors: strong errors ``E|X_T - X_T^tol|`` on one shared path per tolerance.
        steps: accepted steps of each solve.
        order: least-squares slope of ``log(error)`` on ``log(tol)``.
        expected: ``p / (p + 1/2)`` for a scheme of strong order ``p``.
        tolerance: allowed ``|order - expected|``.
        passed: the slope is within ``tolerance`` and the errors fall with the tolerance.
    """

    solver: str
    problem: str
    tols: list[float]
    errors: list[float]
    steps: list[int]
    order: float
    expected: float
    tolerance: float
    n_paths: int
    seed: int
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(mode="sde_tolerance", ci=(self.order, self.order))
        return d
