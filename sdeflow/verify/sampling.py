"""Reference forms and coupled simulation: every step size on one shared Brownian path per batch."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..brownian import BrownianPath, BrownianTree
from ..solve import solve
from . import references as _an
from .arguments import _check_int

Tensor = torch.Tensor
_F64 = torch.float64

Tensor = torch.Tensor
_F64 = torch.float64


def _pick_problem(reference: Any, inst: Any) -> Any:
    """The form (Ito / Stratonovich) of ``reference``'s SDE that the solver accepts."""
    caps = inst.caps
    for kind in caps.kinds or ("ito",):
        if caps.fits(reference.noise, kind):
            return reference.problem_as(kind)
    raise ValueError(
        f"solver: {getattr(inst, 'name', inst)!r} supports noise "
        f"{caps.noise_types} and kinds {caps.kinds}, which do not fit "
        f"{reference.name} (noise {reference.noise!r})"
    )


def _check_reference_sde(reference: Any) -> None:
    if not isinstance(reference, _an.AnalyticSDE):
        raise ValueError(
            "reference: expected an SDE reference from sdeflow.analytic (GeometricBrownianMotion, "
            f"OrnsteinUhlenbeck, LinearSDE, NonlinearAdditiveSDE), got {type(reference).__name__}"
        )


def _initial(reference: Any, x0: Tensor | None, n_paths: int, dtype: torch.dtype,
             device: Any) -> Tensor:
    """``[n_paths, d]`` initial states (``x0`` ``[d]`` is repeated; ``[n_paths, d]`` is kept)."""
    if x0 is None:
        x0 = reference.default_x0(dtype=dtype, device=device)
    if not isinstance(x0, Tensor) or not x0.is_floating_point():
        raise ValueError("x0: expected a floating tensor of shape [d] or [n_paths, d]")
    x0 = x0.to(dtype=dtype, device=device)
    if x0.dim() == 1:
        return x0.expand(n_paths, -1).contiguous()
    if x0.dim() == 2 and x0.shape[0] == n_paths:
        return x0
    raise ValueError(f"x0: expected shape [d] or [{n_paths}, d], got {tuple(x0.shape)}")


def _batch_seed(seed: int, k: int) -> int:
    """Seed of batch ``k``: ``seed`` for the first, ``seed + k 2^32`` after (distinct paths)."""
    return seed + k * 2**32


_GRID_BUDGET = 2**22  # numbers of one batch's stored Brownian grid (W and I each)


def _chunks(n_paths: int, per_path: int, chunk: int | None) -> list[tuple[int, int]]:
    if chunk is None:
        chunk = max(1, min(n_paths, _GRID_BUDGET // max(1, per_path)))
    chunk = _check_int(chunk, "chunk")
    return [(i, min(n_paths, i + chunk)) for i in range(0, n_paths, chunk)]


def _simulate_coupled(inst: Any, reference: Any, problem: Any, steps: list[int], t1: float,
                      x0: Tensor, seed: int, chunk: int | None, n_fine: int | None,
                      tree: bool = False) -> tuple[Tensor, Tensor]:
    """Numerical ``[K, n, d]`` and reference ``[n, d]`` solutions on shared Brownian paths
    (one stored path per batch, or with ``tree`` a fresh Brownian tree of the batch's seed for
    every solve: the same motion, since a tree is a pure function of (seed, t))."""
    n_paths, d = x0.shape
    per_path = max(max(steps), 0 if reference.pathwise_exact else (n_fine or 4096))
    per_path *= max(1, math.prod(reference.brownian_shape((1, d))))
    xs, refs = [], []
    for b, (i, j) in enumerate(_chunks(n_paths, per_path, chunk)):
        xb = x0[i:j]
        shape = reference.brownian_shape(xb.shape)
        bseed = _batch_seed(seed, b)
        if tree:
            finest = max(max(steps), 0 if reference.pathwise_exact else (n_fine or 4096))

            def fresh(shape: Any = shape, bseed: int = bseed, finest: int = finest) -> Any:
                # exact at every dyadic time down to half the finest step
                return BrownianTree(shape, t0=0.0, t1=t1, seed=bseed, tol=t1 / finest / 2,
                                    dtype=x0.dtype, device=x0.device)

            refs.append(reference.pathwise(t1, xb, fresh(), n_fine=n_fine))
            xs.append(torch.stack([
                solve(problem, xb, t_span=(0.0, t1), solver=inst, steps=n,
                      brownian=fresh()).x_final
                for n in steps
            ]))
            continue
        bm = BrownianPath(shape, t0=0.0, t1=t1, seed=bseed, dtype=x0.dtype, device=x0.device)
        refs.append(reference.pathwise(t1, xb, bm, n_fine=n_fine))
        xs.append(torch.stack([
            solve(problem, xb, t_span=(0.0, t1), solver=inst, steps=n, brownian=bm).x_final
            for n in steps
        ]))
    return torch.cat(xs, 1), torch.cat(refs, 0)
