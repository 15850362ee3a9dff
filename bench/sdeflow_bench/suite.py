"""A whole run: sections in order, machine information, ``bench.json`` in and out."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .config import Config
from .handloop import handloop_section
from .ode import ode_section
from .output import OutputFolder
from .peers import peer_versions, sdeflow_adaptive_available
from .plots import make_plots
from .problems import ode_cases, sde_cases
from .ratios import (
    PAIRS_ADAPTIVE,
    PAIRS_FIXED,
    PAIRS_SDE,
    handloop_ratios,
    library_ratios,
    matched_ratios,
)
from .records import Notes, Record, short_exc
from .report import markdown_tables
from .sde import sde_section

Tensor = torch.Tensor
Field = Callable[[Tensor, Tensor], Tensor]

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Date, machine, cores, torch and peer versions."""
    return {
        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": f"{_cpu_model()} ({platform.system()} {platform.machine()}), "
                   f"{os.cpu_count()} cores",
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "peers": peer_versions(),
    }


def run_suite(cfg: Config, out: Path | str | OutputFolder | None = None, progress: bool = True,
              command: str | None = None) -> dict[str, Any]:
    """Run the sections of ``cfg``; write ``bench.json`` and the PNGs to ``out`` (if given).

    ``cfg`` (sections, device) and ``out`` are checked before anything is measured (a
    ``ValueError`` naming the argument). The files are written into a temporary folder beside
    ``out`` that replaces ``out`` at the end (:class:`~sdeflow_bench.output.OutputFolder`); an
    interrupted run leaves ``out`` untouched.

    Returns the result dictionary (``meta``, ``records``, ``ratios``, ``notes``, ``files``).
    """
    t_start = time.perf_counter()
    known = Config().sections
    bad = [sec for sec in cfg.sections if sec not in known]
    if bad:
        raise ValueError(f"sections: unknown section(s) {bad}; known: {', '.join(known)}")
    if not isinstance(cfg.threads, int) or cfg.threads < 0:
        raise ValueError(f"threads: expected 0 or a positive int, got {cfg.threads!r}")
    try:
        torch.empty(1, device=torch.device(cfg.device))
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise ValueError(f"device: {cfg.device!r} is not a usable torch device here "
                         f"({str(exc).strip()[:160]})") from None
    folder = out if isinstance(out, OutputFolder) or out is None else OutputFolder(out, "out")
    threads_before = torch.get_num_threads()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    try:
        return _run_suite(cfg, folder, progress, command, t_start)
    finally:
        torch.set_num_threads(threads_before)
        if folder is not None:
            folder.discard()


def _run_suite(cfg: Config, folder: OutputFolder | None, progress: bool, command: str | None,
               t_start: float) -> dict[str, Any]:
    meta = machine_info()  # the date is the start of the run
    notes = Notes()
    for name, ver in peer_versions().items():
        if ver is None:
            notes.add(f"{name} is not importable: its rows are skipped")
    records: list[Record] = []
    timings: dict[str, float] = {}
    sections = list(cfg.sections)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records += _run_sections(cfg, sections, notes, progress, timings)
    seen: set[str] = set()
    for w in caught:
        msg = f"warning ({w.category.__name__}): {str(w.message).splitlines()[0][:200]}"
        if msg not in seen and len(seen) < 12:
            seen.add(msg)
            notes.add(msg)

    ratios = compute_ratios(records)
    titles = problem_titles(cfg)
    meta.update(profile=cfg.profile, rounds=cfg.rounds, hl_rounds=cfg.hl_rounds,
                min_time=cfg.min_time,
                device=cfg.device, command=command or "", seconds=0.0,
                section_seconds=timings)
    result: dict[str, Any] = {"meta": meta, "notes": notes.items, "ratios": ratios,
                              "records": records, "files": []}
    if folder is not None:
        out = folder.tmp
        try:
            result["files"] = make_plots(records, out, titles)
        except Exception as exc:  # noqa: BLE001
            notes.add(f"plots failed: {short_exc(exc)}")
            traceback.print_exc(file=sys.stderr)
        (out / "bench.md").write_text(markdown_tables(result))
        meta["seconds"] = time.perf_counter() - t_start
        write_json(result, out / "bench.json")
        result["files"] += ["bench.json", "bench.md"]
        folder.commit()
    meta["seconds"] = time.perf_counter() - t_start
    return result


def _run_sections(cfg: Config, sections: list[str], notes: Notes, progress: bool,
                  timings: dict[str, float]) -> list[Record]:
    known = Config().sections
    bad = [sec for sec in sections if sec not in known]
    if bad:
        raise ValueError(f"sections: unknown section(s) {bad}; known: {', '.join(known)}")
    records: list[Record] = []
    for sec in sections:
        t0 = time.perf_counter()
        try:
            if sec == "handloop":
                records += handloop_section(cfg, notes, progress)
            elif sec == "ode_fixed":
                records += ode_section("ode_fixed", cfg, notes, progress)
            elif sec == "ode_adaptive":
                if not sdeflow_adaptive_available():
                    notes.add("ode_adaptive skipped: sdeflow registers no 'dopri5' solver yet "
                              "(the adaptive solvers have not landed)")
                    continue
                records += ode_section("ode_adaptive", cfg, notes, progress)
            else:
                records += sde_section(cfg, notes, progress)
        except Exception as exc:  # noqa: BLE001  (one broken section must not lose the rest)
            notes.add(f"section {sec} aborted: {short_exc(exc)}")
            traceback.print_exc(file=sys.stderr)
        timings[sec] = time.perf_counter() - t0
        if progress:
            print(f"[sdeflow bench] {sec}: {timings[sec]:.0f} s", file=sys.stderr)
    return records


def compute_ratios(records: list[Record]) -> dict[str, Any]:
    """Every ratio table of a run, from its records."""
    return {
        "handloop": handloop_ratios(records),
        "ode_fixed": matched_ratios(records, "ode_fixed", PAIRS_FIXED),
        "ode_adaptive": matched_ratios(records, "ode_adaptive", PAIRS_ADAPTIVE),
        "ode_adaptive_library": library_ratios(records, "ode_adaptive"),
        "sde": matched_ratios(records, "sde", PAIRS_SDE),
    }


def problem_titles(cfg: Config) -> dict[str, str]:
    """Panel titles of the problems of ``cfg``."""
    titles = {c.key: c.title for c in ode_cases(cfg)}
    titles.update({c.key: c.title for c in sde_cases(cfg)})
    return titles


def load_result(path: Path | str) -> dict[str, Any]:
    """Read a ``bench.json`` back (records as :class:`Record`, ratios recomputed)."""
    data = json.loads(Path(path).read_text())
    names = set(Record.__dataclass_fields__)
    floats = {k for k, f in Record.__dataclass_fields__.items() if f.type in ("float", float)}
    recs = []
    for r in data["records"]:
        kw = {k: (math.nan if v is None and k in floats else v) for k, v in r.items()
              if k in names}
        recs.append(Record(**kw))
    data["records"] = recs
    data["ratios"] = compute_ratios(recs)
    return data


def _clean(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, Record):
        return _clean(x.as_dict())
    return x


def write_json(result: dict[str, Any], path: Path) -> None:
    """Write the result as JSON (non-finite numbers as ``null``)."""
    path.write_text(json.dumps(_clean(result), indent=1))


