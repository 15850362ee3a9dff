"""ConditionalMatching: targets, weighting, samplers, dropout, OT coupling, errors, ground truth.

Ground truth (docs/math.md §5): with the exact marginal field as the model the CFM loss equals its
irreducible constant E Var[u_t(x|z) | x], computed here independently from the closed-form
posterior of the mixture; and grad L_CFM = grad L_FM, grad L_DSM = grad L_SM (Monte Carlo, with
the tolerance from the standard error).
"""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sdeflow_generative import CondOT, Cosine, GaussianPath, VariancePreserving, datasets, nets
from sdeflow_generative.losses import ConditionalMatching, LogitNormal, ot_pairing

F64 = torch.float64


def _draw(n: int, seed: int, t_max: float = 1.0, t_min: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    mix = datasets.mixture2d()
    z = mix.sample(n, generator=g)
    t = t_min + (t_max - t_min) * torch.rand(n, generator=g, dtype=F64)
    eps = torch.randn(n, 2, generator=g, dtype=F64)
    return mix, z, t, eps


# ------------------------------------------------------------------ targets and weighting
@pytest.mark.parametrize("schedule", [CondOT(), Cosine(), VariancePreserving()])
def test_targets_are_the_conditional_fields(schedule) -> None:
    path = GaussianPath(schedule)
    _, z, t, eps = _draw(64, 0, t_max=0.99)
    x = path.sample(z, t, eps)
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731 - loss = |target|^2
    refs = {
        "velocity": path.conditional_velocity(x, z, t),
        "score": path.conditional_score(x, z, t),
        "eps": eps,
        "x0": z,
    }
    for param, ref in refs.items():
        loss = ConditionalMatching(path, param)
        torch.testing.assert_close(loss.per_sample(zero, z, t, eps), ref.pow(2).sum(-1))


def test_per_sample_passes_x_t_and_labels() -> None:
    path = GaussianPath(CondOT())
    _, z, t, eps = _draw(8, 1)
    y = torch.arange(8) % 3
    seen = {}

    def model(x, tt, y):
        seen.update(x=x, t=tt, y=y)
        return torch.zeros_like(x)

    ConditionalMatching(path).per_sample(model, z, t, eps, y)
    torch.testing.assert_close(seen["x"], t[:, None] * z + (1 - t[:, None]) * eps)
    assert torch.equal(seen["t"], t) and torch.equal(seen["y"], y)


@pytest.mark.parametrize("src,dst", [("score", "eps"), ("eps", "velocity"), ("x0", "velocity"),
                                     ("velocity", "x0")])
def test_weighting_by_parameterization_is_the_error_measured_there(src: str, dst: str) -> None:
    """weighting=dst: w ||out - target||^2 equals ||convert(out) - convert(target)||^2."""
    path = GaussianPath(Cosine())
    _, z, t, eps = _draw(32, 2, t_min=0.05, t_max=0.95)
    x = path.sample(z, t, eps)
    g = torch.Generator().manual_seed(9)
    bias = torch.randn(32, 2, generator=g, dtype=F64)
    target = ConditionalMatching(path, src).target(z, eps, t)
    model = lambda xx, tt: target + bias  # noqa: E731 - a model with a known error
    got = ConditionalMatching(path, src, weighting=dst).per_sample(model, z, t, eps)
    conv = lambda v: path.convert(v, x, t, src, dst)  # noqa: E731
    ref = (conv(target + bias) - conv(target)).pow(2).sum(-1)
    torch.testing.assert_close(got, ref)


def test_weighting_score_as_eps_is_the_ddpm_loss() -> None:
    path = GaussianPath(CondOT())
    _, z, t, eps = _draw(16, 3, t_max=0.9)
    model = lambda x, tt: torch.ones_like(x)  # noqa: E731
    dsm = ConditionalMatching(path, "score").per_sample(model, z, t, eps)
    w = ConditionalMatching(path, "score", weighting="eps").per_sample(model, z, t, eps)
    torch.testing.assert_close(w, (1 - t) ** 2 * dsm)
    c = ConditionalMatching(path, weighting=lambda tt: 2.0 * tt).per_sample(model, z, t, eps)
    torch.testing.assert_close(c, 2 * t * ConditionalMatching(path).per_sample(model, z, t, eps))


def test_images_work() -> None:
    """Image batches (B, C, H, W): sum over every non-batch dimension."""
    path = GaussianPath(CondOT())
    g = torch.Generator().manual_seed(4)
    z, eps = torch.randn(5, 1, 4, 4, generator=g), torch.randn(5, 1, 4, 4, generator=g)
    t = torch.rand(5, generator=g)
    out = ConditionalMatching(path).per_sample(lambda x, tt: torch.zeros_like(x), z, t, eps)
    torch.testing.assert_close(out, (z - eps).pow(2).sum((1, 2, 3)))


# ------------------------------------------------------------------ random parts
def test_logit_normal_times() -> None:
    loss = ConditionalMatching(GaussianPath(CondOT()), time_sampler="logit_normal")
    n = 20000
    t = loss.sample_times(n, torch.Generator().manual_seed(0), torch.zeros(1, dtype=F64))
    logit = torch.log(t / (1 - t))
    assert abs(float(logit.mean())) < 4 / n**0.5  # N(0, 1): SE 1/sqrt(n)
    assert abs(float(logit.std()) - 1.0) < 4 / (2 * n) ** 0.5
    t2 = LogitNormal(1.0, 0.5)(n, torch.Generator().manual_seed(1), F64, torch.device("cpu"))
    assert abs(float(torch.log(t2 / (1 - t2)).mean()) - 1.0) < 4 * 0.5 / n**0.5


def test_callable_time_sampler_and_its_check() -> None:
    path = GaussianPath(CondOT())
    fixed = ConditionalMatching(path, time_sampler=lambda n, g, dt, dev: torch.full((n,), 0.25))
    _, t, _, _ = fixed.draw(torch.zeros(4, 2))
    assert torch.equal(t, torch.full((4,), 0.25))
    bad = ConditionalMatching(path, time_sampler=lambda n, g, dt, dev: torch.zeros(n + 1))
    with pytest.raises(ValueError, match="time_sampler: expected a tensor of shape"):
        bad(lambda x, t: x, torch.zeros(4, 2))


def test_label_dropout_rate_and_values() -> None:
    loss = ConditionalMatching(GaussianPath(CondOT()), label_dropout=0.2, null_label=7)
    n = 20000
    y = torch.randint(0, 7, (n,), generator=torch.Generator().manual_seed(0))
    _, _, _, yd = loss.draw(torch.zeros(n, 2), y, torch.Generator().manual_seed(1))
    dropped = yd != y
    assert torch.equal(yd[dropped], torch.full_like(yd[dropped], 7))
    rate = float(dropped.double().mean())
    assert abs(rate - 0.2) < 4 * (0.2 * 0.8 / n) ** 0.5


def test_same_generator_same_loss() -> None:
    path = GaussianPath(CondOT())
    loss = ConditionalMatching(path, label_dropout=0.1, null_label=3, coupling="ot")
    net = nets.MLP(2, hidden=8, depth=1, num_classes=3, seed=0)
    x, y = datasets.labelled("gmm", 64, seed=0, dtype=torch.float32)
    a = loss(net, x, y % 3, torch.Generator().manual_seed(5))
    b = loss(net, x, y % 3, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 6))
