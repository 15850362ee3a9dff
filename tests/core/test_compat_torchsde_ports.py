"""torchsde's own test problems through ``sdeflow.compat`` (the ones ``test_compat_torchsde.py``
does not cover), rewritten here from google-research/torchsde ``tests/problems.py`` and
``tests/test_sdeint.py`` / ``tests/test_adjoint.py`` (commit eb3a00e):

* ``BasicSDE1``-``BasicSDE4`` (drift/diffusion partly independent of the state or of the
  parameters, parameters that do not require grad or are unused): torchsde's
  ``test_sdeint_dependencies`` (run, shapes, also with ``names={"drift": "h"}``) and
  ``test_adjoint.py::test_basic`` (``sdeint_adjoint`` leaves ``requires_grad`` alone); here also
  side by side with torchsde on the same ``BrownianInterval`` to 1e-12.
* ``CustomNamesSDE`` / ``CustomNamesSDELogqp``: ``test_rename_methods(_logqp)``.
* ``FGSDE``, ``FAndGSDE``, ``GProdSDE``, ``FAndGProdSDE``, ``FAndGGProdSDE1/2``:
  ``test_specialised_functions`` -- torchsde asserts the six give identical results; here each
  equals torchsde's to 1e-12.
* ``test_adjoint.py::test_against_numerical``: sdeint_adjoint's parameter gradients against
  finite differences, torchsde's tolerances.
* ``test_sdeint_run_shape_method``: which (noise type, sde type, method, Brownian object,
  logqp) combinations run and which raise a ``ValueError`` before any work, with torchsde's rules
  and the documented differences (docs/compat.md): ``srk`` is SRA1, additive noise only
  (torchsde also has an SRI scheme for diagonal/scalar noise), Ito or Stratonovich alike;
  ``log_ode`` is not offered; ``milstein`` with ``grad_free`` uses the core's difference (so
  it is compared with the derivative form to O(h), not with torchsde's to 1e-12).

Thresholds: torchsde's tests check shapes and exact equality among its own variants; the
side-by-side comparisons use this repository's 1e-12 (the same increments, the same arithmetic;
torchsde's t1 = 0.3, dt = 0.05 become 0.25, 2^-4 so that the output times lie on the step grid,
where torchsde does not interpolate).
"""

from __future__ import annotations

import pytest
import test_compat_torchsde as base  # noqa: E402  (examples 1-3 and the neural SDEs)
import torch
import torchsde
from torch import nn

import sdeflow as sf
from sdeflow import compat

torch.set_num_threads(1)
DT = torch.float64
BATCH, D, M = 4, 3, 2
T0, T1, STEPS, H = 0.0, 0.25, 5, 2.0**-4  # output times on the step grid (dyadic)


def _bm(size, levy="none", entropy=45678):
    return torchsde.BrownianInterval(t0=T0, t1=T1, size=size, dtype=DT, entropy=entropy,
                                     levy_area_approximation=levy)


def _ts():
    return torch.linspace(T0, T1, STEPS, dtype=DT)


# ---------------------------------------------------------------------- BasicSDE1-4
class _Basic(nn.Module):
    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, d=D, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)

        def p(grad):
            return nn.Parameter(torch.randn(1, d, generator=g, dtype=DT), requires_grad=grad)
        self.shared_param, self.no_grad_param = p(self.grads[0]), p(self.grads[1])
        self.unused_param1, self.unused_param2 = p(self.grads[2]), p(self.grads[3])

    def h(self, t, y):
        return torch.sigmoid(y)


class BasicSDE1(_Basic):
    grads = (True, False, False, True)

    def f(self, t, y):
        return (self.shared_param * torch.sin(y) * 0.2 + torch.cos(y ** 2.0) * 0.1
                + torch.cos(t) + self.no_grad_param * y)

    def g(self, t, y):
        return (torch.sigmoid(self.shared_param * torch.cos(y) * 0.3 + torch.sin(t))
                + torch.sigmoid(self.no_grad_param * y) + 0.1)


