"""What is being solved: ODE and SDE problem interfaces (docs/math.md §1).

Both follow the ``f(t, x)`` convention of torchdiffeq and torchsde: ``t`` is a 0-dim tensor with
the dtype and device of the state, ``x`` is a tensor whose leading dimensions are batch dimensions.

* :class:`ODE` -- ``dx/dt = u(t, x)``. The state may have any shape; ``vector_field`` returns a
  tensor of the same shape.
* :class:`SDE` -- ``dX = f(t, X) dt + g(t, X) dW`` (Ito) or ``... + g(t, X) o dW`` (Stratonovich).
  The state has shape ``(..., d)``. The shape returned by ``diffusion`` depends on the noise type:

  ============  ======================  =======================  ===========================
  noise         diffusion returns       Brownian motion          noise term
  ============  ======================  =======================  ===========================
  ``diagonal``  ``(..., d)``            ``(..., d)``             ``g * dW`` (elementwise)
  ``additive``  ``(..., d)``, g(t) only ``(..., d)``             ``g * dW``
  ``additive``  ``(..., d, m)``, g(t)   ``(..., m)``             ``g @ dW`` (a d x m matrix)
  ``scalar``    ``(..., d)`` or         ``(..., 1)``             ``g * dW`` (one W per path)
                ``(..., d, 1)``
  ``general``   ``(..., d, m)``         ``(..., m)``             ``g @ dW``
  ============  ======================  =======================  ===========================

Additive noise (``g`` independent of ``x``) comes in two forms, told apart by the shape ``g``
returns (``solve`` calls it once at the start): elementwise ``(..., d)`` (diagonal, ``m = d``)
or a matrix ``(..., d, m)`` with ``m`` Brownian motions, ``m`` any positive size (torchsde's
convention). Both run with every additive-noise scheme, SRA1 included (docs/math.md §6.4).

Either pass callables or subclass and override the methods.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

Tensor = torch.Tensor
Field = Callable[[Tensor, Tensor], Tensor]

NOISE_TYPES = ("diagonal", "scalar", "additive", "general")
SDE_KINDS = ("ito", "stratonovich")


def _two_args(fn: Callable[..., Tensor], name: str) -> None:
    """``fn`` must accept ``(t, x)``; a one-argument ``lambda x: ...`` is a clear error."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: trust them
        return
    try:
        sig.bind(0, 0)
    except TypeError:
        raise TypeError(f"{name}: expected a callable {name}(t, x) of two arguments (time and "
                        f"state), got one with signature {sig}") from None


def _scalar_column(g: Field) -> Field:
    """``g`` with a trailing Brownian dimension of size 1 dropped: ``(..., d, 1) -> (..., d)``."""
    def column(t: Tensor, x: Tensor) -> Tensor:
        out = g(t, x)
        if isinstance(out, Tensor) and out.dim() == x.dim() + 1 and out.shape[-1] == 1:
            return out.squeeze(-1)
        return out

    return column


class ODE:
    """An ordinary differential equation ``dx/dt = u(t, x)``.

    Args:
        vector_field: callable ``u(t, x)`` returning a tensor of ``x``'s shape. Optional when a
            subclass overrides :meth:`vector_field`.
        jacobian: optional callable ``J(t, x)`` returning ``du/dx`` for the implicit solvers:
            ``(d, d)`` for a state ``(d,)``, ``(B, d, d)`` for a batch ``(B, d)`` (in general
            ``(B, D, D)`` with ``D = prod(x.shape[1:])``; each path is its own system).
            Without it the implicit solvers use autograd (``torch.func.jacrev`` + ``vmap``).

    Example:
        >>> ode = ODE(lambda t, x: -x)
    """

    #: ``J(t, x)`` (see above) or ``None``; a subclass may define it as a method
    jacobian: Callable[[Tensor, Tensor], Tensor] | None = None

    def __init__(self, vector_field: Field | None = None,
                 jacobian: Callable[[Tensor, Tensor], Tensor] | None = None) -> None:
        if jacobian is not None and not callable(jacobian):
            raise TypeError(f"jacobian: expected a callable J(t, x), got "
                            f"{type(jacobian).__name__}")
        if jacobian is not None:
            self.jacobian = jacobian
        if vector_field is not None:
            if not callable(vector_field):
                raise TypeError(
                    f"vector_field: expected a callable u(t, x), got {type(vector_field).__name__}"
                )
            _two_args(vector_field, "vector_field")
            self._u = vector_field
        elif type(self).vector_field is ODE.vector_field:
            raise TypeError(
                "vector_field: pass a callable u(t, x) or subclass ODE and override vector_field"
            )

    def vector_field(self, t: Tensor, x: Tensor) -> Tensor:
        """``u(t, x)``: ``t`` 0-dim, ``x`` of any shape; returns ``x``'s shape."""
        return self._u(t, x)

    def _field(self) -> Field:
        """The fastest callable equal to :meth:`vector_field` (skips one call layer)."""
        if type(self).vector_field is ODE.vector_field:
            return self._u
        return self.vector_field


