"""The evaluation protocol every method of ``streamsplat-compare`` is scored with.

A clip of N frames (at one evaluation size) has key frames every ``key_gap`` frames (the pairing rule
of the engine: frames 0, g, 2g, ...). The key frames are all a method may see: StreamSplat encodes them,
per-scene methods train on them. Every frame from the first to the last key frame is held out for
scoring: the key frames themselves ("key", reconstruction of what was seen) and the frames between them
("middle", interpolation in time), exactly the two groups the nerfstudio model's ``ns-eval`` reports.
Frames after the last key frame would be extrapolation and are not scored.

Metrics follow ``StreamSplatModel.get_image_metrics_and_images`` (the paper's protocol): images in
[0, 1] resized bilinearly to 256x256, PSNR (``losses.psnr``), SSIM as scikit-image computes it
(``losses.ssim``) and LPIPS-VGG (``lpips.lpips_256``) when its local weights exist. Each is the mean
over the frames of a group.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from ..losses import psnr, ssim

log = logging.getLogger(__name__)
METRIC_SIZE = 256


def key_frames(num_frames: int, gap: int) -> List[int]:
    """Key-frame indices of a clip: the engine's rule when it exists (one rule everywhere), else 0, g, 2g, ..."""
    try:
        from ..engine import key_frames as engine_key_frames  # ENGINE-PIPE's single pairing rule
    except ImportError:
        engine_key_frames = None
    if gap < 1:
        raise ValueError(f"--key-gap must be >= 1, got {gap}")
    if engine_key_frames is not None:
        return [int(k) for k in engine_key_frames(num_frames, gap)]
    return list(range(0, num_frames, gap))


