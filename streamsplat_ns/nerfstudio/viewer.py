"""The viewer side of the nerfstudio model: clip cache, GUI elements and ``get_outputs_for_camera``.

The viewer, ``ns-render`` and ``streamsplat-export`` go through ``get_outputs_for_camera`` /
``clip_gaussians``, which reconstruct the chosen clip on demand, cache it, and render it at
``camera.times`` from the viewer's camera turned orthographic (``rendering.camera.perspective_to_ortho``).
``StreamSplatViewerMixin`` is mixed into ``StreamSplatModel``: nerfstudio finds the GUI elements as
public attributes of the model, and the pipeline attaches ``clip_provider`` / ``clip_names``.
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.viewer.viewer_elements import ViewerControl, ViewerNumber, ViewerSlider
from torch import Tensor

from ..gaussians import DynamicGaussians
from ..rendering import render_dynamic, render_static
from ..rendering.camera import perspective_to_ortho, viewer_look_at, z_to_ray_distance

logger = logging.getLogger(__name__)

ClipProvider = Callable[[int, Optional[List[int]]], Tuple[Tensor, Tensor, int]]
"""(clip, frame indices or None) -> (rgb [F,3,H,W], disparity [F,1,H,W], number of frames of the clip)."""


class StreamSplatViewerMixin:
    """Viewer hooks of ``StreamSplatModel`` (needs its ``net``, ``config``, ``device``, ``_step``, ``_autocast``)."""

    VIEWER_CPU_MAX_SCALE = 2.0
    """On CPU the viewer renders at most this multiple of the model resolution and upsamples (the torch
    rasteriser is too slow for 512-px renders at interactive rates)."""

    clip_provider: Optional[ClipProvider]
    clip_names: List[str]

    def _init_viewer(self) -> None:
        """Clip cache and GUI elements (nerfstudio finds public ViewerElement / ViewerControl attributes)."""
        self.clip_provider = None
        self.clip_names = []
        self._cache: "OrderedDict[Tuple, Any]" = OrderedDict()
        clip0 = int(os.environ.get("STREAMSPLAT_CLIP", "0") or 0)  # ns-render has no way to pass a clip
        self.viewer_clip = ViewerSlider(
            "Clip",
            clip0,
            0,
            max(1, clip0),
            1,
            cb_hook=lambda _: self._cache.clear(),
            hint="which video (display clip) to reconstruct",
        )
        self.viewer_zoom = ViewerNumber(
            "Ortho zoom",
            1.0,
            cb_hook=lambda _: None,
            hint="extra zoom on top of the viewer camera's (1 = canonical framing)",
        )
        self.viewer_control = _CanonicalViewControl()

    def clip_gaussians(self, clip: int, t: float, frame: Optional[float] = None) -> Tuple[Any, float]:
        """Gaussians that render clip ``clip`` at normalised time ``t`` in [0, 1], and their local time.

        Stage 1: the static Gaussians of the nearest frame. Stage 2: the dynamic Gaussians of the key
        pair that contains ``t`` (``engine.key_frames(n, viewer_key_gap)``: the rule every command uses) and
        the time inside it, reconstructed by ``ReconstructionEngine.reconstruct_clip``. Cached per
        training step, so the viewer during training shows the current weights.
        """
        if self.clip_provider is None:
            raise RuntimeError("no clip source attached to the model (the pipeline attaches the datamanager's)")
        n = self.clip_provider(clip, None)[2]
        # ``frame`` (source frame, as streamsplat-export --frames) avoids the round trip through t
        f = float(min(max(t, 0.0), 1.0)) * (n - 1) if frame is None else float(min(max(frame, 0.0), n - 1))
        step = int(self._step)  # new weights during training -> new Gaussians
        if self.config.stage == "encoder":
            k = int(round(f))
            key: Tuple = ("static", clip, k, step)
            if key not in self._cache:
                rgb, disp, _ = self.clip_provider(clip, [k])
                with self._autocast():
                    self._cache[key] = self.net.predict_static(rgb.to(self.device), disp.to(self.device)).map(
                        lambda x: x.float()
                    )
            out, local = self._cache[key], 0.0
        else:  # the engine's pairing rule and reconstruction, as streamsplat-reconstruct / -export / live
            from ..engine import ReconstructionEngine, key_frames, locate
            from ..inference import InferenceOptions

            keys = key_frames(n, max(1, min(self.config.viewer_key_gap, n - 1)))
            j, local = locate(keys, f) if len(keys) > 1 else (0, 0.0)
            a, b = (keys[j], keys[j + 1]) if len(keys) > 1 else (0, 0)
            key = ("pair", clip, a, b, step)
            if key not in self._cache:
                rgb, disp, _ = self.clip_provider(clip, [a, b])
                # eager options: the training model is used as it is (no casts), under the viewer's autocast
                engine = ReconstructionEngine(
                    self.net, options=InferenceOptions.eager(), device=self.device, overlap_depth=False
                )
                with self._autocast():
                    iv = engine.reconstruct_clip(rgb, disp, max(b - a, 1), frames=[a, b] if b > a else None)[0]
                self._cache[key] = iv.gaussians.map(lambda x: x.float())
            out = self._cache[key]
        self._cache.move_to_end(key)
        while len(self._cache) > self.config.viewer_max_cached_pairs:
            self._cache.popitem(last=False)
        return out, float(min(max(local, 0.0), 1.0))

    def camera_to_ortho(self, camera: Cameras) -> Tuple[Tensor, Tensor, int, int, float]:
        """Any nerfstudio camera -> (viewmat, K, H, W, z_offset) of an orthographic view of the canonical scene.

        ORTHOPHOTO cameras keep their intrinsics, others are read as perspective (see
        ``rendering.camera.perspective_to_ortho``); the "Ortho zoom" GUI number multiplies the scale.
        """
        H, W = int(camera.height.reshape(-1)[0]), int(camera.width.reshape(-1)[0])
        kind = int(camera.camera_type.reshape(-1)[0])
        if kind not in (CameraType.ORTHOPHOTO.value, CameraType.PERSPECTIVE.value):
            logger.warning(
                "StreamSplat renders orthographic views; treating a %s camera as perspective", CameraType(kind).name
            )
        zoom = float(self.viewer_zoom.value) if hasattr(self, "viewer_zoom") else 1.0
        viewmat, K, z_offset = perspective_to_ortho(
            camera.camera_to_worlds.reshape(-1, 3, 4)[0].to(self.device),
            *_intrinsics(camera),
            orthographic=kind == CameraType.ORTHOPHOTO.value,
            model_size=self.image_size,
            zoom=zoom,
        )
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
            out = render_dynamic(
                g,
                torch.tensor([[local_t]], device=self.device),
                h,
                w,
                backgrounds=bg,
                viewmats=viewmat[None],
                Ks=Ks[None],
                backend=self.config.render_backend,
            )
            out = out.reshape(1)
        else:
            out = render_static(
                g, h, w, backgrounds=bg, viewmats=viewmat[None], Ks=Ks[None], backend=self.config.render_backend
            )
        rgb, acc, dsum = out.rgb[0], out.alpha[0], out.depth[0]
        if (h, w) != (H, W):
            up = torch.cat([rgb, acc, dsum], dim=-1).permute(2, 0, 1)[None]
            up = F.interpolate(up, size=(H, W), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
            rgb, acc, dsum = up[..., :3], up[..., 3:4], up[..., 4:5]
        covered = acc > 1e-3
        z = dsum / acc.clamp_min(1e-6) - z_offset  # z-depth from the camera's own position
        z = torch.where(covered, z, z[covered].max() if bool(covered.any()) else torch.ones_like(z)).clamp_min(1e-3)
        if int(camera.camera_type.reshape(-1)[0]) != CameraType.ORTHOPHOTO.value:
            z = z_to_ray_distance(z, *_intrinsics(camera))
        return {"rgb": rgb.clamp(0, 1), "depth": z, "accumulation": acc.clamp(0, 1)}


def _intrinsics(camera: Cameras) -> Tuple[float, float, float, float]:
    """fx, fy, cx, cy of the first camera."""
    return tuple(float(getattr(camera, k).reshape(-1)[0]) for k in ("fx", "fy", "cx", "cy"))  # type: ignore[return-value]


class _CanonicalViewControl(ViewerControl):
    """Starts every viewer client at the canonical view (viser's default camera looks at the origin from
    a corner, which shows StreamSplat's scene edge-on), orbiting about the model's pivot with z up."""

    def _setup(self, viewer) -> None:  # called by nerfstudio's Viewer once the GUI exists
        super()._setup(viewer)
        self.viser_server.on_client_connect(self.reset_client)

    def reset_client(self, client) -> None:
        from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO as S

        position, look_at, up = viewer_look_at(math.degrees(float(client.camera.fov)), S)
        with client.atomic():
            client.camera.position, client.camera.look_at, client.camera.up_direction = position, look_at, up
