"""StreamSplat networks (no nerfstudio imports): encoder, decoder, DINOv2, heads, official key mapping."""

from .config import DecoderConfig, DinoConfig, EncoderConfig, ModelConfig, UpsamplerConfig
from .decoder import DynamicDecoder
from .dinov2 import DinoVisionTransformer
from .encoder import StaticEncoder
from .heads import DynamicHeads, GaussianHeads, truncated_normal_sample
from .model import FrameState, StreamSplat, normalize_disparity

__all__ = [
    "DecoderConfig",
    "DinoConfig",
    "EncoderConfig",
    "ModelConfig",
    "UpsamplerConfig",
    "DynamicDecoder",
    "DinoVisionTransformer",
    "StaticEncoder",
    "DynamicHeads",
    "GaussianHeads",
    "truncated_normal_sample",
    "FrameState",
    "StreamSplat",
    "normalize_disparity",
]
