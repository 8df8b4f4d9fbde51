"""Gaussian upsampler: tokens (h x w, width D) -> per-Gaussian features (4h x 4w, width D/4).

Each stage is Linear(C -> 4C'), PixelShuffle(2) on the token grid, then window-attention blocks.
"""

from __future__ import annotations

from typing import Optional, Tuple

from jaxtyping import Float
from torch import Tensor, nn

from .config import UpsamplerConfig, _stage_widths
from .layers import Block, RMSNorm, _linear, run_blocks


def pixel_shuffle_tokens(y: Float[Tensor, "B L C4"], h: int, w: int) -> Float[Tensor, "B L4 C"]:
    """PixelShuffle(2) on row-major tokens: channel ``4c + 2i + j`` goes to sub-pixel (row i, col j)."""
    b, _, c4 = y.shape
    c = c4 // 4
    return y.view(b, h, w, c, 2, 2).permute(0, 1, 4, 2, 5, 3).reshape(b, 4 * h * w, c)


class UpsampleStage(nn.Module):
    def __init__(self, cin: int, cout: int, cfg: UpsamplerConfig, eps: float) -> None:
        super().__init__()
        self.expand = nn.Linear(cin, 4 * cout, bias=True)
        self.blocks = nn.ModuleList(
            Block(cout, cfg.head_dim, 4, eps, window=cfg.window_size, shift=(i % 2 == 1)) for i in range(cfg.depth)
        )

    def forward(self, x: Tensor, h: int, w: int, final_norm: Optional[RMSNorm] = None) -> Tensor:
        return run_blocks(self.blocks, pixel_shuffle_tokens(_linear(x, self.expand), h, w), final_norm=final_norm)


class GaussianUpsampler(nn.Module):
    """Stacked x2 stages, then a final RMSNorm; output is fp32 (residual stream)."""

    def __init__(self, width: int, grid: Tuple[int, int], cfg: UpsamplerConfig, eps: float = 1e-5) -> None:
        super().__init__()
        self.grid = tuple(grid)
        widths = (width,) + _stage_widths(width, cfg.stages, cfg.min_width)
        self.stages = nn.ModuleList(UpsampleStage(widths[i], widths[i + 1], cfg, eps) for i in range(cfg.stages))
        self.norm_out = RMSNorm(widths[-1], eps)
        self.out_width = widths[-1]

    def forward(self, tokens: Float[Tensor, "B L D"]) -> Float[Tensor, "B N C"]:
        h, w = self.grid
        if tokens.shape[1] != h * w:
            raise ValueError(f"upsampler expects {h * w} tokens ({h}x{w}), got {tokens.shape[1]}")
        x = tokens
        for i, st in enumerate(self.stages):  # the last stage applies norm_out (inference fuses it into its last block)
            x = st(x, h, w, self.norm_out if i == len(self.stages) - 1 else None)
            h, w = 2 * h, 2 * w
        return x if len(self.stages) else self.norm_out(x)
