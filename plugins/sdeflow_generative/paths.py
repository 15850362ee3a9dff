"""Gaussian probability paths: conditional fields, conversions, exact marginals.

The formulas are docs/math.md §20-§22.

A :class:`GaussianPath` wraps a schedule ``(alpha_t, beta_t)``; the conditional path is
``p_t(x|z) = N(alpha_t z, beta_t^2 I)``, sampled as ``x = alpha_t z + beta_t eps``. Shapes: states
``x``, ``z``, ``eps`` are ``(..., d)``; ``t`` is a float, a 0-dim tensor, or a tensor of shape
``x.shape[:-1]`` (``(*x.shape[:-1], 1)`` is accepted too). Results have ``x``'s dtype/device.

Conversions (:meth:`GaussianPath.convert`)
-------------------------------------------
The four parameterizations of a (conditional or marginal) field are the velocity ``u``, the score
``s``, the noise prediction ``eps_hat`` and the data prediction ``x0`` (= ``z_hat``), tied by

    x = alpha z_hat + beta eps_hat,   u = alpha_dot z_hat + beta_dot eps_hat,   s = -eps_hat / beta.

With ``c = beta beta_dot`` (finite at both ends for every schedule),
``D = beta^2 alpha_dot - alpha c`` (> 0 on [0, 1), docs/math.md §21) and
``det = alpha beta_dot - alpha_dot beta`` (< 0), each conversion is evaluated in the form below.
Each divides only by the quantity that makes it genuinely singular at one end:

==================  ===========================================  =========================
src -> dst          formula                                      singular where
==================  ===========================================  =========================
velocity -> score   ``(alpha u - alpha_dot x) / D``              ``D = 0`` (t=1: CondOT,
                                                                 Cosine)
velocity -> eps     ``(alpha u - alpha_dot x) / det``            never
velocity -> x0      ``(beta_dot x - beta u) / det``, or          never
                    ``(beta^2 u - c x) / D`` where beta_dot=inf
score -> eps        ``-beta s``                                  never
score -> x0         ``(x + beta^2 s) / alpha``                   ``alpha = 0`` (t=0)
score -> velocity   ``(alpha_dot x + D s) / alpha``              ``alpha = 0`` (t=0)
eps -> score        ``-eps / beta``                              ``beta = 0`` (t=1)
eps -> x0           ``(x - beta eps) / alpha``                   ``alpha = 0`` (t=0)
eps -> velocity     ``(alpha_dot x + det eps) / alpha``          ``alpha = 0`` (t=0);
                                                                 t=1 if beta_dot=inf
x0 -> eps           ``(x - alpha x0) / beta``                    ``beta = 0`` (t=1)
x0 -> score         ``-(x - alpha x0) / beta^2``                 ``beta = 0`` (t=1)
x0 -> velocity      ``(beta_dot x - det x0) / beta``             ``beta = 0`` (t=1)
==================  ===========================================  =========================

**Policy at the ends: raise.** Exactly at a singular end (e.g. ``eps -> velocity`` at ``t = 0``
with ``alpha_0 = 0``), ``convert`` raises ``ValueError`` saying which end and why; the limit is not
computable from the input alone (at ``t = 0`` ``eps_hat = x`` for every data set, so ``z_hat`` is
0/0). Arbitrarily close to the end the forms above are evaluated as written: they lose nothing to
cancellation beyond what the ``1/alpha`` or ``1/beta`` amplification of the input's own error
implies, so in float64 they are accurate within 1e-4 of both ends. The
VariancePreserving schedule has ``alpha_0 > 0``, so nothing is singular there at ``t = 0``.
:meth:`GaussianPath.singular_ends` tells which ends a conversion cannot reach; the fields in
:mod:`sdeflow_generative.fields` use it to choose their default time span.

Exact marginals (:meth:`GaussianPath.marginal`)
-----------------------------------------------
For a :class:`~sdeflow_generative.targets.GaussianMixture` (or :class:`~.targets.Gaussian`) target,
``p_t = sum_k pi_k N(alpha mu_k, alpha^2 S_k + beta^2 I)``; for an
:class:`~.targets.Empirical` target the same with ``S_k = 0`` (then ``p_1`` has no density and
``t = 1`` raises). :class:`ExactMarginal` gives ``log_prob``, ``score``, ``velocity`` and the
posterior means ``eps`` (``E[eps|x]``) and ``x0`` (``E[z|x]``) in closed form, all finite at both
ends (the velocity is computed as ``E[alpha_dot z + beta_dot eps | x]`` with ``beta beta_dot``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from . import _mixture
from ._utils import as_time, check_generator, check_positive_int, check_state, time_for
from .schedules import Schedule
from .targets import Target

Tensor = torch.Tensor

__all__ = ["PARAMETERIZATIONS", "GaussianPath", "ExactMarginal", "PathCoefficients"]

PARAMETERIZATIONS = ("velocity", "score", "eps", "x0")

# Denominators each conversion divides by (see the module table).
_NEEDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("velocity", "score"): ("D",),
    ("velocity", "eps"): ("det",),
    ("velocity", "x0"): ("x0_from_velocity",),
    ("score", "eps"): (),
    ("score", "x0"): ("alpha",),
    ("score", "velocity"): ("alpha",),
    ("eps", "score"): ("beta",),
    ("eps", "x0"): ("alpha",),
    ("eps", "velocity"): ("alpha", "beta_dot"),
    ("x0", "eps"): ("beta",),
    ("x0", "score"): ("beta",),
    ("x0", "velocity"): ("beta", "beta_dot"),
}

_WHY = {
    "alpha": "divides by alpha_t, which is 0",
    "beta": "divides by beta_t, which is 0",
    "D": "divides by beta^2 alpha_dot - alpha beta beta_dot, which is 0",
    "det": "divides by alpha beta_dot - alpha_dot beta, which is 0",
    "beta_dot": "multiplies by beta_dot_t, which is infinite",
    "x0_from_velocity": "has a zero denominator",
}


class PathCoefficients(NamedTuple):
    """Schedule quantities at ``t``, shaped to broadcast against ``x`` (0-dim or ``(..., 1)``).

    ``c = beta * beta_dot``, ``D = beta^2 alpha_dot - alpha c``,
    ``det = alpha beta_dot - alpha_dot beta``.
    """

    alpha: Tensor
    beta: Tensor
    alpha_dot: Tensor
    beta_dot: Tensor
    c: Tensor
    D: Tensor
    det: Tensor


def _singular_mask(k: PathCoefficients, what: str) -> Tensor:
    """Boolean tensor: True where the denominator ``what`` makes a conversion singular."""
    if what == "alpha":
        return k.alpha == 0
    if what == "beta":
        return k.beta == 0
    if what == "D":
        return k.D == 0
    if what == "det":
        return k.det == 0
    if what == "beta_dot":
        return ~torch.isfinite(k.beta_dot)
    if what == "x0_from_velocity":
        fin = torch.isfinite(k.beta_dot)
        return (fin & (k.det == 0)) | (~fin & (k.D == 0))
    raise AssertionError(what)  # pragma: no cover - internal table


def _check_param(name: str, value: object) -> str:
    if value not in PARAMETERIZATIONS:
        raise ValueError(f"{name}: expected one of {PARAMETERIZATIONS}, got {value!r}")
    return str(value)


class GaussianPath:
    """The Gaussian probability path ``p_t(x|z) = N(alpha_t z, beta_t^2 I)`` of a schedule.

    Args:
        schedule: a :class:`~sdeflow_generative.schedules.Schedule` (``CondOT()``, ...).
    """

    def __init__(self, schedule: Schedule) -> None:
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule: expected a Schedule, got {type(schedule).__name__}")
        self.schedule = schedule

    def __repr__(self) -> str:
        return f"GaussianPath({self.schedule!r})"

    # ------------------------------------------------------------------ coefficients
    def coefficients(self, t: Tensor | float, x: Tensor) -> PathCoefficients:
        """:class:`PathCoefficients` at ``t``, broadcastable against ``x`` ``(..., d)``."""
        tt = time_for(t, x)
        v = self.schedule(tt)
        c = self.schedule.beta_beta_dot(tt)
        D = v.beta * v.beta * v.alpha_dot - v.alpha * c
        det = v.alpha * v.beta_dot - v.alpha_dot * v.beta
        return PathCoefficients(v.alpha, v.beta, v.alpha_dot, v.beta_dot, c, D, det)

    # ------------------------------------------------------------------ conditional path
    def sample(
        self,
        z: Tensor,
        t: Tensor | float,
        eps: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``x = alpha_t z + beta_t eps`` ``(..., d)``; ``eps ~ N(0, I)`` drawn when not given."""
        check_state(z, "z")
        check_generator(generator)
        if eps is None:
            eps = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        elif not isinstance(eps, Tensor):
            raise TypeError(f"eps: expected a tensor of z's shape {tuple(z.shape)}, got "
                            f"{type(eps).__name__}")
        elif eps.shape != z.shape:
            raise ValueError(f"eps: expected z's shape {tuple(z.shape)}, got {tuple(eps.shape)}")
        tt = time_for(t, z)
        v = self.schedule(tt)
        return v.alpha * z + v.beta * eps

    def conditional_velocity(self, x: Tensor, z: Tensor, t: Tensor | float) -> Tensor:
        """``u_t(x|z) = alpha_dot z + beta_dot (x - alpha z) / beta`` (docs/math.md §20.2).

        ``x``, ``z`` and the result ``(..., d)``. At ``x = alpha z + beta eps`` it equals
        ``alpha_dot z + beta_dot eps``. Singular at ``beta = 0`` (``t = 1``): raises ``ValueError``
        there.
        """
        self._check_pair(x, z)
        k = self.coefficients(t, x)
        self._raise_if(k, ("beta",), "conditional_velocity")
        return k.alpha_dot * z + k.beta_dot * ((x - k.alpha * z) / k.beta)

    def conditional_score(self, x: Tensor, z: Tensor, t: Tensor | float) -> Tensor:
        """``grad_x log p_t(x|z) = -(x - alpha z) / beta^2`` ``(..., d)``; raises at beta = 0."""
        self._check_pair(x, z)
        k = self.coefficients(t, x)
        self._raise_if(k, ("beta",), "conditional_score")
        return -(x - k.alpha * z) / (k.beta * k.beta)

    @staticmethod
    def _check_pair(x: Tensor, z: Tensor) -> None:
        check_state(x, "x")
        check_state(z, "z")
        if z.shape != x.shape:
            raise ValueError(f"z: expected x's shape {tuple(x.shape)}, got {tuple(z.shape)}")

    def _raise_if(self, k: PathCoefficients, needs: tuple[str, ...], what: str) -> None:
        for need in needs:
            bad = _singular_mask(k, need)
            if bool(bad.any()):
                ends = []
                if bool((bad & (k.alpha < 0.5)).any()):
                    ends.append("t=0")
                if bool((bad & (k.alpha >= 0.5)).any()):
                    ends.append("t=1")
                raise ValueError(
                    f"t: {what} {_WHY[need]} at {' and '.join(ends)} for {self.schedule!r}; "
                    "evaluate it away from that end (e.g. stop at t=eps or t=1-eps)"
                )

    # ------------------------------------------------------------------ conversions
    def convert(self, value: Tensor, x: Tensor, t: Tensor | float, src: str, dst: str) -> Tensor:
        """Convert a field ``value`` ``(..., d)`` at ``(x, t)`` from ``src`` to ``dst``.

        ``src``, ``dst`` in ``("velocity", "score", "eps", "x0")``. The same formulas hold for
        conditional and marginal fields (docs/math.md §21). Forms and the end policy (raise
        exactly at a singular end) are in the module docstring.
        """
        src = _check_param("src", src)
        dst = _check_param("dst", dst)
        check_state(x, "x")
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"value: expected a torch.Tensor, got {type(value).__name__}")
        if value.shape != x.shape:
            raise ValueError(
                f"value: expected x's shape {tuple(x.shape)}, got {tuple(value.shape)}"
            )
        if src == dst:
            return value
        k = self.coefficients(t, x)
        self._raise_if(k, _NEEDS[(src, dst)], f"convert {src!r} -> {dst!r}")
        return _convert(value, x, k, src, dst)

    def singular_ends(self, src: str, dst: str) -> tuple[bool, bool]:
        """``(at_0, at_1)``: whether ``convert(src -> dst)`` is singular at t = 0 / t = 1."""
        src = _check_param("src", src)
        dst = _check_param("dst", dst)
        if src == dst:
            return (False, False)
        x = torch.zeros(2, 1, dtype=torch.float64)
        k = self.coefficients(torch.tensor([0.0, 1.0], dtype=torch.float64), x)
        bad = torch.zeros(2, 1, dtype=torch.bool)
        for need in _NEEDS[(src, dst)]:
            bad = bad | _singular_mask(k, need)
        return bool(bad[0, 0]), bool(bad[1, 0])

    # ------------------------------------------------------------------ marginals
    def marginal(self, target: Target) -> ExactMarginal:
        """The exact marginal path ``p_t`` of ``target`` (``Gaussian``, ``GaussianMixture`` or
        ``Empirical``): an :class:`ExactMarginal`."""
        if not isinstance(target, Target):
            raise TypeError(
                "target: expected a Gaussian, GaussianMixture or Empirical, "
                f"got {type(target).__name__}"
            )
        return ExactMarginal(self, target)


