"""Sections ``ode_fixed`` and ``ode_adaptive``: error against wall time and NFE for ODE solvers."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from sdeflow import ODE, solve
from sdeflow import solvers as _solvers

from .config import SCIPY_ADAPTIVE, TDQ_ADAPTIVE, TDQ_FIXED, TODE_ADAPTIVE, TODE_FIXED, Config
from .peers import Counter, import_peer, peer_versions
from .problems import ODECase, ode_cases, ode_reference, rel_error
from .records import Notes, Record, progress_bar, short_exc
from .timing import Timed, calibrate, interleave, warm_up

Tensor = torch.Tensor
Field = Callable[[Tensor, Tensor], Tensor]

@dataclass
class ODERun:
    """One (library, method, setting) of an ODE case: ``fn()`` returns ``(x_final, nfe)``."""

    library: str
    method: str
    setting: str
    mode: str
    fn: Callable[[], tuple[Tensor, int]]
    steps: int | None = None
    rtol: float | None = None


def _sdeflow_fixed(u: Field, x0: Tensor, t1: float, method: str, n: int
                   ) -> Callable[[], tuple[Tensor, int]]:
    ode = ODE(u)

    def run() -> tuple[Tensor, int]:
        sol = solve(ode, x0, (0.0, t1), solver=method, steps=n)
        return sol.x_final, int(sol.stats["nfe"])

    return run


def _sdeflow_adaptive(u: Field, x0: Tensor, t1: float, method: str, rtol: float | None,
                      atol: float | None) -> Callable[[], tuple[Tensor, int]]:
    ode = ODE(u)
    kw: dict[str, Any] = {} if rtol is None else {"rtol": rtol, "atol": atol}

    def run() -> tuple[Tensor, int]:
        sol = solve(ode, x0, (0.0, t1), solver=method, **kw)
        return sol.x_final, int(sol.stats["nfe"])

    return run


def _tdq_run(u: Field, x0: Tensor, t1: float, method: str | None, options: dict[str, Any],
             rtol: float | None, atol: float | None) -> Callable[[], tuple[Tensor, int]]:
    tdq = import_peer("torchdiffeq")
    tspan = torch.tensor([0.0, t1], dtype=x0.dtype, device=x0.device)
    kw: dict[str, Any] = {}
    if method is not None:
        kw["method"] = method
    if options:
        kw["options"] = options
    if rtol is not None:
        kw.update(rtol=rtol, atol=atol)
    c = Counter(u)

    def run() -> tuple[Tensor, int]:
        c.n = 0
        y = tdq.odeint(c, x0, tspan, **kw)
        return y[-1], c.n

    return run


def _tode_run(u: Field, x0: Tensor, t1: float, method: str, *, h: float | None = None,
              rtol: float | None = None, atol: float | None = None, default: bool = False
              ) -> Callable[[], tuple[Tensor, int]]:
    to = import_peer("torchode")
    c = Counter(u)
    term = to.ODETerm(c)
    b = x0.shape[0]
    t_eval = torch.tensor([0.0, t1], dtype=x0.dtype, device=x0.device).expand(b, 2)
    if default:
        def run_default() -> tuple[Tensor, int]:
            c.n = 0
            sol = to.solve_ivp(term, x0, t_eval)
            _tode_check(sol)
            return sol.ys[:, -1], c.n

        return run_default
    if h is not None:
        ctrl = to.FixedStepController()
        dt0: Tensor | None = torch.full((b,), h, dtype=x0.dtype, device=x0.device)
    else:
        ctrl = to.PIDController(atol=atol, rtol=rtol, pcoeff=0.2, icoeff=0.5, dcoeff=0.0,
                                term=term)
        dt0 = None
    adj = to.AutoDiffAdjoint(getattr(to, method)(term), ctrl)
    prob = to.InitialValueProblem(y0=x0, t_start=t_eval[:, 0], t_end=t_eval[:, -1],
                                  t_eval=t_eval)

    def run() -> tuple[Tensor, int]:
        c.n = 0
        sol = adj.solve(prob, dt0=dt0)
        _tode_check(sol)
        return sol.ys[:, -1], c.n

    return run


def _tode_check(sol: Any) -> None:
    if bool((sol.status != 0).any()):
        raise RuntimeError(f"torchode status {sol.status.unique().tolist()}")


def _scipy_run(u: Field, x0: Tensor, t1: float, method: str | None, rtol: float | None,
               atol: float | None) -> Callable[[], tuple[Tensor, int]]:
    si = import_peer("scipy")
    shape, dtype, device = x0.shape, x0.dtype, x0.device
    y0 = x0.detach().to("cpu", torch.float64).reshape(-1).numpy()
    kw: dict[str, Any] = {}
    if method is not None:
        kw["method"] = method
    if rtol is not None:
        kw.update(rtol=rtol, atol=atol)
    c = Counter(u)

    def fun(t: float, y: Any) -> Any:
        with torch.no_grad():
            x = torch.from_numpy(y).view(shape).to(dtype=dtype, device=device)
            out = c(torch.tensor(t, dtype=dtype, device=device), x)
        return out.reshape(-1).to("cpu", torch.float64).numpy()

    def run() -> tuple[Tensor, int]:
        c.n = 0
        sol = si.solve_ivp(fun, (0.0, t1), y0, **kw)
        if not sol.success:
            raise RuntimeError(f"scipy: {sol.message}")
        return torch.from_numpy(sol.y[:, -1].copy()).view(shape), c.n

    return run


def ode_runs(case: ODECase, section: str, cfg: Config, notes: Notes) -> list[ODERun]:
    """Every run of ``case`` in ``section`` (``ode_fixed`` or ``ode_adaptive``)."""
    dev = torch.device(cfg.device)
    u = case.make_field(case.dtype, dev)
    x0 = case.x0.to(dtype=case.dtype, device=dev)
    versions = peer_versions()
    runs: list[ODERun] = []
    if section == "ode_fixed":
        fixed = [n for n in _solvers.names(sde=False)
                 if not _solvers.get(n).caps.adaptive
                 and n in ("euler", "midpoint", "heun", "rk4")]
        for m in fixed:
            for n in case.steps:
                runs.append(ODERun("sdeflow", m, f"steps={n}", "matched",
                                   _sdeflow_fixed(u, x0, case.t1, m, n), steps=n))
                if versions["torchdiffeq"] and m in TDQ_FIXED:
                    tm = TDQ_FIXED[m]
                    runs.append(ODERun("torchdiffeq", tm, f"steps={n}", "matched",
                                       _tdq_run(u, x0, case.t1, tm, {"step_size": case.t1 / n},
                                                None, None), steps=n))
                if versions["torchode"] and m in TODE_FIXED:
                    runs.append(ODERun("torchode", m, f"steps={n}", "matched",
                                       _tode_run(u, x0, case.t1, TODE_FIXED[m], h=case.t1 / n),
                                       steps=n))
        return runs
    # adaptive
    mine = [m for m in ("bosh3", "dopri5", "tsit5") if m in _solvers.names(sde=False)]
    peer_methods: dict[str, set[str]] = {"torchdiffeq": set(), "torchode": set(), "scipy": set()}
    for m in mine:
        if m in TDQ_ADAPTIVE:
            peer_methods["torchdiffeq"].add(TDQ_ADAPTIVE[m])
        if m in TODE_ADAPTIVE:
            peer_methods["torchode"].add(TODE_ADAPTIVE[m])
        peer_methods["scipy"].add(SCIPY_ADAPTIVE[m])
    peer_methods["scipy"].add("DOP853")
    low_order = {"bosh3", "RK23"}
    # scipy integrates the whole batch as one system with one step size: kept where that is
    # still a sensible way to solve the problem
    use_scipy = bool(versions["scipy"]) and case.batch <= cfg.scipy_max_batch
    if versions["scipy"] and not use_scipy:
        notes.add(f"ode_adaptive/{case.key}: scipy skipped (batch {case.batch} > "
                  f"{cfg.scipy_max_batch}: solve_ivp treats a batch as one big system)")
    for rtol in case.tols:
        atol = rtol * 1e-2
        st = f"rtol={rtol:.0e}"

        def keep(method: str, rtol: float = rtol) -> bool:
            # third-order pairs at tight tolerances cost 10x more and add nothing to compare
            floor = cfg.low_order_min_tol * (10.0 if case.dtype == torch.float32 else 1.0)
            return method not in low_order or rtol >= floor * 0.999

        for m in filter(keep, mine):
            runs.append(ODERun("sdeflow", m, st, "matched",
                               _sdeflow_adaptive(u, x0, case.t1, m, rtol, atol), rtol=rtol))
        if versions["torchdiffeq"]:
            for tm in filter(keep, sorted(peer_methods["torchdiffeq"])):
                runs.append(ODERun("torchdiffeq", tm, st, "matched",
                                   _tdq_run(u, x0, case.t1, tm, {}, rtol, atol), rtol=rtol))
        if versions["torchode"]:
            for tm in filter(keep, sorted(peer_methods["torchode"])):
                runs.append(ODERun("torchode", tm.lower(), st, "matched",
                                   _tode_run(u, x0, case.t1, tm, rtol=rtol, atol=atol),
                                   rtol=rtol))
        if use_scipy:
            for sm in filter(keep, sorted(peer_methods["scipy"])):
                runs.append(ODERun("scipy", sm, st, "matched",
                                   _scipy_run(u, x0, case.t1, sm, rtol, atol), rtol=rtol))
    # defaults
    runs.append(ODERun("sdeflow", "dopri5", "default", "default",
                       _sdeflow_adaptive(u, x0, case.t1, "dopri5", None, None)))
    if versions["torchdiffeq"]:
        runs.append(ODERun("torchdiffeq", "dopri5", "default", "default",
                           _tdq_run(u, x0, case.t1, None, {}, None, None)))
    if versions["torchode"]:
        runs.append(ODERun("torchode", "tsit5", "default", "default",
                           _tode_run(u, x0, case.t1, "Tsit5", default=True)))
    if use_scipy:
        runs.append(ODERun("scipy", "RK45", "default", "default",
                           _scipy_run(u, x0, case.t1, None, None, None)))
    return runs


def ode_section(section: str, cfg: Config, notes: Notes, progress: bool) -> list[Record]:
    """Work-precision of the fixed-step or adaptive ODE solvers on every ODE case."""
    dev = torch.device(cfg.device)
    cases = ode_cases(cfg)
    records: list[Record] = []
    for case in cases:
        try:
            ref = ode_reference(case)
        except Exception as exc:  # noqa: BLE001
            notes.add(f"{section}: {case.key} skipped, no reference: {short_exc(exc)}")
            continue
        runs = ode_runs(case, section, cfg, notes)
        bar = progress_bar(len(runs) * (cfg.rounds + 1), f"{section} {case.key}", progress)
        timed: list[tuple[ODERun, Record, Timed]] = []
        try:
            for run in runs:
                rec = Record(section, case.key, run.library, run.method, run.setting, run.mode,
                             steps=run.steps, rtol=run.rtol)
                try:
                    with torch.no_grad():
                        (x, nfe), t_first = warm_up(run.fn, dev)
                    err = rel_error(x, ref)
                    if not math.isfinite(err):
                        raise FloatingPointError("non-finite final state")
                    if err >= 1.0:
                        raise FloatingPointError(f"diverged (relative error {err:.2g})")
                except Exception as exc:  # noqa: BLE001
                    rec.note = short_exc(exc)
                    if run.mode == "default" and run.library == "sdeflow":
                        notes.add(f"{section}: sdeflow has no default tolerances "
                                  f"({rec.note}); no sdeflow default point")
                    records.append(rec)
                    bar.update(cfg.rounds + 1)
                    continue
                rec.error, rec.nfe = err, float(nfe)
                t = Timed(f"{run.library}:{run.method}:{run.setting}",
                          without_grad(run.fn))
                calibrate(t, t_first, cfg.min_time, cfg.cheap_extra_rounds)
                timed.append((run, rec, t))
                bar.update(1)
            interleave([t for *_, t in timed], cfg.rounds, dev, bar.update)
        finally:
            bar.close()
        for _, rec, t in timed:
            rec.set_timing(t)
            records.append(rec)
        _note_failures(section, case.key, records, notes)
    return records


def without_grad(fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with torch.no_grad():
            return fn()

    return run


def _note_failures(section: str, problem: str, records: list[Record], notes: Notes) -> None:
    bad: dict[tuple[str, str], list[str]] = {}
    diverged: list[str] = []
    for r in records:
        if r.section != section or r.problem != problem or not r.note or r.mode != "matched":
            continue
        if r.note.startswith("FloatingPointError: diverged"):
            diverged.append(f"{r.library} {r.method} {r.setting}")
        else:
            bad.setdefault((r.library, r.method), []).append(r.setting)
    for (lib, meth), settings in bad.items():
        ex = next(r.note for r in records if r.section == section and r.problem == problem
                  and r.library == lib and r.method == meth and r.note)
        notes.add(f"{section}/{problem}: {lib} {meth} failed at {', '.join(settings)} ({ex})")
    if diverged:
        notes.add(f"{section}/{problem}: {len(diverged)} run(s) with relative error >= 1 "
                  f"(unstable or pre-asymptotic step counts) left out of the timing: "
                  f"{'; '.join(diverged[:6])}{'; ...' if len(diverged) > 6 else ''}")