def test_ot_pairing_is_the_optimal_permutation(seed: int, n: int) -> None:
    g = torch.Generator().manual_seed(seed)
    eps, z = torch.randn(n, 3, generator=g, dtype=F64), torch.randn(n, 3, generator=g, dtype=F64)
    perm = ot_pairing(eps, z)
    assert sorted(perm.tolist()) == list(range(n))
    cost = lambda p: float((eps[list(p)] - z).pow(2).sum())  # noqa: E731
    best = min(cost(p) for p in itertools.permutations(range(n)))
    assert cost(perm.tolist()) == pytest.approx(best, rel=1e-12, abs=1e-12)


def test_ot_coupling_pairs_noise_with_data() -> None:
    path = GaussianPath(CondOT())
    z = datasets.mixture2d().sample(256, generator=torch.Generator().manual_seed(0))
    _, _, e_ind, _ = ConditionalMatching(path).draw(z, generator=torch.Generator().manual_seed(1))
    _, _, e_ot, _ = ConditionalMatching(path, coupling="ot").draw(
        z, generator=torch.Generator().manual_seed(1))
    # the same noise points, re-assigned, at a lower transport cost
    assert torch.equal(torch.sort(e_ot[:, 0]).values, torch.sort(e_ind[:, 0]).values)
    assert float((e_ot - z).pow(2).sum()) < 0.6 * float((e_ind - z).pow(2).sum())


