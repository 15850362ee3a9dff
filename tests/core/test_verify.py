"""sdeflow.verify: the fit, the confidence intervals, the scheme moments, results and errors.

Statistical machinery is checked on synthetic data with a known answer (seeds stated), the scheme
moments against hand-derived recursions (docs/math.md §9.2), and every bad argument raises
ValueError.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import sdeflow as sf
from sdeflow import analytic as an
from sdeflow import verify

F64 = torch.float64


# ------------------------------------------------------------------------------ the fit
def test_fit_order_recovers_an_exact_power_law() -> None:
    dts = [2.0**-k for k in range(2, 7)]
    for p in (0.5, 1.0, 1.5, 4.0):
        assert verify.fit_order(dts, [3.0 * h**p for h in dts]) == pytest.approx(p, abs=1e-12)
    with pytest.raises(ValueError, match="errors"):
        verify.fit_order(dts, [0.0] * len(dts))
    with pytest.raises(ValueError, match="dts"):
        verify.fit_order(dts[:1], [1.0])


def _synthetic(p: float, n: int, seed: int) -> tuple[list[float], torch.Tensor]:
    """Per-path errors e_{k,i} = h_k^p (Z_i + 0.3 Y_{k,i}), Z, Y ~ |N(0,1)|: mean C h^p."""
    g = torch.Generator().manual_seed(seed)
    dts = [2.0**-k for k in range(3, 8)]
    z = torch.randn(n, generator=g, dtype=F64).abs()
    y = torch.randn(len(dts), n, generator=g, dtype=F64).abs()
    h = torch.tensor(dts, dtype=F64).view(-1, 1)
    return dts, h**p * (z + 0.3 * y)


def test_delta_method_interval_covers_the_true_order_at_its_level() -> None:
    """200 synthetic experiments (n = 200 paths each, seeds 0..199): the 95% delta-method
    interval covers the true slope 1.0 in 90-99% of them (binomial sd ~1.5%)."""
    hits = 0
    for seed in range(200):
        dts, samples = _synthetic(1.0, 200, seed)
        _, _, p, (lo, hi) = verify._mc_fit(dts, samples, absolute=False, ci_level=0.95,
                                           ci_method="delta", n_boot=0, seed=seed)
        hits += lo <= 1.0 <= hi
    assert 0.90 <= hits / 200 <= 0.99


def test_bootstrap_interval_agrees_with_the_delta_method() -> None:
    dts, samples = _synthetic(1.5, 2000, 11)  # n = 2000, seed 11
    _, se, p, ci_d = verify._mc_fit(dts, samples, absolute=False, ci_level=0.95,
                                    ci_method="delta", n_boot=0, seed=0)
    _, _, p2, ci_b = verify._mc_fit(dts, samples, absolute=False, ci_level=0.95,
                                    ci_method="bootstrap", n_boot=400, seed=0)
    assert p == p2 and ci_d[0] < p < ci_d[1] and ci_b[0] < p < ci_b[1]
    wd, wb = ci_d[1] - ci_d[0], ci_b[1] - ci_b[0]
    assert 0.7 < wb / wd < 1.4
    assert all(s > 0 for s in se)
    with pytest.raises(ValueError, match="ci_method"):
        verify._mc_fit(dts, samples, absolute=False, ci_level=0.95, ci_method="jackknife",
                       n_boot=0, seed=0)


# ------------------------------------------------------------------------------ results
def test_order_result_is_json_ready_and_reports_local_orders() -> None:
    res = verify.ode_order("rk4")
    d = res.to_dict()
    json.dumps(d)
    assert d["passed"] is True and d["mode"] == "ode" and len(d["local_orders"]) == 3
    assert all(3.9 < p < 4.1 for p in res.local_orders)
    assert "rk4" in str(res) and "pass" in str(res)
    wrong = verify.ode_order("rk4", expected=3.0)
    assert not wrong.passed and "FAIL" in str(wrong)


def test_ode_order_flags_round_off() -> None:
    """rk4 at 2^9..2^12 steps: errors ~1e-13 and below, flagged in notes."""
    res = verify.ode_order("rk4", steps=(512, 1024, 2048, 4096))
    assert res.notes and "round-off" in res.notes[0]


def test_strong_order_is_deterministic_given_the_seed() -> None:
    """Same seed -> bit-identical errors (n = 200 paths, seed 3); another seed differs."""
    gbm = an.GeometricBrownianMotion(1.0, 1.0)
    dts = (2**-3, 2**-4, 2**-5)
    a = verify.strong_order("euler_maruyama", gbm, dts, 200, 3)
    b = verify.strong_order("euler_maruyama", gbm, dts, 200, 3)
    c = verify.strong_order("euler_maruyama", gbm, dts, 200, 4)
    assert a.errors == b.errors and a.errors != c.errors
    assert a.n_paths == 200 and a.seed == 3 and a.expected == 0.5


def test_strong_order_batches_are_pooled() -> None:
    """chunk=100 splits 300 paths (seed 5) into 3 batches on their own paths (seeds 5,
    5 + 2^32, 5 + 2^33); each batch is the same computation as a 100-path run with its seed."""
    gbm = an.GeometricBrownianMotion(1.0, 1.0)
    dts = (2**-3, 2**-4, 2**-5)
    pooled = verify.strong_order("milstein", gbm, dts, 300, 5, chunk=100)
    parts = [verify.strong_order("milstein", gbm, dts, 100, 5 + k * 2**32) for k in (0, 1, 2)]
    for k in range(3):
        want = sum(p.errors[k] for p in parts) / 3
        assert pooled.errors[k] == pytest.approx(want, rel=1e-12)


def test_weak_order_uncoupled_needs_exact_moments() -> None:
    """Uncoupled weak errors on GBM (n = 4000, seed 0) are estimated (finite); the nonlinear
    reference has no moments and phi must be None."""
    gbm = an.GeometricBrownianMotion(0.5, 0.5)
    res = verify.weak_order("euler_maruyama", gbm, (2**-2, 2**-3), 4000, 0, coupled=False)
    assert all(math.isfinite(e) for e in res.errors)
    with pytest.raises(ValueError, match="coupled"):
        verify.weak_order("sra1", an.NonlinearAdditiveSDE(), (2**-2, 2**-3), 100, 0,
                          coupled=False)
    with pytest.raises(ValueError, match="phi"):
        verify.weak_order("euler_maruyama", gbm, (2**-2, 2**-3), 100, 0, coupled=False,
                          phi=lambda x: x.sum(-1))
    with pytest.raises(ValueError, match="phi"):
        verify.weak_order("euler_maruyama", gbm, (2**-2, 2**-3), 100, 0, phi=lambda x: x)


# ------------------------------------------------------------------------------ bad input
def test_bad_arguments_raise_value_errors_naming_them() -> None:
    gbm = an.GeometricBrownianMotion(1.0, 1.0)
    with pytest.raises(ValueError, match="dts"):
        verify.strong_order("euler_maruyama", gbm, (0.3, 0.1), 10, 0)  # 0.3 does not divide 1
    with pytest.raises(ValueError, match="dts"):
        verify.strong_order("euler_maruyama", gbm, (0.25,), 10, 0)
    with pytest.raises(ValueError, match="dts"):
        verify.strong_order("euler_maruyama", gbm, (0.25, 0.25), 10, 0)
    with pytest.raises(ValueError, match="n_paths"):
        verify.strong_order("euler_maruyama", gbm, (0.25, 0.125), 1, 0)
    with pytest.raises(ValueError, match="seed"):
        verify.strong_order("euler_maruyama", gbm, (0.25, 0.125), 10, -1)
    with pytest.raises(ValueError, match="solver"):
        verify.strong_order("rk4", gbm, (0.25, 0.125), 10, 0)
    with pytest.raises(ValueError, match="solver"):
        verify.strong_order("no_such_solver", gbm, (0.25, 0.125), 10, 0)
    with pytest.raises(ValueError, match="solver"):
        verify.strong_order("sra1", gbm, (0.25, 0.125), 10, 0)  # additive-only vs diagonal
    with pytest.raises(ValueError, match="reference"):
        verify.strong_order("euler_maruyama", an.LinearODE(-1.0), (0.25, 0.125), 10, 0)
    with pytest.raises(ValueError, match="x0"):
        verify.strong_order("euler_maruyama", gbm, (0.25, 0.125), 10, 0, x0=torch.ones(3, 1))
    with pytest.raises(ValueError, match="tolerance"):
        verify.strong_order("euler_maruyama", gbm, (0.25, 0.125), 10, 0, tolerance=-1.0)
    with pytest.raises(ValueError, match="ci_level"):
        verify.weak_order("euler_maruyama", gbm, (0.25, 0.125), 10, 0, ci_level=1.5)
    with pytest.raises(ValueError, match="solver"):
        verify.ode_order("euler_maruyama")
    with pytest.raises(ValueError, match="reference"):
        verify.ode_order("rk4", gbm)
    with pytest.raises(ValueError, match="steps"):
        verify.ode_order("rk4", steps=(8,))
    with pytest.raises(ValueError, match="reference"):
        verify.moments("euler_maruyama", an.NonlinearAdditiveSDE())
    with pytest.raises(ValueError, match="bias"):
        verify.moments("euler_maruyama", an.OrnsteinUhlenbeck(1.0, 1.0), bias="guess")
    with pytest.raises(ValueError, match="x0"):
        verify.moments("euler_maruyama", an.OrnsteinUhlenbeck(1.0, 1.0), x0=torch.ones(2, 1))
    with pytest.raises(ValueError, match="reference"):
        verify.discrete_moments("euler_maruyama", gbm, 1.0, 4, torch.ones(1, dtype=F64))


# ------------------------------------------------------------------------------ scheme moments
LIN = an.LinearSDE([[-1.0, 0.5], [-0.5, -1.5]], [0.5, -0.2], [0.6, 0.4])  # additive
LIN_G = an.LinearSDE([[-1.0, 0.5], [-0.5, -1.5]], [0.5, -0.2], [[0.6, 0.2], [0.0, 0.4]])
X0 = torch.tensor([1.0, -0.5], dtype=F64)


@pytest.mark.parametrize("lin", [LIN, LIN_G], ids=["additive", "general"])
def test_discrete_moments_of_euler_maruyama_equal_the_closed_recursion(lin: an.LinearSDE) -> None:
    for steps in (1, 5, 32):
        m, p = verify.discrete_moments("euler_maruyama", lin, 1.0, steps, X0)
        m2, p2 = lin.euler_maruyama_moments(1.0, X0, steps)
        torch.testing.assert_close(m, m2, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(p, p2, rtol=1e-12, atol=1e-14)


def test_discrete_moments_of_heun_and_sra1_equal_hand_derived_recursions() -> None:
    """On dX = (AX + a) dt + B dW (docs/math.md §9.2 formulas, worked out by hand):

    stochastic Heun: x' = M x + (h + h^2 A/2) a + (I + hA/2) B dW, M = I + hA + h^2 A^2/2;
    SRA1: x' = M x + (h + h^2 A/2) a + B dW + A B I10, Cov(dW, I10) = [[h, h^2/2], [., h^3/3]].
    """
    a, av, b = LIN.A, LIN.a, LIN.B_matrix
    eye = torch.eye(2, dtype=F64)
    steps, h = 8, 1.0 / 8
    mm = eye + h * a + h * h / 2 * a @ a
    c = (h * eye + h * h / 2 * a) @ av
    nh = (eye + h / 2 * a) @ b
    q_heun = h * nh @ nh.T
    ab = a @ b
    q_sra = h * b @ b.T + h * h / 2 * (b @ ab.T + ab @ b.T) + h**3 / 3 * ab @ ab.T
    for name, q in (("stochastic_heun", q_heun), ("sra1", q_sra)):
        m, p = verify.discrete_moments(name, LIN, 1.0, steps, X0)
        m2, p2 = an.linear_recursion_moments(mm, c, q, steps, X0)
        torch.testing.assert_close(m, m2, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(p, p2, rtol=1e-12, atol=1e-14)


def test_moments_has_power_against_a_wrong_target() -> None:
    """EM on the additive LinearSDE, n = 20000 paths, seed 0, 32 steps: with the exact scheme
    bias it passes; with the mean target moved by 10 standard errors it fails with p < 1e-6."""
    ok = verify.moments("euler_maruyama", LIN, steps=32, n_paths=20000, seed=0, bias="scheme")
    assert ok.passed and ok.dof == 5
    m, p = verify.discrete_moments("euler_maruyama", LIN, 1.0, 32, X0)
    shift = 10 * ok.mean_se[0]
    bad_bias = (m - LIN.mean(1.0, X0) + torch.tensor([shift, 0.0], dtype=F64),
                p - LIN.covariance(1.0))
    bad = verify.moments("euler_maruyama", LIN, steps=32, n_paths=20000, seed=0, bias=bad_bias)
    assert not bad.passed and bad.p_value < 1e-6
    json.dumps(bad.to_dict())
    assert "FAIL" in str(bad)


def test_moments_work_on_the_default_start_and_float32() -> None:
    """OU, n = 5000 paths, seed 1, float32 solve: statistics still computed in float64."""
    res = verify.moments("euler_maruyama", an.OrnsteinUhlenbeck(1.0, 0.5), n_paths=5000,
                         seed=1, steps=16, bias="scheme", dtype=torch.float32)
    assert res.passed and res.dof == 2
    assert res.mean_exact[0] == pytest.approx(math.exp(-1.0))


def test_run_suite_reports_progress() -> None:
    seen: list = []
    results = verify.run_suite(["euler", "rk4"], progress=seen.append)
    assert seen == results and [r.solver for r in results] == ["euler", "rk4"]
    assert all(r.passed for r in results)
    assert sf.solvers.get("sra1").name == "sra1"


# ------------------------------------------------------------------ adaptive checks in verify
def test_tolerance_proportionality_rows_for_embedded_pairs() -> None:
    """dopri5's global error tracks rtol = atol with slope ~1 on all three problems."""
    for prob in ("linear", "rotation", "vdp"):
        res = verify.tolerance_proportionality("dopri5", prob)
        assert res.passed, res.summary()
        assert all(b < a for a, b in zip(res.errors[:-1], res.errors[1:]))