class BasicSDE2(_Basic):
    grads = (True, False, False, True)

    def f(self, t, y):
        return self.shared_param * 0.2 + self.no_grad_param + torch.zeros_like(y)

    def g(self, t, y):
        return (torch.sigmoid(self.shared_param * 0.3) + torch.sigmoid(self.no_grad_param)
                + torch.zeros_like(y) + 0.1)


class BasicSDE3(BasicSDE2):
    grads = (False, False, True, False)


class BasicSDE4(_Basic):
    grads = (True, False, False, True)

    def f(self, t, y):
        return torch.zeros_like(y).fill_(0.1)

    def g(self, t, y):
        return torch.sigmoid(torch.zeros_like(y)) + 0.1


BASIC = [BasicSDE1, BasicSDE2, BasicSDE3, BasicSDE4]
METHODS = [("euler", None), ("milstein", None), ("milstein", {"grad_free": True})]


@pytest.mark.parametrize("cls", BASIC)
@pytest.mark.parametrize("method, options", METHODS)
@pytest.mark.parametrize("drift", ["f", "h"])
def test_basic_sdes_side_by_side(cls, method, options, drift):
    """torchsde's test_sdeint_dependencies (fixed steps): shapes, and values equal to
    torchsde's on the same BrownianInterval to 1e-12."""
    sde = cls(seed=1)
    y0 = torch.ones(BATCH, D, dtype=DT)
    names = {"drift": drift}
    with torch.no_grad():
        a = torchsde.sdeint(sde, y0, _ts(), _bm((BATCH, D)), method=method, dt=H,
                            options=options, names=names)
        b = compat.sdeint(sde, y0, _ts(), _bm((BATCH, D)), method=method, dt=H,
                          options=options, names=names)
    assert b.shape == (STEPS, BATCH, D)
    if options is None:
        torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
    else:
        # grad_free: torchsde differences g at x + h f + g sqrt(h), sdeflow's core at
        # x + g sqrt(h) (Ito; central for Stratonovich): the schemes agree to O(h) per unit time
        with torch.no_grad():
            exact_l = compat.sdeint(sde, y0, _ts(), _bm((BATCH, D)), method="milstein", dt=H,
                                    names=names)
        assert float((b - exact_l).abs().max()) < 0.05
        assert float((a - exact_l).abs().max()) < 0.05


@pytest.mark.parametrize("cls", BASIC)
@pytest.mark.parametrize("method, options", METHODS)
def test_basic_sdes_adaptive_run(cls, method, options):
    """The adaptive half of test_sdeint_dependencies: runs, shapes, finite values."""
    sde = cls(seed=2)
    y0 = torch.ones(BATCH, D, dtype=DT)
    with torch.no_grad():
        ys = compat.sdeint(sde, y0, _ts(), method=method, dt=H, adaptive=True,
                           options=options)
    assert ys.shape == (STEPS, BATCH, D) and bool(torch.isfinite(ys).all())


@pytest.mark.parametrize("cls", [BasicSDE1, BasicSDE2, BasicSDE3, BasicSDE4])
def test_basic_sdes_adjoint_keeps_requires_grad(cls):
    """torchsde's test_adjoint.py::test_basic (milstein, fixed steps; d = 10, batch 128, t in
    [0, 0.5], dt 1e-3): sdeint_adjoint's backward leaves every parameter's requires_grad as it
    was, and the trainable, used parameter gets a finite gradient."""
    sde = cls(d=10, seed=3)
    before = [p.requires_grad for p in sde.parameters()]
    y0 = torch.full((128, 10), 0.1, dtype=DT)
    ts = torch.tensor([0.0, 0.5], dtype=DT)
    _, yt = compat.sdeint_adjoint(sde, y0, ts, method="milstein", dt=1e-3)
    yt.sum(dim=1).mean(dim=0).backward()
    assert [p.requires_grad for p in sde.parameters()] == before
    if cls in (BasicSDE1, BasicSDE2):
        assert sde.shared_param.grad is not None
        assert bool(torch.isfinite(sde.shared_param.grad).all())
    for p in (sde.unused_param1, sde.unused_param2):  # unused: no gradient, or zeros
        assert p.grad is None or not bool(p.grad.any())


