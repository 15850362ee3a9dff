"""Toy data sets (generated in code, seeded) and plugin registration."""

from __future__ import annotations

import importlib.metadata
import math

import pytest
import torch
from sdeflow_generative import GaussianMixture, datasets


@pytest.mark.parametrize("name", sorted(datasets.DATASETS))
def test_shapes_seeds_dtype(name: str) -> None:
    fn = datasets.DATASETS[name]
    a = fn(500, seed=3)
    assert a.shape == (500, 2) and a.dtype == torch.get_default_dtype()
    assert bool(torch.isfinite(a).all())
    assert torch.equal(a, fn(500, seed=3))
    assert not torch.equal(a, fn(500, seed=4))
    b = fn(500, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert b.dtype == torch.float64
    assert torch.equal(b.float(), a.float())  # generator and seed give the same points
    assert float(a.abs().max()) < 5.0


def test_dataset_geometry() -> None:
    n = 4000
    # circles: radii 1 and factor (noise 0 -> exactly on the circles)
    r = datasets.circles(n, noise=0.0, factor=0.3, seed=0, dtype=torch.float64).norm(dim=-1)
    assert bool((((r - 1).abs() < 1e-12) | ((r - 0.3).abs() < 1e-12)).all())
    frac_outer = float(((r - 1).abs() < 1e-12).double().mean())
    assert abs(frac_outer - 0.5) < 4 * math.sqrt(0.25 / n)
    # checkerboard: inside [-2, 2]^2 and only on squares with floor(x) + floor(y) even
    c = datasets.checkerboard(n, seed=0, dtype=torch.float64)
    assert bool((c.abs() <= 2).all())
    parity = torch.remainder(torch.floor(c[:, 0]) + torch.floor(c[:, 1]), 2)
    assert bool((parity == 0).all())
    # eight gaussians: 8 modes on the circle of the given radius
    e = datasets.eight_gaussians(n, radius=2.0, std=0.0, seed=0, dtype=torch.float64)
    torch.testing.assert_close(e.norm(dim=-1), torch.full((n,), 2.0, dtype=torch.float64))
    angles = torch.round(torch.atan2(e[:, 1], e[:, 0]) / (math.pi / 4)).remainder(8)
    assert set(angles.long().tolist()) == set(range(8))
    # moons: noise-free points lie on the two unit half circles
    mo = datasets.moons(n, noise=0.0, seed=0, dtype=torch.float64) + torch.tensor([0.5, 0.25])
    d_outer = (mo.norm(dim=-1) - 1).abs()
    d_inner = ((mo - torch.tensor([1.0, 0.5], dtype=torch.float64)).norm(dim=-1) - 1).abs()
    assert bool((torch.minimum(d_outer, d_inner) < 1e-12).all())
    # spirals: two arms related by a point reflection
    s = datasets.spirals(n, noise=0.0, seed=0, dtype=torch.float64)
    rad = 3.0 * s.norm(dim=-1)  # radius = angle parameter a in [0, 3 pi]
    assert float(rad.max()) <= 3 * math.pi + 1e-9


def test_mixture2d_is_a_ready_target() -> None:
    t = datasets.mixture2d()
    assert isinstance(t, GaussianMixture) and t.dim == 2 and t.n_components == 4
    torch.testing.assert_close(t.weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert datasets.mixture2d(dtype=torch.float32).dtype == torch.float32


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n"):
        datasets.moons(0)
    with pytest.raises(ValueError, match="noise"):
        datasets.moons(10, noise=-1.0)
    with pytest.raises(ValueError, match="factor"):
        datasets.circles(10, factor=1.5)
    with pytest.raises(ValueError, match="seed, generator"):
        datasets.spirals(10, seed=1, generator=torch.Generator())
    with pytest.raises(TypeError, match="seed"):
        datasets.checkerboard(10, seed=1.5)  # type: ignore[arg-type]


def test_plugin_entry_point_registered() -> None:
    """`pip install -e .` (README) registers the plugin: a missing entry point is a bug."""
    eps = importlib.metadata.entry_points(group="sdeflow.plugins")
    found = {ep.name: ep.value for ep in eps}
    assert found.get("generative") == "sdeflow_generative", found
    mod = next(ep for ep in eps if ep.name == "generative").load()
    assert hasattr(mod, "GaussianPath") and isinstance(mod.DESCRIPTION, str)


# ------------------------------------------------------------------ labelled sets and digits
def test_labelled_moons_halves() -> None:
    x, y = datasets.labelled("moons", 4000, seed=0, dtype=torch.float64)
    # before the shift, the outer half has y >= 0 and the inner one y <= 1/2 (plus noise)
    outer, inner = x[y == 0], x[y == 1]
    assert y.dtype == torch.int64 and set(y.tolist()) == {0, 1}
    assert float(outer[:, 1].mean()) > 0.2 > float(inner[:, 1].mean())
    # same points as the unlabelled generator
    assert torch.equal(x, datasets.moons(4000, seed=0, dtype=torch.float64))


def test_labelled_checkerboard_cells() -> None:
    x, y = datasets.labelled("checkerboard", 4000, seed=1, dtype=torch.float64)
    col = torch.floor(x[:, 0]) + 2
    row = torch.floor(x[:, 1]) + 2
    assert torch.equal(y, (2 * col + torch.div(row, 2, rounding_mode="floor")).long())
    assert torch.remainder(col + row, 2).eq(0).all()  # only the black squares
    assert set(y.tolist()) == set(range(8))


def test_labelled_gmm_components() -> None:
    x, y = datasets.labelled("gmm", 20000, seed=2, dtype=torch.float64)
    mix = datasets.mixture2d()
    counts = torch.bincount(y, minlength=4).double()
    se = torch.sqrt(20000 * mix.weights * (1 - mix.weights))
    assert ((counts - 20000 * mix.weights).abs() / se).max() < 4.5
    for k in range(4):
        pts = x[y == k]
        se_m = torch.sqrt(torch.diagonal(mix.covs[k]) / pts.shape[0])
        assert ((pts.mean(0) - mix.means[k]).abs() / se_m).max() < 4.5
    with pytest.raises(ValueError, match="name: expected one of"):
        datasets.labelled("spirals", 10)


def test_digits() -> None:
    xtr, ytr = datasets.digits("train")
    xte, yte = datasets.digits("test")
    xall, yall = datasets.digits("all", dtype=torch.float64)
    assert xtr.shape[1] == 64 and xtr.shape[0] + xte.shape[0] == xall.shape[0] == 1797
    assert float(xall.min()) == -1.0 and float(xall.max()) == 1.0
    assert set(ytr.tolist()) == set(range(10)) == set(yte.tolist())
    # disjoint split covering everything: match rows of train+test to all
    key = lambda a: sorted(map(tuple, a.tolist()))  # noqa: E731
    assert key(torch.cat([xtr, xte]).double()) == key(xall)
    fr = torch.bincount(yte, minlength=10) / torch.bincount(yall, minlength=10)
    assert ((fr - 0.25).abs() < 0.02).all()  # stratified
    img, _ = datasets.digits("test", image=True)
    assert img.shape == (xte.shape[0], 1, 8, 8) and torch.equal(img.reshape(-1, 64), xte)
    with pytest.raises(ValueError, match="split"):
        datasets.digits("val")
    with pytest.raises(ValueError, match="test_fraction"):
        datasets.digits(test_fraction=1.0)
