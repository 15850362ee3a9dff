"""An adaptive SDE solve that owns its path (seed=) releases what lies behind the current
time: the stored bytes stay a few steps' worth (counted, not timed). 4,096-ish steps of a
(256, 2) GBM at a tight tolerance, seed 0."""

from __future__ import annotations

import importlib

import torch

import sdeflow as sf

solve_mod = importlib.import_module("sdeflow.solve")  # the module (sf.solve is the function)


def test_owned_path_stays_bounded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    made = []
    orig = solve_mod._owned_path

    def spy(*a, **k):  # type: ignore[no-untyped-def]
        bm = orig(*a, **k)
        made.append(bm)
        return bm

    monkeypatch.setattr(solve_mod, "_owned_path", spy)
    sde = sf.SDE(lambda t, x: 0.5 * x, lambda t, x: 0.8 * x)
    x0 = torch.ones(256, 2, dtype=torch.float64)
    sol = sf.solve(sde, x0, (0.0, 1.0), rtol=1e-4, atol=1e-4, seed=0)
    assert sol.stats["accepted"] > 500
    (bm,) = made
    row = 256 * 2 * 8  # bytes of one stored time of W
    assert bm.nbytes() < 64 * row, (bm.nbytes(), sol.stats)
    # a user's path keeps what it was asked
    user = sf.BrownianPath((256, 2), seed=0, dtype=torch.float64)
    sf.solve(sde, x0, (0.0, 1.0), rtol=1e-4, atol=1e-4, brownian=user)
    assert user.nbytes() > 500 * row
