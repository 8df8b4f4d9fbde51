"""A generic DINOv2 ViT (S/B/L, patch 14, optional registers) whose state-dict keys equal the official
hub files (``dinov2_vit{s,b,l}14[_reg4]_pretrain.pth``), so those load strictly from a local path.

nerfstudio pins timm 0.6.7, which has no DINOv2; this is our own implementation of the published
architecture. Depth Anything V2 reuses it under the ``pretrained.*`` prefix (interpolate_offset=0.1,
no antialias); StreamSplat's decoder uses offset 0.0 with antialiased bicubic position embeddings.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from .config import DinoConfig
from .weights_io import check_finite, check_state_dict, torch_load


class _PatchEmbed(nn.Module):
    def __init__(self, patch: int, cin: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, kernel_size=patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        from .encoder import patchify_linear

        return patchify_linear(x, self.proj.weight, self.proj.bias)


class _LayerScale(nn.Module):
    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        o = F.scaled_dot_product_attention(q, k, v)  # default scale = head_dim^-0.5
        return self.proj(o.transpose(1, 2).reshape(b, n, d))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, ls_init: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, heads)
        self.ls1 = _LayerScale(dim, ls_init)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = _LayerScale(dim, ls_init)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    """DINOv2 backbone. Token order: [cls, registers, patches]; registers get no position embedding."""

    def __init__(self, cfg: Optional[DinoConfig] = None) -> None:
        super().__init__()
        cfg = cfg or DinoConfig()
        self.cfg = cfg
        d = cfg.embed_dim
        self.patch_size = cfg.patch_size
        self.num_register_tokens = cfg.num_register_tokens
        grid = cfg.img_size // cfg.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, d))
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, cfg.num_register_tokens, d)) if cfg.num_register_tokens else None
        )
        self.mask_token = nn.Parameter(torch.zeros(1, d))  # in the hub files; unused for inference
        self.patch_embed = _PatchEmbed(cfg.patch_size, cfg.in_chans, d)
        self.blocks = nn.ModuleList(
            _Block(d, cfg.num_heads, cfg.mlp_ratio, cfg.layerscale_init) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(d, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        self._pe_cache: Dict[tuple, Tensor] = {}

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    # ------------------------------------------------------------------ weights
    def load_pretrained(self, path: Union[str, os.PathLike], prefix: str = "") -> None:
        """Load an official ``.pth`` strictly from a local path (``torch.load(weights_only=True)``).

        ``mask_token`` may be absent (StreamSplat's copy drops it); every other key must match exactly.
        ``prefix`` selects a sub-dict, e.g. ``"pretrained."`` inside a Depth Anything V2 checkpoint.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"DINOv2 weights not found at {path!r}. Download dinov2_vitb14_reg4_pretrain.pth from the "
                "official DINOv2 release on a machine with network access and pass its local path."
            )

        sd = torch_load(path, what="DINOv2 weights file", fix="copy dinov2_vitb14_reg4_pretrain.pth again")
        if prefix:
            sd = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        self.load_state_dict_checked(sd, source=path)

    def load_state_dict_checked(self, sd: Dict[str, Tensor], source: str = "state dict") -> None:
        sd = dict(sd)
        if "mask_token" not in sd:
            sd["mask_token"] = self.mask_token.detach().clone()

        check_state_dict(
            self.state_dict(),
            sd,
            source=source,
            what=f"this DINOv2 config {self.cfg}",
            fix="pass the DINOv2 weights of this size (e.g. dinov2_vitb14_reg4_pretrain.pth)",
        )
        check_finite(sd, source=source)
        self.load_state_dict(sd, strict=True)
        self._pe_cache.clear()

    def _load_from_state_dict(self, *args, **kwargs):  # any load invalidates the cached pos-embeds
        self._pe_cache = {}
        return super()._load_from_state_dict(*args, **kwargs)

    # ------------------------------------------------------------------ forward
    def interpolate_pos_encoding(self, h0: int, w0: int, dtype: torch.dtype) -> Tensor:
        """Position embeddings for an h0 x w0 patch grid (bicubic from the pretrained square grid)."""
        pos = self.pos_embed
        m = int(round((pos.shape[1] - 1) ** 0.5))
        key = (h0, w0, dtype, pos.device, pos._version, pos.data_ptr())
        if not torch.is_grad_enabled() and key in self._pe_cache:
            return self._pe_cache[key]
        if h0 == m and w0 == m:
            out = pos
        else:
            cls_pos, patch_pos = pos[:, :1].float(), pos[:, 1:].float()
            d = pos.shape[-1]
            patch_pos = patch_pos.reshape(1, m, m, d).permute(0, 3, 1, 2)
            off = self.cfg.interpolate_offset
            if off:
                kw = dict(scale_factor=((h0 + off) / m, (w0 + off) / m))
            else:
                kw = dict(size=(h0, w0))
            patch_pos = F.interpolate(patch_pos, mode="bicubic", antialias=self.cfg.interpolate_antialias, **kw)
            if patch_pos.shape[-2:] != (h0, w0):
                raise RuntimeError(f"pos-embed interpolation gave {tuple(patch_pos.shape[-2:])}, wanted {(h0, w0)}")
            out = torch.cat([cls_pos, patch_pos.permute(0, 2, 3, 1).reshape(1, h0 * w0, d)], dim=1)
        out = out.to(dtype)
        if not torch.is_grad_enabled():
            self._pe_cache = {key: out}
        return out

    def prepare_tokens(self, x: Float[Tensor, "B 3 H W"]) -> Tensor:
        b, _, h, w = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"DINOv2 input {h}x{w} must be a multiple of the patch size {p}")
        x = x.to(self.patch_embed.proj.weight.dtype)
        t = self.patch_embed(x)
        t = torch.cat([self.cls_token.to(t.dtype).expand(b, -1, -1), t], dim=1)
        t = t + self.interpolate_pos_encoding(h // p, w // p, t.dtype)
        if self.register_tokens is not None:
            t = torch.cat([t[:, :1], self.register_tokens.to(t.dtype).expand(b, -1, -1), t[:, 1:]], dim=1)
        return t

    def forward_features(self, x: Float[Tensor, "B 3 H W"]) -> Dict[str, Tensor]:
        t, n = self.run_blocks(self.prepare_tokens(x))
        r = 1 + self.num_register_tokens
        return {
            "x_norm_clstoken": n[:, 0],
            "x_norm_regtokens": n[:, 1:r],
            "x_norm_patchtokens": n[:, r:],
            "x_prenorm": t,
        }

    def run_blocks(self, t: Tensor) -> Tuple[Tensor, Tensor]:
        """Every block, then the final norm: returns (tokens before the norm, normed tokens)."""
        for blk in self.blocks:
            t = blk(t)
        return t, self.norm(t)

    def forward(self, x: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B D"]:
        return self.forward_features(x)["x_norm_clstoken"]

    def get_intermediate_layers(
        self,
        x: Float[Tensor, "B 3 H W"],
        n: Union[int, Sequence[int]] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        norm: bool = True,
    ) -> Tuple:
        """Outputs of the last ``n`` blocks (int) or of the given block indices, patch tokens only
        (registers and cls removed), optionally normed / reshaped to ``[B, D, h, w]`` / with cls tokens."""
        b, _, h, w = x.shape
        t = self.prepare_tokens(x)
        idx = set(range(len(self.blocks) - n, len(self.blocks))) if isinstance(n, int) else set(n)
        if not idx or max(idx) >= len(self.blocks) or min(idx) < 0:
            raise ValueError(f"block indices {sorted(idx)} out of range for {len(self.blocks)} blocks")
        outs: List[Tensor] = []
        for i, blk in enumerate(self.blocks):
            t = blk(t)
            if i in idx:
                outs.append(t)
        if norm:
            outs = [self.norm(o) for o in outs]
        r = 1 + self.num_register_tokens
        cls = [o[:, 0] for o in outs]
        patches = [o[:, r:] for o in outs]
        if reshape:
            p = self.patch_size
            patches = [o.reshape(b, h // p, w // p, -1).permute(0, 3, 1, 2).contiguous() for o in patches]
        if return_class_token:
            return tuple(zip(patches, cls))
        return tuple(patches)


def dinov2_vitb14_reg(**kw) -> DinoVisionTransformer:
    """The ViT-B/14 with 4 registers that StreamSplat's decoder conditions on."""
    return DinoVisionTransformer(DinoConfig.vit("b", registers=4, **kw))