# ------------------------------------------------------------------- names= renaming
class CustomNamesSDE(nn.Module):
    noise_type, sde_type = "diagonal", "ito"

    def forward(self, t, y):
        return y * t

    def g(self, t, y):
        return torch.sigmoid(t * y)


class CustomNamesSDELogqp(CustomNamesSDE):
    def w(self, t, y):
        return y * t


def test_rename_methods_and_logqp():
    """test_rename_methods / test_rename_methods_logqp: shapes (T, batch, d) and (T-1, batch),
    and equal to torchsde on the same increments."""
    y0 = torch.ones(BATCH, D, dtype=DT)
    # method given: the two libraries' defaults differ (torchsde: srk, an SRI scheme here)
    a = torchsde.sdeint(CustomNamesSDE(), y0, _ts(), _bm((BATCH, D)), dt=H,
                        names={"drift": "forward"}, method="euler")
    b = compat.sdeint(CustomNamesSDE(), y0, _ts(), _bm((BATCH, D)), dt=H,
                      names={"drift": "forward"}, method="euler")
    assert b.shape == (STEPS, BATCH, D)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
    names = {"drift": "forward", "prior_drift": "w"}
    a, la = torchsde.sdeint(CustomNamesSDELogqp(), y0, _ts(), _bm((BATCH, D + 1)), dt=H,
                            names=names, logqp=True, method="euler")
    b, lb = compat.sdeint(CustomNamesSDELogqp(), y0, _ts(), _bm((BATCH, D + 1)), dt=H,
                          names=names, logqp=True, method="euler")
    assert b.shape == (STEPS, BATCH, D) and lb.shape == (STEPS - 1, BATCH)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
    torch.testing.assert_close(lb, la, rtol=0, atol=1e-12)


# --------------------------------------------------------- f_and_g, g_prod, f_and_g_prod
class _General(nn.Module):
    noise_type = "general"

    def __init__(self, sde_type, vector):
        super().__init__()
        self.sde_type = sde_type
        self.register_buffer("vector", vector)

    def _g(self, y):
        return y.unsqueeze(-1).sigmoid() * self.vector

    def _gp(self, y, v):
        return self._g(y).bmm(v.unsqueeze(-1)).squeeze(-1)


class FGSDE(_General):
    def f(self, t, y):
        return -y

    def g(self, t, y):
        return self._g(y)


class FAndGSDE(_General):
    def f_and_g(self, t, y):
        return -y, self._g(y)


class GProdSDE(_General):
    def f(self, t, y):
        return -y

    def g_prod(self, t, y, v):
        return self._gp(y, v)


class FAndGProdSDE(_General):
    def f_and_g_prod(self, t, y, v):
        return -y, self._gp(y, v)


class FAndGGProdSDE1(_General):
    def f_and_g(self, t, y):
        return -y, self._g(y)

    def g_prod(self, t, y, v):
        return self._gp(y, v)


class FAndGGProdSDE2(FAndGGProdSDE1):
    def f(self, t, y):
        return -y


@pytest.mark.parametrize("sde_type, method", [("ito", "euler"), ("stratonovich", "midpoint")])
def test_specialised_functions(sde_type, method):
    """Each of the six ways of giving f and g equals torchsde's result on the same
    BrownianInterval (entropy 45678), and so each other, to 1e-12."""
    vector = torch.randn(M, generator=torch.Generator().manual_seed(0), dtype=DT)
    y0 = torch.randn(BATCH, D, generator=torch.Generator().manual_seed(1), dtype=DT)
    ref = torchsde.sdeint(FGSDE(sde_type, vector), y0, [T0, T1], dt=H, bm=_bm((BATCH, M)),
                          method=method)[1]
    for cls in (FGSDE, FAndGSDE, GProdSDE, FAndGProdSDE, FAndGGProdSDE1, FAndGGProdSDE2):
        out = compat.sdeint(cls(sde_type, vector), y0, [T0, T1], dt=H, bm=_bm((BATCH, M)),
                            method=method)[1]
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12, msg=cls.__name__)


