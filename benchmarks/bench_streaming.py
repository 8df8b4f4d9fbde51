"""Online streaming benchmark of StreamSplat (paper config, random weights, depth excluded).

    PYTHONPATH=$PWD python3 benchmarks/bench_streaming.py --frames 10000

1. per-module breakdown (CUDA events, eager) of one new frame: encoder, static upsampler + heads,
   DINOv2 + condition, decoder transformer, dynamic upsampler, dynamic heads, and a render at t = 1;
2. streaming throughput over ``--frames`` frames (whole per-frame step in one CUDA graph unless
   ``--no-cuda-graph``), with peak GPU memory after frame 100 and at the end (must stay within 1%).
Prints a short table last. bf16 weights / SDPA flash attention; heads in fp32 (as the paper).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

try:  # the GPU image may lack jaxtyping; annotations only need subscriptable names
    import jaxtyping  # noqa: F401
except ImportError:  # pragma: no cover
    stub = types.ModuleType("jaxtyping")

    class _Ann:
        def __class_getitem__(cls, item):
            return cls

    for _n in ("Float", "Bool", "Int", "UInt8", "UInt16", "Shaped", "Int64", "Int32", "Float32"):
        setattr(stub, _n, _Ann)
    sys.modules["jaxtyping"] = stub

import torch  # noqa: E402

from streamsplat_ns.networks import ModelConfig, StreamSplat  # noqa: E402
from streamsplat_ns.streaming import StreamingSession  # noqa: E402


def breakdown(model: StreamSplat, frames, iters: int, render: bool):
    enc, dec, dino = model.encoder, model.decoder, model.dino
    names = ["encoder", "static upsampler+heads", "dino+condition", "decoder transformer", "dynamic upsampler",
             "dynamic heads", "render t=1 (1 image)"]
    tot = {n: 0.0 for n in names}
    prev = None
    render_fn = None
    if render:
        try:
            from streamsplat_ns.rendering import render_dynamic
            from streamsplat_ns.rendering.rasterizer import resolve_backend

            if resolve_backend("auto", frames[0][0].device) == "cuda":
                render_fn = render_dynamic
            else:
                print("render: CUDA rasterizer unavailable, render not timed")
        except Exception as e:  # pragma: no cover
            print(f"render: unavailable ({type(e).__name__}: {e})")
    bg = torch.full((1, 3), 0.5, device="cuda")
    tq = torch.ones(1, 1, device="cuda")
    for i in range(iters + 3):
        rgb, disp = frames[i % len(frames)]
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(len(names) + 1)]
        ev[0].record()
        tokens = enc.encode_tokens(rgb, model.prepare_disparity(disp))
        ev[1].record()
        feats = enc.upsample(tokens)
        g = enc.heads(feats)
        ev[2].record()
        cond = dec.condition(dino(rgb))
        ev[3].record()
        from streamsplat_ns.networks.model import FrameState

        cur = FrameState(tokens, feats, g, cond)
        if prev is None:
            prev = cur
            continue
        x = dec.joint_tokens(prev.tokens, cur.tokens, prev.condition, cur.condition)
        ev[4].record()
        dyn = dec.dynamic_features(x)
        ev[5].record()
        out = dec.gaussians(dyn, prev.features, cur.features, prev.gaussians, cur.gaussians)
        ev[6].record()
        if render_fn is not None:
            try:
                render_fn(out, tq, model.height, model.width, backgrounds=bg, check_inputs=False)
            except Exception as e:  # pragma: no cover - the rasterizer is built separately
                print(f"render: failed ({type(e).__name__}: {str(e)[:300]}); not timed")
                render_fn = None
        ev[7].record()
        prev = cur
        torch.cuda.synchronize()
        if i >= 3:
            for k, n in enumerate(names):
                tot[n] += ev[k].elapsed_time(ev[k + 1])
    res = {n: tot[n] / iters for n in names}
    if render_fn is None or tot[names[-1]] == 0:
        res.pop("render t=1 (1 image)")
    return res


def stream_run(model: StreamSplat, frames, n: int, cuda_graph: bool):
    s = StreamingSession(model, cuda_graph=cuda_graph)
    warm = 10
    for i in range(warm):
        s.push(*frames[i % len(frames)])
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    peak100 = None
    t0 = time.perf_counter()
    t100 = None
    for i in range(n):
        s.push(*frames[i % len(frames)])
        if i + 1 == 100:
            torch.cuda.synchronize()
            peak100 = torch.cuda.max_memory_allocated()
            t100 = time.perf_counter()
        if (i + 1) % 2000 == 0:
            print(f"  streamed {i + 1}/{n} frames", flush=True)
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    peak_end = torch.cuda.max_memory_allocated()
    if t100 is None or n <= 100:
        ms = (t1 - t0) / n * 1e3
    else:
        ms = (t1 - t100) / (n - 100) * 1e3
    return ms, peak100, peak_end, s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=10000, help="frames to stream for throughput and memory")
    ap.add_argument("--breakdown-iters", type=int, default=50)
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--no-cuda-graph", action="store_true")
    ap.add_argument("--no-render", action="store_true")
    ap.add_argument("--eager-frames", type=int, default=300, help="frames for the eager throughput line")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_streaming needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = StreamSplat.from_config(ModelConfig.paper()).to(dev).eval()
    if args.dtype == "bf16":
        model.cast_for_inference(torch.bfloat16)
    g = torch.Generator(device=dev).manual_seed(0)
    frames = [(torch.rand(1, 3, 288, 512, device=dev, generator=g), torch.rand(1, 1, 288, 512, device=dev, generator=g))
              for _ in range(8)]
    print(f"device: {torch.cuda.get_device_name()} | torch {torch.__version__} | dtype {args.dtype} | "
          f"{model.config.encoder.gaussians_per_frame * 2} Gaussians per interval")
    rows = []
    with torch.no_grad():
        bd = breakdown(model, frames, args.breakdown_iters, render=not args.no_render)
        ms_eager, _, _, _ = stream_run(model, frames, args.eager_frames, cuda_graph=False)
        rows.append(("stream, eager", ms_eager))
        if not args.no_cuda_graph:
            try:
                ms_graph, p100, pend, _ = stream_run(model, frames, args.frames, cuda_graph=True)
                rows.append(("stream, CUDA graph", ms_graph))
            except Exception as e:  # pragma: no cover
                print(f"CUDA graph capture failed ({type(e).__name__}: {e}); eager only")
                ms_graph, p100, pend, _ = stream_run(model, frames, args.frames, cuda_graph=False)
                rows.append(("stream, eager (long)", ms_graph))
        else:
            ms_graph, p100, pend, _ = stream_run(model, frames, args.frames, cuda_graph=False)
            rows.append(("stream, eager (long)", ms_graph))
    print("\nper-module time of one new frame (eager, CUDA events)")
    print(f"| {'module':<26} | {'ms':>7} |\n|{'-' * 28}|{'-' * 9}|")
    for n, v in bd.items():
        print(f"| {n:<26} | {v:7.3f} |")
    print(f"| {'sum':<26} | {sum(bd.values()):7.3f} |")
    print("\nstreaming (network only, per new frame)")
    print(f"| {'mode':<22} | {'ms/frame':>8} | {'frames/s':>8} |\n|{'-' * 24}|{'-' * 10}|{'-' * 10}|")
    for n, ms in rows:
        print(f"| {n:<22} | {ms:8.3f} | {1e3 / ms:8.1f} |")
    growth = (pend - p100) / p100 * 100
    print(f"\npeak GPU memory: after 100 frames {p100 / 2**20:.1f} MiB, after {args.frames} frames "
          f"{pend / 2**20:.1f} MiB ({growth:+.3f}%) -> {'FLAT' if abs(growth) <= 1 else 'GROWS'}")


if __name__ == "__main__":
    main()
