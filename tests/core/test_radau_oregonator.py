"""The Oregonator (Field & Noyes 1974; Hairer & Wanner II, §IV.1, problem OREGO of the IVP test
set of Mazzia et al.) for radau, rodas5 and kvaerno5 against scipy's Radau at a tight
tolerance computed here."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import sdeflow as sf

torch.set_num_threads(1)

D64 = torch.float64
T_END = 360.0
Y0 = [1.0, 2.0, 3.0]
S, W, Q = 77.27, 0.161, 8.375e-6


def oregonator(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    y1, y2, y3 = x[..., 0], x[..., 1], x[..., 2]
    return torch.stack([S * (y2 + y1 * (1 - Q * y1 - y2)), (y3 - (1 + y1) * y2) / S,
                        W * (y1 - y3)], -1)


@functools.lru_cache(maxsize=1)
def reference() -> np.ndarray:
    """scipy Radau at rtol 1e-11 / atol 1e-14 (it agrees with rtol 1e-12 to 1e-13
    component-wise, measured; 1e-12 takes 16-35 s here, 1e-11 about 13 s)."""
    from scipy.integrate import solve_ivp

    def f(t, y):
        return [S * (y[1] + y[0] * (1 - Q * y[0] - y[1])), (y[2] - (1 + y[0]) * y[1]) / S,
                W * (y[0] - y[2])]

    def jac(t, y):
        return [[S * (1 - 2 * Q * y[0] - y[1]), S * (1 - y[0]), 0.0],
                [-y[1] / S, -(1 + y[0]) / S, 1 / S], [W, 0.0, -W]]

    s = solve_ivp(f, (0.0, T_END), Y0, method="Radau", rtol=1e-11, atol=1e-14, jac=jac)
    assert s.success
    return s.y[:, -1]


@pytest.mark.slow
@pytest.mark.parametrize("name, rtol", [("radau", 1e-6), ("rodas5", 1e-6),
                                        # kvaerno5 at rtol 1e-6 ends 1.08e-5 off in y3 (11
                                        # rtol: its global error runs ~10x the tolerance
                                        # here); 1e-7 gives 1.7e-6
                                        ("kvaerno5", 1e-7)])
def test_oregonator(name: str, rtol: float) -> None:
    """One relaxation period to t = 360 (y1 spans 1 .. 1e5): component-wise relative error
    at most 1e-5 at atol 1e-10."""
    ref = reference()
    sol = sf.solve(sf.ODE(oregonator), torch.tensor(Y0, dtype=D64), (0.0, T_END), solver=name,
                   rtol=rtol, atol=1e-10)
    rel = np.abs(sol.x_final.numpy() - ref) / np.abs(ref)
    assert rel.max() <= 1e-5, rel
    assert sol.stats["njac"] >= 1 and sol.stats["steps"] < 5000
