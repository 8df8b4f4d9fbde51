"""Dataclass configs of the StreamSplat networks (tyro-friendly).

``paper()`` reproduces the released model (288x512, 10 x 768, 36,864 Gaussians per frame) so that the
authors' checkpoints load into it; ``tiny()`` is a few-hundred-Gaussian version for CPU tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Optional, Tuple


def _stage_widths(width: int, stages: int, min_width: int) -> Tuple[int, ...]:
    """Upsampler widths: halve per x2 stage, never below ``min_width`` (768 -> 384 -> 192)."""
    out, w = [], width
    for _ in range(stages):
        w = max(w // 2, min_width)
        out.append(w)
    return tuple(out)


@dataclass
class UpsamplerConfig:
    """Two-stage PixelShuffle + window-attention upsampler (x2 per side per stage)."""

    stages: int = 2
    depth: int = 2  # transformer blocks per stage (block 1 is shifted by half a window)
    window_size: int = 2304  # 1-D windows on the row-major token order
    min_width: int = 64
    head_dim: int = 64


@dataclass
class EncoderConfig:
    """Static encoder (stage 1): RGB + disparity -> pixel-aligned canonical Gaussians."""

    image_height: int = 288
    image_width: int = 512
    in_channels: int = 4  # R, G, B, normalised disparity
    patch_size: int = 8
    width: int = 768
    depth: int = 10
    head_dim: int = 64
    mlp_ratio: int = 4
    norm_eps: float = 1e-5
    upsampler: UpsamplerConfig = field(default_factory=UpsamplerConfig)
    # Gaussian heads (paper values)
    opacity_min: float = 0.05
    scale_multiplier: float = 0.1
    position_bound_eps: float = 1e-3  # truncation to (-1 + eps, 1 - eps); also the U(eps, 1 - eps) margin
    position_mean_scale: float = 1.0 - 1e-3  # stage-1 head: tanh * (1 - 1e-3); stage-2/inference: 1.0
    # Beyond the paper (off by default: the authors' checkpoints have no weights for them)
    learned_rotation: bool = False
    sh_degree: int = 0
    pixel_skip: int = 0
    """Width of a small full-resolution conv path on the RGB-D input whose features are added to the
    per-Gaussian features before the heads: detail finer than a token, cheaply (0 = off, the paper)."""

    def __post_init__(self) -> None:
        p = self.patch_size
        if self.image_height % p or self.image_width % p:
            raise ValueError(
                f"image size {self.image_height}x{self.image_width} must be a multiple of the patch size {p}"
            )
        if isinstance(self.upsampler, dict):
            self.upsampler = UpsamplerConfig(**self.upsampler)
        if self.pixel_skip < 0:
            raise ValueError(f"pixel_skip must be >= 0 (0 = off), got {self.pixel_skip}")
        if self.pixel_skip:
            gh, gw = self.gaussian_grid
            if self.image_height % gh or self.image_width % gw or self.image_height // gh != self.image_width // gw:
                raise ValueError(
                    f"pixel_skip needs a whole number of pixels per Gaussian: image "
                    f"{self.image_height}x{self.image_width}, Gaussian grid {gh}x{gw}; change "
                    "patch_size or upsampler.stages"
                )
        if self.width % self.head_dim:
            raise ValueError(f"width {self.width} must be a multiple of head_dim {self.head_dim}")

    @property
    def token_grid(self) -> Tuple[int, int]:
        return self.image_height // self.patch_size, self.image_width // self.patch_size

    @property
    def num_tokens(self) -> int:
        h, w = self.token_grid
        return h * w

    @property
    def gaussian_grid(self) -> Tuple[int, int]:
        h, w = self.token_grid
        f = 2**self.upsampler.stages
        return h * f, w * f

    @property
    def gaussians_per_frame(self) -> int:
        h, w = self.gaussian_grid
        return h * w

    @property
    def feature_width(self) -> int:
        return _stage_widths(self.width, self.upsampler.stages, self.upsampler.min_width)[-1]

    @staticmethod
    def paper() -> "EncoderConfig":
        return EncoderConfig()

    @staticmethod
    def tiny(**kw) -> "EncoderConfig":
        base = dict(
            image_height=32,
            image_width=64,
            width=64,
            depth=2,
            head_dim=16,
            upsampler=UpsamplerConfig(window_size=64, min_width=16, head_dim=16),
        )
        base.update(kw)
        return EncoderConfig(**base)


@dataclass
class DinoConfig:
    """A DINOv2 ViT (patch 14); defaults are ViT-B/14 with 4 registers as StreamSplat uses it."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    patch_size: int = 14
    img_size: int = 518  # pos_embed grid = img_size // patch_size (37)
    num_register_tokens: int = 4
    mlp_ratio: float = 4.0
    in_chans: int = 3
    layerscale_init: float = 1.0
    interpolate_offset: float = 0.0  # StreamSplat's copy: 0.0 + antialias; Depth Anything V2: 0.1, no antialias
    interpolate_antialias: bool = True

    @staticmethod
    def vit(size: Literal["s", "b", "l"] = "b", registers: int = 0, **kw) -> "DinoConfig":
        dims = {"s": (384, 12, 6), "b": (768, 12, 12), "l": (1024, 24, 16)}[size]
        return DinoConfig(embed_dim=dims[0], depth=dims[1], num_heads=dims[2], num_register_tokens=registers, **kw)

    @staticmethod
    def tiny() -> "DinoConfig":
        return DinoConfig(embed_dim=32, depth=2, num_heads=2, img_size=56, num_register_tokens=4)


