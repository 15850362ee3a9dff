"""Log-likelihood of a flow by the divergence (instantaneous change of variables) ODE.

The formulas are docs/math.md §24.

Along the probability-flow ODE ``dX/dt = u_t(X)``, ``d/dt log p_t(X_t) = -div u_t(X_t)``. So for a
data point ``x`` the augmented state ``y = [x_t, l_t]`` ``(..., d + 1)`` obeys

    dx_t/dt = u_t(x_t),     dl_t/dt = div u_t(x_t),       x_{t1} = x, l_{t1} = 0,

solved with a core solver from ``t1`` back to ``t0``; then
``log p_{t1}(x) = log p_{t0}(x_{t0}) + l_{t0}`` (``l_{t0} = -int_{t0}^{t1} div u dt``).

The divergence is exact (``d`` autograd passes; for small ``d``) or Hutchinson's unbiased estimate
``E_v[v^T (du/dx) v]`` with Rademacher (or Gaussian) probes ``v`` drawn once per solve and kept
fixed along the trajectory (one vector-Jacobian product per probe). The divergence sums over the
batch, so the model must treat batch rows independently (no batch norm across rows).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

import sdeflow as sf

from ._utils import check_generator, check_positive_int, check_state
from .fields import ProbabilityFlowODE, _check_t_eps, default_t_span
from .paths import GaussianPath

Tensor = torch.Tensor

__all__ = ["log_prob", "divergence", "LikelihoodODE"]


def divergence(
    u: Tensor,
    x: Tensor,
    *,
    probes: Tensor | None = None,
    create_graph: bool = False,
) -> Tensor:
    """``div_x u`` ``(...)`` for ``u = f(x)`` ``(..., d)`` computed with autograd.

    Exact (``probes=None``): ``sum_i d u_i / d x_i`` with ``d`` backward passes. Hutchinson:
    ``probes`` ``(P, ..., d)``, returns the mean over ``P`` of ``v^T (du/dx) v``.
    """
    if probes is None:
        div = torch.zeros(u.shape[:-1], dtype=u.dtype, device=u.device)
        for i in range(u.shape[-1]):
            (g,) = torch.autograd.grad(
                u[..., i].sum(), x, retain_graph=True, create_graph=create_graph
            )
            div = div + g[..., i]
        return div
    est = torch.zeros(u.shape[:-1], dtype=u.dtype, device=u.device)
    for v in probes:
        (g,) = torch.autograd.grad(
            u, x, grad_outputs=v, retain_graph=True, create_graph=create_graph
        )
        est = est + (g * v).sum(-1)
    return est / probes.shape[0]


class LikelihoodODE(sf.ODE):
    """The augmented ODE ``d[x, l]/dt = [u_t(x), div u_t(x)]`` on a state ``(..., d + 1)``.

    Args:
        flow: a :class:`~sdeflow_generative.fields.ProbabilityFlowODE` (gives ``u_t``).
        probes: ``None`` for the exact trace, or fixed Hutchinson probes ``(P, ..., d)``.
        create_graph: keep the graph of the divergence (to differentiate the log-likelihood
            with respect to model parameters).
    """

    def __init__(
        self, flow: ProbabilityFlowODE, probes: Tensor | None = None, create_graph: bool = False
    ) -> None:
        self.flow = flow
        self.probes = probes
        self.create_graph = create_graph
        super().__init__()

    def vector_field(self, t: Tensor, y: Tensor) -> Tensor:
        x = y[..., :-1]
        with torch.enable_grad():
            if self.create_graph and x.requires_grad:
                xg = x
            else:
                xg = x.detach().requires_grad_(True)
            u = self.flow.velocity(xg, t)
            if not u.requires_grad:
                raise ValueError(
                    "model: its output does not depend on x through autograd (is it detached, or "
                    "computed under torch.no_grad inside the model?); log_prob needs d model / "
                    "dx for the divergence")
            div = divergence(u, xg, probes=self.probes, create_graph=self.create_graph)
        if not self.create_graph:
            u, div = u.detach(), div.detach()
        return torch.cat([u, div.unsqueeze(-1)], dim=-1)


def _standard_normal_log_prob(scale: float) -> Callable[[Tensor], Tensor]:
    def lp(y: Tensor) -> Tensor:
        d = y.shape[-1]
        const = d * (math.log(scale) + 0.5 * math.log(2 * math.pi))
        return -0.5 * (y / scale).pow(2).sum(-1) - const

    return lp


def log_prob(
    path: GaussianPath,
    model: Callable[..., Tensor],
    x: Tensor,
    param: str | None = None,
    *,
    cond: dict[str, Any] | None = None,
    solver: str = "rk4",
    steps: int | None = None,
    trace: str = "exact",
    n_probes: int = 1,
    probe: str = "rademacher",
    generator: torch.Generator | None = None,
    prior_log_prob: Callable[[Tensor], Tensor] | None = None,
    t_span: tuple[float, float] | None = None,
    t_eps: float = 1e-3,
    create_graph: bool = False,
    **solve_kwargs: Any,
) -> Tensor:
    """``log p_1(x)`` ``(...)`` of the flow of ``model`` for points ``x`` ``(..., d)``.

    Integrates :class:`LikelihoodODE` from ``t1`` back to ``t0`` with ``sdeflow.solve`` (see the
    module docstring for the formula).

    Args:
        path, model, param, cond: as :class:`~sdeflow_generative.fields.ProbabilityFlowODE`
            (``cond`` holds per-point labels ``{"y": y}`` with ``y`` ``x.shape[:-1]``, giving
            ``log p_1(x | y)``).
        x: points ``(..., d)``; dtype/device are followed.
        solver: a core ODE solver name (``"rk4"`` default; adaptive ones take ``rtol``/``atol``
            through ``solve_kwargs``).
        steps: fixed steps; default 100 when neither ``steps`` nor ``dt``/``rtol``/``atol`` given.
        trace: ``"exact"`` (default; ``d`` backward passes per evaluation) or ``"hutchinson"``.
        n_probes: Hutchinson probes per evaluation (averaged).
        probe: ``"rademacher"`` (default) or ``"gaussian"`` probe distribution.
        generator: random generator for the probes.
        prior_log_prob: ``log p_{t0}`` as a callable ``(..., d) -> (...)``. Default:
            ``N(0, beta_{t0}^2 I)``, exact when ``alpha_{t0} = 0`` (``p_0 = N(0, I)``) and an
            approximation otherwise (VariancePreserving, or ``t0 = t_eps``).
        t_span: ``(t0, t1)``; default: the probability-flow ODE's ``t_span`` for ``param``
            (``(0, 1)`` for velocity; an end moves in by ``t_eps`` where ``param`` is singular, and
            then the result is ``log p_{t1}(x)``).
        t_eps: see ``t_span``.
        create_graph: keep the autograd graph through the solve and the divergence, so the result
            can be differentiated (w.r.t. ``x`` or model parameters; second derivatives of the
            model are needed). Without it the result is detached.
        **solve_kwargs: passed to ``sdeflow.solve`` (``dt``, ``rtol``, ``atol``, ...).
    """
    check_state(x, "x")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x: contains NaN or inf")
    check_generator(generator)
    if torch.is_inference_mode_enabled():
        raise ValueError("log_prob: needs autograd for the divergence, which "
                         "torch.inference_mode disables; call it under torch.no_grad() instead "
                         "(gradients are enabled locally where needed)")
    flow = ProbabilityFlowODE(path, model, param, cond=cond, t_eps=_check_t_eps(t_eps))
    if t_span is None:
        t_span = default_t_span(*path.singular_ends(flow.param, "velocity"), flow.t_eps)
    if len(t_span) != 2:
        raise ValueError(f"t_span: expected (t0, t1), got {t_span!r}")
    t0, t1 = float(t_span[0]), float(t_span[1])
    if not 0.0 <= t0 < t1 <= 1.0:
        raise ValueError(f"t_span: expected 0 <= t0 < t1 <= 1, got {t_span!r}")
    if trace not in ("exact", "hutchinson"):
        raise ValueError(f"trace: expected 'exact' or 'hutchinson', got {trace!r}")
    probes = None
    if trace == "hutchinson":
        n_probes = check_positive_int(n_probes, "n_probes")
        shape = (n_probes, *x.shape)
        if probe == "rademacher":
            probes = torch.randint(0, 2, shape, generator=generator, device=x.device).to(x.dtype)
            probes = 2.0 * probes - 1.0
        elif probe == "gaussian":
            probes = torch.randn(shape, generator=generator, dtype=x.dtype, device=x.device)
        else:
            raise ValueError(f"probe: expected 'rademacher' or 'gaussian', got {probe!r}")
    if steps is None and not any(k in solve_kwargs for k in ("dt", "rtol", "atol")):
        steps = 100
    if steps is not None:
        solve_kwargs["steps"] = steps
    if prior_log_prob is None:
        beta0 = float(path.schedule(torch.tensor(t0, dtype=torch.float64)).beta)
        prior_log_prob = _standard_normal_log_prob(beta0)
    elif not callable(prior_log_prob):
        raise TypeError("prior_log_prob: expected a callable log p_t0(y)")
    aug = LikelihoodODE(flow, probes=probes, create_graph=create_graph)
    y1 = torch.cat([x, torch.zeros_like(x[..., :1])], dim=-1)
    sol = sf.solve(aug, y1, t_span=(t1, t0), solver=solver, **solve_kwargs)
    y0 = sol.x_final
    out = prior_log_prob(y0[..., :-1]) + y0[..., -1]
    return out if create_graph else out.detach()
