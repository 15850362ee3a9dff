"""Section ``sde``: strong and weak error against wall time and NFE for SDE solvers."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from sdeflow import SDE, BrownianPath, solve

from .config import Config
from .ode import without_grad
from .peers import Counter, import_peer, peer_versions
from .problems import SDECase, TorchsdeSDE, sde_cases
from .records import Notes, Record, progress_bar, short_exc
from .timing import Timed, calibrate, interleave, warm_up

Tensor = torch.Tensor
Field = Callable[[Tensor, Tensor], Tensor]

@dataclass
class SDESpec:
    """One (library, method, steps) of an SDE case."""

    library: str
    method: str
    steps: int | None         # None: the library's default step
    mode: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def setting(self) -> str:
        return "default" if self.steps is None else f"steps={self.steps}"


def sde_specs(case: SDECase, cfg: Config, versions: dict[str, str | None]) -> list[SDESpec]:
    """Every run of an SDE case: each (sdeflow, torchsde) pair at each step count."""
    specs: list[SDESpec] = []
    for mine, theirs, opts in case.pairs:
        for n in case.steps:
            specs.append(SDESpec("sdeflow", mine, n, "matched"))
            if versions["torchsde"]:
                specs.append(SDESpec("torchsde", theirs, n, "matched", dict(opts)))
    if versions["torchsde"] and case.key in cfg.sde_default_problems:
        specs.append(SDESpec("torchsde", _torchsde_default_method(case), None, "default"))
    return specs


def _torchsde_default_method(case: SDECase) -> str:
    """torchsde's default method for the case's noise type and kind, and its default dt."""
    if case.kind == "stratonovich":
        return "midpoint, dt=1e-3"
    return ("srk" if case.noise in ("diagonal", "additive", "scalar") else "euler") + ", dt=1e-3"


def _phi(x: Tensor) -> Tensor:
    return (x.to(torch.float64) ** 2).mean(-1)


class _ErrAcc:
    """Accumulates strong and weak error statistics over batch chunks."""

    def __init__(self) -> None:
        self.n = 0
        self.s1 = self.s2 = self.w1 = self.w2 = 0.0

    def add(self, xh: Tensor, ref: Tensor) -> None:
        e = torch.linalg.vector_norm((xh.to(torch.float64) - ref.to(torch.float64)), dim=-1)
        w = _phi(xh) - _phi(ref)
        self.n += e.numel()
        self.s1 += float(e.sum())
        self.s2 += float((e * e).sum())
        self.w1 += float(w.sum())
        self.w2 += float((w * w).sum())

    def result(self) -> tuple[float, float, float, float]:
        n = max(1, self.n)
        m, mw = self.s1 / n, self.w1 / n
        se = math.sqrt(max(0.0, self.s2 / n - m * m) / n)
        wse = math.sqrt(max(0.0, self.w2 / n - mw * mw) / n)
        return m, se, abs(mw), wse


def sdeflow_accuracy(case: SDECase, specs: list[SDESpec], cfg: Config
                     ) -> dict[int, tuple[float, float, float, float, int]]:
    """Strong/weak errors and NFE of the sdeflow specs, on shared ``BrownianPath`` chunks.

    Returns ``{index in specs: (strong, strong_se, weak, weak_se, nfe)}``.
    """
    dev = case.x0.device
    dtype = case.x0.dtype
    b, d = case.x0.shape
    idx = [i for i, s in enumerate(specs) if s.library == "sdeflow"]
    if not idx:
        return {}
    finest = max([specs[i].steps or 0 for i in idx] + [case.ref_steps])
    chunk = int(max(1, min(b, 2**24 // max(1, 2 * finest * d))))
    sde = SDE(case.drift, case.diffusion, noise=case.noise, kind=case.kind)
    ref_sde = SDE(case.drift, case.diffusion, noise="additive", kind=case.kind)
    accs = {i: _ErrAcc() for i in idx}
    nfe: dict[int, int] = {}
    for c, lo in enumerate(range(0, b, chunk)):
        x0 = case.x0[lo:lo + chunk]
        bm = BrownianPath(tuple(x0.shape), 0.0, case.t1, seed=cfg.seed * 1000 + c, dtype=dtype,
                          device=dev)
        with torch.no_grad():
            if case.exact is not None:
                ref = case.exact(x0, bm(case.t1))
            elif case.exact_path is not None:
                n = case.ref_steps
                dw, it = bm.grid([case.t1 * k / n for k in range(n + 1)], space_time=True)
                ref = case.exact_path(x0, dw, it, case.t1 / n)
                del dw, it
            else:
                ref = solve(ref_sde, x0, (0.0, case.t1), solver="sra1", steps=case.ref_steps,
                            brownian=bm).x_final
            for i in idx:
                sp = specs[i]
                sol = solve(sde, x0, (0.0, case.t1), solver=sp.method,
                            steps=sp.steps, brownian=bm)
                accs[i].add(sol.x_final, ref)
                nfe[i] = int(sol.stats["nfe"])
        del bm
    return {i: (*accs[i].result(), nfe[i]) for i in idx}


def torchsde_accuracy(case: SDECase, specs: list[SDESpec], cfg: Config
                      ) -> dict[int, tuple[float, float, float, float, int]]:
    """Strong/weak errors and NFE of the torchsde specs on one shared ``BrownianInterval``.

    The solves run from the coarsest grid to the finest and the reference last: a
    ``BrownianInterval`` queried on a coarse grid after a fine one recomputes every fine value
    through its tree (5x slower here).
    """
    tsde = import_peer("torchsde")
    idx = [i for i, s in enumerate(specs) if s.library == "torchsde"]
    if not idx:
        return {}
    x0 = case.x0
    b, d = x0.shape
    cf, cg = Counter(case.drift), Counter(case.diffusion)
    sde = TorchsdeSDE(cf, cg, case.noise, case.kind)
    tspan = torch.tensor([0.0, case.t1], dtype=x0.dtype, device=x0.device)
    finest = max([specs[i].steps or 1000 for i in idx] + [case.ref_steps])
    bm = tsde.BrownianInterval(0.0, case.t1, size=(b, d), dtype=x0.dtype, device=x0.device,
                               levy_area_approximation="space-time",
                               entropy=cfg.seed * 1000 + 17, dt=case.t1 / finest)
    finals: dict[int, tuple[Tensor, int]] = {}
    with torch.no_grad():
        for i in sorted(idx, key=lambda i: specs[i].steps or 1000):
            sp = specs[i]
            cf.n = cg.n = 0
            kw: dict[str, Any] = {"bm": bm}
            if sp.steps is not None:
                kw.update(method=sp.method, dt=case.t1 / sp.steps)
            if sp.options:
                kw["options"] = dict(sp.options)
            finals[i] = (tsde.sdeint(sde, x0, tspan, **kw)[-1], cf.n + cg.n)
        if case.exact is not None:
            ref = case.exact(x0, bm(0.0, case.t1))
        elif case.exact_path is not None:
            n = case.ref_steps
            h = case.t1 / n
            pairs = [bm(k * h, (k + 1) * h, return_U=True) for k in range(n)]
            dw = torch.stack([p[0] for p in pairs])
            it = torch.stack([p[1] for p in pairs])
            del pairs
            ref = case.exact_path(x0, dw, it, h)
            del dw, it
        else:
            ref = tsde.sdeint(sde, x0, tspan, bm=bm, method="srk",
                              dt=case.t1 / case.ref_steps)[-1]
    out: dict[int, tuple[float, float, float, float, int]] = {}
    for i, (y, nfe) in finals.items():
        acc = _ErrAcc()
        acc.add(y, ref)
        out[i] = (*acc.result(), nfe)
    return out


def _sde_timed_fn(case: SDECase, sp: SDESpec) -> Callable[[], Any]:
    if sp.library == "sdeflow":
        sde = SDE(case.drift, case.diffusion, noise=case.noise, kind=case.kind)
        solver = sp.method

        def run() -> Any:
            return solve(sde, case.x0, (0.0, case.t1), solver=solver, steps=sp.steps,
                         seed=12345).x_final

        return run
    tsde = import_peer("torchsde")
    ts_sde = TorchsdeSDE(case.drift, case.diffusion, case.noise, case.kind)
    tspan = torch.tensor([0.0, case.t1], dtype=case.x0.dtype, device=case.x0.device)
    kw: dict[str, Any] = {}
    if sp.steps is not None:
        kw.update(method=sp.method, dt=case.t1 / sp.steps)
    if sp.options:
        kw["options"] = dict(sp.options)

    def run_ts() -> Any:
        return tsde.sdeint(ts_sde, case.x0, tspan, **kw)[-1]

    return run_ts


def sde_section(cfg: Config, notes: Notes, progress: bool) -> list[Record]:
    """Strong and weak work-precision of the SDE solvers against torchsde."""
    dev = torch.device(cfg.device)
    versions = peer_versions()
    if not versions["torchsde"]:
        notes.add("sde: torchsde is not importable; only sdeflow is measured")
    records: list[Record] = []
    for case in sde_cases(cfg):
        specs = sde_specs(case, cfg, versions)
        recs = [Record("sde", case.key, s.library, s.method, s.setting, s.mode, steps=s.steps)
                for s in specs]
        bar = progress_bar(len(specs) * (cfg.rounds + 1) + 2, f"sde {case.key}", progress)
        try:
            for lib, fn in (("sdeflow", sdeflow_accuracy), ("torchsde", torchsde_accuracy)):
                try:
                    acc = fn(case, specs, cfg)
                except Exception as exc:  # noqa: BLE001
                    msg = short_exc(exc)
                    notes.add(f"sde/{case.key}: {lib} accuracy pass failed ({msg})")
                    for i, s in enumerate(specs):
                        if s.library == lib:
                            recs[i].note = msg
                    acc = {}
                for i, (se_, sse, we, wse, nfe) in acc.items():
                    r = recs[i]
                    r.error, r.error_se, r.nfe = se_, sse, float(nfe)
                    if case.weak:
                        r.weak_error, r.weak_se = we, wse
                    if not math.isfinite(se_):
                        r.note = "non-finite result"
                bar.update(1)
            timed: list[tuple[Record, Timed]] = []
            for sp, r in zip(specs, recs):
                if r.note:
                    bar.update(cfg.rounds + 1)
                    continue
                fn = without_grad(_sde_timed_fn(case, sp))
                try:
                    _, t_first = warm_up(fn, dev)
                except Exception as exc:  # noqa: BLE001
                    r.note = short_exc(exc)
                    notes.add(f"sde/{case.key}: {sp.library} {sp.method} failed ({r.note})")
                    bar.update(cfg.rounds + 1)
                    continue
                t = Timed(f"{sp.library}:{sp.method}:{sp.setting}", fn)
                calibrate(t, t_first, cfg.min_time, cfg.cheap_extra_rounds)
                timed.append((r, t))
                bar.update(1)
            interleave([t for _, t in timed], cfg.rounds, dev, bar.update)
            for r, t in timed:
                r.set_timing(t)
        finally:
            bar.close()
        records.extend(recs)
    return records


