"""fit: determinism by seed, bit-identical resume, atomic checkpoints, data forms, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sdeflow_generative import CondOT, GaussianPath, datasets, nets
from sdeflow_generative.losses import ConditionalMatching
from sdeflow_generative.train import fit

PATH = GaussianPath(CondOT())


def _setup(dropout: bool = True):
    x, y = datasets.labelled("gmm", 512, seed=0, dtype=torch.float32)
    net = nets.MLP(2, hidden=16, depth=1, emb_dim=8, num_classes=4, seed=0)
    loss = ConditionalMatching(PATH, label_dropout=0.2 if dropout else 0.0,
                               null_label=4 if dropout else None, coupling="ot")
    return net, loss, (x, y)


KW = dict(batch_size=32, lr=3e-3, seed=3, ema=0.9, grad_clip=0.5, progress=False, warmup=5)


def _params(m: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in m.state_dict().values()]


def test_same_seed_same_losses_bit_for_bit() -> None:
    a = fit(*_setup(), steps=25, **KW)
    b = fit(*_setup(), steps=25, **KW)
    assert a.losses == b.losses and len(a.losses) == 25
    assert all(torch.equal(p, q) for p, q in zip(_params(a.model), _params(b.model)))
    assert all(torch.equal(p, q) for p, q in zip(_params(a.ema), _params(b.ema)))
    c = fit(*_setup(), steps=25, **{**KW, "seed": 4})
    assert c.losses != a.losses


def test_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    full = fit(*_setup(), steps=40, **KW)
    ck = tmp_path / "run.pt"
    first = fit(*_setup(), steps=15, checkpoint=ck, **KW)
    assert ck.exists() and first.losses == full.losses[:15]
    # a fresh process would build a fresh model: do the same
    resumed = fit(*_setup(), steps=40, checkpoint=ck, resume=True, **KW)
    assert resumed.losses == full.losses
    assert resumed.steps_run == 25
    assert all(torch.equal(p, q) for p, q in zip(_params(resumed.model), _params(full.model)))
    assert all(torch.equal(p, q) for p, q in zip(_params(resumed.ema), _params(full.ema)))
    saved = torch.load(ck, weights_only=True)
    assert saved["step"] == 40
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind


class _Interrupt(Exception):
    pass


def test_interrupted_cosine_run_resumes_bit_for_bit(tmp_path: Path) -> None:
    """A run killed after step 17 (cosine schedule over 40 steps, checkpoint every 8) resumes
    from its step-16 checkpoint and ends equal to the uninterrupted run."""
    kw = {**KW, "schedule": "cosine"}
    full = fit(*_setup(), steps=40, **kw)
    net, loss, data = _setup()
    calls = [0]

    def dying(model, x, y=None, generator=None):
        calls[0] += 1
        if calls[0] > 17:
            raise _Interrupt
        return loss(model, x, y, generator)

    ck = tmp_path / "run.pt"
    with pytest.raises(_Interrupt):
        fit(net, dying, data, steps=40, checkpoint=ck, checkpoint_every=8, **kw)
    assert torch.load(ck, weights_only=True)["step"] == 16
    resumed = fit(*_setup(), steps=40, checkpoint=ck, resume=True, checkpoint_every=8, **kw)
    assert resumed.losses == full.losses and resumed.steps_run == 24
    assert all(torch.equal(p, q) for p, q in zip(_params(resumed.model), _params(full.model)))


def test_resume_with_periodic_checkpoints_and_validation(tmp_path: Path) -> None:
    net, loss, data = _setup()
    val = datasets.labelled("gmm", 256, seed=9, dtype=torch.float32)
    full = fit(net, loss, data, steps=30, validation=val, val_every=10, **KW)
    assert [s for s, _ in full.val_losses] == [10, 20, 30]
    ck = tmp_path / "c.pt"
    fit(*_setup(), steps=20, checkpoint=ck, checkpoint_every=10, validation=val, val_every=10,
        **KW)
    res = fit(*_setup(), steps=30, checkpoint=ck, resume=True, validation=val, val_every=10,
              **KW)
    assert res.losses == full.losses and res.val_losses == full.val_losses


def test_resume_without_a_file_starts_fresh(tmp_path: Path) -> None:
    a = fit(*_setup(), steps=10, checkpoint=tmp_path / "new.pt", resume=True, **KW)
    b = fit(*_setup(), steps=10, **KW)
    assert a.losses == b.losses


def test_corrupt_or_foreign_checkpoint_is_refused_and_untouched(tmp_path: Path) -> None:
    ck = tmp_path / "bad.pt"
    ck.write_bytes(b"not a checkpoint at all")
    before = ck.read_bytes()
    with pytest.raises(ValueError, match="checkpoint: .* could not be read"):
        fit(*_setup(), steps=5, checkpoint=ck, resume=True, **KW)
    assert ck.read_bytes() == before

    # a valid torch file that fit did not write
    torch.save({"weights": torch.zeros(3)}, ck)
    before = ck.read_bytes()
    with pytest.raises(ValueError, match="checkpoint: .* not written by"):
        fit(*_setup(), steps=5, checkpoint=ck, resume=True, **KW)
    assert ck.read_bytes() == before

    # a checkpoint of another model
    other = nets.MLP(2, hidden=32, depth=1, emb_dim=8, num_classes=4, seed=0)
    _, loss, data = _setup()
    fit(other, loss, data, steps=3, checkpoint=ck, **KW)
    before = ck.read_bytes()
    net = _setup()[0]
    w0 = _params(net)
    with pytest.raises(ValueError, match="checkpoint: .* another model"):
        fit(net, loss, data, steps=5, checkpoint=ck, resume=True, **KW)
    assert ck.read_bytes() == before
    assert all(torch.equal(p, q) for p, q in zip(w0, _params(net)))  # model untouched too

    # the same model with other settings
    fit(*_setup(), steps=3, checkpoint=ck, **KW)
    with pytest.raises(ValueError, match="checkpoint: .* other settings: seed=3"):
        fit(*_setup(), steps=5, checkpoint=ck, resume=True, **{**KW, "seed": 5})


def test_data_forms() -> None:
    net = nets.MLP(2, hidden=8, depth=1, emb_dim=8, seed=0)
    loss = ConditionalMatching(PATH)
    tgt = datasets.mixture2d(dtype=torch.float32)
    r = fit(net, loss, tgt, steps=5, batch_size=16, progress=False)
    assert len(r.losses) == 5 and r.steps_per_second > 0
    x = tgt.sample(64)
    r1 = fit(nets.MLP(2, hidden=8, depth=1, emb_dim=8, seed=0), loss, x, steps=5,
             batch_size=16, progress=False)
    batches = [x[i : i + 16] for i in range(0, 64, 16)]
    r2 = fit(nets.MLP(2, hidden=8, depth=1, emb_dim=8, seed=0), loss, batches, steps=4,
             progress=False)
    assert len(r1.losses) == 5 and len(r2.losses) == 4
    # a progress bar does not change the numbers
    r3 = fit(nets.MLP(2, hidden=8, depth=1, emb_dim=8, seed=0), loss, x, steps=5,
             batch_size=16, progress=True)
    assert r3.losses == r1.losses


def test_training_reduces_the_loss() -> None:
    """Not a quality test (see test_gen_learned): 300 steps cut the CFM loss of the mixture."""
    net = nets.MLP(2, hidden=32, depth=2, emb_dim=16, seed=0)
    r = fit(net, ConditionalMatching(PATH), datasets.mixture2d(dtype=torch.float32), steps=300,
            batch_size=128, lr=3e-3, progress=False)
    first, last = sum(r.losses[:20]) / 20, sum(r.losses[-20:]) / 20
    assert last < 0.75 * first


def test_bad_input(tmp_path: Path) -> None:
    net, loss, data = _setup()
    with pytest.raises(ValueError, match=r"data: samples of shape \(3,\) do not fit"):
        fit(net, loss, torch.randn(10, 3), steps=2, progress=False)
    with pytest.raises(ValueError, match=r"data: samples of shape \(3,\) do not fit"):
        fit(net, loss, [torch.randn(4, 3)], steps=1, progress=False)
    with pytest.raises(ValueError, match=r"validation: samples of shape \(5,\)"):
        fit(net, loss, data, steps=2, validation=torch.randn(8, 5), progress=False)
    with pytest.raises(ValueError, match="data: expected integer labels"):
        fit(net, loss, (data[0], data[1].float()), steps=2, progress=False)
    with pytest.raises(TypeError, match="data: expected a tensor"):
        fit(net, loss, 3.0, steps=2, progress=False)
    with pytest.raises(ValueError, match="steps: expected an int >= 1"):
        fit(net, loss, data, steps=0)
    with pytest.raises(ValueError, match="ema: expected a decay in"):
        fit(net, loss, data, steps=2, ema=1.0)
    with pytest.raises(ValueError, match="lr: expected a float > 0"):
        fit(net, loss, data, steps=2, lr=-1.0)
    with pytest.raises(ValueError, match="resume: resume=True needs a checkpoint"):
        fit(net, loss, data, steps=2, resume=True)
    with pytest.raises(ValueError, match="schedule"):
        fit(net, loss, data, steps=2, schedule="linear")
    with pytest.raises(ValueError, match="checkpoint: expected a file path"):
        fit(net, loss, data, steps=2, checkpoint=tmp_path)
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module"):
        fit(lambda x, t: x, loss, data, steps=2)
    ck = tmp_path / "c.pt"
    fit(*_setup(), steps=6, checkpoint=ck, **KW)
    with pytest.raises(ValueError, match="steps: the checkpoint already holds 6 steps"):
        fit(*_setup(), steps=4, checkpoint=ck, resume=True, **KW)
