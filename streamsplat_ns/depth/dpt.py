"""DPT head of Depth Anything V2 (state-dict names equal the official ``depth_head.*`` keys).

Four intermediate ViT outputs become a 4-level pyramid (x4, x2, x1, /2), are projected to
``features`` channels and fused coarse-to-fine by RefineNet blocks; a small conv stack turns the
finest map into one non-negative channel (relative inverse depth).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch.nn as nn
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor


class ResidualConvUnit(nn.Module):
    """relu -> conv3x3 -> relu -> conv3x3, plus the input."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """Adds the (refined) skip input, refines, upsamples (x2 or to ``size``), projects 1x1."""

    def __init__(self, features: int):
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1, bias=True)

    def forward(self, x: Tensor, skip: Optional[Tensor] = None, size: Optional[Tuple[int, int]] = None) -> Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)
        return self.out_conv(x)


class _Scratch(nn.Module):
    def __init__(self, in_channels: Sequence[int], features: int, head_hidden: int = 32):
        super().__init__()
        for i, c in enumerate(in_channels, start=1):
            setattr(self, f"layer{i}_rn", nn.Conv2d(c, features, 3, padding=1, bias=False))
        for i in range(1, 5):
            setattr(self, f"refinenet{i}", FusionBlock(features))
        self.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        self.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, head_hidden, 3, padding=1),
            nn.ReLU(True),
            nn.Conv2d(head_hidden, 1, 1),
            nn.ReLU(True),
            nn.Identity(),
        )


class DPTHead(nn.Module):
    def __init__(self, in_dim: int, features: int, out_channels: Sequence[int], patch_size: int = 14):
        super().__init__()
        self.patch_size = patch_size
        self.projects = nn.ModuleList(nn.Conv2d(in_dim, c, 1) for c in out_channels)
        oc = list(out_channels)
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(oc[0], oc[0], 4, stride=4),
                nn.ConvTranspose2d(oc[1], oc[1], 2, stride=2),
                nn.Identity(),
                nn.Conv2d(oc[3], oc[3], 3, stride=2, padding=1),
            ]
        )
        self.scratch = _Scratch(oc, features)

    def forward(self, feats: List[Tensor], patch_h: int, patch_w: int) -> Float[Tensor, "B 1 H W"]:
        """``feats``: four ``[B, N, C]`` patch-token maps (or ``(tokens, cls)`` tuples; cls is unused)."""
        levels = []
        for i, f in enumerate(feats):
            t = f[0] if isinstance(f, (tuple, list)) else f
            x = t.permute(0, 2, 1).reshape(t.shape[0], t.shape[-1], patch_h, patch_w)
            levels.append(self.resize_layers[i](self.projects[i](x)))
        s = self.scratch
        l1, l2, l3, l4 = (getattr(s, f"layer{i + 1}_rn")(x) for i, x in enumerate(levels))
        p4 = s.refinenet4(l4, size=l3.shape[2:])
        p3 = s.refinenet3(p4, l3, size=l2.shape[2:])
        p2 = s.refinenet2(p3, l2, size=l1.shape[2:])
        p1 = s.refinenet1(p2, l1)
        out = s.output_conv1(p1)
        out = F.interpolate(
            out, (patch_h * self.patch_size, patch_w * self.patch_size), mode="bilinear", align_corners=True
        )
        return s.output_conv2(out)
