"""Optional fused residual-add + RMSNorm + cast kernel (Triton) for fast bf16 inference.

Eager PyTorch spends about a quarter of a streamed frame's GPU time on three memory-bound kernels per
sub-layer: the fp32 + bf16 residual add, the fp32 RMSNorm and the cast of its output to bf16. One Triton
kernel does all three (12 instead of 24 bytes per element, one launch). The maths is unchanged: the
residual stays fp32, the norm is computed in fp32 and only its output is cast. Used only at inference
(no autograd) on CUDA when Triton is importable and the model asked for it
(:meth:`StreamSplat.cast_for_inference(fused=True)`); everything else takes the eager path.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
from torch import Tensor

try:  # Triton ships with CUDA builds of PyTorch; absent on CPU-only installs
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover
    triton = None

#: tests set this to run the kernels on CPU through TRITON_INTERPRET=1
ALLOW_CPU = os.environ.get("TRITON_INTERPRET") == "1"


def available(x: Tensor) -> bool:
    return triton is not None and (x.is_cuda or ALLOW_CPU) and not (torch.is_grad_enabled() and x.requires_grad)


if triton is not None:

    @triton.jit
    def _add_rmsnorm_kernel(X, Y, W, XO, H, M, D, L, eps, Y_SHIFT, H_SHIFT, HAS_Y: tl.constexpr,
                            DO_NORM: tl.constexpr, BM: tl.constexpr, BD: tl.constexpr):
        pid = tl.program_id(0)
        rows = pid * BM + tl.arange(0, BM)
        cols = tl.arange(0, BD)
        mask = (rows[:, None] < M) & (cols[None, :] < D)
        offs = rows[:, None] * D + cols[None, :]
        base = (rows // L) * L  # sequence start of each row (shifts wrap inside a sequence)
        pos = rows - base
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_Y:
            yrows = base + (pos + Y_SHIFT) % L
            y = tl.load(Y + yrows[:, None] * D + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            x = x + y
            tl.store(XO + offs, x, mask=mask)
        if DO_NORM:
            ms = tl.sum(x * x, axis=1) / D
            r = 1.0 / tl.sqrt(ms + eps)
            w = tl.load(W + cols, mask=cols < D, other=0.0).to(tl.float32)
            h = x * r[:, None] * w[None, :]
            hrows = base + (pos + H_SHIFT) % L
            tl.store(H + hrows[:, None] * D + cols[None, :], h.to(H.dtype.element_ty), mask=mask)


def add_rmsnorm(x: Tensor, y: Optional[Tensor], weight: Optional[Tensor], eps: float = 1e-5,
                out_dtype: torch.dtype = torch.bfloat16, y_shift: int = 0, h_shift: int = 0
                ) -> Tuple[Tensor, Optional[Tensor]]:
    """``s = x + y`` (fp32; ``x`` itself when ``y`` is None) and ``rmsnorm(s) * weight`` in ``out_dtype``
    (None when ``weight`` is None). For shifted windows on ``[B, L, D]`` tensors: ``y`` is read rolled
    back by ``y_shift`` (s[i] = x[i] + y[i + y_shift]) and ``h`` is written rolled by ``h_shift``
    (h[i + h_shift] = norm(s[i])), indices modulo L, so no separate ``torch.roll`` copies are needed."""
    d = x.shape[-1]
    x = x.contiguous()
    m = x.numel() // d
    if y is not None:
        y = y.contiguous()
        if y.shape != x.shape:
            raise ValueError(f"add_rmsnorm: shapes {tuple(x.shape)} and {tuple(y.shape)} differ")
        xo = torch.empty(x.shape, device=x.device, dtype=torch.float32)
    else:
        xo = x
    h = torch.empty(x.shape, device=x.device, dtype=out_dtype) if weight is not None else None
    bd = triton.next_power_of_2(d)
    bm = max(1, min(16, 4096 // bd))
    grid = (triton.cdiv(m, bm),)
    seq = x.shape[-2] if x.dim() >= 2 else m
    _add_rmsnorm_kernel[grid](
        x, y if y is not None else x, weight if weight is not None else x, xo, h if h is not None else xo,
        m, d, seq, float(eps), int(y_shift) % seq, int(h_shift) % seq, HAS_Y=y is not None,
        DO_NORM=weight is not None, BM=bm, BD=bd,
    )
    return xo, h
