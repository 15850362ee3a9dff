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
* :mod:`~sdeflow_generative.datasets` -- toy 2D data sets, ``mixture2d()``, labelled 2D sets and
  ``digits()``.
* :mod:`~sdeflow_generative.models` -- the model seam ``model(x, t, **cond)`` and its checks.
* :mod:`~sdeflow_generative.nets` -- ``MLP`` and ``UNet`` with time and label conditioning.
* :mod:`~sdeflow_generative.losses` -- ``ConditionalMatching`` (CFM, DSM, DDPM, x0; OT coupling).
* :mod:`~sdeflow_generative.guidance` -- ``ClassifierFree``.
* :mod:`~sdeflow_generative.train` -- ``fit`` (deterministic, EMA, atomic resumable checkpoints).
* :mod:`~sdeflow_generative.demo` -- ``sdeflow demo`` (registered through ``SUBCOMMANDS``).
"""

from __future__ import annotations

from . import (
    datasets,
    demo,
    fields,
    guidance,
    likelihood,
    losses,
    metrics,
    models,
    nets,
    sampling,
    schedules,
    targets,
    train,
)
from .demo import add_demo_arguments, run_demo_args
from .fields import DiffusionSDE, Langevin, ProbabilityFlowODE
from .guidance import ClassifierFree
from .losses import ConditionalMatching
from .paths import PARAMETERIZATIONS, ExactMarginal, GaussianPath
from .sampling import sample
from .schedules import CondOT, Cosine, ScheduleValues, SquareRoot, VariancePreserving
from .targets import Empirical, Gaussian, GaussianMixture, NoDensityError

__version__ = "0.1.0"

#: Short description shown by ``sdeflow plugins``.
DESCRIPTION = (
    "Gaussian probability paths (CondOT, square-root, cosine, VP), exact mixture targets, "
    "probability-flow ODE / diffusion SDE / Langevin adapters, likelihood, networks, "
    "flow/score-matching losses, training, classifier-free guidance, data sets, `sdeflow demo`"
)

#: Subcommands this plugin adds to the ``sdeflow`` command:
#: name -> (help, add_arguments(parser), run(namespace) -> exit status).
SUBCOMMANDS = {
    "demo": ("train and sample a generative model on CPU", add_demo_arguments, run_demo_args),
}

__all__ = [
    "schedules",
    "targets",
    "fields",
    "likelihood",
    "datasets",
    "models",
    "nets",
    "losses",
    "guidance",
    "train",
    "metrics",
    "demo",
    "SUBCOMMANDS",
    "ConditionalMatching",
    "ClassifierFree",
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
