"""Networks: shapes, conditioning, null label, determinism by seed, bad input."""

from __future__ import annotations

import pytest
import torch
from sdeflow_generative import nets


def test_mlp_shapes_and_seed() -> None:
    a = nets.MLP(3, hidden=16, depth=2, num_classes=5, seed=7)
    b = nets.MLP(3, hidden=16, depth=2, num_classes=5, seed=7)
    c = nets.MLP(3, hidden=16, depth=2, num_classes=5, seed=8)
    x, t = torch.randn(4, 3), torch.rand(4)
    y = torch.tensor([0, 4, 5, 2])  # 5 = null label
    assert a(x, t, y).shape == (4, 3)
    assert torch.equal(a(x, t, y), b(x, t, y))
    assert not torch.equal(a(x, t, y), c(x, t, y))
    assert a.param == "velocity" and a.num_classes == 5 and a.sample_shape == (3,)


def test_seed_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    ref = torch.rand(3)
    torch.manual_seed(123)
    nets.UNet(1, 8, base=8, groups=4, seed=1)
    assert torch.equal(torch.rand(3), ref)


def test_labels_and_time_change_the_output() -> None:
    net = nets.MLP(2, hidden=16, depth=2, num_classes=3, seed=0)
    x, t = torch.randn(6, 2), torch.full((6,), 0.3)
    y0, y1 = torch.zeros(6, dtype=torch.long), torch.ones(6, dtype=torch.long)
    assert not torch.allclose(net(x, t, y0), net(x, t, y1))
    assert not torch.allclose(net(x, t, y0), net(x, torch.full((6,), 0.7), y0))
    # no labels = the null label
    assert torch.equal(net(x, t), net(x, t, torch.full((6,), 3)))
    # scalar t broadcasts
    assert torch.equal(net(x, torch.tensor(0.3), y0), net(x, t, y0))


def test_rows_are_independent() -> None:
    """No batch statistics: row i of a batch equals the net on row i alone."""
    net = nets.UNet(1, 8, base=8, groups=4, num_classes=10, seed=0)
    x, t, y = torch.randn(5, 64), torch.rand(5), torch.tensor([1, 2, 3, 10, 0])
    full = net(x, t, y)
    for i in range(5):
        torch.testing.assert_close(full[i : i + 1], net(x[i : i + 1], t[i : i + 1], y[i : i + 1]))


@pytest.mark.parametrize("size,mults", [(8, (1, 2)), (16, (1, 2, 2)), (32, (1, 2, 2, 2))])
def test_unet_shapes(size: int, mults: tuple[int, ...]) -> None:
    net = nets.UNet(3, size, base=8, mults=mults, groups=4, num_classes=2, param="eps", seed=0)
    x = torch.randn(2, 3, size, size)
    out = net(x, torch.rand(2), torch.tensor([0, 2]))
    assert out.shape == x.shape
    flat = net(x.reshape(2, -1), torch.rand(2) * 0 + 0.5)
    assert flat.shape == (2, 3 * size * size)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    attn = [m for m in net.modules() if type(m).__name__ == "_Attention"]
    assert norms and len(attn) == 1


def test_device_and_dtype_follow_the_module() -> None:
    net = nets.MLP(2, hidden=8, depth=1, num_classes=2, seed=0).double()
    out = net(torch.randn(3, 2, dtype=torch.float64), torch.rand(3, dtype=torch.float64),
              torch.tensor([0, 1, 2]))
    assert out.dtype == torch.float64


def test_bad_input() -> None:
    net = nets.MLP(2, hidden=8, depth=1, num_classes=3, seed=0)
    x, t = torch.randn(4, 2), torch.rand(4)
    with pytest.raises(ValueError, match=r"y: expected labels in \[0, 3\]"):
        net(x, t, torch.tensor([0, 1, 4, 0]))
    with pytest.raises(ValueError, match=r"y: expected labels in \[0, 3\]"):
        net(x, t, torch.tensor([0, -1, 2, 0]))
    with pytest.raises(TypeError, match="y: expected an integer tensor"):
        net(x, t, torch.zeros(4))
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 2\)"):
        net(torch.randn(4, 3), t)
    with pytest.raises(ValueError, match=r"t: expected a scalar or shape \(4,\)"):
        net(x, torch.rand(3))
    with pytest.raises(ValueError, match="y: this network has no label embedding"):
        nets.MLP(2, hidden=8, depth=1)(x, t, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="param: expected one of"):
        nets.MLP(2, param="noise")
    with pytest.raises(ValueError, match="num_classes"):
        nets.MLP(2, num_classes=0)
    with pytest.raises(ValueError, match="image_size: expected a multiple of"):
        nets.UNet(1, 6, mults=(1, 2, 2))
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 1, 8, 8\) or \(B, 64\)"):
        nets.UNet(1, 8, base=8, groups=4)(torch.randn(2, 63), torch.rand(2))
