"""``solve()``: input checks, the time loop, saving, statistics and errors.

One loop serves every fixed-step solver: a solver only supplies a step function (see
``sdeflow.solvers.base``). Per step the loop does no host synchronisation: the state is checked
for NaN/inf once per block of steps, and if a block went non-finite it is replayed from its start
(same noise) to find the exact step where the problem appeared.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from . import solvers as _solvers
from .brownian import BrownianPath, BrownianTree, SeededNoise, check_compatible
from .control import fixed_grid
from .errors import NonFiniteError
from .problems import ODE, SDE, Field
from .solution import Solution
from .solvers.base import ODESolver, SDESolver, Solver

Tensor = torch.Tensor

ODE_BLOCK = 256          # steps between two finiteness checks
NOISE_BLOCK_ELEMS = 2**22  # Brownian increments drawn per batch (elements)


def solve(
    problem: ODE | SDE,
    x0: Tensor,
    t_span: Sequence[float] | Tensor | None = None,
    *,
    ts: Sequence[float] | Tensor | None = None,
    solver: str | Solver | type[Solver] | None = None,
    steps: int | None = None,
    dt: float | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int | None = None,
    brownian: BrownianPath | BrownianTree | None = None,
    save_all: bool = False,
    **adaptive: Any,
) -> Solution:
    """Solve an ODE or SDE from ``x0``.

    Args:
        problem: an :class:`~sdeflow.ODE` or :class:`~sdeflow.SDE`.
        x0: initial state; any shape for an ODE, ``(..., d)`` for an SDE. Its dtype and device
            are kept throughout.
        t_span: ``(t_start, t_end)``; saves both ends (every step with ``save_all=True``).
        ts: ``[T]`` strictly monotone output times (instead of ``t_span``); the solve runs from
            ``ts[0]`` to ``ts[-1]`` and saves at each. Time may run backwards.
        solver: a name (see ``sdeflow.solvers.names()``), a solver class or instance. Default:
            ``rk4`` (fixed step) / ``dopri5`` (adaptive) for ODEs, ``euler_maruyama`` for Ito and
            ``stochastic_heun`` for Stratonovich SDEs (adaptive: ``adaptive_milstein``,
            ``adaptive_em`` for additive and general noise, ``adaptive_stochastic_heun``).
        steps: number of equal fixed steps over the span.
        dt: fixed step size (> 0; its sign follows the span).
        rtol, atol: tolerances of an adaptive solve.
        seed: seed of the Brownian increments (SDEs); same seed, same result.
        brownian: a :class:`~sdeflow.BrownianPath` to drive the SDE (shares one path across
            solves at different step sizes). Conflicts with ``seed``.
        save_all: with ``t_span``, save every step.
        **adaptive: options of adaptive solves (``controller``, ``max_steps``, ``dt0``,
            ``step_ts``, ``jump_ts``, ``on_failure``, ``dense``).

    Returns:
        a :class:`~sdeflow.Solution` with ``ts [T]``, ``ys [T, *x0.shape]`` and ``stats``.

    Raises:
        ValueError: bad input, naming the argument (shapes, times, step arguments, solver).
        NonFiniteError: the state became NaN/inf; the message gives the time.
    """
    if not isinstance(problem, (ODE, SDE)):
        raise TypeError(f"problem: expected an sdeflow ODE or SDE, got {type(problem).__name__}")
    is_sde = isinstance(problem, SDE)
    if not isinstance(x0, Tensor):
        raise TypeError(f"x0: expected a torch.Tensor, got {type(x0).__name__}")
    if not x0.is_floating_point():
        raise ValueError(f"x0: expected a floating-point tensor, got dtype {x0.dtype}")
    if is_sde and x0.dim() == 0:
        raise ValueError("x0: an SDE state needs shape (..., d), got a 0-dim tensor")
    if not bool(torch.isfinite(x0).all()):
        raise ValueError("x0: contains NaN or inf")

    t_start, t_end, outputs = _times(t_span, ts)
    adaptive_mode = _step_mode(steps, dt, rtol, atol, solver, adaptive)
    slv = _pick_solver(problem, solver, adaptive_mode)
    if adaptive_mode:
        from .adaptive import solve_adaptive  # noqa: PLC0415  (only adaptive solves need it)

        return solve_adaptive(problem, x0, slv, t_start, t_end, outputs, ts is not None,
                              save_all, rtol, atol, seed, brownian, **adaptive)
    if adaptive:
        raise ValueError(
            f"{', '.join(sorted(adaptive))}: options of adaptive solves; pass rtol/atol or "
            f"an adaptive solver"
        )
    if seed is not None and brownian is not None:
        raise ValueError("seed, brownian: pass one of them (a BrownianPath carries its own seed)")

    snap = 1e-10
    if isinstance(ts, Tensor) and ts.is_floating_point():
        scale = max(abs(t_start), abs(t_end)) / abs(t_end - t_start)
        snap = max(snap, 8 * torch.finfo(ts.dtype).eps * max(1.0, scale))
    grid, out_index = fixed_grid(t_start, t_end, steps, dt, outputs if ts is not None else (),
                                 snap)
    if ts is None:
        out_index = list(range(len(grid))) if save_all else [0, len(grid) - 1]
    return _fixed(problem, x0, slv, grid, out_index, seed, brownian)


# ---------------------------------------------------------------------------------- arguments
def _times(
    t_span: Sequence[float] | Tensor | None, ts: Sequence[float] | Tensor | None
) -> tuple[float, float, list[float]]:
    if (t_span is None) == (ts is None):
        raise ValueError("t_span, ts: pass exactly one of them")
    if ts is not None:
        vals = ts.detach().reshape(-1).tolist() if isinstance(ts, Tensor) else list(ts)
        if isinstance(ts, Tensor) and ts.dim() != 1:
            raise ValueError(f"ts: expected a 1-D sequence of times, got shape {tuple(ts.shape)}")
        if len(vals) < 2:
            raise ValueError(f"ts: expected at least two times, got {len(vals)}")
        vals = [float(v) for v in vals]
        if not all(math.isfinite(v) for v in vals):
            raise ValueError("ts: contains NaN or inf")
        d = [b - a for a, b in zip(vals[:-1], vals[1:])]
        if not (all(x > 0 for x in d) or all(x < 0 for x in d)):
            raise ValueError("ts: expected strictly monotone times (all increasing or all "
                             f"decreasing), got {vals if len(vals) <= 8 else vals[:8] + ['...']}")
        return vals[0], vals[-1], vals
    vals = t_span.detach().reshape(-1).tolist() if isinstance(t_span, Tensor) else list(t_span)
    if len(vals) != 2:
        raise ValueError(f"t_span: expected (t_start, t_end), got {len(vals)} values")
    a, b = float(vals[0]), float(vals[1])
    if not (math.isfinite(a) and math.isfinite(b)) or a == b:
        raise ValueError(f"t_span: expected two distinct finite times, got ({a}, {b})")
    return a, b, [a, b]


def _step_mode(steps: int | None, dt: float | None, rtol: float | None, atol: float | None,
               solver: Any, adaptive: dict[str, Any]) -> bool:
    tol = rtol is not None or atol is not None
    if steps is not None and dt is not None:
        raise ValueError("steps, dt: conflicting step arguments; pass one of them")
    if steps is not None and tol:
        raise ValueError("steps, rtol/atol: conflicting step arguments; fixed steps or "
                         "tolerances, not both")
    if dt is not None and tol:
        raise ValueError("dt, rtol/atol: conflicting step arguments; for an adaptive solve "
                         "give the initial step as dt0")
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps: expected a positive int, got {steps!r}")
        return False
    if dt is not None:
        if isinstance(dt, Tensor):
            dt = float(dt)
        if not isinstance(dt, (int, float)) or not math.isfinite(dt) or dt <= 0:
            raise ValueError(f"dt: expected a positive finite step size, got {dt!r}")
        return False
    if tol:
        for name, v in (("rtol", rtol), ("atol", atol)):
            if v is not None and (not isinstance(v, (int, float)) or not v >= 0):
                raise ValueError(f"{name}: expected a non-negative number, got {v!r}")
        return True
    spec = solver
    cls = _solvers.get(spec) if isinstance(spec, str) else (
        spec if isinstance(spec, type) else type(spec) if spec is not None else None)
    if cls is not None and getattr(cls, "adaptive", False):
        return True
    if "controller" in adaptive:
        return True
    raise ValueError("steps, dt: expected a step argument (steps or dt), or rtol/atol for an "
                     "adaptive solve")


def _pick_solver(problem: ODE | SDE, spec: Any, adaptive_mode: bool) -> Solver:
    if spec is None:
        if isinstance(problem, ODE):
            spec = "dopri5" if adaptive_mode else "rk4"
        elif adaptive_mode:  # step doubling (sdeflow.solvers.adaptive_sde)
            spec = ("adaptive_stochastic_heun" if problem.kind == "stratonovich"
                    and problem.noise != "additive" else
                    "adaptive_em" if problem.noise in ("general", "additive")
                    else "adaptive_milstein")
        else:
            spec = "euler_maruyama" if problem.kind == "ito" or problem.noise == "additive" \
                else "stochastic_heun"
    slv = _solvers.resolve(spec)
    if isinstance(problem, ODE):
        if not isinstance(slv, ODESolver):
            raise ValueError(f"solver: {slv.name!r} is an SDE solver but the problem is an ODE; "
                             f"ODE solvers: {', '.join(_solvers.names(sde=False))}")
    else:
        if not isinstance(slv, SDESolver):
            raise ValueError(f"solver: {slv.name!r} is an ODE solver but the problem is an SDE; "
                             f"SDE solvers: {', '.join(_solvers.names(sde=True))}")
        if not slv.fits(problem.noise, problem.kind):
            fit = [n for n in _solvers.names(sde=True)
                   if _solvers.get(n).fits(problem.noise, problem.kind)]  # type: ignore[attr-defined]
            raise ValueError(
                f"solver: {slv.name!r} supports noise {slv.noise_types} and kinds {slv.kinds}, "
                f"but the problem has noise={problem.noise!r}, kind={problem.kind!r}; solvers "
                f"that fit: {', '.join(fit) or 'none registered'}"
            )
        if hasattr(slv, "configure"):
            slv.configure(problem.kind)
    return slv


# ------------------------------------------------------------------------------ shape checks
def _checked(fn: Field, name: str, expect: Callable[[Tensor, Tensor], str | None]) -> Field:
    """Wrap ``fn`` so that its call checks the output's shape and dtype (no extra call)."""

    def wrapped(t: Tensor, x: Tensor) -> Tensor:
        out = fn(t, x)
        if not isinstance(out, Tensor):
            raise TypeError(f"{name}: expected a tensor from {name}(t, x), got "
                            f"{type(out).__name__}")
        msg = expect(out, x)
        if msg is None and out.dtype != x.dtype:
            msg = f"returned dtype {out.dtype}, expected the state's dtype {x.dtype}"
        if msg is not None:
            raise ValueError(f"{name}: {msg}")
        return out

    return wrapped


