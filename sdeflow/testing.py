"""A verification kit for *your* solvers: hypothesis strategies and assertion helpers.

Strategies (need ``hypothesis``, installed with ``pip install sdeflow[dev]``) draw random
problems with known solutions from :mod:`sdeflow.analytic`:

* :func:`stable_matrices` -- ``[d, d]`` float64 matrices ``A = S - L L^T / 2 - c I`` with ``S``
  skew-symmetric: the symmetric part is ``<= -c I``, so every eigenvalue has real part ``<= -c``
  and ``|expm(tA)|_2 <= e^{-ct}`` (contractive, "stable").
* :func:`linear_odes`, :func:`ou_processes`, :func:`linear_sdes`, :func:`gbms`.

Helpers, pointing :mod:`sdeflow.verify` at a solver given as a registered name, a solver class or
an instance (e.g. your own ``RungeKutta`` subclass or ``Solver`` subclass):

* :func:`assert_order` -- measured order within ``tolerance`` of the theoretical one;
* :func:`assert_moments` -- Monte Carlo mean/covariance within ``n_sigma`` standard errors of the
  moment equations (plus the scheme's exact bias).

Both raise ``AssertionError`` with the whole measurement in the message, and return the result.

Example::

    from hypothesis import given, settings
    import sdeflow.testing as sft

    def test_my_solver_order():
        sft.assert_order(MySolver(), expected=2.0)

    @settings(max_examples=10, deadline=None)
    @given(sft.linear_sdes(dim=(1, 3)))
    def test_my_solver_moments(sde):
        sft.assert_moments(MySolver(), sde, n_paths=20000, seed=0)
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .verify import moment_checks as _vmoments
from .verify import ode as _vode
from .verify import references as _an
from .verify import sde_order as _vsde
from .verify.arguments import _solver_info
from .verify.results import MomentsResult, OrderResult
from .verify.suite import _fits, default_suite

Tensor = torch.Tensor
Range = tuple[float, float]

__all__ = [
    "stable_matrices",
    "linear_odes",
    "ou_processes",
    "linear_sdes",
    "gbms",
    "assert_order",
    "assert_moments",
]


def _st() -> Any:
    try:
        from hypothesis import strategies as st
    except ImportError as exc:  # pragma: no cover - hypothesis is a dev dependency
        raise ImportError("sdeflow.testing strategies need hypothesis: pip install hypothesis") \
            from exc
    return st


def _dims(dim: int | tuple[int, int], name: str = "dim") -> Any:
    st = _st()
    if isinstance(dim, int) and not isinstance(dim, bool):
        if dim < 1:
            raise ValueError(f"{name}: expected a positive int, got {dim}")
        return st.just(dim)
    try:
        lo, hi = dim
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected an int or a (min, max) pair, got {dim!r}") from None
    if not (isinstance(lo, int) and isinstance(hi, int) and not isinstance(lo, bool)
            and not isinstance(hi, bool) and 1 <= lo <= hi):
        raise ValueError(f"{name}: expected 1 <= min <= max, got {dim!r}")
    return st.integers(lo, hi)


def _bounds(rng: Range, name: str, *, lower: float | None = None,
            strict: bool = False) -> tuple[float, float]:
    """``(lo, hi)`` finite numbers with ``lo <= hi`` (and ``lo > lower`` / ``>= lower``)."""
    if isinstance(rng, (str, bytes)):
        raise ValueError(f"{name}: expected a (min, max) pair of numbers, got {rng!r}")
    try:
        lo, hi = rng
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a (min, max) pair of numbers, got {rng!r}") from None
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in (lo, hi)):
        raise ValueError(f"{name}: expected a (min, max) pair of numbers, got {rng!r}")
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"{name}: expected finite bounds with min <= max, got {rng!r}")
    if lower is not None and (lo <= lower if strict else lo < lower):
        rel = ">" if strict else ">="
        raise ValueError(f"{name}: expected a lower bound {rel} {lower:g}, got {rng!r}")
    return lo, hi


def _floats(rng: Range, name: str, *, lower: float | None = None, strict: bool = False) -> Any:
    """A float strategy on ``rng``, checked here (not when hypothesis first draws)."""
    st = _st()
    lo, hi = _bounds(rng, name, lower=lower, strict=strict)
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def _matrix(d: int, lo: float = -1.0, hi: float = 1.0) -> Any:
    st = _st()
    return st.lists(st.floats(lo, hi, allow_nan=False, allow_infinity=False),
                    min_size=d * d, max_size=d * d).map(
        lambda v: torch.tensor(v, dtype=torch.float64).reshape(d, d))


def stable_matrices(dim: int | tuple[int, int] = (1, 4), decay: Range = (0.1, 1.0),
                    rotation: Range = (0.0, 2.0)) -> Any:
    """Strategy for ``[d, d]`` float64 stable matrices ``A = w (M - M^T)/2 - L L^T / 2 - c I``.

    ``M, L`` have entries in ``[-1, 1]``, ``c`` is drawn from ``decay`` (> 0) and ``w`` from
    ``rotation``. The symmetric part of ``A`` is ``-(L L^T/2 + c I) <= -c I``, hence
    ``Re lambda(A) <= -c`` and ``|expm(tA)|_2 <= e^{-ct}``; ``|A|_2 <= w d + d/2 + c``.
    """
    st = _st()
    c_st = _floats(decay, "decay", lower=0.0, strict=True)
    w_st = _floats(rotation, "rotation")
    dims = _dims(dim)

    @st.composite
    def build(draw: Any) -> Tensor:
        d = draw(dims)
        m, lm = draw(_matrix(d)), draw(_matrix(d))
        c, w = draw(c_st), draw(w_st)
        return w * (m - m.T) / 2 - lm @ lm.T / 2 - c * torch.eye(d, dtype=torch.float64)

    return build()


def linear_odes(dim: int | tuple[int, int] = (1, 4), decay: Range = (0.1, 1.0),
                rotation: Range = (0.0, 2.0)) -> Any:
    """Strategy for :class:`~sdeflow.analytic.LinearODE` with a :func:`stable_matrices` ``A``."""
    return stable_matrices(dim, decay, rotation).map(_an.LinearODE)


def ou_processes(theta: Range = (0.2, 3.0), sigma: Range = (0.1, 2.0), mu: Range = (-2.0, 2.0),
                 dim: int | tuple[int, int] = 1) -> Any:
    """Strategy for :class:`~sdeflow.analytic.OrnsteinUhlenbeck` (``theta > 0``)."""
    st = _st()
    return st.builds(
        lambda th, sg, m, d: _an.OrnsteinUhlenbeck(th, sg, m, dim=d),
        _floats(theta, "theta", lower=0.0, strict=True), _floats(sigma, "sigma", lower=0.0),
        _floats(mu, "mu"), _dims(dim),
    )


def linear_sdes(dim: int | tuple[int, int] = (1, 3), noise: str | tuple[str, ...] =
                ("additive", "general"), m: int | tuple[int, int] = (1, 3),
                decay: Range = (0.1, 1.0), rotation: Range = (0.0, 2.0),
                scale: Range = (0.1, 1.0)) -> Any:
    """Strategy for :class:`~sdeflow.analytic.LinearSDE` ``dX = (A X + a) dt + B dW``.

    ``A`` from :func:`stable_matrices`; ``a`` entries in ``[-1, 1]``; ``B`` entries of absolute
    value in ``scale`` with random signs: ``[d]`` for ``noise="additive"``, ``[d, m]`` for
    ``"general"`` (``m`` Brownian motions).
    """
    st = _st()
    if not isinstance(noise, (str, tuple, list)):
        raise ValueError(f"noise: expected 'additive', 'general' or a tuple of them, got "
                         f"{noise!r}")
    kinds = (noise,) if isinstance(noise, str) else tuple(noise)
    if not kinds:
        raise ValueError("noise: expected at least one of 'additive', 'general', got ()")
    for k in kinds:
        if k not in ("additive", "general"):
            raise ValueError(f"noise: expected 'additive' and/or 'general', got {k!r}")
    mag = _floats(scale, "scale", lower=0.0)
    sign = st.sampled_from((-1.0, 1.0))
    ms = _dims(m, "m")
    mats = stable_matrices(dim, decay, rotation)  # checks dim, decay, rotation now

    @st.composite
    def build(draw: Any) -> _an.LinearSDE:
        a_mat = draw(mats)
        d = a_mat.shape[0]
        a = draw(st.lists(st.floats(-1, 1, allow_nan=False), min_size=d, max_size=d))
        kind = draw(st.sampled_from(kinds))
        count = d if kind == "additive" else d * draw(ms)
        vals = draw(st.lists(st.tuples(mag, sign), min_size=count, max_size=count))
        b = torch.tensor([v * s for v, s in vals], dtype=torch.float64)
        b = b.reshape(d) if kind == "additive" else b.reshape(d, -1)
        return _an.LinearSDE(a_mat, a, b)

    return build()


def gbms(mu: Range = (-1.0, 1.0), sigma: Range = (0.1, 1.0)) -> Any:
    """Strategy for :class:`~sdeflow.analytic.GeometricBrownianMotion`."""
    st = _st()
    return st.builds(_an.GeometricBrownianMotion, _floats(mu, "mu"),
                     _floats(sigma, "sigma", lower=0.0))


# ----------------------------------------------------------------------------- assertions
def _describe(res: Any) -> str:
    lines = [str(res)]
    if isinstance(res, OrderResult):
        lines.append("  dt      error      std.err")
        for h, e, s in zip(res.dts, res.errors, res.std_errors):
            lines.append(f"  {h:<7.4g} {e:<10.4g} {s:.3g}")
        lines.append(f"  local orders: {', '.join(f'{p:.3f}' for p in res.local_orders)}")
        if res.n_paths is not None:
            lines.append(f"  n_paths={res.n_paths}, seed={res.seed}, CI by {res.ci_method}")
    else:
        lines.append(f"  mean: MC {res.mean_mc} target {res.mean_target} z {res.z_mean}")
        lines.append(f"  cov:  MC {res.cov_mc} target {res.cov_target} z {res.z_cov}")
        lines.append(f"  n_paths={res.n_paths}, seed={res.seed}, steps={res.steps}, "
                     f"bias={res.bias}")
    lines.extend(f"  note: {n}" for n in getattr(res, "notes", ()))
    return "\n".join(lines)


def assert_order(
    solver: Any,
    reference: Any = None,
    *,
    mode: str | None = None,
    expected: float | None = None,
    tolerance: float = 0.15,
    **kwargs: Any,
) -> OrderResult:
    """Assert that ``solver`` converges at its order on an exact solution.

    Args:
        solver: name, class or instance (ODE or SDE solver).
        reference: an :mod:`sdeflow.analytic` problem. Defaults (those of ``sdeflow verify``):
            ODE solvers -- :func:`sdeflow.verify.default_linear_ode`; SDE solvers, strong -- GBM
            (mu=1, sigma=1) if the solver fits diagonal noise, else ``dX = -sin X dt + 2 dW``;
            weak -- GBM(mu=0.5, sigma=0.5).
        mode: ``"strong"`` (default for SDE solvers) or ``"weak"``; ignored for ODE solvers.
        expected: theoretical order (default: what the solver declares).
        tolerance: allowed ``|measured - expected|``.
        **kwargs: passed to :func:`~sdeflow.verify.ode_order`,
            :func:`~sdeflow.verify.strong_order` or :func:`~sdeflow.verify.weak_order`
            (``dts``/``steps``, ``n_paths``, ``seed``, ...). Defaults of the step sizes and
            sample sizes follow the chosen default reference.

    Returns:
        the :class:`~sdeflow.verify.OrderResult`; raises ``AssertionError`` if it did not pass.
    """
    inst, _ = _solver_info(solver)
    if mode is not None and mode not in ("strong", "weak"):
        raise ValueError(f"mode: expected 'strong' or 'weak', got {mode!r}")
    if not inst.caps.sde:
        res: Any = _vode.ode_order(inst, reference, expected=expected, tolerance=tolerance,
                                     **kwargs)
    else:
        mode = "strong" if mode is None else mode
        cfg = default_suite()
        if mode == "strong":
            if reference is None:
                key = "gbm" if _fits(inst, cfg["gbm"]) else "additive"
                reference = cfg[key]
                kwargs.setdefault("dts", cfg[key + "_dts"])
                kwargs.setdefault("n_paths", cfg[key + "_paths"])
            res = _vsde.strong_order(inst, reference, expected=expected, tolerance=tolerance,
                                       **kwargs)
        elif mode == "weak":
            if reference is None:
                reference = cfg["gbm_weak"]
                kwargs.setdefault("dts", cfg["weak_dts"])
                kwargs.setdefault("n_paths", cfg["weak_paths"])
            res = _vsde.weak_order(inst, reference, expected=expected, tolerance=tolerance,
                                     **kwargs)
        else:
            raise ValueError(f"mode: expected 'strong' or 'weak', got {mode!r}")
    if not res.passed:
        raise AssertionError("order check failed:\n" + _describe(res))
    return res


def assert_moments(
    solver: Any,
    reference: Any = None,
    *,
    n_sigma: float = 4.0,
    min_p_value: float | None = None,
    bias: Any = "auto",
    **kwargs: Any,
) -> MomentsResult:
    """Assert that Monte Carlo mean and covariance match the moment equations.

    Args:
        solver: name, class or instance of an SDE solver.
        reference: an :mod:`sdeflow.analytic` SDE with moments (default: the 2-d LinearSDE of
            ``sdeflow verify``, or its diagonal-noise version if the solver lacks general noise).
        n_sigma: every mean / covariance entry within ``n_sigma`` standard errors of its target.
        min_p_value: if given, also require the Wald chi-square p-value ``>= min_p_value``.
        bias: ``"auto"`` (default) -- the scheme's exact bias
            (:func:`sdeflow.verify.discrete_moments`) when the reference is linear and the
            solver is a fixed-step SDE solver, else none. With a scheme bias the helper first
            checks (:func:`sdeflow.verify.bias_order`, exact) that the scheme's discrete moments
            converge to the moment equations at its weak order: otherwise a wrong but
            self-consistent scheme would pass;
            or anything :func:`sdeflow.verify.moments` accepts (``None``, ``"scheme"``, a tuple).
        **kwargs: ``t1``, ``steps``, ``n_paths``, ``seed``, ``x0``, ``dtype``, ``device``.

    Returns:
        the :class:`~sdeflow.verify.MomentsResult`; raises ``AssertionError`` if it did not pass.
    """
    inst, _ = _solver_info(solver)
    if min_p_value is not None and (isinstance(min_p_value, bool)
                                    or not isinstance(min_p_value, (int, float))
                                    or not 0 <= min_p_value < 1):
        raise ValueError(f"min_p_value: expected None or a number in [0, 1), got "
                         f"{min_p_value!r}")
    if reference is None:
        lin = default_suite()["linear"]
        if not _fits(inst, lin):
            lin = _an.LinearSDE(lin.A, lin.a, torch.diagonal(lin.B_matrix).clone())
        reference = lin
    if isinstance(bias, str) and bias == "auto":
        linear = isinstance(reference, (_an.LinearSDE, _an.OrnsteinUhlenbeck))
        fixed_step = inst.caps.sde and not inst.caps.adaptive
        bias = "scheme" if linear and fixed_step else None
    if isinstance(bias, str) and bias == "scheme":
        # the scheme's own recursion is only a fair target if it converges to the moment
        # equations: check that first (exact, no Monte Carlo)
        n = kwargs.get("steps", 64)
        x0 = kwargs.get("x0")
        conv = _vmoments.bias_order(inst, reference, (n, 2 * n, 4 * n, 8 * n),
                                  t1=kwargs.get("t1", 1.0),
                                  x0=None if x0 is None else x0.to(torch.float64).cpu())
        if not conv.passed:
            raise AssertionError(
                "moment check failed: the scheme's exact discrete moments do not converge to "
                "the moment equations at its weak order:\n" + _describe(conv))
    res = _vmoments.moments(inst, reference, n_sigma=n_sigma, bias=bias, **kwargs)
    ok = res.passed and (min_p_value is None or res.p_value >= min_p_value)
    if not ok:
        extra = "" if min_p_value is None else f" (required p >= {min_p_value:g})"
        raise AssertionError("moment check failed" + extra + ":\n" + _describe(res))
    return res
