"""Benchmark of the CUDA orthographic rasterizer against gsplat's ortho mode (GPU only).

Scenes are StreamSplat-like: pixel-aligned Gaussians (one per 2x2 pixel cell per frame, two frames),
1-2 px footprints, depths in the canonical inverse-depth range, random opacities and colours.
  (a) one 288x512 image, 73,728 Gaussians: forward, forward+backward
  (b) a training batch of 16 pairs x 6 times = 96 images with linear motion and life-cycle, forward+backward
      (ours fuses the motion; gsplat gets it evaluated in PyTorch, batched through leading dims; also a
      per-image Python loop of our own kernel, as the official code loops over batch x time)
  (c) one 1080x1920 image with 1M Gaussians
Timing: CUDA events around the Python call (host overhead included), warm-up first, median of >= 20 runs.
Our kernels are called through the public ``rasterize`` / ``render_dynamic`` with ``backend="cuda"`` and
``check_inputs=False`` (shape checks only: no host synchronisation).
Usage: python -m benchmarks.bench_rasterizer [--out results.jsonl] [--reps 30] [--skip-gsplat]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from streamsplat_ns.gaussians import DynamicGaussians
from streamsplat_ns.rendering import (
    canonical_camera,
    canonical_to_world,
    opacities_at,
    positions_at,
    rasterize,
    render_dynamic,
)

from .common import gpu_median_ms as bench
from .common import pixel_aligned, random_scene

DEV = "cuda"


def to_world(means):
    return canonical_to_world(means)[0].contiguous()


def peak_mib(fn):
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def loss_of(rgb, depth, alpha, w):
    return (rgb * w).sum() + depth.sum() * 0.1 + alpha.sum()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--skip-gsplat", action="store_true")
    ap.add_argument("--only", default="abc")
    ap.add_argument("--profile", default=None, help="write a per-kernel profile of (b) ours F+B to this file")
    args = ap.parse_args()
    t = time.time()
    one = [x[:1] for x in pixel_aligned(2, 2, 1, seed=0, device=DEV)]
    rasterize(*one, *canonical_camera(2, 2, device=DEV), 2, 2, backend="cuda")  # builds or loads the kernels
    print(f"our extension ready in {time.time() - t:.1f}s", flush=True)
    gs_raster, gs_version = None, None
    if not args.skip_gsplat:
        try:
            t = time.time()
            import gsplat
            from gsplat import rasterization as gs_raster

            gs_version = gsplat.__version__
            print(f"gsplat {gs_version} ready in {time.time() - t:.1f}s", flush=True)
        except Exception as e:  # noqa: BLE001
            print(f"gsplat unavailable: {e!r}", flush=True)
            gs_raster = None
    dev_name = torch.cuda.get_device_name()
    rows = []

    def record(scenario, impl, fwd, fb, mem=None, note=""):
        row = dict(
            scenario=scenario,
            impl=impl,
            fwd_ms=fwd,
            fwd_bwd_ms=fb,
            peak_mib=mem,
            note=note,
            device=dev_name,
            torch=torch.__version__,
            gsplat=gs_version,
        )
        rows.append(row)
        print(json.dumps(row), flush=True)

    near, far, clamp = 0.01, 100.0, 0.999
    R = args.reps

    def single_image(tag, H, W, means_c, quats, scales, opac, cols):
        vm, K = canonical_camera(H, W, device=DEV)
        world = to_world(means_c)
        bg = torch.rand(1, 3, device=DEV)
        w = torch.rand(1, H, W, 3, device=DEV)
        leaves = [t.clone().requires_grad_(True) for t in (world, quats, scales, opac, cols)]

        def ours_f():
            o = rasterize(
                *leaves,
                vm[None],
                K[None],
                W,
                H,
                bg,
                alpha_clamp=clamp,
                near_plane=near,
                far_plane=far,
                backend="cuda",
                check_inputs=False,
            )
            return o.rgb, o.depth, o.alpha

        def ours_fb():
            out = ours_f()
            torch.autograd.grad(loss_of(*out, w), leaves)

        with torch.no_grad():
            f = bench(ours_f, R)
        fb = bench(ours_fb, R)
        record(tag, "ours (CUDA)", f[0], fb[0], peak_mib(ours_fb))
        if gs_raster is not None:

            def gs_f():
                out, alpha, _ = gs_raster(
                    leaves[0],
                    leaves[1],
                    leaves[2],
                    leaves[3],
                    leaves[4],
                    vm[None],
                    K[None],
                    W,
                    H,
                    near_plane=near,
                    far_plane=far,
                    eps2d=0.3,
                    sh_degree=None,
                    packed=False,
                    backgrounds=bg,
                    render_mode="RGB+D",
                    camera_model="ortho",
                )
                return out[..., :3], out[..., 3:4], alpha

            def gs_fb():
                out = gs_f()
                torch.autograd.grad(loss_of(*out, w), leaves)

            with torch.no_grad():
                a, b = ours_f(), gs_f()
                err = max(((x - y).norm() / y.norm().clamp_min(1e-12)).item() for x, y in zip(a, b))
                g = bench(gs_f, R)
            gfb = bench(gs_fb, R)
            record(
                tag, f"gsplat {gs_version} ortho", g[0], gfb[0], peak_mib(gs_fb), note=f"max rel diff vs ours {err:.2e}"
            )

    H, W = 288, 512
    if "a" in args.only:
        single_image("(a) 288x512, 73,728 G, 1 image", H, W, *pixel_aligned(H, W, 2, seed=0, device=DEV))

    if "b" in args.only:
        B, T = 16, 6
        per = [pixel_aligned(H, W, 2, seed=100 + b, device=DEV) for b in range(B)]
        means, quats, scales, opac, cols = (torch.stack(x, 0) for x in zip(*per))
        N = means.shape[1]
        g = torch.Generator(device=DEV).manual_seed(5)
        motion = torch.randn(B, N, 1, 3, device=DEV, generator=g) * torch.tensor([4.0 / W, 0.03, 4.0 / H], device=DEV)
        t0 = (torch.arange(N, device=DEV) >= N // 2).float().expand(B, N).contiguous()
        gamma0 = torch.rand(B, N, device=DEV, generator=g) * 4.0
        gamma1 = torch.rand(B, N, device=DEV, generator=g) * 0.7 + 0.3
        times = torch.linspace(0, 1, T, device=DEV).expand(B, T).contiguous()
        vm, K = canonical_camera(H, W, device=DEV)
        I = B * T
        vms, Ks = vm.expand(I, 4, 4).contiguous(), K.expand(I, 3, 3).contiguous()
        bg = torch.rand(I, 3, device=DEV)
        w = torch.rand(I, H, W, 3, device=DEV)
        leaves = [t.clone().requires_grad_(True) for t in (means, motion, gamma0, gamma1, quats, scales, opac, cols)]
        tag = f"(b) 288x512, {B}x{T}={I} images, {N:,} G/pair, motion"

        def ours_f():
            m, mo, g0, g1, q, s, o, c = leaves
            dg = DynamicGaussians(
                means=m, quats=q, scales=s, opacities=o, colours=c, motion=mo, t0=t0, gamma0=g0, gamma1=g1
            )
            out = render_dynamic(
                dg,
                times,
                H,
                W,
                bg.view(B, T, 3),
                alpha_clamp=clamp,
                near_plane=near,
                far_plane=far,
                backend="cuda",
                check_inputs=False,
            ).reshape(I)
            return out.rgb, out.depth, out.alpha

        def ours_fb():
            torch.autograd.grad(loss_of(*ours_f(), w), leaves)

        with torch.no_grad():
            f = bench(ours_f, R)
        fb = bench(ours_fb, R)
        record(tag, "ours fused (CUDA)", f[0], fb[0], peak_mib(ours_fb), note=f"{fb[0] / I:.3f} ms/image F+B")
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(3):
                    ours_fb()
                torch.cuda.synchronize()
            table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60)
            with open(args.profile, "w") as fh:
                fh.write(table)
            print(table, flush=True)

        def torch_motion():
            m, mo, g0, g1, q, s, o, c = leaves
            dg = DynamicGaussians(
                means=m, quats=q, scales=s, opacities=o, colours=c, motion=mo, t0=t0, gamma0=g0, gamma1=g1
            )
            world, valid = canonical_to_world(positions_at(dg, times))
            op = opacities_at(dg, times) * valid.to(world.dtype)

            def per_image(x):
                return x[:, None].expand(B, T, *x.shape[1:]).reshape(I, *x.shape[1:])

            return world.reshape(I, N, 3), per_image(q), per_image(s), op.reshape(I, N), per_image(c)

        def loop_f():
            wm, q, s, o, c = torch_motion()
            return [
                rasterize(
                    wm[i : i + 1],
                    q[i : i + 1],
                    s[i : i + 1],
                    o[i : i + 1],
                    c[i : i + 1],
                    vms[i : i + 1],
                    Ks[i : i + 1],
                    W,
                    H,
                    bg[i : i + 1],
                    alpha_clamp=clamp,
                    near_plane=near,
                    far_plane=far,
                    backend="cuda",
                    check_inputs=False,
                )
                for i in range(I)
            ]

        def loop_fb():
            outs = loop_f()
            rgb, depth, alpha = (torch.cat([getattr(o, k) for o in outs], 0) for k in ("rgb", "depth", "alpha"))
            torch.autograd.grad(loss_of(rgb, depth, alpha, w), leaves)

        with torch.no_grad():
            lf = bench(loop_f, max(20, R // 2), warmup=2)
        lfb = bench(loop_fb, max(20, R // 2), warmup=2)
        record(tag, "ours, per-image Python loop", lf[0], lfb[0], peak_mib(loop_fb))
        if gs_raster is not None:

            def gs_f():
                wm, q, s, o, c = torch_motion()
                out, alpha, _ = gs_raster(
                    wm,
                    q,
                    s,
                    o,
                    c,
                    vms[:, None],
                    Ks[:, None],
                    W,
                    H,
                    near_plane=near,
                    far_plane=far,
                    eps2d=0.3,
                    sh_degree=None,
                    packed=False,
                    backgrounds=bg[:, None],
                    render_mode="RGB+D",
                    camera_model="ortho",
                )
                out, alpha = out.reshape(I, H, W, 4), alpha.reshape(I, H, W, 1)
                return out[..., :3], out[..., 3:4], alpha

            def gs_fb():
                torch.autograd.grad(loss_of(*gs_f(), w), leaves)

            with torch.no_grad():
                a, b = ours_f(), gs_f()
                err = max(((x - y).norm() / y.norm().clamp_min(1e-12)).item() for x, y in zip(a, b))
                g_ = bench(gs_f, R)
            gfb = bench(gs_fb, R)
            record(
                tag,
                f"gsplat {gs_version} ortho (motion in PyTorch)",
                g_[0],
                gfb[0],
                peak_mib(gs_fb),
                note=f"max rel diff vs ours {err:.2e}",
            )
        del leaves, w

    if "c" in args.only:
        torch.cuda.empty_cache()
        single_image("(c) 1080x1920, 1M G, 1 image", 1080, 1920, *random_scene(1_000_000, seed=3, device=DEV))

    if args.out:
        with open(args.out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    print(
        f"\ndevice: {dev_name}; torch {torch.__version__}; gsplat {gs_version}; median of {R} (loop: {max(20, R // 2)})"
    )
    print("| scenario | implementation | forward ms | fwd+bwd ms | peak MiB (F+B) | note |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        mem = "" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        print(f"| {r['scenario']} | {r['impl']} | {r['fwd_ms']:.3f} | {r['fwd_bwd_ms']:.3f} | {mem} | {r['note']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
