"""``streamsplat-compare``: StreamSplat, per-scene nerfstudio methods and two baselines on the same frames.

One clip, one protocol (:mod:`.protocol`), one table. See docs/compare.md.
"""

from __future__ import annotations

import logging
import shlex
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple

import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass
class CompareConfig:
    data: Optional[Path] = None
    """dataset root, video file or frame folder (default: the embedded synthetic sample)"""
    dataparser: Literal["auto", "davis", "video", "youtube-vos", "co3d", "re10k"] = "auto"
    """how to read --data (auto: a DAVIS root -> davis, else a video file / frame folder -> video)"""
    sequence: Optional[str] = None
    """sequence name inside a dataset (default: the split's first)"""
    split: str = "val"
    start: int = 0
    """first frame of the clip"""
    max_frames: Optional[int] = 21
    """clip length in frames (None: the whole sequence)"""
    key_gap: int = 5
    """a key frame every this many frames (what every method sees); the rest are held out"""
    image_size: Optional[Tuple[int, int]] = None
    """evaluation size H W (default: the checkpoint's, else 288 512)"""
    checkpoint: Optional[Path] = None
    """StreamSplat weights (ours .safetensors, the authors', or 'demo' for the packaged demo weights); without
    it StreamSplat's row says skipped"""
    dino_weights: Optional[Path] = None
    """local dinov2_vitb14_reg4_pretrain.pth if the checkpoint needs it"""
    fast: bool = True
    """StreamSplat through the engine's fastest options on CUDA (bf16, fused, CUDA graph); False: eager fp32"""
    methods: Tuple[str, ...] = ("splatfacto", "nerfacto", "dnerf")
    """nerfstudio methods to train per scene (any name of nerfstudio's method_configs)"""
    steps: Tuple[str, ...] = ()
    """training steps: one number for all, or METHOD=N entries (default: 2000 each)"""
    default_steps: int = 2000
    max_train_seconds: Optional[float] = None
    """stop each method's optimisation after this many seconds (equal-time comparison; bounds a GPU run)"""
    scale_schedules: bool = True
    """compress splatfacto's 30k-step schedules (resolution warm-up, densification, SH) into --steps"""
    rays_per_batch: Optional[int] = None
    """override the ray-based methods' training rays per batch"""
    tiny: bool = False
    """CPU smoke tests: shrink the nerfstudio models (their numbers are then not the methods')"""
    depth: Literal["auto", "file", "compute", "zeros"] = "auto"
    """disparity for StreamSplat (and splatfacto's seed points): files, Depth Anything V2, or flat"""
    depth_checkpoint: Optional[Path] = None
    """depth_anything_v2_<enc>.pth for --depth compute (default: $STREAMSPLAT_DA2_CKPT)"""
    lpips_vgg: Optional[Path] = None
    """torchvision vgg16-397923af.pth (LPIPS-VGG; default $STREAMSPLAT_LPIPS_VGG; skipped with a note if absent)"""
    lpips_lin: Optional[Path] = None
    """the lpips package's weights/v0.1/vgg.pth (default $STREAMSPLAT_LPIPS_LIN)"""
    baselines: bool = True
    output: Path = Path("outputs/compare")
    cache_dir: Optional[Path] = None
    """where the dataparsers put extracted frames / the sample (default ~/.cache/streamsplat_ns)"""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    grid_frames: int = 8
    seed: int = 42


def steps_for(cfg: CompareConfig) -> Dict[str, int]:
    out = {m: cfg.default_steps for m in cfg.methods}
    for entry in cfg.steps:
        if "=" in entry:
            k, v = entry.split("=", 1)
            if k not in out:
                raise ValueError(f"--steps {entry}: {k!r} is not in --methods {' '.join(cfg.methods)}")
            out[k] = int(v)
        else:
            out = {m: int(entry) for m in out}
    bad = {k: v for k, v in out.items() if v < 1}
    if bad:
        raise ValueError(f"--steps must be >= 1, got {bad}")
    return out


def _lpips(cfg: CompareConfig):
    import os

    from ..lpips import LPIPSVGG

    vgg = cfg.lpips_vgg or os.environ.get("STREAMSPLAT_LPIPS_VGG")
    lin = cfg.lpips_lin or os.environ.get("STREAMSPLAT_LPIPS_LIN")
    if not vgg or not lin or not Path(vgg).is_file() or not Path(lin).is_file():
        note = (
            "LPIPS skipped: no local LPIPS-VGG weights (pass --lpips-vgg vgg16-397923af.pth and --lpips-lin "
            "lpips/weights/v0.1/vgg.pth; nothing is downloaded)"
        )
        print(note)
        return None, note
    return LPIPSVGG.from_files(Path(vgg), Path(lin)).to(cfg.device), None


