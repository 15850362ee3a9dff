"""Networks for the model seam: :class:`MLP` (vectors) and :class:`UNet` (small images).

Both are ``nn.Module``s called as ``net(x, t)`` or ``net(x, t, y=labels)`` (the seam of
:mod:`sdeflow_generative.models`) and return ``x``'s shape in their declared parameterization
``net.param``. Time ``t`` (one per sample, ``(B,)``, or a scalar) enters through a sinusoidal
embedding ``[sin(1000 t w_j), cos(1000 t w_j)]``, ``w_j = 10^(-4 j / (k - 1))``
(:class:`SinusoidalEmbedding`), followed by a two-layer MLP. With ``num_classes=K`` a label
embedding of ``K + 1`` rows is added to the time embedding; label ``K`` is the *null label*
(no label, for classifier-free guidance), and calling the net without ``y`` uses it.

Both are device-agnostic (move them with ``.to``) and deterministic by seed: ``seed=`` initialises
the weights from a private generator, leaving torch's global RNG untouched. Neither mixes batch
rows (no batch norm), so divergences and guidance batches are exact.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from .paths import PARAMETERIZATIONS

Tensor = torch.Tensor

__all__ = ["SinusoidalEmbedding", "MLP", "UNet"]


@contextlib.contextmanager
def _init_rng(seed: int | None) -> Iterator[None]:
    """Build the parameters from ``seed`` (PyTorch's default init on a forked global RNG, which
    is restored afterwards); ``None`` uses torch's global RNG as usual."""
    if seed is None:
        yield
        return
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int or None, got {type(seed).__name__}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _check_param(param: object) -> str:
    if param not in PARAMETERIZATIONS:
        raise ValueError(f"param: expected one of {PARAMETERIZATIONS}, got {param!r}")
    return str(param)


def _check_classes(num_classes: object) -> int | None:
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes: expected a positive int or None, got {num_classes!r}")
    return num_classes


