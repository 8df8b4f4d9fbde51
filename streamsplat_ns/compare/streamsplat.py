"""StreamSplat on a clip: feed-forward, through the reconstruction engine, timed.

Only the key frames (and their disparity) go in, exactly what the per-scene methods train on. Each pair
of consecutive key frames gives one interval of dynamic Gaussians; the held-out frames of the interval
are rendered at their normalised times, straight at the evaluation size (the canonical orthographic
camera scales with the image), in one batched render per interval. The timed region is everything from
frames in memory to held-out frames rendered; one untimed pass before it takes one-time costs (CUDA
context, kernel choice, graph capture) out of the number.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import torch

from .methods import MethodRun, _sync
from .protocol import Clip


def run_streamsplat(
    clip: Clip,
    checkpoint: Optional[Path],
    device: str,
    dino_weights: Optional[Path] = None,
    fast: bool = True,
    background: float = 0.5,
    warmup: bool = True,
) -> MethodRun:
    run = MethodRun(name="StreamSplat", kind="feed-forward")
    run.notes.append("uses the clip's times")
    if checkpoint is None:
        run.status = "skipped: no --checkpoint given"
        return run
    from ..api import load_checkpoint
    from ..engine import ReconstructionEngine
    from ..inference import InferenceOptions

    model = load_checkpoint(checkpoint, device=device, dino_weights=dino_weights)
    options = InferenceOptions.default_for(torch.device(device)) if fast else InferenceOptions.eager()
    engine = ReconstructionEngine(model, options=options, device=device, background=background)
    H, W = clip.size
    run.details.update(
        checkpoint=str(checkpoint),
        model_size=[int(model.height), int(model.width)],
        options=str(options),
        key_frames=len(clip.key),
    )
    if (int(model.height), int(model.width)) != (H, W):
        run.notes.append(f"inputs resized to the model's {model.height}x{model.width}; rendered at {H}x{W}")
    if clip.depth_source.startswith("zeros"):
        run.notes.append("flat disparity input (--depth zeros)")
    elif clip.depth_seconds is not None:
        run.notes.append(f"disparity by Depth Anything V2 took {clip.depth_seconds:.2f} s more (not in the time)")
    else:
        run.notes.append("disparity precomputed (not in the time)")
    keys = clip.key
    rgb, disp = clip.rgb[keys], clip.disparity[keys]

    def once() -> torch.Tensor:
        intervals = engine.reconstruct_clip(rgb, disp, clip.key_gap, frames=keys)
        out: List[torch.Tensor] = []
        for iv in intervals:
            a, b = iv.frames
            mine = [i for i in clip.held_out if clip.interval_of(i)[:2] == (a, b)]
            if mine:
                out.append(engine.render(iv, [(i - a) / (b - a) for i in mine], height=H, width=W))
        return torch.cat(out)

    with torch.no_grad():
        if warmup:
            once()
        _sync(device)
        t = time.perf_counter()
        preds = once()
        _sync(device)
        run.timings["inference_s"] = time.perf_counter() - t
    run.timings["total_s"] = run.timings["inference_s"]
    if preds.shape[0] != len(clip.held_out):
        raise RuntimeError(f"StreamSplat rendered {preds.shape[0]} frames for {len(clip.held_out)} held-out frames")
    run.preds = preds.float().clamp(0, 1).cpu()
    return run