def run_comparison(cfg: CompareConfig, argv: Optional[List[str]] = None) -> dict:
    from .methods import MethodRun, run_nerfstudio_method
    from .nsdata import seed_points, write_dataset
    from .protocol import baseline_frames, frame_metrics, group_metrics, load_clip
    from .report import grid_frames, grid_scale, safe_name, summary_line, to_row, write_grid, write_table
    from .streamsplat import run_streamsplat

    steps = steps_for(cfg)
    checkpoint = resolve_checkpoint(cfg.checkpoint)
    size = cfg.image_size
    if checkpoint is not None:  # load once now: a bad checkpoint fails before any work, naming the file
        from ..api import load_checkpoint

        m = load_checkpoint(checkpoint, device="cpu", dino_weights=cfg.dino_weights)
        m._require_decoder()
        size = size or (int(m.height), int(m.width))
        del m
    size = tuple(size or (288, 512))
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    clip = load_clip(
        cfg.data,
        cfg.dataparser,
        cfg.sequence,
        cfg.split,
        size,
        cfg.start,
        cfg.max_frames,
        cfg.key_gap,
        cfg.depth,
        cfg.depth_checkpoint,
        cfg.cache_dir,
        cfg.device,
    )
    print(
        f"clip {clip.name}: {clip.num_frames} frames at {size[0]}x{size[1]}, key frames {clip.key}, "
        f"{len(clip.middle)} middle frames; disparity: {clip.depth_source}"
    )
    lpips_net, lpips_note = _lpips(cfg)
    gt = clip.frames_hwc(clip.held_out)
    command = "streamsplat-compare " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    config.update(
        command=command,
        steps_per_method=steps,
        torch=torch.__version__,
        device_name=(torch.cuda.get_device_name() if str(cfg.device).startswith("cuda") else "cpu"),
    )

    # the clip as a nerfstudio dataset: key frames to train on, held-out frames to render
    frames_u8 = (clip.rgb.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
    datasets = {}
    need = {"ortho"} | ({"pinhole"} if any(m.startswith("splatfacto") for m in cfg.methods) else set())
    for cam in sorted(need):
        k0 = clip.key[0]
        seed = seed_points(frames_u8[k0], clip.disparity[k0, 0].numpy(), cam)
        datasets[cam] = write_dataset(
            out / "dataset", frames_u8, clip.times.tolist(), clip.key, clip.held_out, cam, seed
        )

    order = ["StreamSplat", *cfg.methods]
    rows: Dict[str, dict] = {}
    frames_for_grid, scale = grid_frames(clip, cfg.grid_frames), grid_scale(size)
    paths: Dict[str, Path] = {}

    def score(r: MethodRun) -> None:
        """Metrics and grid of one finished method; the table is rewritten after every method, so an
        interrupted run still leaves the rows it finished."""
        metrics: Dict[str, Optional[float]] = {}
        if r.preds is not None:
            if tuple(r.preds.shape) != tuple(gt.shape):
                r.status = f"failed: rendered {tuple(r.preds.shape)}, expected {tuple(gt.shape)}"
            else:
                pf = frame_metrics(r.preds, gt, lpips_net)
                metrics = group_metrics(clip, pf, clip.held_out, skip_key=r.kind == "baseline")
                r.details["grid"] = str(
                    write_grid(out / "grids" / f"{safe_name(r.name)}.png", clip, r, frames_for_grid, scale)
                )
        rows[r.name] = to_row(r, metrics)
        print(summary_line(rows[r.name]))
        ordered = [rows[n] for n in order if n in rows] + [v for k, v in rows.items() if k not in order]
        paths.update(write_table(out, clip, ordered, lpips_note, config))

    if cfg.baselines:
        for kind, label in (("nearest", "nearest key frame"), ("blend", "linear blend")):
            r = MethodRun(name=f"baseline: {label}", kind="baseline")
            t = time.perf_counter()
            r.preds = baseline_frames(clip, kind)
            r.timings["compute_s"] = r.timings["total_s"] = time.perf_counter() - t
            r.notes.append(
                "repeats the nearer key frame" if kind == "nearest" else "cross-fades the two key frames by time"
            )
            score(r)
    try:
        ss = run_streamsplat(clip, checkpoint, cfg.device, cfg.dino_weights, cfg.fast)
    except Exception as e:  # noqa: BLE001 - report it in the table, keep the other methods
        log.error("StreamSplat failed:\n%s", traceback.format_exc())
        ss = MethodRun(name="StreamSplat", kind="feed-forward", status=f"failed: {type(e).__name__}: {e}"[:200])
    score(ss)
    for name in cfg.methods:
        print(f"--- {name}: {steps[name]} steps on {len(clip.key)} key frames")
        score(
            run_nerfstudio_method(
                name,
                clip,
                datasets,
                steps[name],
                cfg.device,
                out / "runs",
                cfg.rays_per_batch,
                cfg.tiny,
                cfg.seed,
                cfg.max_train_seconds,
                cfg.scale_schedules,
            )
        )
    final = [rows[n] for n in order if n in rows] + [v for k, v in rows.items() if k not in order]
    print(f"table: {paths['markdown']} and {paths['json']}; grids in {out / 'grids'}")
    return {"rows": final, "paths": paths, "clip": clip}


def resolve_checkpoint(checkpoint: Optional[Path]) -> Optional[Path]:
    """``--checkpoint demo`` is the packaged demo weights; anything else must be an existing file."""
    if checkpoint is None:
        return None
    if str(checkpoint) == "demo":
        try:
            from ..assets import demo_weights_path  # raises a clear error when the weights file is missing
        except ImportError as e:
            raise FileNotFoundError(
                "--checkpoint demo: this install has no packaged demo weights "
                "(streamsplat_ns.assets); give a checkpoint file instead"
            ) from e
        return Path(demo_weights_path())
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"--checkpoint {checkpoint}: no such file (give StreamSplat weights, or 'demo')")
    return Path(checkpoint)
