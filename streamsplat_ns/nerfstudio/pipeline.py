"""Pipeline that hands whole clips to the model (VanillaPipeline only passes rays/cameras).

It also makes one resolution authoritative (the model's encoder config sets the dataparser's), wraps
the model in DDP with the right device ids on CPU (gloo) and GPU (NCCL), and lets the model fetch the
viewer's clip frames from the datamanager.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from time import time
from typing import Any, Dict, Literal, Optional, Type

import torch
import torch.distributed as dist
import torchvision.utils as vutils
from nerfstudio.models.base_model import Model
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils import profiler
from nerfstudio.utils.rich_utils import CONSOLE
from torch.cuda.amp.grad_scaler import GradScaler
from torch.nn.parallel import DistributedDataParallel as DDP

from .datamanager import StreamSplatDataManagerConfig
from .model import StreamSplatModelConfig


@dataclass
class StreamSplatPipelineConfig(VanillaPipelineConfig):
    _target: Type = field(default_factory=lambda: StreamSplatPipeline)
    datamanager: StreamSplatDataManagerConfig = field(default_factory=StreamSplatDataManagerConfig)
    model: StreamSplatModelConfig = field(default_factory=StreamSplatModelConfig)


class StreamSplatPipeline(VanillaPipeline):
    config: StreamSplatPipelineConfig

    def __init__(
        self,
        config: StreamSplatPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: Optional[GradScaler] = None,
    ) -> None:
        torch.nn.Module.__init__(self)
        install_eval_hook()  # ns-eval / ns-render / exports then validate our checkpoints before loading them
        self.config = config
        self.test_mode = test_mode
        enc = config.model.encoder
        dp = config.datamanager.dataparser
        if hasattr(dp, "image_height"):  # the model's resolution is the one source of truth
            dp.image_height, dp.image_width = enc.image_height, enc.image_width
        self.datamanager = config.datamanager.setup(
            device=device, test_mode=test_mode, world_size=world_size, local_rank=local_rank
        )
        self.datamanager.to(device)
        assert self.datamanager.train_dataset is not None, "Missing input dataset"
        self._model = config.model.setup(
            scene_box=self.datamanager.train_dataset.scene_box,
            num_train_data=len(self.datamanager.train_dataset),
            metadata=self.datamanager.train_dataset.metadata,
            device=device,
            grad_scaler=grad_scaler,
        )
        self.model.to(device)
        self.model.clip_provider = self.datamanager.load_display_frames
        names = self.datamanager.train_dataset.metadata.get("clip_names", [])
        self.model.clip_names = list(names)
        self.model.viewer_clip.max = max(len(names) - 1, 1)
        self.world_size = world_size
        if world_size > 1:
            on_cuda = torch.device(device).type == "cuda"
            self._model = typing.cast(
                Model, DDP(self._model, device_ids=[local_rank] if on_cuda else None, find_unused_parameters=False)
            )
            if on_cuda:
                dist.barrier(device_ids=[local_rank])
            else:
                dist.barrier()

    # ------------------------------------------------------------------ train / eval losses
    @profiler.time_function
    def get_train_loss_dict(self, step: int):
        cameras, batch = self.datamanager.next_train(step)
        outputs = self._model(cameras, batch)  # through DDP, so gradients are all-reduced
        metrics = self.model.get_metrics_dict(outputs, batch)
        losses = self.model.get_loss_dict(outputs, batch, metrics)
        return outputs, losses, metrics

    @profiler.time_function
    def get_eval_loss_dict(self, step: int):
        self.eval()
        with torch.no_grad():
            cameras, batch = self.datamanager.next_eval(step)
            outputs = self.model(cameras, batch)
            metrics = self.model.get_metrics_dict(outputs, batch)
            losses = self.model.get_loss_dict(outputs, batch, metrics)
        self.train()
        return outputs, losses, metrics

    @profiler.time_function
    def get_eval_image_metrics_and_images(self, step: int):
        self.eval()
        with torch.no_grad():
            cameras, batch = self.datamanager.next_eval_image(step)
            outputs = self.model(cameras, batch)
            metrics, images = self.model.get_image_metrics_and_images(outputs, batch)
        metrics["num_rays"] = float(cameras.size * self.datamanager.image_size[0] * self.datamanager.image_size[1])
        self.train()
        return metrics, images

    @profiler.time_function
    def get_average_eval_image_metrics(
        self, step: Optional[int] = None, output_path: Optional[Path] = None, get_std: bool = False
    ) -> Dict[str, float]:
        """Mean (and std) of the paper's metrics over the fixed evaluation windows (ns-eval)."""
        self.eval()
        rows = []
        if output_path is not None:
            output_path.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            for idx, (cameras, batch) in enumerate(self.datamanager.eval_batches()):
                t0 = time()
                outputs = self.model(cameras, batch)
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                dt = time() - t0
                metrics, images = self.model.get_image_metrics_and_images(outputs, batch)
                metrics["clips_per_sec"] = 1.0 / max(dt, 1e-9)
                rows.append(metrics)
                if output_path is not None:
                    for key, img in images.items():
                        vutils.save_image(img.permute(2, 0, 1).cpu(), output_path / f"eval_{key}_{idx:04d}.png")
        self.train()
        out: Dict[str, Any] = {}
        for key in rows[0]:
            vals = torch.tensor([r[key] for r in rows if key in r], dtype=torch.float64)
            out[key] = float(vals.mean())
            if get_std:
                out[f"{key}_std"] = float(vals.std()) if len(vals) > 1 else 0.0
        out["num_clips"] = len(rows)
        return out


def _checked_eval_load_checkpoint(config, pipeline):
    """nerfstudio's ``eval_load_checkpoint`` (ns-eval, ns-render, ns-viewer, streamsplat-export) for our
    pipelines: pick the checkpoint robustly and validate it first; other methods use the original."""
    from .trainer import find_step_checkpoint, read_training_checkpoint

    if not isinstance(pipeline, StreamSplatPipeline):
        return _original_eval_load_checkpoint(config, pipeline)
    path = find_step_checkpoint(config.load_dir, config.load_step)
    state = read_training_checkpoint(path)
    pipeline.load_pipeline(state["pipeline"], state["step"])
    CONSOLE.print(f":white_check_mark: Done loading checkpoint from {path}", soft_wrap=True)
    return path, int(state["step"])


_original_eval_load_checkpoint = None


def install_eval_hook() -> None:
    """Route nerfstudio's ``eval_load_checkpoint`` through :func:`_checked_eval_load_checkpoint` (idempotent).
    Called when a StreamSplat pipeline is built, i.e. before ``eval_setup`` loads its checkpoint; importing
    ``eval_utils`` at module level would be circular (it discovers the methods, which import this module)."""
    global _original_eval_load_checkpoint
    from nerfstudio.utils import eval_utils

    if eval_utils.eval_load_checkpoint is not _checked_eval_load_checkpoint:
        _original_eval_load_checkpoint = eval_utils.eval_load_checkpoint
        eval_utils.eval_load_checkpoint = _checked_eval_load_checkpoint
