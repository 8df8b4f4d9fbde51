"""Dynamic decoder (stage 2).

Joint self-attention over both key frames' encoder tokens, cross-attention of each frame's tokens to the
*other* frame's DINOv2 patch tokens, a new upsampler, and motion / life-cycle heads on
``cat(static_proj(static features), dynamic features)``. Frame-0 Gaussians move forward from t0 = 0,
frame-1 Gaussians backward from t0 = 1 (the bidirectional deformation field).
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from ..gaussians import DynamicGaussians, Gaussians
from .config import DecoderConfig, EncoderConfig
from .dinov2 import DinoVisionTransformer
from .heads import DynamicHeads
from .layers import CrossBlock, RMSNorm, SinusoidalPE, _linear, run_blocks
from .upsampler import GaussianUpsampler

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DinoCondition(nn.Module):
    """Frozen DINOv2 patch features of a frame, resized (bilinear, no antialias) to 14 x the DINO grid."""

    def __init__(self, cfg: DecoderConfig, enc: EncoderConfig) -> None:
        super().__init__()
        self.grid = cfg.resolved_dino_grid(enc)
        self.imagenet_norm = cfg.dino_imagenet_norm
        self.model = DinoVisionTransformer(cfg.dino)
        self.model.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):  # DINO stays frozen and in eval mode
        super().train(mode)
        self.model.eval()
        return self

    @torch.no_grad()
    def forward(self, rgb: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B M Dd"]:
        p = self.model.patch_size
        x = F.interpolate(
            rgb.float(),
            size=(self.grid[0] * p, self.grid[1] * p),
            mode="bilinear",
            align_corners=False,
            antialias=False,
        )
        if self.imagenet_norm:
            x = (x - self.mean) / self.std
        return self.model.forward_features(x)["x_norm_patchtokens"]


class DynamicDecoder(nn.Module):
    def __init__(self, cfg: DecoderConfig, enc: EncoderConfig) -> None:
        super().__init__()
        if cfg.width != enc.width:
            raise ValueError(f"decoder width {cfg.width} must equal encoder width {enc.width}")
        self.cfg, self.enc_cfg = cfg, enc
        d, l = cfg.width, enc.num_tokens
        gh, gw = cfg.resolved_dino_grid(enc)
        self.pos_embed = nn.Parameter(torch.zeros(1, 2 * l, d))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.frame_embed = nn.Parameter(torch.zeros(1, 2, d))
        nn.init.trunc_normal_(self.frame_embed, std=0.02)
        self.norm_in = RMSNorm(d, cfg.norm_eps)
        self.blocks = nn.ModuleList(CrossBlock(d, cfg.head_dim, cfg.mlp_ratio, cfg.norm_eps) for _ in range(cfg.depth))
        self.norm_out = RMSNorm(d, cfg.norm_eps)
        self.cond_proj = nn.Linear(cfg.dino.embed_dim, d, bias=False)
        self.cond_pe = SinusoidalPE(gh * gw, d)
        self.cond_norm = RMSNorm(d, cfg.norm_eps)
        self.upsampler = GaussianUpsampler(d, enc.token_grid, cfg.upsampler, cfg.norm_eps)
        cs = enc.feature_width
        self.static_proj = nn.Linear(cs, cs, bias=False)
        self.cross_proj = None  # DecoderConfig.cross_pixel: the other frame's features, same pixel
        if cfg.cross_pixel:
            self.cross_proj = nn.Linear(cs, cs, bias=False)
            nn.init.zeros_(self.cross_proj.weight)  # at initialisation the decoder is the plain one
        self.corr_proj = None  # DecoderConfig.token_correlation: where each token's content went
        if cfg.token_correlation:
            self.corr_proj = nn.Linear((2 * cfg.token_correlation + 1) ** 2, d, bias=False)
            nn.init.zeros_(self.corr_proj.weight)  # at initialisation the decoder is the plain one
        self.heads = DynamicHeads(
            cs + self.upsampler.out_width,
            cfg.head_hidden,
            cfg.motion_order,
            cfg.velocity_scale,
            enc.position_bound_eps,
            cfg.velocity_log_std_offset,
        )

    def condition(self, dino: Float[Tensor, "B M Dd"]) -> Float[Tensor, "B M D"]:
        """Per-frame condition ``norm(proj(dino) + pe)``; computed once per frame (cacheable)."""
        return self.cond_norm(self.cond_pe(_linear(dino, self.cond_proj).float()))

    def joint_tokens(self, tokens0: Tensor, tokens1: Tensor, cond0: Tensor, cond1: Tensor) -> Float[Tensor, "B 2L D"]:
        """The two-frame transformer: joint self-attention, cross-attention to the other frame's DINO."""
        b, l, d = tokens0.shape
        x = torch.cat([tokens0, tokens1], dim=1).float() + self.pos_embed
        x = x + self.frame_embed.repeat_interleave(l, dim=1)
        if self.corr_proj is not None:
            x = x + _linear(self.correlation(tokens0, tokens1), self.corr_proj).float()
        x = self.norm_in(x)
        context = torch.stack([cond1, cond0], dim=1)  # frame 0 attends to frame 1's DINO, and vice versa
        return run_blocks(self.blocks, x, context, final_norm=self.norm_out)

    def correlation(self, tokens0: Float[Tensor, "B L D"], tokens1: Float[Tensor, "B L D"]) -> Float[Tensor, "B 2L K"]:
        """Cosine similarity of each token with the other frame's tokens at the ``K = (2r+1)^2`` offsets of
        its neighbourhood (row-major, zero outside the grid): frame 0's tokens first, then frame 1's."""
        r = self.cfg.token_correlation
        gh, gw = self.enc_cfg.token_grid
        b, l, d = tokens0.shape
        a0 = F.normalize(tokens0.float(), dim=-1)
        a1 = F.normalize(tokens1.float(), dim=-1)

        def corr(q: Tensor, k: Tensor) -> Tensor:
            grid = k.transpose(1, 2).reshape(b, d, gh, gw)
            win = F.unfold(grid, 2 * r + 1, padding=r).view(b, d, (2 * r + 1) ** 2, l)
            return torch.einsum("bld,bdkl->blk", q, win)

        return torch.cat([corr(a0, a1), corr(a1, a0)], dim=1)

    def dynamic_features(self, x: Float[Tensor, "B 2L D"]) -> Float[Tensor, "2B N C"]:
        b2, l2, d = x.shape
        return self.upsampler(x.reshape(b2 * 2, l2 // 2, d))

    def gaussians(
        self, dyn: Tensor, feats0: Tensor, feats1: Tensor, static0: Gaussians, static1: Gaussians
    ) -> DynamicGaussians:
        motion, g0, g1 = self._heads(dyn, feats0, feats1)
        return self._assemble(motion, g0, g1, static0, static1)

    def _heads(self, dyn: Tensor, feats0: Tensor, feats1: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        b, n = feats0.shape[:2]
        with torch.autocast(dyn.device.type, enabled=False):
            stat = torch.stack([feats0, feats1], dim=1).view(b * 2, n, -1).float()
            own = self.static_proj(stat)
            if self.cross_proj is not None:  # frame 0 sees frame 1's features and frame 1 frame 0's
                other = torch.stack([feats1, feats0], dim=1).view(b * 2, n, -1).float()
                own = own + self.cross_proj(other)
            f = torch.cat([own, dyn.float()], dim=-1)
            return self.heads(f)

    def static_terms(self, feats: Float[Tensor, "B N Cs"]) -> Float[Tensor, "B N T"]:
        """One frame's share of the heads' first-layer pre-activations, ``static_proj`` folded in (both are
        linear). It depends on that frame alone, so streaming computes it once per frame and reuses it when
        the frame becomes frame 0 of the next pair (see :meth:`gaussians_from_terms`). With ``cross_pixel``
        the frame's share in the *other* frame's heads (``cross_proj`` folded in) follows on the last axis:
        ``T`` = 2H, or 4H with the cross share."""
        with torch.autocast(feats.device.type, enabled=False):
            w, _ = self.heads.first_layer()
            cs = self.static_proj.in_features
            weight = w[:, :cs] @ self.static_proj.weight
            if self.cross_proj is not None:
                weight = torch.cat([weight, w[:, :cs] @ self.cross_proj.weight])
            return F.linear(feats.float(), weight)

    def gaussians_from_terms(
        self,
        dyn: Float[Tensor, "2B N Cd"],
        terms0: Float[Tensor, "B N T"],
        terms1: Float[Tensor, "B N T"],
        static0: Gaussians,
        static1: Gaussians,
    ) -> DynamicGaussians:
        """:meth:`gaussians` from cached :meth:`static_terms` of both frames (inference only, equal up to
        float rounding): only the dynamic columns of the first layer are left to run per pair."""
        b, n = terms0.shape[:2]
        with torch.autocast(dyn.device.type, enabled=False):
            w, bias = self.heads.first_layer()
            cs = self.static_proj.in_features
            h = F.linear(dyn.float(), w[:, cs:], bias)
            hv = h.view(b, 2, n, -1)  # in-place adds: no stacked copy of the terms
            k = hv.shape[-1]
            hv[:, 0] += terms0[..., :k]
            hv[:, 1] += terms1[..., :k]
            if self.cross_proj is not None:  # each frame's share in the other frame's heads
                hv[:, 0] += terms1[..., k:]
                hv[:, 1] += terms0[..., k:]
            motion, g0, g1 = self.heads.forward_from_hidden(h)
        return self._assemble(motion, g0, g1, static0, static1)

    @staticmethod
    def _assemble(
        motion: Float[Tensor, "2B N K 3"],
        g0: Float[Tensor, "2B N"],
        g1: Float[Tensor, "2B N"],
        static0: Gaussians,
        static1: Gaussians,
    ) -> DynamicGaussians:
        """Frame-0 Gaussians first (t0 = 0, moving forward), then frame 1's (t0 = 1, moving backward)."""
        b, n = static0.means.shape[:2]
        motion = motion.view(b, 2 * n, *motion.shape[2:])
        g0, g1 = g0.view(b, 2 * n), g1.view(b, 2 * n)
        both = static0.cat(static1, dim=1)
        t0 = torch.cat([motion.new_zeros(b, n), motion.new_ones(b, n)], dim=1)
        return DynamicGaussians(**vars(both), motion=motion, t0=t0, gamma0=g0, gamma1=g1)

    def forward(
        self,
        tokens0: Float[Tensor, "B L D"],
        tokens1: Float[Tensor, "B L D"],
        cond0: Float[Tensor, "B M D"],
        cond1: Float[Tensor, "B M D"],
        feats0: Float[Tensor, "B N C"],
        feats1: Float[Tensor, "B N C"],
        static0: Gaussians,
        static1: Gaussians,
    ) -> DynamicGaussians:
        """``cond*`` are :meth:`condition` outputs; ``feats*``/``static*`` are the frozen encoder's
        upsampled features and Gaussians of each frame. Frame-0 Gaussians come first (t0 = 0)."""
        x = self.joint_tokens(tokens0, tokens1, cond0, cond1)
        return self.gaussians(self.dynamic_features(x), feats0, feats1, static0, static1)
