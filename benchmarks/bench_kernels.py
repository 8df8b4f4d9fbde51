"""Kernel-level GPU timings behind the streaming numbers (paper config shapes, bf16).

    python -m benchmarks.bench_kernels

1. attention: each SDPA backend at the encoder, decoder (self / cross) and upsampler window shapes,
   with the achieved TFLOP/s;
2. the second half of an upsampler block (residual add + RMSNorm + MLP): eager cuBLAS path against
   each config of the one-kernel Triton version (:func:`streamsplat_ns.inference.kernels.norm_mlp_triton`);
3. the dynamic heads of one pair: eager (TF32) against each config of the one-kernel version.
Prints a short table last.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from .common import gpu_time_ms


def _timed(rows: list, name: str, fn, flops: float = float("nan")) -> None:
    """Time ``fn`` (GPU ms, CUDA events) and add a row; a kernel that cannot run is reported and skipped."""
    try:
        ms = gpu_time_ms(fn, 20)
    except Exception as e:
        print(f"{name}: failed ({type(e).__name__}: {str(e)[:160]})")
        return
    rows.append((name, ms, flops / ms / 1e9))
    print(f"{name}: {ms:.3f} ms", flush=True)


def attention_rows():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    shapes = {  # name: (batch, heads, Lq, Lk) with head_dim 64
        "encoder self 2304": (1, 12, 2304, 2304),
        "decoder self 4608": (1, 12, 4608, 4608),
        "decoder cross 2304x576": (2, 12, 2304, 576),
        "upsampler st1 (2 fr) 8x2304": (8, 6, 2304, 2304),
        "upsampler st2 (2 fr) 32x2304": (32, 3, 2304, 2304),
    }
    backends = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
    }
    rows = []
    for name, (b, h, lq, lk) in shapes.items():
        q = torch.randn(b, h, lq, 64, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(b, h, lk, 64, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        # the model's layout: heads split from a [B, L, 3, H, 64] projection (non-contiguous views)
        qkv = torch.randn(b, lq, 3, h, 64, device="cuda", dtype=torch.bfloat16)
        flops = 4 * b * h * lq * lk * 64
        for bn, be in backends.items():
            for layout in ("contig", "strided"):
                if layout == "strided" and lq != lk:
                    continue
                args = (q, k, v) if layout == "contig" else qkv.permute(2, 0, 3, 1, 4).unbind(0)
                with sdpa_kernel([be]):
                    _timed(rows, f"attn {name} [{bn}, {layout}]", lambda: F.scaled_dot_product_attention(*args), flops)
    return rows


def mlp_rows():
    from streamsplat_ns.inference import InferenceOptions, prepare
    from streamsplat_ns.inference import kernels as fused
    from streamsplat_ns.networks.layers import MLP

    rows = []
    g = torch.Generator(device="cuda").manual_seed(0)
    for d, m, shift in ((192, 73728, 1152), (192, 36864, 0), (384, 18432, 1152), (384, 9216, 0)):
        # the eager path as inference runs it: fc1 + SiLU GEMM where faster (choice cached on disk)
        mlp = prepare(MLP(d, 4 * d).cuda().bfloat16(), InferenceOptions(fused_silu=True))
        x = torch.randn(1, m, d, device="cuda", generator=g)
        y = torch.randn(1, m, d, device="cuda", generator=g).bfloat16()
        nw = torch.rand(d, device="cuda", generator=g) + 0.5
        flops = 2 * m * d * 4 * d * 2

        def eager():
            s, h = fused.add_rmsnorm(x, y, nw, 1e-5, torch.bfloat16, y_shift=shift)
            return s + mlp(h).float()  # the pending add is the next block's

        ref = eager()
        _timed(rows, f"norm+MLP d{d} M{m} [eager cuBLAS]", eager, flops)
        for cfg in fused.NORM_MLP_CONFIGS:

            def run(c=cfg):
                return fused.norm_mlp_triton(x, y, nw, 1e-5, mlp.fc1.weight, mlp.fc2.weight, shift, c)

            try:
                err = (run() - ref).abs().max().item() / ref.abs().max().item()
            except Exception as e:
                print(f"d{d} cfg {cfg}: failed ({type(e).__name__}: {str(e)[:160]})")
                continue
            _timed(rows, f"norm+MLP d{d} M{m} [triton {cfg}] relerr {err:.1e}", run, flops)
    return rows


def heads_rows():
    from streamsplat_ns.inference import heads_kernel as fused_heads
    from streamsplat_ns.networks.heads import DynamicHeads

    torch.backends.cuda.matmul.allow_tf32 = True
    heads = DynamicHeads(384, 192, 1).cuda().eval()
    proj = torch.nn.Linear(192, 192, bias=False).cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    feats0, feats1 = (torch.randn(1, 36864, 192, device="cuda", generator=g) for _ in range(2))
    dyn = torch.randn(2, 36864, 192, device="cuda", generator=g)

    def eager():
        stat = torch.stack([feats0, feats1], dim=1).view(2, 36864, 192)
        return heads(torch.cat([proj(stat), dyn], dim=-1))

    rows = []
    with torch.no_grad():
        _timed(rows, "dynamic heads 73728 G [eager, TF32]", eager)
        for cfg in fused_heads.HEADS_CONFIGS:
            _timed(
                rows,
                f"dynamic heads 73728 G [triton {cfg}]",
                lambda c=cfg: fused_heads.dynamic_heads_triton(heads, proj.weight, dyn, feats0, feats1, c),
            )
    return rows


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("bench_kernels needs a CUDA GPU")
    print(f"device: {torch.cuda.get_device_name()} | torch {torch.__version__}")
    rows = attention_rows() + mlp_rows() + heads_rows()
    print(f"\n| {'kernel':<72} | {'ms':>7} | {'TFLOP/s':>7} |\n|{'-' * 74}|{'-' * 9}|{'-' * 9}|")
    for n, ms, tf in rows:
        print(f"| {n:<72} | {ms:7.3f} | {tf:7.0f} |")


if __name__ == "__main__":
    main()
