"""``streamsplat-reconstruct``: stream a video, a folder of frames, a camera or a stream URL through StreamSplat.

    streamsplat-reconstruct clip.mp4 --checkpoint streamsplat.safetensors --output out/ \
        --dino-weights dinov2_vitb14_reg4_pretrain.pth --depth-checkpoint depth_anything_v2_vits.pth \
        --interp 4 --ply-frames 0 2.5 10

A thin command line over :class:`streamsplat_ns.engine.ReconstructionEngine`; the fastest path is the
default on CUDA (bf16, fused kernels, CUDA-graph step; ``--eager`` for debugging), the same command runs
on CPU (eager, torch rasteriser). Key frames are every ``--frame-step``-th frame and the last one
(:func:`streamsplat_ns.engine.key_frames`). Disparity comes from ``<name>_depth/<stem>_pred.png`` (made by
``streamsplat-depth``) or Depth Anything V2 on the device. Writes, each atomically:

* ``reconstruction.mp4``: the canonical-camera render of every key frame;
* ``interpolated_<k>x.mp4``: ``k`` renders per key interval (k x the key-frame rate), the last source frame last;
* ``ply/<name>_frame<f>.ply``: standard 3DGS files at source frames ``f`` (fractional: in between), in the
  one PLY convention of :mod:`streamsplat_ns.export` (OpenCV frame, opacity >= 1/255);
* ``reconstruction.json``: input, checkpoint, key frames, rates, model size, options, outputs, per-stage times
  (``streamsplat-view OUT`` reads it).

Damaged input (a truncated video or JPEG) stops the run cleanly: the videos of the frames done are
finalised, the manifest says how far it got, and the command exits non-zero.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple

import torch
import tyro

from ..data.errors import DataError
from .common import ModelArgs

log = logging.getLogger(__name__)


@dataclass
class ReconstructArgs(ModelArgs):
    input: tyro.conf.Positional[str]
    """video file (mp4/mov/avi/webm/...), folder of frames (.jpg/.png), camera (/dev/video0) or stream URL"""
    output: Path = Path("outputs/reconstruct")
    frame_step: int = 1
    """key frames every k-th frame, plus the last (the authors' inference uses a gap of 3)"""
    max_frames: Optional[int] = None
    """stop after this many key frames"""
    interp: int = 4
    """renders per key-frame interval in the interpolated video (k x frame rate)"""
    fps: Optional[float] = None
    """key-frame rate of the output videos (default: source rate / frame_step, or 30 for folders)"""
    ply_frames: Tuple[float, ...] = ()
    """source frames to export as .ply (0 = first frame; 2.5 = half-way between frames 2 and 3)"""
    ply_min_opacity: float = 1.0 / 255.0
    """leave out Gaussians fainter than this at the exported time (1/255: the renderer's own cut-off)"""
    ply_frame: Literal["opencv", "world"] = "opencv"
    """'opencv': canonical camera frame (x right, y down, z forward); 'world': the renderer's (y = depth, z up)"""
    video_preset: str = "veryfast"
    """x264 preset of the mp4s (ultrafast ... veryslow): faster presets keep encoding off the critical path"""
    background: float = 0.5
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    save_gaussians: bool = False
    """also keep every interval's Gaussians (fp16, OUT/gaussians/, the streamsplat-live --record format), so
    streamsplat-view OUT opens without reconstructing again"""
    save_gaussians_budget_mb: float = 4096.0
    """size limit of OUT/gaussians/ (oldest intervals are dropped beyond it)"""
    eager: bool = False
    """debugging: fp32, no fused kernels, no CUDA graph, no depth overlap (the test oracle)"""
    render_thread: bool = True
    """CUDA: render on a thread and stream of their own, so each interval's render overlaps the next step
    (ReconstructionEngine.render_async; --no-render-thread: on the main stream, after the step). --eager
    turns it off."""
    progress: bool = True


class ReconstructionStopped(DataError):
    """The input was damaged: outputs of the frames done are finalised; ``summary`` says how far it got."""

    def __init__(self, message: str, summary: dict) -> None:
        super().__init__(message)
        self.summary = summary


def _plan_renders(i0: int, i1: int, step: float) -> List[float]:
    """Local times in [0, 1) of the interpolated video's frames inside [i0, i1]: one every ``step`` source
    frames on a grid from frame 0, so a shorter last interval keeps the video's pace."""
    import math

    m0 = math.ceil(i0 / step - 1e-9)
    out, m = [], m0
    while m * step < i1 - 1e-9:
        out.append((m * step - i0) / (i1 - i0))
        m += 1
    return out


def main(args: ReconstructArgs) -> Dict:
    """Run a reconstruction; returns a summary (outputs, key frames, per-stage ``stats``). Raises
    :class:`ReconstructionStopped` (after finalising the outputs) when the input turned out damaged."""
    from ..api import load_checkpoint
    from ..atomic import clean_stale_temps
    from ..engine import HostFrames, ReconstructionEngine, open_frames
    from ..engine.outputs import close_all, write_manifest
    from ..export import export_ply, ply_name
    from ..inference import InferenceOptions

    t_start = time.perf_counter()
    if args.frame_step < 1 or args.interp < 1:
        raise ValueError("--frame-step and --interp must be >= 1")
    bad = [f for f in args.ply_frames if f < 0]
    if bad:
        raise ValueError(f"--ply-frames {bad}: frames are source frame indices >= 0")
    dev = torch.device(args.device)
    options = InferenceOptions.eager() if args.eager else InferenceOptions.default_for(dev)
    source = open_frames(args.input, frame_step=args.frame_step, max_frames=args.max_frames)
    keys = source.key_indices
    if keys is not None:
        if len(keys) < 2:
            source.close()
            raise ValueError(
                f"{args.input}: need at least two key frames, got {len(keys)} "
                f"({source.num_frames} frames, --frame-step {args.frame_step}, "
                f"--max-frames {args.max_frames})"
            )
        out_of = [f for f in args.ply_frames if f > keys[-1]]
        if out_of:
            source.close()
            raise ValueError(
                f"--ply-frames {out_of} outside [0, {keys[-1]}] (the key frames of {args.input} "
                f"span source frames 0..{keys[-1]})"
            )
    try:
        model = load_checkpoint(args.checkpoint, device=dev, dino_weights=args.dino_weights)
        model._require_decoder()
        disparity = args.disparity_source(args.input, source.first_stem, dev)
        engine = ReconstructionEngine(
            model,
            options=options,
            disparity=disparity,
            device=dev,
            background=args.background,
            overlap_depth=not args.eager,
        )
    except BaseException:
        source.close()
        raise
    t_loaded = time.perf_counter()
    H, W = engine.size
    fps = args.fps or ((source.fps / args.frame_step) if source.fps else 30.0)
    out = Path(args.output)
    (out / "ply").mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out, min_age_s=3600)
    clean_stale_temps(out / "ply", min_age_s=3600)
    name = Path(str(args.input).rstrip("/")).stem or "stream"
    ply_todo = sorted(set(float(f) for f in args.ply_frames))
    manifest = {
        "status": "running",
        "input": str(args.input),
        "input_abs": str(Path(args.input).resolve()) if Path(args.input).exists() else str(args.input),
        "checkpoint": str(args.checkpoint.resolve()),
        "dino_weights": None if args.dino_weights is None else str(args.dino_weights.resolve()),
        "disparity": disparity.describe(),
        "frame_step": args.frame_step,
        "max_frames": args.max_frames,
        "num_source_frames": source.num_frames,
        "key_frames": [],
        "fps": {"source": source.fps, "key_frames": fps, "interpolated": fps * args.interp},
        "model": {"height": H, "width": W, "config": model.config.to_dict()},
        "options": engine.stats["options"],
        "device": str(dev),
        "background": args.background,
        "outputs": {
            "reconstruction": "reconstruction.mp4",
            "interpolated": f"interpolated_{args.interp}x.mp4",
            "ply": [],
            "ply_convention": {
                "frame": args.ply_frame,
                "min_opacity": args.ply_min_opacity,
                "time": "source frame index",
                "name": "<name>_frame<f:09.3f>.ply",
            },
        },
    }
    recorder = None
    if args.save_gaussians:
        from ..live.record import RecordConfig, Recorder

        recorder = Recorder(
            out / "gaussians",
            source=str(args.input),
            model_size=(H, W),
            fps=source.fps,
            config=RecordConfig(budget_mb=args.save_gaussians_budget_mb),
            background=args.background,
            kind="reconstruct",
        )
        manifest["gaussians"] = "gaussians"
    write_manifest(out, manifest)
    recon = engine.open_video(out / "reconstruction.mp4", fps, preset=args.video_preset)
    interp = engine.open_video(out / f"interpolated_{args.interp}x.mp4", fps * args.interp, preset=args.video_preset)
    writers = [recon, interp]
    step = args.frame_step / args.interp  # source frames between interpolated renders
    threaded = args.render_thread and not args.eager
    bar = None
    if args.progress:
        from tqdm import tqdm

        bar = tqdm(total=None if keys is None else len(keys), desc="streamsplat", unit="key frame")
    last = None
    error: Optional[BaseException] = None
    key_done: List[int] = []
    plys: List[dict] = []

    def export_in(iv, final: bool) -> None:
        i0, i1 = iv.frames
        for f in [f for f in ply_todo if i0 <= f < i1 or (final and f == i1)]:
            p = out / "ply" / ply_name(name, f)
            n = export_ply(
                p, iv.gaussians, time=iv.local_time(f), min_opacity=args.ply_min_opacity, frame=args.ply_frame
            )
            plys.append({"file": str(p.relative_to(out)), "frame": f, "gaussians": n})
            ply_todo.remove(f)

    try:
        for iv in engine.stream(source):
            if not key_done:
                key_done.append(iv.frames[0])
            key_done.append(iv.frames[1])
            grid = _plan_renders(iv.frames[0], iv.frames[1], step)
            on_grid = bool(grid) and grid[0] == 0.0
            times = grid if on_grid else [0.0] + grid  # time 0 (the key frame) is always rendered
            # every render of the interval: one batched call
            frames = engine.render_async(iv, times) if threaded else HostFrames(engine.render(iv, times))
            recon.write(frames, [0])
            interp.write(frames, range(0 if on_grid else 1, len(times)))
            export_in(iv, final=False)
            if recorder is not None:
                recorder.add(iv.k, iv.frames, iv.gaussians, iv.t_arrival, block=True)
            last = iv
            if bar is not None:
                bar.update(1 if iv.k else 2)
        if last is not None:  # the last key frame closes both videos
            end = HostFrames(engine.render(last, [1.0]))
            recon.write(end)
            interp.write(end)
            export_in(last, final=True)
    except BaseException as e:  # finalise what we have, then report
        error = e
    finally:
        if bar is not None:
            bar.close()
        err_close = close_all(writers)
        error = error or err_close
        if recorder is not None:
            problem = error or source.error
            recorder.close("error" if problem else "complete", str(problem or ""))
    summary = _summary(out, args, engine, source, recon, interp, key_done, plys)
    # whole command, outputs closed: perf_counter stamps for benchmarks (first output = first interval ready)
    summary["timeline"] = {
        "t_start": t_start,
        "t_weights_loaded": t_loaded,
        "t_first_output": engine.t_first,
        "t_end": time.perf_counter(),
    }
    summary["wall_s_total"] = summary["timeline"]["t_end"] - t_start
    manifest.update(status="complete", key_frames=key_done, stats=summary["stats"])
    manifest["outputs"]["ply"] = plys
    manifest["outputs"]["reconstruction_frames"] = recon.frames
    manifest["outputs"]["interpolated_frames"] = interp.frames
    stopped = source.error if error is None else None
    if error is not None or stopped is not None:
        interrupted = isinstance(error, KeyboardInterrupt)
        manifest.update(
            status="interrupted" if interrupted else "stopped",
            error="interrupted by the user" if interrupted else str(error or stopped),
        )
    if recon.frames == 0:  # nothing finished: no video files were left behind
        manifest["outputs"]["reconstruction"] = manifest["outputs"]["interpolated"] = None
    try:
        write_manifest(out, manifest)
    except BaseException as e:  # noqa: BLE001 - the first error is the one to report
        error = error or e
    if error is not None:
        raise error
    if stopped is not None:
        msg = (
            f"{stopped}\nstopped early: {source.describe_progress()}; finalised {recon.frames} key frames in "
            f"{out / 'reconstruction.mp4'} and {interp.frames} frames in {interp.path} (manifest: "
            f"{out / 'reconstruction.json'})"
        )
        raise ReconstructionStopped(msg, summary)
    if ply_todo:
        log.warning("--ply-frames %s lie after the last key frame %s: not written", ply_todo, key_done[-1:])
    log.info("wrote %s", {k: v for k, v in summary.items() if k != "stats"})
    return summary


def _summary(out, args, engine, source, recon, interp, key_done, plys) -> Dict:
    return {
        "key_frames": len(key_done),
        "key_frame_indices": key_done,
        "reconstruction": out / "reconstruction.mp4",
        "reconstruction_frames": recon.frames,
        "interpolated": interp.path,
        "interpolated_frames": interp.frames,
        "ply": [out / p["file"] for p in plys],
        "manifest": out / "reconstruction.json",
        "source_frames": source.num_frames,
        "decoded_frames": source.decoded,
        "dropped": source.dropped,
        "stats": engine.stats,
    }


def entrypoint() -> None:
    from ..atomic import OutOfSpaceError

    logging.basicConfig(level=logging.INFO)
    try:
        main(tyro.cli(ReconstructArgs))
    except (DataError, OutOfSpaceError, FileNotFoundError, ValueError) as e:
        log.error("%s", e)
        sys.exit(1)
    except KeyboardInterrupt:  # e.g. ending a camera stream: the outputs of the frames done are finalised
        log.error("interrupted: the outputs of the frames done were finalised")
        sys.exit(130)


if __name__ == "__main__":
    entrypoint()
