"""``streamsplat-reconstruct``: stream a video (or a folder of frames) through StreamSplat.

    streamsplat-reconstruct clip.mp4 --checkpoint streamsplat.safetensors --output out/ \
        --dino-weights dinov2_vitb14_reg4_pretrain.pth --interp 4 --ply-times 0 2.5 10

Frames are decoded one at a time and streamed online (each frame is encoded once; memory stays
constant). Disparity is read from ``<name>_depth/<stem>_pred.png`` (made by ``streamsplat-depth``) or
computed on the fly with Depth Anything V2. Writes:

* ``reconstruction.mp4``: the canonical-camera render of every key frame;
* ``interpolated_<k>x.mp4``: ``k`` renders per key-frame interval (k x the key-frame rate);
* ``ply/t_<time>.ply``: standard 3DGS files at the requested times (in key-frame units).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Literal, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
import tyro

log = logging.getLogger(__name__)


@dataclass
class ReconstructArgs:
    input: tyro.conf.Positional[Path]
    """video file (mp4/mov/avi/webm/...) or folder of frames (.jpg/.png)"""
    checkpoint: Path
    """our .safetensors, or the authors' stage-2 / inference checkpoint"""
    output: Path = Path("outputs/reconstruct")
    dino_weights: Optional[Path] = None
    """local dinov2_vitb14_reg4_pretrain.pth (default: $STREAMSPLAT_DINO_WEIGHTS)"""
    depth: Literal["auto", "file", "compute"] = "auto"
    """'file': read disparity maps; 'compute': Depth Anything V2 now; 'auto': files if present, else compute"""
    depth_dir: Optional[Path] = None
    """folder of <stem>_pred.png maps (default: <parent>/<name>_depth)"""
    depth_checkpoint: Optional[Path] = None
    """depth_anything_v2_<enc>.pth for --depth compute (default: $STREAMSPLAT_DA2_CKPT)"""
    depth_preprocess: Literal["streamsplat", "official"] = "streamsplat"
    frame_step: int = 1
    """use every k-th frame as a key frame (the authors' inference uses a gap of 3)"""
    max_frames: Optional[int] = None
    """stop after this many key frames"""
    interp: int = 4
    """renders per key-frame interval in the interpolated video (k x frame rate)"""
    fps: Optional[float] = None
    """key-frame rate of the output videos (default: source rate / frame_step, or 30 for folders)"""
    ply_times: Tuple[float, ...] = ()
    """times (in key-frame units: 0 = first key frame, 2.5 = half-way between key frames 2 and 3) to export"""
    ply_min_opacity: float = 0.0
    background: float = 0.5
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    bf16: bool = True
    """bf16 transformer weights on CUDA (heads stay fp32)"""
    cuda_graph: bool = False
    """capture the per-frame step in a CUDA graph (fixed shapes, fastest)"""
    fused: bool = False
    """fused Triton kernels on CUDA (add + RMSNorm, MLPs, dynamic heads, DINOv2; same maths, faster)"""
    progress: bool = True


# ------------------------------------------------------------------ frames and disparity
def _frames(path: Path) -> Tuple[Iterator[Tuple[str, np.ndarray]], int, Optional[float]]:
    """(iterator of (stem, RGB uint8 HxWx3 at native size), number of frames, source fps or None)."""
    from streamsplat_ns.data.errors import DataError
    from streamsplat_ns.data.sequences import list_images

    if not path.exists():
        raise FileNotFoundError(f"{path}: no such video file or frame folder")
    if path.is_dir():
        images = list_images(path)
        if not images:
            raise DataError(f"{path}: folder has no frames (.jpg/.png)")

        def it():
            from PIL import Image

            for p in images:
                with Image.open(p) as im:
                    yield p.stem, np.asarray(im.convert("RGB"))
        return it(), len(images), None
    from streamsplat_ns.data.video import VideoFileSequence

    video = VideoFileSequence(path, depth_mode="zeros")
    fps = None
    try:
        import av

        with av.open(str(path)) as c:
            rate = c.streams.video[0].average_rate
            fps = float(rate) if rate else None
    except Exception:  # noqa: BLE001 - fps is cosmetic
        pass

    def it():
        for i, rgb in video.iter_frames():
            yield video.stem(i), rgb
    return it(), video.num_frames, fps


class _Disparity:
    """Disparity of a frame at the model's size, from files or Depth Anything V2."""

    def __init__(self, args: ReconstructArgs, size: Tuple[int, int], first_stem: str) -> None:
        from streamsplat_ns.data.depth_io import default_depth_dir, depth_command, folder_depth_path

        self.size, self.args = size, args
        self.dir = Path(args.depth_dir) if args.depth_dir else default_depth_dir(args.input)
        self.path_of = lambda stem: folder_depth_path(self.dir, stem)
        mode = args.depth
        if mode == "auto":
            mode = "file" if self.path_of(first_stem).is_file() else "compute"
        self.mode = mode
        self.model = None
        if mode == "compute":
            from streamsplat_ns.depth.depth_anything import load_depth_anything

            ckpt = args.depth_checkpoint or os.environ.get("STREAMSPLAT_DA2_CKPT")
            if not ckpt:
                raise FileNotFoundError(
                    f"no disparity maps at {self.path_of(first_stem)} and no Depth Anything V2 checkpoint: pass "
                    f"--depth-checkpoint depth_anything_v2_vitl.pth (or set STREAMSPLAT_DA2_CKPT), or precompute "
                    f"maps with: {depth_command('video', args.input, None, f'--output {self.dir}')}")
            self.model = load_depth_anything(ckpt, device=args.device)
        log.info("disparity: %s", "files in " + str(self.dir) if mode == "file" else "Depth Anything V2 (on the fly)")

    def __call__(self, stem: str, rgb_native: torch.Tensor) -> torch.Tensor:
        """[1, 1, H, W] raw disparity (the model normalises it)."""
        if self.mode == "file":
            from streamsplat_ns.data.depth_io import read_depth_png
            from streamsplat_ns.data.errors import MissingDepthError
            from streamsplat_ns.data.sequences import depth_to_disparity

            p = self.path_of(stem)
            if not p.is_file():
                raise MissingDepthError(p, f"streamsplat-depth --dataset video --data {self.args.input}")
            d = depth_to_disparity(read_depth_png(p), self.size)
            return torch.from_numpy(np.ascontiguousarray(d)).float()[None, None]
        from streamsplat_ns.depth.depth_anything import predict_disparity

        d = predict_disparity(self.model, rgb_native, preprocess=self.args.depth_preprocess, out_size=self.size)
        return d[:, None].float()


