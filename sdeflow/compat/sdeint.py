"""``sdeint`` / ``sdeint_adjoint`` with torchsde's signature and shapes (docs/compat.md).

A torchsde SDE object has ``f(t, y)``, ``g(t, y)``, ``noise_type`` and ``sde_type``; ``y`` is
``(batch, d)`` and ``g`` returns ``(batch, d)`` (diagonal), ``(batch, d, 1)`` (scalar) or
``(batch, d, m)`` (additive: a matrix independent of ``y``; general). Methods:

==================  ===============================  ==========================================
torchsde method     sde_type, noise                  sdeflow solver
==================  ===============================  ==========================================
``euler``           ito, all                         ``euler_maruyama``
``milstein``        ito/stratonovich, diag/scalar    ``milstein`` (``grad_free``: the core's
                    (additive: Euler, g' = 0)        derivative-free difference)
``srk``             ito/stratonovich, additive       SRA1 (strong order 1.5)
``heun``            stratonovich, all                ``stochastic_heun``
``midpoint``        stratonovich, all                the midpoint method
``euler_heun``      stratonovich, all                the Euler--Heun method
``reversible_heun`` stratonovich, all                ``reversible_heun``
==================  ===============================  ==========================================

Steps land on ``ts`` (torchsde interpolates linearly between its steps; the two agree when
``ts`` lie on the ``dt`` grid). ``logqp=True`` also returns torchsde's log-ratio increments
``sum_i 1/2 |u_i|^2`` integrated over each interval, ``u = (f - h) / g`` (diagonal) or
``pinv(g) (f - h)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..adjoint import solve_with
from ..brownian import BrownianPath
from ..controllers import PIController
from ..problems import SDE
from ..solvers.adaptive_sde import StepDoubling
from ..solvers.reversible import ReversibleHeun
from ..solvers.sde import SRA1, EulerMaruyama, Milstein, MilsteinStratonovich, StochasticHeun
from ._brownian import TorchsdeBrownian, is_torchsde_bm
from ._solvers import EulerHeun, SDEMidpoint

Tensor = torch.Tensor

SDE_METHODS = ("euler", "milstein", "srk", "heun", "midpoint", "euler_heun", "reversible_heun")
NOISE = ("diagonal", "scalar", "additive", "general")
KINDS = ("ito", "stratonovich")
_FITS = {
    "euler": (("ito",), NOISE), "milstein": (KINDS, ("diagonal", "scalar", "additive")),
    "srk": (KINDS, ("additive",)), "heun": (("stratonovich",), NOISE),
    "midpoint": (("stratonovich",), NOISE), "euler_heun": (("stratonovich",), NOISE),
    "reversible_heun": (("stratonovich",), NOISE),
}
NAMES = ("drift", "diffusion", "prior_drift", "drift_and_diffusion", "drift_and_diffusion_prod")


def _sde_attrs(sde: Any, names: Any, logqp: bool, bm: Any, y0: Any
               ) -> tuple[str, str, Any, Any, Any]:
    for attr in ("noise_type", "sde_type"):
        if not hasattr(sde, attr):
            raise ValueError(f"sde: the SDE object has no {attr} attribute; torchsde SDEs "
                             f"declare noise_type in {NOISE} and sde_type in {KINDS}")
    noise, kind = sde.noise_type, sde.sde_type
    if noise not in NOISE:
        raise ValueError(f"sde: noise_type={noise!r}, expected one of {NOISE}")
    if kind not in KINDS:
        raise ValueError(f"sde: sde_type={kind!r}, expected one of {KINDS}")
    names = {} if names is None else names
    if not isinstance(names, dict):
        raise TypeError(f"names: expected a dict, got {type(names).__name__}")
    bad = sorted(set(names) - set(NAMES))
    if bad:
        raise ValueError(f"names: {bad} not supported; supported keys: {', '.join(NAMES)}")

    def method(key: str, default: str) -> Any:
        return getattr(sde, names.get(key, default), None)

    f, g, h = method("drift", "f"), method("diffusion", "g"), method("prior_drift", "h")
    fg, fgp = method("drift_and_diffusion", "f_and_g"), method("drift_and_diffusion_prod",
                                                               "f_and_g_prod")
    gp = getattr(sde, "g_prod", None)
    if f is None:
        if fg is not None:
            def f(t: Tensor, y: Tensor) -> Any:
                return fg(t, y)[0]
        elif fgp is not None:
            def f(t: Tensor, y: Tensor) -> Any:
                return fgp(t, y, _zeros_like_noise(y, noise, bm))[0]
        else:
            raise ValueError(f"sde: the SDE object has no drift: define "
                             f"{names.get('drift', 'f')!r} (or f_and_g / f_and_g_prod)")
    if g is None:
        if fg is not None:
            def g(t: Tensor, y: Tensor) -> Any:
                return fg(t, y)[1]
        elif gp is not None or fgp is not None:
            prod = gp if gp is not None else (lambda t, y, v: fgp(t, y, v)[1])
            g = _g_from_products(prod, noise, bm, y0)
        else:
            raise ValueError(f"sde: the SDE object has no diffusion: define "
                             f"{names.get('diffusion', 'g')!r} (or f_and_g, g_prod, "
                             f"f_and_g_prod)")
    if h is None and logqp:
        raise ValueError(f"sde: the SDE object has no method {names.get('prior_drift', 'h')!r} "
                         f"(prior_drift; logqp=True needs the prior drift)")
    return noise, kind, f, g, h


def _brownian_dim(noise: str, bm: Any, y0: Tensor, what: str) -> int:
    if noise == "diagonal":
        return int(y0.shape[-1])
    if noise == "scalar":
        return 1
    if bm is None:
        raise ValueError(f"bm: the SDE object gives its diffusion only as {what}, so the "
                         f"Brownian dimension m of {noise} noise is unknown; pass bm= (as "
                         f"torchsde asks), or define g(t, y)")
    return int(tuple(bm.shape)[-1])


def _zeros_like_noise(y: Tensor, noise: str, bm: Any) -> Tensor:
    return y.new_zeros(*y.shape[:-1], _brownian_dim(noise, bm, y, "a product"))


def _g_from_products(prod: Any, noise: str, bm: Any, y0: Any) -> Any:
    """The diffusion matrix from torchsde's ``g_prod(t, y, v)`` (``g v``): ``g * 1`` for
    diagonal noise, ``(g 1)[..., None]`` for scalar noise, and one product per column
    ``g e_j`` for additive and general noise (m calls)."""
    if isinstance(y0, Tensor) and y0.dim() == 2:
        m = _brownian_dim(noise, bm, y0, "g_prod(t, y, v)")
    else:
        m = 1

    def g(t: Tensor, y: Tensor) -> Tensor:
        if noise == "diagonal":
            return prod(t, y, torch.ones_like(y))
        if noise == "scalar":
            return prod(t, y, y.new_ones(*y.shape[:-1], 1)).unsqueeze(-1)
        eye = torch.eye(m, dtype=y.dtype, device=y.device)
        cols = [prod(t, y, eye[j].expand(*y.shape[:-1], m)) for j in range(m)]
        return torch.stack(cols, dim=-1)

    return g


def _method(method: Any, noise: str, kind: str, options: dict[str, Any]) -> Any:
    if method is None:
        method = ("srk" if noise == "additive" else "euler" if noise == "general"
                  else "milstein") if kind == "ito" else "midpoint"
    if not isinstance(method, str) or method not in SDE_METHODS:
        raise ValueError(f"method: {method!r} is not supported; supported methods: "
                         f"{', '.join(SDE_METHODS)}")
    kinds, noises = _FITS[method]
    if kind not in kinds or noise not in noises:
        fit = [m for m, (k, n) in _FITS.items() if kind in k and noise in n]
        raise ValueError(f"method: {method!r} does not support sde_type={kind!r} with "
                         f"noise_type={noise!r}; methods that do: {', '.join(fit)}")
    allowed = ("grad_free",) if method == "milstein" else ()
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise ValueError(f"options: {bad} not supported with method={method!r}; supported: "
                         f"{', '.join(allowed) or 'none'}")
    gf = options.get("grad_free", False)
    if not isinstance(gf, bool):
        raise TypeError(f"options: grad_free must be True or False, got {gf!r}")
    if method == "euler" or (method == "milstein" and noise == "additive"):
        return EulerMaruyama()  # additive noise: g' = 0, so Milstein is Euler (either kind)
    if method == "milstein":
        d = "finite_difference" if gf else "autograd"
        return Milstein(d) if kind == "ito" else MilsteinStratonovich(d)
    if method == "srk":
        return SRA1()
    return {"heun": StochasticHeun, "midpoint": SDEMidpoint, "euler_heun": EulerHeun,
            "reversible_heun": ReversibleHeun}[method]()


def _shape_check(noise: str, y0: Tensor, g0: Any) -> int:
    """The Brownian dimension ``m``; raises if ``g``'s shape fits no torchsde convention."""
    b, d = y0.shape
    if not isinstance(g0, Tensor):
        raise TypeError(f"sde: g(t, y) returned {type(g0).__name__}, expected a tensor")
    want = {"diagonal": "(batch, d)", "scalar": "(batch, d, 1)",
            "additive": "(batch, d, m)", "general": "(batch, d, m)"}[noise]
    ok = (g0.shape == (b, d) if noise == "diagonal" else
          g0.dim() == 3 and g0.shape[:2] == (b, d) and (noise != "scalar" or g0.shape[2] == 1))
    if not ok:
        raise ValueError(f"sde: g(t, y) returned shape {tuple(g0.shape)}; with noise_type="
                         f"{noise!r} torchsde expects {want} for y of shape {(b, d)}")
    return d if noise == "diagonal" else int(g0.shape[2])


