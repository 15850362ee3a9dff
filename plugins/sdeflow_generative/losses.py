"""Conditional matching losses for Gaussian paths: CFM, DSM, DDPM and x0 regression in one.

For data ``z = x1`` (the data end, ``t = 1``), noise ``eps ~ N(0, I)``, a time ``t`` and
``x = alpha_t z + beta_t eps`` (docs/math.md §20.2), the per-sample loss of a model in
parameterization ``param`` is

    l(t, z, eps) = w(t) * || model(x, t[, y]) - target ||^2        (sum over non-batch dims)

with the conditional target of that parameterization:

=============  ============================  =========================================
``param``      target                        name
=============  ============================  =========================================
``velocity``   ``alpha_dot z + beta_dot eps``  conditional flow matching (CFM)
``score``      ``-eps / beta``               denoising score matching (DSM)
``eps``        ``eps``                       DDPM noise prediction
``x0``         ``z``                         data (x0) regression
=============  ============================  =========================================

Each regresses onto the conditional field, so its gradient equals that of the regression onto the
marginal field (``L_CFM = L_FM + const``, ``L_DSM = L_SM + const``, docs/math.md §25).

Weighting ``w(t)`` (default 1): a callable ``w(t)`` ``(B,) -> (B,)``, or the name of another
parameterization ``q``: the error is then measured in ``q``. Every conversion is affine in the
model output, ``v_q = a(t) x + b(t) v_param``, so this is ``w(t) = b(t)^2`` (for example
``param="score", weighting="eps"`` gives ``beta^2 ||s + eps / beta||^2``, the DDPM loss).

Times: ``"uniform"`` (``U(0, 1)``), ``"logit_normal"`` (``sigmoid(N(0, 1))``, SD3's default), a
:class:`LogitNormal` with other parameters, or any callable ``sampler(n, generator, dtype,
device) -> (n,)`` in [0, 1].

Label dropout replaces each label by ``null_label`` with probability ``label_dropout`` (train
one network for classifier-free guidance). ``coupling="ot"`` pairs the batch's noise with its data
by an exact minimal-cost assignment of ``||eps_i - z_j||^2`` (minibatch OT-CFM, Tong et al. 2023;
``scipy.optimize.linear_sum_assignment``); labels stay with their data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment

from .models import Model, call_model, resolve_param
from .paths import PARAMETERIZATIONS, GaussianPath

Tensor = torch.Tensor
TimeSampler = Callable[[int, "torch.Generator | None", torch.dtype, torch.device], Tensor]

__all__ = ["ConditionalMatching", "LogitNormal", "uniform_times", "ot_pairing"]


def uniform_times(
    n: int, generator: torch.Generator | None, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """``t ~ U(0, 1)`` ``(n,)`` (torch.rand: ``t`` in ``[0, 1)``)."""
    return torch.rand(n, generator=generator, dtype=dtype, device=device)


class LogitNormal:
    """``t = sigmoid(loc + scale * n)``, ``n ~ N(0, 1)``: times concentrated inside ``(0, 1)``."""

    def __init__(self, loc: float = 0.0, scale: float = 1.0) -> None:
        for name, v in (("loc", loc), ("scale", scale)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name}: expected a finite float, got {v!r}")
        if scale <= 0:
            raise ValueError(f"scale: expected > 0, got {scale}")
        self.loc, self.scale = float(loc), float(scale)

    def __call__(
        self, n: int, generator: torch.Generator | None, dtype: torch.dtype, device: torch.device
    ) -> Tensor:
        z = torch.randn(n, generator=generator, dtype=dtype, device=device)
        return torch.sigmoid(self.loc + self.scale * z)

    def __repr__(self) -> str:
        return f"LogitNormal(loc={self.loc}, scale={self.scale})"


def ot_pairing(eps: Tensor, z: Tensor) -> Tensor:
    """Indices ``perm`` ``(B,)`` minimising ``sum_i ||eps[perm[i]] - z[i]||^2`` (exact, on the
    batch): the minibatch optimal-transport coupling. ``eps`` and ``z`` are ``(B, ...)``."""
    a = eps.detach().reshape(eps.shape[0], -1).double().cpu()
    b = z.detach().reshape(z.shape[0], -1).double().cpu()
    cost = torch.cdist(b, a).pow(2).numpy()  # cost[i, j] = ||z_i - eps_j||^2
    rows, cols = linear_sum_assignment(cost)
    perm = torch.empty(len(rows), dtype=torch.int64)
    perm[torch.as_tensor(rows)] = torch.as_tensor(cols, dtype=torch.int64)
    return perm.to(eps.device)


def _check_labels(y: object, batch: int, name: str = "y") -> Tensor:
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.is_complex() or (
        y.dtype == torch.bool
    ):
        desc = f"dtype {y.dtype}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise TypeError(f"{name}: expected an integer tensor of labels, got {desc}")
    if tuple(y.shape) != (batch,):
        raise ValueError(f"{name}: expected labels of shape ({batch},), got {tuple(y.shape)}")
    if y.numel() and int(y.min()) < 0:
        raise ValueError(f"{name}: expected labels >= 0, got {int(y.min())}")
    return y


class ConditionalMatching:
    """One loss for every parameterization of a Gaussian path (module docstring).

    Args:
        path: the :class:`~sdeflow_generative.GaussianPath`.
        param: the model's parameterization (``"velocity"``: CFM, ``"score"``: DSM, ``"eps"``:
            DDPM, ``"x0"``); a model's declared ``param`` must agree.
        time_sampler: ``"uniform"``, ``"logit_normal"`` or a callable (module docstring).
        weighting: ``None``, a parameterization name, or a callable ``w(t)`` (module docstring).
        label_dropout: probability in ``[0, 1)`` of replacing a label by ``null_label``.
        null_label: the label meaning "no label" (for a network with ``num_classes=K`` it is
            ``K``); required when ``label_dropout > 0``; must not occur among the real labels.
        coupling: ``None`` (independent noise) or ``"ot"`` (minibatch optimal transport).
    """

    def __init__(
        self,
        path: GaussianPath,
        param: str = "velocity",
        *,
        time_sampler: str | TimeSampler = "uniform",
        weighting: str | Callable[[Tensor], Tensor] | None = None,
        label_dropout: float = 0.0,
        null_label: int | None = None,
        coupling: str | None = None,
    ) -> None:
        if not isinstance(path, GaussianPath):
            raise TypeError(f"path: expected a GaussianPath, got {type(path).__name__}")
        if param not in PARAMETERIZATIONS:
            raise ValueError(f"param: expected one of {PARAMETERIZATIONS}, got {param!r}")
        self.path = path
        self.param = str(param)
        if time_sampler == "uniform":
            self.time_sampler: TimeSampler = uniform_times
        elif time_sampler == "logit_normal":
            self.time_sampler = LogitNormal()
        elif callable(time_sampler):
            self.time_sampler = time_sampler
        else:
            raise ValueError(
                "time_sampler: expected 'uniform', 'logit_normal' or a callable "
                f"sampler(n, generator, dtype, device), got {time_sampler!r}"
            )
        if weighting is not None and not callable(weighting) and weighting not in PARAMETERIZATIONS:
            raise ValueError(
                f"weighting: expected None, one of {PARAMETERIZATIONS} or a callable w(t), "
                f"got {weighting!r}"
            )
        self.weighting = weighting
        if isinstance(label_dropout, bool) or not isinstance(label_dropout, (int, float)) or not (
            0.0 <= float(label_dropout) < 1.0
        ):
            raise ValueError(
                f"label_dropout: expected a probability in [0, 1), got {label_dropout!r}"
            )
        self.label_dropout = float(label_dropout)
        if null_label is not None and (
            isinstance(null_label, bool) or not isinstance(null_label, int) or null_label < 0
        ):
            raise ValueError(f"null_label: expected a non-negative int or None, got {null_label!r}")
        if self.label_dropout > 0 and null_label is None:
            raise ValueError(
                "null_label: label_dropout > 0 replaces labels by the null label; pass it "
                "(for a network with num_classes=K it is K)"
            )
        self.null_label = null_label
        if coupling not in (None, "ot"):
            raise ValueError(f"coupling: expected None or 'ot', got {coupling!r}")
        self.coupling = coupling

    def __repr__(self) -> str:
        return (
            f"ConditionalMatching({self.path!r}, param={self.param!r}, "
            f"label_dropout={self.label_dropout}, null_label={self.null_label}, "
            f"coupling={self.coupling!r})"
        )

    # ------------------------------------------------------------------ pieces
    def target(self, z: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """The conditional target of ``param`` at ``x = alpha z + beta eps`` (module table)."""
        if self.param == "eps":
            return eps
        if self.param == "x0":
            return z
        v = self.path.schedule(t)
        shape = (-1,) + (1,) * (z.dim() - 1)
        if self.param == "velocity":
            return v.alpha_dot.reshape(shape) * z + v.beta_dot.reshape(shape) * eps
        beta = v.beta.reshape(shape)
        if bool((beta == 0).any()):
            raise ValueError(
                "t: the score target -eps / beta_t is infinite where beta_t = 0 (t = 1); "
                "sample t in [0, 1)"
            )
        return -eps / beta

    def weight(self, t: Tensor, x: Tensor) -> Tensor | None:
        """``w(t)`` ``(B,)``, or None for no weighting (module docstring)."""
        w = self.weighting
        if w is None or w == self.param:
            return None
        if isinstance(w, str):
            flat = x.reshape(x.shape[0], -1)[:, :1]
            b = self.path.convert(torch.ones_like(flat), torch.zeros_like(flat), t, self.param, w)
            return b.reshape(-1).pow(2)
        out = w(t)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(t.shape):
            raise ValueError(f"weighting: expected w(t) to return shape {tuple(t.shape)}")
        return out

    def sample_times(self, n: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
        """``n`` training times ``(n,)`` from the time sampler, on ``like``'s dtype/device."""
        t = self.time_sampler(n, generator, like.dtype, like.device)
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (n,):
            raise ValueError(f"time_sampler: expected a tensor of shape ({n},)")
        return t.to(dtype=like.dtype, device=like.device)

    def _check_null(self, model: object, y: Tensor) -> None:
        if self.null_label is None:
            return
        k = getattr(model, "num_classes", None)  # declared by the networks
        if isinstance(k, int) and self.null_label < k:
            raise ValueError(
                f"null_label: {self.null_label} is a real class of the model (num_classes={k}); "
                f"its null label is {k}"
            )
        if bool((y == self.null_label).any()):
            raise ValueError(
                f"null_label: {self.null_label} occurs among the labels y; the null label must "
                "not be a real class"
            )

    # ------------------------------------------------------------------ losses
    def per_sample(
        self, model: Model, x1: Tensor, t: Tensor, eps: Tensor, y: Tensor | None = None
    ) -> Tensor:
        """Per-sample losses ``(B,)`` at given times ``t`` ``(B,)`` and noise ``eps`` (``x1``'s
        shape ``(B, ...)``): ``w(t) ||model(alpha x1 + beta eps, t, y) - target||^2``.

        Labels ``y`` ``(B,)`` reach the model unchanged (no dropout here)."""
        resolve_param(model, self.param)
        if not isinstance(x1, torch.Tensor) or not x1.is_floating_point() or x1.dim() < 2:
            desc = tuple(x1.shape) if isinstance(x1, torch.Tensor) else type(x1).__name__
            raise ValueError(f"x1: expected a floating tensor of shape (B, ...), got {desc}")
        B = x1.shape[0]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (B,):
            raise ValueError(f"t: expected a tensor of shape ({B},)")
        if not isinstance(eps, torch.Tensor) or eps.shape != x1.shape:
            raise ValueError(f"eps: expected x1's shape {tuple(x1.shape)}")
        t = t.to(dtype=x1.dtype)
        cond: dict[str, Any] = {}
        if y is not None:
            cond["y"] = _check_labels(y, B)
        x = self.path.sample(x1, t, eps)
        target = self.target(x1, eps, t)
        out = call_model(model, x, t, cond)
        err = (out - target).reshape(B, -1).pow(2).sum(-1)
        w = self.weight(t, x)
        return err if w is None else w * err

    def draw(
        self, x1: Tensor, y: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """The random part of a loss evaluation: ``(x1, t, eps, y)`` with ``t`` from the time
        sampler, ``eps ~ N(0, I)`` (OT-paired with ``x1`` when ``coupling="ot"``), and labels
        dropped to ``null_label`` with probability ``label_dropout``. Draw order: t, eps, mask."""
        B = x1.shape[0]
        t = self.sample_times(B, generator, x1)
        eps = torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device=x1.device)
        if self.coupling == "ot":
            eps = eps[ot_pairing(eps, x1)]
        if self.label_dropout > 0:
            if y is None:
                raise ValueError("y: label_dropout > 0 needs labels")
            drop = torch.rand(B, generator=generator, device=x1.device) < self.label_dropout
            null = torch.full_like(y, int(self.null_label))  # type: ignore[arg-type]
            y = torch.where(drop.to(y.device), null, y)
        return x1, t, eps, y

    def __call__(
        self,
        model: Model,
        x1: Tensor,
        y: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The mean of :meth:`per_sample` over the batch ``x1`` ``(B, ...)`` at random
        ``(t, eps)`` (and label dropout): a scalar."""
        resolve_param(model, self.param)
        if not isinstance(x1, torch.Tensor) or not x1.is_floating_point() or x1.dim() < 2:
            desc = tuple(x1.shape) if isinstance(x1, torch.Tensor) else type(x1).__name__
            raise ValueError(f"x1: expected a floating tensor of shape (B, ...), got {desc}")
        if y is not None:
            y = _check_labels(y, x1.shape[0])
            self._check_null(model, y)
        elif self.label_dropout > 0:
            raise ValueError("y: label_dropout > 0 needs labels")
        x1, t, eps, y = self.draw(x1, y, generator)
        return self.per_sample(model, x1, t, eps, y).mean()
