"""``sdeflow demo``: train a flow-matching model on CPU, sample it, write figures and metrics.

``sdeflow demo [--data moons|checkerboard|gmm|digits] [--steps N] [--out DIR]``

* 2D sets (``moons``, ``checkerboard``, ``gmm`` = :func:`~sdeflow_generative.datasets.mixture2d`):
  an :class:`~sdeflow_generative.nets.MLP` velocity model on the CondOT path, trained by CFM
  (:func:`~sdeflow_generative.train.fit`, EMA weights). Samples from the probability-flow ODE
  (``heun``, 20 and 100 model evaluations) and the ``eta = 1`` SDE (``euler_maruyama``), all
  through ``sdeflow.solve``. Figures: ``samples.png`` (samples against held-out data),
  ``trajectories.png`` (PF-ODE paths), ``density.png`` (the learned ``log p_1`` by
  :func:`~sdeflow_generative.likelihood.log_prob`). Metrics: the MMD of 2,000 samples to 2,000
  held-out points as a ratio to the MMD between two held-out sets (mean of 5 pairs; a single
  pair scatters by ~15%) (:mod:`~.metrics`).
* ``digits`` (scikit-learn's 8x8 digits): a class-conditional
  :class:`~sdeflow_generative.nets.UNet` trained with label dropout, sampled per class with
  classifier-free guidance at ``w = 1`` and ``w = 3`` (PF-ODE heun; and the SDE at ``w = 3``).
  Figures: ``digits_w1.png``, ``digits_w3.png`` (a row per class) and ``digits_real.png``.
  Metrics: the test accuracy of a logistic-regression classifier trained on the real training
  digits, its accuracy on the generated digits (pixels clipped to [-1, 1]) and the per-class
  diversity (mean pairwise distance of generated / real test digits of the class).

Everything (and the wall times, training steps/s) goes to ``DIR/metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

import sdeflow as sf

from . import datasets, likelihood, losses, metrics, nets, train
from .fields import DiffusionSDE, ProbabilityFlowODE
from .guidance import ClassifierFree
from .paths import GaussianPath
from .schedules import CondOT

Tensor = torch.Tensor

__all__ = ["add_demo_arguments", "run_demo_args", "demo_main", "run_demo", "DEFAULT_STEPS"]

DATA_CHOICES = ("moons", "checkerboard", "gmm", "digits")
DEFAULT_STEPS = {"moons": 6000, "checkerboard": 6000, "gmm": 6000, "digits": 2500}
_N_TRAIN = 20000
_N_EVAL = 2000


def add_demo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the demo's options to ``parser`` (for ``sdeflow demo``)."""
    parser.add_argument("--data", choices=DATA_CHOICES, default="moons", help="data set")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"training steps (default: {DEFAULT_STEPS})")
    parser.add_argument("--out", default="sdeflow-demo", help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="seed of everything")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="batch size (default 256 for 2D sets, 64 for digits)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate")
    parser.add_argument("--samples-per-class", type=int, default=100,
                        help="generated digits per class and guidance scale")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--no-figures", action="store_true", help="write metrics.json only")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 200 evaluation points, fewer SDE steps, coarse figures")
    return parser


def _positive(name: str, v: int | None) -> None:
    if v is not None and v < 1:
        raise ValueError(f"--{name}: expected a positive int, got {v}")


def run_demo_args(ns: argparse.Namespace) -> int:
    """Run the demo from parsed arguments; prints a summary and returns the exit status."""
    for name in ("steps", "batch_size", "samples_per_class", "threads"):
        _positive(name.replace("_", "-"), getattr(ns, name))
    if ns.lr is not None and not (math.isfinite(ns.lr) and ns.lr > 0):
        raise ValueError(f"--lr: expected a positive float, got {ns.lr}")
    if ns.threads is not None:
        torch.set_num_threads(ns.threads)
    m = run_demo(
        ns.data, steps=ns.steps, out=ns.out, seed=ns.seed, batch_size=ns.batch_size, lr=ns.lr,
        samples_per_class=ns.samples_per_class, progress=not ns.no_progress,
        figures=not ns.no_figures, quick=ns.quick,
    )
    print(json.dumps(m["summary"], indent=2))
    print(f"wrote {Path(ns.out) / 'metrics.json'}")
    return 0


