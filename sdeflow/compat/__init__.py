"""Drop-in ``odeint`` / ``sdeint`` for torchdiffeq and torchsde users (docs/compat.md).

``odeint`` and ``odeint_adjoint`` take torchdiffeq's arguments and defaults; ``sdeint`` and
``sdeint_adjoint`` take torchsde's, with torchsde-style SDE objects (``f``, ``g``,
``noise_type``, ``sde_type``) and torchsde's shapes. Each call is one :func:`sdeflow.solve`.
Neither peer library is needed; torchsde's Brownian objects are accepted when it is installed.
"""

from .odeint import ODE_METHODS, odeint, odeint_adjoint
from .sdeint import SDE_METHODS, sdeint, sdeint_adjoint

__all__ = ["odeint", "odeint_adjoint", "sdeint", "sdeint_adjoint", "ODE_METHODS", "SDE_METHODS"]
