"""Equal-error cost ratios between libraries, from the Pareto fronts of the records."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from .config import TDQ_FIXED, TODE_FIXED
from .records import Record, is_finite
from .timing import median_of

Tensor = torch.Tensor
Field = Callable[[Tensor, Tensor], Tensor]

def _pareto(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Non-dominated (error, cost) points, by increasing error and decreasing cost."""
    pts = sorted((e, c) for e, c in points if is_finite(e) and is_finite(c) and e > 0 and c > 0)
    res: list[tuple[float, float]] = []
    best = math.inf
    for e, c in pts:
        if c < best:
            res.append((e, c))
            best = c
    return res


def _interp_cost(front: list[tuple[float, float]], err: float) -> float:
    """Cost to reach ``err`` on a front (log-log linear interpolation); nan outside its range."""
    if not front:
        return math.nan
    es = [math.log(e) for e, _ in front]
    cs = [math.log(c) for _, c in front]
    le = math.log(err)
    if le < es[0] - 1e-12 or le > es[-1] + 1e-12:
        return math.nan
    for k in range(len(es) - 1):
        if es[k] <= le <= es[k + 1]:
            w = 0.0 if es[k + 1] == es[k] else (le - es[k]) / (es[k + 1] - es[k])
            return math.exp(cs[k] + w * (cs[k + 1] - cs[k]))
    return math.exp(cs[-1]) if abs(le - es[-1]) < 1e-9 else math.exp(cs[0])


def equal_error_ratio(mine: list[tuple[float, float]], theirs: list[tuple[float, float]],
                      k: int = 9) -> float:
    """Geometric mean over the common error range of cost_mine(err) / cost_theirs(err).

    Each side is reduced to its Pareto front (the cheapest way it has to reach an error);
    ``nan`` when the error ranges do not overlap.
    """
    a, b = _pareto(mine), _pareto(theirs)
    if len(a) < 1 or len(b) < 1:
        return math.nan
    lo = max(a[0][0], b[0][0])
    hi = min(a[-1][0], b[-1][0])
    if not lo <= hi:
        return math.nan
    if lo == hi:
        errs = [lo]
    else:
        errs = [math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * i / (k - 1))
                for i in range(k)]
    logs = []
    for e in errs:
        ca, cb = _interp_cost(a, e), _interp_cost(b, e)
        if math.isfinite(ca) and math.isfinite(cb):
            logs.append(math.log(ca / cb))
    return math.exp(sum(logs) / len(logs)) if logs else math.nan


def _ok(r: Record) -> bool:
    return not r.note and math.isfinite(r.wall) and math.isfinite(r.error)


def matched_ratios(records: list[Record], section: str,
                   pairs: dict[str, dict[str, list[str]]]) -> list[dict[str, Any]]:
    """Ratios sdeflow / peer at the same setting, for each problem and method pair.

    ``pairs[peer][sdeflow_method]`` lists the peer's methods matched with it. Returns rows with
    the median (and range) over settings of the wall-time, error and NFE ratios, and the
    equal-error wall-time ratio of the two methods' curves.
    """
    rows: list[dict[str, Any]] = []
    sec = [r for r in records if r.section == section and r.mode == "matched"]
    problems = list(dict.fromkeys(r.problem for r in sec))
    for prob in problems:
        pr = [r for r in sec if r.problem == prob]
        for peer, mapping in pairs.items():
            for mine, theirs_list in mapping.items():
                for theirs in theirs_list:
                    a = {r.setting: r for r in pr if r.library == "sdeflow" and r.method == mine
                         and _ok(r)}
                    b = {r.setting: r for r in pr if r.library == peer and r.method == theirs
                         and _ok(r)}
                    common = [s for s in a if s in b]
                    if not common:
                        continue
                    wr = [a[s].wall / b[s].wall for s in common]
                    er = [a[s].error / b[s].error for s in common if b[s].error > 0]
                    nr = [a[s].nfe / b[s].nfe for s in common if b[s].nfe > 0]
                    eq = equal_error_ratio([(r.error, r.wall) for r in a.values()],
                                           [(r.error, r.wall) for r in b.values()])
                    rows.append({
                        "section": section, "problem": prob, "peer": peer, "sdeflow": mine,
                        "peer_method": theirs, "n_settings": len(common),
                        "time_ratio": median_of(wr), "time_ratio_min": min(wr),
                        "time_ratio_max": max(wr),
                        "error_ratio": median_of(er) if er else math.nan,
                        "nfe_ratio": median_of(nr) if nr else math.nan,
                        "equal_error_time_ratio": eq,
                    })
    return rows


def library_ratios(records: list[Record], section: str, kind: str = "error"
                   ) -> list[dict[str, Any]]:
    """Equal-error wall-time ratio sdeflow / peer, each library's best method at each error."""
    rows: list[dict[str, Any]] = []
    sec = [r for r in records if r.section == section and _ok(r)]
    for prob in dict.fromkeys(r.problem for r in sec):
        pr = [r for r in sec if r.problem == prob]
        mine = [(getattr(r, kind), r.wall) for r in pr if r.library == "sdeflow"]
        for peer in dict.fromkeys(r.library for r in pr if r.library != "sdeflow"):
            theirs = [(getattr(r, kind), r.wall) for r in pr if r.library == peer]
            rows.append({"section": section, "problem": prob, "peer": peer,
                         "equal_error_time_ratio": equal_error_ratio(mine, theirs)})
    return rows


def handloop_ratios(records: list[Record]) -> list[dict[str, Any]]:
    """Per case: per-step time of each variant and its ratio to the hand loop."""
    rows: list[dict[str, Any]] = []
    for case in dict.fromkeys((r.problem, r.setting) for r in records
                              if r.section == "handloop"):
        rs = [r for r in records if r.section == "handloop" and (r.problem, r.setting) == case]
        hand = next((r for r in rs if r.library == "hand"), None)
        if hand is None:
            continue
        for r in rs:
            rows.append({"case": case[0], "steps": r.steps, "library": r.library,
                         "method": r.method, "us_per_step": r.wall / (r.steps or 1) * 1e6,
                         "ratio_to_hand": r.wall / hand.wall,
                         "ratio_to_hand_min": r.wall_min / hand.wall_min})
    return rows


PAIRS_FIXED = {
    "torchdiffeq": {m: [TDQ_FIXED[m]] for m in TDQ_FIXED},
    "torchode": {m: [m] for m in TODE_FIXED},
}
PAIRS_ADAPTIVE = {
    "torchdiffeq": {"bosh3": ["bosh3"], "dopri5": ["dopri5"]},
    "torchode": {"dopri5": ["dopri5"], "tsit5": ["tsit5", "dopri5"]},
    "scipy": {"bosh3": ["RK23"], "dopri5": ["RK45"], "tsit5": ["RK45"]},
}
PAIRS_SDE = {"torchsde": {"euler_maruyama": ["euler"], "milstein": ["milstein"],
                          "stochastic_heun": ["heun"], "sra1": ["srk"]}}


