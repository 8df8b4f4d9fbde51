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
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Type

import torch
from nerfstudio.engine.optimizers import OptimizerConfig
from nerfstudio.engine.schedulers import Scheduler, SchedulerConfig
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.decorators import check_main_thread
from nerfstudio.utils.rich_utils import CONSOLE
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from ..atomic import atomic_path, clean_stale_temps


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


FAULT_PAUSE_ENV = "STREAMSPLAT_FAULT_PAUSE_IN_SAVE"
"""Fault-injection hook (tests only): seconds to pause in the middle of writing a ``.ckpt``, so that a
kill lands inside the write."""
_STEP_CKPT = re.compile(r"step-(\d+)\.ckpt")


class _PausingWriter:
    """A file object that pauses once, after its first write (see :data:`FAULT_PAUSE_ENV`)."""

    def __init__(self, f, pause: float) -> None:
        self.f, self.pause, self.paused = f, pause, False

    def write(self, b) -> int:
        n = self.f.write(b)
        if not self.paused:
            self.paused = True
            self.f.flush()
            time.sleep(self.pause)
        return n

    def flush(self) -> None:
        self.f.flush()


def _write_state(state: Dict[str, Any], path: Path) -> None:
    pause = float(os.environ.get(FAULT_PAUSE_ENV, "0") or 0)
    if pause <= 0:
        torch.save(state, path)
        return
    with open(path, "wb") as f:
        torch.save(state, _PausingWriter(f, pause))


def step_checkpoints(load_dir: Path) -> List[Tuple[int, Path]]:
    """``(step, path)`` of the complete ``step-N.ckpt`` files in ``load_dir``, oldest first (anything else
    there, e.g. a stray temporary file, is ignored instead of breaking the step parsing)."""
    out = []
    for p in Path(load_dir).iterdir():
        m = _STEP_CKPT.fullmatch(p.name)
        if m and p.is_file():
            out.append((int(m[1]), p))
    return sorted(out)


def find_step_checkpoint(load_dir: Path, load_step: Optional[int] = None) -> Path:
    """The checkpoint a ``--load-dir`` (and ``--load-step``) run resumes from, or a clear error."""
    load_dir = Path(load_dir)
    if not load_dir.is_dir():
        raise FileNotFoundError(
            f"{load_dir}: no such checkpoint folder (--load-dir takes a run's nerfstudio_models/ folder)"
        )
    found = step_checkpoints(load_dir)
    if not found:
        raise FileNotFoundError(
            f"{load_dir}: no step-<N>.ckpt checkpoints in this folder (--load-dir takes a run's "
            f"nerfstudio_models/ folder; checkpoints are written every --steps-per-save steps)"
        )
    if load_step is None:
        return found[-1][1]
    path = load_dir / f"step-{load_step:09d}.ckpt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no checkpoint for --load-step {load_step}; available steps: {[s for s, _ in found]}"
        )
    return path


def read_training_checkpoint(path: Path) -> Dict[str, Any]:
    """Load a nerfstudio ``step-N.ckpt`` of ours safely (weights only) and validate it before any use:
    complete file, the expected entries, finite network weights. Errors name the file and the fix."""
    from ..networks.weights_io import CheckpointError, check_finite, torch_load

    path = Path(path)
    earlier = [p.name for _, p in step_checkpoints(path.parent) if p != path] if path.parent.is_dir() else []
    fix = (
        f"delete it (or pass --load-step) to use the previous checkpoint {earlier[-1]}"
        if earlier
        else "train again; no earlier checkpoint is in this folder"
    )
    state = torch_load(path, what="training checkpoint", fix=fix)
    need = ("step", "pipeline", "optimizers", "scalers")
    if not isinstance(state, dict) or any(k not in state for k in need):
        have = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            path, f"not a nerfstudio training checkpoint (expected entries {list(need)}, found {have})", fix
        )
    check_finite(state["pipeline"], source=path, fix=fix)
    return state


