"""Make the demo weights (streamsplat_ns/assets/demo_weights.safetensors): this project's own recipe.

A small stage-1 + stage-2 model trained with the project's nerfstudio trainer on many procedurally generated
scenes from the sample generator (streamsplat_ns/data/sample.py: different seeds, frame sizes and motion
speeds); the embedded sample's own seed (SampleConfig.seed = 0, what streamsplat-sample and the demo use) is
never trained on: it is the held-out evaluation set. One command per stage, each stopped by a wall-clock
deadline and resumable (rerun the same command with the same --work folder):

    python3 experiments/demo_weights.py --work /tmp/demo_run --stage encoder --deadline-minutes 8.3 --out OUT1
    python3 experiments/demo_weights.py --work /tmp/demo_run --stage decoder --deadline-minutes 8.3 --out OUT2 \\
        [--encoder-checkpoint OUT1/stage1.safetensors]      # if /tmp/demo_run is gone (a fresh machine)

Stage 2 writes OUT2/demo_weights.safetensors (fp16 weights, <= 16 MiB; the loader computes in fp32) and
OUT2/demo_weights.json (command, seeds, steps, device, training curves, held-out scores of fp16 and fp32).
CPU smoke test of the whole recipe (minutes, tiny step counts):

    S="--work /tmp/dw --smoke --max-steps 3 --sequences 8 --batch-size 2 --eval-clips 2 --eval-frames 6"
    python3 experiments/demo_weights.py $S --stage encoder --out /tmp/dw/o1
    python3 experiments/demo_weights.py $S --stage decoder --out /tmp/dw/o2

The model: 144x256 frames (the embedded sample halved), 8x8 patches (18x32 tokens), 4-layer 192-wide
transformers, three x2 upsampler stages (one Gaussian per pixel) and EncoderConfig.pixel_skip = 32 (a
full-resolution conv feature of the RGB-D input into the heads: detail finer than a token), a random 2-layer
DINO (no pretrained weights are downloaded). Chosen so that the demo reconstructs a 24-frame sequence in
well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Tuple

T_START = time.time()
RECIPE_VERSION = 1
HELD_OUT_SEED = 0  # SampleConfig().seed: the embedded sample (streamsplat-sample, streamsplat-demo)
SIZES = ((144, 256), (216, 384), (288, 512))  # generated frame sizes (all are resized to the model's 144x256)
STRIDES = (1, 2)  # 2 = every other frame of a 47-frame render: twice the motion per frame
FRAMES = 24


# ---------------------------------------------------------------------------------------------- model
def demo_model_configs(smoke: bool = False):
    """(EncoderConfig, DecoderConfig) of the demo model; ``smoke``: the same structure at 48x64 and narrower,
    for CPU smoke tests of the recipe (an untrained full-size model renders too slowly on a CPU)."""
    from streamsplat_ns.networks.config import DecoderConfig, DinoConfig, EncoderConfig, UpsamplerConfig

    up = UpsamplerConfig(stages=3, depth=2, window_size=256, min_width=32, head_dim=16)
    h, w, width = (48, 64, 64) if smoke else (144, 256, 192)
    enc = EncoderConfig(
        image_height=h, image_width=w, patch_size=8, width=width, depth=4, head_dim=32, upsampler=up, pixel_skip=32
    )
    dec = DecoderConfig(
        width=width,
        depth=4,
        head_dim=32,
        head_hidden=64,
        upsampler=up,
        dino=DinoConfig(embed_dim=96, depth=2, num_heads=2, img_size=56, num_register_tokens=4),
    )
    return enc, dec


# ---------------------------------------------------------------------------------------------- data
def group_spec(seed: int) -> Tuple[int, int, int]:
    """(height, width, stride) of the sequences generated with ``seed``: every combination in turn."""
    h, w = SIZES[seed % len(SIZES)]
    return h, w, STRIDES[(seed // len(SIZES)) % len(STRIDES)]


def _move_sequence(src_root: Path, name: str, dst_root: Path, new: str, stride: int) -> None:
    """Move one generated sequence (frames, masks, depth) into the merged DAVIS root as ``new``, keeping
    every ``stride``-th frame renumbered 0, 1, 2, ..."""
    from streamsplat_ns.data.depth_io import davis_depth_path
    from streamsplat_ns.data.sample import RESOLUTION

    stems = sorted(p.stem for p in (src_root / "JPEGImages" / RESOLUTION / name).glob("*.jpg"))[::stride]
    for sub, ext in (("JPEGImages", ".jpg"), ("Annotations_unsupervised", ".png"), ("Annotations", ".png")):
        (dst_root / sub / RESOLUTION / new).mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(stems):
            os.replace(
                src_root / sub / RESOLUTION / name / f"{s}{ext}", dst_root / sub / RESOLUTION / new / f"{i:05d}{ext}"
            )
    for i, s in enumerate(stems):
        dst = davis_depth_path(dst_root, RESOLUTION, new, f"{i:05d}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(davis_depth_path(src_root, RESOLUTION, name, s), dst)


def _make_group(args) -> List[str]:
    """Generate the sequences of one seed in a scratch folder and move them into the merged root."""
    seed, per_seed, root = args
    from streamsplat_ns.data.sample import SampleConfig, make_sample

    tmp = root.parent / f".gen-{seed}"
    shutil.rmtree(tmp, ignore_errors=True)
    if seed == HELD_OUT_SEED:  # exactly the embedded sample (what the demo reconstructs)
        cfg, stride, prefix = SampleConfig(), 1, "heldout"
    else:
        h, w, stride = group_spec(seed)
        cfg = SampleConfig(
            num_sequences=per_seed, num_frames=(FRAMES - 1) * stride + 1, height=h, width=w, seed=seed, num_val=0
        )
        prefix = f"g{seed:03d}-{h}x{w}-s{stride}"
    make_sample(tmp, cfg)
    names = []
    for i in range(cfg.num_sequences):
        new = f"{prefix}-{i:02d}"
        _move_sequence(tmp, f"synth-{i:02d}", root, new, stride)
        names.append(new)
    if seed == HELD_OUT_SEED:
        shutil.copy(tmp / "depthImages" / "depth_meta.json", root / "depthImages" / "depth_meta.json")
    shutil.rmtree(tmp, ignore_errors=True)
    return names


def make_data(root: Path, num_sequences: int, workers: int) -> Dict[str, object]:
    """The merged DAVIS root: ``num_sequences`` training sequences (seeds 1, 2, ...: 4 per seed) and the
    embedded sample (seed 0) as the val split. Reused when its recipe matches."""
    per_seed = 4
    seeds = list(range(1, 1 + (num_sequences + per_seed - 1) // per_seed))
    recipe = {
        "version": RECIPE_VERSION,
        "train_seeds": seeds,
        "per_seed": per_seed,
        "frames": FRAMES,
        "sizes": SIZES,
        "strides": STRIDES,
        "held_out_seed": HELD_OUT_SEED,
    }
    recipe = json.loads(json.dumps(recipe))
    marker = root / ".demo_data.json"
    if marker.is_file() and json.loads(marker.read_text()) == recipe:
        return recipe
    shutil.rmtree(root, ignore_errors=True)
    (root / "depthImages").mkdir(parents=True)
    t = time.time()
    jobs = [(s, per_seed, root) for s in [HELD_OUT_SEED] + seeds]
    with ProcessPoolExecutor(max_workers=max(1, workers)) as ex:
        done = list(ex.map(_make_group, jobs))
    val, train = done[0], [n for names in done[1:] for n in names]
    sets = root / "ImageSets" / "2017"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "train.txt").write_text("\n".join(train) + "\n")
    (sets / "val.txt").write_text("\n".join(val) + "\n")
    marker.write_text(json.dumps(recipe))
    print(
        f"data: {len(train)} training sequences (seeds {seeds[0]}..{seeds[-1]}) + held-out {val} in "
        f"{time.time() - t:.0f} s -> {root}",
        flush=True,
    )
    return recipe


# ---------------------------------------------------------------------------------------------- training
def trainer_config(
    stage: str,
    work: Path,
    data: Path,
    device: str,
    workers: int,
    encoder_ckpt: Optional[Path],
    batch: Optional[int] = None,
    eval_clips: int = 16,
    smoke: bool = False,
    variant: Optional[Dict[str, object]] = None,
):
    """The stage's trainer config. ``variant``: recipe changes to try (``decoder_depth``, ``lr``,
    ``cross_pixel``, ``token_correlation``, ``velocity_log_std_offset``, ``coarse_loss``, ``run_name``), e.g. several stage-2 variants side by side on one GPU (scripts/gpu_demo_variants.sh)."""
    from streamsplat_ns.method_configs.methods import scripted_config

    variant = variant or {}
    stage2 = stage == "decoder"
    cfg = scripted_config(
        stage,
        True,
        work / "runs",
        10**7,
        experiment="demo",
        timestamp=str(variant.get("run_name") or "run"),
        method_name=f"demo-{stage}",
    )
    m = cfg.pipeline.model
    m.encoder, m.decoder = demo_model_configs(smoke)
    if variant.get("decoder_depth"):
        m.decoder.depth = int(variant["decoder_depth"])
    if variant.get("cross_pixel"):
        m.decoder.cross_pixel = True
    if variant.get("token_correlation"):
        m.decoder.token_correlation = int(variant["token_correlation"])
    if variant.get("velocity_log_std_offset"):
        m.decoder.velocity_log_std_offset = float(variant["velocity_log_std_offset"])
    if variant.get("coarse_loss"):
        m.lambda_coarse = float(variant["coarse_loss"])
    m.lambda_lpips = 0.0  # no LPIPS weights are assumed on the training machine: the recipe must not depend on them
    m.allow_random_dino = True
    m.encoder_checkpoint = encoder_ckpt
    m.compile_blocks = False
    dm = cfg.pipeline.datamanager
    dm.data = data
    dm.batch_size = batch or (16 if stage2 else 32)  # a small model: per-step overhead, not FLOPs, sets the pace
    dm.num_workers = workers
    dm.eval_num_clips = eval_clips
    cfg.machine.device_type = device
    cfg.machine.seed = 42
    cfg.steps_per_save = 1000
    cfg.checkpoint_every_minutes = 2.0
    cfg.save_only_latest_checkpoint = True
    cfg.logging.steps_per_log = 100
    sched = cfg.optimizers["networks"]["scheduler"]
    sched.warmup_steps = 200 if stage2 else 300
    sched.final_ratio = 0.1
    cfg.optimizers["networks"]["optimizer"].lr = float(variant.get("lr") or 1e-3)
    return cfg


class Curve:
    """Training loss / PSNR every ``every`` steps and held-out metrics every ``eval_every`` steps."""

    def __init__(self, path: Path, every: int) -> None:
        self.path, self.every = path, every
        self.rows: List[Dict[str, float]] = json.loads(path.read_text()) if path.is_file() else []

    def add(self, row: Dict[str, float]) -> None:
        self.rows.append(row)
        self.path.write_text(json.dumps(self.rows))


def train_stage(
    stage: str,
    work: Path,
    data: Path,
    device: str,
    workers: int,
    deadline: float,
    reserve_s: float,
    max_steps: Optional[int],
    encoder_ckpt: Optional[Path],
    eval_every: int,
    batch: Optional[int] = None,
    eval_clips: int = 16,
    smoke: bool = False,
    variant: Optional[Dict[str, object]] = None,
) -> Dict[str, object]:
    """Train (or resume) one stage until the deadline (minus ``reserve_s`` for evaluation and export) or
    ``max_steps``. The cosine schedule's length is set once, from the step rate of the first 150 steps and the
    time left, and kept in ``schedule.json`` so that a resumed run follows the same schedule."""
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation
    from nerfstudio.scripts.train import _set_random_seed

    cfg = trainer_config(stage, work, data, device, workers, encoder_ckpt, batch, eval_clips, smoke, variant)
    run = work / "runs" / "demo" / cfg.method_name / cfg.timestamp
    ckpts = run / "nerfstudio_models"
    if ckpts.is_dir() and any(ckpts.glob("step-*.ckpt")):
        cfg.load_dir = ckpts
    sched = cfg.optimizers["networks"]["scheduler"]
    sched_file = run / "schedule.json"
    sched.max_steps = json.loads(sched_file.read_text())["max_steps"] if sched_file.is_file() else 10**9
    if max_steps is not None:
        sched.max_steps = max_steps
    _set_random_seed(cfg.machine.seed)
    cfg.save_config()
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    start = trainer._start_step
    curve = Curve(run / "curve.json", 50)
    stop_at = deadline - reserve_s
    t0 = time.time()
    mark: Dict[str, float] = {}
    print(f"{stage}: training from step {start} on {device}, {max(stop_at - t0, 0) / 60:.1f} min left", flush=True)

    orig = trainer.train_iteration

    def iteration(step: int):
        loss, loss_dict, metrics = orig(step)
        if step % curve.every == 0:
            lr = trainer.optimizers.schedulers["networks"].get_last_lr()[0]
            curve.add(
                {
                    "step": step,
                    "time_s": round(time.time() - t0, 2),
                    "loss": float(loss.detach()),
                    "lr": lr,
                    **{k: float(v) for k, v in loss_dict.items()},
                    **{f"train_{k}": float(v) for k, v in metrics.items() if k.startswith("psnr")},
                }
            )
        return loss, loss_dict, metrics

    trainer.train_iteration = iteration

    def after(step: int) -> None:
        done = step - start + 1
        if done == 50:
            mark["t50"] = time.time()
        if done == 150 and not sched_file.is_file() and max_steps is None:
            rate = 100 / (time.time() - mark["t50"])
            sched.max_steps = int(step + rate * max(stop_at - time.time(), 0))
            sched_file.parent.mkdir(parents=True, exist_ok=True)
            sched_file.write_text(json.dumps({"max_steps": sched.max_steps, "steps_per_s": rate}))
            print(f"{stage}: {rate:.1f} steps/s -> cosine schedule to step {sched.max_steps}", flush=True)
        if eval_every and step % eval_every == 0 and step > start:
            ev = trainer.pipeline.get_average_eval_image_metrics()
            curve.add(
                {
                    "step": step,
                    "time_s": round(time.time() - t0, 2),
                    **{f"heldout_{k}": v for k, v in ev.items() if k.startswith(("psnr", "ssim"))},
                }
            )
        if time.time() > stop_at or (max_steps is not None and step + 1 >= max_steps):
            trainer.stop_training = True

    trainer.callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], after))
    trainer.train()  # saves the checkpoint and run/model.safetensors at the end
    steps = trainer.step - start
    secs = time.time() - t0
    ev = trainer.pipeline.get_average_eval_image_metrics(get_std=True)
    curve.add(
        {
            "step": trainer.step,
            "time_s": round(secs, 2),
            **{f"heldout_{k}": v for k, v in ev.items() if k.startswith(("psnr", "ssim"))},
        }
    )
    return {
        "stage": stage,
        "run": str(run),
        "first_step": start,
        "last_step": start + steps - 1,
        "steps_this_run": steps,
        "seconds": secs,
        "steps_per_s": steps / max(secs, 1e-9),
        "schedule_max_steps": sched.max_steps,
        "heldout_windows": ev,
    }


# ---------------------------------------------------------------------------------------------- export
def export_fp16(src: Path, dst: Path, extra_meta: Dict[str, str]) -> int:
    """Our checkpoint with every floating-point weight stored as fp16 (the loader copies them into fp32
    parameters), plus ``extra_meta``; atomic. Returns the file size."""
    import torch

    from streamsplat_ns.networks.checkpoint import read_tensors, save_tensors

    tensors, meta = read_tensors(src)
    half = {}
    for k, v in tensors.items():
        if v.is_floating_point():
            h = v.to(torch.float16)
            if not torch.isfinite(h).all():
                raise ValueError(f"{src}: weight {k!r} overflows fp16 (max |w| {v.abs().max():.3g})")
            v = h
        half[k] = v.contiguous()
    save_tensors(dst, half, {**meta, **extra_meta})
    return dst.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/demo_run"), help="data, runs, checkpoints (resumable)")
    ap.add_argument(
        "--stage",
        choices=["data", "encoder", "decoder"],
        required=True,
        help="'data': only generate the training data and the held-out sample (before parallel runs)",
    )
    ap.add_argument("--out", type=Path, required=True, help="results of this command (small files)")
    ap.add_argument(
        "--deadline-minutes",
        type=float,
        default=8.3,
        help="the whole command (data, build, training, evaluation, export) ends by then",
    )
    ap.add_argument(
        "--reserve-minutes",
        type=float,
        default=None,
        help="kept for evaluation and export after training (default 0.6 stage 1, 1.0 stage 2)",
    )
    ap.add_argument("--max-steps", type=int, default=None, help="stop after this step (smoke tests)")
    ap.add_argument("--sequences", type=int, default=320, help="training sequences (4 per seed, 24 frames each)")
    ap.add_argument("--workers", type=int, default=None, help="data workers (default: cores - 2)")
    ap.add_argument("--eval-every", type=int, default=1000, help="held-out windows every N steps (0 = off)")
    ap.add_argument(
        "--encoder-checkpoint",
        type=Path,
        default=None,
        help="stage 2: stage-1 weights (default: the stage-1 run in --work)",
    )
    ap.add_argument("--batch-size", type=int, default=None, help="default 32 (stage 1) / 16 (stage 2); smoke tests: 1")
    ap.add_argument("--eval-clips", type=int, default=16, help="held-out windows in the training curve")
    ap.add_argument(
        "--eval-frames",
        type=int,
        default=None,
        help="frames per sequence in the final score (default all 24; smoke tests: 6)",
    )
    ap.add_argument("--smoke", action="store_true", help="CPU smoke test: the demo model's structure at 48x64")
    ap.add_argument("--eval-sequences", type=int, default=4, help="embedded-sample sequences in the final score")
    ap.add_argument("--run-name", default="run", help="run folder (parallel variants need one each)")
    ap.add_argument("--decoder-depth", type=int, default=None, help="variant: decoder blocks (default 4)")
    ap.add_argument("--lr", type=float, default=None, help="variant: learning rate (default 1e-3)")
    ap.add_argument(
        "--cross-pixel",
        action="store_true",
        help="variant: DecoderConfig.cross_pixel (the motion heads also see the other frame's pixel features)",
    )
    ap.add_argument(
        "--token-correlation",
        type=int,
        default=None,
        help="variant: DecoderConfig.token_correlation, a radius in tokens (e.g. 2: +-16 px at 8-px tokens)",
    )
    ap.add_argument(
        "--velocity-log-std-offset",
        type=float,
        default=None,
        help="variant: DecoderConfig.velocity_log_std_offset (e.g. -5: no random velocities early in training)",
    )
    ap.add_argument(
        "--coarse-loss",
        type=float,
        default=None,
        help="variant: StreamSplatModelConfig.lambda_coarse (MSE of 4x4- and 16x16-filtered renders; default 0)",
    )
    args = ap.parse_args()
    variant = {
        "coarse_loss": args.coarse_loss,
        "token_correlation": args.token_correlation,
        "velocity_log_std_offset": args.velocity_log_std_offset,
        "run_name": args.run_name,
        "decoder_depth": args.decoder_depth,
        "lr": args.lr,
        "cross_pixel": args.cross_pixel,
    }
    deadline = T_START + 60 * args.deadline_minutes
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    cores = os.cpu_count() or 2
    workers = args.workers if args.workers is not None else (max(cores - 2, 1) if device == "cuda" else 0)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    builder = None
    if device == "cuda":  # build the rasterizer while the data is generated (a process: no fork with threads)
        import subprocess

        builder = subprocess.Popen(
            [sys.executable, "-c", "from streamsplat_ns.rendering import _cuda; _cuda.load_extension()"]
        )
    recipe = make_data(work / "data", args.sequences, max(cores - 1, 1))
    if args.stage == "data":  # also the held-out sample the final score reads: parallel runs must not race on it
        from streamsplat_ns.data.sample import ensure_sample

        ensure_sample(work / "sample")
        if builder is not None:
            builder.wait()
        print(f"data ready at {time.time() - T_START:.0f} s: {work / 'data'}, {work / 'sample'}", flush=True)
        return
    if builder is not None:
        builder.wait()
        from streamsplat_ns.rendering import _cuda

        _cuda.load_extension()  # the cached build; raises here (clearly) if the build failed
        print(f"rasterizer ready at {time.time() - T_START:.0f} s", flush=True)
    reserve = args.reserve_minutes if args.reserve_minutes is not None else (1.0 if args.stage == "decoder" else 0.6)
    reserve *= 60
    enc_ckpt = None
    if args.stage == "decoder":
        enc_ckpt = args.encoder_checkpoint or (work / "runs" / "demo" / "demo-encoder" / "run" / "model.safetensors")
        if not enc_ckpt.is_file():
            raise SystemExit(
                f"no stage-1 weights at {enc_ckpt}: run --stage encoder first (same --work), or pass "
                f"--encoder-checkpoint OUT1/stage1.safetensors from the stage-1 command"
            )
    res = train_stage(
        args.stage,
        work,
        work / "data",
        device,
        workers,
        deadline,
        reserve,
        args.max_steps,
        enc_ckpt,
        args.eval_every,
        args.batch_size,
        args.eval_clips,
        args.smoke,
        variant,
    )
    run = Path(res["run"])
    dev_name = torch.cuda.get_device_name() if device == "cuda" else f"cpu ({cores} cores)"
    record = {
        "stage": args.stage,
        "command": " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
        "device": dev_name,
        "host": socket.gethostname(),
        "torch": torch.__version__,
        "data": recipe,
        "variant": variant,
        "result": res,
        "curve": json.loads((run / "curve.json").read_text()),
    }
    if args.stage == "encoder":
        shutil.copy(run / "model.safetensors", args.out / "stage1.safetensors")
        (args.out / "stage1.json").write_text(json.dumps(record, indent=1))
        ev = res["heldout_windows"]
        print(
            f"stage 1 done: steps {res['first_step']}..{res['last_step']} ({res['steps_per_s']:.1f}/s); held-out "
            f"key PSNR (256x256 windows) {ev.get('psnr_key', float('nan')):.2f} dB -> {args.out}/stage1.safetensors",
            flush=True,
        )
        return
    # stage 2: the demo weights, their scores on the held-out embedded sample (fp32 file and fp16 file)
    from streamsplat_ns.cli.demo import SAMPLE_ORDER, evaluate_sample
    from streamsplat_ns.networks.checkpoint import load_checkpoint

    stage1_path = enc_ckpt.with_name("curve.json")  # the stage-1 run's curve, when enc_ckpt is that run's file
    if enc_ckpt.name == "model.safetensors" and stage1_path.is_file():
        record["stage1_curve"] = json.loads(stage1_path.read_text())
    stage1_json = enc_ckpt.parent / "stage1.json"
    if stage1_json.is_file():  # the stage-1 command's record, when carried next to --encoder-checkpoint
        record["stage1"] = json.loads(stage1_json.read_text())
    names = SAMPLE_ORDER[: args.eval_sequences]
    scores = {}
    for label, path in (("fp32", run / "model.safetensors"),):
        model = load_checkpoint(path, device, allow_random_dino=True)
        scores[label] = evaluate_sample(model, device, names, sample_root=work / "sample", max_frames=args.eval_frames)
        del model
    m = scores["fp32"]["mean"]
    summary = (
        f"trained by {Path(__file__).name}: stage 2 step {res['last_step'] + 1} on {dev_name}; held-out "
        f"embedded sample: key {m['psnr_key']:.2f} dB, middle {m['psnr_middle']:.2f} dB "
        f"(blend {m['psnr_middle_blend']:.2f}, nearest {m['psnr_middle_nearest']:.2f})"
    )
    dst = args.out / "demo_weights.safetensors"
    size = export_fp16(
        run / "model.safetensors",
        dst,
        {"streamsplat_ns.demo.summary": summary, "streamsplat_ns.demo.recipe": "experiments/demo_weights.py"},
    )
    model = load_checkpoint(dst, device, allow_random_dino=True)
    scores["fp16_file"] = evaluate_sample(
        model, device, names, sample_root=work / "sample", max_frames=args.eval_frames
    )
    record.update({"scores": scores, "file_bytes": size, "summary": summary})
    (args.out / "demo_weights.json").write_text(json.dumps(record, indent=1))
    f = scores["fp16_file"]["mean"]
    print(
        f"stage 2 done: {dst} ({size / 2**20:.2f} MiB)\n{summary}\nfp16 file: key {f['psnr_key']:.2f} dB, middle "
        f"{f['psnr_middle']:.2f} dB; total {time.time() - T_START:.0f} s",
        flush=True,
    )
    if size > 16 * 2**20:
        raise SystemExit(f"{dst} is {size / 2**20:.1f} MiB > 16 MiB: shrink the model")


if __name__ == "__main__":
    main()
    # every output is written (atomically) by now; leave without joining the trainer's DataLoader workers: on
    # the H200 that join at interpreter exit outlasted the command's deadline (session 6, both stages)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
