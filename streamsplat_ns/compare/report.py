"""The comparison table (markdown + JSON) and one side-by-side image grid per method (PNG), all atomic."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..atomic import atomic_write_bytes, atomic_write_text
from .methods import MethodRun
from .protocol import Clip

METRICS = ("psnr", "ssim", "lpips")
GROUPS = ("key", "middle")


def _fmt(v: Optional[float], metric: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.2f}" if metric == "psnr" else f"{v:.3f}"


def _seconds(v: Optional[float]) -> str:
    return "-" if v is None else (f"{v:.3f}" if v < 10 else f"{v:.1f}")


def markdown_table(clip: Clip, rows: List[dict], lpips_note: Optional[str], config: dict) -> str:
    metrics = [m for m in METRICS if any(r["metrics"].get(f"{m}_{g}") is not None for r in rows for g in GROUPS)] or [
        "psnr",
        "ssim",
    ]
    head = (
        ["method", "kind", "steps"]
        + [f"{m.upper()} {g}" for g in GROUPS for m in metrics]
        + ["time / clip (s)", "train (s)", "render / infer (s)", "status", "notes"]
    )
    lines = [
        f"### {clip.name}: {clip.num_frames} frames at {clip.size[0]}x{clip.size[1]}, key gap {clip.key_gap}",
        "",
        f"Source `{clip.source}`; disparity: {clip.depth_source}. Key frames {clip.key} (what every method "
        f"sees); held-out: the {len(clip.key)} key frames and the {len(clip.middle)} middle frames between "
        f"them. Metrics at 256x256 (PSNR, scikit-image SSIM{', LPIPS-VGG' if 'lpips' in metrics else ''}), "
        f"means over frames.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        t = r["timings"]
        infer = t.get("render_s", t.get("inference_s", t.get("compute_s")))
        cells = [r["method"], r["kind"], r["details"].get("steps_done", "-")]
        cells += [
            ("(input)" if r["kind"] == "baseline" and g == "key" else _fmt(r["metrics"].get(f"{m}_{g}"), m))
            for g in GROUPS
            for m in metrics
        ]
        cells += [
            _seconds(t.get("total_s")),
            _seconds(t.get("train_s")),
            _seconds(infer),
            r["status"],
            "; ".join(r["notes"]),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines.append("")
    notes = [
        "Time per clip: training (setup + optimisation) + rendering of the held-out frames for per-scene "
        "methods; inference (key frames in memory -> held-out frames rendered, after one warm-up pass) for "
        "StreamSplat. One-time compilation (gsplat JIT) is excluded and listed in the JSON.",
        "Static-scene methods (nerfacto, splatfacto) fit one scene to all key frames and ignore time; dnerf and "
        "StreamSplat use the clip's times. Baselines reproduce the key frames exactly (their input).",
    ]
    if lpips_note:
        notes.append(lpips_note)
    notes.append(f"Command: `{config.get('command', '')}`")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_table(out: Path, clip: Clip, rows: List[dict], lpips_note: Optional[str], config: dict) -> Dict[str, Path]:
    out = Path(out)
    md = markdown_table(clip, rows, lpips_note, config)
    doc = {
        "clip": {
            "name": clip.name,
            "source": clip.source,
            "num_frames": clip.num_frames,
            "size": list(clip.size),
            "key_gap": clip.key_gap,
            "key_frames": clip.key,
            "middle_frames": clip.middle,
            "disparity": clip.depth_source,
        },
        "protocol": {
            "metric_size": 256,
            "ssim": "scikit-image (gaussian 11, sigma 1.5)",
            "lpips": "VGG (local weights)" if not lpips_note else None,
            "lpips_note": lpips_note,
        },
        "rows": rows,
        "config": config,
    }
    paths = {"markdown": out / "table.md", "json": out / "table.json"}
    atomic_write_text(paths["markdown"], md)
    atomic_write_text(paths["json"], json.dumps(doc, indent=1, default=str))
    return paths


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def grid_frames(clip: Clip, max_frames: int = 8) -> List[int]:
    """The first interval's frames (key, middles, next key), evenly thinned to at most ``max_frames``."""
    a, b = clip.key[0], clip.key[1]
    frames = list(range(a, b + 1))
    if len(frames) > max_frames:
        pick = np.linspace(0, len(frames) - 1, max_frames).round().astype(int)
        frames = [frames[i] for i in sorted(set(pick.tolist()))]
    return frames


def write_grid(path: Path, clip: Clip, run: MethodRun, frames: Sequence[int], scale: int = 1) -> Path:
    """Rows: ground truth, the method's render, |error| x 4; columns: ``frames`` (key frames marked by a
    white bar above them)."""
    assert run.preds is not None
    pos = {f: i for i, f in enumerate(clip.held_out)}
    gt = clip.frames_hwc(frames).numpy()
    pred = run.preds[[pos[f] for f in frames]].numpy()
    err = np.clip(np.abs(pred - gt) * 4, 0, 1)
    H, W = gt.shape[1:3]
    bar = 3
    cols = []
    for j, f in enumerate(frames):
        mark = np.ones((bar, W, 3)) if f in clip.key else np.zeros((bar, W, 3))
        cols.append(np.concatenate([mark, gt[j], pred[j], err[j]], 0))
        cols.append(np.full((bar + 3 * H, 2, 3), 0.5))
    img = np.concatenate(cols[:-1], 1)
    if scale > 1:
        img = img.repeat(scale, 0).repeat(scale, 1)
    atomic_write_bytes(path, _png(img))
    return path


def grid_scale(size) -> int:
    """Small evaluation sizes are enlarged (nearest) so the grid is readable; at most 8x."""
    return min(8, max(1, int(round(256 / max(size[0], 1))))) if size[0] < 128 else 1


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def summary_line(r: dict) -> str:
    m = r["metrics"]
    return (
        f"{r['method']:>22}: PSNR key {_fmt(m.get('psnr_key'), 'psnr'):>6}  middle "
        f"{_fmt(m.get('psnr_middle'), 'psnr'):>6}  time {_seconds(r['timings'].get('total_s')):>7} s  "
        f"{r['status']}"
    )


def to_row(run: MethodRun, metrics: Dict[str, Optional[float]]) -> dict:
    return {
        "method": run.name,
        "kind": run.kind,
        "status": run.status,
        "metrics": metrics,
        "timings": {k: float(v) for k, v in run.timings.items()},
        "notes": run.notes,
        "details": run.details,
    }
