"""Work-precision and hand-loop diagrams (matplotlib, imported lazily)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .config import LIB_COLORS, MARKERS
from .ratios import handloop_ratios
from .records import Record, is_finite

Tensor = torch.Tensor
Field = Callable[[Tensor, Tensor], Tensor]

def _series(records: list[Record]) -> dict[tuple[str, str], list[Record]]:
    out: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        if r.mode == "matched":
            out.setdefault((r.library, r.method), []).append(r)
    return out


def plot_workprecision(records: list[Record], problems: list[str], titles: dict[str, str],
                       xkey: str, ykey: str, path: Path, suptitle: str) -> Path | None:
    """One log-log panel per problem: ``ykey`` (error) against ``xkey`` (wall or nfe)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    probs = [p for p in problems if any(r.problem == p and is_finite(getattr(r, ykey))
                                        and is_finite(getattr(r, xkey)) for r in records)]
    if not probs:
        return None
    ncol = min(4, len(probs))
    nrow = math.ceil(len(probs) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.6 * nrow + 1.2), squeeze=False)
    handles: dict[str, Any] = {}
    method_marker: dict[str, str] = {}
    for ax, prob in zip(axes.flat, probs):
        pr = [r for r in records if r.problem == prob and not r.note]
        for (lib, meth), rs in _series(pr).items():
            # connect the points in the order of the setting (more steps / tighter rtol), not
            # of the measured time, so that timing noise does not zig-zag the curves
            ordered = sorted(rs, key=lambda r: (r.steps or 0, -(r.rtol or 0.0)))
            pts = [(getattr(r, xkey), getattr(r, ykey)) for r in ordered
                   if is_finite(getattr(r, xkey)) and is_finite(getattr(r, ykey))
                   and getattr(r, ykey) > 0]
            if not pts:
                continue
            mk = method_marker.setdefault(meth, MARKERS[len(method_marker) % len(MARKERS)])
            ls = "-" if lib == "sdeflow" else "--"
            (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], ls, marker=mk,
                              color=LIB_COLORS.get(lib, "k"), ms=4, lw=1.2, alpha=0.9)
            handles.setdefault(f"{lib} {meth}", line)
        for r in pr:
            if r.mode == "default" and is_finite(getattr(r, xkey)) and is_finite(getattr(r, ykey)) \
                    and getattr(r, ykey) > 0:
                (pt,) = ax.plot([getattr(r, xkey)], [getattr(r, ykey)], "*", ms=13,
                                color=LIB_COLORS.get(r.library, "k"), mec="k", mew=0.6)
                handles.setdefault(f"{r.library} default ({r.method})", pt)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_ticks(ax)
        ax.set_title(titles.get(prob, prob), fontsize=9)
        ax.set_xlabel("wall time [s]" if xkey == "wall" else "NFE", fontsize=8)
        ax.set_ylabel(_ylabel(ykey), fontsize=8)
        ax.tick_params(which="both", labelsize=6)
        ax.grid(True, which="major", alpha=0.3)
    for ax in list(axes.flat)[len(probs):]:
        ax.set_visible(False)
    fig.suptitle(suptitle, fontsize=11)
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center",
               ncol=min(5, len(handles)), fontsize=7, frameon=False)
    nleg = math.ceil(len(handles) / 5)
    fig.tight_layout(rect=(0, min(0.35, 0.045 * nleg + 0.02) / nrow * 1.2, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _log_ticks(ax: Any) -> None:
    """Readable log ticks: labels at 1-2-5 steps on short ranges, decades on long ones."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: PLC0415

    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis.get_scale() != "log" or lo <= 0 or hi <= 0:
            continue
        decades = math.log10(hi / lo)
        subs = (1.0, 2.0, 5.0) if decades < 2.5 else (1.0,)
        axis.set_major_locator(LogLocator(base=10.0, subs=subs))
        axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.0e}" if v < 1e-2
                                               or v >= 1e4 else f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())


def _ylabel(key: str) -> str:
    return {"error": "error", "weak_error": "weak error |E phi(X) - E phi(X_h)|"}.get(key, key)



def plot_handloop(records: list[Record], path: Path) -> Path | None:
    """Bars: wall time of each variant divided by the hand loop's, grouped by case."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = [r for r in handloop_ratios(records) if r["library"] != "hand"]
    if not rows:
        return None
    cases = list(dict.fromkeys((r["case"], r["steps"]) for r in rows))
    ys: list[float] = []
    labels: list[str] = []
    y = 0.0
    fig, ax = plt.subplots(figsize=(9.5, 0.24 * len(rows) + 0.45 * len(cases) + 1.2))
    for case, steps in cases:
        ax.text(0.0, y - 0.15, f"{case}, {steps} steps", transform=ax.get_yaxis_transform(),
                fontsize=7.5, fontweight="bold", va="bottom", ha="left")
        y += 0.55
        for r in (r for r in rows if (r["case"], r["steps"]) == (case, steps)):
            ratio = r["ratio_to_hand"]
            ax.barh(y, ratio, height=0.8, color=LIB_COLORS.get(r["library"], "k"), alpha=0.8)
            ax.text(ratio, y, f" {ratio:.2f}", va="center", fontsize=6.5)
            ys.append(y)
            labels.append(f"{r['library']} {r['method']}")
            y += 1.0
        y += 0.6
    ax.axvline(1.0, color="k", lw=0.8)
    ax.axvline(1.15, color="k", lw=0.8, ls=":")
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=6.5)
    ax.set_ylim(y - 0.4, -0.6)
    ax.set_xscale("log")
    _log_ticks(ax)
    ax.tick_params(which="both", labelsize=7)
    ax.set_xlabel("wall time / minimal hand-written torch loop of the same method "
                  "(log scale; solid: 1, dotted: 1.15)", fontsize=8)
    ax.set_title("Per-step cost relative to a hand-written loop (medians of interleaved rounds)",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_plots(records: list[Record], out: Path, titles: dict[str, str]) -> list[str]:
    """Every PNG of a run; returns their file names."""
    made: list[Path | None] = []
    made.append(plot_handloop(records, out / "bench_handloop.png"))
    for sec, name, sup in (("ode_fixed", "ode_fixed", "Fixed-step ODE solvers"),
                           ("ode_adaptive", "ode_adaptive", "Adaptive ODE solvers")):
        rs = [r for r in records if r.section == sec]
        probs = list(dict.fromkeys(r.problem for r in rs))
        made.append(plot_workprecision(rs, probs, titles, "wall", "error",
                                       out / f"bench_{name}.png",
                                       f"{sup}: relative error vs wall time"))
        made.append(plot_workprecision(rs, probs, titles, "nfe", "error",
                                       out / f"bench_{name}_nfe.png",
                                       f"{sup}: relative error vs NFE"))
    rs = [r for r in records if r.section == "sde"]
    probs = list(dict.fromkeys(r.problem for r in rs))
    made.append(plot_workprecision(rs, probs, titles, "wall", "error",
                                   out / "bench_sde_strong.png",
                                   "SDE solvers: strong error E|X_T - X^h_T| vs wall time"))
    made.append(plot_workprecision(rs, probs, titles, "nfe", "error",
                                   out / "bench_sde_strong_nfe.png",
                                   "SDE solvers: strong error vs NFE (drift + diffusion)"))
    made.append(plot_workprecision(rs, probs, titles, "wall", "weak_error",
                                   out / "bench_sde_weak.png",
                                   "SDE solvers: weak error (phi = |x|^2/d) vs wall time"))
    return [p.name for p in made if p is not None]


