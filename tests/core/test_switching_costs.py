"""Issue 11's "Switching costs" and the compat/shape "Bad input" bullets, one test each.

Every refusal is a ``TypeError``/``ValueError`` raised before any work (the fields are
instrumented to prove it where they could have been called), whose message names the argument
and says what is supported.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sdeflow as sf
from sdeflow import compat

torch.set_num_threads(1)
F64 = torch.float64


class Counted:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, t, x):
        self.calls += 1
        return self.fn(t, x)


# ------------------------------------------------------------- sf.solve with peers' objects
def test_a_plain_callable_is_an_ode():
    """torchdiffeq's func(t, y), a function or an nn.Module with forward, is an ODE."""
    class Func(nn.Module):
        def forward(self, t, y):
            return -y

        def f(self, y):  # methods named f and g do not make it a torchsde SDE
            return y

        def g(self, y):
            return y

    x0 = torch.ones(3, dtype=F64)
    ref = sf.solve(sf.ODE(lambda t, x: -x), x0, (0.0, 1.0), steps=8).x_final
    for fn in (lambda t, x: -x, Func()):
        assert torch.equal(sf.solve(fn, x0, (0.0, 1.0), steps=8).x_final, ref)


@pytest.mark.parametrize("attrs", [dict(noise_type="diagonal", sde_type="ito"),
                                   dict(noise_type="diagonal"), dict(sde_type="ito"), {}])
def test_a_torchsde_object_gets_the_wrap_hint(attrs):
    """With or without noise_type / sde_type, an object with f and g (and no forward) is
    refused with the two ways to run it; the missing attributes are named."""
    class SDEObj(nn.Module):
        def f(self, t, y):
            return -y

        def g(self, t, y):
            return y

    sde = SDEObj()
    for k, v in attrs.items():
        setattr(sde, k, v)
    with pytest.raises(TypeError, match=r"problem: this looks like a torchsde SDE object.*"
                                        r"sdeflow.compat.sdeint.*sdeflow.SDE\(drift=sde.f") as e:
        sf.solve(sde, torch.ones(2, 3), (0.0, 1.0), steps=2)
    missing = [a for a in ("noise_type", "sde_type") if a not in attrs]
    for a in missing:
        assert a in str(e.value)


def test_many_positional_times_hint_ts():
    for t in (torch.linspace(0, 1, 11), [0.0, 0.5, 1.0]):
        with pytest.raises(ValueError, match=r"t_span: expected \(t_start, t_end\), got \d+ "
                                             r"values; for output at many times pass them as "
                                             r"ts="):
            sf.solve(lambda t, x: -x, torch.ones(2), t, steps=2)