def _stable_div(a: Tensor, b: Tensor, eps: float = 1e-7) -> Tensor:
    b = torch.where(b.abs().detach() > eps, b, torch.full_like(b, eps) * b.sign())
    return a / b


def _build(sde: Any, y0: Tensor, ts: Any, bm: Any, method: Any, dt: Any, adaptive: Any,
           rtol: Any, atol: Any, dt_min: Any, options: Any, names: Any, logqp: Any,
           extra: Any, extra_solver_state: Any, unused: dict[str, Any]
           ) -> tuple[dict[str, Any], bool]:
    if unused:
        raise TypeError(f"{sorted(unused)[0]}: unknown argument of sdeint")
    if extra or extra_solver_state is not None:
        raise ValueError("extra, extra_solver_state: not supported by sdeflow.compat.sdeint")
    if not isinstance(logqp, bool):
        raise TypeError(f"logqp: expected True or False, got {logqp!r}")
    if not isinstance(adaptive, bool):
        raise TypeError(f"adaptive: expected True or False, got {adaptive!r}")
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise TypeError(f"options: expected a dict, got {type(options).__name__}")
    noise, kind, f, g, h = _sde_attrs(sde, names, logqp, bm, y0)
    if not isinstance(y0, Tensor) or y0.dim() != 2:
        raise ValueError(f"y0: torchsde states have shape (batch, d); got "
                         f"{tuple(y0.shape) if isinstance(y0, Tensor) else type(y0).__name__}")
    if not isinstance(ts, Tensor):
        ts = torch.as_tensor(ts, dtype=y0.dtype)
    if ts.dim() != 1 or ts.numel() < 2:
        raise ValueError(f"ts: expected a 1-D tensor of at least two times, got shape "
                         f"{tuple(ts.shape)}")
    solver = _method(method, noise, kind, options)
    t0 = torch.as_tensor(float(ts[0]), dtype=y0.dtype, device=y0.device)
    with torch.no_grad():
        g0 = g(t0, y0)
    m = _shape_check(noise, y0, g0)
    # torchsde shapes -> sdeflow noise types: the same names; scalar noise (batch, d, 1) is
    # sdeflow's (batch, d) with one Brownian motion, and additive (batch, d, m) is the core's
    # matrix form of additive noise
    gf = g
    if noise == "scalar":
        def gf(t: Tensor, y: Tensor) -> Tensor:
            return g(t, y).squeeze(-1)
    sf_noise = noise
    if logqp:
        f, gf, y0, sf_noise = _logqp(f, gf, h, y0, sf_noise)
        if noise == "diagonal":
            m = m + 1
    problem = SDE(drift=f, diffusion=gf, noise=sf_noise, kind=kind)
    tl = [float(v) for v in ts.detach().tolist()]
    brownian = None
    if bm is not None:
        if not hasattr(bm, "shape") or not (is_torchsde_bm(bm) or hasattr(bm, "grid")):
            raise TypeError(f"bm: expected a torchsde Brownian object (BrownianInterval, "
                            f"BrownianPath, BrownianTree) or an sdeflow BrownianPath / "
                            f"BrownianTree, got {type(bm).__name__}")
        want = (y0.shape[0], m)
        if tuple(bm.shape) != want:
            raise ValueError(f"bm: shape {tuple(bm.shape)}, expected {want} (batch, m) for "
                             f"noise_type={noise!r} with g(t, y) of shape {tuple(g0.shape)}"
                             + (" and logqp=True (one more column)" if logqp and
                                noise == "diagonal" else ""))
        if is_torchsde_bm(bm) and solver.caps.space_time and getattr(
                bm, "levy_area_approximation", "space-time") not in ("space-time", "davie",
                                                                     "foster"):
            raise ValueError(f"bm: method={method!r} needs the space-time Levy area; create "
                             f"the torchsde Brownian object with levy_area_approximation="
                             f"'space-time' (or pass an sdeflow BrownianPath), got "
                             f"{bm.levy_area_approximation!r}")
        brownian = TorchsdeBrownian(bm, min(tl), max(tl)) if is_torchsde_bm(bm) else bm
    else:
        shape = (y0.shape[0], m)
        brownian = BrownianPath(shape, t0=min(tl), t1=max(tl), dtype=y0.dtype, device=y0.device)
    args: dict[str, Any] = dict(problem=problem, x0=y0, t_span=None, ts=ts.detach(),
                                solver=solver, steps=None, dt=None, rtol=None, atol=None,
                                controller=None, seed=None, brownian=brownian, save_all=False,
                                dense=False, step_ts=None, jump_ts=None, max_steps=None,
                                dt0=None, on_failure="raise")
    if adaptive:
        if isinstance(solver, (SRA1, ReversibleHeun)):
            raise ValueError(f"adaptive: method={method!r} has no error estimate here; use "
                             f"euler, milstein, heun, midpoint or euler_heun")
        args.update(solver=StepDoubling(solver), rtol=float(rtol), atol=float(atol),
                    dt0=float(dt), controller=PIController(dt_min=float(dt_min)))
    else:
        args["dt"] = float(dt)
    return args, logqp


