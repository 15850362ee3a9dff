"""Training: :func:`fit` a model to a loss on data, deterministic by seed and resumable bit for bit.

``fit(model, loss, data, steps=..., batch_size=..., lr=..., seed=...)`` runs ``steps`` AdamW steps
on ``loss(model, x, y, generator)`` (e.g. a :class:`~sdeflow_generative.losses.ConditionalMatching`)
and returns a :class:`FitResult` (``.model``, ``.ema``, ``.losses``, ``.val_losses``, timing).

Data: a tensor ``(N, ...)`` (batches drawn with replacement), a pair ``(x, y)`` of a tensor and
its integer labels ``(N,)``, a :class:`~sdeflow_generative.targets.Target` (fresh exact samples
every step), or any other iterable of batches (each a tensor or an ``(x, y)`` pair; on resume
the first ``step`` batches of a fresh iterator are skipped, so it must replay identically).

Determinism. Every random draw comes from generators seeded by ``seed``: one for the data (batch
indices / target samples), one for the loss (times, noise, label dropout), and torch's global RNG
(forked and seeded inside ``fit``, restored afterwards) for whatever the model draws itself. The
same seed gives bit-identical losses and weights on the same machine.

Checkpoints (``checkpoint=path``): the file holds the latest state when ``fit`` returns (and every
``checkpoint_every`` steps): weights, EMA weights, optimizer state, the three generators' states,
the losses so far and the run's settings. It is written to a temporary file in the same directory
and moved into place with ``os.replace`` (atomic), and read with ``torch.load(weights_only=True)``.
With ``resume=True`` a run continues from the file (``steps`` is the total) and equals the
uninterrupted run bit for bit; a missing file starts a fresh run. A file that cannot be read, was
not written by ``fit``, belongs to another model or to other settings raises ``ValueError`` naming
``checkpoint`` before anything is changed; the file is left as it was. Without ``resume`` an
existing file is replaced by the new run's checkpoint.

Distributed (``distributed=True``, docs/scale-out.md): with ``torch.distributed`` initialised
(torchrun), the model is wrapped in ``DistributedDataParallel`` (:func:`_wrap`) and ``batch_size``
is the *global* batch, which must divide by the world size. Every rank draws the same global
batch from the same data generator and the loss's random part for it (``loss.draw``: times,
noise, OT pairing, label dropout -- so the loss must offer ``draw`` and ``per_sample``, as
:class:`~sdeflow_generative.losses.ConditionalMatching` does), then keeps its own contiguous
rows ``rank * B / W .. (rank + 1) * B / W`` (rank-sharding, for tensor, pair, ``Target`` and
iterable data alike; the index draw replaces a ``DistributedSampler``, which could not
reproduce the 1-process batches). DDP averages the gradients over ranks, so each step is the
1-process step on the same global batch up to the order of floating-point reductions; the
reported loss is the all-reduced global mean. Checkpoints are written by rank 0 only (all ranks
wait at a barrier until the file is in place); ``resume=True`` reads it on every rank (a
filesystem all ranks see), and since every generator is the same on every rank, rank 0's state
resumes them all bit for bit.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .targets import Target

Tensor = torch.Tensor
Batch = tuple[Tensor, "Tensor | None"]

__all__ = ["fit", "FitResult"]

_FORMAT = "sdeflow_generative.fit/1"
_LOSS_SEED_OFFSET = 0x5EED_0001
_TORCH_SEED_OFFSET = 0x5EED_0002


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        model: the trained model (the same object that was passed, trained in place).
        ema: an EMA copy of the model (``ema`` decay given), else None.
        losses: the training loss of every step ``0..steps-1`` (a resumed run includes the steps
            before the checkpoint).
        val_losses: ``(step, loss)`` of each validation (EMA weights when there are any).
        steps: the total number of steps done.
        steps_run: steps run by this call.
        seconds: wall time of this call's steps.
    """

    model: nn.Module
    ema: nn.Module | None
    losses: list[float]
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    steps: int = 0
    steps_run: int = 0
    seconds: float = 0.0

    @property
    def steps_per_second(self) -> float:
        """Training throughput of this call (steps per second)."""
        return self.steps_run / self.seconds if self.seconds > 0 else float("nan")


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _is_labelled_pair(data: object) -> bool:
    return (
        isinstance(data, tuple)
        and len(data) == 2
        and all(isinstance(v, torch.Tensor) for v in data)
    )