# ---------------------------------------------------------------- torchsde's shapes, core
def test_core_accepts_torchsdes_scalar_and_additive_shapes():
    """Scalar noise as (..., d, 1) and additive noise as (..., d, m) run in the core and give
    the numbers of the sdeflow forms driven by the same Brownian path."""
    x0 = torch.full((5, 3), 0.2, dtype=F64)
    pairs = [
        ("scalar", lambda t, x: (0.3 * torch.cos(x)).unsqueeze(-1), lambda t, x: 0.3 *
         torch.cos(x), (5, 1), ["euler_maruyama", "milstein", "stochastic_heun"]),
        ("additive", lambda t, x: 0.3 * torch.eye(3, dtype=F64).expand(5, 3, 3),
         lambda t, x: torch.full_like(x, 0.3), (5, 3), ["euler_maruyama", "sra1"]),
    ]
    for noise, g_peer, g_sf, bshape, solvers in pairs:
        for name in solvers:
            out = []
            for g in (g_peer, g_sf):
                sde = sf.SDE(lambda t, x: -x, g, noise=noise,
                             kind="stratonovich" if name == "stochastic_heun" else "ito")
                bm = sf.BrownianPath(bshape, seed=4, dtype=F64)
                out.append(sf.solve(sde, x0, (0.0, 1.0), solver=name, steps=8,
                                    brownian=bm).x_final)
            torch.testing.assert_close(out[0], out[1], rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("noise, shape, want", [
    ("diagonal", (4, 3, 2), r"expected the state's shape \(4, 3\) \(diagonal noise; for a "
                            r"\(\.\.\., d, m\) matrix declare noise='general'"),
    ("scalar", (4, 3, 2), r"expected the state's shape \(4, 3\) or \(4, 3, 1\)"),
    ("additive", (4, 2), r"noise='additive' expects g\(t, x\) of the state's shape \(4, 3\) "
                         r"\(elementwise\) or \(4, 3, 'm'\)"),
    ("general", (4, 3), r"general noise: returned shape \(4, 3\), expected \(4, 3, 'm'\)"),
])
def test_diffusion_shapes_that_fit_no_form_name_the_accepted_ones(noise, shape, want):
    """Additive and general noise probe g before the first step; diagonal and scalar noise check
    g's output at its first call, inside the first step (after at most one drift call)."""
    f = Counted(lambda t, x: -x)
    sde = sf.SDE(f, lambda t, x: torch.ones(shape, dtype=F64), noise=noise)
    with pytest.raises(ValueError, match="diffusion: .*" + want + r".*\(at t=0\)"):
        sf.solve(sde, torch.ones(4, 3, dtype=F64), (0.0, 1.0), steps=4, seed=0)
    assert f.calls == (0 if noise in ("additive", "general") else 1)


# ------------------------------------------------------------------------ compat.sdeint
class TS(nn.Module):
    def __init__(self, noise_type="diagonal", sde_type="ito", gshape=None):
        super().__init__()
        self.noise_type, self.sde_type, self.gshape = noise_type, sde_type, gshape
        self.fcalls = 0

    def f(self, t, y):
        self.fcalls += 1
        return -y

    def g(self, t, y):
        return torch.full(self.gshape, 0.2, dtype=y.dtype)


Y0 = torch.ones(4, 3, dtype=F64)
TS_ = torch.tensor([0.0, 1.0], dtype=F64)


@pytest.mark.parametrize("noise, gshape, want", [
    ("diagonal", (4, 3, 1), r"\(batch, d\)"), ("scalar", (4, 3), r"\(batch, d, 1\)"),
    ("scalar", (4, 3, 2), r"\(batch, d, 1\)"), ("additive", (4, 3), r"\(batch, d, m\)"),
    ("general", (4, 2, 2), r"\(batch, d, m\)"),
])
def test_compat_shapes_matching_no_torchsde_convention(noise, gshape, want):
    sde = TS(noise, gshape=gshape)
    with pytest.raises(ValueError, match=rf"sde: g\(t, y\) returned shape .*noise_type="
                                         rf"'{noise}' torchsde expects {want}"):
        compat.sdeint(sde, Y0, TS_, method="euler", dt=0.1)
    assert sde.fcalls == 0


def test_compat_missing_or_unknown_types_list_the_supported_ones():
    for attr in ("noise_type", "sde_type"):
        sde = TS(gshape=(4, 3))
        delattr(sde, attr)
        with pytest.raises(ValueError, match=rf"sde: the SDE object has no {attr} attribute; "
                                             rf"torchsde SDEs declare noise_type in .*"
                                             rf"sde_type in"):
            compat.sdeint(sde, Y0, TS_, dt=0.1)
    with pytest.raises(ValueError, match=r"sde: noise_type='diag', expected one of "
                                         r"\('diagonal', 'scalar', 'additive', 'general'\)"):
        compat.sdeint(TS("diag", gshape=(4, 3)), Y0, TS_, dt=0.1)
    with pytest.raises(ValueError, match=r"sde: sde_type='strat', expected one of "
                                         r"\('ito', 'stratonovich'\)"):
        compat.sdeint(TS(sde_type="strat", gshape=(4, 3)), Y0, TS_, dt=0.1)


def test_compat_unsupported_methods_options_and_names_list_what_is_supported():
    sde = TS(gshape=(4, 3))
    cases = [
        (dict(method="log_ode_midpoint"), r"method: 'log_ode_midpoint' is not supported; "
                                          r"supported methods: euler, milstein, srk"),
        (dict(method="heun"), r"method: 'heun' does not support sde_type='ito' with "
                              r"noise_type='diagonal'; methods that do: euler, milstein"),
        (dict(method="euler", options={"grad_free": True}),
         r"options: \['grad_free'\] not supported with method='euler'; supported: none"),
        (dict(method="milstein", options={"step": 1}),
         r"options: \['step'\] not supported with method='milstein'; supported: grad_free"),
        (dict(names={"drift_fn": "f"}), r"names: \['drift_fn'\] not supported; supported keys: "
                                        r"drift, diffusion, prior_drift"),
        (dict(method="reversible_heun"), r"method: 'reversible_heun' does not support "
                                         r"sde_type='ito'"),
    ]
    for kw, want in cases:
        with pytest.raises(ValueError, match=want):
            compat.sdeint(sde, Y0, TS_, dt=0.1, **kw)
    add = TS("additive", gshape=(4, 3, 2))
    with pytest.raises(ValueError, match=r"adaptive: method='srk' has no error estimate here; "
                                         r"use euler, milstein"):
        compat.sdeint(add, Y0, TS_, dt=0.1, method="srk", adaptive=True)
    assert sde.fcalls == add.fcalls == 0


def test_compat_brownian_objects_of_the_wrong_shape_name_bm():
    add = TS("additive", gshape=(4, 3, 2))
    with pytest.raises(ValueError, match=r"bm: shape \(4, 3\), expected \(4, 2\) \(batch, m\) "
                                         r"for noise_type='additive' with g\(t, y\) of shape "
                                         r"\(4, 3, 2\)"):
        compat.sdeint(add, Y0, TS_, dt=0.1, bm=sf.BrownianPath((4, 3), dtype=F64))
    with pytest.raises(TypeError, match="bm: expected a torchsde Brownian object"):
        compat.sdeint(add, Y0, TS_, dt=0.1, bm=torch.zeros(4, 2))
    import torchsde
    bi = torchsde.BrownianInterval(0.0, 1.0, (4, 2), dtype=F64)  # no space-time Levy area
    with pytest.raises(ValueError, match="bm: method='srk' needs the space-time Levy area"):
        compat.sdeint(add, Y0, TS_, dt=0.1, bm=bi, method="srk")
    assert add.fcalls == 0
