"""Text and Markdown tables of a run's ratios."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .records import is_finite

Tensor = torch.Tensor
Field = Callable[[Tensor, Tensor], Tensor]

def _fmt(x: float, spec: str = ".2f") -> str:
    return "-" if x is None or not math.isfinite(x) else format(x, spec)


def format_tables(result: dict[str, Any]) -> str:
    """The printed report: ratio tables per section (``< 1``: sdeflow is faster)."""
    lines: list[str] = []
    meta = result["meta"]
    lines.append(f"sdeflow bench ({meta['profile']}): {meta['date']}, {meta['machine']}, "
                 f"torch {meta['torch']}, {meta['threads']} thread(s); medians of "
                 f"{meta.get('hl_rounds', '?')} (hand loop) / {meta.get('rounds', '?')} "
                 f"(work-precision) "
                 f"interleaved rounds")
    hl = result["ratios"].get("handloop", [])
    if hl:
        lines += ["", "Per-step cost against a minimal hand-written torch loop "
                  "(ratio = wall / hand loop wall; issue 2 target <= 1.15)"]
        lines.append(f"  {'case':<44} {'steps':>5}  {'library':<11} {'method':<32} "
                     f"{'us/step':>9} {'ratio':>6}")
        for r in hl:
            lines.append(f"  {r['case']:<44} {r['steps']:>5}  {r['library']:<11} "
                         f"{r['method']:<32} {_fmt(r['us_per_step'], '.1f'):>9} "
                         f"{_fmt(r['ratio_to_hand']):>6}")
    for sec, title in (("ode_fixed", "Fixed-step ODE"), ("ode_adaptive", "Adaptive ODE"),
                       ("sde", "SDE")):
        rows = result["ratios"].get(sec, [])
        if not rows:
            continue
        setting = "tolerance" if sec == "ode_adaptive" else "step count"
        lines += ["", f"{title}: sdeflow / peer at the same method and {setting} (median over "
                  f"{setting}s; < 1 = sdeflow cheaper); eq-err = wall-time ratio at equal error"]
        lines.append(f"  {'problem':<16} {'peer':<11} {'sdeflow':<16} {'peer method':<12} "
                     f"{'time':>6} {'[min-max]':>13} {'error':>7} {'nfe':>6} {'eq-err':>7}")
        for r in rows:
            rng = f"[{_fmt(r['time_ratio_min'])}-{_fmt(r['time_ratio_max'])}]"
            lines.append(f"  {r['problem']:<16} {r['peer']:<11} {r['sdeflow']:<16} "
                         f"{r['peer_method']:<12} {_fmt(r['time_ratio']):>6} {rng:>13} "
                         f"{_fmt(r['error_ratio']):>7} {_fmt(r['nfe_ratio']):>6} "
                         f"{_fmt(r['equal_error_time_ratio']):>7}")
        lib = result["ratios"].get(sec + "_library", [])
        if lib:
            lines.append("  best method of each library, wall-time ratio at equal error:")
            for r in lib:
                lines.append(f"    {r['problem']:<16} sdeflow / {r['peer']:<11} "
                             f"{_fmt(r['equal_error_time_ratio'])}")
    ahead = peer_ahead(result["ratios"])
    lines += ["", "Where a peer is ahead (cheaper at equal error, or sdeflow above the 1.15 "
              "hand-loop target):"]
    lines += [f"  - {a}" for a in ahead] if ahead else ["  (none)"]
    if result["notes"]:
        lines += ["", "Notes:"] + [f"  - {n}" for n in result["notes"]]
    return "\n".join(lines)


def markdown_tables(result: dict[str, Any]) -> str:
    """The ratio tables as Markdown (written to ``bench.md``; pasted into docs/benchmarks.md)."""
    r = result["ratios"]
    md: list[str] = []
    hl = r.get("handloop", [])
    if hl:
        md += ["### Per-step cost against a minimal hand-written loop", "",
               "| case | steps | library | method | us/step | ratio to hand loop |",
               "|---|---:|---|---|---:|---:|"]
        md += [f"| {x['case']} | {x['steps']} | {x['library']} | {x['method']} | "
               f"{_fmt(x['us_per_step'], '.1f')} | {_fmt(x['ratio_to_hand'])} |" for x in hl]
        md.append("")
    titles = {"ode_fixed": "Fixed-step ODE (same method, same step counts)",
              "ode_adaptive": "Adaptive ODE (same tolerances)",
              "sde": "SDE (same method, same step counts)"}
    for sec, title in titles.items():
        rows = r.get(sec, [])
        if not rows:
            continue
        md += [f"### {title}", "",
               "| problem | peer | sdeflow | peer method | time ratio (median) | range | "
               "error ratio | NFE ratio | time ratio at equal error |",
               "|---|---|---|---|---:|---:|---:|---:|---:|"]
        md += [f"| {x['problem']} | {x['peer']} | {x['sdeflow']} | {x['peer_method']} | "
               f"{_fmt(x['time_ratio'])} | {_fmt(x['time_ratio_min'])}-"
               f"{_fmt(x['time_ratio_max'])} | {_fmt(x['error_ratio'])} | "
               f"{_fmt(x['nfe_ratio'])} | {_fmt(x['equal_error_time_ratio'])} |" for x in rows]
        md.append("")
        lib = r.get(sec + "_library", [])
        if lib:
            probs = list(dict.fromkeys(x["problem"] for x in lib))
            peers = list(dict.fromkeys(x["peer"] for x in lib))
            md += ["Best method of each library, wall-time ratio sdeflow / peer at equal error:",
                   "", "| problem | " + " | ".join(peers) + " |",
                   "|---|" + "---:|" * len(peers)]
            for pr in probs:
                cells = []
                for pe in peers:
                    v = next((x["equal_error_time_ratio"] for x in lib
                              if x["problem"] == pr and x["peer"] == pe), math.nan)
                    cells.append(_fmt(v))
                md.append(f"| {pr} | " + " | ".join(cells) + " |")
            md.append("")
    ahead = peer_ahead(r)
    md += ["### Where a peer is ahead", ""]
    md += [f"- {a}" for a in ahead] if ahead else ["- none"]
    return "\n".join(md) + "\n"


def peer_ahead(ratios: dict[str, Any]) -> list[str]:
    """Every comparison a peer wins, as sentences (from the ratio tables of a result)."""
    out: list[str] = []
    hl = ratios.get("handloop", [])
    for case in dict.fromkeys((r["case"], r["steps"]) for r in hl):
        rs = [r for r in hl if (r["case"], r["steps"]) == case]
        mine = [r for r in rs if r["library"] == "sdeflow"]
        if not mine:
            continue
        best = min(r["ratio_to_hand"] for r in mine)
        for r in mine:
            if r["ratio_to_hand"] > 1.15:
                out.append(f"hand loop, {case[0]}, {case[1]} steps: sdeflow {r['method']} "
                           f"is {r['ratio_to_hand']:.2f}x the hand loop (target 1.15)")
        for r in rs:
            if r["library"] not in ("sdeflow", "hand") and r["ratio_to_hand"] < best:
                out.append(f"hand loop, {case[0]}, {case[1]} steps: {r['library']} "
                           f"{r['method']} {r['ratio_to_hand']:.2f}x the hand loop, sdeflow "
                           f"{best:.2f}x")
    for sec in ("ode_fixed", "ode_adaptive", "sde"):
        for r in ratios.get(sec, []):
            t, e, q = r["time_ratio"], r["error_ratio"], r["equal_error_time_ratio"]
            # ahead = cheaper at equal error; without an overlap of the error ranges, slower at
            # the same setting without being more accurate
            if (is_finite(q) and q > 1.0) or (not is_finite(q) and is_finite(t) and t > 1.0
                                            and not (is_finite(e) and e < 0.9)):
                out.append(f"{sec}/{r['problem']}: {r['peer']} {r['peer_method']} vs sdeflow "
                           f"{r['sdeflow']}: time ratio {_fmt(t)} at the same setting (error "
                           f"ratio {_fmt(e)}), {_fmt(q)} at equal error")
        for r in ratios.get(sec + "_library", []):
            q = r["equal_error_time_ratio"]
            if is_finite(q) and q > 1.0:
                out.append(f"{sec}/{r['problem']}: {r['peer']}'s best method reaches equal "
                           f"error {q:.2f}x faster than sdeflow's best")
    return out