class SinusoidalEmbedding(nn.Module):
    """``t`` ``(B,)`` in [0, 1] -> ``[sin(1000 t w), cos(1000 t w)]`` ``(B, dim)`` (dim even)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2 or dim % 2:
            raise ValueError(f"dim: expected an even int >= 2, got {dim!r}")
        half = dim // 2
        j = torch.arange(half, dtype=torch.float64)
        freqs = torch.exp(-math.log(1e4) * j / max(half - 1, 1))
        self.register_buffer("freqs", freqs.to(torch.get_default_dtype()), persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        arg = 1000.0 * t.unsqueeze(-1) * self.freqs.to(t.dtype)
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)


class _Conditioning(nn.Module):
    """Time (and label) embedding ``(B, emb_dim)`` shared by the networks."""

    def __init__(self, emb_dim: int, num_classes: int | None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.time = nn.Sequential(
            SinusoidalEmbedding(emb_dim), nn.Linear(emb_dim, emb_dim), nn.SiLU(),
            nn.Linear(emb_dim, emb_dim),
        )
        self.label = None if num_classes is None else nn.Embedding(num_classes + 1, emb_dim)

    def forward(self, t: Tensor, y: Tensor | None, batch: int, like: Tensor) -> Tensor:
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
        t = t.to(dtype=like.dtype, device=like.device)
        if t.dim() == 0:
            t = t.expand(batch)
        if tuple(t.shape) != (batch,):
            raise ValueError(f"t: expected a scalar or shape ({batch},), got {tuple(t.shape)}")
        emb = self.time(t)
        if self.label is None:
            if y is not None:
                raise ValueError("y: this network has no label embedding (num_classes=None)")
            return emb
        K = int(self.label.num_embeddings) - 1
        if y is None:
            y = torch.full((batch,), K, dtype=torch.int64, device=like.device)
        if not isinstance(y, torch.Tensor) or y.dtype not in (
            torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8
        ):
            raise TypeError(f"y: expected an integer tensor of labels, got {_describe(y)}")
        if tuple(y.shape) != (batch,):
            raise ValueError(f"y: expected labels of shape ({batch},), got {tuple(y.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) > K):
            raise ValueError(
                f"y: expected labels in [0, {K}] ({K} = the null label), got values in "
                f"[{int(y.min())}, {int(y.max())}]"
            )
        return emb + self.label(y.to(device=like.device, dtype=torch.int64))


def _describe(v: object) -> str:
    return f"dtype {v.dtype}" if isinstance(v, torch.Tensor) else type(v).__name__


class MLP(nn.Module):
    """A residual MLP ``(B, dim) -> (B, dim)`` with time and optional label conditioning.

    ``h_0 = W_in x + e``, ``h_{l+1} = h_l + W_l SiLU(LayerNorm(h_l) + e_l)`` for ``depth`` blocks,
    output ``W_out SiLU(h)``, where ``e`` is the time (+ label) embedding, projected per block.

    Args:
        dim: data dimension ``d``.
        hidden: width.
        depth: number of residual blocks.
        num_classes: number of real classes (labels ``0..K-1``; ``K`` is the null label), or None.
        emb_dim: embedding width (even).
        param: declared output parameterization (``"velocity"``, ``"score"``, ``"eps"``, ``"x0"``).
        seed: initialise the weights from this seed (None: torch's global RNG).
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 128,
        depth: int = 3,
        *,
        num_classes: int | None = None,
        emb_dim: int = 64,
        param: str = "velocity",
        seed: int | None = None,
    ) -> None:
        super().__init__()
        with _init_rng(seed):
            for name, v in (("dim", dim), ("hidden", hidden), ("depth", depth)):
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise ValueError(f"{name}: expected a positive int, got {v!r}")
            self.dim = dim
            self.sample_shape = (dim,)
            self.param = _check_param(param)
            self.num_classes = _check_classes(num_classes)
            self.cond = _Conditioning(emb_dim, self.num_classes)
            self.inp = nn.Linear(dim, hidden)
            self.emb_in = nn.Linear(emb_dim, hidden)
            self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(depth))
            self.embs = nn.ModuleList(nn.Linear(emb_dim, hidden) for _ in range(depth))
            self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
            self.out = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """``x`` ``(B, dim)``, ``t`` ``(B,)`` or scalar, ``y`` ``(B,)`` int -> ``(B, dim)``."""
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x: expected shape (B, {self.dim}), got {shape}")
        e = nn.functional.silu(self.cond(t, y, x.shape[0], x))
        h = self.inp(x) + self.emb_in(e)
        for norm, emb, lin in zip(self.norms, self.embs, self.layers):
            h = h + lin(nn.functional.silu(norm(h) + emb(e)))
        return self.out(nn.functional.silu(h))


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + embedding, GroupNorm-SiLU-conv, with a 1x1 skip when widths differ."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.n1 = nn.GroupNorm(min(groups, cin), cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.e = nn.Linear(emb_dim, cout)
        self.n2 = nn.GroupNorm(min(groups, cout), cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        h = self.c1(nn.functional.silu(self.n1(x)))
        h = h + self.e(e)[:, :, None, None]
        h = self.c2(nn.functional.silu(self.n2(h)))
        return self.skip(x) + h


class _Attention(nn.Module):
    """Single-head self-attention over the ``H W`` positions, residual."""

    def __init__(self, ch: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(min(groups, ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).unbind(1)
        att = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(C), dim=-1)  # (B, HW, HW)
        out = (v @ att.transpose(1, 2)).reshape(B, C, H, W)
        return x + self.proj(out)


class UNet(nn.Module):
    """A small conv U-Net for ``image_size`` x ``image_size`` images with time and label input.

    Levels ``base * m`` for ``m`` in ``mults``, halving the resolution between levels (so
    ``image_size`` must be divisible by ``2^(len(mults) - 1)``; 8x8 with ``(1, 2)`` goes 8 -> 4);
    ``blocks`` residual blocks (GroupNorm, SiLU, 3x3 convs, embedding added) per level on the way
    down and up, skip connections by concatenation, and residual-attention-residual at the lowest
    resolution.

    Input ``x`` is ``(B, C, H, W)`` or flat ``(B, C H W)`` (the form the fields and solvers use);
    the output has the input's shape.

    Args:
        channels: image channels ``C``.
        image_size: ``H = W``.
        base: width of the first level.
        mults: width multipliers per level.
        blocks: residual blocks per level.
        groups: GroupNorm groups (at most the width).
        num_classes, emb_dim, param, seed: as :class:`MLP`.
    """

    def __init__(
        self,
        channels: int,
        image_size: int,
        base: int = 32,
        mults: Sequence[int] = (1, 2),
        *,
        blocks: int = 1,
        groups: int = 8,
        num_classes: int | None = None,
        emb_dim: int = 128,
        param: str = "velocity",
        seed: int | None = None,
    ) -> None:
        super().__init__()
        with _init_rng(seed):
            for name, v in (("channels", channels), ("image_size", image_size), ("base", base),
                            ("blocks", blocks), ("groups", groups)):
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise ValueError(f"{name}: expected a positive int, got {v!r}")
            mults = tuple(mults)
            if not mults or not all(isinstance(m, int) and m >= 1 for m in mults):
                raise ValueError(
                    f"mults: expected a non-empty sequence of positive ints, got {mults}"
                )
            if image_size % (2 ** (len(mults) - 1)):
                raise ValueError(
                    f"image_size: expected a multiple of 2^(len(mults)-1)={2 ** (len(mults) - 1)}, "
                    f"got {image_size}"
                )
            self.channels, self.image_size = channels, image_size
            self.sample_shape = (channels, image_size, image_size)
            self.param = _check_param(param)
            self.num_classes = _check_classes(num_classes)
            self.cond = _Conditioning(emb_dim, self.num_classes)
            widths = [base * m for m in mults]
            self.inp = nn.Conv2d(channels, widths[0], 3, padding=1)
            self.down = nn.ModuleList()
            self.downsample = nn.ModuleList()
            skips = []
            ch = widths[0]
            for i, w in enumerate(widths):
                level = nn.ModuleList()
                for _ in range(blocks):
                    level.append(_ResBlock(ch, w, emb_dim, groups))
                    ch = w
                    skips.append(ch)
                self.down.append(level)
                if i < len(widths) - 1:
                    self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
            self.mid1 = _ResBlock(ch, ch, emb_dim, groups)
            self.attn = _Attention(ch, groups)
            self.mid2 = _ResBlock(ch, ch, emb_dim, groups)
            self.up = nn.ModuleList()
            self.upsample = nn.ModuleList()
            for i, w in reversed(list(enumerate(widths))):
                level = nn.ModuleList()
                for _ in range(blocks):
                    level.append(_ResBlock(ch + skips.pop(), w, emb_dim, groups))
                    ch = w
                self.up.append(level)
                if i > 0:
                    self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
            self.out_norm = nn.GroupNorm(min(groups, ch), ch)
            self.out = nn.Conv2d(ch, channels, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """``x`` ``(B, C, H, W)`` or ``(B, C H W)``, ``t`` ``(B,)``, ``y`` ``(B,)`` -> x's shape."""
        C, S = self.channels, self.image_size
        flat = isinstance(x, torch.Tensor) and x.dim() == 2 and x.shape[1] == C * S * S
        if not flat and not (isinstance(x, torch.Tensor) and tuple(x.shape[1:]) == (C, S, S)
                             and x.dim() == 4):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"x: expected shape (B, {C}, {S}, {S}) or (B, {C * S * S}), got {shape}"
            )
        h_in = x.reshape(x.shape[0], C, S, S) if flat else x
        e = nn.functional.silu(self.cond(t, y, x.shape[0], x))
        h = self.inp(h_in)
        hs = []
        for i, level in enumerate(self.down):
            for block in level:
                h = block(h, e)
                hs.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid2(self.attn(self.mid1(h, e)), e)
        for i, level in enumerate(self.up):
            for block in level:
                h = block(torch.cat([h, hs.pop()], dim=1), e)
            if i < len(self.upsample):
                h = self.upsample[i](nn.functional.interpolate(h, scale_factor=2.0, mode="nearest"))
        out = self.out(nn.functional.silu(self.out_norm(h)))
        return out.reshape(x.shape) if flat else out
