"""streamsplat-demo: the README's main job, on any machine (2 CPU cores are enough).

Loads the shipped demo weights (a small stage-1 + stage-2 model trained by ``experiments/demo_weights.py``
on procedurally generated scenes; the embedded sample's seed was held out), reconstructs held-out sequences
of the embedded sample with the inference engine, and writes

* ``reconstruction.png``: ground truth / reconstruction / linear blend of the key frames, at the key
  frames and the in-between times of one interval;
* ``interpolated.mp4``: the whole sequence, ground truth left, reconstruction right (key frames are model
  inputs, every other frame is rendered at its time between them);
* ``metrics.json``: key-frame and middle-frame PSNR against two baselines that use no model (repeat the
  nearest key frame; linear blend of the two key frames);
* ``gaussians/``: the dynamic Gaussians, for ``streamsplat-view``.

``streamsplat-demo --train`` instead trains the small stage-1 model on this machine (tens of minutes on CPU).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import tyro
from jaxtyping import Float
from torch import Tensor

#: the embedded sample's sequences, the held-out (val) one first
SAMPLE_ORDER = ("synth-03", "synth-00", "synth-01", "synth-02")
#: CPU seconds per stage-1 step of the small variant, measured by users (issue 13: 150 steps, 23 min CPU)
TRAIN_CPU_S_PER_STEP = 9.2


@dataclass
class DemoConfig:
    output: Path = Path("outputs/demo")
    """Folder for the pictures, the video, the metrics and the Gaussians."""
    weights: Optional[Path] = None
    """A stage-2 checkpoint of ours (.safetensors); default: the demo weights shipped in the package."""
    sequences: int = 1
    """How many of the embedded sample's 4 sequences to reconstruct (all are held out of the demo weights'
    training; about 40 s each on 2 CPU cores)."""
    key_gap: int = 5
    """Frames from one key frame to the next (the model saw gap 5 in training)."""
    device: str = "cpu"
    """'cpu' (the demo's target) or 'cuda'."""
    threads: Optional[int] = None
    """torch CPU threads (default: torch's choice)."""
    train: bool = False
    """Instead: train the small stage-1 model on this machine (the old demo; says how long first)."""
    steps: int = 150
    """--train: training steps."""


# ---------------------------------------------------------------------------------------------- helpers
def save_png(path: Path, img: np.ndarray) -> None:
    """float [H, W, 3] in [0, 1] -> PNG, atomically."""
    from PIL import Image

    from ..atomic import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8)).save(tmp, format="PNG")


def psnr_np(pred: Tensor, gt: Tensor) -> float:
    from ..losses import psnr

    return float(psnr(pred, gt)) if len(pred) else float("nan")


