"""Pieces shared by the gradient strategies: parameters, the recording solver, output maps."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree

from .. import _checks as ck
from ..integrate import StepHook
from ..problems import ODE, SDE
from ..solvers.base import Solver, StepResult, Terms
from ._solve_mod import SOLVE as _solve

Tensor = torch.Tensor

MODES = ("backprop", "checkpoint", "backsolve", "reversible")


# ------------------------------------------------------------------------------ parameters
def discover(problem: Any) -> list[Tensor]:
    """Parameters (``requires_grad``) of the ``nn.Module`` s behind a problem's callables."""
    cands = [problem]
    for name in ("_u", "_drift", "_diffusion", "vector_field", "drift", "diffusion", "f", "g",
                 "func", "sde"):
        cands.append(getattr(problem, name, None))
    mods: list[nn.Module] = []
    for c in cands:
        if isinstance(c, nn.Module):
            mods.append(c)
        elif isinstance(getattr(c, "__self__", None), nn.Module):
            mods.append(c.__self__)  # type: ignore[union-attr]
    out: list[Tensor] = []
    seen: set[int] = set()
    for m in mods:
        for p in m.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def check_params(v: Any) -> list[Tensor]:
    """``adjoint_params``: a sequence of leaf tensors (those not requiring grad are skipped)."""
    if isinstance(v, Tensor):
        v = [v]
    if isinstance(v, (str, bytes, dict)) or not isinstance(v, (list, tuple)) and not hasattr(
            v, "__iter__"):
        raise TypeError(f"adjoint_params: expected a sequence of tensors (e.g. "
                        f"list(model.parameters())), got {type(v).__name__}")
    out: list[Tensor] = []
    for i, p in enumerate(list(v)):
        if not isinstance(p, Tensor):
            raise TypeError(f"adjoint_params: entry {i} is a {type(p).__name__}, expected a "
                            f"tensor")
        if not p.is_leaf:
            raise ValueError(f"adjoint_params: entry {i} is not a leaf tensor (it is computed "
                             f"from other tensors); pass the leaves it is computed from, or "
                             f"adjoint='backprop'")
        if p.requires_grad and all(p is not q for q in out):
            out.append(p)
    return out


# ----------------------------------------------------------------------------- the setting
@dataclass
class Setup:
    """Everything a strategy needs, checked before any work."""

    args: dict[str, Any]
    problem: ODE | SDE
    solver: Solver
    adaptive: bool
    t0: float
    t1: float
    outputs: list[float]
    params: list[Tensor]
    checkpoints: int | None
    is_sde: bool = field(init=False)
    backward: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.is_sde = isinstance(self.problem, SDE)


def setup(args: dict[str, Any], mode: str, adjoint_params: Any, checkpoints: Any) -> Setup:
    problem = ck.problem(args["problem"], args["t_span"])
    is_sde = isinstance(problem, SDE)
    ck.state(args["x0"], is_sde)
    t0, t1, outputs = ck.times(args["t_span"], args["ts"], args["x0"])
    _, adaptive = _solve._controller(args["steps"], args["dt"], args["rtol"], args["atol"],
                                     args["controller"], args["solver"])
    if args["dense"] is True:
        raise ValueError(f"dense: adjoint={mode!r} keeps no dense output; drop dense=True")
    if args["on_failure"] != "raise":
        raise ValueError(f"on_failure: adjoint={mode!r} needs a complete solve; use "
                         f"on_failure='raise'")
    if checkpoints is not None:
        if mode != "checkpoint":
            raise ValueError(f"checkpoints: only with adjoint='checkpoint' (got "
                             f"adjoint={mode!r})")
        if isinstance(checkpoints, bool) or not isinstance(checkpoints, int) or checkpoints < 1:
            raise ValueError(f"checkpoints: expected a positive int, got {checkpoints!r}")
    spec = args["solver"]
    if mode == "reversible":
        spec = _reversible_spec(spec, is_sde)
        if args["jump_ts"] is not None:
            raise ValueError("jump_ts: adjoint='reversible' cannot restart at jumps; use "
                             "adjoint='checkpoint'")
    slv = _solve._pick_solver(problem, spec, adaptive)
    if adjoint_params is None:
        params = discover(problem)
    else:
        params = check_params(adjoint_params)
    return Setup(args, problem, slv, adaptive, t0, t1, outputs, params, checkpoints)


def _reversible_spec(spec: Any, is_sde: bool) -> Any:
    from ..solvers.reversible import ReversibleHeun, ReversibleHeunODE  # noqa: PLC0415

    names = ("reversible_heun", "reversible_heun_ode")
    ok = spec is None or (isinstance(spec, str) and spec in names) or (
        isinstance(spec, (ReversibleHeun, ReversibleHeunODE))) or spec in (
        ReversibleHeun, ReversibleHeunODE)
    if not ok:
        raise ValueError(f"solver: adjoint='reversible' needs an algebraically reversible "
                         f"solver, solver='reversible_heun' (got {spec!r}); other solvers "
                         f"take adjoint='checkpoint' or 'backsolve'")
    return ReversibleHeun() if is_sde else ReversibleHeunODE()


