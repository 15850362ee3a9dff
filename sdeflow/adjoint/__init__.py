"""Gradients of solves: ``sf.solve(..., adjoint=...)`` (docs/gradients.md).

* ``"backprop"`` (default): autograd through every step.
* ``"checkpoint"``: exact gradients of the discretisation in bounded memory, by binomial
  checkpointing (:mod:`.checkpoint`, :mod:`.revolve`; ``checkpoints=`` sets how many carries
  are kept).
* ``"backsolve"``: the continuous adjoint solved backwards, O(1) memory in the steps
  (:mod:`.backsolve`).
* ``"reversible"``: ``solver="reversible_heun"`` inverted step by step, exact in O(1) memory
  (:mod:`.reversible`).

Parameters are found from the problem's ``nn.Module`` callables, or given as
``adjoint_params=``. With ``ts`` requiring grad (ODEs), gradients flow to the times as well:
``dL/dt_i = <dL/dy_i, u(t_i, y_i)>`` and ``dL/dt_0 = -<dL/dx_0, u(t_0, x_0)>`` (the exact
derivatives of the flow; docs/math.md §14.4).
"""

from __future__ import annotations

from typing import Any

import torch

from ..problems import ODE
from ..solution import Solution
from ._common import MODES, discover, setup
from ._solve_mod import SOLVE as _solve

Tensor = torch.Tensor


def solve_with(args: dict[str, Any], mode: str = "backprop", adjoint_params: Any = None,
               checkpoints: Any = None, backward: dict[str, Any] | None = None) -> Solution:
    """``solve``'s arguments ``args`` with the gradient strategy ``mode``.

    ``backward``: for ``"backsolve"`` on an ODE, solve arguments of the backward pass
    (``solver``, ``rtol``, ``atol``, ``controller``, ``max_steps``, and ``adaptive``).
    """
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"adjoint: expected one of {MODES}, got {mode!r}")
    args = dict(args)
    ts = args.get("ts")
    t_grad = isinstance(ts, Tensor) and ts.requires_grad
    if t_grad:
        args["ts"] = ts.detach()
    if mode == "backprop" and adjoint_params is not None:
        raise ValueError("adjoint_params: only with adjoint='checkpoint', 'backsolve' or "
                         "'reversible' (backprop finds every tensor by itself)")
    if mode == "backprop" and checkpoints is not None:
        raise ValueError("checkpoints: only with adjoint='checkpoint'")
    x0 = args["x0"]
    s = setup(args, mode, adjoint_params, checkpoints)
    s.backward = dict(backward or {})
    if t_grad:
        if s.is_sde:
            raise ValueError("ts: gradients with respect to the times are computed for ODEs "
                             "only; pass ts.detach()")
        u = s.problem._field()  # type: ignore[union-attr]
        t0 = ts[0]
        with torch.no_grad():
            f0 = u(t0.detach(), x0.detach())
        args["x0"] = x0 - (t0 - t0.detach()) * f0
        s.args = args
    needs = torch.is_grad_enabled() and (args["x0"].requires_grad or any(
        p.requires_grad for p in s.params))
    if mode == "backprop" or not needs:
        if mode == "reversible":
            args = dict(args, solver=s.solver)
            if not s.is_sde and args["ts"] is not None and args["step_ts"] is None:
                args["step_ts"] = args["ts"]
        sol = _solve.run(**args)
    elif mode == "checkpoint":
        from .checkpoint import solve_checkpoint  # noqa: PLC0415

        sol = solve_checkpoint(s)
    elif mode == "backsolve":
        from .backsolve import solve_backsolve  # noqa: PLC0415

        sol = solve_backsolve(s)
    else:
        from .reversible import solve_reversible  # noqa: PLC0415

        sol = solve_reversible(s)
    if t_grad:
        u = s.problem._field()  # type: ignore[union-attr]
        tsd = ts.detach()
        with torch.no_grad():
            fs = torch.stack([u(tsd[i], sol.ys[i].detach()) for i in range(len(tsd))])
        view = (-1,) + (1,) * (sol.ys.dim() - 1)
        ys = sol.ys + (ts - tsd).to(sol.ys.dtype).view(view) * fs
        sol = Solution(ts=sol.ts, ys=ys, stats=sol.stats, status=sol.status,
                       t_reached=sol.t_reached)
    return sol


class _Extension:
    """``solve``'s hook for ``adjoint=``, ``adjoint_params=`` and ``checkpoints=``."""

    def __init__(self, default: Any) -> None:
        self.default = default

    def __call__(self, args: dict[str, Any], extra: dict[str, Any]) -> Solution:
        mode = extra.get("adjoint", "backprop")
        if mode is None:
            mode = "backprop"
        return solve_with(args, mode, extra.get("adjoint_params"), extra.get("checkpoints"))


_solve.EXTENSIONS["adjoint"] = _Extension("backprop")
_solve.EXTENSIONS["adjoint_params"] = _Extension(None)
_solve.EXTENSIONS["checkpoints"] = _Extension(None)

__all__ = ["solve_with", "discover", "MODES", "ODE"]
