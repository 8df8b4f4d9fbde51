"""nerfstudio Model wrapping the StreamSplat networks: outputs, losses and metrics.

Training and evaluation go through ``forward(cameras, batch)`` (the pipeline passes the clip batch,
which a feed-forward model needs); the viewer, ``ns-render`` and export go through
``get_outputs_for_camera`` of ``viewer.StreamSplatViewerMixin`` (clip cache, GUI, orthographic cameras).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor
from torch.nn import Parameter

from ..losses import coarse_mse, masked_mse, psnr, ssi_depth_loss, ssim
from ..lpips import LPIPSVGG, load_lpips, lpips_256
from ..networks.config import DecoderConfig, EncoderConfig
from ..networks.model import StreamSplat
from ..rendering import render_dynamic, render_static
from .viewer import StreamSplatViewerMixin

logger = logging.getLogger(__name__)


@dataclass
class StreamSplatModelConfig(ModelConfig):
    _target: Type = field(default_factory=lambda: StreamSplatModel)
    enable_collider: bool = False
    stage: Literal["encoder", "decoder"] = "encoder"
    """'encoder' trains stage 1 (static); 'decoder' trains stage 2 with the encoder frozen."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    encoder_checkpoint: Optional[Path] = None
    """Stage 2: the stage-1 weights to start from and freeze (ours, .safetensors, or the authors')."""
    dino_weights: Optional[Path] = None
    """Stage 2: local dinov2_vitb14_reg4_pretrain.pth (never downloaded)."""
    allow_random_dino: bool = False
    """Train stage 2 with randomly initialised DINO features (small CPU variants and tests only)."""
    lambda_depth: float = 0.05
    robust_depth_threshold: float = 0.0
    """> 0 enables the stage-2 robust depth weighting (paper: 0.3, with lambda_depth 0.01)."""
    depth_alpha_threshold: float = 0.0
    """Only pixels with rendered alpha above this count in the depth loss (stage 2: 0.1)."""
    lambda_mask: float = 0.0
    """Foreground-mask MSE weight (stage 2: 3.0; applied, unlike the released code)."""
    lambda_coarse: float = 0.0
    """Not in the paper (0 in its configs): weight of ``losses.coarse_mse``, MSE of box-filtered renders, which
    keeps a gradient for motion larger than a Gaussian. For small recipes whose decoder settles on cross-fading."""
    coarse_factors: Tuple[int, ...] = (4, 16)
    """Box-filter sizes (pixels) of ``lambda_coarse``."""
    lambda_lpips: float = 0.05
    lpips_start_step: int = 0
    lpips_vgg_path: Optional[Path] = None
    """torchvision's vgg16-397923af.pth (local)."""
    lpips_lin_path: Optional[Path] = None
    """The lpips package's weights/v0.1/vgg.pth (local)."""
    bf16: bool = True
    """bf16 autocast of the transformers on CUDA (heads and rendering stay fp32)."""
    grad_checkpoint: bool = False
    """Recompute transformer blocks in backward: less activation memory for larger batches."""
    compile_blocks: bool = False
    """torch.compile each transformer block on CUDA (fuses the fp32 norm/residual element-wise work)."""
    random_background: bool = True
    eval_background: float = 0.5
    render_backend: Literal["auto", "torch", "cuda"] = "auto"
    viewer_key_gap: int = 5
    """Frames between the two key frames of a pair when the viewer reconstructs a clip (stage 2)."""
    viewer_max_cached_pairs: int = 8
    variant_note: str = ""
    """Set when a method name resolved to another variant on this machine (method_configs); shown at start-up."""


