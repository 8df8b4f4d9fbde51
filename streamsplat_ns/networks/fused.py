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


# ---------------------------------------------------------------------------------------------------------
# fc1 + SiLU in one GEMM (bf16 in, fp32 accumulate, SiLU on the fp32 accumulator, bf16 out)
#
# The MLPs' SiLU is a separate read + write of the [tokens, 4 * width] bf16 activation: about 7 % of a
# streamed frame. Fused into the GEMM's epilogue it costs nothing, but only where the Triton GEMM is about
# as fast as cuBLAS; so each (M, N, K) is timed once against cuBLAS + SiLU and the faster is used.

LINEAR_SILU_CONFIGS = (  # (BM, BN, BK, num_warps, num_stages)
    (128, 128, 64, 8, 3), (128, 256, 64, 8, 3), (256, 128, 64, 8, 3),
    (128, 128, 64, 4, 4), (64, 256, 64, 4, 4), (128, 64, 64, 4, 4),
)

if triton is not None:

    @triton.jit
    def _linear_silu_kernel(A, W, C, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                            GROUP_M: tl.constexpr):
        pid = tl.program_id(0)
        num_m, num_n = tl.cdiv(M, BM), tl.cdiv(N, BN)
        group = pid // (GROUP_M * num_n)  # grouped order: neighbouring programs share A rows in L2
        first_m = group * GROUP_M
        size_m = min(num_m - first_m, GROUP_M)
        pid_m = first_m + (pid % (GROUP_M * num_n)) % size_m
        pid_n = (pid % (GROUP_M * num_n)) // size_m
        rm = (pid_m * BM + tl.arange(0, BM)) % M
        rn = (pid_n * BN + tl.arange(0, BN)) % N
        rk = tl.arange(0, BK)
        a_ptrs = A + rm[:, None] * K + rk[None, :]
        w_ptrs = W + rn[None, :] * K + rk[:, None]  # W is [N, K]: read it as the [K, N] operand
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for k in range(0, tl.cdiv(K, BK)):
            kmask = rk < K - k * BK
            a = tl.load(a_ptrs, mask=kmask[None, :], other=0.0)
            w = tl.load(w_ptrs, mask=kmask[:, None], other=0.0)
            acc = tl.dot(a, w, acc)
            a_ptrs += BK
            w_ptrs += BK
        out = acc * tl.sigmoid(acc)
        om = pid_m * BM + tl.arange(0, BM)
        on = pid_n * BN + tl.arange(0, BN)
        tl.store(C + om[:, None] * N + on[None, :], out.to(C.dtype.element_ty),
                 mask=(om[:, None] < M) & (on[None, :] < N))


def linear_silu_triton(x: Tensor, weight: Tensor, config=LINEAR_SILU_CONFIGS[0]) -> Tensor:
    """``silu(x @ weight.T)`` with one Triton kernel (``x`` [..., K], ``weight`` [N, K], same dtype)."""
    k = x.shape[-1]
    a = x.reshape(-1, k).contiguous()
    w = weight.contiguous()
    m, n = a.shape[0], w.shape[0]
    c = torch.empty(m, n, device=x.device, dtype=x.dtype)
    bm, bn, bk, warps, stages = config
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
    _linear_silu_kernel[grid](a, w, c, m, n, k, BM=bm, BN=bn, BK=bk, GROUP_M=8, num_warps=warps,
                              num_stages=stages)
    return c.view(*x.shape[:-1], n)


def _eager_linear_silu(x: Tensor, weight: Tensor) -> Tensor:
    return torch.nn.functional.silu(torch.nn.functional.linear(x, weight))


_CHOICE: dict = {}  # (M, N, K, dtype, device) -> None (cuBLAS + SiLU) or the Triton config to use


def gpu_time_ms(fn, iters: int = 20) -> float:
    """Mean GPU milliseconds of ``fn`` between CUDA events (one untimed call first; syncs the device)."""
    fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(iters):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / iters


def linear_silu(x: Tensor, weight: Tensor) -> Tensor:
    """``silu(linear(x, weight))`` by the faster of cuBLAS + SiLU and the fused Triton GEMM, chosen per
    shape on first use (timed on the GPU). During CUDA-graph capture an undecided shape takes cuBLAS."""
    if not (x.is_cuda and triton is not None and x.dtype in (torch.bfloat16, torch.float16)
            and weight.dtype == x.dtype):
        return _eager_linear_silu(x, weight)
    m = x.numel() // x.shape[-1]
    key = (m, weight.shape[0], x.shape[-1], x.dtype, x.device.index)
    if key not in _CHOICE:
        if torch.cuda.is_current_stream_capturing():
            return _eager_linear_silu(x, weight)
        best, best_ms = None, gpu_time_ms(lambda: _eager_linear_silu(x, weight))
        for cfg in LINEAR_SILU_CONFIGS:
            try:
                ms = gpu_time_ms(lambda: linear_silu_triton(x, weight, cfg))
            except Exception:  # pragma: no cover - e.g. a config needs more shared memory than there is
                continue
            if ms < best_ms:
                best, best_ms = cfg, ms
        _CHOICE[key] = best
    cfg = _CHOICE[key]
    return _eager_linear_silu(x, weight) if cfg is None else linear_silu_triton(x, weight, cfg)
