"""Transformer building blocks shared by the encoder, upsampler and decoder.

Numerics follow the released StreamSplat code so that its checkpoints give the same outputs:
RMSNorm in fp32 (eps 1e-5, weight only), fp32 residual stream, packed q/k/v projection split in thirds,
contiguous 64-channel heads, SDPA with its default scale, bias-free SiLU MLP.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn


def _linear(x: Tensor, layer: nn.Linear) -> Tensor:
    """``layer(x)`` with ``x`` cast to the weight dtype, so bf16-converted weights work without autocast."""
    if not torch.is_autocast_enabled(x.device.type):
        x = x.to(layer.weight.dtype)
    return layer(x)


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32 and cast back to the input dtype (as ``nn.RMSNorm(x.float()).type_as(x)``)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        y = F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps)
        return y.to(x.dtype)


def sinusoidal_pe(length: int, dim: int) -> Float[Tensor, "L D"]:
    """Fixed 1-D sinusoid over the flattened token index (bit-exact with the authors' buffer)."""
    position = torch.arange(0, length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)
    return pe


class SinusoidalPE(nn.Module):
    """Holds the sinusoid as a (saved) buffer, like the official checkpoints do."""

    def __init__(self, length: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoidal_pe(length, dim), persistent=True)

    def forward(self, x: Float[Tensor, "B L D"]) -> Tensor:
        return x + self.pe.to(x.dtype)


class Attention(nn.Module):
    """Multi-head attention with one packed q/k/v projection (rows: q, then k, then v)."""

    def __init__(self, dim: int, head_dim: int = 64) -> None:
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"dim {dim} is not a multiple of head_dim {head_dim}")
        self.dim, self.heads = dim, dim // head_dim
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def _split(self, t: Tensor) -> Tensor:  # [B, L, D] -> [B, H, L, hd]
        b, l, _ = t.shape
        return t.view(b, l, self.heads, -1).transpose(1, 2)

    def forward(self, x: Float[Tensor, "B L D"], context: Optional[Float[Tensor, "B M D"]] = None) -> Tensor:
        b, l, d = x.shape
        if context is None:
            qkv = _linear(x, self.qkv).view(b, l, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
        else:
            # cross-attention: the same three weight chunks, q from x, k and v from the condition
            w, bias = self.qkv.weight, self.qkv.bias
            xin = x if torch.is_autocast_enabled(x.device.type) else x.to(w.dtype)
            cin = context if torch.is_autocast_enabled(x.device.type) else context.to(w.dtype)
            q = self._split(F.linear(xin, w[:d], bias[:d]))
            kv = F.linear(cin, w[d:], bias[d:])
            m = context.shape[1]
            k, v = kv.view(b, m, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        o = F.scaled_dot_product_attention(q, k, v)
        o = o.transpose(1, 2).reshape(b, l, d)
        return _linear(o, self.proj)


class MLP(nn.Module):
    """Bias-free ``fc1 -> SiLU -> fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return _linear(F.silu(_linear(x, self.fc1)), self.fc2)


class Block(nn.Module):
    """Pre-RMSNorm transformer block, optionally with 1-D windowed attention.

    Windowing splits the row-major sequence into consecutive windows of ``window`` tokens; with ``shift``
    the sequence is first rolled by +window/2 (new[i] = old[i - window/2]) and rolled back afterwards,
    with no mask (one window joins the sequence's end and start), exactly as the authors do.
    """

    def __init__(
        self,
        dim: int,
        head_dim: int = 64,
        mlp_ratio: int = 4,
        eps: float = 1e-5,
        window: Optional[int] = None,
        shift: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = RMSNorm(dim, eps)
        self.attn = Attention(dim, head_dim)
        self.norm2 = RMSNorm(dim, eps)
        self.mlp = MLP(dim, dim * mlp_ratio)
        self.window, self.shift = window, shift

    def _shift_of(self, l: int) -> int:
        w = self.window
        if w is None or w >= l:
            return 0
        if l % w:
            raise ValueError(f"sequence length {l} is not a multiple of the attention window {w}")
        return w // 2 if self.shift else 0

    def _attend(self, h: Tensor) -> Tensor:
        """Attention over the whole sequence, or within (shifted) windows."""
        b, l, d = h.shape
        w = self.window
        s = self._shift_of(l)
        if w is None or w >= l:
            return self.attn(h)
        if s:
            h = torch.roll(h, shifts=s, dims=1)
        o = self.attn(h.reshape(b * (l // w), w, d)).reshape(b, l, d)
        if s:
            o = torch.roll(o, shifts=-s, dims=1)
        return o

    def forward(self, x: Float[Tensor, "B L D"]) -> Tensor:
        x = x.float()  # fp32 residual stream; fp32 + bf16 promotes to fp32 inside the add kernel
        x = x + self._attend(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CrossBlock(nn.Module):
    """Decoder block: joint self-attention, cross-attention to a condition, MLP (each pre-RMSNorm).

    ``context`` has one entry per group of ``x``: with ``groups = 2`` the first half of the sequence attends
    to ``context[:, 0]`` and the second half to ``context[:, 1]``.
    """

    def __init__(self, dim: int, head_dim: int = 64, mlp_ratio: int = 4, eps: float = 1e-5) -> None:
        super().__init__()
        self.self_norm = RMSNorm(dim, eps)
        self.self_attn = Attention(dim, head_dim)
        self.cross_norm = RMSNorm(dim, eps)
        self.cross_attn = Attention(dim, head_dim)
        self.mlp_norm = RMSNorm(dim, eps)
        self.mlp = MLP(dim, dim * mlp_ratio)

    def forward(self, x: Float[Tensor, "B L D"], context: Float[Tensor, "B G M D"]) -> Tensor:
        b, l, d = x.shape
        g, m = context.shape[1], context.shape[2]
        x = x.float()
        x = x + self.self_attn(self.self_norm(x))
        h = self.cross_norm(x).reshape(b * g, l // g, d)
        x = x + self.cross_attn(h, context.reshape(b * g, m, d)).reshape(b, l, d)
        return x + self.mlp(self.mlp_norm(x))


class BlockStack(nn.ModuleList):
    """A stack of blocks run in order, then an optional final norm. A plain ``nn.ModuleList`` (same
    state-dict keys); a subclass may run the stack differently (the inference package's fused stack)."""

    def forward(self, x: Tensor, context: Optional[Tensor] = None, final_norm: Optional[RMSNorm] = None) -> Tensor:
        for blk in self:
            args = (x,) if context is None else (x, context)
            if getattr(blk, "grad_checkpoint", False) and torch.is_grad_enabled():
                from torch.utils.checkpoint import checkpoint

                x = checkpoint(blk, *args, use_reentrant=False)
            else:
                x = blk(*args)
        return x if final_norm is None else final_norm(x)


def run_blocks(
    blocks: nn.ModuleList, x: Tensor, context: Optional[Tensor] = None, final_norm: Optional[RMSNorm] = None
) -> Tensor:
    """Run a stack of blocks (then ``final_norm``): ``blocks(...)`` for a :class:`BlockStack`, the same loop
    for a plain ``nn.ModuleList``."""
    if isinstance(blocks, BlockStack):
        return blocks(x, context, final_norm)
    return BlockStack.forward(blocks, x, context, final_norm)
