"""sdeflow_generative: Gaussian probability paths, exact mixture targets and sampling adapters.

A plugin of sdeflow (entry-point group ``sdeflow.plugins``, name ``generative``). Time runs from
``t = 0`` (noise) to ``t = 1`` (data); the mathematics is docs/math.md §20-§24.

* :mod:`~sdeflow_generative.schedules` -- ``CondOT``, ``SquareRoot``, ``Cosine``,
  ``VariancePreserving``; ``sched(t)`` -> ``ScheduleValues(alpha, beta, alpha_dot, beta_dot)``.
* :class:`GaussianPath` -- conditional sampling, fields and scores, ``convert`` among
  ``velocity``/``score``/``eps``/``x0``, and exact marginals (``marginal(target)``).
* :mod:`~sdeflow_generative.targets` -- ``Gaussian``, ``GaussianMixture``, ``Empirical``.
* :mod:`~sdeflow_generative.fields` -- ``ProbabilityFlowODE``, ``DiffusionSDE``, ``Langevin``:
  core ``sf.ODE``/``sf.SDE`` problems, solved with ``sdeflow.solve`` (no time loop here).
* :mod:`~sdeflow_generative.likelihood` -- ``log_prob`` by the divergence ODE.
* :mod:`~sdeflow_generative.datasets` -- toy 2D data sets and ``mixture2d()``.
"""

from __future__ import annotations

from . import datasets, fields, likelihood, sampling, schedules, targets
from .fields import DiffusionSDE, Langevin, ProbabilityFlowODE
from .paths import PARAMETERIZATIONS, ExactMarginal, GaussianPath
from .sampling import sample
from .schedules import CondOT, Cosine, ScheduleValues, SquareRoot, VariancePreserving
from .targets import Empirical, Gaussian, GaussianMixture, NoDensityError

__version__ = "0.1.0"

#: Short description shown by ``sdeflow plugins``.
DESCRIPTION = (
    "Gaussian probability paths (CondOT, square-root, cosine, VP), exact mixture targets, "
    "probability-flow ODE / diffusion SDE / Langevin adapters, likelihood, toy data sets"
)

__all__ = [
    "schedules",
    "targets",
    "fields",
    "likelihood",
    "datasets",
    "GaussianPath",
    "ExactMarginal",
    "PARAMETERIZATIONS",
    "CondOT",
    "SquareRoot",
    "Cosine",
    "VariancePreserving",
    "ScheduleValues",
    "Gaussian",
    "GaussianMixture",
    "Empirical",
    "NoDensityError",
    "ProbabilityFlowODE",
    "DiffusionSDE",
    "Langevin",
    "sampling",
    "sample",
]
