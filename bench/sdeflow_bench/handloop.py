"""Section ``handloop``: per-step cost of sdeflow's loop against a hand-written torch loop."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from sdeflow import ODE, SDE, BrownianPath, solve

from .config import TDQ_FIXED, TODE_FIXED, Config
from .peers import import_peer, peer_versions
from .problems import TorchsdeSDE, linear_field
from .records import Notes, Record, progress_bar, short_exc
from .timing import Timed, calibrate, interleave, warm_up

Tensor = torch.Tensor
Field = Callable[[Tensor, Tensor], Tensor]

def _hand_euler(u: Field, x0: Tensor, tg: Tensor, h: float) -> Callable[[], Tensor]:
    n = len(tg) - 1

    def run() -> Tensor:
        x = x0
        for i in range(n):
            x = x + h * u(tg[i], x)
        return x

    return run


def _hand_rk4(u: Field, x0: Tensor, tg: Tensor, h: float) -> Callable[[], Tensor]:
    n = len(tg) - 1
    tm = (tg[:-1] + tg[1:]) * 0.5
    h2, h6 = 0.5 * h, h / 6.0

    def run() -> Tensor:
        x = x0
        for i in range(n):
            t, t2, t1 = tg[i], tm[i], tg[i + 1]
            k1 = u(t, x)
            k2 = u(t2, x + h2 * k1)
            k3 = u(t2, x + h2 * k2)
            k4 = u(t1, x + h * k3)
            x = x + h6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return x

    return run


def _hand_em(f: Field, g: Field, x0: Tensor, tg: Tensor, h: float) -> Callable[[], Tensor]:
    n = len(tg) - 1
    sh = math.sqrt(h)

    def run() -> Tensor:
        x = x0
        for i in range(n):
            t = tg[i]
            x = x + h * f(t, x) + g(t, x) * sh * torch.randn_like(x)
        return x

    return run


def _torchode_fixed(u: Field, x0: Tensor, t1: float, h: float, method: str
                    ) -> Callable[[], Tensor]:
    to = import_peer("torchode")
    term = to.ODETerm(u)
    adj = to.AutoDiffAdjoint(getattr(to, method)(term), to.FixedStepController())
    b = x0.shape[0]
    t_eval = torch.tensor([0.0, t1], dtype=x0.dtype, device=x0.device).expand(b, 2)
    prob = to.InitialValueProblem(y0=x0, t_start=t_eval[:, 0], t_end=t_eval[:, -1],
                                  t_eval=t_eval)
    dt0 = torch.full((b,), h, dtype=x0.dtype, device=x0.device)

    def run() -> Tensor:
        return adj.solve(prob, dt0=dt0).ys[:, -1]

    return run


def handloop_section(cfg: Config, notes: Notes, progress: bool) -> list[Record]:
    """Per-step cost against a minimal hand-written loop (issue 2's target)."""
    dev = torch.device(cfg.device)
    f64 = torch.float64
    versions = peer_versions()
    cases: list[tuple[str, str, int, list[tuple[str, str, Callable[[], Any]]]]] = []
    gen = torch.Generator().manual_seed(cfg.seed + 11)
    u = linear_field(f64, dev)
    for batch in cfg.hl_ode_batches:
        x0 = torch.randn(batch, 4, generator=gen, dtype=f64).to(dev)
        for method in ("euler", "rk4"):
            n = cfg.hl_ode_steps.get((method, batch), 100)
            tg = torch.linspace(0.0, 1.0, n + 1, dtype=f64, device=dev)
            h = 1.0 / n
            ode = ODE(u)
            hand = (_hand_euler if method == "euler" else _hand_rk4)(u, x0, tg, h)
            variants: list[tuple[str, str, Callable[[], Any]]] = [
                ("hand", method, hand),
                ("sdeflow", method,
                 lambda ode=ode, x0=x0, m=method, n=n: solve(ode, x0, (0.0, 1.0), solver=m,
                                                             steps=n).x_final),
            ]
            if versions["torchdiffeq"]:
                tdq = import_peer("torchdiffeq")
                tspan = tg[[0, -1]]
                tm = TDQ_FIXED[method]
                variants.append(("torchdiffeq", tm + (" (3/8 rule)" if tm == "rk4" else ""),
                                 lambda tdq=tdq, x0=x0, tspan=tspan, tm=tm, h=h: tdq.odeint(
                                     u, x0, tspan, method=tm, options={"step_size": h})[-1]))
            if versions["torchode"] and method in TODE_FIXED:
                try:
                    variants.append(("torchode", method,
                                     _torchode_fixed(u, x0, 1.0, h, TODE_FIXED[method])))
                except Exception as exc:  # noqa: BLE001
                    notes.add(f"torchode fixed-step {method} skipped: {short_exc(exc)}")
            cases.append((f"{method}, linear 4-d ODE, float64, batch {batch}", method, n,
                          variants))
    # Euler--Maruyama on OU
    theta, sig = 1.0, 0.5

    def f(t: Tensor, x: Tensor) -> Tensor:
        return -theta * x

    def g(t: Tensor, x: Tensor) -> Tensor:
        return torch.full_like(x, sig)

    b = cfg.hl_sde_batch
    x0s = torch.ones(b, 2, dtype=f64, device=dev)
    sde = SDE(f, g, noise="diagonal", kind="ito")
    for n in cfg.hl_sde_steps:
        tg = torch.linspace(0.0, 1.0, n + 1, dtype=f64, device=dev)
        h = 1.0 / n
        variants = [
            ("hand", "euler_maruyama", _hand_em(f, g, x0s, tg, h)),
            ("sdeflow", "euler_maruyama (seed)",
             lambda n=n: solve(sde, x0s, (0.0, 1.0), solver="euler_maruyama", steps=n,
                               seed=1).x_final),
            ("sdeflow", "euler_maruyama (BrownianPath)",
             lambda n=n: solve(sde, x0s, (0.0, 1.0), solver="euler_maruyama", steps=n,
                               brownian=BrownianPath((b, 2), seed=1, dtype=f64,
                                                     device=dev)).x_final),
        ]
        if versions["torchsde"]:
            tsde = import_peer("torchsde")
            ts_sde = TorchsdeSDE(f, g, "diagonal", "ito")
            tspan = tg[[0, -1]]
            variants.append(("torchsde", "euler (default BrownianInterval)",
                             lambda tsde=tsde, ts_sde=ts_sde, tspan=tspan, h=h: tsde.sdeint(
                                 ts_sde, x0s, tspan, method="euler", dt=h)[-1]))
            variants.append(("torchsde", "euler (BrownianInterval dt=h)",
                             lambda tsde=tsde, ts_sde=ts_sde, tspan=tspan, h=h: tsde.sdeint(
                                 ts_sde, x0s, tspan, method="euler", dt=h,
                                 bm=tsde.BrownianInterval(0.0, 1.0, size=(b, 2), dtype=f64,
                                                          device=dev, dt=h))[-1]))
        cases.append((f"euler_maruyama, OU, float64, batch {b}x2", "euler_maruyama", n,
                      variants))

    total = sum(len(v) for *_, v in cases) * (cfg.hl_rounds + 1)
    bar = progress_bar(total, "handloop", progress)
    records: list[Record] = []
    try:
        for title, _method, n, variants in cases:
            timed: list[tuple[str, str, Timed]] = []
            for lib, meth, fn in variants:
                try:
                    _, t_first = warm_up(fn, dev)
                    if t_first < 0.5:  # a second warm-up where it is cheap
                        _, t_first = warm_up(fn, dev)
                except Exception as exc:  # noqa: BLE001
                    notes.add(f"handloop: {lib} {meth} on '{title}' failed: {short_exc(exc)}")
                    bar.update(cfg.hl_rounds + 1)
                    continue
                t = Timed(f"{lib}:{meth}", fn)
                calibrate(t, t_first, cfg.min_time, cfg.cheap_extra_rounds)
                timed.append((lib, meth, t))
                bar.update(1)
            interleave([t for *_, t in timed], cfg.hl_rounds, dev, bar.update)
            for lib, meth, t in timed:
                rec = Record("handloop", title, lib, meth, f"steps={n}", "matched", steps=n)
                rec.set_timing(t)
                records.append(rec)
    finally:
        bar.close()
    return records