def _convert(value: Tensor, x: Tensor, k: PathCoefficients, src: str, dst: str) -> Tensor:
    """The formulas of the module table (no checks)."""
    a, b, ad, bd, c, D, det = k
    if src == "velocity":
        u = value
        if dst == "score":
            return (a * u - ad * x) / D
        if dst == "eps":
            return (a * u - ad * x) / det
        # x0: two forms; the first needs a finite beta_dot, the second D > 0 (both hold inside).
        fin = torch.isfinite(bd)
        if bool(fin.all()):
            return (bd * x - b * u) / det
        if not bool(fin.any()):
            return (b * b * u - c * x) / D
        bd_s = torch.where(fin, bd, torch.zeros_like(bd))
        det_s = torch.where(fin, det, -torch.ones_like(det))
        D_s = torch.where(fin, torch.ones_like(D), D)
        return torch.where(fin, (bd_s * x - b * u) / det_s, (b * b * u - c * x) / D_s)
    if src == "score":
        s = value
        if dst == "eps":
            return -b * s
        if dst == "x0":
            return (x + b * b * s) / a
        return (ad * x + D * s) / a
    if src == "eps":
        e = value
        if dst == "score":
            return -e / b
        if dst == "x0":
            return (x - b * e) / a
        return (ad * x + det * e) / a
    z = value  # src == "x0"
    if dst == "eps":
        return (x - a * z) / b
    if dst == "score":
        return -(x - a * z) / (b * b)
    return (bd * x - det * z) / b