# ------------------------------------------------------------------ video writing
class _VideoWriter:
    def __init__(self, path: Path, fps: float, height: int, width: int) -> None:
        import av
        from fractions import Fraction

        self.path = path
        self.container = av.open(str(path), mode="w")
        rate = Fraction(fps).limit_denominator(1000)
        for codec in ("libx264", "h264", "mpeg4"):
            try:
                self.stream = self.container.add_stream(codec, rate=rate)
                break
            except Exception:  # noqa: BLE001 - codec availability depends on the FFmpeg build
                continue
        else:  # pragma: no cover
            raise RuntimeError(f"{path}: no mp4 video encoder available in this FFmpeg build")
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        self.frames = 0

    def write(self, rgb: torch.Tensor) -> None:
        import av

        arr = (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
        for pkt in self.stream.encode(frame):
            self.container.mux(pkt)
        self.frames += 1

    def close(self) -> None:
        for pkt in self.stream.encode():
            self.container.mux(pkt)
        self.container.close()


# ------------------------------------------------------------------ main
def main(args: ReconstructArgs) -> dict:
    from streamsplat_ns.api import load_checkpoint
    from streamsplat_ns.export import export_ply
    from streamsplat_ns.streaming import StreamingSession

    if args.frame_step < 1 or args.interp < 1:
        raise ValueError("--frame-step and --interp must be >= 1")
    dev = torch.device(args.device)
    dtype = torch.bfloat16 if (args.bf16 and dev.type == "cuda") else None
    model = load_checkpoint(args.checkpoint, device=dev, dino_weights=args.dino_weights, dtype=dtype,
                            fused=args.fused and dtype is not None)
    model._require_decoder()
    H, W = model.height, model.width
    frames, n_total, src_fps = _frames(Path(args.input))
    n_key = (n_total + args.frame_step - 1) // args.frame_step
    if args.max_frames is not None:
        n_key = min(n_key, args.max_frames)
    if n_key < 2:
        raise ValueError(f"{args.input}: need at least two key frames, got {n_key}")
    fps = args.fps or ((src_fps / args.frame_step) if src_fps else 30.0)
    out = Path(args.output)
    (out / "ply").mkdir(parents=True, exist_ok=True)
    recon = _VideoWriter(out / "reconstruction.mp4", fps, H, W)
    interp = _VideoWriter(out / f"interpolated_{args.interp}x.mp4", fps * args.interp, H, W)
    ply_times = sorted(float(t) for t in args.ply_times)
    bad = [t for t in ply_times if t < 0 or t > n_key - 1]
    if bad:
        raise ValueError(f"--ply-times {bad} outside [0, {n_key - 1}] (key-frame units)")
    session = StreamingSession(model, cuda_graph=args.cuda_graph)
    depth = None
    written: List[Path] = []
    bar = None
    if args.progress:
        from tqdm import tqdm

        bar = tqdm(total=n_key, desc="streamsplat", unit="frame")
    k = -1
    kw = dict(background=args.background)
    for idx, (stem, rgb_np) in enumerate(frames):
        if idx % args.frame_step:
            continue
        k += 1
        if k >= n_key:
            break
        rgb_native = torch.from_numpy(np.array(rgb_np)).to(dev).permute(2, 0, 1)[None].float() / 255.0
        if depth is None:
            depth = _Disparity(args, (H, W), stem)
        disp = depth(stem, rgb_native).to(dev)
        rgb = F.interpolate(rgb_native, size=(H, W), mode="bilinear", align_corners=False, antialias=True)
        g = session.push(rgb, disp)
        if g is not None:
            j = k - 1  # interval [j, k]
            times = torch.arange(args.interp + 1, device=dev, dtype=torch.float32) / args.interp
            r = session.render(times, **kw).rgb[0]  # [T, H, W, 3]
            if j == 0:
                recon.write(r[0])
            recon.write(r[-1])
            for t in range(args.interp if k < n_key - 1 else args.interp + 1):
                interp.write(r[t])
            for t in ply_times:
                if j <= t <= k and not any(p.name == f"t_{t:09.3f}.ply" for p in written):
                    p = out / "ply" / f"t_{t:09.3f}.ply"
                    export_ply(p, g, time=t - j, min_opacity=args.ply_min_opacity)
                    written.append(p)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    recon.close()
    interp.close()
    summary = {"key_frames": k + 1, "reconstruction": out / "reconstruction.mp4", "reconstruction_frames": recon.frames,
               "interpolated": interp.path, "interpolated_frames": interp.frames, "ply": written}
    log.info("wrote %s", summary)
    return summary


def entrypoint() -> None:
    logging.basicConfig(level=logging.INFO)
    main(tyro.cli(ReconstructArgs))


if __name__ == "__main__":
    entrypoint()