def _logqp(f: Any, g: Any, h: Any, y0: Tensor, noise: str) -> tuple[Any, Any, Tensor, str]:
    """torchsde's augmented SDE: one more coordinate integrating ``1/2 |u|^2``."""
    def u_of(t: Tensor, y: Tensor) -> Tensor:
        fy, gy, hy = f(t, y), g(t, y), h(t, y)
        if noise == "diagonal":
            return _stable_div(fy - hy, gy)
        if noise == "scalar":
            gy = gy.unsqueeze(-1)
        # general and additive: a (batch, d, m) matrix
        return torch.matmul(torch.linalg.pinv(gy), (fy - hy).unsqueeze(-1)).squeeze(-1)

    def fa(t: Tensor, y: Tensor) -> Tensor:
        x = y[:, :-1]
        u = u_of(t, x)
        return torch.cat([f(t, x), 0.5 * (u ** 2).sum(dim=1, keepdim=True)], dim=1)

    def ga(t: Tensor, y: Tensor) -> Tensor:
        x = y[:, :-1]
        gx = g(t, x)
        if noise in ("general", "additive"):  # a (batch, d, m) matrix
            return torch.cat([gx, gx.new_zeros(gx.shape[0], 1, gx.shape[2])], dim=1)
        return torch.cat([gx, gx.new_zeros(gx.shape[0], 1)], dim=1)

    y0a = torch.cat([y0, y0.new_zeros(y0.shape[0], 1)], dim=1)
    return fa, ga, y0a, noise


