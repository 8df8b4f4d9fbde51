"""Depth Anything V2: DINOv2 ViT (``networks.dinov2``) + DPT head; official checkpoints load unchanged.

Output is relative inverse depth (larger = nearer), ReLU-clamped, at the input-tensor size.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Literal, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from streamsplat_ns.depth.dpt import DPTHead
from streamsplat_ns.networks.config import DinoConfig
from streamsplat_ns.networks.dinov2 import DinoVisionTransformer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Encoder = Literal["vits", "vitb", "vitl", "tiny"]


@dataclass
class DepthAnythingConfig:
    encoder: str = "vitl"
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    features: int = 256
    out_channels: Tuple[int, int, int, int] = (256, 512, 1024, 1024)
    layers: Tuple[int, int, int, int] = (4, 11, 17, 23)
    img_size: int = 518

    @staticmethod
    def of(encoder: str) -> "DepthAnythingConfig":
        presets = {
            "vits": DepthAnythingConfig("vits", 384, 12, 6, 64, (48, 96, 192, 384), (2, 5, 8, 11)),
            "vitb": DepthAnythingConfig("vitb", 768, 12, 12, 128, (96, 192, 384, 768), (2, 5, 8, 11)),
            "vitl": DepthAnythingConfig("vitl", 1024, 24, 16, 256, (256, 512, 1024, 1024), (4, 11, 17, 23)),
            # test-only: same key names, tiny sizes
            "tiny": DepthAnythingConfig("tiny", 32, 4, 2, 16, (8, 16, 32, 32), (0, 1, 2, 3), img_size=56),
        }
        if encoder not in presets:
            raise ValueError(f"unknown Depth Anything V2 encoder {encoder!r}; expected one of {sorted(presets)}")
        return presets[encoder]

    def dino(self) -> DinoConfig:
        return DinoConfig(
            embed_dim=self.embed_dim,
            depth=self.depth,
            num_heads=self.num_heads,
            patch_size=14,
            img_size=self.img_size,
            num_register_tokens=0,
            layerscale_init=1.0,
            interpolate_offset=0.1,
            interpolate_antialias=False,
        )


class DepthAnythingV2(nn.Module):
    """``pretrained`` (DINOv2) + ``depth_head`` (DPT): the official module names."""

    def __init__(self, cfg: Optional[DepthAnythingConfig] = None):
        super().__init__()
        self.cfg = cfg or DepthAnythingConfig.of("vitl")
        self.pretrained = DinoVisionTransformer(self.cfg.dino())
        self.depth_head = DPTHead(self.cfg.embed_dim, self.cfg.features, self.cfg.out_channels)

    def forward(self, x: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B H W"]:
        """``x`` preprocessed (H, W multiples of 14) -> relative inverse depth at the same size, in the
        weights' dtype (the input is cast to it, so a model cast with :meth:`cast_for_inference` needs no
        autocast)."""
        feats = self.pretrained.get_intermediate_layers(x, list(self.cfg.layers), return_class_token=True)
        return self.decode(feats, (x.shape[-2], x.shape[-1]))

    def decode(self, feats, size: Tuple[int, int]) -> Float[Tensor, "B H W"]:
        """DPT head on the four normed intermediate ViT outputs (``(patch tokens, cls)`` pairs, as
        ``get_intermediate_layers(..., return_class_token=True)`` gives) of an input of ``size``."""
        return F.relu(self.depth_head(list(feats), size[0] // 14, size[1] // 14)).squeeze(1)

    def cast_for_inference(self, dtype: torch.dtype = torch.bfloat16, channels_last: bool = True) -> "DepthAnythingV2":
        """Store every weight in ``dtype`` (inference only; attention is PyTorch SDPA, which picks the fused
        flash / memory-efficient kernels for bf16 on CUDA). ``channels_last`` keeps the DPT convolutions in
        NHWC, the layout the ViT tokens already have when reshaped to maps, so cuDNN needs no transposes."""
        self.to(dtype)
        if channels_last:
            for m in self.depth_head.modules():
                if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                    m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
        return self.eval()


def infer_encoder(path: Union[str, Path], sd: Optional[Dict[str, Tensor]] = None) -> str:
    m = re.search(r"vit[slbg]", Path(path).name)
    if m:
        return m.group(0)
    if sd is not None and "pretrained.cls_token" in sd:
        dim = sd["pretrained.cls_token"].shape[-1]
        for enc in ("vits", "vitb", "vitl", "tiny"):
            if DepthAnythingConfig.of(enc).embed_dim == dim:
                return enc
    raise ValueError(f"{path}: cannot tell the encoder (vits/vitb/vitl) from the file name; pass --encoder")


def load_depth_anything(
    path: Union[str, Path], encoder: Optional[str] = None, device: Union[str, torch.device] = "cpu"
) -> DepthAnythingV2:
    """Build the model and load an official ``depth_anything_v2_<enc>.pth`` strictly (local file only)."""
    path = Path(os.path.expanduser(str(path)))
    if not path.is_file():
        raise FileNotFoundError(
            f"Depth Anything V2 checkpoint not found: {path}. Download depth_anything_v2_vitl.pth (or _vits/_vitb) "
            f"from the official release on a machine with network access and pass --checkpoint, or set "
            f"STREAMSPLAT_DA2_CKPT. Nothing is downloaded here."
        )
    from ..networks.weights_io import building_on, check_finite, check_state_dict, torch_load

    sd = torch_load(path, what="Depth Anything V2 checkpoint", fix="copy depth_anything_v2_<enc>.pth again")
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    enc = encoder or infer_encoder(path, sd)
    with building_on(device):
        model = DepthAnythingV2(DepthAnythingConfig.of(enc))
    check_state_dict(model.state_dict(), sd, source=path, what=f"Depth Anything V2 '{enc}'", fix="is --encoder right?")
    check_finite(sd, source=path)
    model.load_state_dict(sd, strict=True)
    return model.to(device).eval()


def target_size(h: int, w: int, short_side: int = 518, multiple: int = 14) -> Tuple[int, int]:
    """Keep aspect, shorter side ``short_side``, each side the nearest multiple of 14 (never below)."""
    scale = short_side / min(h, w)

    def fit(x: float) -> int:
        y = int(round(x / multiple) * multiple)
        return y if y >= short_side else int(math.ceil(x / multiple) * multiple)

    return fit(h * scale), fit(w * scale)


_STATS: Dict[torch.device, Tuple[Tensor, Tensor]] = {}


def _imagenet_stats(device: torch.device) -> Tuple[Tensor, Tensor]:
    """ImageNet mean/std as ``[1, 3, 1, 1]`` tensors, made once per device (a host-to-device copy is not
    allowed while a CUDA graph is being captured, and need not be paid per frame)."""
    if device not in _STATS:
        _STATS[device] = (
            torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1),
            torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1),
        )
    return _STATS[device]


def preprocess(rgb: Tensor, size: Tuple[int, int], mode: str = "streamsplat") -> Float[Tensor, "B 3 h w"]:
    """RGB ``[B, 3, H, W]`` (float in [0, 1], or uint8 0-255) -> the network input at ``size`` (fp32).

    ``streamsplat``: no ImageNet normalisation, bilinear resize (the authors' preprocessing, so released
    checkpoints see their training distribution); ``official``: bicubic, clamp, ImageNet mean/std (DA-V2's
    infer_image). The one home of DA-V2 preprocessing: the eager and the fast (graph) paths both call it.
    """
    if mode not in ("streamsplat", "official"):
        raise ValueError(f"preprocess must be 'streamsplat' or 'official', got {mode!r}")
    x = rgb.float() / 255.0 if rgb.dtype == torch.uint8 else rgb.float()
    if mode == "official":
        x = F.interpolate(x, size, mode="bicubic", align_corners=False).clamp(0, 1)
        mean, std = _imagenet_stats(x.device)
        return (x - mean) / std
    return F.interpolate(x, size, mode="bilinear", align_corners=False)


def resize_disparity(d: Tensor, size: Tuple[int, int]) -> Float[Tensor, "B 1 h w"]:
    """Network output ``[B, h, w]`` -> fp32 ``[B, 1, *size]`` (bilinear, corners aligned)."""
    d = d[:, None].float()
    if tuple(d.shape[-2:]) == tuple(size):
        return d
    return F.interpolate(d, size, mode="bilinear", align_corners=True)


@torch.no_grad()
def predict_disparity(
    model: DepthAnythingV2,
    rgb: Float[Tensor, "B 3 H W"],
    preprocess: str = "streamsplat",
    short_side: int = 518,
    out_size: Optional[Tuple[int, int]] = None,
    dtype: Optional[torch.dtype] = None,
) -> Float[Tensor, "B H W"]:
    """Raw relative inverse depth for RGB in [0, 1] (or uint8), resized back to ``out_size`` (default: input
    size). The eager reference; ``streamsplat_ns.inference.depth.DepthInference`` is the fast path.
    ``preprocess``: see :func:`preprocess`."""
    B, _, H, W = rgb.shape
    x = _preprocess(rgb, target_size(H, W, short_side), preprocess)
    if dtype is not None and dtype != torch.float32 and x.is_cuda:
        with torch.autocast("cuda", dtype=dtype):
            d = model(x)
    else:
        d = model(x)
    return resize_disparity(d, out_size or (H, W))[:, 0]


_preprocess = preprocess  # predict_disparity's argument shadows the name


def sha256_file(path: Union[str, Path], chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()
