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
