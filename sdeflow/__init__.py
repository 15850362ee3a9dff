"""sdeflow: ODE and SDE solvers for PyTorch, verified against exact solutions.

The public face: problems (:class:`ODE`, :class:`SDE`), Brownian motion (:class:`BrownianPath`,
:class:`BrownianTree`),
:func:`solve` and its :class:`Solution`, the step-size controllers (:class:`ConstantController`,
:class:`PIController`), the solver registry ``sdeflow.solvers``, and the verification kit
(``sdeflow.analytic``, ``sdeflow.verify``, ``sdeflow.testing``).
"""

from . import adjoint as _adjoint  # noqa: E402, F401  (registers solve(..., adjoint=...))
from . import solvers
from .brownian import BrownianPath, BrownianTree
from .controllers import ConstantController, PIController
from .ensemble import EnsembleResult, Quantiles, ensemble
from .errors import MaxStepsError, NewtonError, NonFiniteError, SolverError, StepSizeError
from .events import Event
from .problems import ODE, SDE
from .semilinear import SemilinearODE, SemilinearSDE
from .solution import Solution
from .solve import solve

__version__ = "0.2.0"


def __getattr__(name: str) -> object:
    # The verification kit imports solve(); load it lazily to keep `import sdeflow` light.
    if name in ("analytic", "verify", "testing"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'sdeflow' has no attribute {name!r}")


__all__ = [
    "ODE", "SDE", "BrownianPath", "BrownianTree", "solve", "Solution", "solvers", "SolverError",
    "NonFiniteError", "MaxStepsError", "StepSizeError", "analytic", "verify", "testing",
    "PIController", "ConstantController", "NewtonError", "Event", "SemilinearODE",
    "SemilinearSDE", "ensemble", "EnsembleResult", "Quantiles",
]