class StreamSplatTrainer(Trainer):
    config: StreamSplatTrainerConfig

    def __init__(self, config: StreamSplatTrainerConfig, local_rank: int = 0, world_size: int = 1) -> None:
        super().__init__(config, local_rank, world_size)
        self._last_save = time.time()
        self.nonfinite_skips = 0
        self._resume_state: Optional[Dict[str, Any]] = None
        self._resume_path: Optional[Path] = None

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        """Clean temporary files a killed run left behind, and validate the checkpoint to resume from before
        building anything (a damaged file fails in seconds, not after data and model set-up)."""
        if self.local_rank == 0:
            folders = {self.base_dir, self.checkpoint_dir}
            if self.config.load_dir is not None:
                folders |= {Path(self.config.load_dir), Path(self.config.load_dir).parent}
            removed = sum(clean_stale_temps(f) for f in folders)
            if removed:
                CONSOLE.print(f"removed {removed} temporary file(s) left by an interrupted checkpoint write")
        if self.config.load_dir is not None:
            self._resume_path = find_step_checkpoint(self.config.load_dir, self.config.load_step)
        elif self.config.load_checkpoint is not None:
            self._resume_path = Path(self.config.load_checkpoint)
        if self._resume_path is not None:
            self._resume_state = read_training_checkpoint(self._resume_path)
        super().setup(test_mode)

    def _load_checkpoint(self) -> None:
        state, path = self._resume_state, self._resume_path
        if state is None:
            CONSOLE.print("No Nerfstudio checkpoint to load, so training from scratch.")
            return
        self._resume_state = None
        self._start_step = int(state["step"]) + 1
        self.pipeline.load_pipeline(state["pipeline"], state["step"])
        self.optimizers.load_optimizers(state["optimizers"])
        if "schedulers" in state and self.config.load_scheduler:
            self.optimizers.load_schedulers(state["schedulers"])
        self.grad_scaler.load_state_dict(state["scalers"])
        CONSOLE.print(f"Done loading Nerfstudio checkpoint from {path} (step {state['step']})", soft_wrap=True)

    @check_main_thread
    def save_checkpoint(self, step: int) -> None:
        """Atomic: the ``.ckpt`` is written under a temporary name in the run folder (never in the folder
        ``--load-dir`` lists) and renamed; a full disk raises :class:`OutOfSpaceError` naming the file and
        leaves the previous checkpoint in place."""
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
        with atomic_path(ckpt_path, tmp_dir=self.base_dir) as tmp:
            _write_state(state, tmp)
        if self.config.save_only_latest_checkpoint:
            for _, f in step_checkpoints(self.checkpoint_dir):
                if f != ckpt_path:
                    f.unlink()
        from ..networks.checkpoint import save_checkpoint

        save_checkpoint(pipeline.model.net, self.base_dir / "model.safetensors")  # atomic itself
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
        needs_step = [
            g
            for g in self.optimizers.parameters.keys()
            if step % self.gradient_accumulation_steps[g] == self.gradient_accumulation_steps[g] - 1
        ]
        params = [p for g in needs_step for p in self.optimizers.parameters[g] if p.grad is not None]
        # one fused norm per tensor and a single host sync for the whole check
        finite = (
            bool(torch.isfinite(torch.stack(torch._foreach_norm([p.grad for p in params]))).all()) if params else True
        )
        if finite:
            self.optimizers.optimizer_scaler_step_some(self.grad_scaler, needs_step)
        else:
            self.nonfinite_skips += 1
            model = self.pipeline.model
            model.nonfinite_skips = self.nonfinite_skips
            CONSOLE.print(f"[yellow]step {step}: non-finite gradients, update skipped ({self.nonfinite_skips} so far)")
            self.optimizers.zero_grad_some(needs_step)
        self.grad_scaler.update()
        self.optimizers.scheduler_step_all(step)
        if (time.time() - self._last_save) / 60.0 >= self.config.checkpoint_every_minutes and step > self._start_step:
            self.save_checkpoint(step)
        return loss, loss_dict, metrics_dict