def test_products_only_need_a_brownian_object():
    """g given only as g_prod: the Brownian dimension of general noise is unknown without bm
    (torchsde asks for bm too): a ValueError naming bm, before any work."""
    vector = torch.ones(M, dtype=DT)
    with pytest.raises(ValueError, match="bm: the SDE object gives its diffusion only as "
                                         r"g_prod\(t, y, v\).*pass bm="):
        compat.sdeint(GProdSDE("ito", vector), torch.ones(BATCH, D, dtype=DT), [T0, T1], dt=H)


# ----------------------------------------------------------- which combinations run
class ExDiagonal(nn.Module):
    noise_type = "diagonal"

    def __init__(self, sde_type):
        super().__init__()
        self.sde_type = sde_type
        self.mu, self.sigma = -0.5, 0.4

    def f(self, t, y):
        return self.mu * y if self.sde_type == "ito" else (self.mu - 0.08) * y

    def g(self, t, y):
        return self.sigma * y

    def h(self, t, y):
        return torch.zeros_like(y)


class ExScalar(ExDiagonal):
    noise_type = "scalar"

    def g(self, t, y):
        return (0.4 * torch.cos(y) ** 2).unsqueeze(-1)


class ExAdditive(ExDiagonal):
    noise_type = "additive"

    def g(self, t, y):
        return torch.full((y.shape[0], D, M), 0.3, dtype=y.dtype) / torch.sqrt(1 + t)


class NeuralGeneral(ExDiagonal):
    noise_type = "general"

    def g(self, t, y):
        return torch.sigmoid(y).unsqueeze(-1) * torch.tensor([0.3, -0.2], dtype=y.dtype)


ALL_METHODS = ["blah", "euler", "milstein", "milstein_grad_free", "srk", "euler_heun", "heun",
               "midpoint", "log_ode", "reversible_heun"]


def _should_fail(noise, sde_type, method, levy):
    """torchsde's rules (test_sdeint_run_shape_method), then sdeflow's documented differences."""
    fail = False
    if sde_type == "ito":
        fail = method not in ("euler", "srk", "milstein")
    else:
        fail = method not in ("euler_heun", "heun", "midpoint", "log_ode", "milstein",
                              "reversible_heun")
    if method in ("milstein", "srk") and noise == "general":
        fail = True
    if method == "srk" and levy == "none":
        fail = True
    if method == "log_ode" and levy in ("none", "space-time"):
        fail = True
    # sdeflow: srk is SRA1, additive noise only, where Ito and Stratonovich coincide (so it
    # runs on Stratonovich additive SDEs too); log_ode is not offered
    if method == "srk" and noise == "additive" and levy != "none":
        fail = False
    return fail or (method == "srk" and noise != "additive") or method in ("log_ode", "blah")


@pytest.mark.parametrize("cls", [ExDiagonal, ExScalar, ExAdditive, NeuralGeneral])
@pytest.mark.parametrize("sde_type", ["ito", "stratonovich"])
@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("levy, logqp", [(None, False), ("none", False), ("space-time", False),
                                         ("space-time", True)])
