"""``streamsplat-camera-path``: camera-path JSONs for ``ns-render camera-path`` of a StreamSplat run.

nerfstudio's own spiral / interpolate paths drop times or reject our DataManager, and hand-made paths
need poses that StreamSplat's orthographic mapping understands. This writes the viewer's JSON format
(perspective cameras, vertical fov, ``render_time`` per frame) with poses from
``rendering.camera.canonical_viewer_c2w``, so frame k is exactly the canonical view (sweep) or a
view orbiting the scene's pivot (orbit)::

    streamsplat-camera-path sweep --load-config RUN/config.yml --output sweep.json
    streamsplat-camera-path orbit --load-config RUN/config.yml --time 0.5 --output orbit.json
    ns-render camera-path --load-config RUN/config.yml --camera-path-filename sweep.json --output-path sweep.mp4

``ns-render`` cannot pass a clip; set ``STREAMSPLAT_CLIP=<index>`` in its environment (default 0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple, Union

import tyro
from typing_extensions import Annotated


@dataclass
class _Common:
    output: Path = Path("camera_path.json")
    """Where to write the camera path JSON."""
    load_config: Optional[Path] = None
    """A run's config.yml: the render size defaults to the model's resolution times --scale."""
    width: Optional[int] = None
    """Render width in pixels (overrides --load-config; even, for H.264)."""
    height: Optional[int] = None
    """Render height in pixels."""
    scale: float = 2.0
    """Render size = model resolution x scale (with --load-config)."""
    frames: int = 24
    seconds: float = 2.0
    """Video length; ns-render's fps = frames / seconds."""
    fov: float = 50.0
    """Vertical field of view in degrees of the (perspective) path cameras; it only sets the distance to
    the pivot, the rendering stays orthographic with the canonical framing."""
    clip: Optional[int] = None
    """Only printed into the suggested ns-render command (as STREAMSPLAT_CLIP)."""


@dataclass
class Sweep(_Common):
    """Time sweep at the canonical pose: render_time goes from --t-start to --t-end."""

    t_start: float = 0.0
    t_end: float = 1.0


@dataclass
class Orbit(_Common):
    """Novel views around the scene's pivot at one time: yaw = A sin(phase), pitch = B cos(phase)."""

    time: float = 0.0
    """render_time of every frame, in [0, 1]."""
    yaw: float = 25.0
    """Yaw amplitude A in degrees (about the world up axis, z)."""
    pitch: float = 10.0
    """Pitch amplitude B in degrees."""
    full_circle: bool = False
    """Turn a full 360 degrees in yaw instead (shows the back of the 2.5D layers)."""


def _model_size(config: Path) -> Tuple[int, int]:
    import yaml

    if not config.is_file():
        raise FileNotFoundError(f"{config}: no such config.yml (pass the config.yml of an ns-train run)")
    cfg = yaml.load(config.read_text(), Loader=yaml.Loader)
    try:
        enc = cfg.pipeline.model.encoder
        return int(enc.image_height), int(enc.image_width)
    except AttributeError as e:
        raise ValueError(f"{config}: not a StreamSplat run config (no pipeline.model.encoder): {e}") from e


def _even(x: float) -> int:
    return max(2, int(round(x / 2.0)) * 2)


def render_size(args: _Common) -> Tuple[int, int]:
    if args.load_config is not None:
        h, w = _model_size(args.load_config)
        h, w = _even(h * args.scale), _even(w * args.scale)
    else:
        h, w = 288, 512
    return (args.height or h), (args.width or w)


def path_frames(args: Union[Sweep, Orbit]) -> List[dict]:
    """One viewer-format camera per frame (camera_to_world: row-major 4x4 OpenGL camera-to-world)."""
    from ..rendering.camera import canonical_viewer_c2w, orbit_angles

    n = max(1, args.frames)
    frames = []
    for k in range(n):
        if isinstance(args, Sweep):
            t = args.t_start + (args.t_end - args.t_start) * (k / max(n - 1, 1))
            yaw = pitch = 0.0
        else:
            t = args.time
            yaw, pitch = orbit_angles(k, n, args.yaw, args.pitch, args.full_circle)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"render_time {t} is outside [0, 1] (check --t-start/--t-end/--time)")
        c2w = canonical_viewer_c2w(args.fov, yaw, pitch)
        mat = c2w.tolist() + [[0.0, 0.0, 0.0, 1.0]]
        frames.append({"camera_to_world": [v for row in mat for v in row], "fov": args.fov, "render_time": t})
    return frames


def make_camera_path(args: Union[Sweep, Orbit]) -> dict:
    h, w = render_size(args)
    frames = path_frames(args)
    for f in frames:
        f["aspect"] = w / h
    return {
        "camera_type": "perspective",
        "render_height": h,
        "render_width": w,
        "seconds": args.seconds,
        "fps": len(frames) / args.seconds,
        "camera_path": frames,
        "keyframes": [],
        "crop": None,
        "streamsplat": {"kind": type(args).__name__.lower(), "clip": args.clip},
    }


def main(args: Union[Sweep, Orbit]) -> dict:
    path = make_camera_path(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(path, indent=1))
    env = f"STREAMSPLAT_CLIP={args.clip} " if args.clip is not None else ""
    cfg = args.load_config or "RUN/config.yml"
    print(
        f"wrote {args.output} ({len(path['camera_path'])} frames, {path['render_width']}x{path['render_height']})\n"
        f"render it: {env}ns-render camera-path --load-config {cfg} --camera-path-filename {args.output} "
        f"--output-path {args.output.with_suffix('.mp4')}"
    )
    return path


def entrypoint() -> None:
    main(
        tyro.cli(
            Union[
                Annotated[Sweep, tyro.conf.subcommand("sweep")],  # type: ignore[arg-type]
                Annotated[Orbit, tyro.conf.subcommand("orbit")],
            ]
        )
    )


if __name__ == "__main__":
    entrypoint()