@dataclass
class DecoderConfig:
    """Dynamic decoder (stage 2): joint two-frame transformer + DINO cross-attention + motion heads."""

    width: int = 768  # must equal the encoder width (encoder tokens are its input)
    depth: int = 10
    head_dim: int = 64
    mlp_ratio: int = 4
    norm_eps: float = 1e-5
    upsampler: UpsamplerConfig = field(default_factory=UpsamplerConfig)
    head_hidden: int = 192
    motion_order: int = 1  # polynomial order of the per-Gaussian motion (paper: 1)
    velocity_scale: Tuple[float, float, float] = (0.5, 0.1, 0.5)  # (x, inverse depth, z)
    dino: DinoConfig = field(default_factory=DinoConfig)
    dino_grid: Optional[Tuple[int, int]] = None  # None: (H // 16, W // 16) -> 18 x 32 at 288 x 512
    dino_imagenet_norm: bool = False  # the paper feeds raw [0, 1] RGB to DINO
    dino_weights: Optional[str] = None  # local path of dinov2_vitb14_reg4_pretrain.pth
    cross_pixel: bool = False
    """Not in the paper (off in its config): each frame's motion heads also see the *other* frame's per-pixel
    static features at the same pixel (a zero-initialised projection added to their own), a local cue for
    motions smaller than a token. A recipe variant of the small demo model, whose tokens are too coarse and
    whose transformer is too small to infer a background's sub-patch pan (docs/benchmarks.md, session 6)."""
    token_correlation: int = 0
    """Not in the paper (0, off): radius in tokens of a local correlation between the two frames' encoder
    tokens (cosine similarity of each token with the other frame's ``(2r+1)^2`` neighbours), added to the
    transformer's input through a zero-initialised projection: direct evidence of where content moved. A
    recipe variant of the small demo model, whose decoder learned no motion from appearance alone (its
    velocities hardly depend on the input; docs/benchmarks.md, session 7)."""

    velocity_log_std_offset: float = 0.0
    """Not in the paper (0): added to the velocity head's log-std in training. The head starts near log-std 0,
    i.e. a truncated normal as wide as the velocity bound: motions of +-0.5 canonical units (~60 px at 256
    px) that only a sharp opacity life-cycle can hide. -5 starts training near the deterministic mean (the
    head's own fallback below log-std -5). Inference uses the mean and never reads it. A recipe variant."""

    def __post_init__(self) -> None:
        if self.token_correlation < 0:
            raise ValueError(f"token_correlation must be >= 0 (a radius in tokens), got {self.token_correlation}")
        if isinstance(self.upsampler, dict):
            self.upsampler = UpsamplerConfig(**self.upsampler)
        if isinstance(self.dino, dict):
            self.dino = DinoConfig(**self.dino)
        if self.dino_grid is not None:
            self.dino_grid = tuple(self.dino_grid)
        self.velocity_scale = tuple(float(v) for v in self.velocity_scale)
        if self.motion_order < 1:
            raise ValueError("motion_order must be >= 1")

    def resolved_dino_grid(self, enc: EncoderConfig) -> Tuple[int, int]:
        return self.dino_grid or (enc.image_height // 16, enc.image_width // 16)

    @property
    def feature_width(self) -> int:
        return _stage_widths(self.width, self.upsampler.stages, self.upsampler.min_width)[-1]

    @staticmethod
    def paper() -> "DecoderConfig":
        return DecoderConfig()

    @staticmethod
    def tiny(**kw) -> "DecoderConfig":
        base = dict(
            width=64,
            depth=2,
            head_dim=16,
            head_hidden=32,
            dino=DinoConfig.tiny(),
            upsampler=UpsamplerConfig(window_size=64, min_width=16, head_dim=16),
        )
        base.update(kw)
        return DecoderConfig(**base)


@dataclass
class ModelConfig:
    """Whole model: encoder, optional decoder (absent for stage-1 checkpoints), depth normalisation."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: Optional[DecoderConfig] = field(default_factory=DecoderConfig)
    # "frame": min-max per frame (the training recipe, default); "pair": jointly over both key frames
    # (then streaming re-encodes the previous frame); "none": the caller normalises.
    depth_norm: Literal["frame", "pair", "none"] = "frame"

    def __post_init__(self) -> None:
        if isinstance(self.encoder, dict):
            self.encoder = EncoderConfig(**self.encoder)
        if isinstance(self.decoder, dict):
            self.decoder = DecoderConfig(**self.decoder)
        if self.decoder is not None and self.decoder.width != self.encoder.width:
            raise ValueError(f"decoder width {self.decoder.width} must equal encoder width {self.encoder.width}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "ModelConfig":
        return ModelConfig(**d)

    @staticmethod
    def paper() -> "ModelConfig":
        return ModelConfig(EncoderConfig.paper(), DecoderConfig.paper())

    @staticmethod
    def tiny(**kw) -> "ModelConfig":
        return ModelConfig(EncoderConfig.tiny(), DecoderConfig.tiny(), **kw)
