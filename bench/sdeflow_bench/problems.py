"""The benchmark problems: linear, Van der Pol, Lotka--Volterra, a curved MLP neural ODE
(ODE cases) and OU, GBM, an additive-noise SDE (SDE cases), with their references."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .config import Config

Tensor = torch.Tensor
Field = Callable[[Tensor, Tensor], Tensor]

def linear_matrix(dtype: torch.dtype = torch.float64, device: Any = "cpu") -> Tensor:
    """The 4x4 test matrix: two damped oscillators (frequencies 2 and 4), weakly coupled."""
    a = torch.tensor([[-0.3, 2.0, 0.1, 0.0],
                      [-2.0, -0.3, 0.0, 0.2],
                      [0.0, 0.1, -0.5, 4.0],
                      [-0.1, 0.0, -4.0, -0.5]], dtype=torch.float64)
    return a.to(dtype=dtype, device=device)


def linear_field(dtype: torch.dtype = torch.float64, device: Any = "cpu") -> Field:
    """``u(t, x) = x A^T`` for :func:`linear_matrix` (``x``: ``(..., 4)``)."""
    at = linear_matrix(dtype, device).T.contiguous()

    def u(t: Tensor, x: Tensor) -> Tensor:
        return torch.matmul(x, at)

    return u


def vdp_field(mu: float) -> Callable[[torch.dtype, Any], Field]:
    """Van der Pol ``y' = v, v' = mu (1 - y^2) v - y`` (state ``(..., 2)``)."""

    def make(dtype: torch.dtype, device: Any) -> Field:
        def u(t: Tensor, x: Tensor) -> Tensor:
            y, v = x[..., 0], x[..., 1]
            return torch.stack((v, mu * (1.0 - y * y) * v - y), dim=-1)

        return u

    return make


def lv_field(a: float = 1.5, b: float = 1.0, c: float = 3.0, d: float = 1.0
             ) -> Callable[[torch.dtype, Any], Field]:
    """Lotka--Volterra ``x' = a x - b x y, y' = -c y + d x y`` (state ``(..., 2)``)."""

    def make(dtype: torch.dtype, device: Any) -> Field:
        def u(t: Tensor, x: Tensor) -> Tensor:
            p, q = x[..., 0], x[..., 1]
            return torch.stack((a * p - b * p * q, -c * q + d * p * q), dim=-1)

        return u

    return make


class CurvedMLP(torch.nn.Module):
    """A small neural ODE field with real curvature (fixed weights, no training).

    ``u(t, x) = W2 tanh(W1 x + b1 + t w_t) + Omega x - x |x|^2 / (2 d)`` with ``d = 4`` and 64
    hidden units. ``W1`` has a large scale (pre-activations of order 3, so ``tanh`` works in its
    nonlinear range), ``t w_t`` makes the field time dependent, ``Omega`` is a rotation at two
    frequencies (3 and 6) and the cubic term keeps the flow bounded. On ``[0, 2]`` dopri5 at
    rtol 1e-6 needs ~85 steps whose sizes vary 5-fold; a default-initialised MLP would be solved
    in a handful of even steps. ``t`` may be 0-dim or ``(batch,)`` (torchode's convention).
    """

    def __init__(self, d: int = 4, hidden: int = 64, seed: int = 1234) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        f64 = torch.float64
        self.lin1 = torch.nn.Linear(d, hidden)
        self.lin2 = torch.nn.Linear(hidden, d, bias=False)
        om = torch.zeros(d, d, dtype=f64)
        om[0, 1], om[1, 0] = 3.0, -3.0
        if d >= 4:
            om[2, 3], om[3, 2] = 6.0, -6.0
        with torch.no_grad():
            self.lin1.weight.copy_(torch.randn(hidden, d, generator=g, dtype=f64)
                                   * (2.5 / math.sqrt(d)))
            self.lin1.bias.copy_(torch.randn(hidden, generator=g, dtype=f64))
            self.lin2.weight.copy_(torch.randn(d, hidden, generator=g, dtype=f64)
                                   * (3.0 / math.sqrt(hidden)))
        self.register_buffer("wt", torch.randn(hidden, generator=g, dtype=f64) * 3.0)
        self.register_buffer("omega_t", om.T.contiguous())
        self.d = d
        self.requires_grad_(False)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        tt = t.reshape(-1, 1) if t.dim() == 1 else t
        h = torch.tanh(self.lin1(x) + tt * self.wt)
        return self.lin2(h) + torch.matmul(x, self.omega_t) \
            - x * (x * x).sum(-1, keepdim=True) * (0.5 / self.d)


def mlp_field(dtype: torch.dtype, device: Any) -> Field:
    """A :class:`CurvedMLP` in ``dtype`` on ``device``."""
    return CurvedMLP().to(dtype=dtype, device=device)


@dataclass
class ODECase:
    """A work-precision ODE problem: ``x(t1)`` from ``x0`` under ``make_field(dtype, device)``."""

    key: str
    title: str
    make_field: Callable[[torch.dtype, Any], Field]
    x0: Tensor               # float64, CPU
    dtype: torch.dtype
    t1: float
    steps: list[int]
    tols: tuple[float, ...]
    exact: Callable[[Tensor], Tensor] | None = None

    @property
    def batch(self) -> int:
        return int(self.x0.shape[0])


def ode_cases(cfg: Config) -> list[ODECase]:
    """The ODE problems of the work-precision sections (filtered by ``cfg.problems``)."""
    g = torch.Generator().manual_seed(cfg.seed + 7)
    f64 = torch.float64

    def steps(lo: int, hi: int) -> list[int]:
        # powers of two from lo (where every method is stable) to hi, every `stride`-th one
        out, n = [], lo
        while n <= min(hi, cfg.max_fixed_steps) and len(out) < cfg.max_fixed_points:
            out.append(n)
            n *= 2**cfg.fixed_stride
        return out or [lo]

    a = linear_matrix()

    def lin_exact(t1: float) -> Callable[[Tensor], Tensor]:
        e = torch.linalg.matrix_exp(t1 * a)
        return lambda x0: x0.to(f64) @ e.T

    nb = cfg.ode_large_batch
    cases = [
        ODECase("linear_b1", "linear 4x4, float64, batch 1", lambda dt, dev: linear_field(dt, dev),
                torch.tensor([[1.0, 0.0, 0.5, -0.5]], dtype=f64), f64, 3.0,
                steps(16, 2048), cfg.tols, lin_exact(3.0)),
        ODECase(f"linear_b{nb}", f"linear 4x4, float64, batch {nb}",
                lambda dt, dev: linear_field(dt, dev),
                torch.randn(nb, 4, generator=g, dtype=f64), f64, 3.0,
                steps(16, 256), cfg.tols_large, lin_exact(3.0)),
        ODECase("vdp1", "Van der Pol mu=1, float64, batch 1", vdp_field(1.0),
                torch.tensor([[2.0, 0.0]], dtype=f64), f64, 10.0, steps(32, 2048), cfg.tols),
        ODECase("vdp5", "Van der Pol mu=5, float64, batch 1", vdp_field(5.0),
                torch.tensor([[2.0, 0.0]], dtype=f64), f64, 10.0, steps(128, 2048), cfg.tols),
        ODECase("lotka_volterra", "Lotka-Volterra, float64, batch 1", lv_field(),
                torch.tensor([[10.0, 5.0]], dtype=f64), f64, 15.0, steps(256, 2048), cfg.tols),
    ]
    for b in cfg.mlp_batches:
        cases.append(ODECase(
            f"mlp_b{b}", f"curved MLP neural ODE, float32, batch {b}", mlp_field,
            torch.randn(b, 4, generator=g, dtype=f64), torch.float32, 2.0,
            steps(16, 512 if b <= 256 else 128), cfg.tols_f32,
        ))
    if cfg.problems is not None:
        cases = [c for c in cases if c.key in cfg.problems]
    return cases


def ode_reference(case: ODECase) -> Tensor:
    """``x(t1)`` in float64 on the CPU: exact, or scipy DOP853 at rtol = atol = 1e-12."""
    if case.exact is not None:
        return case.exact(case.x0)
    import numpy as np  # noqa: PLC0415
    from scipy.integrate import solve_ivp  # noqa: PLC0415

    u = case.make_field(torch.float64, "cpu")
    shape = case.x0.shape

    def fun(t: float, y: Any) -> Any:
        with torch.no_grad():
            out = u(torch.tensor(t, dtype=torch.float64), torch.from_numpy(y).view(shape))
        return out.reshape(-1).numpy()

    sol = solve_ivp(fun, (0.0, case.t1), case.x0.reshape(-1).numpy(), method="DOP853",
                    rtol=1e-12, atol=1e-12)
    if not sol.success:
        raise RuntimeError(f"reference solve failed for {case.key}: {sol.message}")
    return torch.from_numpy(np.ascontiguousarray(sol.y[:, -1])).view(shape)


def rel_error(x: Tensor, ref: Tensor) -> float:
    """Relative RMS error ``|x - ref|_2 / |ref|_2`` over every element."""
    x64 = x.detach().to("cpu", torch.float64)
    num = torch.linalg.vector_norm(x64 - ref)
    den = torch.linalg.vector_norm(ref)
    return float(num / den) if float(den) > 0 else float(num)


# ---------------------------------------------------------------------------------- SDE problems
@dataclass
class SDECase:
    """A work-precision SDE problem on ``[0, t1]``; ``x0`` is ``(batch, d)``.

    ``drift``/``diffusion`` follow sdeflow's contract (diffusion of ``x``'s shape). ``noise`` is
    ``"diagonal"`` or ``"additive"``; ``kind`` ``"ito"`` or ``"stratonovich"``. ``exact(x0, W_t1)``
    gives the pathwise solution when it depends on ``W_t1`` only; ``exact_path(x0, dW, I, h)``
    when it needs the path on a grid (``dW``, ``I``: ``[ref_steps, *x0.shape]`` increments and
    space-time integrals ``int (W_s - W_t) ds`` of the ``ref_steps`` equal steps of size ``h``);
    otherwise the reference is a strong-order-1.5 scheme on ``ref_steps`` steps of the path.
    ``pairs`` lists (sdeflow solver, torchsde method, torchsde options) to compare at ``steps``.
    """

    key: str
    title: str
    drift: Field
    diffusion: Field
    noise: str
    kind: str
    x0: Tensor
    t1: float
    steps: tuple[int, ...]
    pairs: list[tuple[str, str, dict[str, Any]]]
    exact: Callable[[Tensor, Tensor], Tensor] | None = None
    ref_steps: int = 0
    weak: bool = True
    exact_path: Callable[[Tensor, Tensor, Tensor, float], Tensor] | None = None


def sde_cases(cfg: Config, dtype: torch.dtype = torch.float32) -> list[SDECase]:
    """OU, GBM (Ito and Stratonovich) and an additive-noise SDE with a nonlinear drift."""
    dev = torch.device(cfg.device)
    b, d = cfg.sde_batch, 2
    x0 = torch.ones(b, d, dtype=dtype, device=dev)
    theta, sig_ou = 1.0, 0.5
    mu, sig = 0.5, 0.5
    em = ("euler_maruyama", "euler", {})

    def gbm_exact_ito(x: Tensor, w: Tensor) -> Tensor:
        return x * torch.exp((mu - 0.5 * sig * sig) + sig * w)

    def gbm_exact_strat(x: Tensor, w: Tensor) -> Tensor:
        return x * torch.exp(mu + sig * w)

    def add_drift(t: Tensor, x: Tensor) -> Tensor:
        return torch.sin(2.0 * x) - x

    def add_diff(t: Tensor, x: Tensor) -> Tensor:
        return (0.5 + 0.5 * t).expand_as(x)

    ho = tuple(cfg.ho_steps)
    cases = [
        SDECase("ou", f"OU dX = -X dt + 0.5 dW, batch {b}x{d}",
                lambda t, x: -theta * x, lambda t, x: torch.full_like(x, sig_ou),
                "diagonal", "ito", x0, 1.0, cfg.em_steps, [em],
                ref_steps=max(cfg.em_steps), exact_path=ou_exact_path(theta, sig_ou)),
        SDECase("gbm", f"GBM dX = 0.5 X dt + 0.5 X dW (Ito), batch {b}x{d}",
                lambda t, x: mu * x, lambda t, x: sig * x, "diagonal", "ito", x0, 1.0,
                cfg.em_steps, [em], exact=gbm_exact_ito),
        SDECase("gbm_milstein", f"GBM (Ito), Milstein, batch {b}x{d}",
                lambda t, x: mu * x, lambda t, x: sig * x, "diagonal", "ito", x0, 1.0, ho,
                [("milstein", "milstein", {"grad_free": True})], exact=gbm_exact_ito,
                weak=False),
        SDECase("gbm_strat", f"GBM (Stratonovich), stochastic Heun, batch {b}x{d}",
                lambda t, x: mu * x, lambda t, x: sig * x, "diagonal", "stratonovich", x0, 1.0,
                ho, [("stochastic_heun", "heun", {})], exact=gbm_exact_strat, weak=False),
        SDECase("additive", f"additive dX = (sin 2X - X) dt + (1+t)/2 dW, batch {b}x{d}",
                add_drift, add_diff, "additive", "ito", 0.5 * x0, 1.0, cfg.sra_steps,
                [("sra1", "srk", {}), em], ref_steps=cfg.sra_ref_steps),
    ]
    if cfg.problems is not None:
        cases = [c for c in cases if c.key in cfg.problems]
    return cases


def ou_exact_path(theta: float, sigma: float
                  ) -> Callable[[Tensor, Tensor, Tensor, float], Tensor]:
    """OU's ``X_T`` from the path on a grid of equal steps ``h`` (docs/math.md §8.3).

    ``X_T = e^{-theta T} x0 + sigma int_0^T e^{-theta (T - s)} dW_s``; on each step
    ``int e^{-theta (t + h - s)} dW_s = dW - theta I + O(h^2.5)`` with ``I = int (W_s - W_t) ds``
    (a Taylor expansion of the kernel; ``int (t + h - s) dW_s = I``), so the reference is exact
    up to a mean-zero global error of order ``theta^2 h^2 / sqrt(20)`` (1e-8 at h = 1/4096).
    """

    def ref(x0: Tensor, dw: Tensor, it: Tensor, h: float) -> Tensor:
        n = dw.shape[0]
        a = math.exp(-theta * h)
        w = torch.tensor([a ** (n - 1 - k) for k in range(n)], dtype=torch.float64,
                         device=dw.device)
        incr = dw.to(torch.float64) - theta * it.to(torch.float64)
        return a**n * x0.to(torch.float64) + sigma * torch.tensordot(w, incr, dims=1)

    return ref


class TorchsdeSDE(torch.nn.Module):
    """The same callables in torchsde's interface (additive noise as a diagonal matrix)."""

    def __init__(self, f: Field, g: Field, noise: str, kind: str) -> None:
        super().__init__()
        self.noise_type, self.sde_type = noise, kind
        self._f, self._g = f, g
        self._additive = noise == "additive"

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        return self._f(t, y)

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        gy = self._g(t, y)
        return torch.diag_embed(gy) if self._additive else gy