def load_sample_sequence(root: Path, name: str, size: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """All frames of one embedded-sample sequence at the model size, read the way training reads them."""
    from ..data.davis import discover

    (seq,) = discover(root, names=[name])
    batch = seq.load(list(range(seq.num_frames)), size)
    return torch.as_tensor(batch.rgb).float(), torch.as_tensor(batch.disparity).float()


@torch.no_grad()
def reconstruct_sequence(engine, rgb: Float[Tensor, "N 3 H W"], disp: Float[Tensor, "N 1 H W"], key_gap: int):
    """Every frame of the clip from its key frames: key frames at times 0 / 1 of their intervals, the
    others at their time inside the interval. Returns (intervals, pred [N, H, W, 3] on the CPU, keys)."""
    from ..engine import key_frames

    n = len(rgb)
    keys = key_frames(n, key_gap)
    intervals = engine.reconstruct_clip(rgb, disp, key_gap)
    pred = torch.empty(n, *engine.size, 3)
    for j, iv in enumerate(intervals):
        a, b = iv.frames
        last = j == len(intervals) - 1
        frames = list(range(a, b + 1 if last else b))
        out = engine.render(iv, [iv.local_time(f) for f in frames])
        pred[frames] = out.float().cpu()
    return intervals, pred, keys


def score(pred: Float[Tensor, "N H W 3"], gt: Float[Tensor, "N H W 3"], keys: Sequence[int]) -> Dict[str, float]:
    """Key- and middle-frame PSNR at the model resolution, and the two model-free baselines on the same
    middle frames: the nearest key frame repeated, and the linear blend ``(1 - t) F0 + t F1``."""
    keys = list(keys)
    mids = [f for f in range(len(gt)) if f not in keys]
    nearest, blend = [], []
    for f in mids:
        j = max(i for i, k in enumerate(keys) if k < f)
        a, b = keys[j], keys[j + 1]
        t = (f - a) / (b - a)
        nearest.append(gt[a] if t <= 0.5 else gt[b])
        blend.append((1 - t) * gt[a] + t * gt[b])
    m = torch.tensor(mids, dtype=torch.long)
    return {
        "psnr_key": psnr_np(pred[keys], gt[keys]),
        "psnr_middle": psnr_np(pred[m], gt[m]),
        "psnr_middle_nearest": psnr_np(torch.stack(nearest), gt[m]),
        "psnr_middle_blend": psnr_np(torch.stack(blend), gt[m]),
        "key_frames": len(keys),
        "middle_frames": len(mids),
    }


def mean_scores(rows: List[Dict[str, float]]) -> Dict[str, float]:
    """Frame-weighted means over sequences (each sequence's PSNR is a mean over its frames)."""
    out: Dict[str, float] = {}
    for k, w in (
        ("psnr_key", "key_frames"),
        ("psnr_middle", "middle_frames"),
        ("psnr_middle_nearest", "middle_frames"),
        ("psnr_middle_blend", "middle_frames"),
    ):
        tot = sum(r[w] for r in rows)
        out[k] = sum(r[k] * r[w] for r in rows) / max(tot, 1)
    out["key_frames"] = sum(r["key_frames"] for r in rows)
    out["middle_frames"] = sum(r["middle_frames"] for r in rows)
    return out


def evaluate_sample(
    model,
    device: str = "cpu",
    names: Sequence[str] = SAMPLE_ORDER,
    key_gap: int = 5,
    sample_root: Optional[Path] = None,
    max_frames: Optional[int] = None,
) -> Dict[str, object]:
    """The demo's scores on the embedded sample (fp32, eager), also used by experiments/demo_weights.py."""
    from ..data.sample import ensure_sample
    from ..engine import ReconstructionEngine
    from ..inference import InferenceOptions

    root = ensure_sample(sample_root)
    engine = ReconstructionEngine(model, options=InferenceOptions.eager(), device=device)
    rows = {}
    for name in names:
        rgb, disp = load_sample_sequence(root, name, engine.size)
        rgb, disp = rgb[:max_frames], disp[:max_frames]
        _, pred, keys = reconstruct_sequence(engine, rgb, disp, key_gap)
        rows[name] = score(pred, rgb.permute(0, 2, 3, 1), keys)
    return {
        "sequences": rows,
        "mean": mean_scores(list(rows.values())),
        "key_gap": key_gap,
        "resolution": list(engine.size),
    }


def _picture(gt: Tensor, pred: Tensor, keys: Sequence[int]) -> np.ndarray:
    """Rows: ground truth, reconstruction, linear blend; columns: the first interval's frames (key frame,
    in-between frames, key frame); a thin grey line between cells."""
    a, b = keys[0], keys[1]
    rows = []
    for kind in ("gt", "pred", "blend"):
        cells = []
        for f in range(a, b + 1):
            t = (f - a) / (b - a)
            img = {"gt": gt[f], "pred": pred[f], "blend": (1 - t) * gt[a] + t * gt[b]}[kind].numpy()
            cells += [img, np.full((img.shape[0], 2, 3), 0.5)]
        rows += [np.concatenate(cells[:-1], axis=1)]
        rows += [np.full((2, rows[-1].shape[1], 3), 0.5)]
    return np.concatenate(rows[:-1], axis=0)


def _write_video(path: Path, gt: Tensor, pred: Tensor, fps: float) -> int:
    from ..engine import HostFrames, VideoWriter

    frames = torch.cat([gt, torch.full_like(gt[:, :, :4], 0.5), pred], dim=2)  # [N, H, 2W + 4, 3]
    with VideoWriter(path, fps, frames.shape[1], frames.shape[2]) as writer:
        writer.write(HostFrames(frames))
    return len(frames)


def _viewer_command(folder: Path) -> str:
    return f"streamsplat-view {folder} --host 127.0.0.1 --port 7007"


# ---------------------------------------------------------------------------------------------- the demo
def main(cfg: DemoConfig) -> Dict[str, object]:
    if cfg.train:
        return train_demo(cfg)
    t0 = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if not 1 <= cfg.sequences <= len(SAMPLE_ORDER):
        raise ValueError(f"--sequences must be 1..{len(SAMPLE_ORDER)} (the embedded sample has 4), got {cfg.sequences}")
    from ..assets import demo_weights_path

    weights = Path(cfg.weights) if cfg.weights is not None else demo_weights_path()
    if not weights.is_file():
        raise FileNotFoundError(
            f"--weights {weights}: no such file (give a stage-2 .safetensors of ours, or leave "
            f"--weights out to use the demo weights shipped in the package)"
        )
    from ..atomic import atomic_write_text
    from ..data.sample import ensure_sample
    from ..engine import ReconstructionEngine
    from ..inference import InferenceOptions
    from ..live.record import Recorder
    from ..networks.checkpoint import load_checkpoint, read_tensors

    t = time.perf_counter()
    root = ensure_sample()
    print(f"embedded sample: {root} ({time.perf_counter() - t:.1f} s)", flush=True)
    _, meta = read_tensors(weights)
    model = load_checkpoint(weights, cfg.device, allow_random_dino=True)  # computes in fp32 whatever the file dtype
    if model.decoder is None:
        raise ValueError(f"--weights {weights}: a stage-1 (encoder-only) checkpoint; the demo needs stage 2")
    trained = meta.get("streamsplat_ns.demo.summary", "")
    print(f"weights: {weights} ({weights.stat().st_size / 2**20:.1f} MiB){'; ' + trained if trained else ''}")
    engine = ReconstructionEngine(model, options=InferenceOptions.eager(), device=cfg.device)
    h, w = engine.size
    out = cfg.output
    out.mkdir(parents=True, exist_ok=True)
    gdir = out / "gaussians"
    if gdir.exists():  # a previous demo's recording: replaced, not appended to
        import shutil

        shutil.rmtree(gdir)
    rec = Recorder(gdir, source=f"embedded sample {root}", model_size=(h, w), fps=10.0, kind="demo")
    rows: Dict[str, Dict[str, float]] = {}
    first = None
    offset = 0  # frames of earlier sequences: the viewer's time axis runs over all reconstructed sequences
    try:
        for name in SAMPLE_ORDER[: cfg.sequences]:
            t = time.perf_counter()
            rgb, disp = load_sample_sequence(root, name, (h, w))
            intervals, pred, keys = reconstruct_sequence(engine, rgb, disp, cfg.key_gap)
            gt = rgb.permute(0, 2, 3, 1)
            rows[name] = score(pred, gt, keys)
            for iv in intervals:
                a, b = iv.frames
                rec.add(offset + iv.k, (offset + a, offset + b), iv.gaussians, block=True)
            offset += len(rgb)
            if first is None:
                first = (name, gt, pred, keys)
            r = rows[name]
            print(
                f"{name}: {len(rgb)} frames, key frames {keys}: reconstructed in {time.perf_counter() - t:.1f} s; "
                f"key {r['psnr_key']:.2f} dB, middle {r['psnr_middle']:.2f} dB",
                flush=True,
            )
    except BaseException as e:
        rec.close("error", str(e))
        raise
    rec.close("complete")
    name, gt, pred, keys = first
    picture = out / "reconstruction.png"
    save_png(picture, _picture(gt, pred, keys))
    video = out / "interpolated.mp4"
    _write_video(video, gt, pred, fps=10.0)
    mean = mean_scores(list(rows.values()))
    result = {
        "weights": str(weights),
        "sequences": rows,
        "mean": mean,
        "key_gap": cfg.key_gap,
        "resolution": [h, w],
        "device": cfg.device,
        "seconds": time.perf_counter() - t0,
    }
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=1))
    m = mean
    print(f"\nheld-out embedded sample ({', '.join(rows)}; never trained on), PSNR at {h}x{w}:")
    print(f"  key frames (model inputs, rendered back)  {m['psnr_key']:6.2f} dB   ({m['key_frames']} frames)")
    print(f"  middle frames (rendered in between)        {m['psnr_middle']:6.2f} dB   ({m['middle_frames']} frames)")
    print(f"    baseline: repeat the nearest key frame   {m['psnr_middle_nearest']:6.2f} dB")
    print(
        f"    baseline: linear blend of the key frames {m['psnr_middle_blend']:6.2f} dB   "
        f"(model {m['psnr_middle'] - m['psnr_middle_blend']:+.2f} dB)"
    )
    print(
        f"\nwrote {picture}  (rows: ground truth, reconstruction, linear blend; frames {keys[0]}..{keys[1]} of "
        f"{name})\n      {video}  (ground truth | reconstruction, {len(gt)} frames)\n      {out / 'metrics.json'}"
        f"\n      {gdir}/  (the dynamic Gaussians)"
    )
    print(
        f"done in {time.perf_counter() - t0:.0f} s\n\nexplore it in the browser (then open http://127.0.0.1:7007):"
        f"\n  {_viewer_command(gdir)}"
    )
    return result