def _check_pair(data: tuple[Tensor, Tensor], name: str) -> tuple[Tensor, Tensor]:
    x, y = data
    if not x.is_floating_point() or x.dim() < 2:
        raise ValueError(f"{name}: expected x of shape (N, ...) floating, got {tuple(x.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool or tuple(y.shape) != (x.shape[0],):
        raise ValueError(
            f"{name}: expected integer labels y of shape ({x.shape[0]},), got {tuple(y.shape)} "
            f"{y.dtype}"
        )
    return x, y


def _check_sample_shape(model: nn.Module, shape: tuple[int, ...], name: str) -> None:
    expected = getattr(model, "sample_shape", None)  # declared by the networks
    if expected is None:
        return
    if math.prod(shape) != math.prod(expected):
        raise ValueError(
            f"{name}: samples of shape {shape} do not fit the model, which expects samples of "
            f"shape {tuple(expected)}"
        )


class _Batches:
    """Draws the batch of each step (the one place where data are read; a distributed run
    shards it by rank)."""

    def __init__(self, data: Any, batch_size: int, device: torch.device, seed: int) -> None:
        self.batch_size = batch_size
        self.device = device
        self.x: Tensor | None = None
        self.y: Tensor | None = None
        self.target: Target | None = None
        self.iterable: Iterable[Any] | None = None
        self._it: Iterator[Any] | None = None
        if isinstance(data, torch.Tensor):
            if not data.is_floating_point() or data.dim() < 2:
                raise ValueError(
                    f"data: expected a floating tensor (N, ...), got {tuple(data.shape)} "
                    f"{data.dtype}"
                )
            self.x = data
        elif _is_labelled_pair(data):
            self.x, self.y = _check_pair(data, "data")
        elif isinstance(data, Target):
            self.target = data
        elif isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
            self.iterable = data
        else:
            raise TypeError(
                "data: expected a tensor, an (x, y) pair, a Target or an iterable of batches, "
                f"got {type(data).__name__}"
            )
        gen_device = self.target.device if self.target is not None else torch.device("cpu")
        self.generator = torch.Generator(device=gen_device).manual_seed(seed)

    def sample_shape(self) -> tuple[int, ...] | None:
        if self.x is not None:
            return tuple(self.x.shape[1:])
        if self.target is not None:
            return (self.target.dim,)
        return None

    def skip(self, n: int) -> None:
        """Advance an iterable source by ``n`` batches (resume)."""
        if self.iterable is not None:
            self._it = iter(self.iterable)
            for _ in range(n):
                next(self._it)

    def draw(self) -> Batch:
        if self.x is not None:
            idx = torch.randint(
                self.x.shape[0], (self.batch_size,), generator=self.generator, device="cpu"
            )
            x = self.x[idx.to(self.x.device)]
            y = None if self.y is None else self.y[idx.to(self.y.device)]
        elif self.target is not None:
            x, y = self.target.sample(self.batch_size, generator=self.generator), None
        else:
            if self._it is None:
                self._it = iter(self.iterable)  # type: ignore[arg-type]
            item = next(self._it)
            if isinstance(item, torch.Tensor):
                x, y = item, None
            elif _is_labelled_pair(item):
                x, y = _check_pair(item, "data")
            else:
                raise TypeError(
                    f"data: expected batches that are tensors or (x, y) pairs, got "
                    f"{type(item).__name__}"
                )
        x = x.to(self.device)
        return x, (None if y is None else y.to(self.device))


def _wrap(model: nn.Module, distributed: bool = False) -> nn.Module:
    """The module the loss calls: the model, or its DistributedDataParallel wrapper."""
    if not distributed:
        return model
    dev = _device_of(model)
    return _DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)


