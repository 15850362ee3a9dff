"""``odeint`` / ``odeint_adjoint`` with torchdiffeq's signature and defaults (docs/compat.md).

Methods map onto sdeflow solvers; torchdiffeq's ``rk4`` is the 3/8-rule variant and ``heun3``
Heun's third-order method, both provided here with torchdiffeq's coefficients. Fixed-grid
methods step on ``t`` itself, or on a grid of ``options["step_size"]``; outputs between grid
points come from the solver's interpolant (torchdiffeq interpolates linearly by default).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..adjoint import solve_with
from ..controllers import PIController
from ..solvers.base import Solver
from ..solvers.registry import resolve
from ..solvers.rk import ButcherTableau, RungeKutta

Tensor = torch.Tensor


class RK4ThreeEighths(RungeKutta, register=False):
    """Kutta's 3/8 rule (torchdiffeq's ``rk4``), order 4."""

    name = "rk4_38"
    tableau = ButcherTableau(c=[0.0, 1 / 3, 2 / 3, 1.0],
                             a=[[], [1 / 3], [-1 / 3, 1.0], [1.0, -1.0, 1.0]],
                             b=[1 / 8, 3 / 8, 3 / 8, 1 / 8], order=4)


class Heun3(RungeKutta, register=False):
    """Heun's third-order method (torchdiffeq's ``heun3``)."""

    name = "heun3"
    tableau = ButcherTableau(c=[0.0, 1 / 3, 2 / 3], a=[[], [1 / 3], [0.0, 2 / 3]],
                             b=[0.25, 0.0, 0.75], order=3)


#: torchdiffeq method -> sdeflow solver (a name, or a class defined here)
ODE_METHODS: dict[str, str | type[Solver]] = {
    "dopri5": "dopri5", "bosh3": "bosh3", "tsit5": "tsit5", "adaptive_heun": "heun_euler",
    "euler": "euler", "midpoint": "midpoint", "heun2": "heun", "heun3": Heun3,
    "rk4": RK4ThreeEighths,
}
ADAPTIVE = ("dopri5", "bosh3", "tsit5", "adaptive_heun")
ADAPTIVE_OPTIONS = ("first_step", "safety", "ifactor", "dfactor", "max_num_steps", "step_t",
                    "grid_points", "jump_t")
FIXED_OPTIONS = ("step_size", "perturb")


class _Flat:
    """A tuple-of-tensors state as one flat vector."""

    def __init__(self, y0: tuple[Tensor, ...]) -> None:
        self.shapes = [y.shape for y in y0]
        self.sizes = [y.numel() for y in y0]

    def flat(self, ys: tuple[Tensor, ...]) -> Tensor:
        return torch.cat([y.reshape(-1) for y in ys])

    def split(self, v: Tensor) -> tuple[Tensor, ...]:
        lead = v.shape[:-1]
        parts = v.split(self.sizes, dim=-1)
        return tuple(p.reshape(*lead, *s) for p, s in zip(parts, self.shapes))


def _check_func(func: Any) -> None:
    if not callable(func):
        raise TypeError(f"func: expected a callable func(t, y), got {type(func).__name__}")


def _options(method: str, options: Any) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(f"options: expected a dict, got {type(options).__name__}")
    allowed = ADAPTIVE_OPTIONS if method in ADAPTIVE else FIXED_OPTIONS
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise ValueError(f"options: {bad} not supported with method={method!r}; supported: "
                         f"{', '.join(allowed)}")
    return dict(options)


def _args(func: Any, y0: Any, t: Any, rtol: float, atol: float, method: str | None,
          options: Any, event_fn: Any) -> tuple[dict[str, Any], _Flat | None]:
    _check_func(func)
    if event_fn is not None:
        raise ValueError("event_fn: not supported by sdeflow.compat.odeint; use "
                         "sdeflow.solve(..., event=sdeflow.Event(...))")
    method = "dopri5" if method is None else method
    if not isinstance(method, str) or method not in ODE_METHODS:
        raise ValueError(f"method: {method!r} is not supported; supported methods: "
                         f"{', '.join(ODE_METHODS)}")
    opts = _options(method, options)
    flat = None
    if isinstance(y0, tuple):
        if not y0 or not all(isinstance(y, Tensor) for y in y0):
            raise TypeError("y0: expected a tensor or a non-empty tuple of tensors")
        flat = _Flat(y0)
        fn = func

        def field(tt: Tensor, v: Tensor) -> Tensor:
            return flat.flat(tuple(fn(tt, flat.split(v))))  # type: ignore[union-attr]

        problem: Callable[..., Tensor] = field
        x0 = flat.flat(y0)
    else:
        problem, x0 = func, y0
    if not isinstance(t, Tensor):
        t = torch.as_tensor(t, dtype=torch.float64)
    if t.dim() != 1 or t.numel() < 2:
        raise ValueError(f"t: expected a 1-D tensor of at least two times, got shape "
                         f"{tuple(t.shape)}")
    spec = ODE_METHODS[method]
    args: dict[str, Any] = dict(problem=problem, x0=x0, t_span=None, ts=t, solver=resolve(spec),
                                steps=None, dt=None, rtol=None, atol=None, controller=None,
                                seed=None, brownian=None, save_all=False, dense=False,
                                step_ts=None, jump_ts=None, max_steps=None, dt0=None,
                                on_failure="raise")
    if method in ADAPTIVE:
        args.update(rtol=float(rtol), atol=float(atol))
        pi = {k2: opts[k1] for k1, k2 in (("safety", "safety"), ("ifactor", "fac_max"),
                                           ("dfactor", "fac_min")) if k1 in opts}
        if pi:
            args["controller"] = PIController(**pi)
        if "first_step" in opts:
            args["dt0"] = float(opts["first_step"])
        if "max_num_steps" in opts:
            args["max_steps"] = int(opts["max_num_steps"])
        st = opts.get("step_t", opts.get("grid_points"))
        if st is not None:
            args["step_ts"] = st
        if opts.get("jump_t") is not None:
            args["jump_ts"] = opts["jump_t"]
    else:
        tl = [float(v) for v in t.detach().tolist()]
        if "step_size" in opts:
            ss = opts["step_size"]
            if isinstance(ss, bool) or not isinstance(ss, (int, float, Tensor)) or not float(
                    ss) > 0:
                raise ValueError(f"options: step_size must be a positive number, got {ss!r}")
            args["dt"] = abs(float(ss))
            grid = _step_grid(tl[0], tl[-1], abs(float(ss)))
        else:
            args.update(steps=1, step_ts=tl)
            grid = tl
        perturb = opts.get("perturb", False)
        if not isinstance(perturb, bool):
            raise TypeError(f"options: perturb must be True or False, got {perturb!r}")
        if perturb and len(grid) > 2:
            args["jump_ts"] = grid[1:-1]  # stages see the left/right limits at grid points
    return args, flat


def _step_grid(t0: float, t1: float, dt: float) -> list[float]:
    import math  # noqa: PLC0415

    n = max(1, math.ceil(abs(t1 - t0) / dt - 1e-9))
    s = 1.0 if t1 > t0 else -1.0
    return [t0 + s * dt * k for k in range(n)] + [t1]


def _quiet(fn: Callable[..., Any], *a: Any, **k: Any) -> Any:
    """torchdiffeq warns of neither float32 tolerances nor parameter-free adjoints."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"rtol=.* is below what")
        warnings.filterwarnings("ignore", message=r"adjoint='backsolve': the problem has no")
        return fn(*a, **k)