# ------------------------------------------------------------------ bad input
def test_bad_input_names_the_argument() -> None:
    path = GaussianPath(CondOT())
    net = nets.MLP(2, hidden=8, depth=1, num_classes=3, seed=0)
    x = torch.randn(4, 2)
    y = torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match="param: expected one of"):
        ConditionalMatching(path, "noise")
    with pytest.raises(ValueError, match=r"label_dropout: expected a probability in \[0, 1\)"):
        ConditionalMatching(path, label_dropout=1.0, null_label=3)
    with pytest.raises(ValueError, match="label_dropout"):
        ConditionalMatching(path, label_dropout=-0.1, null_label=3)
    with pytest.raises(ValueError, match="null_label: label_dropout > 0"):
        ConditionalMatching(path, label_dropout=0.1)
    with pytest.raises(ValueError, match="null_label: 2 is a real class"):
        ConditionalMatching(path, label_dropout=0.1, null_label=2)(net, x, y)
    with pytest.raises(ValueError, match="null_label: 5 occurs among the labels"):
        ConditionalMatching(path, label_dropout=0.1, null_label=5)(
            lambda a, t, y: a, x, torch.tensor([0, 5, 1, 1]))
    with pytest.raises(ValueError, match=r"y: expected labels in \[0, 3\]"):
        ConditionalMatching(path)(net, x, torch.tensor([0, 1, 9, 0]))
    with pytest.raises(ValueError, match="y: expected labels >= 0"):
        ConditionalMatching(path)(net, x, torch.tensor([0, -1, 1, 0]))
    with pytest.raises(ValueError, match="y: label_dropout > 0 needs labels"):
        ConditionalMatching(path, label_dropout=0.1, null_label=3)(net, x)
    with pytest.raises(ValueError, match="model: expected an output of x's shape"):
        ConditionalMatching(path)(lambda a, t: a[:, :1], x)
    with pytest.raises(TypeError, match="model: expected an output of x's dtype"):
        ConditionalMatching(path)(lambda a, t: a.double(), x)
    with pytest.raises(ValueError, match="param: 'velocity' contradicts"):
        ConditionalMatching(path)(nets.MLP(2, hidden=4, depth=1, param="eps"), x)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 2\)"):
        ConditionalMatching(path)(net, torch.randn(4, 3))
    with pytest.raises(ValueError, match="time_sampler"):
        ConditionalMatching(path, time_sampler="beta")
    with pytest.raises(ValueError, match="weighting"):
        ConditionalMatching(path, weighting="snr")
    with pytest.raises(ValueError, match="coupling"):
        ConditionalMatching(path, coupling="sinkhorn")
    with pytest.raises(ValueError, match="t: the score target"):
        ConditionalMatching(path, "score").per_sample(
            lambda a, t: a, x, torch.ones(4), torch.randn(4, 2))


# ------------------------------------------------------------------ ground truth
def _posterior_trace_cov(mix, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """tr Cov[z | x_t = x] for CondOT from the closed-form posterior (docs/math.md §5), written
    out here with explicit 2x2 inverses, independently of the plugin's mixture algebra."""
    a = t[:, None, None, None]  # broadcasts against (n, K, 2, 2)
    b = (1 - t)[:, None, None, None]
    S = mix.covs  # (K, 2, 2)
    mu = mix.means  # (K, 2)
    eye = torch.eye(2, dtype=F64)
    C = a**2 * S[None] + b**2 * eye  # (n, K, 2, 2)
    Ci = torch.linalg.inv(C)
    d = x[:, None, :] - t[:, None, None] * mu[None]  # (n, K, 2)
    maha = torch.einsum("nki,nkij,nkj->nk", d, Ci, d)
    logn = -0.5 * maha - 0.5 * torch.logdet(C)  # + a constant, which the softmax removes
    r = torch.softmax(torch.log(mix.weights)[None] + logn, dim=-1)  # (n, K)
    SCi = S[None] @ Ci  # S_k C_k^-1
    m = mu[None] + t[:, None, None] * torch.einsum("nkij,nkj->nki", SCi, d)  # (n, K, 2) means
    P = S[None] - a**2 * SCi @ S[None]  # posterior covariances (n, K, 2, 2)
    mean = torch.einsum("nk,nki->ni", r, m)
    second = torch.einsum("nk,nkij->nij", r, P + m[..., :, None] * m[..., None, :])
    cov = second - mean[:, :, None] * mean[:, None, :]
    return torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1)


