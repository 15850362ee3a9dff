"""Issue 8's plugin audit: bad input names the argument (CondOT path, 2-d states)."""

from __future__ import annotations

import pytest
import torch

import sdeflow_generative as gen

PATH = gen.GaussianPath(gen.CondOT())


def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return -x


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(eps=3.0), TypeError, "eps"),
    (dict(generator=3), TypeError, "generator"),
])
def test_sample(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        PATH.sample(torch.randn(8, 2), 0.5, **kwargs)


def test_log_prob_names_the_users_arguments() -> None:
    x = torch.randn(8, 2)
    with pytest.raises(ValueError, match="^x: contains NaN"):
        gen.likelihood.log_prob(PATH, velocity, torch.full((8, 2), float("nan")),
                                param="velocity", steps=4)
    with pytest.raises(TypeError, match="generator"):
        gen.likelihood.log_prob(PATH, velocity, x, param="velocity", steps=4, generator=3,
                                trace="hutchinson")
    with pytest.raises(ValueError, match="model: its output does not depend on x"):
        gen.likelihood.log_prob(PATH, lambda x, t: (-x).detach(), x, param="velocity", steps=4)
    with torch.inference_mode(), pytest.raises(ValueError, match=r"torch.no_grad\(\)"):
        gen.likelihood.log_prob(PATH, velocity, x, param="velocity", steps=4)
    with torch.no_grad():  # the documented alternative works
        lp = gen.likelihood.log_prob(PATH, velocity, x, param="velocity", steps=4)
    assert lp.shape == (8,) and bool(torch.isfinite(lp).all())


def test_diffusion_sde_sigma_type() -> None:
    with pytest.raises(TypeError, match="sigma"):
        gen.DiffusionSDE(PATH, velocity, param="velocity", sigma=torch.ones(3))