# ---------------------------------------------------------------------------------------------- --train
def _reconstruct(pipeline, clips):
    """Ground truth and renders of a few eval clips (their first frame), and the mean PSNR."""
    from ..losses import psnr

    model = pipeline.model
    model.eval()
    gts, preds = [], []
    with torch.no_grad():
        for _, batch in clips:
            out = model(None, batch)
            gts.append(batch["rgb"][0, 0].permute(1, 2, 0).to(model.device))
            preds.append(out["rgb"][0, 0].clamp(0, 1))
    model.train()
    gt, pred = torch.stack(gts), torch.stack(preds)
    return gt.cpu().numpy(), pred.cpu().numpy(), float(psnr(pred, gt))


def train_demo(cfg: DemoConfig) -> Dict[str, object]:
    """The training demo: stage 1 of the small variant on the embedded sample through nerfstudio's trainer,
    then a picture of held-out frames (ground truth, untrained, trained) with their PSNR."""
    from nerfstudio.scripts.train import _set_random_seed

    from ..method_configs.methods import scripted_config

    threads = torch.get_num_threads()
    device = "cuda" if cfg.device == "cuda" and torch.cuda.is_available() else "cpu"
    if device == "cpu":
        eta = cfg.steps * TRAIN_CPU_S_PER_STEP / max(min(threads, os.cpu_count() or 1), 1) / 60
        print(
            f"training the small stage-1 model for {cfg.steps} steps on the CPU ({threads} threads): about "
            f"{eta:.0f} minutes on 2 free cores (longer on a busy machine); the shipped demo weights need none "
            f"of this: run streamsplat-demo without --train",
            flush=True,
        )
    tc = scripted_config("encoder", True, cfg.output, cfg.steps, experiment="demo")
    tc.steps_per_save = max(min(cfg.steps, 25), 1)  # save early: an interrupted run still leaves weights
    tc.machine.device_type = device
    tc.pipeline.datamanager.eval_num_clips = 6
    _set_random_seed(tc.machine.seed)
    tc.save_config()
    trainer = tc.setup(local_rank=0, world_size=1)
    trainer.setup()
    clips = list(trainer.pipeline.datamanager.eval_batches())
    gt, before, psnr_before = _reconstruct(trainer.pipeline, clips)
    t = time.perf_counter()
    trainer.train()
    secs = time.perf_counter() - t
    _, after, psnr_after = _reconstruct(trainer.pipeline, clips)
    row = lambda x: np.concatenate(list(x), axis=1)  # noqa: E731
    picture = np.concatenate([row(gt), row(before), row(after)], axis=0)
    picture = picture.repeat(3, axis=0).repeat(3, axis=1)  # the small variant renders 64x112: enlarge
    cfg.output.mkdir(parents=True, exist_ok=True)
    path = cfg.output / "reconstruction.png"
    save_png(path, picture)
    run = trainer.base_dir
    per_step = secs / max(cfg.steps, 1)
    s2_steps = 10
    print(
        f"\nheld-out frames, PSNR before training {psnr_before:.2f} dB -> after {cfg.steps} steps "
        f"{psnr_after:.2f} dB ({secs / 60:.1f} min, {per_step:.1f} s/step)"
    )
    print(f"picture: {path}  (rows: ground truth, untrained, trained)")
    print(
        f"run: {run}\n  open the viewer:   ns-viewer --load-config {run / 'config.yml'} "
        f"--viewer.websocket-host 127.0.0.1 --viewer.websocket-port 7007   (then open http://127.0.0.1:7007)\n"
        f"  evaluate:          ns-eval --load-config {run / 'config.yml'} --output-path {cfg.output / 'eval.json'}\n"
        f"  stage 2 on top (about {s2_steps * per_step * 3 / 60:.0f} min here, saves every 5 steps):\n"
        f"    ns-train streamsplat-decoder-small --output-dir {cfg.output} --max-num-iterations {s2_steps} "
        f"--steps-per-save 5 --pipeline.model.encoder-checkpoint {run / 'model.safetensors'} "
        f"--pipeline.model.allow-random-dino True --machine.device-type {device}"
    )
    return {"psnr_before": psnr_before, "psnr_after": psnr_after, "run": str(run), "seconds": secs}


def entrypoint() -> None:
    cfg = tyro.cli(DemoConfig)
    try:
        main(cfg)
    except (FileNotFoundError, ValueError) as e:
        print(f"streamsplat-demo: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    entrypoint()
