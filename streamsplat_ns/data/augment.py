"""EDM-style augmentation with one parameter draw per clip (method_spec §6).

StreamSplat replays NVIDIA EDM's AugmentPipe deterministically so that every frame, depth map and
mask of a clip gets the *same* transform (otherwise the decoder would be taught motion that is not
in the video). Geometric ops (x/y flip, isotropic scale, rotation, anisotropic scale, fractional
translation) are composed into one affine map applied with a single ``grid_sample`` and reflection
padding (EDM's wavelet up/down-sampling is replaced by bilinear sampling). Colour ops (brightness,
contrast, hue, saturation) are one 4x4 matrix on RGB in [-1, 1], applied to RGB only. Depth uses
bilinear sampling, masks nearest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor


@dataclass
class AugmentConfig:
    """Probabilities and strengths; defaults follow the spec (p = 0.12)."""

    p: float = 0.12
    """probability multiplier of every op (EDM's augment_p)"""
    xflip: float = 1.0
    yflip: float = 1.0
    scale: float = 1.0
    rotate: float = 1.0
    aniso: float = 1.0
    xfrac: float = 1.0
    brightness: float = 1.0
    contrast: float = 1.0
    hue: float = 1.0
    saturation: float = 1.0
    scale_std: float = 0.2  # log2 units
    rotate_max: float = 1.0  # fraction of pi (arbitrary rotation)
    aniso_std: float = 0.2  # log2 units
    xfrac_std: float = 0.125  # fraction of the image size
    brightness_std: float = 0.1
    contrast_std: float = 0.1  # log2 units
    hue_max: float = 0.05  # fraction of pi
    saturation_std: float = 0.1  # log2 units


@dataclass
class AugmentParams:
    """One draw for a whole clip."""

    geom: np.ndarray  # [3, 3] output-pixel -> input-pixel map, pixel coords centred on the image
    colour: np.ndarray  # [4, 4] on homogeneous RGB in [-1, 1]
    has_geom: bool
    has_colour: bool


def _rot(t: float) -> np.ndarray:
    c, s = math.cos(t), math.sin(t)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float64)


def _scale(sx: float, sy: float) -> np.ndarray:
    return np.diag([sx, sy, 1.0])


def _translate(tx: float, ty: float) -> np.ndarray:
    m = np.eye(3)
    m[:2, 2] = (tx, ty)
    return m


def sample_params(rng: np.random.Generator, height: int, width: int, cfg: AugmentConfig) -> AugmentParams:
    """Draw the parameters of one clip (EDM order: flips, scale, rotate, aniso, rotate, translate)."""
    p = cfg.p
    G = np.eye(3)
    geom = False

    def on(mult: float, prob: Optional[float] = None) -> bool:
        return bool(rng.random() < (mult * p if prob is None else prob))

    if on(cfg.xflip):
        w = int(rng.integers(2))
        G, geom = G @ _scale(1 - 2 * w, 1), geom or w == 1
    if on(cfg.yflip):
        w = int(rng.integers(2))
        G, geom = G @ _scale(1, 1 - 2 * w), geom or w == 1
    if on(cfg.scale):
        s = 2 ** (rng.standard_normal() * cfg.scale_std)
        G, geom = G @ _scale(s, s), True
    p_rot = 1 - math.sqrt(max(0.0, 1 - min(cfg.rotate * p, 1.0)))  # two rotations, as EDM
    if on(cfg.rotate, p_rot):
        G, geom = G @ _rot(-(rng.random() * 2 - 1) * math.pi * cfg.rotate_max), True
    if on(cfg.aniso):
        s = 2 ** (rng.standard_normal() * cfg.aniso_std)
        G, geom = G @ _scale(s, 1 / s), True
    if on(cfg.rotate, p_rot):
        G, geom = G @ _rot(-(rng.random() * 2 - 1) * math.pi * cfg.rotate_max), True
    if on(cfg.xfrac):
        tx, ty = rng.standard_normal(2) * cfg.xfrac_std
        G, geom = G @ _translate(tx * width, ty * height), True

    C = np.eye(4)
    colour = False
    v = np.array([1, 1, 1, 0], np.float64) / math.sqrt(3)  # luma axis
    if on(cfg.brightness):
        b = rng.standard_normal() * cfg.brightness_std
        T = np.eye(4)
        T[:3, 3] = b
        C, colour = T @ C, True
    if on(cfg.contrast):
        c = 2 ** (rng.standard_normal() * cfg.contrast_std)
        C, colour = np.diag([c, c, c, 1.0]) @ C, True
    if on(cfg.hue):
        theta = (rng.random() * 2 - 1) * math.pi * cfg.hue_max
        a = v[:3]
        K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
        R = np.eye(4)
        R[:3, :3] = np.eye(3) + math.sin(theta) * K + (1 - math.cos(theta)) * (K @ K)  # Rodrigues
        C, colour = R @ C, True
    if on(cfg.saturation):
        s = 2 ** (rng.standard_normal() * cfg.saturation_std)
        vv = np.outer(v, v)
        C, colour = (vv + (np.eye(4) - vv) * s) @ C, True
    return AugmentParams(geom=G, colour=C, has_geom=geom, has_colour=colour)


def _theta(G: np.ndarray, height: int, width: int) -> Tensor:
    """Pixel-space map -> ``affine_grid`` theta (normalised coords, align_corners=False)."""
    D = np.diag([2.0 / width, 2.0 / height, 1.0])
    return torch.from_numpy((D @ G @ np.linalg.inv(D))[:2]).float()


def apply_params(
    rgb: Float[Tensor, "V 3 H W"],
    disparity: Optional[Float[Tensor, "V 1 H W"]],
    mask: Optional[Float[Tensor, "V 1 H W"]],
    params: AugmentParams,
) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """Apply one draw to every frame of a clip (same geometry everywhere, colour on RGB only)."""
    V, _, H, W = rgb.shape
    if params.has_geom:
        theta = _theta(params.geom, H, W).to(rgb.device)[None]
        grid = F.affine_grid(theta, [1, 1, H, W], align_corners=False).expand(V, H, W, 2)  # one grid per clip
        x = rgb if disparity is None else torch.cat([rgb, disparity], dim=1)  # one bilinear pass for both
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        rgb, disparity = (x, None) if disparity is None else (x[:, :3], x[:, 3:])
        if mask is not None:
            mask = F.grid_sample(mask, grid, mode="nearest", padding_mode="reflection", align_corners=False)
    if params.has_colour:
        C = torch.from_numpy(params.colour).float().to(rgb.device)
        # colour matrix acts on [-1, 1]; fold the affine change of range into it: x01 -> M x01 + b
        M = C[:3, :3]
        b = (C[:3, 3] + 1 - M.sum(dim=1)) / 2
        rgb = torch.baddbmm(b.view(1, 3, 1).expand(V, 3, 1), M.expand(V, 3, 3), rgb.reshape(V, 3, H * W))
        rgb = rgb.view(V, 3, H, W).clamp_(0, 1)
    return rgb, disparity, mask


def augment_clip(
    rgb: Tensor,
    disparity: Optional[Tensor],
    mask: Optional[Tensor],
    rng: np.random.Generator,
    cfg: Optional[AugmentConfig] = None,
):
    """Draw one parameter set for the clip and apply it; returns ``(rgb, disparity, mask, params)``."""
    cfg = cfg or AugmentConfig()
    params = sample_params(rng, rgb.shape[-2], rgb.shape[-1], cfg)
    return (*apply_params(rgb, disparity, mask, params), params)
