"""Static encoder (stage 1): RGB + normalised disparity -> 8x8 patch tokens -> pre-RMSNorm ViT ->
upsampler -> Gaussian heads. One Gaussian per 2x2 pixels in the canonical orthographic space.

Optionally (``EncoderConfig.pixel_skip``, off in the paper config) a small full-resolution conv path on the
RGB-D input adds per-pixel features before the heads, so small models get detail finer than a token."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from ..gaussians import Gaussians
from .config import EncoderConfig
from .heads import GaussianHeads
from .layers import Block, RMSNorm, SinusoidalPE, run_blocks
from .upsampler import GaussianUpsampler


def check_frames(rgb: Tensor, disparity: Tensor, height: int, width: int, what: str = "input") -> None:
    """Clear errors for the most common input mistakes (channels-last, wrong size, missing batch)."""
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise ValueError(f"{what}: rgb must be [B, 3, H, W] in [0, 1], got shape {tuple(rgb.shape)}")
    if disparity.ndim != 4 or disparity.shape[1] != 1:
        raise ValueError(f"{what}: disparity must be [B, 1, H, W], got shape {tuple(disparity.shape)}")
    if rgb.shape[0] != disparity.shape[0] or rgb.shape[2:] != disparity.shape[2:]:
        raise ValueError(f"{what}: rgb {tuple(rgb.shape)} and disparity {tuple(disparity.shape)} do not match")
    if tuple(rgb.shape[2:]) != (height, width):
        raise ValueError(
            f"{what}: the model expects {height}x{width} frames, got {rgb.shape[2]}x{rgb.shape[3]}; "
            "resize first (the paper uses 288x512)"
        )


def patchify_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """A stride = kernel Conv2d as one GEMM on row-major patches (same maths; much faster on CPU)."""
    b, c, h, w = x.shape
    d, _, p, _ = weight.shape
    if not torch.is_autocast_enabled(x.device.type):
        x = x.to(weight.dtype)
    patches = x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c * p * p)
    return F.linear(patches, weight.reshape(d, c * p * p), bias)


class PixelSkip(nn.Module):
    """Two 3x3 convs on the full-resolution RGB-D input (the second strided to the Gaussian grid) and a
    zero-initialised projection to the feature width: at initialisation the encoder is unchanged."""

    def __init__(self, cin: int, width: int, out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1)
        self.proj = nn.Linear(width, out)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Float[Tensor, "B C H W"]) -> Float[Tensor, "B N F"]:
        with torch.autocast(x.device.type, enabled=False):  # tiny; fp32 keeps the fine colour detail exact
            h = F.silu(self.conv2(F.silu(self.conv1(x.float()))))
            return self.proj(h.flatten(2).transpose(1, 2))


class StaticEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig, position_std_head: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        p = cfg.patch_size
        self.patch_embed = nn.Conv2d(cfg.in_channels, cfg.width, kernel_size=p, stride=p, bias=False)
        self.pos_enc = SinusoidalPE(cfg.num_tokens, cfg.width)
        self.norm_in = RMSNorm(cfg.width, cfg.norm_eps)
        self.blocks = nn.ModuleList(
            Block(cfg.width, cfg.head_dim, cfg.mlp_ratio, cfg.norm_eps) for _ in range(cfg.depth)
        )
        self.norm_out = RMSNorm(cfg.width, cfg.norm_eps)
        self.upsampler = GaussianUpsampler(cfg.width, cfg.token_grid, cfg.upsampler, cfg.norm_eps)
        self.pixel_skip = None
        if cfg.pixel_skip:
            stride = cfg.image_height // cfg.gaussian_grid[0]
            self.pixel_skip = PixelSkip(cfg.in_channels, cfg.pixel_skip, cfg.feature_width, stride)
        self.heads = GaussianHeads(cfg, position_std_head)

    def encode_tokens(
        self, rgb: Float[Tensor, "B 3 H W"], disparity: Float[Tensor, "B 1 H W"]
    ) -> Float[Tensor, "B L D"]:
        """Transformer tokens (fp32, row-major over the patch grid): the part the dynamic decoder reuses."""
        check_frames(rgb, disparity, self.cfg.image_height, self.cfg.image_width, "StaticEncoder")
        x = patchify_linear(torch.cat([rgb, disparity], dim=1), self.patch_embed.weight).float()  # [B, L, D]
        x = self.norm_in(self.pos_enc(x))
        return run_blocks(self.blocks, x, final_norm=self.norm_out)

    def upsample(
        self,
        tokens: Float[Tensor, "B L D"],
        rgb: Optional[Float[Tensor, "B 3 H W"]] = None,
        disparity: Optional[Float[Tensor, "B 1 H W"]] = None,
    ) -> Float[Tensor, "B N C"]:
        """Per-Gaussian features; with ``pixel_skip`` the frame (``rgb`` and the *normalised* disparity the
        tokens came from) is needed too."""
        feats = self.upsampler(tokens)
        if self.pixel_skip is None:
            return feats
        if rgb is None or disparity is None:
            raise ValueError(
                "StaticEncoder.upsample: this encoder has a full-resolution path (pixel_skip="
                f"{self.cfg.pixel_skip}); pass the frame: upsample(tokens, rgb, normalised_disparity)"
            )
        return feats + self.pixel_skip(torch.cat([rgb, disparity], dim=1))

    def forward_all(self, rgb: Tensor, disparity: Tensor) -> Tuple[Tensor, Tensor, Gaussians]:
        """Tokens, per-Gaussian features and Gaussians of one batch of frames."""
        tokens = self.encode_tokens(rgb, disparity)
        feats = self.upsample(tokens, rgb, disparity)
        return tokens, feats, self.heads(feats)

    def forward(self, rgb: Float[Tensor, "B 3 H W"], disparity: Float[Tensor, "B 1 H W"]) -> Gaussians:
        """Canonical Gaussians; train mode samples the truncated-normal position, eval mode uses the mean."""
        return self.forward_all(rgb, disparity)[2]
