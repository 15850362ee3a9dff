"""Toy 2D data sets generated in code (no download), plus a ready 2D Gaussian-mixture target.

Each generator returns ``(n, 2)`` points. Randomness comes from ``generator`` if given, else from a
fresh CPU generator seeded with ``seed`` (``seed=None`` draws from torch's global RNG). Points are
generated in float64 on the CPU and then moved to ``dtype`` (default: torch's default dtype) and
``device``, so a seed gives the same points on every device.

==================  ========================================================  ===============
name                description                                               extent
==================  ========================================================  ===============
``moons``           two interleaving half circles (as scikit-learn), centred  ~[-1.5, 1.5]^2
``circles``         two concentric circles, radii 1 and ``factor``            ~[-1, 1]^2
``checkerboard``    uniform on 8 squares of a 4x4 checkerboard                [-2, 2]^2
``eight_gaussians`` 8 isotropic Gaussians on a circle of ``radius``           ~[-2.5, 2.5]^2
``spirals``         two interleaved spirals                                   ~[-3.5, 3.5]^2
==================  ========================================================  ===============

:func:`mixture2d` is an exact :class:`~sdeflow_generative.targets.GaussianMixture` (4 anisotropic,
correlated, unequally weighted components) for tests and benchmarks with ground truth.

Labelled data (for class-conditional models and classifier-free guidance): :func:`labelled`
gives ``(x, y)`` for ``moons`` (the two halves), ``checkerboard`` (the 8 squares) and ``gmm``
(the 4 components of :func:`mixture2d`); :func:`digits` gives scikit-learn's bundled 8x8 digits
(no download; needs the ``generative`` extra) scaled to ``[-1, 1]``, with labels, split into train
and test.
"""

from __future__ import annotations

import math

import torch

from ._utils import check_positive_int
from .targets import GaussianMixture

Tensor = torch.Tensor

__all__ = [
    "moons", "circles", "checkerboard", "eight_gaussians", "spirals", "mixture2d", "DATASETS",
    "LABELLED", "labelled", "digits",
]


def _gen(seed: int | None, generator: torch.Generator | None) -> torch.Generator | None:
    if generator is not None:
        if seed is not None:
            raise ValueError("seed, generator: give at most one of seed and generator")
        if not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator: expected a torch.Generator, got {type(generator).__name__}"
            )
        return generator
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    return torch.Generator().manual_seed(seed)


def _out(x: Tensor, dtype: torch.dtype | None, device: torch.device | str | None) -> Tensor:
    return x.to(dtype=dtype or torch.get_default_dtype(), device=device)


def _check_nonneg(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name}: expected a float >= 0, got {value!r}")
    return float(value)


def _randn(n: int, g: torch.Generator | None) -> Tensor:
    return torch.randn(n, 2, generator=g, dtype=torch.float64)


def _rand(n: int, g: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64)


