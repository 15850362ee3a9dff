"""Problems with exact solutions and exact moments (``sf.analytic``).

The references live in :mod:`sdeflow.verify.references`; this module keeps the import path
``sdeflow.analytic`` (docs/math.md §9).
"""

from __future__ import annotations

from .verify.references import (
    AnalyticSDE,
    GeometricBrownianMotion,
    LinearODE,
    LinearSDE,
    NonlinearAdditiveSDE,
    OrnsteinUhlenbeck,
    expm,
    linear_recursion_moments,
)

__all__ = [
    "LinearODE", "GeometricBrownianMotion", "OrnsteinUhlenbeck", "LinearSDE",
    "NonlinearAdditiveSDE", "AnalyticSDE", "linear_recursion_moments", "expm",
]
