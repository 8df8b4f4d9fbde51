"""A short real training run: stage 1, then stage 2 on its frozen encoder, on the embedded sample.

Reports key-frame and middle-frame PSNR on the held-out sample sequences against two baselines that
use no model: repeating the nearest key frame, and a linear blend of the two key frames. Each stage
stops after a wall-clock budget (so one device command fits its limit); a rerun with the same
``--out`` resumes from the saved checkpoints. Uses a medium config (144x256, 6 x 256 transformers)
because minutes of training cannot fit the paper-size model.

    PYTHONPATH=$PWD python3 benchmarks/short_training_run.py --out /tmp/run --minutes 3.5 3.5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def medium(cfg, stage2: bool, device: str):
    from streamsplat_ns.networks.config import DinoConfig, UpsamplerConfig

    m = cfg.pipeline.model
    m.encoder.image_height, m.encoder.image_width = 144, 256
    m.encoder.width, m.encoder.depth, m.encoder.head_dim = 256, 6, 64
    m.encoder.upsampler = UpsamplerConfig(window_size=2304, min_width=32, head_dim=32)
    m.decoder.width, m.decoder.depth, m.decoder.head_dim, m.decoder.head_hidden = 256, 6, 64, 96
    m.decoder.upsampler = UpsamplerConfig(window_size=2304, min_width=32, head_dim=32)
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
    sched.warmup_steps, sched.max_steps = 200, 3000
    cfg.optimizers["networks"]["optimizer"].lr = 1e-3
    return cfg


def run_stage(out: Path, stage: str, minutes: float, data: Path, device: str, encoder_ckpt=None):
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation
    from nerfstudio.scripts.train import _set_random_seed

    from streamsplat_ns.method_configs.methods import scripted_config

    stage2 = stage == "decoder"
    cfg = medium(scripted_config(stage, True, out, 10**6, experiment="short",
                                 method_name=f"streamsplat-{stage}-medium"), stage2, device)
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
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from streamsplat_ns.data.sample import SampleConfig, make_sample

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    data = args.out / "sample"
    t = time.time()
    make_sample(data, SampleConfig(num_sequences=args.sequences, num_frames=24, num_val=4))
    print(f"sample: {args.sequences} sequences in {time.time() - t:.0f}s", flush=True)
    run1, r1 = run_stage(args.out, "encoder", args.minutes[0], data, device)
    print(json.dumps(r1), flush=True)
    run2, r2 = run_stage(args.out, "decoder", args.minutes[1], data, device, encoder_ckpt=run1 / "model.safetensors")
    print(json.dumps(r2), flush=True)
    if args.json:
        args.json.write_text(json.dumps([r1, r2], indent=1))
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"\n{name}; held-out sequences: 4 x 24 frames; metrics at 256x256")
    print("| stage | steps | steps/s | key PSNR | middle PSNR | nearest-key PSNR | blend PSNR | key SSIM | middle SSIM |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in (r1, r2):
        f = lambda k: f"{r[k]:.2f}" if k in r else "-"  # noqa: E731
        print(f"| {r['stage']} | {r['last_step'] + 1} | {r['steps_per_s']:.1f} | {f('psnr_key')} | {f('psnr_middle')} | "
              f"{f('psnr_middle_baseline_nearest')} | {f('psnr_middle_baseline_blend')} | {f('ssim_key')} | "
              f"{f('ssim_middle')} |")


if __name__ == "__main__":
    main()
