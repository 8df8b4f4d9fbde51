"""Fused Triton kernels for fast bf16 inference (installed by :func:`streamsplat_ns.inference.prepare`).

Residual add + RMSNorm + cast. Eager PyTorch spends about a quarter of a streamed frame's GPU time on three
memory-bound kernels per sub-layer: the fp32 + bf16 residual add, the fp32 RMSNorm and the cast of its
output to bf16. One Triton kernel does all three (12 instead of 24 bytes per element, one launch). The maths
is unchanged: the residual stays fp32, the norm is computed in fp32 and only its output is cast. Used only
at inference (no autograd) on CUDA when Triton is importable and the options asked for it; everything else
takes the eager path. Per-shape choices between a kernel and cuBLAS go through :mod:`.choices` (cached on
disk).
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
from torch import Tensor

from .choices import KernelChoices

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
    def _add_rmsnorm_kernel(
        X,
        Y,
        W,
        XO,
        H,
        M,
        D,
        L,
        eps,
        Y_SHIFT,
        H_SHIFT,
        HAS_Y: tl.constexpr,
        DO_NORM: tl.constexpr,
        BM: tl.constexpr,
        BD: tl.constexpr,
    ):
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


def add_rmsnorm(
    x: Tensor,
    y: Optional[Tensor],
    weight: Optional[Tensor],
    eps: float = 1e-5,
    out_dtype: torch.dtype = torch.bfloat16,
    y_shift: int = 0,
    h_shift: int = 0,
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
        x,
        y if y is not None else x,
        weight if weight is not None else x,
        xo,
        h if h is not None else xo,
        m,
        d,
        seq,
        float(eps),
        int(y_shift) % seq,
        int(h_shift) % seq,
        HAS_Y=y is not None,
        DO_NORM=weight is not None,
        BM=bm,
        BD=bd,
    )
    return xo, h


if triton is not None:

    @triton.jit
    def _add_layernorm_kernel(X, Y, W, B, XO, H, M, D, eps, HAS_Y: tl.constexpr, BM: tl.constexpr, BD: tl.constexpr):
        pid = tl.program_id(0)
        rows = pid * BM + tl.arange(0, BM)
        cols = tl.arange(0, BD)
        cm = cols < D
        mask = (rows[:, None] < M) & cm[None, :]
        offs = rows[:, None] * D + cols[None, :]
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_Y:  # rounded to the residual's dtype before the norm, as the eager add would
            x = (x + tl.load(Y + offs, mask=mask, other=0.0).to(tl.float32)).to(XO.dtype.element_ty)
            tl.store(XO + offs, x, mask=mask)
            x = x.to(tl.float32)
        mean = tl.sum(x, axis=1) / D
        xc = tl.where(cm[None, :], x - mean[:, None], 0.0)
        r = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / D + eps)
        w = tl.load(W + cols, mask=cm, other=0.0).to(tl.float32)
        b = tl.load(B + cols, mask=cm, other=0.0).to(tl.float32)
        tl.store(H + offs, (xc * r[:, None] * w[None, :] + b[None, :]).to(H.dtype.element_ty), mask=mask)


def add_layernorm(x: Tensor, y: Optional[Tensor], weight: Tensor, bias: Tensor, eps: float) -> Tuple[Tensor, Tensor]:
    """``s = x + y`` (in ``x``'s dtype; ``x`` itself when ``y`` is None) and ``layer_norm(s)`` in ``x``'s
    dtype, in one kernel: DINOv2's residual add and the next LayerNorm (its residual stream is bf16)."""
    d = x.shape[-1]
    x = x.contiguous()
    m = x.numel() // d
    xo = torch.empty_like(x) if y is not None else x
    h = torch.empty_like(x)
    bd = triton.next_power_of_2(d)
    bm = max(1, min(16, 4096 // bd))
    _add_layernorm_kernel[(triton.cdiv(m, bm),)](
        x,
        y.contiguous() if y is not None else x,
        weight,
        bias,
        xo,
        h,
        m,
        d,
        float(eps),
        HAS_Y=y is not None,
        BM=bm,
        BD=bd,
    )
    return xo, h


# ---------------------------------------------------------------------------------------------------------
# fc1 + SiLU in one GEMM (bf16 in, fp32 accumulate, SiLU on the fp32 accumulator, bf16 out)
#
# The MLPs' SiLU is a separate read + write of the [tokens, 4 * width] bf16 activation: about 7 % of a
# streamed frame. Fused into the GEMM's epilogue it costs nothing, but only where the Triton GEMM is about
# as fast as cuBLAS; so each (M, N, K) is timed once against cuBLAS + SiLU and the faster is used.

LINEAR_SILU_CONFIGS = (  # (BM, BN, BK, num_warps, num_stages)
    (128, 128, 64, 8, 3),
    (128, 256, 64, 8, 3),
    (256, 128, 64, 8, 3),
    (128, 128, 64, 4, 4),
    (64, 256, 64, 4, 4),
    (128, 64, 64, 4, 4),
)

if triton is not None:

    @triton.jit
    def _linear_silu_kernel(
        A, W, C, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr
    ):
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
        tl.store(
            C + om[:, None] * N + on[None, :], out.to(C.dtype.element_ty), mask=(om[:, None] < M) & (on[None, :] < N)
        )


def linear_silu_triton(x: Tensor, weight: Tensor, config=LINEAR_SILU_CONFIGS[0]) -> Tensor:
    """``silu(x @ weight.T)`` with one Triton kernel (``x`` [..., K], ``weight`` [N, K], same dtype)."""
    k = x.shape[-1]
    a = x.reshape(-1, k).contiguous()
    w = weight.contiguous()
    m, n = a.shape[0], w.shape[0]
    c = torch.empty(m, n, device=x.device, dtype=x.dtype)
    bm, bn, bk, warps, stages = config
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
    _linear_silu_kernel[grid](a, w, c, m, n, k, BM=bm, BN=bn, BK=bk, GROUP_M=8, num_warps=warps, num_stages=stages)
    return c.view(*x.shape[:-1], n)


def _eager_linear_silu(x: Tensor, weight: Tensor) -> Tensor:
    return torch.nn.functional.silu(torch.nn.functional.linear(x, weight))


def linear_silu(x: Tensor, weight: Tensor, choices: KernelChoices) -> Tensor:
    """``silu(linear(x, weight))`` by the faster of cuBLAS + SiLU and the fused Triton GEMM, chosen per
    shape on first use (timed on the GPU, remembered in ``choices``). During CUDA-graph capture an
    undecided shape takes cuBLAS."""
    if not (
        x.is_cuda and triton is not None and x.dtype in (torch.bfloat16, torch.float16) and weight.dtype == x.dtype
    ):
        return _eager_linear_silu(x, weight)
    key = (x.numel() // x.shape[-1], weight.shape[0], x.shape[-1], str(x.dtype))
    cfg = choices.choose(
        "linear_silu",
        key,
        lambda: _eager_linear_silu(x, weight),
        {cfg: (lambda c=cfg: linear_silu_triton(x, weight, c)) for cfg in LINEAR_SILU_CONFIGS},
    )
    return _eager_linear_silu(x, weight) if cfg is None else linear_silu_triton(x, weight, cfg)


# ---------------------------------------------------------------------------------------------------------
# Residual add + RMSNorm + whole MLP + residual add in one kernel, for the narrow upsampler blocks
#
# At widths 192 / 384 the upsampler's MLP moves far more bytes than it computes: the normed input, the
# [tokens, 4 * width] hidden activation (written by fc1, read and written by SiLU, read by fc2) and the MLP
# output all go through device memory, for 36,864-73,728 tokens per frame. Here each program keeps a block
# of rows on chip: s = x + y, n = rmsnorm(s) * w, out = s + fc2(silu(fc1(n))), looping over the hidden units
# in chunks; only x, y and out touch memory. Used up to width 256: at 384 the accumulators crowd the
# registers and it lost to cuBLAS on the dynamic upsampler's 18,432 rows (docs/benchmarks.md). The width is
# split into two power-of-two parts (192 = 128 + 64, 384 = 256 + 128) since Triton blocks must be powers of
# two. Maths as the eager path with fp32 accumulation; the hidden activation is rounded to the weight dtype
# once (after SiLU) and the MLP output is added to the fp32 residual unrounded.

NORM_MLP_CONFIGS = (  # (BM, BH, num_warps, num_stages)
    (64, 32, 4, 3),
    (64, 32, 4, 4),
    (64, 32, 8, 3),
    (128, 32, 8, 3),
    (32, 32, 4, 3),
    (64, 64, 4, 2),
    (32, 64, 4, 2),
    (64, 16, 4, 4),
)


def width_split(d: int) -> Optional[Tuple[int, int]]:
    """``d = a + b`` with ``a`` and ``b`` powers of two (``b`` may be 0), or None."""
    for a in (512, 256, 128, 64, 32, 16):
        b = d - a
        if b == 0 or (b >= 16 and b < a and b & (b - 1) == 0):
            return a, b
    return None


if triton is not None:

    @triton.jit
    def _norm_mlp_kernel(
        X,
        Y,
        NW,
        W1,
        W2,
        OUT,
        FW,
        M,
        L,
        eps,
        feps,
        Y_SHIFT,
        HAS_Y: tl.constexpr,
        FINAL: tl.constexpr,
        DA: tl.constexpr,
        DB: tl.constexpr,
        HID: tl.constexpr,
        BM: tl.constexpr,
        BH: tl.constexpr,
    ):
        D: tl.constexpr = DA + DB
        pid = tl.program_id(0)
        rows = pid * BM + tl.arange(0, BM)
        rmask = rows < M
        rows_c = tl.where(rmask, rows, 0)
        base = (rows_c // L) * L
        yrows = base + (rows_c - base + Y_SHIFT) % L
        ca = tl.arange(0, DA)
        xa = tl.load(X + rows_c[:, None] * D + ca[None, :]).to(tl.float32)
        if HAS_Y:
            xa += tl.load(Y + yrows[:, None] * D + ca[None, :]).to(tl.float32)
        ss = tl.sum(xa * xa, axis=1)
        if DB > 0:
            cb = DA + tl.arange(0, DB)
            xb = tl.load(X + rows_c[:, None] * D + cb[None, :]).to(tl.float32)
            if HAS_Y:
                xb += tl.load(Y + yrows[:, None] * D + cb[None, :]).to(tl.float32)
            ss += tl.sum(xb * xb, axis=1)
        r = 1.0 / tl.sqrt(ss / D + eps)
        dt = W1.dtype.element_ty
        na = (xa * r[:, None] * tl.load(NW + ca)[None, :].to(tl.float32)).to(dt)
        acc_a = tl.zeros((BM, DA), dtype=tl.float32)
        if DB > 0:
            nb = (xb * r[:, None] * tl.load(NW + cb)[None, :].to(tl.float32)).to(dt)
            acc_b = tl.zeros((BM, DB), dtype=tl.float32)
        for j in range(0, HID, BH):
            hb = j + tl.arange(0, BH)
            h = tl.dot(na, tl.load(W1 + hb[None, :] * D + ca[:, None]))  # W1 [HID, D] read as [DA, BH]
            if DB > 0:
                h = tl.dot(nb, tl.load(W1 + hb[None, :] * D + cb[:, None]), h)
            h = (h * tl.sigmoid(h)).to(dt)
            acc_a = tl.dot(h, tl.load(W2 + ca[None, :] * HID + hb[:, None]), acc_a)  # W2 [D, HID] as [BH, DA]
            if DB > 0:
                acc_b = tl.dot(h, tl.load(W2 + cb[None, :] * HID + hb[:, None]), acc_b)
        oa = xa + acc_a
        if DB > 0:
            ob = xb + acc_b
        if FINAL:  # the stack's final RMSNorm (fp32 out): the residual itself is not needed afterwards
            ss = tl.sum(oa * oa, axis=1)
            if DB > 0:
                ss += tl.sum(ob * ob, axis=1)
            r = 1.0 / tl.sqrt(ss / D + feps)
            oa = oa * r[:, None] * tl.load(FW + ca)[None, :].to(tl.float32)
            if DB > 0:
                ob = ob * r[:, None] * tl.load(FW + cb)[None, :].to(tl.float32)
        tl.store(OUT + rows[:, None] * D + ca[None, :], oa, mask=rmask[:, None])
        if DB > 0:
            tl.store(OUT + rows[:, None] * D + cb[None, :], ob, mask=rmask[:, None])


def norm_mlp_triton(
    x: Tensor,
    y: Optional[Tensor],
    norm_weight: Tensor,
    eps: float,
    fc1: Tensor,
    fc2: Tensor,
    y_shift: int = 0,
    config=NORM_MLP_CONFIGS[0],
    final: Optional[Tuple[Tensor, float]] = None,
) -> Tensor:
    """``s + fc2(silu(fc1(rmsnorm(s) * norm_weight)))`` with ``s = x + roll(y)`` (fp32, as
    :func:`add_rmsnorm`'s ``y_shift``), in one kernel. ``x`` fp32 [..., L, D]; fc1 [Hd, D], fc2 [D, Hd].
    ``final = (weight, eps)``: return the RMSNorm of that result instead (a stack's last norm)."""
    d = x.shape[-1]
    split = width_split(d)
    hid = fc1.shape[0]
    if split is None or fc1.shape != (hid, d) or fc2.shape != (d, hid) or hid % 16:
        raise ValueError(f"norm_mlp_triton: unsupported width {d} / hidden {hid}")
    x = x.float().contiguous()
    m = x.numel() // d
    seq = x.shape[-2] if x.dim() >= 2 else m
    out = torch.empty_like(x)
    bm, bh, warps, stages = config
    bh = min(bh, hid)
    if hid % bh:
        raise ValueError(f"norm_mlp_triton: hidden {hid} is not a multiple of {bh}")
    _norm_mlp_kernel[(triton.cdiv(m, bm),)](
        x,
        y.contiguous() if y is not None else x,
        norm_weight.contiguous(),
        fc1.contiguous(),
        fc2.contiguous(),
        out,
        final[0].contiguous() if final is not None else norm_weight,
        m,
        seq,
        float(eps),
        float(final[1]) if final is not None else 0.0,
        int(y_shift) % seq,
        HAS_Y=y is not None,
        FINAL=final is not None,
        DA=split[0],
        DB=split[1],
        HID=hid,
        BM=bm,
        BH=bh,
        num_warps=warps,
        num_stages=stages,
    )
    return out


def add_norm_mlp(
    x: Tensor,
    y: Optional[Tensor],
    norm_weight: Tensor,
    eps: float,
    mlp,
    choices: KernelChoices,
    y_shift: int = 0,
    final: Optional[Tuple[Tensor, float]] = None,
) -> Tuple[Tensor, Optional[Tensor], bool]:
    """The second half of a fused block: returns ``(residual, pending, normed)`` like ``add_rmsnorm`` followed by the
    MLP. Where the one-kernel :func:`norm_mlp_triton` is faster for this shape (timed on first use, never during
    CUDA-graph capture; remembered in ``choices``) the MLP output is already in the residual, ``pending`` is
    None, and with ``final`` the result is already that final RMSNorm's output (``normed`` True)."""
    w1, w2 = mlp.fc1.weight, mlp.fc2.weight
    d, dt = x.shape[-1], w1.dtype

    def unfused():
        s, h = add_rmsnorm(x.float(), y, norm_weight, eps, dt, y_shift=y_shift)
        return s, mlp(h), False

    if not (
        x.is_cuda
        and triton is not None
        and dt in (torch.bfloat16, torch.float16)
        and d <= 256
        and width_split(d) is not None
        and y is not None
        and y.dtype == dt
        and w1.shape[0] % 32 == 0
    ):
        return unfused()
    key = (x.numel() // d, d, w1.shape[0], x.shape[-2], str(dt), final is not None)
    cfg = choices.choose(
        "norm_mlp",
        key,
        unfused,
        {
            cfg: (lambda c=cfg: norm_mlp_triton(x, y, norm_weight, eps, w1, w2, y_shift, c, final))
            for cfg in NORM_MLP_CONFIGS
        },
    )
    if cfg is None:
        return unfused()
    return norm_mlp_triton(x, y, norm_weight, eps, w1, w2, y_shift, cfg, final), None, final is not None
