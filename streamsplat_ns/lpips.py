"""LPIPS-VGG (the metric and loss StreamSplat reports) from local weight files only.

Two files are needed, both loaded with ``torch.load(weights_only=True)``: torchvision's VGG16
ImageNet weights (``vgg16-397923af.pth``, keys ``features.N.*``) and the LPIPS v0.1 linear layers
(``vgg.pth`` of the lpips package, keys ``linK.model.1.weight``). Nothing is ever downloaded; when
the files are absent the caller skips LPIPS with one warning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

_VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_TAPS = (3, 8, 15, 22, 29)  # indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in vgg16.features
_CHANNELS = (64, 128, 256, 512, 512)
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def _vgg_features() -> nn.Sequential:
    layers, c = [], 3
    for v in _VGG_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
            c = v
    return nn.Sequential(*layers)


class LPIPSVGG(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = _vgg_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def from_files(vgg_path: Path, lin_path: Path) -> "LPIPSVGG":
        m = LPIPSVGG()
        for p in (vgg_path, lin_path):
            if not Path(p).is_file():
                raise FileNotFoundError(f"LPIPS weights not found: {p}")
        vgg = torch.load(vgg_path, map_location="cpu", weights_only=True)
        feats = {k[len("features.") :]: v for k, v in vgg.items() if k.startswith("features.")}
        m.features.load_state_dict(feats, strict=True)
        lin = torch.load(lin_path, map_location="cpu", weights_only=True)
        for i, layer in enumerate(m.lins):
            key = f"lin{i}.model.1.weight"
            if key not in lin:
                raise KeyError(f"{lin_path}: missing {key!r}; expected the lpips package's v0.1 vgg.pth")
            layer.weight.data.copy_(lin[key])
        return m

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-image LPIPS of images in [0, 1], shape [B, 3, H, W] -> [B]."""
        x = ((x * 2 - 1) - self.shift) / self.scale
        y = ((y * 2 - 1) - self.shift) / self.scale
        total = x.new_zeros(x.shape[0])
        tap = 0
        for i, layer in enumerate(self.features):
            x, y = layer(x), layer(y)
            if i == _TAPS[tap]:
                nx = x / (x.square().sum(1, keepdim=True).sqrt() + 1e-10)
                ny = y / (y.square().sum(1, keepdim=True).sqrt() + 1e-10)
                total = total + self.lins[tap]((nx - ny).square()).mean(dim=(1, 2, 3))
                tap += 1
                if tap == len(_TAPS):
                    break
        return total


def load_lpips(vgg_path: Optional[Path], lin_path: Optional[Path], what: str = "LPIPS") -> Optional[LPIPSVGG]:
    """The LPIPS network, or None with one clear warning when the local weights are not there."""
    if vgg_path is None or lin_path is None or not Path(vgg_path).is_file() or not Path(lin_path).is_file():
        logger.warning(
            "%s is skipped: no local LPIPS-VGG weights (set lpips_vgg_path to torchvision's vgg16-397923af.pth "
            "and lpips_lin_path to the lpips package's weights/v0.1/vgg.pth; nothing is downloaded)",
            what,
        )
        return None
    return LPIPSVGG.from_files(Path(vgg_path), Path(lin_path))


def lpips_256(net: LPIPSVGG, pred: Tensor, target: Tensor) -> Tensor:
    """LPIPS at 256x256 as the paper computes it; images [..., H, W, 3] in [0, 1] -> mean."""
    p = pred.reshape(-1, *pred.shape[-3:]).permute(0, 3, 1, 2)
    t = target.reshape(-1, *target.shape[-3:]).permute(0, 3, 1, 2)
    p = F.interpolate(p, size=(256, 256), mode="bilinear", align_corners=False)
    t = F.interpolate(t, size=(256, 256), mode="bilinear", align_corners=False)
    # VGG in bf16 on GPU: a loss/metric, half the activation memory of fp32 and much faster
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=p.is_cuda):
        return net(p.float(), t.float()).float().mean()
