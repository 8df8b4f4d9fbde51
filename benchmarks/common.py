"""What the benchmarks share: the GPU timer, synthetic Gaussian scenes, the letterboxed test video and
random weights in the file formats users have. Run every benchmark from the repository root as a module::

    python -m benchmarks.bench_reconstruct --tiny

Only public APIs of ``streamsplat_ns`` are used here and in the benchmarks.
"""

from __future__ import annotations

import statistics
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from streamsplat_ns.inference import gpu_time_ms

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = REPO / ".whl" / "clips" / "bikes.mp4"

__all__ = [
    "REPO",
    "DEFAULT_CLIP",
    "gpu_time_ms",
    "gpu_median_ms",
    "pixel_aligned",
    "random_scene",
    "small_world_scene",
    "build_video",
    "loop_video",
    "build_weights",
]


# ------------------------------------------------------------------ timing
def gpu_median_ms(fn: Callable[[], Any], reps: int, warmup: int = 5) -> Tuple[float, float]:
    """(median, min) GPU milliseconds of single calls of ``fn`` (the library's CUDA-event timer, one call
    per reading, the device synchronised around each), after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    ts = [gpu_time_ms(fn, iters=1, warmup=0) for _ in range(reps)]
    return statistics.median(ts), min(ts)


# ------------------------------------------------------------------ synthetic scenes
def pixel_aligned(H: int, W: int, frames: int, seed: int, device: Any = "cuda") -> List[torch.Tensor]:
    """StreamSplat-like canonical (x, y_hat, z) Gaussians: one per 2x2 pixel cell per frame, 1-2 px footprints,
    random opacities and colours. Returns [means, quats, scales, opacities, colours] (N = frames * H/2 * W/2)."""
    g = torch.Generator(device=device).manual_seed(seed)
    hh, ww = H // 2, W // 2
    rows, cols = torch.meshgrid(torch.arange(hh, device=device), torch.arange(ww, device=device), indexing="ij")
    out = []
    for _ in range(frames):
        n = hh * ww
        px = (2 * cols.reshape(-1) + 1).float() + torch.rand(n, device=device, generator=g) - 0.5
        py = (2 * rows.reshape(-1) + 1).float() + torch.rand(n, device=device, generator=g) - 0.5
        x = (px - W / 2) / (W / 2)
        z = -(py - H / 2) / (H / 2)
        y_hat = torch.rand(n, device=device, generator=g) * 0.9 + 0.05
        sig = torch.rand(n, device=device, generator=g) + 1.0  # 1-2 px
        out.append((torch.stack([x, y_hat, z], -1), *_shape_and_looks(sig, H, W, n, g, device)))
    return [torch.cat(t, 0) for t in zip(*out)]


def random_scene(N: int, seed: int, H: int = 1080, W: int = 1920, device: Any = "cuda") -> List[torch.Tensor]:
    """``N`` canonical Gaussians spread uniformly over an ``H x W`` image (log-normal ~1.5 px footprints)."""
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.rand(N, device=device, generator=g) * 2 - 1
    z = torch.rand(N, device=device, generator=g) * 2 - 1
    y_hat = torch.rand(N, device=device, generator=g) * 0.9 + 0.05
    sig = torch.exp(torch.randn(N, device=device, generator=g) * 0.3) * 1.5
    return [torch.stack([x, y_hat, z], -1), *_shape_and_looks(sig, H, W, N, g, device)]


def small_world_scene(seed: int = 0) -> List[torch.Tensor]:
    """The CPU render benchmark's 288x512 scene, in world coordinates: 2 x 144 x 256 pixel-aligned Gaussians
    with depths 0.1-5, ~1 px footprints, opacities 0.05-1. Returns [means, quats, scales, opacities, colours]."""
    g = torch.Generator().manual_seed(seed)
    gy, gx = torch.meshgrid(torch.arange(144), torch.arange(256), indexing="ij")
    x, z = -1 + (2 * gx.flatten() + 1) / 256, 1 - (2 * gy.flatten() + 1) / 144
    frames = []
    for _ in range(2):
        n = x.numel()
        frames.append(
            torch.stack(
                [
                    x + (torch.rand(n, generator=g) - 0.5) / 256,
                    1 / (0.2 + 9.8 * torch.rand(n, generator=g)),
                    z + (torch.rand(n, generator=g) - 0.5) / 144,
                ],
                -1,
            )
        )
    means = torch.cat(frames)
    n = means.shape[0]
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1
    scales = 0.1 * torch.nn.functional.softplus(torch.randn(n, 3, generator=g) - 3)
    return [means, quats, scales, 0.05 + 0.95 * torch.rand(n, generator=g), torch.rand(n, 3, generator=g)]


def _shape_and_looks(sig: torch.Tensor, H: int, W: int, n: int, g: torch.Generator, device: Any):
    """Quaternions near identity, scales of ``sig`` pixels, random opacities and colours."""
    sx, sz = sig / (W / 2), sig / (H / 2)
    scales = torch.stack([sx, 0.5 * (sx + sz), sz], -1)
    quats = torch.tensor([1.0, 0.0, 0.0, 0.0], device=device) + 0.1 * torch.randn(n, 4, device=device, generator=g)
    opac = torch.sigmoid(torch.randn(n, device=device, generator=g))
    colours = torch.rand(n, 3, device=device, generator=g)
    return quats, scales, opac, colours


# ------------------------------------------------------------------ test video and weights
def _video_stream(container, fps: Fraction, width: int, height: int):
    for codec in ("libx264", "h264", "mpeg4"):
        try:
            s = container.add_stream(codec, rate=fps)
            break
        except Exception:  # noqa: BLE001 - depends on the FFmpeg build
            continue
    else:
        raise RuntimeError("no mp4 video encoder in this PyAV/FFmpeg build")
    s.width, s.height, s.pix_fmt = width, height, "yuv420p"
    return s


def build_video(src: Path, dst: Path, width: int = 640, height: int = 480, max_frames: Optional[int] = None) -> dict:
    """Letterbox (scale to fit, pad black) every frame of ``src`` to ``width x height``; H.264 mp4 at the source rate."""
    import av
    import numpy as np

    from streamsplat_ns.atomic import atomic_path

    if not src.is_file():
        raise FileNotFoundError(f"{src}: clip not found; pass --clip (any video; the targets need >= 200 frames)")
    n = 0
    with av.open(str(src)) as inp, atomic_path(dst) as tmp:
        vs = inp.streams.video[0]
        fps = Fraction(vs.average_rate) if vs.average_rate else Fraction(25)
        with av.open(str(tmp), mode="w", format="mp4") as out:
            os_ = _video_stream(out, fps, width, height)
            for f in inp.decode(vs):
                scale = min(width / f.width, height / f.height)
                nw, nh = max(2, int(round(f.width * scale))) // 2 * 2, max(2, int(round(f.height * scale))) // 2 * 2
                img = f.reformat(width=nw, height=nh, format="rgb24").to_ndarray()
                canvas = np.zeros((height, width, 3), np.uint8)
                y, x = (height - nh) // 2, (width - nw) // 2
                canvas[y : y + nh, x : x + nw] = img
                for p in os_.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
                    out.mux(p)
                n += 1
                if max_frames is not None and n >= max_frames:
                    break
            for p in os_.encode():
                out.mux(p)
    return {"path": str(dst), "frames": n, "fps": float(fps), "size": [height, width], "source": str(src)}


def loop_video(src: Path, dst: Path, frames: int) -> dict:
    """``src`` repeated until ``frames`` frames: packets copied with shifted timestamps (no re-encoding)."""
    import av

    from streamsplat_ns.atomic import atomic_path

    with av.open(str(src)) as inp:
        vs = inp.streams.video[0]
        packets = [p for p in inp.demux(vs) if p.size > 0 and p.pts is not None]
    pts = sorted(p.pts for p in packets)
    step = min(b - a for a, b in zip(pts, pts[1:]) if b > a)
    period = pts[-1] - pts[0] + step
    n = 0
    with av.open(str(src)) as inp, atomic_path(dst) as tmp:
        vs = inp.streams.video[0]
        with av.open(str(tmp), mode="w", format="mp4") as out:
            add = getattr(out, "add_stream_from_template", None)
            os_ = add(vs) if add is not None else out.add_stream(template=vs)
            loop = 0
            while n < frames:
                for p in packets:  # in decode order; a loop starts with the clip's key frame
                    if n >= frames:
                        break
                    q = av.Packet(bytes(p))
                    q.pts, q.dts = p.pts + loop * period, (None if p.dts is None else p.dts + loop * period)
                    q.is_keyframe, q.time_base, q.stream = p.is_keyframe, p.time_base, os_
                    out.mux(q)
                    n += 1
                loop += 1
    return {"path": str(dst), "frames": n}


def build_weights(work: Path, encoders: List[str], tiny: bool) -> Dict[str, str]:
    """Random weights in the files users have (kept in ``work`` and reused)."""
    from streamsplat_ns.api import save_checkpoint
    from streamsplat_ns.depth.depth_anything import DepthAnythingConfig, DepthAnythingV2
    from streamsplat_ns.networks import ModelConfig, StreamSplat

    tag = "tiny" if tiny else "paper"
    paths = {"checkpoint": work / f"streamsplat_{tag}_random.safetensors", "dino": work / f"dinov2_{tag}_random.pth"}
    if not (paths["checkpoint"].is_file() and paths["dino"].is_file()):
        torch.manual_seed(0)
        m = StreamSplat.from_config(ModelConfig.tiny() if tiny else ModelConfig.paper())
        save_checkpoint(m, paths["checkpoint"], include_dino=False)
        torch.save(m.dino.model.state_dict(), paths["dino"])
        del m
    for enc in encoders:
        p = work / f"depth_anything_v2_{enc}.pth"
        paths[enc] = p
        if not p.is_file():
            torch.manual_seed(1)
            d = DepthAnythingV2(DepthAnythingConfig.of(enc))
            last = d.depth_head.scratch.output_conv2[2]
            last.weight.data.mul_(100.0)
            last.bias.data.fill_(1.0)
            torch.save(d.state_dict(), p)
            del d
    return {k: str(v) for k, v in paths.items()}
