"""The dynamic heads of one pair in one Triton kernel (inference on CUDA, fp32 with TF32 products).

Eager, the velocity and life-cycle MLPs of 73,728 Gaussians per pair move each [N, 384] fp32 first-layer
activation and [N, 192] second-layer activation through device memory several times (GEMM out, SiLU in and
out, slices, the small-N output GEMMs on CUDA cores, tanh / relu / sigmoid). Here a program holds a block
of rows on chip from the inputs (both frames' static features and the dynamic features) to the outputs
(motion, gamma0, gamma1). ``static_proj`` is folded into the first layer (both are linear). The hidden
width is held as two power-of-two blocks (192 = 128 + 64), feature widths are read in masked chunks.
Products run as TF32 tensor-core dots, so the kernel is used only where PyTorch may use TF32 for fp32
matmuls too (``torch.backends.cuda.matmul.allow_tf32``); otherwise the eager heads run.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .choices import KernelChoices
from .kernels import triton, width_split

if triton is not None:
    import triton.language as tl

#: (BM, BK, BO, num_warps, num_stages): rows per program, K chunk of layer 1, output chunk of layer 2
HEADS_CONFIGS = ((64, 32, 32, 4, 2), (128, 32, 32, 8, 2), (64, 64, 64, 4, 2), (128, 64, 32, 8, 2), (64, 32, 64, 4, 3))
OUT_PAD = 16  # the output layers (3 * order and 2 wide) run as dots padded to 16 columns


def tf32_allowed() -> bool:
    try:
        return bool(torch.backends.cuda.matmul.allow_tf32)
    except Exception:  # pragma: no cover - a torch without the legacy flag
        return torch.get_float32_matmul_precision() != "highest"


if triton is not None:

    @triton.jit
    def _first_layer_dot(acc, f, W, hcols, C: tl.constexpr, kk, km, PREC: tl.constexpr):
        """acc + f @ W[hcols, kk].T: one K-block of the first layer for one block of hidden columns."""
        w = tl.load(W + hcols[None, :] * C + kk[:, None], mask=km[:, None], other=0.0)
        return tl.dot(f, w, acc, input_precision=PREC)

    @triton.jit
    def _mlp3(
        FS0,
        FS1,
        FD,
        is0,
        is1,
        rows_n,
        rows,
        rmask,
        W1S,
        W1D,
        B1,
        W2,
        B2,
        W3,
        B3,
        CS: tl.constexpr,
        CD: tl.constexpr,
        H: tl.constexpr,
        HA: tl.constexpr,
        HB: tl.constexpr,
        NOUT: tl.constexpr,
        OP: tl.constexpr,
        BM: tl.constexpr,
        BK: tl.constexpr,
        BO: tl.constexpr,
        PREC: tl.constexpr,
    ):
        """One head: silu(W1 [fs; fd] + b1) -> silu(W2 . + b2) -> W3 . + b3, as [BM, OP] (first NOUT valid).
        The hidden width H = HA + HB is held as two power-of-two blocks, so no product is padded."""
        ha = tl.arange(0, HA)
        a = tl.zeros((BM, HA), dtype=tl.float32)
        if HB > 0:
            hb = HA + tl.arange(0, HB)
            b_ = tl.zeros((BM, HB), dtype=tl.float32)
        for k in tl.static_range(0, CS, BK):  # static features of the row's own frame
            kk = k + tl.arange(0, BK)
            km = kk < CS
            f = tl.load(FS0 + rows_n[:, None] * CS + kk[None, :], mask=is0[:, None] & km[None, :], other=0.0)
            f += tl.load(FS1 + rows_n[:, None] * CS + kk[None, :], mask=is1[:, None] & km[None, :], other=0.0)
            a = _first_layer_dot(a, f, W1S, ha, CS, kk, km, PREC)
            if HB > 0:
                b_ = _first_layer_dot(b_, f, W1S, hb, CS, kk, km, PREC)
        for k in tl.static_range(0, CD, BK):  # dynamic features
            kk = k + tl.arange(0, BK)
            km = kk < CD
            f = tl.load(FD + rows[:, None] * CD + kk[None, :], mask=rmask[:, None] & km[None, :], other=0.0)
            a = _first_layer_dot(a, f, W1D, ha, CD, kk, km, PREC)
            if HB > 0:
                b_ = _first_layer_dot(b_, f, W1D, hb, CD, kk, km, PREC)
        a += tl.load(B1 + ha)[None, :]
        a = a * tl.sigmoid(a)
        if HB > 0:
            b_ += tl.load(B1 + hb)[None, :]
            b_ = b_ * tl.sigmoid(b_)
        oc = tl.arange(0, OP)
        out = tl.zeros((BM, OP), dtype=tl.float32)
        for j in tl.static_range(0, H, BO):
            jo = j + tl.arange(0, BO)
            jm = jo < H
            s = tl.dot(
                a, tl.load(W2 + jo[None, :] * H + ha[:, None], mask=jm[None, :], other=0.0), input_precision=PREC
            )
            if HB > 0:
                s = tl.dot(
                    b_,
                    tl.load(W2 + jo[None, :] * H + hb[:, None], mask=jm[None, :], other=0.0),
                    s,
                    input_precision=PREC,
                )
            s += tl.load(B2 + jo, mask=jm, other=0.0)[None, :]
            s = s * tl.sigmoid(s)
            w3 = tl.load(W3 + oc[None, :] * H + jo[:, None], mask=(oc[None, :] < NOUT) & jm[:, None], other=0.0)
            out = tl.dot(s, w3, out, input_precision=PREC)
        return out + tl.load(B3 + oc, mask=oc < NOUT, other=0.0)[None, :]

    @triton.jit
    def _dynamic_heads_kernel(
        FS0,
        FS1,
        FD,
        VW1S,
        VW1D,
        VB1,
        VW2,
        VB2,
        VW3,
        VB3,
        LW1S,
        LW1D,
        LB1,
        LW2,
        LB2,
        LW3,
        LB3,
        VSCALE,
        MOT,
        G0,
        G1,
        M,
        N,
        vmul,
        CS: tl.constexpr,
        CD: tl.constexpr,
        H: tl.constexpr,
        HA: tl.constexpr,
        HB: tl.constexpr,
        NV: tl.constexpr,
        OP: tl.constexpr,
        BM: tl.constexpr,
        BK: tl.constexpr,
        BO: tl.constexpr,
        PREC: tl.constexpr,
    ):
        pid = tl.program_id(0)
        rows = pid * BM + tl.arange(0, BM)
        rmask = rows < M
        bf = rows // N  # rows are ordered (batch, frame, gaussian)
        rows_n = (bf // 2) * N + rows % N  # the row of this Gaussian in its frame's [B, N, C] features
        is0 = rmask & (bf % 2 == 0)
        is1 = rmask & (bf % 2 == 1)
        v = _mlp3(
            FS0,
            FS1,
            FD,
            is0,
            is1,
            rows_n,
            rows,
            rmask,
            VW1S,
            VW1D,
            VB1,
            VW2,
            VB2,
            VW3,
            VB3,
            CS,
            CD,
            H,
            HA,
            HB,
            NV,
            OP,
            BM,
            BK,
            BO,
            PREC,
        )
        oc = tl.arange(0, OP)
        # tanh(x) = 2 sigmoid(2x) - 1; then * (1 - eps) * velocity_scale[axis]
        scale = tl.load(VSCALE + oc % 3, mask=oc < NV, other=0.0)
        v = (2.0 * tl.sigmoid(2.0 * v) - 1.0) * vmul * scale[None, :]
        tl.store(MOT + rows[:, None] * NV + oc[None, :], v, mask=rmask[:, None] & (oc[None, :] < NV))
        life = _mlp3(
            FS0,
            FS1,
            FD,
            is0,
            is1,
            rows_n,
            rows,
            rmask,
            LW1S,
            LW1D,
            LB1,
            LW2,
            LB2,
            LW3,
            LB3,
            CS,
            CD,
            H,
            HA,
            HB,
            2,
            OP,
            BM,
            BK,
            BO,
            PREC,
        )
        g0 = tl.sum(tl.where(oc[None, :] == 0, life, 0.0), axis=1)
        g1 = tl.sum(tl.where(oc[None, :] == 1, life, 0.0), axis=1)
        tl.store(G0 + rows, tl.maximum(g0, 0.0), mask=rmask)
        tl.store(G1 + rows, tl.sigmoid(g1), mask=rmask)


def _p2(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def dynamic_heads_triton(
    heads,
    static_proj_weight: Tensor,
    dyn: Tensor,
    feats0: Tensor,
    feats1: Tensor,
    config=HEADS_CONFIGS[0],
    precision: Optional[str] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """``heads(cat(static_proj(stack(feats0, feats1)), dyn))`` (eval) in one kernel: motion [2B, N, K, 3],
    gamma0 and gamma1 [2B, N]. ``dyn`` is [2B, N, Cd] ordered (batch, frame); ``feats*`` are [B, N, Cs]."""
    b, n, cs = feats0.shape
    cd = dyn.shape[-1]
    vel, life = heads.velocity, heads.lifecycle
    h, nv = vel[0].out_features, vel[4].out_features
    hsplit = width_split(h)
    if (
        nv > OUT_PAD
        or life[0].out_features != h
        or dyn.shape[:2] != (2 * b, n)
        or feats1.shape != feats0.shape
        or hsplit is None
        or min(cs, cd) < 16
    ):
        raise ValueError("dynamic_heads_triton: unsupported head or input shapes")
    f32 = torch.float32
    fs0, fs1, fd = (t.to(f32).contiguous() for t in (feats0, feats1, dyn))
    pw = static_proj_weight.to(f32)

    def split(first):  # fold static_proj into the static columns of a first layer
        w = first.weight.to(f32)
        return (w[:, :cs] @ pw).contiguous(), w[:, cs:].contiguous(), first.bias.to(f32).contiguous()

    vw1s, vw1d, vb1 = split(vel[0])
    lw1s, lw1d, lb1 = split(life[0])
    c = lambda t: t.to(f32).contiguous()  # noqa: E731
    m = 2 * b * n
    motion = torch.empty(m, nv, device=dyn.device, dtype=f32)
    g0 = torch.empty(m, device=dyn.device, dtype=f32)
    g1 = torch.empty_like(g0)
    bm, bk, bo, warps, stages = config
    prec = precision or ("tf32" if tf32_allowed() else "ieee")
    _dynamic_heads_kernel[(triton.cdiv(m, bm),)](
        fs0,
        fs1,
        fd,
        vw1s,
        vw1d,
        vb1,
        c(vel[2].weight),
        c(vel[2].bias),
        c(vel[4].weight),
        c(vel[4].bias),
        lw1s,
        lw1d,
        lb1,
        c(life[2].weight),
        c(life[2].bias),
        c(life[4].weight),
        c(life[4].bias),
        c(heads.velocity_scale),
        motion,
        g0,
        g1,
        m,
        n,
        float(1 - heads.eps),
        CS=cs,
        CD=cd,
        H=h,
        HA=hsplit[0],
        HB=hsplit[1],
        NV=nv,
        OP=OUT_PAD,
        BM=bm,
        BK=min(bk, _p2(min(cs, cd))),
        BO=min(bo, _p2(h)),
        PREC=prec,
        num_warps=warps,
        num_stages=stages,
    )
    return motion.view(2 * b, n, nv // 3, 3), g0.view(2 * b, n), g1.view(2 * b, n)


def dynamic_heads(
    heads, static_proj_weight: Tensor, dyn: Tensor, feats0: Tensor, feats1: Tensor, eager, choices: KernelChoices
):
    """The faster of the one-kernel heads and ``eager()`` for this shape (timed on first use, never during
    CUDA-graph capture, remembered in ``choices``); the kernel only on CUDA, in eval mode, with TF32
    allowed (see module doc)."""
    if not (
        triton is not None
        and dyn.is_cuda
        and not heads.training
        and tf32_allowed()
        and heads.velocity[4].out_features <= OUT_PAD
    ):
        return eager()
    # dtypes too: the inputs' and the heads' (their weights are cast by prepare only if a caller does so)
    key = (tuple(dyn.shape), feats0.shape[-1], heads.velocity[0].out_features, str(dyn.dtype), str(feats0.dtype))
    key += (str(heads.velocity[0].weight.dtype),)
    cfg = choices.choose(
        "dynamic_heads",
        key,
        eager,
        {
            cfg: (lambda c=cfg: dynamic_heads_triton(heads, static_proj_weight, dyn, feats0, feats1, c))
            for cfg in HEADS_CONFIGS
        },
    )
    if cfg is None:
        return eager()
    return dynamic_heads_triton(heads, static_proj_weight, dyn, feats0, feats1, cfg)
