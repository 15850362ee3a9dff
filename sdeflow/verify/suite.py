"""``sdeflow verify``: every registered solver on the analytic problems."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .. import solvers as _solvers
from . import references as _an
from .arguments import _solver_info
from .moment_checks import bias_order, discrete_moments, moments
from .ode import ode_order
from .sampling import _pick_problem
from .sde_order import strong_order, weak_order
from .tolerance import sde_tolerance_order, tolerance_proportionality

Tensor = torch.Tensor
_F64 = torch.float64

Tensor = torch.Tensor
_F64 = torch.float64


def default_suite(quick: bool = False) -> dict[str, Any]:
    """Problems, step sizes and sample sizes of ``sdeflow verify`` (see ``docs/verification.md``).

    * ODE solvers: :func:`ode_order` on :func:`default_linear_ode`, float64.
    * SDE solvers, strong order on one shared path per batch of paths:

      - GBM(mu=1, sigma=1) (diagonal noise, exact pathwise solution), ``dt = 2^-5 .. 2^-9``,
        2000 paths (quick: 1000). Coarser steps are pre-asymptotic for the order-1 schemes
        (their local orders rise from ~0.9 at ``dt = 1/8`` to 1.0).
      - ``dX = -sin X dt + 2 dW`` (additive noise, fine-grid reference), ``dt = 2^-3 .. 2^-7``,
        1000 paths (quick: 500): the nonlinear drift is what shows SRA1's 1.5 (docs/math.md §6.4);
        sigma = 2 makes the order-1.5 error terms dominate the order-2 ones.
    * Weak order on GBM(mu=0.5, sigma=0.5), ``phi = |x|^2``, coupled, ``dt = 2^-3 .. 2^-7``,
      20000 paths (quick: 10000), for solvers of weak order <= 1 (a weak order 2 needs much
      larger samples). For Euler--Maruyama the exact discrete weak errors are known
      (``GeometricBrownianMotion.euler_maruyama_moments``); their least-squares slope over these
      steps is 0.965, not 1: the expected pre-asymptotic part.
    * Moments on a 2-d LinearSDE (general noise, or its diagonal for solvers without general
      noise) at 32 steps, 20000 paths (cheap, so quick mode keeps them), targets shifted by the
      scheme's exact bias (:func:`discrete_moments`), 4 standard errors; preceded by
      :func:`bias_order` at 32..256 steps (the bias must vanish at >= the weak order - 0.15).
    * Embedded pairs: :func:`tolerance_proportionality` on a linear system, a rotation and Van der
      Pol (mu = 2). Adaptive SDE solvers: :func:`sde_tolerance_order` on GBM(1, 1), 500 paths
      (quick: 300), instead of their base schemes' fixed-step checks.
    """
    return {
        "gbm": _an.GeometricBrownianMotion(1.0, 1.0),
        "gbm_dts": (2**-5, 2**-6, 2**-7, 2**-8, 2**-9),
        "gbm_paths": 1000 if quick else 2000,
        "additive": _an.NonlinearAdditiveSDE(2.0),
        "additive_dts": (2**-3, 2**-4, 2**-5, 2**-6, 2**-7),
        "additive_paths": 500 if quick else 1000,
        "gbm_weak": _an.GeometricBrownianMotion(0.5, 0.5),
        "weak_dts": (2**-3, 2**-4, 2**-5, 2**-6, 2**-7),
        "weak_paths": 10000 if quick else 20000,
        "linear": _an.LinearSDE([[-1.0, 0.5], [-0.5, -1.5]], [0.5, -0.2],
                                [[0.6, 0.2], [0.0, 0.4]]),
        "moment_steps": 32,
        "moment_paths": 20000,
        "tolerance_problems": ("linear", "rotation", "vdp"),
        "sde_tolerance_paths": 300 if quick else 500,
        "n_fine": 4096,
        "seed": 0,
    }


def _fits(inst: Any, reference: Any) -> bool:
    try:
        _pick_problem(reference, inst)
    except ValueError:
        return False
    return True


def _affine_on(inst: Any, lin: Any) -> bool:
    try:
        discrete_moments(inst, lin, 1.0, 1, lin.default_x0())
    except ValueError:
        return False
    return True


def run_suite(solvers: Sequence[Any] | None = None, *, quick: bool = False,
              progress: Callable[[Any], None] | None = None) -> list[Any]:
    """Run every registered (or given) solver on the analytic problems of :func:`default_suite`.

    Returns the list of results (orders, tolerance proportionality of the embedded pairs, and
    moment checks); ``progress`` is called with each result as it is produced.
    """
    if isinstance(solvers, (str, bytes)) or not (solvers is None or isinstance(solvers, Sequence)):
        raise TypeError(f"solvers: expected a sequence of solver names, classes or instances "
                        f"(e.g. [{solvers!r}]), got {solvers!r}")
    if not isinstance(quick, bool):
        raise TypeError(f"quick: expected a bool, got {quick!r}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress: expected a callable progress(result) or None, got "
                        f"{progress!r}")
    cfg = default_suite(quick)
    if solvers is None:
        solvers = list(_solvers.names())
    for spec in solvers:  # every name resolves before anything runs
        _solver_info(spec)
    results: list[Any] = []

    def emit(r: Any) -> None:
        results.append(r)
        if progress is not None:
            progress(r)

    seed = cfg["seed"]
    for spec in solvers:
        inst, _ = _solver_info(spec)
        if inst.caps.semilinear and inst.caps.sde:
            continue  # needs a SemilinearSDE: checked by tests/core/test_exponential.py
        if inst.caps.sde and inst.caps.adaptive:
            # its fixed-step behaviour is its base scheme's (checked there); check adaptivity
            emit(sde_tolerance_order(inst, n_paths=cfg["sde_tolerance_paths"], seed=seed))
            continue
        if not inst.caps.sde:
            emit(ode_order(inst))
            if inst.caps.adaptive:  # an error estimate: check adaptive use
                for prob in cfg["tolerance_problems"]:
                    emit(tolerance_proportionality(inst, prob))
            continue
        for key in ("gbm", "additive"):
            ref = cfg[key]
            if _fits(inst, ref):
                emit(strong_order(inst, ref, cfg[key + "_dts"], cfg[key + "_paths"], seed,
                                  n_fine=cfg.get("n_fine")))
                if key == "gbm":  # the same check through a fresh Brownian tree per step size
                    emit(strong_order(inst, ref, cfg[key + "_dts"], cfg[key + "_paths"], seed,
                                      n_fine=cfg.get("n_fine"), brownian="tree"))
        wo = inst.caps.weak(cfg["gbm_weak"].noise)
        if wo is not None and wo <= 1.0 and _fits(inst, cfg["gbm_weak"]):
            emit(weak_order(inst, cfg["gbm_weak"], cfg["weak_dts"], cfg["weak_paths"], seed))
        lin = cfg["linear"]
        if not _fits(inst, lin):  # the same B as a constant matrix of additive noise
            lin = _an.LinearSDE(lin.A, lin.a, lin.B, noise="additive")
        if not _fits(inst, lin):
            lin = _an.LinearSDE(lin.A, lin.a, torch.diagonal(lin.B_matrix).clone())
        if _fits(inst, lin):
            bias: str | None = None
            if _affine_on(inst, lin):  # the scheme's exact discrete moments are computable
                n = cfg["moment_steps"]
                emit(bias_order(inst, lin, (n, 2 * n, 4 * n, 8 * n)))
                bias = "scheme"
            emit(moments(inst, lin, steps=cfg["moment_steps"], n_paths=cfg["moment_paths"],
                         seed=seed, bias=bias))
    return results
