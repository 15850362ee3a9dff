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
        # fixed grids: called with the step's index after each step (instead of a StepHook,
        # whose presence would make the loop keep interpolation data in the solver state)
        self.on_fixed: Any = None
        self.init_after: set[int] = set()
        self.h0: float = 0.0

    def forget(self) -> None:
        """Drop the last step's tensors (its noise is a view of the loop's whole noise block)."""
        self.last = None
        self.last_res = None

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
        if self.on_fixed is not None:  # a fixed grid accepts every step: no hook needed
            self.on_fixed(self.accepted)
            self.accepted += 1
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


def loop_solver(s: Setup) -> Solver:
    """The solver the loop steps with: an adaptive SDE solve of a fixed-step scheme adapts it
    by step doubling (as :func:`sdeflow.solve.run` does)."""
    slv = s.solver
    if s.adaptive and s.is_sde and not slv.caps.adaptive and slv.noise_points == (0.0, 1.0):
        from ..solvers.adaptive_sde import StepDoubling  # noqa: PLC0415

        slv = StepDoubling(slv)
    return slv


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


# ------------------------------------------------------------------------------- noise
#: increments the loop draws at once in an adjoint's forward solve (``solve.run``'s
#: ``noise_block``; the loop's default, 2^22, is sized for speed; the increments do not depend on
#: the blocking -- counter-based seeds, pure-function trees, stored paths -- only the peak does)
ADJOINT_NOISE_BLOCK_ELEMS = 2**16


class NoiseReplay:
    """The Brownian increments a finished solve's step ``k`` got, asked again (docs/math.md
    §14.5): from the seed's counter-based stream (fixed steps, ``seed=``), or from the Brownian
    object (the user's, or a :class:`~sdeflow.BrownianTree` made from the seed for adaptive
    steps) queried at the step's times. Nothing is stored per step.

    :func:`prepare` fixes the source before the forward solve (it rewrites ``args``).
    """

    def __init__(self, solver: Solver, space_time: bool, shape: tuple[int, ...], like: Tensor,
                 seed: int | None, bm: Any) -> None:
        self.points = tuple(solver.noise_points)
        self.per = len(self.points) - 1
        self.space_time = space_time
        self.bm = bm
        self.src = None
        if bm is None:
            from ..brownian import SeededNoise  # noqa: PLC0415

            self.src = SeededNoise(shape, seed, like.dtype, like.device)

    def _pts(self, t: float, h: float, t_new: float) -> list[float]:
        return [t] + [t + p * h for p in self.points[1:-1]] + [t_new]

    def _draw(self, k: int, t: float, h: float, t_new: float) -> tuple[Tensor, Tensor | None]:
        pts = self._pts(t, h, t_new)
        if self.src is None:
            return self.bm.grid(pts, space_time=self.space_time)  # type: ignore[no-any-return]
        self.src.step = k * self.per
        hs = torch.tensor([b - a for a, b in zip(pts[:-1], pts[1:])], dtype=torch.float64)
        return self.src.increments(hs, self.space_time)

    def at(self, k: int, t: float, h: float, t_new: float) -> Any:
        """Step ``k``'s noise exactly as the loop handed it to the solver."""
        dw, it = self._draw(k, t, h, t_new)
        if self.per == 1:
            return (dw[0],) if it is None else (dw[0], it[0])
        if it is None:
            return [(d,) for d in dw.unbind(0)]
        return list(zip(dw.unbind(0), it.unbind(0)))

    def increment(self, k: int, t: float, h: float, t_new: float) -> Tensor:
        """``W(t_new) - W(t)`` of step ``k``."""
        if self.src is None:
            return self.bm.grid([t, t_new], space_time=False)[0][0]  # type: ignore[no-any-return]
        dw, _ = self._draw(k, t, h, t_new)
        return dw[0] if self.per == 1 else dw.sum(0)

    @staticmethod
    def prepare(s: Setup, args: dict[str, Any], solver: Solver) -> NoiseReplay | None:
        """The replay of an SDE solve stepped by ``solver`` (``None`` for ODEs); ``args`` get
        the seed or path."""
        if not s.is_sde:
            return None
        from ..brownian import BrownianTree  # noqa: PLC0415
        from ..brownian._common import check_seed  # noqa: PLC0415

        x0 = args["x0"]
        shape = brownian_shape(s, x0)
        bm = args["brownian"]
        seed = None
        if bm is None:
            seed = check_seed(args["seed"])  # a drawn seed is kept, so the replay matches
            if s.adaptive:  # an adaptive solve's own path forgets: a tree answers again
                lo, hi = min(s.t0, s.t1), max(s.t0, s.t1)
                bm = BrownianTree(shape, t0=lo, t1=hi, seed=seed, dtype=x0.dtype,
                                  device=x0.device)
                args.update(brownian=bm, seed=None)
            else:
                args["seed"] = seed
        return NoiseReplay(solver, solver.caps.space_time, shape, x0, seed, bm)


def brownian_shape(s: Setup, x0: Tensor) -> tuple[int, ...]:
    """The Brownian shape of the solve (general noise, and additive noise given as a
    ``(..., d, m)`` matrix: ``m`` from one diffusion call)."""
    p = s.problem
    m = None
    if p.noise in ("general", "additive"):  # type: ignore[union-attr]
        _, g = p._fields()  # type: ignore[union-attr]
        with torch.no_grad():
            m = int(g(torch.full((), s.t0, dtype=x0.dtype, device=x0.device), x0).shape[-1])
    return p.brownian_shape(x0.shape, m)  # type: ignore[union-attr]


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