class _DDP(nn.parallel.DistributedDataParallel):
    """DDP that answers the model's declared attributes (``param``, ``sample_shape``, ...)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":
                raise
            return getattr(self.module, name)


def _dist_setup(distributed: object, loss: object, batch_size: int) -> tuple[int, int]:
    """``(rank, world)`` of a distributed run (checked), ``(0, 1)`` otherwise."""
    if not isinstance(distributed, bool):
        raise TypeError(f"distributed: expected a bool, got {type(distributed).__name__}")
    if not distributed:
        return 0, 1
    d = torch.distributed
    if not (d.is_available() and d.is_initialized()):
        raise ValueError("distributed: torch.distributed is not initialised; launch with "
                         "torchrun and call torch.distributed.init_process_group() first")
    if not (callable(getattr(loss, "draw", None)) and callable(getattr(loss, "per_sample", None))):
        raise TypeError("loss: distributed=True needs a loss with draw(x, y, generator) and "
                        "per_sample(model, x, t, eps, y) (e.g. ConditionalMatching), so that "
                        "every rank draws the global batch's randomness and keeps its rows")
    world, rank = d.get_world_size(), d.get_rank()
    if batch_size % world:
        raise ValueError(f"batch_size: the global batch {batch_size} must divide by the world "
                         f"size {world}")
    return rank, world


def _dist_agree(settings: dict[str, Any], steps: int, rank: int) -> None:
    """Every rank must run the same settings: all-gather them, fail on every rank if not."""
    d = torch.distributed
    got: list[Any] = [None] * d.get_world_size()
    d.all_gather_object(got, repr(sorted({**settings, "steps": steps}.items())))
    if any(g != got[0] for g in got):
        raise ValueError("distributed: the ranks called fit with different settings "
                         f"(rank 0: {got[0]}; rank {rank}: {got[rank]})")


def _fingerprint(model: nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def _lr_at(step: int, lr: float, steps: int, schedule: str, warmup: int) -> float:
    f = 1.0 if warmup == 0 else min(1.0, (step + 1) / warmup)
    if schedule == "cosine":
        f *= 0.5 * (1.0 + math.cos(math.pi * step / steps))
    return lr * f


def _load_checkpoint(path: Path, model: nn.Module, settings: dict[str, Any]) -> dict[str, Any]:
    """Read and validate a checkpoint; nothing is changed if it is unusable."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read is a corrupt file
        raise ValueError(
            f"checkpoint: {str(path)!r} could not be read as a fit checkpoint "
            f"({type(exc).__name__}: {exc}); it was left unchanged"
        ) from exc
    if not isinstance(ck, dict) or ck.get("format") != _FORMAT:
        raise ValueError(
            f"checkpoint: {str(path)!r} was not written by sdeflow_generative.train.fit; it was "
            "left unchanged"
        )
    if ck.get("fingerprint") != _fingerprint(model):
        raise ValueError(
            f"checkpoint: {str(path)!r} holds the weights of another model (parameter names or "
            "shapes differ); it was left unchanged"
        )
    saved = ck.get("settings", {})
    diff = [k for k in settings if saved.get(k) != settings[k]]
    if diff:
        what = ", ".join(f"{k}={saved.get(k)!r} (now {settings[k]!r})" for k in diff)
        raise ValueError(
            f"checkpoint: {str(path)!r} was written with other settings: {what}; a resumed run "
            "must use the same ones"
        )
    return ck


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a temporary file in the same directory, then ``os.replace``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _check_int(v: object, name: str, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {v!r}")
    return v


def _check_float(v: object, name: str, cond: Callable[[float], bool], what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not cond(
        float(v)
    ):
        raise ValueError(f"{name}: expected {what}, got {v!r}")
    return float(v)


def fit(
    model: nn.Module,
    loss: Callable[..., Tensor],
    data: Any,
    *,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    ema: float | None = None,
    progress: bool = True,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
    checkpoint_every: int | None = None,
    grad_clip: float | None = None,
    weight_decay: float = 0.0,
    schedule: str = "constant",
    warmup: int = 0,
    validation: Any = None,
    val_every: int | None = None,
    distributed: bool = False,
) -> FitResult:
    """Train ``model`` on ``loss`` for ``steps`` AdamW steps (module docstring).

    Args:
        model: an ``nn.Module`` (its device is used for everything).
        loss: ``loss(model, x, y=None, generator=None)`` -> scalar, e.g. ``ConditionalMatching``.
        data: a tensor ``(N, ...)``, a pair ``(x, y)``, a ``Target`` or an iterable of batches.
        steps: total number of optimizer steps (with ``resume``, including those already done).
        batch_size: batch size (for tensor and target data).
        lr: peak learning rate.
        seed: seed of every random draw.
        ema: EMA decay in (0, 1) (e.g. 0.999), or None.
        progress: show a tqdm bar (loss, it/s).
        checkpoint: file path of the checkpoint, or None.
        resume: continue from ``checkpoint`` if it exists.
        checkpoint_every: also save every this many steps (default: only at the end).
        grad_clip: clip the global gradient norm to this value, or None.
        weight_decay: AdamW weight decay.
        schedule: ``"constant"`` or ``"cosine"`` (decay to 0 at ``steps``).
        warmup: linear warm-up steps.
        validation: held-out data (a tensor or ``(x, y)`` pair) for a validation loss at fixed
            times and noise (the same at every evaluation), using the EMA weights if any.
        val_every: validate every this many steps (default: ``steps // 10``) and at the end.
        distributed: train under DistributedDataParallel on the initialised process group;
            ``batch_size`` is then the global batch (module docstring).

    Returns:
        a :class:`FitResult`.

    Raises:
        ValueError / TypeError: bad arguments (named), data that do not fit the model,
            an unusable checkpoint (the file is left unchanged).
        FloatingPointError: the loss became non-finite (the message gives the step).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss):
        raise TypeError(f"loss: expected a callable loss(model, x, y, generator), got {loss!r}")
    steps = _check_int(steps, "steps", 1)
    batch_size = _check_int(batch_size, "batch_size", 1)
    lr = _check_float(lr, "lr", lambda v: v > 0, "a float > 0")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    if ema is not None:
        ema = _check_float(ema, "ema", lambda v: 0 < v < 1, "a decay in (0, 1) or None")
    if grad_clip is not None:
        grad_clip = _check_float(grad_clip, "grad_clip", lambda v: v > 0, "a float > 0 or None")
    weight_decay = _check_float(weight_decay, "weight_decay", lambda v: v >= 0, "a float >= 0")
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule: expected 'constant' or 'cosine', got {schedule!r}")
    warmup = _check_int(warmup, "warmup", 0)
    if checkpoint_every is not None:
        checkpoint_every = _check_int(checkpoint_every, "checkpoint_every", 1)
    if resume and checkpoint is None:
        raise ValueError("resume: resume=True needs a checkpoint path")
    ck_path = None if checkpoint is None else Path(checkpoint)
    if ck_path is not None and ck_path.exists() and ck_path.is_dir():
        raise ValueError(f"checkpoint: expected a file path, got the directory {str(ck_path)!r}")

    rank, world = _dist_setup(distributed, loss, batch_size)
    device = _device_of(model)
    batches = _Batches(data, batch_size, device, seed)
    shape = batches.sample_shape()
    if shape is not None:
        _check_sample_shape(model, shape, "data")
    val: tuple[Tensor, Tensor | None] | None = None
    if validation is not None:
        if isinstance(validation, torch.Tensor):
            if not validation.is_floating_point() or validation.dim() < 2:
                raise ValueError("validation: expected a floating tensor (N, ...)")
            val = (validation.to(device), None)
        elif _is_labelled_pair(validation):
            vx, vy = _check_pair(validation, "validation")
            val = (vx.to(device), vy.to(device))
        else:
            raise TypeError(
                f"validation: expected a tensor or an (x, y) pair, got {type(validation).__name__}"
            )
        _check_sample_shape(model, tuple(val[0].shape[1:]), "validation")
    if val_every is None:
        val_every = max(1, steps // 10)
    else:
        val_every = _check_int(val_every, "val_every", 1)

    settings = {
        "batch_size": batch_size, "lr": lr, "seed": seed, "ema": ema, "grad_clip": grad_clip,
        "weight_decay": weight_decay, "schedule": schedule, "warmup": warmup,
    }
    if distributed:
        _dist_agree(settings, steps, rank)
    ck = None
    if resume and ck_path is not None and ck_path.exists():
        ck = _load_checkpoint(ck_path, model, settings)
        if int(ck["step"]) > steps:
            raise ValueError(
                f"steps: the checkpoint already holds {int(ck['step'])} steps, more than "
                f"steps={steps}"
            )

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    ema_model = None
    if ema is not None:
        ema_model = copy.deepcopy(model).requires_grad_(False).eval()
    g_loss = torch.Generator(device=device).manual_seed(seed + _LOSS_SEED_OFFSET)
    losses: list[float] = []
    val_losses: list[tuple[int, float]] = []
    start = 0
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(seed + _TORCH_SEED_OFFSET)
        if ck is not None:
            model.load_state_dict(ck["model"])
            if ema_model is not None:
                ema_model.load_state_dict(ck["ema"])
            opt.load_state_dict(ck["optimizer"])
            batches.generator.set_state(ck["g_data"])
            g_loss.set_state(ck["g_loss"])
            torch.set_rng_state(ck["rng"])
            if device.type == "cuda" and ck.get("rng_cuda") is not None:
                torch.cuda.set_rng_state(ck["rng_cuda"], device)
            losses = [float(v) for v in ck["losses"].tolist()]
            val_losses = [(int(s), float(v)) for s, v in ck["val_losses"].tolist()]
            start = int(ck["step"])
        batches.skip(start)

        def state(step: int) -> dict[str, Any]:
            return {
                "format": _FORMAT,
                "step": step,
                "fingerprint": _fingerprint(model),
                "settings": settings,
                "model": model.state_dict(),
                "ema": None if ema_model is None else ema_model.state_dict(),
                "optimizer": opt.state_dict(),
                "g_data": batches.generator.get_state(),
                "g_loss": g_loss.get_state(),
                "rng": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "losses": torch.tensor(losses, dtype=torch.float64),
                "val_losses": torch.tensor(val_losses, dtype=torch.float64).reshape(-1, 2),
            }

        def validate(step: int) -> None:
            if val is None:
                return
            net = ema_model if ema_model is not None else model
            g = torch.Generator(device=device).manual_seed(seed + _LOSS_SEED_OFFSET + 1)
            was = net.training
            net.eval()
            with torch.no_grad():
                vx, vy = val
                t = loss.sample_times(vx.shape[0], g, vx)  # type: ignore[attr-defined]
                eps = torch.randn(vx.shape, generator=g, dtype=vx.dtype, device=device)
                v = loss.per_sample(net, vx, t, eps, vy).mean()  # type: ignore[attr-defined]
            net.train(was)
            val_losses.append((step, float(v)))

        from tqdm.auto import tqdm  # noqa: PLC0415 - optional extra, needed only here

        train_model = _wrap(model, distributed)
        local = slice(rank * (batch_size // world), (rank + 1) * (batch_size // world))

        def save(step: int) -> None:
            if rank == 0:
                _save_checkpoint(ck_path, state(step))  # type: ignore[arg-type]
            if distributed:
                torch.distributed.barrier()

        def step_loss(x: Tensor, y: Tensor | None) -> Tensor:
            if not distributed:
                return loss(train_model, x, y, generator=g_loss)
            x1, t, eps, yy = loss.draw(x, y, g_loss)  # type: ignore[attr-defined]
            return loss.per_sample(  # type: ignore[attr-defined]
                train_model, x1[local], t[local], eps[local],
                None if yy is None else yy[local]).mean()

        was_training = model.training
        model.train()
        bar = tqdm(total=steps, initial=start, disable=not progress or rank != 0, desc="fit",
                   leave=False)
        t0 = time.perf_counter()
        try:
            for step in range(start, steps):
                for group in opt.param_groups:
                    group["lr"] = _lr_at(step, lr, steps, schedule, warmup)
                x, y = batches.draw()
                if step == start and shape is None:
                    _check_sample_shape(model, tuple(x.shape[1:]), "data")
                value = step_loss(x, y)
                opt.zero_grad(set_to_none=True)
                value.backward()
                if grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                opt.step()
                if ema_model is not None:
                    with torch.no_grad():
                        for pe, p in zip(ema_model.parameters(), model.parameters()):
                            pe.lerp_(p, 1.0 - ema)
                        for be, b in zip(ema_model.buffers(), model.buffers()):
                            be.copy_(b)
                if distributed:  # the global mean (equal shards): the same on every rank
                    vt = value.detach().clone()
                    torch.distributed.all_reduce(vt)
                    v = float(vt) / world
                else:
                    v = float(value.detach())
                if not math.isfinite(v):
                    raise FloatingPointError(f"fit: the loss became {v} at step {step}")
                losses.append(v)
                done = step + 1
                if val is not None and (done % val_every == 0 or done == steps):
                    validate(done)
                if ck_path is not None and checkpoint_every and done % checkpoint_every == 0:
                    save(done)
                if progress and (done % 25 == 0 or done == steps):
                    bar.set_postfix(loss=f"{v:.4f}")
                bar.update(1)
            seconds = time.perf_counter() - t0
            if ck_path is not None:
                save(steps)
        finally:
            bar.close()
            model.train(was_training)
    return FitResult(
        model=model, ema=ema_model, losses=losses, val_losses=val_losses, steps=steps,
        steps_run=steps - start, seconds=seconds,
    )