def demo_main(argv: list[str]) -> int:
    """``sdeflow demo`` with ``argv`` (the arguments after ``demo``); returns the exit status."""
    parser = add_demo_arguments(argparse.ArgumentParser(
        prog="sdeflow demo", description="train and sample a generative model on CPU"))
    ns = parser.parse_args(argv)
    try:
        return run_demo_args(ns)
    except ValueError as exc:
        parser.error(str(exc))
    return 2  # pragma: no cover - parser.error exits


# ---------------------------------------------------------------------------------------- 2D
def _data_2d(name: str, n: int, seed: int) -> Tensor:
    if name == "gmm":
        g = torch.Generator().manual_seed(seed)
        return datasets.mixture2d().sample(n, generator=g).float()
    return datasets.DATASETS[name](n, seed=seed, dtype=torch.float32)  # type: ignore[operator]


def _sample_ode(flow: ProbabilityFlowODE, x0: Tensor, steps: int, save_all: bool = False) -> Any:
    with torch.no_grad():
        return sf.solve(flow, x0, t_span=flow.t_span, solver="heun", steps=steps,
                        save_all=save_all)


def _sample_sde(sde: DiffusionSDE, x0: Tensor, steps: int, seed: int) -> Tensor:
    with torch.no_grad():
        return sf.solve(sde, x0, t_span=sde.t_span, solver="euler_maruyama", steps=steps,
                        seed=seed).x_final


def _run_2d(name: str, steps: int, out: Path, seed: int, batch_size: int, lr: float,
            progress: bool, figures: bool, quick: bool) -> dict[str, Any]:
    path = GaussianPath(CondOT())
    n_eval = 200 if quick else _N_EVAL
    sde_steps = 20 if quick else 200
    data = _data_2d(name, _N_TRAIN, seed)
    held1 = _data_2d(name, n_eval, seed + 1)
    held2 = _data_2d(name, n_eval, seed + 2)
    model = nets.MLP(2, hidden=128, depth=3, seed=seed)
    loss = losses.ConditionalMatching(path, "velocity")
    res = train.fit(model, loss, data, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                    ema=0.999, progress=progress, schedule="cosine", warmup=min(200, steps // 10),
                    checkpoint=out / "checkpoint.pt")
    net = res.ema if res.ema is not None else res.model
    net.eval()
    # the floor: MMD between independent held-out sets (mean of 5 pairs; one pair scatters ~15%)
    pairs = [metrics.mmd(_data_2d(name, n_eval, seed + 10 + 2 * i),
                         _data_2d(name, n_eval, seed + 11 + 2 * i)) for i in range(4)]
    pairs.append(metrics.mmd(held1, held2))
    floor = sum(pairs) / len(pairs)
    x0 = torch.randn(n_eval, 2, generator=torch.Generator().manual_seed(seed + 3))
    flow = ProbabilityFlowODE(path, net)
    sde = DiffusionSDE(path, net, eta=1.0)
    samples: dict[str, Tensor] = {}
    timing: dict[str, float] = {}
    for label, fn in (
        ("ode_nfe20", lambda: _sample_ode(flow, x0, 10).x_final),
        ("ode_nfe100", lambda: _sample_ode(flow, x0, 50).x_final),
        (f"sde_nfe{sde_steps}", lambda: _sample_sde(sde, x0, sde_steps, seed)),
    ):
        t0 = time.perf_counter()
        samples[label] = fn()
        timing[label] = time.perf_counter() - t0
    mmds = {k: metrics.mmd(v, held1) for k, v in samples.items()}
    result: dict[str, Any] = {
        "data": name,
        "train": {"steps": res.steps, "seconds": res.seconds,
                  "steps_per_second": res.steps_per_second, "final_loss": res.losses[-1],
                  "batch_size": batch_size, "lr": lr},
        "n_eval": n_eval,
        "mmd_floor_data_vs_data": floor,
        "mmd_floor_pairs": pairs,
        "mmd": mmds,
        "mmd_ratio": {k: v / floor for k, v in mmds.items()},
        "sampling_seconds": timing,
    }
    if figures:
        _figures_2d(out, name, path, net, held1, samples, x0, 12 if quick else 40)
    return result


def _figures_2d(out: Path, name: str, path: GaussianPath, net: torch.nn.Module, held: Tensor,
                samples: dict[str, Tensor], x0: Tensor, n: int) -> None:
    import matplotlib  # noqa: PLC0415 - optional extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    lo, hi = held.min(0).values - 0.5, held.max(0).values + 0.5
    fig, axes = plt.subplots(1, 4, figsize=(16, 4), sharex=True, sharey=True)
    panels = [("held-out data", held)] + [(k, v) for k, v in samples.items()]
    for ax, (title, pts) in zip(axes, panels):
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5)
        ax.set_title(title)
        ax.set_xlim(float(lo[0]), float(hi[0]))
        ax.set_ylim(float(lo[1]), float(hi[1]))
    fig.suptitle(f"{name}: data and samples (PF-ODE heun, eta=1 SDE)")
    fig.savefig(out / "samples.png", dpi=90, bbox_inches="tight")
    plt.close(fig)

    flow = ProbabilityFlowODE(path, net)
    sol = _sample_ode(flow, x0[:200], 50, save_all=True)
    fig, ax = plt.subplots(figsize=(5, 5))
    ys = sol.ys.numpy()
    for i in range(ys.shape[1]):
        ax.plot(ys[:, i, 0], ys[:, i, 1], lw=0.5, alpha=0.6, color="tab:blue")
    ax.scatter(ys[-1, :, 0], ys[-1, :, 1], s=4, color="tab:red", zorder=3)
    ax.set_title(f"{name}: PF-ODE trajectories t=0 -> 1")
    fig.savefig(out / "trajectories.png", dpi=90, bbox_inches="tight")
    plt.close(fig)

    gx = torch.linspace(float(lo[0]), float(hi[0]), n)
    gy = torch.linspace(float(lo[1]), float(hi[1]), n)
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1).reshape(-1, 2)
    lp = likelihood.log_prob(path, net, grid, steps=25).reshape(n, n)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(lp.exp().numpy(), origin="lower", extent=(float(lo[0]), float(hi[0]),
              float(lo[1]), float(hi[1])), cmap="viridis")
    ax.set_title(f"{name}: learned density exp(log_prob)")
    fig.savefig(out / "density.png", dpi=90, bbox_inches="tight")
    plt.close(fig)


