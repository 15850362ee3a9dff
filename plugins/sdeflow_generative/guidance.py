"""Classifier-free guidance (docs/math.md §21, §25).

``ClassifierFree(model, scale=w, null_label)`` is itself a model ``m_w(x, t, y=labels)``:

    m_w(x, t | y) = (1 - w) m(x, t | null) + w m(x, t | y)

in the model's own parameterization. ``w = 1`` is the plain conditional model, ``w = 0`` the
unconditional one, ``w > 1`` extrapolates away from the unconditional prediction.

**The same field in every parameterization.** Every conversion of a Gaussian path maps a value
``v`` to ``a(t) x + b(t) v`` with the same ``a, b`` for both terms, and ``(1 - w) + w = 1``, so
guiding the velocity, the score, the noise or the data prediction gives one and the same field.

**Scales of other libraries.** ``w`` here is the ``guidance_scale`` of diffusers (``noise_uncond +
s (noise_text - noise_uncond)``), and equals ``1 + w'`` for the ``w'`` of Meta's flow_matching CFG
example (``(1 + w') u(x|y) - w' u(x|null)``).

Both terms come from one call of the model on the doubled batch ``[x; x]`` with labels
``[null; y]`` (the model must treat rows independently, as :mod:`~sdeflow_generative.nets` do).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .models import Model, call_model, resolve_param

Tensor = torch.Tensor

__all__ = ["ClassifierFree"]


class ClassifierFree:
    """Classifier-free guided model (module docstring).

    Args:
        model: a label-conditional model ``model(x, t, y=labels)``, trained with label dropout.
        scale: the guidance scale ``w`` (a finite float).
        null_label: the label meaning "no label" (``num_classes`` for the networks of
            :mod:`~sdeflow_generative.nets`); required.
        param: the model's parameterization; default its declared ``param``, else velocity.

    Attributes:
        param: the parameterization of the guided output (that of the model).
    """

    def __init__(
        self, model: Model, scale: float, null_label: int | None, *, param: str | None = None
    ) -> None:
        self.param = resolve_param(model, param)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(
            scale
        ):
            raise ValueError(f"scale: expected a finite float, got {scale!r}")
        if null_label is None:
            raise ValueError(
                "null_label: classifier-free guidance needs the null label the model was trained "
                "with (label dropout); for a network with num_classes=K it is K"
            )
        if isinstance(null_label, bool) or not isinstance(null_label, int) or null_label < 0:
            raise ValueError(f"null_label: expected a non-negative int, got {null_label!r}")
        k = getattr(model, "num_classes", None)  # declared by the networks
        if isinstance(k, int) and null_label < k:
            raise ValueError(
                f"null_label: {null_label} is a real class of the model (num_classes={k}); its "
                f"null label is {k}"
            )
        self.model = model
        self.scale = float(scale)
        self.null_label = int(null_label)
        self.num_classes = k

    def __repr__(self) -> str:
        return (
            f"ClassifierFree(scale={self.scale}, null_label={self.null_label}, "
            f"param={self.param!r})"
        )

    def __call__(self, x: Tensor, t: Tensor, y: Tensor | None = None, **cond: Any) -> Tensor:
        """``(1 - w) model(x, t, y=null) + w model(x, t, y=y)`` ``x``'s shape; ``y`` ``(B,)``."""
        if y is None:
            raise ValueError("y: classifier-free guidance needs labels (cond={'y': labels})")
        if not isinstance(y, torch.Tensor) or y.is_floating_point() or tuple(y.shape) != (
            x.shape[0],
        ):
            raise ValueError(f"y: expected integer labels of shape ({x.shape[0]},)")
        if self.scale == 1.0:
            return call_model(self.model, x, t, {**cond, "y": y})
        null = torch.full_like(y, self.null_label)
        if self.scale == 0.0:
            return call_model(self.model, x, t, {**cond, "y": null})
        tt = t.expand(x.shape[0]) if t.dim() == 0 else t
        both = call_model(
            self.model,
            torch.cat([x, x]),
            torch.cat([tt, tt]),
            {**cond, "y": torch.cat([null, y])},
        )
        uncond, condl = both.chunk(2)
        return (1.0 - self.scale) * uncond + self.scale * condl
