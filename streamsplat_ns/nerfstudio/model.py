"""nerfstudio Model wrapping the StreamSplat networks: losses, metrics and viewer rendering.

Training and evaluation go through ``forward(cameras, batch)`` (the pipeline passes the clip batch,
which a feed-forward model needs); the viewer, ``ns-render`` and export go through
``get_outputs_for_camera``, which reconstructs the chosen clip on demand, caches it, and renders it
at ``camera.times`` from the viewer's camera turned orthographic.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Literal, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.viewer.viewer_elements import ViewerControl, ViewerNumber, ViewerSlider
from torch import Tensor
from torch.nn import Parameter

from ..gaussians import DynamicGaussians, Gaussians
from ..losses import masked_mse, psnr, ssi_depth_loss, ssim
from ..lpips import LPIPSVGG, load_lpips, lpips_256
from ..networks.config import DecoderConfig, EncoderConfig
from ..networks.model import StreamSplat
from ..rendering import render_dynamic, render_static
from ..rendering.camera import opengl_c2w_to_viewmat

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


class StreamSplatModel(Model):
    config: StreamSplatModelConfig

    def __init__(self, config: StreamSplatModelConfig, *args, **kwargs) -> None:
        self.clip_provider: Optional[Callable[[int], Tuple[Tensor, Tensor, int]]] = None
        self.clip_names: List[str] = []
        super().__init__(config, *args, **kwargs)
        # nerfstudio's device marker never gets a gradient: keep it out of DDP's reducer so DDP can run
        # without the (slower) unused-parameter search
        self.device_indicator_param.requires_grad_(False)

    # ------------------------------------------------------------------ setup
    def populate_modules(self) -> None:
        cfg = self.config
        dec = cfg.decoder if cfg.stage == "decoder" else None
        self.net = StreamSplat(cfg.encoder, dec)
        if dec is not None:
            self._init_stage2()
        if cfg.grad_checkpoint:
            self.net.set_grad_checkpointing(True)
        if cfg.compile_blocks and torch.cuda.is_available():
            from ..networks.layers import Block, CrossBlock

            for m in self.net.modules():
                if isinstance(m, (Block, CrossBlock)):
                    m.compile(dynamic=False)
        self._lpips: Optional[LPIPSVGG] = None
        self._lpips_checked = False
        self.nonfinite_skips = 0
        self._cache: "OrderedDict[Tuple, Any]" = OrderedDict()
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
                "--pipeline.model.allow-random-dino True for smoke tests")
        else:
            logger.warning("stage 2 with randomly initialised DINOv2 features (allow_random_dino=True)")
        self.net.freeze_static()
        self.net.dino.requires_grad_(False)

    def load_encoder_weights(self, path: Path) -> None:
        """Copy a stage-1 checkpoint's encoder (ours or the authors') into the frozen encoder, strictly."""
        from ..api import load_checkpoint

        src = load_checkpoint(path, "cpu", image_size=(self.config.encoder.image_height,
                                                       self.config.encoder.image_width))
        theirs = src.encoder.state_dict()
        ours = self.net.encoder.state_dict()
        missing = sorted(k for k in ours if k not in theirs)
        wrong = sorted(k for k in ours if k in theirs and theirs[k].shape != ours[k].shape)
        if missing or wrong:
            raise ValueError(f"{path}: encoder does not fit this model's encoder config: missing {missing[:8]}, "
                             f"wrong shapes {wrong[:8]} (check --pipeline.model.encoder.* against the checkpoint)")
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
                valid = (outputs["accumulation"].detach() > cfg.depth_alpha_threshold)
            # depth of the renderer: accumulated depth divided by alpha (metric depth where covered)
            depth = outputs["depth"] / outputs["accumulation"].clamp_min(1e-6)
            losses["depth"] = cfg.lambda_depth * ssi_depth_loss(
                depth.reshape(B, -1), disp.reshape(B, -1), None if valid is None else valid.reshape(B, -1),
                robust_threshold=cfg.robust_depth_threshold)
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
        images = {"img": torch.cat([strip_gt, strip_pred], dim=0),
                  "accumulation": torch.cat(list(outputs["accumulation"][0]), dim=1)}
        return metrics, images

    # ------------------------------------------------------------------ viewer / ns-render / export
    # nerfstudio's viewer and ns-render hand us perspective cameras; StreamSplat's scene only makes sense
    # orthographically. camera_to_ortho keeps the pose and turns the perspective framing at the orbit
    # pivot into an orthographic one, so the canonical view, orbits and scroll-zoom all behave.

    VIEWER_PIVOT_Y_HAT = 0.5
    """The viewer orbits about (0, depth(y_hat), 0): the middle of the canonical volume in inverse depth."""
    VIEWER_CPU_MAX_SCALE = 2.0
    """On CPU the viewer renders at most this multiple of the model resolution and upsamples (the torch
    rasteriser is too slow for 512-px renders at interactive rates)."""
    _ORTHO_PUSHBACK = 100.0
    """The ortho camera is moved back so the pivot sits this far in front: nothing near it is near-culled."""

    def _init_viewer(self) -> None:
        """GUI elements (nerfstudio finds public ViewerElement / ViewerControl attributes of the model)."""
        import os

        clip0 = int(os.environ.get("STREAMSPLAT_CLIP", "0") or 0)  # ns-render has no way to pass a clip
        self.viewer_clip = ViewerSlider("Clip", clip0, 0, max(1, clip0), 1, cb_hook=lambda _: self._cache.clear(),
                                        hint="which video (display clip) to reconstruct")
        self.viewer_zoom = ViewerNumber("Ortho zoom", 1.0, cb_hook=lambda _: None,
                                        hint="extra zoom on top of the viewer camera's (1 = canonical framing)")
        self.viewer_control = _CanonicalViewControl()

    @classmethod
    def viewer_pivot(cls) -> Tuple[float, float, float]:
        from ..rendering.dynamic import DEPTH_A, DEPTH_B

        return (0.0, 1.0 / (DEPTH_A + DEPTH_B * cls.VIEWER_PIVOT_Y_HAT), 0.0)

    @classmethod
    def canonical_viewer_c2w(cls, fov_deg: float, yaw_deg: float = 0.0, pitch_deg: float = 0.0) -> Tensor:
        """OpenGL camera-to-world [3, 4] of a perspective camera (vertical ``fov_deg``) that ``camera_to_ortho``
        maps exactly onto the canonical view; yaw (about world up, z) and pitch orbit it about the pivot.

        Shared by the viewer's initial camera and ``streamsplat-camera-path``."""
        yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
        cz, sz, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
        Rz = torch.tensor([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
        Rx = torch.tensor([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]], dtype=torch.float64)
        R = Rz @ Rx  # columns: right, forward, up (canonical: +x, +y, +z)
        right, forward, up = R[:, 0], R[:, 1], R[:, 2]
        dist = 1.0 / math.tan(math.radians(fov_deg) / 2.0)
        pos = torch.tensor(cls.viewer_pivot(), dtype=torch.float64) - dist * forward
        return torch.stack([right, up, -forward, pos], dim=1).float()

    def clip_gaussians(self, clip: int, t: float) -> Tuple[Any, float]:
        """Gaussians that render clip ``clip`` at normalised time ``t`` in [0, 1], and their local time.

        Stage 1: the static Gaussians of the nearest frame. Stage 2: the dynamic Gaussians of the key
        pair that contains ``t`` (pairs every ``viewer_key_gap`` frames) and the time inside it. Cached per
        training step, so the viewer during training shows the current weights.
        """
        if self.clip_provider is None:
            raise RuntimeError("no clip source attached to the model (the pipeline attaches the datamanager's)")
        n = self.clip_provider(clip, None)[2]
        f = float(min(max(t, 0.0), 1.0)) * (n - 1)
        step = int(self._step)  # new weights during training -> new Gaussians
        if self.config.stage == "encoder":
            k = int(round(f))
            key: Tuple = ("static", clip, k, step)
            if key not in self._cache:
                rgb, disp, _ = self.clip_provider(clip, [k])
                with self._autocast():
                    self._cache[key] = self.net.predict_static(rgb.to(self.device), disp.to(self.device)).map(
                        lambda x: x.float())
            out, local = self._cache[key], 0.0
        else:
            gap = max(1, min(self.config.viewer_key_gap, n - 1))
            k = min(int(f // gap), max((n - 1) // gap - 1, 0))
            a, b = k * gap, min((k + 1) * gap, n - 1)
            key = ("pair", clip, a, b, step)
            if key not in self._cache:
                rgb, disp, _ = self.clip_provider(clip, [a, b])
                rgb, disp = rgb.to(self.device), disp.to(self.device)
                with self._autocast():
                    self._cache[key] = self.net.predict_pair(rgb[:1], disp[:1], rgb[1:], disp[1:]).map(
                        lambda x: x.float())
            out, local = self._cache[key], (f - a) / max(b - a, 1)
        self._cache.move_to_end(key)
        while len(self._cache) > self.config.viewer_max_cached_pairs:
            self._cache.popitem(last=False)
        return out, float(min(max(local, 0.0), 1.0))

    def camera_to_ortho(self, camera: Cameras) -> Tuple[Tensor, Tensor, int, int, float]:
        """Any nerfstudio camera -> (viewmat, K, H, W, z_offset) of an orthographic view of the canonical scene.

        ORTHOPHOTO cameras (the datamanager's) keep their intrinsics (pixels per world unit). Perspective
        ones (viewer, ns-render) keep their pose; the ortho scale is the perspective one at the pivot's depth,
        so the view from ``canonical_viewer_c2w`` is exactly the canonical image and scrolling in zooms in.
        x is scaled by the model's aspect ratio, like the canonical camera's anisotropic pixels. The camera
        is then moved back along its axis by ``z_offset`` (no effect on an ortho image) so no Gaussian is
        near-culled; "Ortho zoom" multiplies the scale.
        """
        H, W = int(camera.height.reshape(-1)[0]), int(camera.width.reshape(-1)[0])
        c2w = camera.camera_to_worlds.reshape(-1, 3, 4)[0].to(self.device).float()
        viewmat = opengl_c2w_to_viewmat(c2w)
        zoom = max(float(self.viewer_zoom.value) if hasattr(self, "viewer_zoom") else 1.0, 1e-3)
        fx, fy = float(camera.fx.reshape(-1)[0]), float(camera.fy.reshape(-1)[0])
        cx, cy = float(camera.cx.reshape(-1)[0]), float(camera.cy.reshape(-1)[0])
        pivot_z = float(viewmat[2, :3] @ torch.tensor(self.viewer_pivot(), device=self.device) + viewmat[2, 3])
        if int(camera.camera_type.reshape(-1)[0]) == CameraType.ORTHOPHOTO.value:
            sx, sy = fx * zoom, fy * zoom
        else:
            if int(camera.camera_type.reshape(-1)[0]) != CameraType.PERSPECTIVE.value:
                logger.warning("StreamSplat renders orthographic views; treating a %s camera as perspective",
                               CameraType(int(camera.camera_type.reshape(-1)[0])).name)
            hm, wm = self.image_size
            s = zoom / max(pivot_z, 1e-3)
            sx, sy = fy * s * (wm / hm), fy * s
        K = torch.tensor([[sx, 0.0, cx], [0.0, sy, cy], [0.0, 0.0, 1.0]], device=self.device)
        z_offset = self._ORTHO_PUSHBACK - pivot_z
        viewmat = viewmat.clone()
        viewmat[2, 3] += z_offset
        return viewmat, K, H, W, z_offset

    @torch.no_grad()
    def get_outputs_for_camera(self, camera: Cameras, obb_box=None) -> Dict[str, Tensor]:
        """rgb, depth (distance along the camera's rays, what "Composite depth" expects) and accumulation."""
        camera = camera.to(self.device)
        t = 0.0 if camera.times is None else float(camera.times.reshape(-1)[0])
        clip = int(self.viewer_clip.value) if hasattr(self, "viewer_clip") else 0
        if camera.metadata and "clip_id" in camera.metadata:
            clip = int(torch.as_tensor(camera.metadata["clip_id"]).reshape(-1)[0])
        g, local_t = self.clip_gaussians(clip, t)
        viewmat, K, H, W, z_offset = self.camera_to_ortho(camera)
        h, w = H, W
        if self.device.type != "cuda":  # render small, upsample: the CPU rasteriser is O(pixels x Gaussians)
            scale = min(1.0, self.VIEWER_CPU_MAX_SCALE * max(self.image_size) / max(H, W))
            h, w = max(1, round(H * scale)), max(1, round(W * scale))
        Ks = K.clone()
        Ks[0] *= w / W
        Ks[1] *= h / H
        bg = torch.full((1, 3), self.config.eval_background, device=self.device)
        if isinstance(g, DynamicGaussians):
            out = render_dynamic(g, torch.tensor([[local_t]], device=self.device), h, w, backgrounds=bg,
                                 viewmats=viewmat[None], Ks=Ks[None], backend=self.config.render_backend)
            out = out.reshape(1)
        else:
            out = render_static(g, h, w, backgrounds=bg, viewmats=viewmat[None], Ks=Ks[None],
                                backend=self.config.render_backend)
        rgb, acc, dsum = out.rgb[0], out.alpha[0], out.depth[0]
        if (h, w) != (H, W):
            up = torch.cat([rgb, acc, dsum], dim=-1).permute(2, 0, 1)[None]
            up = F.interpolate(up, size=(H, W), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
            rgb, acc, dsum = up[..., :3], up[..., 3:4], up[..., 4:5]
        covered = acc > 1e-3
        z = dsum / acc.clamp_min(1e-6) - z_offset  # z-depth from the camera's own position
        z = torch.where(covered, z, z[covered].max() if bool(covered.any()) else torch.ones_like(z)).clamp_min(1e-3)
        if int(camera.camera_type.reshape(-1)[0]) != CameraType.ORTHOPHOTO.value:
            # nerfstudio composites depth as distance along its perspective rays: z * |(u', v', 1)|
            v, u = torch.meshgrid(torch.arange(H, device=self.device) + 0.5, torch.arange(W, device=self.device) + 0.5,
                                  indexing="ij")
            fx, fy = float(camera.fx.reshape(-1)[0]), float(camera.fy.reshape(-1)[0])
            cx, cy = float(camera.cx.reshape(-1)[0]), float(camera.cy.reshape(-1)[0])
            z = z * torch.sqrt(((u - cx) / fx) ** 2 + ((v - cy) / fy) ** 2 + 1.0)[..., None]
        return {"rgb": rgb.clamp(0, 1), "depth": z, "accumulation": acc.clamp(0, 1)}


class _CanonicalViewControl(ViewerControl):
    """Starts every viewer client at the canonical view (viser's default camera looks at the origin from
    a corner, which shows StreamSplat's scene edge-on), orbiting about the model's pivot with z up."""

    def _setup(self, viewer) -> None:  # called by nerfstudio's Viewer once the GUI exists
        super()._setup(viewer)
        self.viser_server.on_client_connect(self.reset_client)

    def reset_client(self, client) -> None:
        from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO as S

        c2w = StreamSplatModel.canonical_viewer_c2w(math.degrees(float(client.camera.fov)))
        with client.atomic():
            client.camera.position = tuple(float(x) * S for x in c2w[:, 3])
            client.camera.look_at = tuple(float(x) * S for x in StreamSplatModel.viewer_pivot())
            client.camera.up_direction = (0.0, 0.0, 1.0)
