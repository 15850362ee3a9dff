"""The model seam: ``model(x, t, **cond)`` in a declared parameterization (DESIGN, "Generative").

A *model* is any callable ``model(x, t, **cond)`` that returns a tensor of ``x``'s shape and dtype
in one parameterization of a Gaussian path: ``"velocity"`` (``u_t(x)``), ``"score"``
(``grad log p_t(x)``), ``"eps"`` (``E[eps | x_t = x]``) or ``"x0"`` (``E[z | x_t = x]``);
:meth:`~sdeflow_generative.GaussianPath.convert` turns one into another (docs/math.md §21).
``t`` has one time per sample (``x.shape[:-1]`` for vector states ``(..., d)``, which is
``x.shape[:1]`` for a batch ``(B, d)``). ``cond`` is a dict of keyword arguments passed unchanged
at every call; labels travel as ``y`` (``model(x, t, y=labels)``), and without labels a model is
called as ``model(x, t)``.

A model may *declare* its parameterization with a string attribute ``param`` (the networks of
:mod:`~sdeflow_generative.nets` and :class:`~sdeflow_generative.guidance.ClassifierFree` do);
:func:`resolve_param` reads it once, when a field or loss is built. Networks also declare
``num_classes`` (``None`` without a label embedding; then the null label is ``num_classes``) and
``sample_shape`` (the shape of one sample).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from .paths import PARAMETERIZATIONS

Tensor = torch.Tensor
Model = Callable[..., Tensor]

__all__ = ["PARAMETERIZATIONS", "Model", "resolve_param", "check_cond", "call_model"]


def resolve_param(model: object, param: str | None, name: str = "param") -> str:
    """The parameterization of ``model``: ``param`` if given, else the model's declared
    ``model.param``, else ``"velocity"``. A given ``param`` that contradicts the declared one
    raises ``ValueError``."""
    if not callable(model):
        raise TypeError(
            f"model: expected a callable model(x, t, **cond), got {type(model).__name__}"
        )
    declared = getattr(model, "param", None)  # the seam's one declared attribute
    if declared is not None and declared not in PARAMETERIZATIONS:
        raise ValueError(
            f"model: declares param={declared!r}; expected one of {PARAMETERIZATIONS}"
        )
    if param is None:
        return "velocity" if declared is None else str(declared)
    if param not in PARAMETERIZATIONS:
        raise ValueError(f"{name}: expected one of {PARAMETERIZATIONS}, got {param!r}")
    if declared is not None and declared != param:
        raise ValueError(
            f"{name}: {param!r} contradicts the model's declared parameterization {declared!r}"
        )
    return str(param)


def check_cond(cond: Mapping[str, Any] | None) -> dict[str, Any]:
    """``cond`` as a dict of keyword arguments for the model (``None`` -> ``{}``)."""
    if cond is None:
        return {}
    if not isinstance(cond, Mapping) or not all(isinstance(k, str) for k in cond):
        raise TypeError(
            f"cond: expected a dict of keyword arguments for the model, got {type(cond).__name__}"
        )
    return dict(cond)


def call_model(model: Model, x: Tensor, t: Tensor, cond: Mapping[str, Any]) -> Tensor:
    """``model(x, t, **cond)``, checked: a tensor of ``x``'s shape and dtype (else an error
    naming ``model``)."""
    out = model(x, t, **cond)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"model: expected a tensor output, got {type(out).__name__}")
    if out.shape != x.shape:
        raise ValueError(
            f"model: expected an output of x's shape {tuple(x.shape)}, got {tuple(out.shape)}"
        )
    if out.dtype != x.dtype:
        raise TypeError(f"model: expected an output of x's dtype {x.dtype}, got {out.dtype}")
    return out