def test_sde_tolerance_order_matches_step_doubling_theory() -> None:
    """Strong error ~ tol^(p/(p+1/2)); 500 GBM(1, 1) paths, seed 0, one path per tolerance."""
    res = verify.sde_tolerance_order("adaptive_milstein", n_paths=500, seed=0)
    assert res.passed and abs(res.expected - 2 / 3) < 1e-12
    assert all(b < a for a, b in zip(res.errors[:-1], res.errors[1:]))


def test_sde_tolerance_order_catches_a_wrongly_declared_order() -> None:
    """Euler--Maruyama declared as strong order 1 expects slope 2/3 but shows ~1/2: fails."""
    from dataclasses import replace

    from sdeflow.solvers.adaptive_sde import StepDoubling
    from sdeflow.solvers.sde import EulerMaruyama

    class Overclaimed(EulerMaruyama):
        caps = replace(EulerMaruyama.caps, strong_order={n: 1.0 for n in
                                                         EulerMaruyama.caps.noise_types})

    res = verify.sde_tolerance_order(StepDoubling(Overclaimed()), n_paths=500, seed=0,
                                  tols=(1e-1, 5e-2, 2.5e-2, 1.25e-2))
    assert not res.passed and res.order < 0.6


def test_strong_order_through_a_fresh_brownian_tree_per_step_size() -> None:
    """A fresh BrownianTree per step size (same seed) is the same Brownian motion: Milstein's
    strong order through trees equals the one through one shared path (GBM, 300 paths)."""
    gbm = an.GeometricBrownianMotion(1.0, 1.0)
    path = verify.strong_order("milstein", gbm, n_paths=300, seed=1)
    tree = verify.strong_order("milstein", gbm, n_paths=300, seed=1, brownian="tree")
    assert tree.passed and path.passed and abs(tree.order - path.order) < 0.1
    assert tree.problem.endswith("via BrownianTree")
    with pytest.raises(ValueError, match="brownian"):
        verify.strong_order("milstein", gbm, n_paths=300, brownian="trees")