def test_cfm_loss_of_the_exact_field_is_the_irreducible_constant() -> None:
    """E[l(u*)] = E_{t,x} Var[u_t(x|z) | x] = E (1/(1-t))^2 tr Cov[z|x] for CondOT, and for the
    model u* + delta: E[l] = |delta|^2 + that constant (L_CFM = L_FM + const). n = 40000, seed 0,
    t ~ U(0, 0.95); tolerance 4 standard errors of the per-sample difference."""
    path = GaussianPath(CondOT())
    mix, z, t, eps = _draw(40000, 0, t_max=0.95)
    exact = path.marginal(mix)
    loss = ConditionalMatching(path)
    x = path.sample(z, t, eps)
    const = _posterior_trace_cov(mix, x, t) / (1 - t) ** 2  # (alpha' - beta' alpha / beta)^2
    for delta in (0.0, 0.5):
        model = lambda xx, tt, d=delta: exact.velocity(xx, tt) + d  # noqa: E731
        diff = loss.per_sample(model, z, t, eps) - const - 2 * delta**2
        se = float(diff.std()) / diff.numel() ** 0.5
        assert abs(float(diff.mean())) < 4 * se, (delta, float(diff.mean()), se)
        assert se < 0.01 * float(const.mean())  # the test resolves 1% of the constant


def _grad(net: torch.nn.Module, value: torch.Tensor) -> torch.Tensor:
    grads = torch.autograd.grad(value, list(net.parameters()))
    return torch.cat([g.reshape(-1) for g in grads])


def _grad_statistic(net, loss_a, loss_b, n: int, n_groups: int = 40):
    """Mean over groups of samples of grad(mean loss_a) - grad(mean loss_b), its SE, and
    T = |mean|^2 / sum SE^2 (~1 when the gradients agree in expectation), with the signal
    |grad b|^2 / sum SE^2. ``loss_a(sl)``, ``loss_b(sl)``: per-sample losses of slice ``sl``."""
    diffs, refs = [], []
    size = n // n_groups
    for i in range(n_groups):
        sl = slice(i * size, (i + 1) * size)
        da, db = _grad(net, loss_a(sl).mean()), _grad(net, loss_b(sl).mean())
        diffs.append(da - db)
        refs.append(db)
    D = torch.stack(diffs)
    mean, se = D.mean(0), D.std(0) / n_groups**0.5
    T = float(mean.pow(2).sum() / se.pow(2).sum())
    signal = float(torch.stack(refs).mean(0).pow(2).sum() / se.pow(2).sum())
    return T, signal


def test_grad_cfm_equals_grad_fm() -> None:
    """grad L_CFM = grad L_FM for a small MLP at the same (t, x) samples: the group-mean
    difference is within its standard error (T = |diff|^2 / sum SE^2 ~ 1), while the gradient
    itself is >> its SE, and the notes' typo target (alpha z + beta eps) fails. n = 8000, 40
    groups, seed 0, t ~ U(0, 0.9)."""
    path = GaussianPath(CondOT())
    mix, z, t, eps = _draw(8000, 0, t_max=0.9)
    exact = path.marginal(mix)
    net = nets.MLP(2, hidden=16, depth=1, emb_dim=8, seed=0).double()
    x = path.sample(z, t, eps)
    u_star = exact.velocity(x, t)
    loss = ConditionalMatching(path)
    cfm = lambda s: loss.per_sample(net, z[s], t[s], eps[s])  # noqa: E731
    fm = lambda s: (net(x[s], t[s]) - u_star[s]).pow(2).sum(-1)  # noqa: E731
    T, signal = _grad_statistic(net, cfm, fm, 8000)
    assert T < 4.0 and signal > 100.0, (T, signal)
    typo_target = t[:, None] * z + (1 - t[:, None]) * eps
    typo = lambda s: (net(x[s], t[s]) - typo_target[s]).pow(2).sum(-1)  # noqa: E731
    T_typo, _ = _grad_statistic(net, typo, fm, 8000)
    assert T_typo > 100.0


def test_grad_dsm_equals_grad_sm() -> None:
    """grad L_DSM = grad L_SM (score model), as above; t ~ U(0.1, 0.9) keeps -eps/beta bounded."""
    path = GaussianPath(CondOT())
    mix, z, t, eps = _draw(8000, 1, t_min=0.1, t_max=0.9)
    exact = path.marginal(mix)
    net = nets.MLP(2, hidden=16, depth=1, emb_dim=8, param="score", seed=1).double()
    x = path.sample(z, t, eps)
    s_star = exact.score(x, t)
    loss = ConditionalMatching(path, "score")
    dsm = lambda s: loss.per_sample(net, z[s], t[s], eps[s])  # noqa: E731
    sm = lambda s: (net(x[s], t[s]) - s_star[s]).pow(2).sum(-1)  # noqa: E731
    T, signal = _grad_statistic(net, dsm, sm, 8000)
    assert T < 4.0 and signal > 100.0, (T, signal)