def _ret(ys: Tensor, logqp: bool) -> Any:
    if not logqp:
        return ys
    lr = ys[..., -1]
    return ys[..., :-1], lr[1:] - lr[:-1]


def sdeint(sde: Any, y0: Tensor, ts: Any, bm: Any = None, method: str | None = None,
           dt: float = 1e-3, adaptive: bool = False, rtol: float = 1e-5, atol: float = 1e-4,
           dt_min: float = 1e-5, options: dict[str, Any] | None = None,
           names: dict[str, str] | None = None, logqp: bool = False, extra: bool = False,
           extra_solver_state: Any = None, **unused: Any) -> Any:
    """torchsde's ``sdeint``: ``ys [len(ts), batch, d]`` (and the log-ratio with ``logqp``)."""
    args, lq = _build(sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, options,
                      names, logqp, extra, extra_solver_state, unused)
    return _ret(solve_with(args, "backprop").ys, lq)


def sdeint_adjoint(sde: Any, y0: Tensor, ts: Any, bm: Any = None, method: str | None = None,
                   adjoint_method: str | None = None, dt: float = 1e-3,
                   adaptive: bool = False, adjoint_adaptive: bool = False, rtol: float = 1e-5,
                   atol: float = 1e-4, adjoint_rtol: float = 1e-5, adjoint_atol: float = 1e-4,
                   dt_min: float = 1e-5, options: dict[str, Any] | None = None,
                   adjoint_options: dict[str, Any] | None = None, adjoint_params: Any = None,
                   names: dict[str, str] | None = None, logqp: bool = False,
                   extra: bool = False, extra_solver_state: Any = None, **unused: Any) -> Any:
    """torchsde's ``sdeint_adjoint``: the stochastic adjoint (``adjoint="backsolve"``), or
    with ``method="reversible_heun"`` the exact reversible adjoint.

    The backward pass is sdeflow's (stochastic Heun steps of the adjoint SDE on the forward's
    steps, or the reversible inversion): ``adjoint_method`` may be ``None`` or
    ``"adjoint_reversible_heun"``; adjoint tolerances and options are not used.
    """
    if adjoint_params is None:
        if not isinstance(sde, nn.Module):
            raise ValueError("adjoint_params: sde is not an nn.Module, so its parameters "
                             "cannot be found; pass adjoint_params=[...]")
        adjoint_params = [p for p in sde.parameters() if p.requires_grad]
    if adjoint_method not in (None, "adjoint_reversible_heun"):
        raise ValueError(f"adjoint_method: {adjoint_method!r} is not supported; sdeflow's "
                         f"backward pass is its own: pass None (or 'adjoint_reversible_heun' "
                         f"with method='reversible_heun')")
    if adjoint_method == "adjoint_reversible_heun" and method != "reversible_heun":
        raise ValueError("adjoint_method: 'adjoint_reversible_heun' needs "
                         "method='reversible_heun'")
    if adjoint_options:
        raise ValueError("adjoint_options: not supported (the backward pass takes no options)")
    args, lq = _build(sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, options,
                      names, logqp, extra, extra_solver_state, unused)
    mode = "reversible" if method == "reversible_heun" else "backsolve"
    return _ret(solve_with(args, mode, adjoint_params=adjoint_params).ys, lq)


__all__ = ["sdeint", "sdeint_adjoint", "SDE_METHODS"]