def _same_shape(out: Tensor, x: Tensor) -> str | None:
    if out.shape != x.shape:
        return f"returned shape {tuple(out.shape)}, expected the state's shape {tuple(x.shape)}"
    return None


def _general_shape(out: Tensor, x: Tensor) -> str | None:
    if out.dim() != x.dim() + 1 or out.shape[:-1] != x.shape:
        return (f"general noise: returned shape {tuple(out.shape)}, expected "
                f"{(*tuple(x.shape), 'm')} (the state's shape plus the Brownian dimension m)")
    return None


# ---------------------------------------------------------------------------------- fixed loop
class _Noise:
    """Brownian increments (and space-time integrals) for the steps of a fixed grid."""

    def __init__(self, grid: list[float], shape: tuple[int, ...], space_time: bool,
                 x0: Tensor, seed: int | None,
                 brownian: BrownianPath | BrownianTree | None) -> None:
        self.shape, self.space_time = shape, space_time
        self.dtype, self.device = x0.dtype, x0.device
        h = torch.tensor([b - a for a, b in zip(grid[:-1], grid[1:])], dtype=torch.float64)
        self.h64 = h  # [n] float64 step sizes
        self.grid, self.bm = grid, brownian
        if brownian is not None:
            check_compatible(brownian, shape, self.dtype, self.device, (grid[0], grid[-1]))
        else:
            # rows from (seed, step, row): bit-identical under batch_slice (sdeflow.brownian)
            self.src = SeededNoise(shape, seed, self.dtype, self.device)

    def block(self, i: int, j: int) -> list[tuple[Tensor, ...]]:
        """Noise tuples for steps ``i .. j-1``."""
        if self.bm is not None:  # one batched query per block of steps
            dw, it = self.bm.grid(self.grid[i:j + 1], space_time=self.space_time)
            parts = [dw] if it is None else [dw, it]
        else:
            dw, it = self.src.increments(self.h64[i:j], self.space_time)
            parts = [dw] if it is None else [dw, it]
        if len(parts) == 1:
            return [(d,) for d in parts[0].unbind(0)]
        return list(zip(*(p.unbind(0) for p in parts)))