class ExactMarginal:
    """Exact marginal path ``p_t`` of a mixture target under a path (docs/math.md §22).

    ``p_t = sum_k pi_k N(alpha_t mu_k, alpha_t^2 S_k + beta_t^2 I)`` (``S_k = 0`` for
    ``Empirical``). Every method takes ``x`` ``(..., d)`` and ``t`` (float, 0-dim, or
    ``x.shape[:-1]``), follows ``x``'s dtype/device, and is finite on the closed interval [0, 1]
    (for ``Empirical``: on [0, 1), ``t = 1`` raises ``ValueError``). The methods are ``model(x, t)``
    callables, so the exact field drives the samplers with no training (see :meth:`model`).
    """

    def __init__(self, path: GaussianPath, target: Target) -> None:
        self.path = path
        self.target = target

    def __repr__(self) -> str:
        return f"ExactMarginal({self.path!r}, {self.target!r})"

    def _eval(self, x: Tensor, t: Tensor | float) -> tuple[_mixture.MixtureEval, PathCoefficients]:
        check_state(x, "x", self.target.dim)
        k = self.path.coefficients(t, x)
        if not self.target._has_density and bool((k.beta == 0).any()):
            raise ValueError(
                "t: the marginal of an Empirical target at t=1 (beta_t=0) is a sum of Dirac masses "
                "and has no density, score or velocity; stop at t=1-eps"
            )
        return _mixture.evaluate(x, self.target.params_like(x), k.alpha, k.beta), k

    def log_prob(self, x: Tensor, t: Tensor | float) -> Tensor:
        """``log p_t(x)`` ``(...)``."""
        return self._eval(x, t)[0].log_prob

    def score(self, x: Tensor, t: Tensor | float) -> Tensor:
        """``grad log p_t(x) = -sum_k r_k C_k^-1 (x - alpha mu_k)`` ``(..., d)``."""
        return self._eval(x, t)[0].score()

    def velocity(self, x: Tensor, t: Tensor | float) -> Tensor:
        """``u_t(x) = E[alpha_dot z + beta_dot eps | x_t = x]`` ``(..., d)`` (generates ``p_t``)."""
        ev, k = self._eval(x, t)
        return _mixture.velocity(ev, k.alpha, k.alpha_dot, k.c)

    def eps(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Noise prediction ``E[eps | x_t = x] = -beta_t score`` ``(..., d)``."""
        ev, k = self._eval(x, t)
        return _mixture.posterior_eps(ev, k.beta)

    def x0(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Data prediction ``E[z | x_t = x]`` ``(..., d)``."""
        ev, k = self._eval(x, t)
        return _mixture.posterior_mean(ev, k.alpha)

    def model(self, param: str = "velocity") -> Callable[[Tensor, Tensor], Tensor]:
        """The exact field in parameterization ``param`` as a ``model(x, t)`` callable."""
        param = _check_param("param", param)
        return getattr(self, param)

    def sample(
        self, n: int, t: Tensor | float, generator: torch.Generator | None = None
    ) -> Tensor:
        """``n`` exact samples of ``p_t`` ``(n, d)``: ``alpha_t z + beta_t eps``, ``z ~ target``."""
        n = check_positive_int(n, "n")
        z = self.target.sample(n, generator=generator)
        return self.path.sample(z, as_time(t, like=z), generator=generator)
