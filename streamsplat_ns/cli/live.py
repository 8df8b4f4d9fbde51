"""``streamsplat-live``: watch a video, a camera or a stream become dynamic 3D in the browser as it streams.

    streamsplat-live clip.mp4 --checkpoint streamsplat.safetensors --depth-checkpoint depth_anything_v2_vits.pth
    streamsplat-live /dev/video0 --checkpoint ... --record session/      # then: streamsplat-view session/
    streamsplat-live rtsp://camera.local/stream --checkpoint ... --host 0.0.0.0

Open the printed URL. The panel shows frames/s, the latency from a frame's arrival to the image sent to
the browser, and how many source frames were dropped because the engine could not keep up (live sources
are never throttled: the newest frames win). "Time" scrubs the last ``--window`` key-frame intervals,
"Play" loops them, "Follow live" returns to the newest. A file plays at its frame rate unless
``--as-fast-as-possible`` (then nothing is dropped). With ``--record OUT`` every interval's Gaussians are kept
(fp16, near-transparent ones dropped, at most ``--record-budget-mb``) and ``streamsplat-view OUT`` reopens them.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import torch
import tyro

from .common import ModelArgs, hand_over, viewer_logging, wait_until_stopped

log = logging.getLogger(__name__)


@dataclass
class LiveArgs(ModelArgs):
    source: tyro.conf.Positional[str]
    """video file, folder of frames, camera device (/dev/video0) or stream URL (rtsp://, http://, ...)"""
    window: int = 30
    """key-frame intervals the time slider spans (the newest ones; memory is bounded by it)"""
    frame_step: int = 1
    """use every k-th source frame as a key frame"""
    max_frames: Optional[int] = None
    """stop after this many key frames"""
    as_fast_as_possible: bool = False
    """files and folders: decode as fast as the engine takes frames (nothing dropped) instead of in real time"""
    fps: Optional[float] = None
    """playback rate of a file or folder (default: the file's rate; 30 for folders)"""
    queue: int = 1
    """frames that may wait for the engine; a live source drops the oldest beyond it (1 = newest only)"""
    record: Optional[Path] = None
    """keep every interval's Gaussians in this folder (reopen with streamsplat-view)"""
    record_budget_mb: float = 2048.0
    """size limit of the recording"""
    record_policy: Literal["drop-oldest", "stop"] = "drop-oldest"
    """at the budget: delete the oldest intervals, or stop recording (a message says which)"""
    record_min_opacity: float = 1.0 / 255
    """Gaussians below this opacity throughout their interval are not recorded"""
    host: str = "127.0.0.1"
    """viewer bind address (0.0.0.0: reachable from the network)"""
    port: int = 7007
    max_resolution: Optional[int] = None
    """long side of the viewer image (default: 720 on CUDA, 2 x model size (<= 256) on CPU)"""
    jpeg_quality: int = 80
    background: float = 0.5
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    eager: bool = False
    """fp32 without fused kernels or CUDA graphs (debugging); default: the fastest path on CUDA"""
    wait_for_viewer: bool = False
    """start reading the source only once a browser is connected (a file then plays from its first frame)"""
    exit_when_done: bool = False
    """exit when the source ends (default: keep the viewer open on the last window until Ctrl-C)"""
    allow_random_dino: bool = False
    """tests and benchmarks only: run a checkpoint without DINOv2 weights"""


def open_source(args: LiveArgs):
    from streamsplat_ns.engine import open_frames

    realtime = not args.as_fast_as_possible
    return open_frames(
        args.source,
        frame_step=args.frame_step,
        max_frames=args.max_frames,
        realtime=realtime,
        fps=args.fps,
        queue_size=max(1, args.queue),
        drop_late=realtime,
    )


def build_engine(args: LiveArgs, model, source, *, sync_timings: bool = False):
    """Disparity + engine for live use: no depth look-ahead (it would make frame N wait for frame N + 1 to
    arrive) and one prefetched frame (a lagging engine then drops old frames at the source instead of
    working through a backlog). ``sync_timings``: true depth/model-done stamps (benchmarks)."""
    from streamsplat_ns.engine import ReconstructionEngine
    from streamsplat_ns.inference import InferenceOptions

    dev = torch.device(args.device)
    first = getattr(source, "first_stem", None)  # a camera or stream has no files: depth is computed
    options = InferenceOptions.eager() if args.eager else InferenceOptions.default_for(dev)
    disparity = args.disparity_source(args.source, first, dev)
    return ReconstructionEngine(
        model,
        options=options,
        disparity=disparity,
        device=dev,
        background=args.background,
        lookahead=0,
        prefetch_depth=1,
        sync_timings=sync_timings,
    )


def warm_up(engine, source) -> Optional[float]:
    """Warm the engine on synthetic frames of the source's size before the source starts playing (kernel
    choices, Triton compilation, CUDA graphs): a real-time source then loses no frames to first-frame costs.
    A camera or stream whose size is only known from its first frame is not warmed (None); its first
    frames may then be dropped, and the session's message says how many."""
    size = getattr(source, "size", None)
    if size is None or engine.device.type != "cuda":  # on CPU the first frame costs no more than the others
        return None
    print(f"streamsplat-live: warming up on {size[1]}x{size[0]} frames (kernel choices, CUDA graphs)", flush=True)
    return engine.warm_up(int(size[0]), int(size[1]), times=[0.5])


def _session(args: LiveArgs, engine, dev, fps: float, label: str):
    from streamsplat_ns.live.record import RecordConfig
    from streamsplat_ns.live.session import LiveSession
    from streamsplat_ns.live.viewer import ViewerOptions

    return LiveSession(
        model_size=engine.size,
        device=dev,
        window=args.window,
        fps=fps,
        viewer=ViewerOptions(
            host=args.host,
            port=args.port,
            max_resolution=args.max_resolution,
            jpeg_quality=args.jpeg_quality,
            background=args.background,
            export_dir=Path(args.record or ".") / "exports",
            export_name=Path(str(args.source).rstrip("/")).stem or "live",
        ),
        record=None if args.record is None else Path(args.record),
        source_label=label,
        background=args.background,
        record_config=RecordConfig(
            budget_mb=args.record_budget_mb, policy=args.record_policy, min_opacity=args.record_min_opacity
        ),
    )


def main(args: LiveArgs, *, model=None, ready: Optional[threading.Event] = None, session_out: Optional[list] = None):
    """Run a live session; returns its :class:`~streamsplat_ns.live.session.SessionResult`.

    ``model`` skips loading the checkpoint (tests); ``session_out`` receives the session once the viewer is
    up (tests drive its viewer); ``ready`` is set at that moment."""
    if args.window < 1 or args.frame_step < 1:
        raise ValueError("--window and --frame-step must be >= 1")
    dev = torch.device(args.device)
    if args.record is not None and any(Path(args.record, "intervals").glob("*")):
        raise FileExistsError(
            f"{args.record}: already holds a recording (intervals/ is not empty); choose a new "
            f"--record folder or delete the old one"
        )
    source = open_source(args)  # fails early on a missing file / unreachable camera, before loading weights
    try:
        if model is None:
            from streamsplat_ns.api import load_checkpoint

            model = load_checkpoint(
                args.checkpoint, device=dev, dino_weights=args.dino_weights, allow_random_dino=args.allow_random_dino
            )
        engine = build_engine(args, model, source)
        warm_up(engine, source)
        fps = source.fps or 30.0
        label = f"{args.source} ({'real time' if not args.as_fast_as_possible else 'as fast as possible'})"
        session = _session(args, engine, dev, fps, label)
    except BaseException:
        source.close()
        raise
    print(f"streamsplat-live: viewer at {session.viewer.url}", flush=True)
    hand_over(session, session_out, ready)
    try:
        if args.wait_for_viewer:
            print("streamsplat-live: waiting for a browser to connect", flush=True)
            while not session.viewer.server.get_clients() and not session.stop_event.wait(0.1):
                pass
        res = session.run(engine.stream(source), source=source)
        print(f"streamsplat-live: {res.message}", file=sys.stderr if not res.ok else sys.stdout, flush=True)
        if not args.exit_when_done and "stopped by the user" not in res.message:
            print("streamsplat-live: the viewer stays open on the last window; Ctrl-C to quit", flush=True)
            wait_until_stopped(session.stop_event)
    finally:
        session.close()
    return res


def entrypoint() -> None:
    viewer_logging()
    from streamsplat_ns.data.errors import DataError

    try:
        res = main(tyro.cli(LiveArgs))
    except (FileNotFoundError, FileExistsError, DataError, ValueError) as e:  # bad input: named, with the fix
        print(f"streamsplat-live: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(0 if res.ok else 1)


if __name__ == "__main__":
    entrypoint()
