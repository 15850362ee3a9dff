"""Parameter gradients of every SDE solver against central finite differences (issue 8).

One Brownian path (a :class:`sdeflow.BrownianPath`, seed 3) fixes the noise, so the solve is a
smooth function of the parameters; ``x0`` is tried with and without ``requires_grad`` (the
gradient must reach the drift's and the diffusion's parameters either way, through
Milstein's ``J_g g`` term too). Against torchsde's gradients on the same increments:
``test_compat_torchsde.py::test_side_by_side_values_and_gradients``.
"""

from __future__ import annotations

import math

import pytest
import torch

import sdeflow as sf
from sdeflow.solvers import get, names

torch.set_num_threads(1)
DT = torch.float64
EPS = 1e-6


def _problem(noise: str, kind: str, theta: torch.Tensor) -> sf.SDE:
    a, b, c = theta[0], theta[1], theta[2]
    drift = lambda t, x: a * torch.sin(x) - 0.2 * x  # noqa: E731
    if noise == "additive":
        return sf.SDE(drift, lambda t, x: (b + c * t) * torch.ones_like(x), noise=noise,
                      kind=kind)
    if noise == "general":
        return sf.SDE(drift, lambda t, x: torch.stack([b * torch.cos(x), c * x], -1),
                      noise=noise, kind=kind)
    return sf.SDE(drift, lambda t, x: b * torch.cos(c * x), noise=noise, kind=kind)


def _setting(name: str) -> tuple[str, str]:
    cls = sf.solvers.get(name)
    caps = cls.caps if not hasattr(cls, "base_cls") or cls.base_cls is None else cls().caps
    noise = "diagonal" if "diagonal" in caps.noise_types else caps.noise_types[0]
    kind = caps.kinds[0] if caps.kinds else "ito"
    return noise, kind


# semilinear samplers need a SemilinearSDE: their gradients are tested with their problems
SDE_SOLVERS = [n for n in names(sde=True) if not get(n).caps.semilinear]


@pytest.mark.parametrize("name", SDE_SOLVERS)
@pytest.mark.parametrize("x0_grad", [True, False])
def test_parameter_gradients_match_finite_differences(name, x0_grad):
    noise, kind = _setting(name)
    adaptive = sf.solvers.get(name).caps.adaptive
    solver = sf.solvers.Milstein(derivative="autograd") if name == "milstein" else name

    def loss(theta: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        bm = sf.BrownianPath((3, 2), 0.0, 1.0, seed=3, dtype=DT)
        # adaptive: the step-doubling machinery with every step accepted and capped at 1/32
        # (finite differences need the same steps at theta +- eps; a step sequence that moved
        # with theta would also query the path at other times)
        kw = dict(rtol=1.0, atol=1.0, dt0=1 / 32, controller=sf.PIController(
            dt_max=1 / 32)) if adaptive else dict(steps=32)
        sol = sf.solve(_problem(noise, kind, theta), x0, t_span=(0.0, 1.0), solver=solver,
                       brownian=bm, **kw)
        return (sol.ys[-1] ** 2).sum()

    theta = torch.tensor([0.6, 0.4, 0.8], dtype=DT, requires_grad=True)
    x0 = torch.full((3, 2), 0.3, dtype=DT, requires_grad=x0_grad)
    inputs = [theta, x0] if x0_grad else [theta]
    grads = torch.autograd.grad(loss(theta, x0), inputs)
    with torch.no_grad():
        fd = torch.zeros(3, dtype=DT)
        for i in range(3):
            e = torch.zeros(3, dtype=DT)
            e[i] = EPS
            fd[i] = (loss(theta + e, x0) - loss(theta - e, x0)) / (2 * EPS)
    rtol = 1e-6
    torch.testing.assert_close(grads[0], fd, rtol=rtol, atol=rtol * 1e-2)
    assert grads[0].abs().min() > 0  # every parameter reaches the loss
    if x0_grad:
        assert torch.isfinite(grads[1]).all() and grads[1].abs().max() > 0


def test_milstein_autograd_keeps_the_graph_without_x0_grad():
    """The J_g g term depends on the diffusion's parameter; with x0 not requiring grad its
    contribution must still flow (compared with the derivative-free Milstein's gradient,
    which differs only by O(sqrt h))."""
    b = torch.tensor(0.7, dtype=DT, requires_grad=True)
    sde = sf.SDE(lambda t, x: -x, lambda t, x: b * torch.sin(x))
    x0 = torch.full((64, 1), 1.0, dtype=DT)
    out = []
    for d in ("autograd", "finite_difference"):
        bm = sf.BrownianPath((64, 1), 0.0, 1.0, seed=1, dtype=DT)
        sol = sf.solve(sde, x0, t_span=(0.0, 1.0), steps=400, brownian=bm,
                       solver=sf.solvers.Milstein(derivative=d))
        (g,) = torch.autograd.grad(sol.ys[-1].sum(), [b])
        out.append(g)
    assert abs(float(out[0] - out[1])) < 0.02 * abs(float(out[1]))


@pytest.mark.parametrize("mode", ["checkpoint", "backsolve", "reversible"])
def test_adjoint_forward_draws_small_noise_blocks(mode: str, monkeypatch: pytest.MonkeyPatch
                                                  ) -> None:
    """A memory-bounded strategy's forward solve draws its increments in blocks of at most
    ADJOINT_NOISE_BLOCK_ELEMS elements (the plain solve: the loop's larger default), and the
    blocking does not change the increments: the same final state either way."""
    from sdeflow import noise as noise_mod
    from sdeflow.adjoint._common import ADJOINT_NOISE_BLOCK_ELEMS

    made: list[int] = []
    init = noise_mod.GridNoise.__init__

    def spy(self, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        init(self, *a, **kw)
        made.append(self.block_steps * math.prod(self.shape) * self.per)

    monkeypatch.setattr(noise_mod.GridNoise, "__init__", spy)
    a = torch.tensor(0.5, dtype=DT, requires_grad=True)
    sde = sf.SDE(lambda t, x: -a * x, lambda t, x: 0.3 + 0.0 * x, noise="diagonal",
                 kind="stratonovich" if mode == "reversible" else "ito")
    x0 = torch.ones(64, 64, dtype=DT)
    solver = "reversible_heun" if mode == "reversible" else "euler_maruyama"
    kw = dict(steps=200, seed=4, solver=solver)
    plain = sf.solve(sde, x0, (0.0, 1.0), **kw)
    bounded = sf.solve(sde, x0, (0.0, 1.0), adjoint=mode, adjoint_params=[a], **kw)
    assert made[0] > ADJOINT_NOISE_BLOCK_ELEMS >= made[1] > 0
    torch.testing.assert_close(bounded.x_final, plain.x_final, rtol=0, atol=0)