def _out(ys: Tensor, flat: _Flat | None) -> Any:
    return ys if flat is None else flat.split(ys)


def odeint(func: Any, y0: Tensor | tuple[Tensor, ...], t: Tensor, *, rtol: float = 1e-7,
           atol: float = 1e-9, method: str | None = None, options: dict[str, Any] | None = None,
           event_fn: Any = None) -> Any:
    """torchdiffeq's ``odeint``: ``[len(t), *y0.shape]`` (a tuple for a tuple ``y0``).

    Gradients flow by backpropagation, to ``y0``, to the parameters and to ``t``.
    """
    args, flat = _args(func, y0, t, rtol, atol, method, options, event_fn)
    return _out(_quiet(solve_with, args, "backprop").ys, flat)


def odeint_adjoint(func: Any, y0: Tensor | tuple[Tensor, ...], t: Tensor, *,
                   rtol: float = 1e-7, atol: float = 1e-9, method: str | None = None,
                   options: dict[str, Any] | None = None, event_fn: Any = None,
                   adjoint_rtol: float | None = None, adjoint_atol: float | None = None,
                   adjoint_method: str | None = None,
                   adjoint_options: dict[str, Any] | None = None,
                   adjoint_params: Any = None) -> Any:
    """torchdiffeq's ``odeint_adjoint``: the continuous adjoint (``adjoint="backsolve"``).

    ``func`` must be an ``nn.Module`` unless ``adjoint_params`` lists the parameters.
    """
    if adjoint_params is None:
        if not isinstance(func, nn.Module):
            raise ValueError("adjoint_params: func is not an nn.Module, so its parameters "
                             "cannot be found; pass adjoint_params=[...] (or () for none)")
        adjoint_params = list(func.parameters())
    args, flat = _args(func, y0, t, rtol, atol, method, options, event_fn)
    m = method if adjoint_method is None else adjoint_method
    back_args, _ = _args(func, y0, t, rtol if adjoint_rtol is None else adjoint_rtol,
                         atol if adjoint_atol is None else adjoint_atol, m,
                         adjoint_options if adjoint_options is not None else (
                             options if adjoint_method is None else None), None)
    back = {k: back_args[k] for k in ("solver", "rtol", "atol", "controller", "max_steps")}
    back["adaptive"] = (m or "dopri5") in ADAPTIVE
    return _out(_quiet(solve_with, args, "backsolve", adjoint_params=adjoint_params,
                       backward=back).ys, flat)


__all__ = ["odeint", "odeint_adjoint", "ODE_METHODS", "RK4ThreeEighths", "Heun3"]
