"""Helpers to run the small nerfstudio methods in-process in tests (CPU, tiny batches)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch


def small_config(
    out: Path,
    stage: str = "encoder",
    steps: int = 2,
    batch_size: int = 2,
    encoder_ckpt: Optional[Path] = None,
    load_dir: Optional[Path] = None,
    steps_per_save: int = 1000,
):
    from streamsplat_ns.method_configs.methods import scripted_config

    cfg = scripted_config(stage, True, out, steps, experiment="test")
    cfg.steps_per_save = steps_per_save
    cfg.logging.local_writer.enable = False
    cfg.pipeline.datamanager.batch_size = batch_size
    cfg.pipeline.datamanager.eval_num_clips = 1
    cfg.pipeline.model.lpips_start_step = 10**9
    cfg.pipeline.model.encoder_checkpoint = encoder_ckpt
    cfg.load_dir = load_dir
    return cfg


def train(cfg, local_rank: int = 0, world_size: int = 1):
    from nerfstudio.scripts.train import _set_random_seed

    _set_random_seed(cfg.machine.seed + local_rank)  # as ns-train does
    if local_rank == 0:
        cfg.save_config()
    trainer = cfg.setup(local_rank=local_rank, world_size=world_size)
    trainer.setup()
    trainer.train()
    return trainer


def params(trainer) -> dict:
    return {k: v.detach().clone() for k, v in trainer.pipeline.model.net.state_dict().items()}


def run_dir(cfg) -> Path:
    return Path(cfg.output_dir) / cfg.experiment_name / cfg.method_name / cfg.timestamp


torch.set_num_threads(2)