# ----------------------------------------------------------------------------- recording
class Recording(Solver, register=False):
    """Wraps the solve's solver: remembers the fields, the last attempted step and restarts."""

    def __init__(self, inner: Solver) -> None:
        self.inner = inner
        self.caps = inner.caps  # type: ignore[misc]
        self.c = inner.c
        self.noise_points = inner.noise_points  # type: ignore[misc]
        self.name = inner.name  # type: ignore[misc]
        self.terms: Terms | None = None
        self.last: tuple[Any, ...] | None = None
        self.last_res: StepResult | None = None
        self.accepted = 0
        self.init_after: set[int] = set()
        self.h0: float = 0.0

    def init(self, terms: Terms, t0: float, x0: Tensor, h: float) -> Any:
        self.terms = terms
        if self.accepted:
            self.init_after.add(self.accepted - 1)
        else:
            self.h0 = h
        return self.inner.init(terms, t0, x0, h)

    def step(self, terms: Terms, tt: tuple[Tensor, ...], t: float, h: float, x: Tensor,
             state: Any, noise: Any) -> StepResult:
        self.terms = terms
        res = self.inner.step(terms, tt, t, h, x, state, noise)
        self.last = (tt, t, h, x, state, noise)
        self.last_res = res
        return res

    def interpolant(self, terms: Terms, t: float, h: float, x0: Tensor, x1: Tensor,
                    dense: Any) -> Any:
        return self.inner.interpolant(terms, t, h, x0, x1, dense)

    def controller_order(self, noise: str | None) -> float:
        return self.inner.controller_order(noise)

    def check(self, problem: Any) -> None:
        self.inner.check(problem)

    def for_kind(self, kind: str) -> Solver:
        return self


class StepLog(StepHook):
    """Counts accepted steps into the :class:`Recording` and calls ``on_step`` for each."""

    def __init__(self, rec: Recording, on_step: Any) -> None:
        self.rec, self.on_step = rec, on_step

    def accepted(self, t: float, t_new: float, x: Tensor, x_new: Tensor, interp: Any) -> None:
        self.on_step(self.rec.accepted, t, t_new)
        self.rec.accepted += 1
        return None


def output_map(outputs: Sequence[float], t0: float, t1: float, ends: Sequence[float],
               snap: float, save_every: bool) -> tuple[int, list[list[tuple[int, bool, float]]]]:
    """Which step saves which output (as :class:`sdeflow.integrate.Recorder` does).

    Returns ``(n_start, per_step)``: the outputs equal to ``x0`` and, per accepted step, the
    ``(output index, at the step's end, time)`` it saves.
    """
    d = 1.0 if t1 > t0 else -1.0
    tol = snap * abs(t1 - t0)
    per: list[list[tuple[int, bool, float]]] = [[] for _ in ends]
    if save_every:
        for k, e in enumerate(ends):
            per[k].append((k + 1, True, e))
        return 1, per
    oi = 0
    while oi < len(outputs) and abs(outputs[oi] - t0) <= tol:
        oi += 1
    n0 = oi
    for k, e in enumerate(ends):
        while oi < len(outputs) and d * (outputs[oi] - e) <= tol:
            per[k].append((oi, abs(outputs[oi] - e) <= tol, outputs[oi]))
            oi += 1
    return n0, per


def tensors_of(state: Any) -> list[Tensor]:
    return [v for v in _pytree.tree_flatten(state)[0] if isinstance(v, Tensor)]


def detach_state(state: Any, grad: bool) -> tuple[Any, list[Tensor]]:
    """A copy of ``state`` with detached tensors (leaves requiring grad when ``grad``)."""
    leaves, spec = _pytree.tree_flatten(state)
    new, ts = [], []
    for v in leaves:
        if isinstance(v, Tensor):
            w = v.detach()
            if grad and w.is_floating_point():
                w = w.requires_grad_(True)
            ts.append(w)
            new.append(w)
        else:
            new.append(v)
    return _pytree.tree_unflatten(new, spec), ts


def no_params_warning(mode: str) -> None:
    warnings.warn(f"adjoint={mode!r}: the problem has no parameters that require grad (none "
                  f"found in nn.Module callables; pass adjoint_params=...); computing x0 "
                  f"gradients only", RuntimeWarning, stacklevel=4)


def snap_of(args: dict[str, Any], t0: float, t1: float) -> float:
    return ck.snap(t0, t1, args["ts"])


class EngineFunction(torch.autograd.Function):
    """The autograd node of every gradient strategy: ``engine.forward()`` gives the solution's
    ``ys`` without a graph; ``engine.backward(x0, grad_ys) -> (grad_x0, grad_params)`` gives the
    gradients by the strategy's own means (replay, adjoint ODE, algebraic inversion)."""

    @staticmethod
    def forward(ctx: Any, engine: Any, x0: torch.Tensor, *params: torch.Tensor  # type: ignore[override]
                ) -> torch.Tensor:
        sol = engine.forward()
        ctx.engine = engine
        ctx.save_for_backward(x0)
        return sol.ys

    @staticmethod
    def backward(ctx: Any, grad_ys: torch.Tensor) -> Any:  # type: ignore[override]
        (x0,) = ctx.saved_tensors
        g_x, gp = ctx.engine.backward(x0, grad_ys)
        return (None, g_x, *gp)