@dataclass
class Clip:
    """The frames of one clip at the evaluation size, their disparity, and the protocol's frame sets."""

    name: str
    source: str
    rgb: Float[Tensor, "N 3 H W"]
    disparity: Float[Tensor, "N 1 H W"]
    key_gap: int
    depth_source: str = "files"
    depth_seconds: Optional[float] = None
    """wall clock of computing the disparity (Depth Anything V2), when it was computed here"""
    key: List[int] = field(default_factory=list)
    held_out: List[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = self.num_frames
        self.key = key_frames(n, self.key_gap)
        if len(self.key) < 2:
            raise ValueError(
                f"{self.source}: {n} frames give {len(self.key)} key frame(s) at --key-gap "
                f"{self.key_gap}; need at least two (use more frames or a smaller gap)"
            )
        self.held_out = list(range(self.key[0], self.key[-1] + 1))

    @property
    def num_frames(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def size(self) -> Tuple[int, int]:
        return int(self.rgb.shape[2]), int(self.rgb.shape[3])

    @property
    def times(self) -> Tensor:
        """Normalised time of every frame, in [0, 1] over the clip (D-NeRF's convention)."""
        n = self.num_frames
        return torch.arange(n, dtype=torch.float32) / max(n - 1, 1)

    @property
    def middle(self) -> List[int]:
        ks = set(self.key)
        return [i for i in self.held_out if i not in ks]

    def interval_of(self, i: int) -> Tuple[int, int, float]:
        """(a, b, t): the key pair (a, b) whose interval holds frame ``i`` and ``i``'s time inside it.
        A key frame opens its interval (t = 0), except the last one, which closes the last (t = 1)."""
        k = self.key
        j = min(max(sum(1 for x in k if x <= i) - 1, 0), len(k) - 2)
        a, b = k[j], k[j + 1]
        return a, b, (i - a) / (b - a)

    def frames_hwc(self, idx: Sequence[int]) -> Float[Tensor, "T H W 3"]:
        return self.rgb[list(idx)].permute(0, 2, 3, 1).contiguous()


def load_clip(
    data: Optional[Path],
    dataparser: str = "auto",
    sequence: Optional[str] = None,
    split: str = "val",
    size: Tuple[int, int] = (288, 512),
    start: int = 0,
    max_frames: Optional[int] = None,
    key_gap: int = 5,
    depth: str = "auto",
    depth_checkpoint: Optional[Path] = None,
    cache_dir: Optional[Path] = None,
    device: str = "cpu",
) -> Clip:
    """A clip from one of our dataparsers (``davis``, ``video``, ``youtube-vos``, ``co3d``, ``re10k``) or a
    video file / frame folder (``auto``), resized to ``size``. ``data=None`` is the embedded sample.

    ``depth``: 'file' reads the disparity maps the dataparsers use (``streamsplat-depth`` makes them),
    'compute' runs Depth Anything V2 from ``depth_checkpoint`` (or ``$STREAMSPLAT_DA2_CKPT``), 'auto' tries
    files then computes, 'zeros' gives StreamSplat flat disparity (smoke tests; the table says so).
    """
    import os

    from ..data.errors import DataError, MissingDepthError
    from ..dataparsers import specs

    kind = dataparser
    if kind == "auto":
        if data is None:
            kind = "davis"
        elif Path(data).is_dir() and (Path(data) / "JPEGImages").is_dir():
            kind = "davis"
        else:
            kind = "video"
    classes = {
        "davis": specs.DavisDataParserConfig,
        "video": specs.VideoDataParserConfig,
        "youtube-vos": specs.YtvosDataParserConfig,
        "ytvos": specs.YtvosDataParserConfig,
        "co3d": specs.Co3dDataParserConfig,
        "re10k": specs.Re10kDataParserConfig,
    }
    if kind not in classes:
        raise ValueError(f"--dataparser {dataparser!r}: choose one of auto, {', '.join(classes)}")

    def pick(depth_mode: str):
        kw = dict(depth_mode=depth_mode, cache_dir=cache_dir, image_height=size[0], image_width=size[1])
        cfg = classes[kind](**kw) if data is None else classes[kind](data=Path(data), **kw)
        seqs = cfg.setup().sequences(split)
        if not seqs:
            raise DataError(f"{data}: no sequences in split '{split}' for --dataparser {kind}")
        if sequence is None:
            return seqs[0]
        named = [s for s in seqs if s.name == sequence]
        if not named:
            names = ", ".join(s.name for s in seqs[:20])
            raise DataError(
                f"--sequence {sequence!r} is not in {data or 'the embedded sample'} (split '{split}'); "
                f"available: {names}"
            )
        return named[0]

    if depth not in ("auto", "file", "compute", "zeros"):
        raise ValueError(f"--depth {depth!r}: choose auto, file, compute or zeros")
    seq = pick("file" if depth in ("auto", "file") else "zeros")
    n = seq.num_frames - start
    if max_frames is not None:
        n = min(n, max_frames)
    if n < 2:
        raise DataError(f"{seq}: --start {start} leaves {n} frame(s); need at least two")
    idx = list(range(start, start + n))
    if depth == "auto":
        try:
            fb = seq.load(idx, size)
            depth = "file"
        except MissingDepthError:
            if not (depth_checkpoint or os.environ.get("STREAMSPLAT_DA2_CKPT")):
                raise  # its message names the missing map and the streamsplat-depth command
            depth = "compute"
            seq = pick("zeros")
            fb = seq.load(idx, size)
    else:
        fb = seq.load(idx, size)
    disp, depth_s = fb.disparity, None
    if depth == "compute":
        import time

        t = time.perf_counter()
        disp = compute_disparity(fb.rgb, depth_checkpoint, device)
        depth_s = time.perf_counter() - t
    source = {"file": "files", "compute": "Depth Anything V2 (computed)", "zeros": "zeros (flat disparity)"}[depth]
    return Clip(
        name=seq.name,
        source=f"{kind}:{data or 'embedded sample'}:{seq.name}",
        rgb=fb.rgb.float(),
        disparity=disp.float(),
        key_gap=key_gap,
        depth_source=source,
        depth_seconds=depth_s,
    )


def compute_disparity(rgb: Float[Tensor, "N 3 H W"], checkpoint: Optional[Path], device: str) -> Tensor:
    """Depth Anything V2 disparity, min-max normalised per frame as the dataparsers' depth maps are."""
    import os

    from ..depth.depth_anything import load_depth_anything, predict_disparity

    ckpt = checkpoint or os.environ.get("STREAMSPLAT_DA2_CKPT")
    if not ckpt:
        raise FileNotFoundError(
            "--depth compute needs --depth-checkpoint depth_anything_v2_<enc>.pth "
            "(or $STREAMSPLAT_DA2_CKPT); nothing is downloaded"
        )
    model = load_depth_anything(ckpt, device=device)
    out = []
    for i in range(0, rgb.shape[0], 8):
        d = predict_disparity(model, rgb[i : i + 8].to(device), out_size=tuple(rgb.shape[-2:])).float().cpu()
        lo = d.flatten(1).min(1).values[:, None, None]
        hi = d.flatten(1).max(1).values[:, None, None]
        out.append(((d - lo) / (hi - lo).clamp_min(1e-8))[:, None])
    del model
    return torch.cat(out)


# ------------------------------------------------------------------ metrics
def at_metric_size(x: Float[Tensor, "T H W 3"]) -> Float[Tensor, "T 256 256 3"]:
    y = x.permute(0, 3, 1, 2).float()
    y = F.interpolate(y, size=(METRIC_SIZE, METRIC_SIZE), mode="bilinear", align_corners=False)
    return y.permute(0, 2, 3, 1)


def frame_metrics(pred: Float[Tensor, "T H W 3"], gt: Float[Tensor, "T H W 3"], lpips_net=None) -> Dict[str, Tensor]:
    """Per-frame PSNR / SSIM (/ LPIPS) at 256x256: tensors of shape [T]."""
    from ..lpips import lpips_256

    pred, gt = pred.float().clamp(0, 1), gt.float().clamp(0, 1)
    p, g = at_metric_size(pred), at_metric_size(gt)
    out = {
        "psnr": torch.stack([psnr(p[i], g[i]) for i in range(p.shape[0])]),
        "ssim": torch.stack([ssim(p[i : i + 1], g[i : i + 1]) for i in range(p.shape[0])]),
    }
    if lpips_net is not None:
        dev = next(lpips_net.parameters()).device
        out["lpips"] = torch.stack(
            [lpips_256(lpips_net, pred[i : i + 1].to(dev), gt[i : i + 1].to(dev)).cpu() for i in range(p.shape[0])]
        )
    return {k: v.detach().float().cpu() for k, v in out.items()}


def group_metrics(
    clip: Clip, per_frame: Dict[str, Tensor], frames: Sequence[int], skip_key: bool = False
) -> Dict[str, Optional[float]]:
    """Means over the key / middle / all held-out frames; ``frames`` are the clip indices of ``per_frame``."""
    pos = {f: i for i, f in enumerate(frames)}
    groups = {"key": clip.key, "middle": clip.middle, "all": clip.held_out}
    out: Dict[str, Optional[float]] = {}
    for g, idx in groups.items():
        for m, v in per_frame.items():
            if (skip_key and g in ("key", "all")) or not idx:
                out[f"{m}_{g}"] = None
                continue
            out[f"{m}_{g}"] = float(v[[pos[i] for i in idx]].mean())
    return out


# ------------------------------------------------------------------ the two simple baselines
def baseline_frames(clip: Clip, kind: str) -> Float[Tensor, "T H W 3"]:
    """Held-out frames predicted from the key frames alone: ``nearest`` repeats the nearer key frame (the
    later one from half-way on, as ``StreamSplatModel``'s baseline metric), ``blend`` cross-fades linearly."""
    out = []
    for i in clip.held_out:
        a, b, t = clip.interval_of(i)
        fa, fb = clip.frames_hwc([a])[0], clip.frames_hwc([b])[0]
        if kind == "nearest":
            out.append(fa if t < 0.5 else fb)
        elif kind == "blend":
            out.append((1 - t) * fa + t * fb)
        else:
            raise ValueError(f"unknown baseline {kind!r}")
    return torch.stack(out)
