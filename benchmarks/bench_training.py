"""Training throughput of both stages at the paper's per-GPU batch sizes (a benchmark, not a test).

Paper configs (288x512, 10 x 768), bf16 autocast, AdamW, random weights, random DINO, LPIPS-VGG with
random weights from local files (the loss costs the same as with real ones), synthetic clips already
on the GPU. Reports samples/s, peak memory and the split of a step into network (forward + backward of
the transformers/upsamplers/heads), rendering (forward + backward of the batched rasterizer) and the
rest; the data loader is timed separately on the embedded sample with N workers and compared with the
step rate.

    python -m benchmarks.bench_training [--stages 1 2] [--steps 10] [--workers 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from .common import gpu_median_ms


def _lpips_files(tmp: Path):
    from streamsplat_ns.lpips import LPIPSVGG

    m = LPIPSVGG()
    torch.save({f"features.{k}": v for k, v in m.features.state_dict().items()}, tmp / "vgg.pth")
    torch.save({f"lin{i}.model.1.weight": torch.rand_like(l.weight) for i, l in enumerate(m.lins)}, tmp / "lin.pth")
    return tmp / "vgg.pth", tmp / "lin.pth"


def _model(stage: int, tmp: Path, grad_ckpt: bool, compile_blocks: bool = False):
    from nerfstudio.data.scene_box import SceneBox

    from streamsplat_ns.method_configs.methods import trainer_config

    cfg = trainer_config("decoder" if stage == 2 else "encoder", small=False)
    mc = cfg.pipeline.model
    mc.allow_random_dino = True
    mc.lpips_vgg_path, mc.lpips_lin_path = _lpips_files(tmp)
    mc.lpips_start_step = 0
    mc.grad_checkpoint = grad_ckpt
    mc.compile_blocks = compile_blocks
    model = mc.setup(scene_box=SceneBox(torch.tensor([[-1.0, 0, -1], [1, 5, 1]])), num_train_data=1, metadata={})
    model = model.cuda().train()
    opt_cfg = cfg.optimizers["networks"]["optimizer"]
    opt = opt_cfg.setup(model.get_param_groups()["networks"])
    return model, opt, cfg


def _batch(B: int, V: int, H: int, W: int):
    g = torch.Generator(device="cuda").manual_seed(0)
    rgb = torch.rand(B, V, 3, H, W, device="cuda", generator=g)
    disp = torch.rand(B, V, 1, H, W, device="cuda", generator=g)
    mask = (torch.rand(B, V, 1, H, W, device="cuda", generator=g) > 0.7).float()
    times = torch.linspace(0, 1, V, device="cuda").expand(B, V).contiguous()
    return {"rgb": rgb, "disparity": disp, "mask": mask, "times": times}


def _timed(fn, steps: int) -> float:
    """Median GPU ms of one call after two untimed ones."""
    return gpu_median_ms(fn, steps, warmup=2)[0]


def bench_stage(stage: int, steps: int, B: int, grad_ckpt: bool, compile_blocks: bool = False) -> dict:
    from streamsplat_ns.rendering import render_dynamic, render_static

    tmp = Path(tempfile.mkdtemp())
    model, opt, cfg = _model(stage, tmp, grad_ckpt, compile_blocks)
    H, W = model.image_size
    V = 6 if stage == 2 else 1
    batch = _batch(B, V, H, W)  # LPIPS is on from step 0 (lpips_start_step = 0), as late in training
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=model.config.bf16)

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(None, batch)
        losses = model.get_loss_dict(out, batch)
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(model.get_param_groups()["networks"], 1.0)
        opt.step()

    torch.cuda.reset_peak_memory_stats()
    t_step = _timed(step, steps)
    peak = torch.cuda.max_memory_allocated() / 2**30

    # network only: forward + backward of the Gaussians with a random linear loss
    def net_only():
        opt.zero_grad(set_to_none=True)
        with autocast:
            if stage == 1:
                g = model.net.predict_static(batch["rgb"][:, 0], batch["disparity"][:, 0])
            else:
                r, d = batch["rgb"], batch["disparity"]
                g = model.net.predict_pair(r[:, 0], d[:, 0], r[:, -1], d[:, -1])
        loss = sum((t.float() * 1e-3).sum() for t in (g.means, g.scales, g.opacities, g.colours))
        if stage == 2:
            loss = loss + (g.motion.float() * 1e-3).sum() + (g.gamma0.float() + g.gamma1.float()).sum() * 1e-3
        loss.backward()

    t_net = _timed(net_only, steps)
    with torch.no_grad(), autocast:
        if stage == 1:
            g = model.net.predict_static(batch["rgb"][:, 0], batch["disparity"][:, 0])
        else:
            r, d = batch["rgb"], batch["disparity"]
            g = model.net.predict_pair(r[:, 0], d[:, 0], r[:, -1], d[:, -1])
    g = g.map(lambda t: t.float().detach().requires_grad_(t.is_floating_point()))
    bgs = torch.rand(B, 3, device="cuda")

    def render_only():
        if stage == 1:
            out = render_static(g, H, W, backgrounds=bgs)
        else:
            out = render_dynamic(g, batch["times"], H, W, backgrounds=bgs)
        (out.rgb.square().mean() + out.depth.mean()).backward()

    t_render = _timed(render_only, steps)
    model = opt = g = None  # free the GPU memory before the next stage (closures above still refer to them)
    torch.cuda.empty_cache()
    return {
        "stage": stage,
        "batch": B,
        "grad_checkpoint": grad_ckpt,
        "compile": compile_blocks,
        "step_ms": t_step,
        "samples_per_s": B / t_step * 1e3,
        "peak_GiB": peak,
        "network_ms": t_net,
        "render_ms": t_render,
        "other_ms": max(t_step - t_net - t_render, 0.0),
    }


def bench_loader(stage: int, batch: int, workers: int, n_batches: int) -> dict:
    from torch.utils.data import DataLoader

    from streamsplat_ns.data.clips import ClipDataset
    from streamsplat_ns.data.loading import WeightedSampler, collate_clips
    from streamsplat_ns.dataparsers.specs import DavisDataParserConfig

    out = DavisDataParserConfig().setup().get_dataparser_outputs("train")
    ds = ClipDataset(out.metadata["sequences"], 6 if stage == 2 else 1, size=(288, 512))
    loader = DataLoader(
        ds,
        batch_size=batch,
        sampler=WeightedSampler(ds.item_weights(), 0),
        num_workers=workers,
        collate_fn=collate_clips,
        pin_memory=True,
        prefetch_factor=4,
        persistent_workers=True,
    )
    it = iter(loader)
    for _ in range(workers):
        next(it)
    t = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    dt = (time.perf_counter() - t) / n_batches
    return {"stage": stage, "workers": workers, "batch_s": dt, "samples_per_s": batch / dt}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stages", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument(
        "--variants",
        nargs="+",
        default=["base"],
        help="any of: base, ckpt (gradient checkpointing), compile, ckpt+compile",
    )
    ap.add_argument("--no-loader", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    rows, loaders = [], []
    for st in args.stages:
        B = 32 if st == 1 else 16
        for v in args.variants:
            try:
                rows.append(bench_stage(st, args.steps, B, "ckpt" in v, "compile" in v))
            except torch.OutOfMemoryError as e:
                rows.append({"stage": st, "batch": B, "variant": v, "error": "out of memory: " + str(e)[:80]})
            rows[-1]["variant"] = v
            print(json.dumps(rows[-1]), flush=True)
            torch.cuda.empty_cache()
        if not args.no_loader:
            loaders.append(bench_loader(st, B, args.workers, 8))
            print(json.dumps(loaders[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"train": rows, "loader": loaders}, indent=1))
    print(f"\n{torch.cuda.get_device_name()}  torch {torch.__version__}")
    print("| stage | batch | variant | samples/s | step ms | peak GiB | network ms | render ms | other ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['stage']} | {r['batch']} | {r['variant']} | {r['error']} | | | | | |")
            continue
        print(
            f"| {r['stage']} | {r['batch']} | {r['variant']} | {r['samples_per_s']:.1f} | {r['step_ms']:.1f} | "
            f"{r['peak_GiB']:.1f} | {r['network_ms']:.1f} | {r['render_ms']:.1f} | {r['other_ms']:.1f} |"
        )
    for l in loaders:
        print(f"loader, stage {l['stage']}: {l['samples_per_s']:.1f} samples/s with {l['workers']} workers")


if __name__ == "__main__":
    main()
