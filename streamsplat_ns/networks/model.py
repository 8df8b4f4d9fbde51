"""StreamSplat: static encoder + DINOv2-conditioned dynamic decoder.

The per-frame work (encoder tokens, upsampled static features, static Gaussians, DINO condition) lives in
:class:`FrameState` so that streaming can compute it once per frame and reuse it for the next pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..gaussians import DynamicGaussians, Gaussians
from .config import DecoderConfig, EncoderConfig, ModelConfig
from .decoder import DinoCondition, DynamicDecoder
from .encoder import StaticEncoder, check_frames


def normalize_disparity(d: Float[Tensor, "B 1 H W"], joint: Optional[Tensor] = None, eps: float = 1e-8) -> Tensor:
    """Min-max normalise each sample to [0, 1] (over ``joint`` samples' pixels if given, e.g. a pair)."""
    ref = d if joint is None else joint
    lo = ref.flatten(1).amin(1).view(-1, 1, 1, 1)
    hi = ref.flatten(1).amax(1).view(-1, 1, 1, 1)
    return (d - lo) / (hi - lo).clamp_min(eps)


@dataclass
class FrameState:
    """Everything the decoder needs from one frame; computed once per frame in streaming."""

    tokens: Tensor  # [B, L, D] encoder tokens
    features: Tensor  # [B, N, C] static upsampled features
    gaussians: Gaussians  # static Gaussians (canonical space)
    condition: Optional[Tensor]  # [B, M, D] decoder condition from DINO (None without a decoder)
    # [B, N, 2H] (4H with cross_pixel) DynamicDecoder.static_terms(features): cached by the overlapped
    # CUDA-graph stream only
    head_terms: Optional[Tensor] = None

    def detach(self) -> "FrameState":
        c = None if self.condition is None else self.condition.detach()
        t = None if self.head_terms is None else self.head_terms.detach()
        return FrameState(self.tokens.detach(), self.features.detach(), self.gaussians.detach(), c, t)


class StreamSplat(nn.Module):
    def __init__(
        self,
        encoder_cfg: Optional[EncoderConfig] = None,
        decoder_cfg: Optional[DecoderConfig] = None,
        depth_norm: str = "frame",
        position_std_head: Optional[bool] = None,
    ) -> None:
        super().__init__()
        self.config = ModelConfig(encoder_cfg or EncoderConfig(), decoder_cfg, depth_norm)
        enc = self.config.encoder
        if position_std_head is None:  # stage 2 freezes the encoder, so its sigma head is dropped
            position_std_head = decoder_cfg is None
        self.position_std_head = position_std_head
        self.encoder = StaticEncoder(enc, position_std_head)
        self.decoder = DynamicDecoder(decoder_cfg, enc) if decoder_cfg is not None else None
        self.dino = DinoCondition(decoder_cfg, enc) if decoder_cfg is not None else None

    @staticmethod
    def from_config(cfg: ModelConfig, position_std_head: Optional[bool] = None) -> "StreamSplat":
        return StreamSplat(cfg.encoder, cfg.decoder, cfg.depth_norm, position_std_head)

    @property
    def height(self) -> int:
        return self.config.encoder.image_height

    @property
    def width(self) -> int:
        return self.config.encoder.image_width

    def _require_decoder(self) -> None:
        if self.decoder is None:
            raise RuntimeError(
                "this model has no dynamic decoder (a stage-1 / encoder-only checkpoint); "
                "load a stage-2 or inference checkpoint for predict_pair / streaming"
            )

    def prepare_disparity(self, disparity: Tensor, other: Optional[Tensor] = None) -> Tensor:
        mode = self.config.depth_norm
        if mode == "none":
            return disparity
        if mode == "pair" and other is not None:
            return normalize_disparity(disparity, torch.cat([disparity, other], dim=1))
        return normalize_disparity(disparity)

    # ------------------------------------------------------------------ per-frame / per-pair parts
    def encode_frame(self, rgb: Tensor, disparity_normed: Tensor, with_condition: bool = True) -> FrameState:
        """Encoder tokens, features, static Gaussians and (if there is a decoder) the DINO condition."""
        tokens, feats, g = self.encoder.forward_all(rgb, disparity_normed)
        cond = None
        if with_condition and self.decoder is not None:
            cond = self.decoder.condition(self.dino(rgb))
        return FrameState(tokens, feats, g, cond)

    def decode_pair(self, s0: FrameState, s1: FrameState) -> DynamicGaussians:
        self._require_decoder()
        return self.decoder(
            s0.tokens, s1.tokens, s0.condition, s1.condition, s0.features, s1.features, s0.gaussians, s1.gaussians
        )

    # ------------------------------------------------------------------ public
    def predict_static(self, rgb: Float[Tensor, "B 3 H W"], disparity: Float[Tensor, "B 1 H W"]) -> Gaussians:
        """Canonical static Gaussians of each frame (stage 1)."""
        check_frames(rgb, disparity, self.height, self.width, "predict_static")
        return self.encoder(rgb, self.prepare_disparity(disparity))

    def predict_pair(
        self,
        rgb0: Float[Tensor, "B 3 H W"],
        disparity0: Float[Tensor, "B 1 H W"],
        rgb1: Float[Tensor, "B 3 H W"],
        disparity1: Float[Tensor, "B 1 H W"],
    ) -> DynamicGaussians:
        """Dynamic Gaussians of the interval between two key frames (times 0 and 1)."""
        self._require_decoder()
        check_frames(rgb0, disparity0, self.height, self.width, "predict_pair (frame 0)")
        check_frames(rgb1, disparity1, self.height, self.width, "predict_pair (frame 1)")
        d0 = self.prepare_disparity(disparity0, disparity1)
        d1 = self.prepare_disparity(disparity1, disparity0)
        s0 = self.encode_frame(rgb0, d0)
        s1 = self.encode_frame(rgb1, d1)
        return self.decode_pair(s0, s1)

    def forward(self, rgb0: Tensor, disparity0: Tensor, rgb1: Tensor, disparity1: Tensor) -> DynamicGaussians:
        return self.predict_pair(rgb0, disparity0, rgb1, disparity1)

    # ------------------------------------------------------------------ training helpers
    def freeze_static(self) -> None:
        """Stage 2: freeze the encoder (and DINO); they stay in eval mode."""
        self.encoder.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.decoder is not None and not any(p.requires_grad for p in self.encoder.parameters()):
            self.encoder.eval()
        return self

    def set_grad_checkpointing(self, enabled: bool = True) -> "StreamSplat":
        """Recompute every transformer block in the backward pass (the authors train this way)."""
        from .layers import Block, CrossBlock

        for m in self.modules():
            if isinstance(m, (Block, CrossBlock)):
                m.grad_checkpoint = bool(enabled)
        return self

    def compile_blocks(self, **compile_kwargs) -> int:
        """``torch.compile`` the training forward of every trainable transformer block (the trainer's
        ``compile_blocks`` option); returns how many were compiled.

        Dynamo keeps one cache of compiled graphs per code object (``Block.forward``, ``CrossBlock.forward``),
        limited to ``torch._dynamo.config.recompile_limit`` (8) entries; past that it silently runs eager.
        Every distinct (sequence length, width, window shift) of a block class needs its own graph, and grad
        mode is part of every guard, so compiling evaluation too (no_grad) and the frozen stage-2 encoder as
        well as training gave more than 8 graphs for ``Block.forward``. Here only calls with grad enabled go
        through the compiled function (evaluation and frozen blocks run eager: no backward to speed up), so
        stage 1 needs 5 graphs (encoder, two upsampler stages x shifted / not) and stage 2 four for its
        upsampler blocks and one for its cross blocks. Should a configuration still need more graphs than the
        limit, a warning names the count and the limit is raised to fit."""
        import logging

        from .layers import Block, CrossBlock

        kw = {"dynamic": False, **compile_kwargs}
        kinds: dict = {}
        n = 0
        for m in self.modules():
            if not isinstance(m, (Block, CrossBlock)) or not any(p.requires_grad for p in m.parameters()):
                continue
            eager = m.forward
            compiled = torch.compile(eager, **kw)

            def forward(*args, _c=compiled, _e=eager, **kwargs):
                return _c(*args, **kwargs) if torch.is_grad_enabled() else _e(*args, **kwargs)

            m.forward = forward  # instance attribute: state-dict keys and the class stay as they are
            sig = (m.attn.qkv.in_features, m.window, m.shift) if isinstance(m, Block) else (m.self_attn.dim,)
            kinds.setdefault(type(m), set()).add(sig)
            n += 1
        need = max((len(v) for v in kinds.values()), default=0)
        dcfg = torch._dynamo.config
        name = "recompile_limit" if hasattr(dcfg, "recompile_limit") else "cache_size_limit"  # older torch
        limit = getattr(dcfg, name)
        if need > limit:
            logging.getLogger(__name__).warning(
                "compile_blocks: %d distinct block shapes need %d compiled graphs, more than dynamo's %s %d; "
                "raising it to %d so no block falls back to eager",
                need,
                need,
                name,
                limit,
                need,
            )
            setattr(dcfg, name, need)
        return n
