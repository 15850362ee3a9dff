"""Hypothesis properties of the fixed-step solvers on random stable linear systems."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sdeflow as sf
from sdeflow.analytic import expm

F64 = torch.float64


@st.composite
def stable_systems(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    """A = -(S S^T + eps I) + (K - K^T): eigenvalues with negative real part; and an x0."""
    d = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.floats(0.2, 3.0))
    gen = torch.Generator().manual_seed(seed)
    s = torch.randn(d, d, generator=gen, dtype=F64) * scale / math.sqrt(d)
    k = torch.randn(d, d, generator=gen, dtype=F64) * scale / math.sqrt(d)
    a = -(s @ s.T + 0.1 * torch.eye(d, dtype=F64)) + (k - k.T)
    x0 = torch.randn(3, d, generator=gen, dtype=F64)
    return a, x0


@settings(max_examples=40, deadline=None)
@given(stable_systems(), st.integers(8, 64))
def test_rk4_meets_its_error_bound(system: tuple[torch.Tensor, torch.Tensor], n: int) -> None:
    """For x' = A x, one RK4 step is the degree-4 Taylor polynomial R(hA) of exp(hA), so

        |x_N - x(T)| <= N |exp(hA) - R(hA)| e^{T|A|} |x0|,   |exp(z) - R(z)| <= |z|^5/120 e^{|z|}

    (operator 2-norms). A method of lower order violates this bound for small h|A|.
    """
    a, x0 = system
    norm = torch.linalg.matrix_norm(a, ord=2).item()
    T = 1.0
    h = T / n
    sol = sf.solve(sf.ODE(lambda t, x: x @ a.T), x0, (0.0, T), solver="rk4", steps=n)
    exact = x0 @ expm(T * a).T
    err = (sol.x_final - exact).norm(dim=-1).max().item()
    z = h * norm
    bound = n * z**5 / 120 * math.exp(z) * math.exp(T * norm) * x0.norm(dim=-1).max().item()
    assert err <= bound * (1 + 1e-9) + 1e-13


@settings(max_examples=25, deadline=None)
@given(stable_systems(), st.sampled_from(["midpoint", "heun", "rk4"]))
def test_forward_then_backward_returns_the_start(
    system: tuple[torch.Tensor, torch.Tensor], name: str
) -> None:
    a, x0 = system
    norm = torch.linalg.matrix_norm(a, ord=2).item()
    n = max(16, int(40 * norm))  # h|A| <= 0.025
    ode = sf.ODE(lambda t, x: x @ a.T)
    fwd = sf.solve(ode, x0, (0.0, 1.0), solver=name, steps=n).x_final
    back = sf.solve(ode, fwd, (1.0, 0.0), solver=name, steps=n).x_final
    # each direction has global error O(h^p) relative to the exact flow, which is invertible
    tol = 1e-4 if name != "rk4" else 1e-8
    scale = math.exp(norm) * x0.norm().item()
    assert (back - x0).norm().item() <= tol * scale


@settings(max_examples=20, deadline=None)
@given(st.sampled_from([torch.float32, torch.float64]),
       st.sampled_from(["euler", "midpoint", "heun", "rk4"]),
       st.lists(st.integers(1, 3), min_size=0, max_size=3))
def test_dtype_and_shape_are_kept(dtype: torch.dtype, name: str, shape: list[int]) -> None:
    x0 = torch.ones(shape, dtype=dtype)
    sol = sf.solve(sf.ODE(lambda t, x: -x), x0, (0.0, 1.0), solver=name, steps=5)
    assert sol.ys.dtype == dtype and sol.ys.shape == (2, *shape)
    assert sol.ts.dtype == dtype
    # the solution is exp(-1) x0 up to the method's error
    err = (sol.x_final - math.exp(-1) * x0).abs().max().item() if x0.numel() else 0.0
    assert err < 0.1


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(["euler_maruyama", "milstein", "sra1"]),
       st.integers(0, 2**31 - 1),
       st.sampled_from([torch.float32, torch.float64]))
def test_sde_seed_reproducible_and_dtype_kept(name: str, seed: int, dtype: torch.dtype) -> None:
    sde = sf.SDE(lambda t, x: -x, lambda t, x: 0.2 * torch.ones_like(x), noise="additive")
    x0 = torch.ones(4, 2, dtype=dtype)
    a = sf.solve(sde, x0, (0.0, 1.0), solver=name, steps=6, seed=seed)
    b = sf.solve(sde, x0, (0.0, 1.0), solver=name, steps=6, seed=seed)
    assert torch.equal(a.ys, b.ys) and a.ys.dtype == dtype