def test_sdeint_run_shape_method(cls, sde_type, method, levy, logqp):
    """Runs with the right shapes, or raises a ValueError whose message names the argument
    (method / bm) and lists what is supported, before any call of f."""
    options = {"grad_free": True} if method == "milstein_grad_free" else None
    method = "milstein" if method == "milstein_grad_free" else method
    sde = cls(sde_type)
    calls = []
    f0 = sde.f
    sde.f = lambda t, y: (calls.append(1), f0(t, y))[1]
    size = {"scalar": 1, "diagonal": D + logqp, "additive": M, "general": M}[cls.noise_type]
    bm = None if levy is None else _bm((BATCH, size), levy)
    y0 = torch.ones(BATCH, D, dtype=DT)
    fail = _should_fail(cls.noise_type, sde_type, method, levy if levy else "space-time")
    if fail:
        with pytest.raises(ValueError, match=r"(method|bm): .*(supported|methods that do|"
                                             r"levy_area_approximation)"):
            compat.sdeint(sde, y0, _ts(), bm, method=method, dt=H, logqp=logqp,
                          options=options)
        assert not calls
        return
    with torch.no_grad():
        out = compat.sdeint(sde, y0, _ts(), bm, method=method, dt=H, logqp=logqp,
                            options=options)
    ys, lr = out if logqp else (out, None)
    assert ys.shape == (STEPS, BATCH, D) and bool(torch.isfinite(ys).all())
    if logqp:
        assert lr.shape == (STEPS - 1, BATCH)


# ------------------------------------------------- test_adjoint.py::test_against_numerical
def _gradcheck_cases():
    for cls in (base.ExDiagonal, base.ExScalar, base.ExAdditive, "general"):
        for kind, method in (("ito", "milstein"), ("ito", "srk"), ("stratonovich", "midpoint"),
                             ("stratonovich", "reversible_heun")):
            noise = cls if cls == "general" else cls.noise_type
            if method == "srk" and noise != "additive":
                continue  # sdeflow's srk is SRA1 (torchsde runs its SRI scheme there)
            if noise == "general" and method in ("milstein", "srk"):
                continue  # as torchsde's test
            make = (lambda k: base.Neural("general", sde_type=k, seed=0)) if cls == "general" \
                else (lambda k, c=cls: c(d=3, m=2, sde_type=k, seed=0))
            yield pytest.param(make, noise, kind, method, id=f"{noise}-{kind}-{method}")


@pytest.mark.parametrize("make, noise, kind, method", list(_gradcheck_cases()))
def test_adjoint_against_numerical(make, noise, kind, method):
    """sdeint_adjoint's parameter gradients of mean |y(0.5)|^2 (batch 4, d 3, dt 1e-3, y0 = 0.1)
    against central finite differences (eps 1e-6) on one fixed Brownian path, with torchsde's
    tolerances: rtol = atol = 1e-2, reversible Heun 1e-6. Examples 1-3 (a few parameters):
    every coordinate; the neural general-noise SDE: two random directions."""
    sde = make(kind)
    m = {"diagonal": 3, "scalar": 1, "additive": 2, "general": 2}[noise]
    ts = torch.tensor([0.0, 0.5], dtype=DT)
    y0 = torch.full((4, 3), 0.1, dtype=DT)
    bm = sf.BrownianPath((4, m), 0.0, 0.5, seed=1, dtype=DT)
    rev = method == "reversible_heun"
    tol = 1e-6 if rev else 1e-2

    def loss():
        ys = compat.sdeint_adjoint(sde, y0, ts, dt=1e-3, method=method, bm=bm,
                                   adjoint_method="adjoint_reversible_heun" if rev else None)
        return (ys[-1] ** 2).sum(dim=1).mean(dim=0)

    params = list(sde.parameters())
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss(), params)])
    flat = [p.view(-1) for p in params]
    n = sum(f.numel() for f in flat)
    if noise == "general":
        gen = torch.Generator().manual_seed(0)
        dirs = [torch.randn(n, generator=gen, dtype=DT) for _ in range(2)]
    else:
        dirs = list(torch.eye(n, dtype=DT))
    eps = 1e-6

    def shift(v, s):
        k = 0
        for f in flat:
            f.add_(s * v[k:k + f.numel()])
            k += f.numel()

    with torch.no_grad():
        for v in dirs:
            shift(v, eps)
            a = loss()
            shift(v, -2 * eps)
            b = loss()
            shift(v, eps)
            fd = float((a - b) / (2 * eps))
            an = float(grad @ v)
            assert abs(an - fd) <= tol + tol * abs(fd), (an, fd)
