"""Additive noise given as a constant ``(..., d, m)`` matrix (torchsde's convention) in the core.

* A full-matrix Ornstein--Uhlenbeck ``dX = (A X + a) dt + B dW`` with ``B`` ``3 x 2``: strong
  orders on one shared ``BrownianPath`` per batch against the exact-moment reference's fine
  quadrature of the stochastic integral (``sf.analytic.LinearSDE.pathwise``); SRA1's exact
  discrete moments (no Monte Carlo) converge at order 2, and its Monte Carlo moments match them.
* A nonlinear drift ``0.3 A X - sin(X)`` with matrix noise ``4 B``: SRA1's strong order 1.5
  against an independent order-1.5 Ito--Taylor reference on 4096 cells of the same path (on a
  linear drift SRA1 converges at order 2: docs/math.md §6.4).
* A diagonal ``d x d`` matrix gives the same numbers as the elementwise form, for every scheme
  that accepts additive noise.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sdeflow as sf
from sdeflow import analytic as an
from sdeflow import verify
from sdeflow.verify import references as refs

torch.set_num_threads(1)
F64 = torch.float64

A = [[-1.0, 0.6, 0.0], [-0.4, -0.8, 0.3], [0.2, 0.0, -1.2]]  # non-normal, complex pair
A_VEC = [0.3, -0.2, 0.1]
B = [[0.5, 0.2], [-0.3, 0.4], [0.1, -0.6]]  # d = 3, m = 2
ADD_DTS = tuple(2.0**-k for k in range(3, 8))
LIN_DTS = tuple(2.0**-k for k in range(2, 7))


def _matrix_sde(drift: Any, bmat: torch.Tensor, kind: str = "ito") -> sf.SDE:
    def diffusion(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        b = bmat.to(dtype=x.dtype, device=x.device)
        return b.expand(*x.shape[:-1], *b.shape)

    return sf.SDE(drift, diffusion, noise="additive", kind=kind)


class MatrixOU(an.LinearSDE):
    """``sf.analytic.LinearSDE`` with its ``[d, m]`` noise declared *additive* (matrix form)
    instead of general: same exact moments and same pathwise reference."""

    def __init__(self) -> None:
        super().__init__(A, A_VEC, B)
        self.noise = "additive"

    @property
    def name(self) -> str:
        return "MatrixOU(d=3, m=2)"

    def problem_as(self, kind: str) -> sf.SDE:
        self._check_kind(kind)
        at, av = self.A.T.contiguous(), self.a
        return _matrix_sde(lambda t, x: x @ at.to(x.dtype) + av.to(x.dtype), self.B, kind)


class MatrixSine(refs.AnalyticSDE):
    """``dX = (C X - sin X) dt + S dW``, ``C = 0.3 A``, ``S = 4 B`` (``[3, 2]``, entries up to
    2.4: noise large enough that SRA1's order-1.5 error terms, which carry ``f''`` times the
    noise, dominate its order-2 terms at these steps). No exact solution.

    Reference: the order-1.5 strong Ito--Taylor scheme for additive noise (Kloeden & Platen 1992,
    §10.4) in vector form, ``x + f h + S dW + J_f S I + h^2/2 (J_f f + 1/2 sum_jk (S S^T)_jk
    d_j d_k f)``, here ``J_f = C - diag(cos x)`` and ``d_i d_i f_i = sin(x_i)``, on 4096 cells of
    the same Brownian path (error ~1e-6): an independent scheme from the library's.
    """

    noise = "additive"
    dim = 3
    has_moments = False

    def __init__(self) -> None:
        self.C = 0.3 * torch.tensor(A, dtype=F64)
        self.S = 4.0 * torch.tensor(B, dtype=F64)

    @property
    def name(self) -> str:
        return "MatrixSine(d=3, m=2)"

    def brownian_shape(self, x_shape: Any) -> tuple[int, ...]:
        return (*tuple(x_shape)[:-1], 2)

    def default_x0(self, dtype: torch.dtype = F64, device: Any = None) -> torch.Tensor:
        return torch.tensor([1.0, -0.5, 0.3], dtype=dtype, device=device)

    def problem_as(self, kind: str) -> sf.SDE:
        self._check_kind(kind)
        ct = self.C.T.contiguous()
        return _matrix_sde(lambda t, x: x @ ct.to(x.dtype) - torch.sin(x), self.S, kind)

    def pathwise(self, t: Any, x0: torch.Tensor, bm: Any, *, t0: Any = None,
                 n_fine: int | None = None) -> torch.Tensor:
        n = 4096 if n_fine is None else n_fine
        s, tf = float(bm.t0 if t0 is None else t0), float(t)
        grid = [s + (tf - s) * k / n for k in range(n + 1)]
        dw, it = bm.grid(grid, space_time=True)
        h = (tf - s) / n
        c, sm = self.C, self.S
        diag_sst = (sm @ sm.T).diagonal()
        x = x0.to(F64)
        for k in range(n):
            sn, cs = torch.sin(x), torch.cos(x)
            f = x @ c.T - sn
            jf_f = f @ c.T - cs * f  # J_f v = C v - cos(x) v
            si = it[k] @ sm.T  # S I
            jf_si = si @ c.T - cs * si
            l0f = jf_f + 0.5 * diag_sst * sn
            x = x + f * h + dw[k] @ sm.T + jf_si + 0.5 * h * h * l0f
        return x.to(x0.dtype)


def _check(res: Any, order: float, tol: float = 0.15) -> None:
    lo, hi = res.ci
    assert abs(res.order - order) <= tol, str(res) + f"\n errors {res.errors}"
    assert lo - tol <= order <= hi + tol, str(res) + f"\n errors {res.errors}"


# ------------------------------------------------------------------------ strong orders
def test_sra1_strong_order_two_on_the_matrix_ou() -> None:
    """MatrixOU (linear drift), dt = 2^-2..2^-6, n = 1000 paths, seed 0: SRA1 converges at
    order 2 on a linear drift (its 1.5 leading term vanishes there; docs/math.md §6.4)."""
    res = verify.strong_order("sra1", MatrixOU(), LIN_DTS, 1000, 0, expected=2.0)
    _check(res, 2.0)


@pytest.mark.parametrize("name", ["euler_maruyama", "stochastic_heun", "milstein",
                                  "implicit_euler_maruyama", "reversible_heun"])
def test_order_one_schemes_on_the_matrix_ou(name: str) -> None:
    """Additive noise: strong order 1 for every scheme of order 1 (n = 500, seed 1)."""
    res = verify.strong_order(name, MatrixOU(), LIN_DTS, 500, 1, expected=1.0)
    _check(res, 1.0)


def test_sra1_strong_order_one_and_a_half_on_a_nonlinear_drift_with_matrix_noise() -> None:
    """MatrixSine, dt = 2^-3..2^-7, n = 1000 paths, seed 0, against the order-1.5 Taylor
    reference on 4096 cells of the same path (errors measured >= 20x the reference's ~1e-6)."""
    res = verify.strong_order("sra1", MatrixSine(), ADD_DTS, 1000, 0)
    assert res.expected == 1.5
    _check(res, 1.5)
    assert min(res.errors) > 20 * 1e-6


# ------------------------------------------------------------------------ weak order
def test_sra1_exact_discrete_moments_converge_at_order_two() -> None:
    """SRA1's exact mean and covariance on MatrixOU (the step's affine map in (x, dW, I) by
    regression; no Monte Carlo) against the moment equations, 32..256 steps: order 2 (the
    declared weak order) within 0.15, the fit's 95% CI containing it."""
    res = verify.bias_order("sra1", MatrixOU(), steps=(32, 64, 128, 256), expected=2.0)
    assert res.expected == 2.0
    _check(res, 2.0)


def test_sra1_monte_carlo_moments_match_the_scheme_and_the_exact_moments() -> None:
    """n = 20000 paths, seed 0, 16 steps to t = 1: every mean and covariance z-score within 4
    standard errors of the scheme's exact discrete moments (``bias="scheme"``), and that bias
    itself below 3e-3 (order h^2 = 4e-3 times a small constant)."""
    ref = MatrixOU()
    res = verify.moments("sra1", ref, steps=16, n_paths=20000, seed=0, bias="scheme")
    assert res.passed, str(res)
    x0 = ref.default_x0()
    mh, ph = verify.discrete_moments("sra1", ref, 1.0, 16, x0)
    bias = float((mh - ref.mean(1.0, x0)).norm() + (ph - ref.covariance(1.0)).norm())
    assert 0 < bias < 3e-3


# ------------------------------------------------------------- diagonal matrix = elementwise
NAMES = ["euler_maruyama", "milstein", "stochastic_heun", "sra1", "implicit_euler_maruyama",
         "reversible_heun"]


@settings(max_examples=15, deadline=None)
@given(d=st.integers(1, 4), batch=st.integers(1, 3), seed=st.integers(0, 2**31),
       name=st.sampled_from(NAMES), steps=st.integers(1, 6))
def test_a_diagonal_matrix_gives_the_elementwise_numbers(d: int, batch: int, seed: int,
                                                         name: str, steps: int) -> None:
    """The same numbers with noise as a diagonal (d, d) matrix as elementwise. The drift's
    Jacobian has field of values in Re <= -0.2 (the random part of ``a`` is scaled to norm 0.4,
    and |0.2 (1 + t) cos x| <= 0.4), so an implicit step of any size is well posed; with an
    unscaled random part hypothesis found an ``a`` that made ``I - h J`` singular at h = 1."""
    g = torch.Generator().manual_seed(seed)
    sig = torch.rand(d, generator=g, dtype=F64) + 0.1
    r = torch.randn(d, d, generator=g, dtype=F64)
    a = -torch.eye(d, dtype=F64) + 0.4 * r / torch.linalg.matrix_norm(r, 2)

    def drift(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x @ a.T - 0.2 * torch.sin(x) * (1 + t)

    elem = sf.SDE(drift, lambda t, x: (sig * (1 + t)).expand(x.shape), noise="additive")
    mat = sf.SDE(drift, lambda t, x: (torch.diag(sig) * (1 + t)).expand(*x.shape, d),
                 noise="additive")
    x0 = torch.randn(batch, d, generator=g, dtype=F64)
    out = []
    for p in (elem, mat):
        bm = sf.BrownianPath((batch, d), seed=seed, dtype=F64)
        out.append(sf.solve(p, x0, (0.0, 1.0), solver=name, steps=steps, brownian=bm).x_final)
    torch.testing.assert_close(out[1], out[0], rtol=1e-13, atol=1e-13)


def test_seeded_adaptive_and_ensemble_solves_draw_m_brownian_motions() -> None:
    """With ``seed=`` (no path given) the solve draws an (..., m) Brownian motion; adaptive
    step doubling and ``sf.ensemble`` run too, and the sample mean matches the exact mean
    within 4 standard errors (n = 4000 paths, seed 3, 64 steps; EM's bias ~1e-2 is below)."""
    ref = MatrixOU()
    p = ref.problem
    x0 = torch.ones(4000, 3, dtype=F64)
    fixed = sf.solve(p, x0, (0.0, 1.0), solver="sra1", steps=16, seed=3).x_final
    exact = ref.mean(1.0, torch.ones(3, dtype=F64))
    se = fixed.std(0) / math.sqrt(fixed.shape[0])
    assert bool(((fixed.mean(0) - exact).abs() <= 4 * se).all())
    ad = sf.solve(p, x0[:64], (0.0, 1.0), rtol=1e-3, atol=1e-3, seed=3)
    assert ad.x_final.shape == (64, 3) and ad.stats["accepted"] > 1
    ens = sf.ensemble(p, torch.ones(3, dtype=F64), n_paths=4000, t_span=(0.0, 1.0),
                      solver="euler_maruyama", steps=64, seed=3)
    assert bool(((ens.mean[-1] - exact).abs() <= 4 * se + 1e-2).all())


# ---------------------------------------------------------------------------- bad input
def test_additive_shapes_that_fit_no_form_are_refused_before_work() -> None:
    x0 = torch.ones(4, 3, dtype=F64)
    calls = []

    def f(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return -x

    bad = sf.SDE(f, lambda t, x: torch.ones(4, 2, dtype=F64), noise="additive")
    with pytest.raises(ValueError, match=r"diffusion: noise='additive' expects g\(t, x\) of the "
                                         r"state's shape \(4, 3\).*\(4, 3, 'm'\).*got shape "
                                         r"\(4, 2\)"):
        sf.solve(bad, x0, (0.0, 1.0), steps=4, seed=0)
    depends = sf.SDE(f, lambda t, x: x.unsqueeze(-1).expand(4, 3, 2), noise="additive")
    with pytest.raises(ValueError, match="independent of x"):
        sf.solve(depends, x0, (0.0, 1.0), steps=4, seed=0)
    good = MatrixOU().problem
    with pytest.raises(ValueError, match=r"brownian: shape \(4, 3\).*\(4, 2\)"):
        sf.solve(good, x0, (0.0, 1.0), steps=4, brownian=sf.BrownianPath((4, 3), dtype=F64))
    assert not calls  # the drift was never called: refused before any work
    flip = [0]

    def changing(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        flip[0] += 1
        return torch.ones(4, 3, 2 if flip[0] <= 2 else 3, dtype=F64)

    with pytest.raises(ValueError, match=r"additive noise: returned m=3 .* m=2 \(at t="):
        sf.solve(sf.SDE(lambda t, x: -x, changing, noise="additive"), x0, (0.0, 1.0),
                 steps=4, seed=0)


def test_bridge_events_on_matrix_noise_use_the_projected_variance() -> None:
    """Brownian-bridge events on dX = G dW. With G = diag(1, 2) in matrix form the crossings
    equal the elementwise form's exactly (same path, same draws). With a 2 x 3 G the event
    function a.X - 1, a = (1, 1/2), is a Brownian motion of variance s^2 = |G^T a|^2 per unit
    time, so P(hit by t = 1) = 2 (1 - Phi(1/s)) (reflection); one step plus the bridge
    correction must reproduce it within 4 standard errors (n = 40000, seed 7). Dropping the
    cross terms of G G^T (s^2 = 1.79 instead of 1.97) would be off by about 8 of them."""
    n = 40000

    def zero(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    ev = sf.Event(lambda t, x: x[..., 0] + 0.5 * x[..., 1] - 1.0, terminal=True, direction=1,
                  bridge=True)
    x0 = torch.zeros(n, 2, dtype=F64)
    diag = torch.tensor([1.0, 2.0], dtype=F64)
    hits = []
    for p in (sf.SDE(zero, lambda t, x: diag.expand(x.shape), noise="additive"),
              _matrix_sde(zero, torch.diag(diag))):
        bm = sf.BrownianPath((n, 2), seed=7, dtype=F64)
        sol = sf.solve(p, x0, (0.0, 1.0), steps=1, brownian=bm, event=ev)
        hits.append(~torch.isnan(sol.event_t))
    assert torch.equal(hits[0], hits[1])
    g = torch.tensor([[1.0, 0.5, -0.3], [0.8, -1.0, 0.4]], dtype=F64)
    sigma = float((g.T @ torch.tensor([1.0, 0.5], dtype=F64)).norm())
    expected = 2 * (1 - 0.5 * (1 + math.erf(1 / sigma / math.sqrt(2))))
    bm = sf.BrownianPath((n, 3), seed=7, dtype=F64)
    sol = sf.solve(_matrix_sde(zero, g), x0, (0.0, 1.0), steps=1, brownian=bm, event=ev)
    got = float((~torch.isnan(sol.event_t)).double().mean())
    se = math.sqrt(expected * (1 - expected) / n)
    assert abs(got - expected) <= 4 * se, (got, expected, se)
