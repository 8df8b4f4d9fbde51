"""``streamsplat-export``: standard (Inria) 3DGS ``.ply`` files of a run's reconstruction at chosen times.

``ns-export gaussian-splat`` only accepts SplatfactoModel, and 4D Gaussians have no standard file, so
this writes one static ``.ply`` per time (dynamic Gaussians evaluated at that time) that any 3DGS
viewer opens::

    streamsplat-export --load-config RUN/config.yml --times 0 0.5 1 --clip 0 --output-dir ply/

It reconstructs the clip exactly as the viewer does (``StreamSplatModel.clip_gaussians``) and writes
with :func:`streamsplat_ns.export.export_ply`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal

import tyro


@dataclass
class Export:
    load_config: Path
    """config.yml of an ns-train run (its latest checkpoint is loaded)."""
    output_dir: Path = Path("streamsplat_ply")
    times: List[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])
    """Normalised times in [0, 1] of the clip (0 = first frame, 1 = last)."""
    clip: int = 0
    """Which display clip (video) of the run's data, as the viewer's "Clip" slider."""
    frame: Literal["world", "opencv"] = "opencv"
    """'opencv': the canonical camera's frame (x right, y down, z forward), how most 3DGS viewers expect a
    scene in front of an identity camera; 'world': the renderer's (x right, y = depth, z up)."""
    min_opacity: float = 1.0 / 255.0
    """Drop nearly transparent Gaussians (as ns-export does)."""
    sh_degree: int = 3
    """f_rest is zero-padded up to this degree (3 = what most viewers expect)."""


def main(args: Export) -> List[Path]:
    from nerfstudio.utils.eval_utils import eval_setup

    from ..export import export_ply
    from ..gaussians import DynamicGaussians

    if not args.load_config.is_file():
        raise FileNotFoundError(f"{args.load_config}: no such config.yml (pass the config.yml of an ns-train run)")
    bad = [t for t in args.times if not 0.0 <= t <= 1.0]
    if bad:
        raise ValueError(f"--times must lie in [0, 1] (0 = first frame, 1 = last), got {bad}")
    _, pipeline, _, step = eval_setup(args.load_config, test_mode="test")
    model = pipeline.model
    names = list(model.clip_names) or ["clip"]
    if not 0 <= args.clip < len(names):
        raise ValueError(f"--clip {args.clip} is out of range: this run's display clips are "
                         f"{dict(enumerate(names))} (dataparser --num-camera-sequences sets how many)")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", names[args.clip])
    written = []
    for t in args.times:
        g, local_t = model.clip_gaussians(args.clip, t)
        path = args.output_dir / f"{safe}_t{t:.3f}.ply"
        n = export_ply(path, g, time=local_t if isinstance(g, DynamicGaussians) else None,
                       min_opacity=args.min_opacity, frame=args.frame, sh_degree=args.sh_degree)
        print(f"{path}: {n} Gaussians (clip {args.clip} '{names[args.clip]}', t={t:g}, step {step})")
        written.append(path)
    return written


def entrypoint() -> None:
    main(tyro.cli(Export))


if __name__ == "__main__":
    entrypoint()
