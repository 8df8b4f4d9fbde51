"""``streamsplat-view OUT``: explore any reconstruction in the browser, no training run needed.

    streamsplat-view outputs/reconstruct                 # a streamsplat-reconstruct --output folder
    streamsplat-view session/                            # a streamsplat-live --record folder
    streamsplat-view OUT --export-frame 12.5 --output f.ply          # one PLY, no viewer
    streamsplat-view OUT --render-path sweep.json --output sweep.mp4 # a camera path to mp4, no viewer

The viewer has a "Time (frame)" slider over the whole reconstruction (source frame indices), Play/Pause,
orbit (left drag) and zoom (scroll, "Ortho zoom"), and "Export PLY" at the current time. Camera paths
are the viewer's JSON format (``streamsplat-camera-path sweep|orbit`` writes them; ``render_time`` in
[0, 1] spans the reconstruction); ``ns-render`` needs a training config, this does not.

A reconstruct folder without saved Gaussians is reconstructed once more from its manifest (input,
checkpoint, disparity) and saved in ``OUT/gaussians/`` for next time.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import tyro

from .common import hand_over, viewer_logging, wait_until_stopped

log = logging.getLogger(__name__)


@dataclass
class ViewArgs:
    out: tyro.conf.Positional[Path]
    """a streamsplat-reconstruct --output folder or a streamsplat-live --record folder"""
    host: str = "127.0.0.1"
    port: int = 7007
    max_resolution: Optional[int] = None
    """long side of the viewer image (default: 720 on CUDA, 2 x model size (<= 256) on CPU)"""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    export_frame: Optional[float] = None
    """write the Gaussians at this source frame (fractional allowed) to --output (.ply) and exit"""
    render_path: Optional[Path] = None
    """render this camera-path JSON (viewer / streamsplat-camera-path format) to --output (.mp4) and exit"""
    output: Optional[Path] = None
    rebuild_budget_mb: float = 4096.0
    """size limit of OUT/gaussians/ when a reconstruct folder has to be reconstructed again"""


def render_camera_path(opened, path_json: Path, output: Path, device: torch.device) -> int:
    """Every camera of the path at its ``render_time`` -> mp4 (atomic). Returns the number of frames."""
    from streamsplat_ns.engine import HostFrames, VideoWriter
    from streamsplat_ns.live.state import IntervalWindow
    from streamsplat_ns.live.viewer import CameraView, IntervalRenderer

    try:
        doc = json.loads(Path(path_json).read_text())
        cams = doc["camera_path"]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(
            f"{path_json}: not a camera-path JSON with a 'camera_path' list ({e}); write one with "
            f"streamsplat-camera-path sweep|orbit or the viewer's render panel"
        ) from e
    if not cams:
        raise ValueError(f"{path_json}: the camera path is empty")
    hm, wm = opened.model_size
    H = int(doc.get("render_height") or 2 * hm)
    W = int(doc.get("render_width") or 2 * wm)
    H, W = H + H % 2, W + W % 2  # H.264 needs even sizes
    fps = float(doc.get("fps") or (len(cams) / float(doc.get("seconds") or 1.0)))
    renderer = IntervalRenderer(opened.model_size, device, background=opened.background, max_resolution=max(H, W))
    items = opened.window.snapshot()
    lo, hi = opened.window.range()
    with VideoWriter(output, fps, H, W) as writer:
        for cam in cams:
            c2w = torch.tensor(cam["camera_to_world"], dtype=torch.float32).reshape(4, 4)[:3]
            t = float(cam.get("render_time", 0.0) or 0.0)
            item, local = IntervalWindow.pick(items, lo + min(max(t, 0.0), 1.0) * (hi - lo))
            img = renderer.render(item, local, CameraView(c2w, math.radians(float(cam.get("fov", 50.0))), W / H))
            writer.write(HostFrames(torch.from_numpy(img)[None].float() / 255.0))
    return len(cams)


def main(args: ViewArgs, *, ready=None, viewer_out: Optional[list] = None, stop=None):
    from streamsplat_ns.live.replay import open_output
    from streamsplat_ns.live.state import IntervalWindow
    from streamsplat_ns.live.viewer import LiveViewer, ViewerOptions

    dev = torch.device(args.device)
    opened = open_output(args.out, dev, rebuild_budget_mb=args.rebuild_budget_mb)
    lo, hi = opened.window.range()
    if args.export_frame is not None or args.render_path is not None:
        if args.output is None:
            raise ValueError("--export-frame / --render-path need --output (a .ply / .mp4 path)")
        if args.export_frame is not None:
            from streamsplat_ns.export import export_ply

            if not lo <= args.export_frame <= hi:
                raise ValueError(
                    f"--export-frame {args.export_frame} is outside the reconstruction (frames {lo:g}..{hi:g})"
                )
            item, local = IntervalWindow.pick(opened.window.snapshot(), args.export_frame)
            n = export_ply(args.output, item.gaussians, time=local)
            print(f"wrote {args.output} ({n} Gaussians at frame {args.export_frame:g})")
        else:
            n = render_camera_path(opened, args.render_path, args.output, dev)
            print(f"wrote {args.output} ({n} frames)")
        return opened
    viewer = LiveViewer(
        opened.window,
        model_size=opened.model_size,
        device=dev,
        fps=opened.fps,
        opts=ViewerOptions(
            host=args.host,
            port=args.port,
            max_resolution=args.max_resolution,
            background=opened.background,
            export_dir=Path(args.out) / "exports",
            export_name=Path(str(args.out).rstrip("/")).name or "view",
            title="StreamSplat view",
        ),
        follow_live=False,
        source_label=opened.label,
    )
    viewer.set_time(lo)
    print(f"streamsplat-view: {opened.label}\nstreamsplat-view: viewer at {viewer.url} (Ctrl-C to quit)", flush=True)
    hand_over(viewer, viewer_out, ready)
    try:
        wait_until_stopped(stop or threading.Event())
    finally:
        viewer.close()
    return opened


def entrypoint() -> None:
    viewer_logging()
    try:
        main(tyro.cli(ViewArgs))
    except (FileNotFoundError, ValueError) as e:
        print(f"streamsplat-view: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    entrypoint()