# ------------------------------------------------------------------------------------ digits
def _classifier(seed: int) -> tuple[Any, float]:
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 - optional extra

    xtr, ytr = datasets.digits("train", seed=seed)
    xte, yte = datasets.digits("test", seed=seed)
    clf = LogisticRegression(max_iter=5000)
    clf.fit(xtr.numpy(), ytr.numpy())
    return clf, float(clf.score(xte.numpy(), yte.numpy()))


def _run_digits(steps: int, out: Path, seed: int, batch_size: int, lr: float,
                samples_per_class: int, progress: bool, figures: bool,
                quick: bool) -> dict[str, Any]:
    path = GaussianPath(CondOT())
    xtr, ytr = datasets.digits("train", seed=seed, dtype=torch.float32)
    xte, yte = datasets.digits("test", seed=seed, dtype=torch.float32)
    model = nets.UNet(1, 8, base=32, mults=(1, 2), num_classes=10, seed=seed)
    loss = losses.ConditionalMatching(path, "velocity", label_dropout=0.1, null_label=10)
    res = train.fit(model, loss, (xtr, ytr), steps=steps, batch_size=batch_size, lr=lr,
                    seed=seed, ema=0.999, progress=progress, schedule="cosine",
                    warmup=min(200, steps // 10), grad_clip=1.0,
                    checkpoint=out / "checkpoint.pt")
    net = res.ema if res.ema is not None else res.model
    net.eval()
    clf, test_acc = _classifier(seed)
    n = samples_per_class
    y = torch.arange(10).repeat_interleave(n)
    x0 = torch.randn(10 * n, 64, generator=torch.Generator().manual_seed(seed + 3))
    real_div = [metrics.mean_pairwise_distance(xte[yte == c]) for c in range(10)]
    result: dict[str, Any] = {
        "data": "digits",
        "train": {"steps": res.steps, "seconds": res.seconds,
                  "steps_per_second": res.steps_per_second, "final_loss": res.losses[-1],
                  "batch_size": batch_size, "lr": lr},
        "classifier_test_accuracy": test_acc,
        "guidance": {},
    }
    grids: dict[str, Tensor] = {}
    for w in (1.0, 3.0):
        guided = ClassifierFree(net, scale=w, null_label=10)
        runs = {"ode_heun_nfe40": lambda g=guided: _sample_ode(
            ProbabilityFlowODE(path, g, cond={"y": y}), x0, 20).x_final}
        if w == 3.0:
            k = 10 if quick else 100
            runs[f"sde_em_nfe{k}"] = lambda g=guided, k=k: _sample_sde(
                DiffusionSDE(path, g, eta=1.0, cond={"y": y}), x0, k, seed)
        for label, fn in runs.items():
            t0 = time.perf_counter()
            gen = fn().clamp(-1.0, 1.0)
            secs = time.perf_counter() - t0
            acc = float((torch.as_tensor(clf.predict(gen.numpy())) == y).double().mean())
            div = [metrics.mean_pairwise_distance(gen[y == c]) for c in range(10)]
            result["guidance"][f"w{w:g}_{label}"] = {
                "accuracy": acc,
                "diversity_ratio_per_class": [d / r for d, r in zip(div, real_div)],
                "diversity_ratio_mean": sum(d / r for d, r in zip(div, real_div)) / 10,
                "seconds": secs,
            }
            if label.startswith("ode"):
                grids[f"w{w:g}"] = gen
    if figures:
        _figures_digits(out, grids, xte, yte, n)
    return result


def _figures_digits(out: Path, grids: dict[str, Tensor], xte: Tensor, yte: Tensor,
                    n: int) -> None:
    import matplotlib  # noqa: PLC0415 - optional extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    cols = min(10, n)

    def grid_png(imgs: list[Tensor], title: str, file: str) -> None:
        fig, axes = plt.subplots(10, cols, figsize=(cols * 0.8, 8))
        for c in range(10):
            for j in range(cols):
                ax = axes[c, j] if cols > 1 else axes[c]
                ax.imshow(imgs[c][j].reshape(8, 8).numpy(), cmap="gray_r", vmin=-1, vmax=1)
                ax.axis("off")
        fig.suptitle(title)
        fig.savefig(out / file, dpi=80, bbox_inches="tight")
        plt.close(fig)

    for key, gen in grids.items():
        per = [gen[c * n:(c + 1) * n] for c in range(10)]
        grid_png(per, f"generated digits, guidance {key} (row = class)", f"digits_{key}.png")
    real = [xte[yte == c][:cols] for c in range(10)]
    grid_png(real, "real test digits (row = class)", "digits_real.png")


# -------------------------------------------------------------------------------------- entry
def run_demo(
    data: str = "moons",
    *,
    steps: int | None = None,
    out: str | os.PathLike[str] = "sdeflow-demo",
    seed: int = 0,
    batch_size: int | None = None,
    lr: float | None = None,
    samples_per_class: int = 100,
    progress: bool = True,
    figures: bool = True,
    quick: bool = False,
) -> dict[str, Any]:
    """Train and sample on ``data``; write figures and ``out/metrics.json``; return the metrics."""
    if data not in DATA_CHOICES:
        raise ValueError(f"data: expected one of {DATA_CHOICES}, got {data!r}")
    steps = DEFAULT_STEPS[data] if steps is None else steps
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    if data == "digits":
        m = _run_digits(steps, outp, seed, batch_size or 64, lr or 2e-3, samples_per_class,
                        progress, figures, quick)
    else:
        m = _run_2d(data, steps, outp, seed, batch_size or 256, lr or 2e-3, progress, figures,
                    quick)
    m["wall_seconds"] = time.perf_counter() - t0
    m["cpu_seconds"] = time.process_time() - c0  # all threads; wall time depends on the load
    m["threads"] = torch.get_num_threads()
    summary = {"data": data, "wall_seconds": round(m["wall_seconds"], 1),
               "cpu_seconds": round(m["cpu_seconds"], 1),
               "train_steps_per_second": round(m["train"]["steps_per_second"], 1)}
    if data == "digits":
        summary["classifier_test_accuracy"] = m["classifier_test_accuracy"]
        summary.update({k: v["accuracy"] for k, v in m["guidance"].items()})
    else:
        summary.update({f"mmd_ratio_{k}": round(v, 3) for k, v in m["mmd_ratio"].items()})
    m["summary"] = summary
    (outp / "metrics.json").write_text(json.dumps(m, indent=2))
    return m
