"""The verification kit: convergence orders and moment checks against exact solutions.

Each function returns a result object (:mod:`.results`: frozen dataclasses with ``passed`` and
``to_dict()``):

* :func:`ode_order` (:mod:`.ode`) -- global order of an ODE solver on a
  :class:`~sdeflow.analytic.LinearODE` (docs/math.md §10.1).
* :func:`strong_order`, :func:`weak_order` (:mod:`.sde_order`) -- strong order
  ``E|X_T - X^h_T| ~ C h^p`` with every step size on *one shared* Brownian path per batch, and
  weak order ``|E phi(X^h_T) - E phi(X_T)| ~ C h^p`` (docs/math.md §10.2-§10.3).
* :func:`moments`, :func:`discrete_moments`, :func:`bias_order` (:mod:`.moment_checks`) --
  Monte Carlo moments against the moment equations, a scheme's exact discrete moments, the
  order of its moment bias (docs/math.md §9).
* :func:`tolerance_proportionality`, :func:`sde_tolerance_order` (:mod:`.tolerance`) -- error
  against tolerance of adaptive solvers (docs/math.md §10.5).
* :func:`fit_order` and the confidence intervals (:mod:`.fit`, docs/math.md §10.4).
* :func:`run_suite`, :func:`default_suite` (:mod:`.suite`) -- ``sdeflow verify``.
* :mod:`.references` -- the exact problems (also ``sdeflow.analytic``).

The kit drives solvers only through the public API: :func:`sdeflow.solve`, the solver registry
and each solver's declared capabilities.

**Sample sizes.** Paths are simulated in batches of at most ``chunk`` paths (default chosen so
one batch's stored Brownian grid has <= 2^22 numbers), each batch on its own
``BrownianPath(seed=seed)`` for the first and ``seed + k 2^32`` for batch ``k`` (so runs with
different small seeds never share a batch); the per-path errors of all batches are pooled.
"""

from __future__ import annotations

from . import references
from .fit import _mc_fit, fit_order, regression_fit
from .moment_checks import bias_order, discrete_moments, moments
from .ode import ode_order
from .references import default_linear_ode
from .results import MomentsResult, OrderResult, SDEToleranceResult, ToleranceProportionality
from .sampling import _pick_problem
from .sde_order import strong_order, weak_order
from .suite import default_suite, run_suite
from .tolerance import default_tolerances, sde_tolerance_order, tolerance_proportionality

__all__ = [
    "OrderResult", "MomentsResult", "ToleranceProportionality", "SDEToleranceResult",
    "ode_order", "strong_order", "weak_order", "moments", "discrete_moments", "bias_order",
    "fit_order", "default_linear_ode", "default_suite", "run_suite",
    "tolerance_proportionality", "sde_tolerance_order", "default_tolerances", "references",
    "_mc_fit", "_pick_problem", "regression_fit",
]