class SDE:
    """A stochastic differential equation ``dX = f(t, X) dt + g(t, X) dW``.

    Args:
        drift: callable ``f(t, x)`` returning ``x``'s shape ``(..., d)``.
        diffusion: callable ``g(t, x)``; its shape depends on ``noise`` (see the module docstring).
        noise: ``"diagonal"``, ``"scalar"``, ``"additive"`` or ``"general"``.
        kind: ``"ito"`` or ``"stratonovich"``.

    Either pass ``drift`` and ``diffusion`` or subclass and override :meth:`drift` and
    :meth:`diffusion` (then ``noise`` and ``kind`` may be class attributes).
    """

    noise: str = "diagonal"
    kind: str = "ito"

    def __init__(
        self,
        drift: Field | None = None,
        diffusion: Field | None = None,
        noise: str | None = None,
        kind: str | None = None,
    ) -> None:
        for name, fn, method in (("drift", drift, "drift"), ("diffusion", diffusion, "diffusion")):
            if fn is not None:
                if not callable(fn):
                    raise TypeError(
                        f"{name}: expected a callable {name}(t, x), got {type(fn).__name__}"
                    )
                _two_args(fn, name)
                setattr(self, "_" + name, fn)
            elif getattr(type(self), method) is getattr(SDE, method):
                raise TypeError(
                    f"{name}: pass a callable {name}(t, x) or subclass SDE and override {method}"
                )
        noise = self.noise if noise is None else noise
        kind = self.kind if kind is None else kind
        if noise not in NOISE_TYPES:
            raise ValueError(f"noise: expected one of {NOISE_TYPES}, got {noise!r}")
        if kind not in SDE_KINDS:
            raise ValueError(f"kind: expected one of {SDE_KINDS}, got {kind!r}")
        self.noise = noise
        self.kind = kind

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        """``f(t, x)``: returns ``x``'s shape ``(..., d)``."""
        return self._drift(t, x)

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        """``g(t, x)``: ``(..., d)``, or ``(..., d, m)`` for general noise and for additive noise
        given as a matrix."""
        return self._diffusion(t, x)

    def _fields(self) -> tuple[Field, Field]:
        """The fastest callables equal to :meth:`drift` and :meth:`diffusion` (for scalar noise
        given as ``(..., d, 1)``, torchsde's shape, the diffusion's last dimension dropped)."""
        f = self._drift if type(self).drift is SDE.drift else self.drift
        g = self._diffusion if type(self).diffusion is SDE.diffusion else self.diffusion
        if self.noise == "scalar":
            return f, _scalar_column(g)
        return f, g

    def brownian_shape(self, x_shape: torch.Size, m: int | None = None) -> tuple[int, ...]:
        """Shape of the Brownian motion driving a state of shape ``x_shape``.

        ``m``: the Brownian dimension, the last size of what ``diffusion`` returns when that is a
        matrix ``(..., d, m)`` (general noise: required; additive noise: ``None`` means the
        elementwise form, ``m = d``).
        """
        if self.noise == "scalar":
            return (*x_shape[:-1], 1)
        if self.noise == "general":
            if m is None:
                raise ValueError("general noise: the Brownian dimension m is read from diffusion")
            return (*x_shape[:-1], m)
        if self.noise == "additive" and m is not None:
            return (*x_shape[:-1], m)
        return tuple(x_shape)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(noise={self.noise!r}, kind={self.kind!r})"
