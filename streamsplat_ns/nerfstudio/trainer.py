"""Trainer and scheduler pieces nerfstudio 1.1.5 lacks for long feed-forward training runs.

- Checkpoints are written atomically (temp file + rename), every ``steps_per_save`` steps and every
  ``checkpoint_every_minutes``; next to them ``model.safetensors`` holds the network weights in our
  own format (what ``streamsplat_ns.api.load_checkpoint`` and stage 2's ``encoder_checkpoint`` read).
- Steps whose gradients are not finite are skipped (gradients zeroed, no optimiser step) and counted.
- The warm-up + cosine schedule returns Python floats, so checkpoints contain no numpy scalars and
  load with ``torch.load(weights_only=True)`` (nerfstudio's own schedulers break ns-eval, ns-viewer,
  ns-render and --load-dir on torch >= 2.6).
"""

from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Tuple, Type

import torch
from nerfstudio.engine.optimizers import OptimizerConfig
from nerfstudio.engine.schedulers import Scheduler, SchedulerConfig
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.decorators import check_main_thread
from nerfstudio.utils.rich_utils import CONSOLE
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler


@dataclass
class AdamWOptimizerConfig(OptimizerConfig):
    _target: Type = torch.optim.AdamW
    weight_decay: float = 0.05
    betas: Tuple[float, float] = (0.9, 0.95)


@dataclass
class WarmupCosineSchedulerConfig(SchedulerConfig):
    """Linear warm-up from ~0, then cosine decay to ``final_ratio * lr`` at ``max_steps`` (paper recipe)."""

    _target: Type = field(default_factory=lambda: WarmupCosineScheduler)
    warmup_steps: int = 50_000
    max_steps: int = 1_000_000
    final_ratio: float = 0.1


class WarmupCosineScheduler(Scheduler):
    config: WarmupCosineSchedulerConfig

    def get_scheduler(self, optimizer: Optimizer, lr_init: float) -> LRScheduler:
        c = self.config

        def factor(step: int) -> float:
            if step < c.warmup_steps:
                return float((step + 1) / max(c.warmup_steps, 1))
            span = max(c.max_steps - c.warmup_steps, 1)
            p = min((step - c.warmup_steps) / span, 1.0)
            return float(c.final_ratio + (1.0 - c.final_ratio) * 0.5 * (1.0 + math.cos(math.pi * p)))

        return LambdaLR(optimizer, lr_lambda=factor)


@dataclass
class StreamSplatTrainerConfig(TrainerConfig):
    _target: Type = field(default_factory=lambda: StreamSplatTrainer)
    checkpoint_every_minutes: float = 30.0
    """Also save when this much wall time has passed since the last checkpoint."""


def _atomic_write(path: Path, tmp_dir: Path, write) -> None:
    """Write to a temp file in ``tmp_dir`` (never the folder --load-dir lists), then rename into place."""
    tmp = tmp_dir / f".{path.name}.{os.getpid()}.tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class StreamSplatTrainer(Trainer):
    config: StreamSplatTrainerConfig

    def __init__(self, config: StreamSplatTrainerConfig, local_rank: int = 0, world_size: int = 1) -> None:
        super().__init__(config, local_rank, world_size)
        self._last_save = time.time()
        self.nonfinite_skips = 0

    @check_main_thread
    def save_checkpoint(self, step: int) -> None:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        ckpt_path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline
        state = {
            "step": step,
            "pipeline": pipeline.state_dict(),
            "optimizers": {k: v.state_dict() for (k, v) in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for (k, v) in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
        }
        _atomic_write(ckpt_path, self.base_dir, lambda p: torch.save(state, p))
        if self.config.save_only_latest_checkpoint:
            for f in self.checkpoint_dir.glob("*.ckpt"):
                if f != ckpt_path:
                    f.unlink()
        from ..api import save_checkpoint

        net = pipeline.model.net
        _atomic_write(self.base_dir / "model.safetensors", self.base_dir, lambda p: save_checkpoint(net, p))
        self._last_save = time.time()

    def train_iteration(self, step: int):
        needs_zero = [g for g in self.optimizers.parameters.keys() if step % self.gradient_accumulation_steps[g] == 0]
        self.optimizers.zero_grad_some(needs_zero)
        device_type = self.device.split(":")[0]
        device_type = "cpu" if device_type == "mps" else device_type
        with torch.autocast(device_type=device_type, enabled=self.mixed_precision):
            _, loss_dict, metrics_dict = self.pipeline.get_train_loss_dict(step=step)
            loss = functools.reduce(torch.add, loss_dict.values())
        self.grad_scaler.scale(loss).backward()  # type: ignore
        needs_step = [g for g in self.optimizers.parameters.keys()
                      if step % self.gradient_accumulation_steps[g] == self.gradient_accumulation_steps[g] - 1]
        params = [p for g in needs_step for p in self.optimizers.parameters[g] if p.grad is not None]
        # one fused norm per tensor and a single host sync for the whole check
        finite = bool(torch.isfinite(torch.stack(torch._foreach_norm([p.grad for p in params]))).all()) if params else True
        if finite:
            self.optimizers.optimizer_scaler_step_some(self.grad_scaler, needs_step)
        else:
            self.nonfinite_skips += 1
            model = self.pipeline.model
            model.nonfinite_skips = self.nonfinite_skips
            CONSOLE.print(f"[yellow]step {step}: non-finite gradients, update skipped "
                          f"({self.nonfinite_skips} so far)")
            self.optimizers.zero_grad_some(needs_step)
        self.grad_scaler.update()
        self.optimizers.scheduler_step_all(step)
        if (time.time() - self._last_save) / 60.0 >= self.config.checkpoint_every_minutes and step > self._start_step:
            self.save_checkpoint(step)
        return loss, loss_dict, metrics_dict
