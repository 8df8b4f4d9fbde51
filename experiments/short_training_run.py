"""A short real training run: stage 1, then stage 2 on its frozen encoder, on the embedded sample.

Reports key-frame and middle-frame PSNR on the held-out sample sequences against two baselines that
use no model: repeating the nearest key frame, and a linear blend of the two key frames. Each stage
stops after a wall-clock budget (so one device command fits its limit); a rerun with the same
``--out`` resumes from the saved checkpoints. Uses a medium config (144x256 with 4x4 patches, i.e. the
paper's token and Gaussian grids at half resolution, 6 x 256 transformers) because minutes of training
cannot fit the paper-size model.

    python3 experiments/short_training_run.py --out /tmp/run --minutes 3.5 3.5
    # or one stage per command (as in docs/benchmarks.md):
    #   --stages encoder --minutes 7 0 --max-steps 4500 3000  then  --stages decoder --minutes 0 7.3 --max-steps 4500 2600
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def medium(
    cfg,
    stage2: bool,
    device: str,
    up_stages: int = 2,
    max_steps: int = 3000,
    width: int = 256,
    lr: float = 1e-3,
    patch: int = 4,
):
    """144x256 (half the paper's resolution), 6-layer transformers. ``patch=4`` keeps the paper's token
    grid (36 x 64) and, with two x2 upsampler stages, its Gaussian grid (144 x 256, here one per pixel).
    With 8x8 patches at this resolution key-frame PSNR plateaued near 26 dB whatever the width (256 or
    768) or Gaussian density (one per 2x2 or per pixel): that equals rendering 4x4-pixel blocks (26.4 dB
    on the held-out frames), i.e. the network had not yet learned detail finer than its tokens."""
    from streamsplat_ns.networks.config import DinoConfig, UpsamplerConfig

    m = cfg.pipeline.model
    m.encoder.image_height, m.encoder.image_width = 144, 256
    m.encoder.width, m.encoder.depth, m.encoder.head_dim, m.encoder.patch_size = width, 6, 64, patch
    m.encoder.upsampler = UpsamplerConfig(stages=up_stages, window_size=2304, min_width=32, head_dim=32)
    m.decoder.width, m.decoder.depth, m.decoder.head_dim, m.decoder.head_hidden = width, 6, 64, 192
    m.decoder.upsampler = UpsamplerConfig(stages=up_stages, window_size=2304, min_width=32, head_dim=32)
    m.decoder.dino = DinoConfig(embed_dim=192, depth=4, num_heads=3, img_size=112, num_register_tokens=4)
    m.encoder.__post_init__()
    m.decoder.__post_init__()
    cfg.machine.device_type = device
    dm = cfg.pipeline.datamanager
    dm.batch_size = 8 if stage2 else 16  # minutes of training: more, smaller steps learn faster
    dm.num_workers = 10 if device == "cuda" else 0
    dm.eval_num_clips = 32
    cfg.steps_per_save = 500
    cfg.logging.steps_per_log = 100
    sched = cfg.optimizers["networks"]["scheduler"]
    sched.warmup_steps, sched.max_steps = 300, max_steps
    cfg.optimizers["networks"]["optimizer"].lr = lr
    return cfg


def run_stage(
    out: Path,
    stage: str,
    minutes: float,
    data: Path,
    device: str,
    encoder_ckpt=None,
    up_stages: int = 2,
    max_steps: int = 3000,
    width: int = 256,
    lr: float = 1e-3,
    patch: int = 4,
):
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation
    from nerfstudio.scripts.train import _set_random_seed

    from streamsplat_ns.method_configs.methods import scripted_config

    stage2 = stage == "decoder"
    cfg = medium(
        scripted_config(stage, True, out, 10**6, experiment="short", method_name=f"streamsplat-{stage}-medium"),
        stage2,
        device,
        up_stages,
        max_steps,
        width,
        lr,
        patch,
    )
    cfg.pipeline.datamanager.data = data
    cfg.pipeline.model.encoder_checkpoint = encoder_ckpt
    run = out / "short" / cfg.method_name / "run"
    ckpts = run / "nerfstudio_models"
    if ckpts.is_dir() and any(ckpts.glob("step-*.ckpt")):
        cfg.load_dir = ckpts  # resume across device commands
    _set_random_seed(cfg.machine.seed)
    cfg.save_config()
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    t0 = time.time()

    def stop(step: int) -> None:
        if time.time() - t0 > minutes * 60:
            trainer.stop_training = True

    trainer.callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], stop))
    trainer.train()
    steps = trainer.step - trainer._start_step + 1
    rate = steps / (time.time() - t0)
    metrics = trainer.pipeline.get_average_eval_image_metrics(get_std=True)
    return run, {"stage": stage, "steps_this_run": steps, "last_step": trainer.step, "steps_per_s": rate, **metrics}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("/tmp/short_run"))
    ap.add_argument("--minutes", type=float, nargs=2, default=[3.5, 3.5])
    ap.add_argument("--sequences", type=int, default=48)
    ap.add_argument("--json", type=Path, default=None, help="results; stages run earlier are kept")
    ap.add_argument(
        "--stages",
        nargs="+",
        choices=["encoder", "decoder"],
        default=["encoder", "decoder"],
        help="which stages this command trains (resumes each from --out if checkpoints exist)",
    )
    ap.add_argument("--max-steps", type=int, nargs=2, default=[3000, 3000], help="cosine schedule length per stage")
    ap.add_argument("--upsampler-stages", type=int, default=2, help="x2 upsampler stages")
    ap.add_argument("--patch", type=int, default=4, help="patch size (4 at 144x256 = the paper's token grid)")
    ap.add_argument("--width", type=int, default=256, help="transformer width of encoder and decoder")
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    from streamsplat_ns.data.sample import SampleConfig, make_sample

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    data = args.out / "sample"
    t = time.time()
    make_sample(data, SampleConfig(num_sequences=args.sequences, num_frames=24, num_val=4))
    print(f"sample: {args.sequences} sequences in {time.time() - t:.0f}s", flush=True)
    results = {}
    if args.json and args.json.exists():
        results = {r["stage"]: r for r in json.loads(args.json.read_text())}
    kw = dict(up_stages=args.upsampler_stages, width=args.width, lr=args.lr, patch=args.patch)
    run1 = args.out / "short" / "streamsplat-encoder-medium" / "run"
    if "encoder" in args.stages:
        run1, results["encoder"] = run_stage(
            args.out, "encoder", args.minutes[0], data, device, max_steps=args.max_steps[0], **kw
        )
        print(json.dumps(results["encoder"]), flush=True)
    if "decoder" in args.stages:
        if not (run1 / "model.safetensors").is_file():
            raise SystemExit(f"no stage-1 weights at {run1 / 'model.safetensors'}: train --stages encoder first")
        _, results["decoder"] = run_stage(
            args.out,
            "decoder",
            args.minutes[1],
            data,
            device,
            encoder_ckpt=run1 / "model.safetensors",
            max_steps=args.max_steps[1],
            **kw,
        )
        print(json.dumps(results["decoder"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(list(results.values()), indent=1))
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"\n{name}; held-out sequences: 4 x 24 frames; metrics at 256x256")
    print(
        "| stage | steps | steps/s | key PSNR | middle PSNR | nearest-key PSNR | blend PSNR | key SSIM | middle SSIM |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results.values():
        f = lambda k: f"{r[k]:.2f}" if k in r else "-"  # noqa: E731
        print(
            f"| {r['stage']} | {r['last_step'] + 1} | {r['steps_per_s']:.1f} | {f('psnr_key')} | {f('psnr_middle')} | "
            f"{f('psnr_middle_baseline_nearest')} | {f('psnr_middle_baseline_blend')} | {f('ssim_key')} | "
            f"{f('ssim_middle')} |"
        )


if __name__ == "__main__":
    main()