def moons(
    n: int,
    *,
    noise: float = 0.05,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    return_labels: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Two moons: outer ``(cos a, sin a)``, inner ``(1 - cos a, 1/2 - sin a)``, ``a ~ U(0, pi)``,
    shifted by ``(-1/2, -1/4)``, plus ``N(0, noise^2 I)``. Returns ``(n, 2)``; with
    ``return_labels=True`` also the half of each point ``(n,)`` (int64: 0 outer, 1 inner)."""
    n = check_positive_int(n, "n")
    noise = _check_nonneg(noise, "noise")
    g = _gen(seed, generator)
    a = math.pi * _rand(n, g)
    inner = torch.rand(n, generator=g, dtype=torch.float64) < 0.5
    x = torch.where(inner, 1.0 - torch.cos(a), torch.cos(a))
    y = torch.where(inner, 0.5 - torch.sin(a), torch.sin(a))
    pts = torch.stack([x - 0.5, y - 0.25], dim=-1) + noise * _randn(n, g)
    if return_labels:
        return _out(pts, dtype, device), inner.to(device=device, dtype=torch.int64)
    return _out(pts, dtype, device)


def circles(
    n: int,
    *,
    noise: float = 0.05,
    factor: float = 0.5,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Two concentric circles of radii 1 and ``factor`` (each point picks one with probability
    1/2, angle uniform), plus ``N(0, noise^2 I)``. Returns ``(n, 2)``."""
    n = check_positive_int(n, "n")
    noise = _check_nonneg(noise, "noise")
    if not 0.0 < factor < 1.0:
        raise ValueError(f"factor: expected a float in (0, 1), got {factor!r}")
    g = _gen(seed, generator)
    a = 2.0 * math.pi * _rand(n, g)
    r = torch.where(_rand(n, g) < 0.5, torch.full_like(a, factor), torch.ones_like(a))
    pts = torch.stack([r * torch.cos(a), r * torch.sin(a)], dim=-1) + noise * _randn(n, g)
    return _out(pts, dtype, device)


def checkerboard(
    n: int,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    return_labels: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Uniform on the 8 "black" unit squares of a 4x4 board on ``[-2, 2]^2``. Returns ``(n, 2)``;
    with ``return_labels=True`` also each point's square ``(n,)`` (int64 in ``0..7``:
    ``2 * column + (row // 2)`` with ``column = floor(x1) + 2``, ``row = floor(x2) + 2``)."""
    n = check_positive_int(n, "n")
    g = _gen(seed, generator)
    x1 = 4.0 * _rand(n, g) - 2.0
    x2 = _rand(n, g) - 2.0 * torch.randint(0, 2, (n,), generator=g).to(torch.float64)
    x2 = x2 + torch.remainder(torch.floor(x1), 2.0)
    pts = torch.stack([x1, x2], dim=-1)
    if return_labels:
        col = (torch.floor(x1) + 2.0).to(torch.int64)
        row = (torch.floor(x2) + 2.0).to(torch.int64)
        return _out(pts, dtype, device), (2 * col + row // 2).to(device)
    return _out(pts, dtype, device)


def eight_gaussians(
    n: int,
    *,
    radius: float = 2.0,
    std: float = 0.2,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Equal mixture of ``N(c_k, std^2 I)``, ``c_k = radius (cos(k pi/4), sin(k pi/4))``,
    ``k = 0..7``. Returns ``(n, 2)``."""
    n = check_positive_int(n, "n")
    std = _check_nonneg(std, "std")
    radius = _check_nonneg(radius, "radius")
    g = _gen(seed, generator)
    k = torch.randint(0, 8, (n,), generator=g).to(torch.float64)
    centers = radius * torch.stack([torch.cos(k * math.pi / 4), torch.sin(k * math.pi / 4)], -1)
    return _out(centers + std * _randn(n, g), dtype, device)


def spirals(
    n: int,
    *,
    noise: float = 0.1,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Two interleaved spirals: ``r = a = 3 pi sqrt(u)``, ``u ~ U(0, 1)``, points
    ``(-r cos a, r sin a) / 3`` and its reflection through the origin, plus ``N(0, noise^2 I)``.
    Returns ``(n, 2)``."""
    n = check_positive_int(n, "n")
    noise = _check_nonneg(noise, "noise")
    g = _gen(seed, generator)
    a = 3.0 * math.pi * torch.sqrt(_rand(n, g))
    pts = torch.stack([-a * torch.cos(a), a * torch.sin(a)], dim=-1) / 3.0
    sign = torch.where(_rand(n, g) < 0.5, -1.0, 1.0).to(torch.float64).unsqueeze(-1)
    return _out(sign * pts + noise * _randn(n, g), dtype, device)


def mixture2d(
    dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> GaussianMixture:
    """A ready 2D :class:`GaussianMixture` with exact density, score and path marginals.

    Components (weight, mean, covariance):

    * 0.35, (-2.0, -0.5), [[0.30, 0.15], [0.15, 0.20]]
    * 0.30, ( 2.0, -0.5), [[0.20, -0.10], [-0.10, 0.30]]
    * 0.20, ( 0.0,  2.0), diag(0.40, 0.10)
    * 0.15, ( 0.5, -2.5), diag(0.10, 0.15)
    """
    kw = {"dtype": dtype, "device": device}
    means = torch.tensor([[-2.0, -0.5], [2.0, -0.5], [0.0, 2.0], [0.5, -2.5]], **kw)
    covs = torch.tensor(
        [
            [[0.30, 0.15], [0.15, 0.20]],
            [[0.20, -0.10], [-0.10, 0.30]],
            [[0.40, 0.0], [0.0, 0.10]],
            [[0.10, 0.0], [0.0, 0.15]],
        ],
        **kw,
    )
    weights = torch.tensor([0.35, 0.30, 0.20, 0.15], **kw)
    return GaussianMixture(means, covs, weights)


DATASETS = {
    "moons": moons,
    "circles": circles,
    "checkerboard": checkerboard,
    "eight_gaussians": eight_gaussians,
    "spirals": spirals,
}


#: Labelled 2D sets: name -> number of classes.
LABELLED = {"moons": 2, "checkerboard": 8, "gmm": 4}


def labelled(
    name: str,
    n: int,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """``(x, y)``: ``n`` points ``(n, 2)`` of a labelled 2D set and their labels ``(n,)`` (int64).

    ``name`` is ``"moons"`` (labels: the half, 2 classes), ``"checkerboard"`` (the square, 8
    classes) or ``"gmm"`` (the component of :func:`mixture2d`, 4 classes).
    """
    if name not in LABELLED:
        raise ValueError(f"name: expected one of {tuple(LABELLED)}, got {name!r}")
    n = check_positive_int(n, "n")
    if name == "gmm":
        g = _gen(seed, generator)
        x, y = mixture2d().sample_labelled(n, generator=g)
        return _out(x, dtype, device), y.to(device)
    fn = moons if name == "moons" else checkerboard
    x, y = fn(n, seed=seed, generator=generator, dtype=dtype, device=device, return_labels=True)
    return x, y


def digits(
    split: str = "train",
    *,
    test_fraction: float = 0.25,
    seed: int = 0,
    image: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, no download), ``(x, y)``.

    Pixels ``0..16`` are scaled to ``x = p / 8 - 1`` in ``[-1, 1]``; ``x`` is ``(N, 64)``
    (``image=False``, the flat form the fields and samplers use) or ``(N, 1, 8, 8)``; ``y`` ``(N,)``
    int64 in ``0..9``. The split is a fixed random permutation (``seed``), stratified by class:
    of each class the first ``round(test_fraction * n_class)`` images go to ``"test"``, the rest to
    ``"train"``. ``split="all"`` returns every image in the original order.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split: expected 'train', 'test' or 'all', got {split!r}")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not (
        0.0 < float(test_fraction) < 1.0
    ):
        raise ValueError(f"test_fraction: expected a float in (0, 1), got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    try:
        from sklearn.datasets import load_digits  # noqa: PLC0415 - optional extra
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "digits() needs scikit-learn: pip install 'sdeflow[generative]'"
        ) from exc
    bunch = load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float64) / 8.0 - 1.0
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    if split != "all":
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(x.shape[0], generator=g)
        test = torch.zeros(x.shape[0], dtype=torch.bool)
        for c in range(10):
            members = perm[y[perm] == c]
            test[members[: round(float(test_fraction) * members.numel())]] = True
        keep = perm[test[perm]] if split == "test" else perm[~test[perm]]
        x, y = x[keep], y[keep]
    if image:
        x = x.reshape(-1, 1, 8, 8)
    return _out(x, dtype, device), y.to(device)
