"""``streamsplat-export``: standard (Inria) 3DGS ``.ply`` files of a run's reconstruction at chosen times.

``ns-export gaussian-splat`` only accepts SplatfactoModel, and 4D Gaussians have no standard file, so
this writes one static ``.ply`` per time (dynamic Gaussians evaluated at that time) that any 3DGS
viewer opens::

    streamsplat-export --load-config RUN/config.yml --frames 0 2.5 10 --clip 0 --output-dir ply/
    streamsplat-export --load-config RUN/config.yml --times 0 0.5 1        # the viewer's normalised time

It reconstructs the clip exactly as the viewer does (``clip_gaussians``: key frames by
``streamsplat_ns.engine.key_frames``, Gaussians by ``ReconstructionEngine.reconstruct_clip``) and writes in
the one PLY convention of :mod:`streamsplat_ns.export` (OpenCV frame, opacity >= 1/255, time = source frame,
``<clip>_frame<f>.ply``), the same files ``streamsplat-reconstruct --ply-frames`` writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional

import tyro

from ..export import PLY_FRAME, PLY_MIN_OPACITY


@dataclass
class Export:
    load_config: Path
    """config.yml of an ns-train run (its latest checkpoint is loaded)."""
    output_dir: Path = Path("streamsplat_ply")
    frames: Optional[List[float]] = None
    """Source frames of the clip to export (0 = first; 2.5 = half-way between frames 2 and 3). Overrides --times."""
    times: List[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])
    """Normalised times in [0, 1] of the clip (the viewer's time slider: 0 = first frame, 1 = last)."""
    clip: int = 0
    """Which display clip (video) of the run's data, as the viewer's "Clip" slider."""
    frame: Literal["world", "opencv"] = PLY_FRAME
    """'opencv': the canonical camera's frame (x right, y down, z forward), how most 3DGS viewers expect a
    scene in front of an identity camera; 'world': the renderer's (x right, y = depth, z up)."""
    min_opacity: float = PLY_MIN_OPACITY
    """Drop Gaussians fainter than this at the exported time (1/255: the renderer's own cut-off)."""
    sh_degree: int = 3
    """f_rest is zero-padded up to this degree (3 = what most viewers expect)."""


def main(args: Export) -> List[Path]:
    from nerfstudio.utils.eval_utils import eval_setup

    from ..export import export_ply, ply_name
    from ..gaussians import DynamicGaussians

    if not args.load_config.is_file():
        raise FileNotFoundError(f"{args.load_config}: no such config.yml (pass the config.yml of an ns-train run)")
    bad = [t for t in args.times if not 0.0 <= t <= 1.0]
    if args.frames is None and bad:
        raise ValueError(f"--times must lie in [0, 1] (0 = first frame, 1 = last), got {bad}")
    _, pipeline, _, step = eval_setup(args.load_config, test_mode="test")
    model = pipeline.model
    names = list(model.clip_names) or ["clip"]
    if not 0 <= args.clip < len(names):
        raise ValueError(
            f"--clip {args.clip} is out of range: this run's display clips are "
            f"{dict(enumerate(names))} (dataparser --num-camera-sequences sets how many)"
        )
    n = model.clip_provider(args.clip, None)[2]
    frames = list(args.frames) if args.frames is not None else [t * (n - 1) for t in args.times]
    out_of = [f for f in frames if not 0.0 <= f <= n - 1]
    if out_of:
        raise ValueError(
            f"--frames {out_of} outside [0, {n - 1}] (clip {args.clip} '{names[args.clip]}' has {n} frames)"
        )
    args.output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for f in frames:
        g, local_t = model.clip_gaussians(args.clip, f / max(n - 1, 1), frame=f)
        path = args.output_dir / ply_name(names[args.clip], f)
        k = export_ply(
            path,
            g,
            time=local_t if isinstance(g, DynamicGaussians) else None,
            min_opacity=args.min_opacity,
            frame=args.frame,
            sh_degree=args.sh_degree,
        )
        print(f"{path}: {k} Gaussians (clip {args.clip} '{names[args.clip]}', frame {f:g} of {n}, step {step})")
        written.append(path)
    return written


def entrypoint() -> None:
    main(tyro.cli(Export))


if __name__ == "__main__":
    entrypoint()
