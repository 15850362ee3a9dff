"""fit(..., distributed=True): 2 gloo processes spawned here against 1 process.

Same global batch: the losses equal the 1-process losses up to floating-point reduction order
(DDP averages two half-batch gradients instead of one full-batch gradient), checkpoints are
written by rank 0 only, and a resumed distributed run equals the uninterrupted one bit for bit
on every rank. Every spawn/join and collective has a timeout.
"""

from __future__ import annotations

import datetime
import os
import socket
import traceback
from pathlib import Path
from typing import Any

import pytest
import sdeflow_generative.train  # noqa: F401  (fit(distributed=True) must exist: no skip)
import torch
import torch.multiprocessing as mp

JOIN_TIMEOUT = 180.0


def _cases() -> dict[str, tuple[Any, Any, Any]]:
    from sdeflow_generative import CondOT, GaussianPath, datasets, nets
    from sdeflow_generative.losses import ConditionalMatching

    path = GaussianPath(CondOT())
    mix = (nets.MLP(2, hidden=16, depth=1, emb_dim=8, seed=0),
           ConditionalMatching(path, coupling="ot"), datasets.mixture2d(dtype=torch.float32))
    x, y = datasets.labelled("gmm", 512, seed=0, dtype=torch.float32)
    lab = (nets.MLP(2, hidden=16, depth=1, emb_dim=8, num_classes=4, seed=0),
           ConditionalMatching(path, label_dropout=0.2, null_label=4), (x, y))
    return {"mixture": mix, "labelled": lab}


KW = dict(batch_size=32, lr=3e-3, seed=3, ema=0.9, grad_clip=0.5, progress=False, warmup=3)
STEPS = 12


def _params(m: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in m.state_dict().values()]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world,
                                         timeout=datetime.timedelta(seconds=90))
    from sdeflow_generative import train

    res: dict[str, Any] = {}
    try:
        for name, (net, loss, data) in _cases().items():
            r = train.fit(net, loss, data, steps=STEPS, distributed=True, **KW)
            res[name] = dict(losses=r.losses, params=_params(r.model), ema=_params(r.ema))
        # checkpoints: rank 0 writes, every rank resumes
        saves: list[int] = []
        real = train._save_checkpoint

        def spy(path: Path, state: dict[str, Any]) -> None:
            saves.append(int(state["step"]))
            real(path, state)

        train._save_checkpoint = spy
        ck = Path(out) / "run.ckpt"
        net, loss, data = _cases()["mixture"]
        train.fit(net, loss, data, steps=STEPS // 2, distributed=True, checkpoint=ck,
                  checkpoint_every=2, **KW)
        net2, loss2, data2 = _cases()["mixture"]
        r2 = train.fit(net2, loss2, data2, steps=STEPS, distributed=True, checkpoint=ck,
                       resume=True, **KW)
        train._save_checkpoint = real
        res["resumed"] = dict(losses=r2.losses, params=_params(r2.model), saves=saves)
        try:
            train.fit(*_cases()["mixture"], steps=2, distributed=True,
                      **{**KW, "batch_size": 31})
            res["odd_batch"] = None
        except ValueError as exc:
            res["odd_batch"] = str(exc)
    except Exception:  # noqa: BLE001
        res["crash"] = traceback.format_exc()
    torch.save(res, os.path.join(out, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_two_process_ddp_matches_one_process(tmp_path: Path) -> None:
    from sdeflow_generative.train import fit

    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(JOIN_TIMEOUT)
    hung = [i for i, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(10)
    assert not hung, f"ranks {hung} did not finish within {JOIN_TIMEOUT}s"
    outs = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for o in outs:
        assert "crash" not in o, o.get("crash")
    torch.set_num_threads(1)
    for name, (net, loss, data) in _cases().items():
        ref = fit(net, loss, data, steps=STEPS, **KW)
        for o in outs:
            got = o[name]
            # same global batch: equal up to reduction order (float32)
            torch.testing.assert_close(torch.tensor(got["losses"]), torch.tensor(ref.losses),
                                       rtol=1e-4, atol=1e-6)
            for a, b in zip(got["params"], _params(ref.model)):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        # and the two ranks hold the same weights bit for bit
        for a, b in zip(outs[0][name]["params"], outs[1][name]["params"]):
            assert torch.equal(a, b)
        assert outs[0][name]["losses"] == outs[1][name]["losses"]
    # a resumed distributed run equals the uninterrupted one bit for bit, on every rank
    for o in outs:
        assert o["resumed"]["losses"] == outs[0]["mixture"]["losses"]
        for a, b in zip(o["resumed"]["params"], outs[0]["mixture"]["params"]):
            assert torch.equal(a, b)
    assert outs[0]["resumed"]["saves"] == [2, 4, 6, 6, 12]  # every 2, at the end, resumed end
    assert outs[1]["resumed"]["saves"] == []
    for o in outs:
        assert o["odd_batch"] is not None and "batch_size" in o["odd_batch"]


def test_distributed_without_a_process_group_is_an_error() -> None:
    from sdeflow_generative.train import fit

    net, loss, data = _cases()["mixture"]
    with pytest.raises(ValueError, match="distributed"):
        fit(net, loss, data, steps=2, distributed=True, **KW)
    with pytest.raises(TypeError, match="distributed"):
        fit(net, loss, data, steps=2, distributed="yes", **KW)