def _fixed(problem: ODE | SDE, x0: Tensor, slv: Solver, grid: list[float], out_index: list[int],
           seed: int | None, brownian: BrownianPath | BrownianTree | None) -> Solution:
    n = len(grid) - 1
    dtype, device = x0.dtype, x0.device
    g64 = torch.tensor(grid, dtype=torch.float64)
    tgrid = g64.to(dtype).to(device)
    hs = [b - a for a, b in zip(grid[:-1], grid[1:])]
    # one [n] tensor of times per distinct stage fraction c; indexing it is the cheapest way
    # to hand each field a 0-dim time tensor
    stage_grids = []
    for c in slv.c:
        if c == 0.0:
            stage_grids.append(tgrid[:-1])
        elif c == 1.0:
            stage_grids.append(tgrid[1:])
        else:
            stage_grids.append((g64[:-1] + c * (g64[1:] - g64[:-1])).to(dtype).to(device))

    stats: dict[str, Any] = {"steps": n, "accepted": n, "rejected": 0}
    noise: _Noise | None = None
    if isinstance(problem, SDE):
        f, g = problem._fields()
        expect_g = _general_shape if problem.noise == "general" else _same_shape
        probes = 0
        m = None
        if problem.noise == "general":
            if brownian is not None:
                m = brownian.shape[-1]
            else:  # read m from one diffusion call at t0 (counted in nfe_diffusion)
                probe = _checked(g, "diffusion", expect_g)(tgrid[0], x0)
                m, probes = probe.shape[-1], 1
        bshape = problem.brownian_shape(x0.shape, m)
        noise = _Noise(grid, bshape, slv.needs_space_time, x0, seed, brownian)
        first = slv.build(_checked(f, "drift", _same_shape), _checked(g, "diffusion", expect_g),
                          problem.noise)
        step = slv.build(f, g, problem.noise)
        nd, ng = slv.evals_per_step()
        stats.update(nfe_drift=nd * n, nfe_diffusion=ng * n + probes)
        stats["nfe"] = stats["nfe_drift"] + stats["nfe_diffusion"]
        block = max(1, min(ODE_BLOCK, NOISE_BLOCK_ELEMS // max(1, math.prod(bshape))))
    else:
        u = problem._field()
        first = slv.build(_checked(u, "vector_field", _same_shape))
        step = slv.build(u)
        stats["nfe"] = slv.evals_per_step() * n
        block = ODE_BLOCK

    save = [False] * (n + 1)
    for k in out_index:
        save[k] = True
    saved: list[Tensor] = [x0] * out_index.count(0)
    out_pos = {k: out_index.count(k) for k in set(out_index)}
    x = x0
    one_stage = len(stage_grids) == 1
    sg0 = stage_grids[0]
    i = 0
    while i < n:
        j = min(n, i + block)
        nzs = noise.block(i, j) if noise is not None else None
        x_start = x
        for k in range(i, j):
            tt = (sg0[k],) if one_stage else tuple(sg[k] for sg in stage_grids)
            x = (first if k == 0 else step)(tt, x, hs[k], nzs[k - i] if nzs else None)
            if save[k + 1]:
                saved.extend([x] * out_pos[k + 1])
        if not bool(torch.isfinite(x).all()):
            _locate_nonfinite(step, stage_grids, hs, x_start, i, j, nzs, grid)
        i = j
    ts_out = tgrid[out_index]
    return Solution(ts=ts_out, ys=torch.stack(saved), stats=stats, t_reached=grid[-1])


def _locate_nonfinite(step: Callable[..., Tensor], stage_grids: list[Tensor], hs: list[float],
                      x: Tensor, i: int, j: int, nzs: list[Any] | None, grid: list[float]) -> None:
    """Replay steps ``i .. j-1`` from ``x`` checking every step; raise at the first bad one."""
    with torch.no_grad():
        for k in range(i, j):
            tt = tuple(sg[k] for sg in stage_grids)
            x = step(tt, x, hs[k], nzs[k - i] if nzs else None)
            if not bool(torch.isfinite(x).all()):
                raise NonFiniteError(
                    f"state became non-finite at t={grid[k + 1]:.6g} (in the step from "
                    f"t={grid[k]:.6g}, step {k + 1} of {len(hs)})",
                    t=grid[k + 1], t_reached=grid[k],
                )
    raise NonFiniteError(
        f"state became non-finite between t={grid[i]:.6g} and t={grid[j]:.6g} (the replay "
        f"of these steps stayed finite: the problem's functions are not deterministic)",
        t=grid[j], t_reached=grid[i],
    )
