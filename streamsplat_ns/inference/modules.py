"""Inference subclasses of the network modules: the fused forwards, installed by :func:`.prepare`.

:func:`.prepare` swaps a module's class for its subclass here (same parameters, same state-dict keys) and
gives it the options (``_inference``); :func:`.prepare` with eager options swaps them back. The maths is the
plain modules' (results differ by rounding only); each fused path falls back to the plain forward when
autograd is recording, off CUDA (unless the Triton interpreter is on) or when Triton is missing.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..gaussians import DynamicGaussians, Gaussians
from ..networks.decoder import DynamicDecoder
from ..networks.dinov2 import DinoVisionTransformer
from ..networks.dinov2 import _Block as DinoBlock
from ..networks.layers import MLP, Block, BlockStack, CrossBlock, RMSNorm, _linear
from . import kernels as K
from .choices import KernelChoices, get_choices
from .heads_kernel import dynamic_heads
from .options import InferenceOptions


def _choices(module, x: Tensor) -> KernelChoices:
    opts: InferenceOptions = module._inference
    return get_choices(x.device, opts.cache_dir)


def _fusing(x: Tensor) -> bool:
    return K.available(x) and not torch.is_grad_enabled()


class FastMLP(MLP):
    """fc1 + SiLU in one GEMM where that is faster for the shape (``fused_silu``)."""

    _inference: InferenceOptions

    def forward(self, x: Tensor) -> Tensor:
        if self._inference.use_fused_silu and _fusing(x) and not torch.is_autocast_enabled(x.device.type):
            w = self.fc1.weight
            return _linear(K.linear_silu(x.to(w.dtype), w, _choices(self, x)), self.fc2)
        return super().forward(x)


class FastBlock(Block):
    """Each residual add fused with the next RMSNorm and the cast; shifted-window rolls inside the kernels;
    narrow blocks optionally as add + norm + MLP + add in one kernel (``fused_mlp``)."""

    _inference: InferenceOptions

    def forward_fused(
        self, x: Tensor, pending: Optional[Tensor], context=None, final_norm: Optional[RMSNorm] = None
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """Returns (residual, pending MLP output to add). With ``final_norm`` (the stack's last block)
        returns ``(final_norm(output), None)`` instead."""
        dt = self.attn.qkv.weight.dtype
        s = self._shift_of(x.shape[1])  # shifted windows: the rolls live inside the fused kernels
        x, h = K.add_rmsnorm(x.float(), pending, self.norm1.weight, self.norm1.eps, dt, h_shift=s)
        b, l, d = h.shape
        w = self.window
        if w is None or w >= l:
            o = self.attn(h)
        else:  # h is already rolled by s; o stays rolled and the next kernel reads it rolled back
            o = self.attn(h.reshape(b * (l // w), w, d)).reshape(b, l, d)
        if self._inference.use_fused_mlp:  # narrow blocks: add + norm + MLP + add in one kernel if faster
            fin = None if final_norm is None else (final_norm.weight, final_norm.eps)
            x, pending, normed = K.add_norm_mlp(
                x, o, self.norm2.weight, self.norm2.eps, self.mlp, _choices(self, x), y_shift=s, final=fin
            )
            if normed:
                return x, None
        else:
            x, h = K.add_rmsnorm(x, o, self.norm2.weight, self.norm2.eps, dt, y_shift=s)
            pending = self.mlp(h)
        if final_norm is not None:
            return K.add_rmsnorm(x, pending, final_norm.weight, final_norm.eps, torch.float32)[1], None
        return x, pending


class FastCrossBlock(CrossBlock):
    """Each residual add fused with the next RMSNorm and the cast."""

    _inference: InferenceOptions

    def forward_fused(self, x: Tensor, pending: Optional[Tensor], context: Tensor) -> Tuple[Tensor, Tensor]:
        b, l, d = x.shape
        g, m = context.shape[1], context.shape[2]
        dt = self.self_attn.qkv.weight.dtype
        x, h = K.add_rmsnorm(x.float(), pending, self.self_norm.weight, self.self_norm.eps, dt)
        x, h = K.add_rmsnorm(x, self.self_attn(h), self.cross_norm.weight, self.cross_norm.eps, dt)
        c = self.cross_attn(h.reshape(b * g, l // g, d), context.reshape(b * g, m, d)).reshape(b, l, d)
        x, h = K.add_rmsnorm(x, c, self.mlp_norm.weight, self.mlp_norm.eps, dt)
        return x, self.mlp(h)


class FusedStack(BlockStack):
    """A stack of :class:`FastBlock` / :class:`FastCrossBlock` whose residual adds are fused with the next
    norm across block boundaries too (the last MLP output is added by the final norm's kernel)."""

    def forward(self, x: Tensor, context: Optional[Tensor] = None, final_norm: Optional[RMSNorm] = None) -> Tensor:
        if not (len(self) and hasattr(self[0], "forward_fused") and _fusing(x)):
            return super().forward(x, context, final_norm)
        pending = None
        for i, blk in enumerate(self):
            if final_norm is not None and i == len(self) - 1 and isinstance(blk, FastBlock):
                return blk.forward_fused(x, pending, context, final_norm=final_norm)[0]
            x, pending = blk.forward_fused(x, pending, context)
        if final_norm is not None:
            return K.add_rmsnorm(x, pending, final_norm.weight, final_norm.eps, torch.float32)[1]
        return K.add_rmsnorm(x, pending, None)[0]


class FastDinoBlock(DinoBlock):
    """DINOv2 block with LayerScale folded into the output projections and add + LayerNorm fused."""

    def _folded(self) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """The output projections with LayerScale folded in (``(x W^T + b) g = x (g W)^T + g b``), cached
        while the weights are unchanged. The parameters themselves are left as they are."""
        src = (
            self.attn.proj.weight,
            self.attn.proj.bias,
            self.ls1.gamma,
            self.mlp.fc2.weight,
            self.mlp.fc2.bias,
            self.ls2.gamma,
        )
        key = tuple((t.data_ptr(), t._version, t.dtype) for t in src)
        if getattr(self, "_fold_key", None) != key:
            pw, pb, g1, fw, fb, g2 = (t.detach().float() for t in src)
            dt = self.attn.proj.weight.dtype
            self._fold = ((pw * g1[:, None]).to(dt), (pb * g1).to(dt), (fw * g2[:, None]).to(dt), (fb * g2).to(dt))
            self._fold_key = key
        return self._fold

    def forward_fused(self, x: Tensor, pending: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """Returns (residual, pending MLP output, added by the next block or the final norm)."""
        pw, pb, fw, fb = self._folded()
        x, h = K.add_layernorm(x, pending, self.norm1.weight, self.norm1.bias, self.norm1.eps)
        b, n, d = h.shape
        heads = self.attn.heads
        q, k, v = self.attn.qkv(h).view(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4).unbind(0)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x, h = K.add_layernorm(x, F.linear(o, pw, pb), self.norm2.weight, self.norm2.bias, self.norm2.eps)
        return x, F.linear(F.gelu(self.mlp.fc1(h)), fw, fb)


class FastDino(DinoVisionTransformer):
    """DINOv2 whose block loop is fused (see :class:`FastDinoBlock`)."""

    def run_blocks(self, t: Tensor) -> Tuple[Tensor, Tensor]:
        if not (len(self.blocks) and isinstance(self.blocks[0], FastDinoBlock) and _fusing(t)):
            return super().run_blocks(t)
        pending = None
        for blk in self.blocks:
            t, pending = blk.forward_fused(t, pending)
        return K.add_layernorm(t, pending, self.norm.weight, self.norm.bias, self.norm.eps)


class FastDynamicDecoder(DynamicDecoder):
    """The dynamic heads of a pair in one Triton kernel where that is faster (``fused_heads``)."""

    _inference: InferenceOptions

    @property
    def fused_heads(self) -> bool:
        return self._inference.use_fused_heads

    def gaussians(
        self, dyn: Tensor, feats0: Tensor, feats1: Tensor, static0: Gaussians, static1: Gaussians
    ) -> DynamicGaussians:
        if not (self.fused_heads and not torch.is_grad_enabled()) or self.cross_proj is not None:
            # the kernel folds static_proj only: a cross_pixel decoder (a recipe variant) runs the plain heads
            return super().gaussians(dyn, feats0, feats1, static0, static1)
        motion, g0, g1 = dynamic_heads(
            self.heads,
            self.static_proj.weight,
            dyn,
            feats0,
            feats1,
            lambda: self._heads(dyn, feats0, feats1),
            _choices(self, dyn),
        )
        return self._assemble(motion, g0, g1, static0, static1)


#: plain class -> inference class (prepare swaps ``__class__`` both ways)
FAST = {
    MLP: FastMLP,
    Block: FastBlock,
    CrossBlock: FastCrossBlock,
    DinoBlock: FastDinoBlock,
    DinoVisionTransformer: FastDino,
    DynamicDecoder: FastDynamicDecoder,
}
PLAIN = {v: k for k, v in FAST.items()}