class StreamSplatModel(StreamSplatViewerMixin, Model):
    config: StreamSplatModelConfig

    def __init__(self, config: StreamSplatModelConfig, *args, **kwargs) -> None:
        super().__init__(config, *args, **kwargs)
        # nerfstudio's device marker never gets a gradient: keep it out of DDP's reducer so DDP can run
        # without the (slower) unused-parameter search
        self.device_indicator_param.requires_grad_(False)

    # ------------------------------------------------------------------ setup
    def populate_modules(self) -> None:
        cfg = self.config
        if cfg.variant_note:
            CONSOLE.print(f"[bold yellow]{cfg.variant_note}")
        dec = cfg.decoder if cfg.stage == "decoder" else None
        self.net = StreamSplat(cfg.encoder, dec)
        if dec is not None:
            self._init_stage2()
        if cfg.grad_checkpoint:
            self.net.set_grad_checkpointing(True)
        if cfg.compile_blocks and torch.cuda.is_available():
            self.net.compile_blocks()  # training calls only: see StreamSplat.compile_blocks (recompile limit)
        self._lpips: Optional[LPIPSVGG] = None
        self._lpips_checked = False
        self.nonfinite_skips = 0
        self._init_viewer()

    def _init_stage2(self) -> None:
        cfg = self.config
        if cfg.encoder_checkpoint is not None:
            self.load_encoder_weights(cfg.encoder_checkpoint)
        else:
            logger.warning("stage 2 without encoder_checkpoint: the frozen encoder keeps its random initialisation")
        if cfg.dino_weights is not None:
            self.net.dino.model.load_pretrained(cfg.dino_weights)
        elif not cfg.allow_random_dino:
            raise FileNotFoundError(
                "stage 2 needs local DINOv2 weights: pass --pipeline.model.dino-weights "
                "/path/to/dinov2_vitb14_reg4_pretrain.pth (nothing is downloaded), or "
                "--pipeline.model.allow-random-dino True for smoke tests"
            )
        else:
            logger.warning("stage 2 with randomly initialised DINOv2 features (allow_random_dino=True)")
        self.net.freeze_static()
        self.net.dino.requires_grad_(False)

    def load_encoder_weights(self, path: Path) -> None:
        """Copy a stage-1 checkpoint's encoder (ours or the authors') into the frozen encoder, strictly."""
        from ..networks.checkpoint import check_state_dict, load_checkpoint

        src = load_checkpoint(
            path, "cpu", image_size=(self.config.encoder.image_height, self.config.encoder.image_width)
        )
        theirs = src.encoder.state_dict()
        ours = self.net.encoder.state_dict()
        check_state_dict(
            ours,
            theirs,
            source=path,
            what="this model's encoder config",
            ignore=set(theirs) - set(ours),
            fix="check --pipeline.model.encoder.* against the checkpoint",
        )
        self.net.encoder.load_state_dict({k: theirs[k] for k in ours}, strict=True)
        logger.info("loaded the frozen stage-1 encoder from %s", path)

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        return {"networks": [p for p in self.net.parameters() if p.requires_grad]}

    # ------------------------------------------------------------------ helpers
    @property
    def image_size(self) -> Tuple[int, int]:
        return self.config.encoder.image_height, self.config.encoder.image_width

    def _autocast(self):
        on_cuda = self.device.type == "cuda"
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda and self.config.bf16)

    def _backgrounds(self, n: int, train: bool) -> Tensor:
        if train and self.config.random_background:
            return torch.rand(n, 3, device=self.device)
        return torch.full((n, 3), self.config.eval_background, device=self.device)

    def lpips_net(self) -> Optional[LPIPSVGG]:
        if not self._lpips_checked:
            self._lpips_checked = True
            net = load_lpips(self.config.lpips_vgg_path, self.config.lpips_lin_path, "the LPIPS loss/metric")
            self._lpips = None if net is None else net.to(self.device)
        return self._lpips

    # ------------------------------------------------------------------ forward
    def forward(self, cameras: Optional[Cameras] = None, batch: Optional[Dict[str, Any]] = None):  # type: ignore[override]
        if batch is None:
            assert cameras is not None
            return self.get_outputs_for_camera(cameras)
        return self.get_outputs(cameras, batch)

    def get_outputs(self, cameras: Optional[Cameras], batch: Dict[str, Any]) -> Dict[str, Any]:  # type: ignore[override]
        rgb, disp = batch["rgb"].to(self.device), batch["disparity"].to(self.device)  # [B,V,3,H,W], [B,V,1,H,W]
        B, V = rgb.shape[:2]
        H, W = self.image_size
        with self._autocast():
            if self.config.stage == "encoder":
                g = self.net.predict_static(rgb[:, 0], disp[:, 0])
            else:
                g = self.net.predict_pair(rgb[:, 0], disp[:, 0], rgb[:, -1], disp[:, -1])
        g = g.map(lambda t: t.float())
        bgs = self._backgrounds(B, self.training)
        if self.config.stage == "encoder":
            out = render_static(g, H, W, backgrounds=bgs, backend=self.config.render_backend)
            out = out.reshape(B, 1)
        else:
            times = batch["times"].to(self.device).float()
            out = render_dynamic(g, times, H, W, backgrounds=bgs, backend=self.config.render_backend)
        return {"rgb": out.rgb, "depth": out.depth, "accumulation": out.alpha, "gaussians": g}

    @staticmethod
    def _targets(batch: Dict[str, Any], device) -> Tuple[Tensor, Tensor, Tensor]:
        rgb = batch["rgb"].to(device).permute(0, 1, 3, 4, 2)  # [B,V,H,W,3]
        disp = batch["disparity"].to(device).permute(0, 1, 3, 4, 2)
        mask = batch.get("mask")
        mask = torch.zeros_like(disp) if mask is None else mask.to(device).permute(0, 1, 3, 4, 2)
        return rgb, disp, mask

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        gt, _, _ = self._targets(batch, self.device)
        pred = outputs["rgb"]
        m = {"psnr": psnr(pred.detach(), gt)}
        if pred.shape[1] > 2:
            m["psnr_key"] = psnr(pred[:, [0, -1]].detach(), gt[:, [0, -1]])
            m["psnr_middle"] = psnr(pred[:, 1:-1].detach(), gt[:, 1:-1])
        m["nonfinite_grad_skips"] = torch.tensor(float(self.nonfinite_skips))
        return m

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        cfg = self.config
        gt, disp, mask = self._targets(batch, self.device)
        pred = outputs["rgb"]
        losses = {"mse": F.mse_loss(pred, gt)}
        if cfg.lambda_depth > 0:
            B = pred.shape[0]
            valid = None
            if cfg.depth_alpha_threshold > 0:
                valid = outputs["accumulation"].detach() > cfg.depth_alpha_threshold
            # depth of the renderer: accumulated depth divided by alpha (metric depth where covered)
            depth = outputs["depth"] / outputs["accumulation"].clamp_min(1e-6)
            losses["depth"] = cfg.lambda_depth * ssi_depth_loss(
                depth.reshape(B, -1),
                disp.reshape(B, -1),
                None if valid is None else valid.reshape(B, -1),
                robust_threshold=cfg.robust_depth_threshold,
            )
        if cfg.lambda_coarse > 0:
            losses["coarse"] = cfg.lambda_coarse * coarse_mse(pred, gt, cfg.coarse_factors)
        if cfg.lambda_mask > 0:
            losses["mask"] = cfg.lambda_mask * masked_mse(pred, gt, mask)
        if cfg.lambda_lpips > 0 and self.training and self._step >= cfg.lpips_start_step:
            net = self.lpips_net()
            if net is not None:
                losses["lpips"] = cfg.lambda_lpips * lpips_256(net, pred, gt)
        return losses

    _step: int = 0

    def get_training_callbacks(self, training_callback_attributes):
        from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation

        def set_step(step: int) -> None:
            # every random draw of a step (backgrounds, position samples) is a function of the step and
            # rank, so --load-dir resumes exactly
            self._step = step
            rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
            torch.manual_seed(1_000_003 * (rank + 1) + step)

        return [TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], set_step)]

    @torch.no_grad()
    def get_image_metrics_and_images(self, outputs, batch) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """Paper protocol: PSNR / SSIM / LPIPS at 256x256 on key frames and (stage 2) middle frames."""
        gt, _, _ = self._targets(batch, self.device)
        pred = outputs["rgb"].clamp(0, 1)

        def at256(x: Tensor) -> Tensor:
            lead = x.shape[:-3]
            y = x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2)
            y = F.interpolate(y, size=(256, 256), mode="bilinear", align_corners=False)
            return y.permute(0, 2, 3, 1).reshape(*lead, 256, 256, 3)

        p, g = at256(pred), at256(gt)
        groups = {"key": [0, -1] if pred.shape[1] > 1 else [0]}
        if pred.shape[1] > 2:
            groups["middle"] = list(range(1, pred.shape[1] - 1))
        metrics: Dict[str, float] = {}
        net = self.lpips_net()
        for name, idx in groups.items():
            metrics[f"psnr_{name}"] = float(psnr(p[:, idx], g[:, idx]))
            metrics[f"ssim_{name}"] = float(ssim(p[:, idx], g[:, idx]))
            if net is not None:
                metrics[f"lpips_{name}"] = float(lpips_256(net, pred[:, idx], gt[:, idx]))
        metrics["psnr"] = float(psnr(p, g))
        if "middle" in groups:  # simple baselines on the same middle frames (no model involved)
            t = batch["times"].to(self.device).float()[:, 1:-1, None, None, None]
            g0, g1, gm = g[:, :1], g[:, -1:], g[:, 1:-1]
            metrics["psnr_middle_baseline_nearest"] = float(psnr(torch.where(t < 0.5, g0, g1), gm))
            metrics["psnr_middle_baseline_blend"] = float(psnr((1 - t) * g0 + t * g1, gm))
        strip_pred = torch.cat(list(pred[0]), dim=1)
        strip_gt = torch.cat(list(gt[0]), dim=1)
        images = {
            "img": torch.cat([strip_gt, strip_pred], dim=0),
            "accumulation": torch.cat(list(outputs["accumulation"][0]), dim=1),
        }
        return metrics, images
