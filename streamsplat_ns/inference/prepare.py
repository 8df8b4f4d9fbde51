"""``prepare(model, options)``: cast weights and install the inference-only paths.

The networks stay plain PyTorch modules (what training sees). Here, for inference, each module that has a
fused forward gets its class swapped for the subclass in :mod:`.modules` (same parameters, same state-dict
keys, so checkpoints load and save as before) and its weights cast: the transformers', upsamplers' and
DINOv2's weights to ``options.dtype``; norms, position embeddings, all heads and the residual stream stay
fp32. Applying other options later (eager included) swaps the classes back and casts again.
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch
from torch import nn

from ..networks.decoder import DynamicDecoder
from ..networks.dinov2 import DinoVisionTransformer
from ..networks.dinov2 import _Block as DinoBlock
from ..networks.layers import MLP, Attention, Block, CrossBlock
from .modules import FAST, FusedStack
from .options import InferenceOptions

_APPLIED = "_inference_options"  # attribute of the prepared root module: the options it carries
_GENERATION = "_inference_weights_generation"


def weights_generation(model: nn.Module) -> int:
    """How many times :func:`prepare` replaced ``model``'s weight tensors (casts)."""
    return model.__dict__.get(_GENERATION, 0)


def applied_options(model: nn.Module) -> Optional[InferenceOptions]:
    """The options :func:`prepare` last applied to ``model`` (None: never prepared, i.e. eager fp32)."""
    return getattr(model, _APPLIED, None)


def _swap(m: nn.Module, cls: type, opts: InferenceOptions) -> None:
    if type(m) is not cls:
        if "_inference_base" not in m.__dict__:
            m._inference_base = type(m)
        m.__class__ = cls
    m._inference = opts


def _restore(m: nn.Module) -> None:
    base = m.__dict__.pop("_inference_base", None)
    if base is not None:
        m.__class__ = base
    m.__dict__.pop("_inference", None)


def _wants(m: nn.Module, opts: InferenceOptions) -> Optional[type]:
    """The inference class ``m`` should have under ``opts`` (None: its plain class)."""
    base = m.__dict__.get("_inference_base", type(m))
    if isinstance(m, nn.ModuleList):  # a stack of transformer blocks runs fused as a whole
        if opts.fused and len(m) and isinstance(m[0], (Block, CrossBlock)):
            return FusedStack
        return None
    fast = FAST.get(base)
    if fast is None:
        return None
    if base is MLP:
        return fast if opts.use_fused_silu else None
    if base is DynamicDecoder:
        return fast if opts.use_fused_heads else None
    if base in (Block, CrossBlock, DinoBlock, DinoVisionTransformer):
        return fast if opts.fused else None
    return None


def _cast(model: nn.Module, dtype: torch.dtype) -> None:
    """The weights that run in ``dtype``: attention and MLP projections, patch embeddings, upsampler
    expansions, the decoder's condition projection and the whole of DINOv2."""
    from ..networks.model import StreamSplat

    for m in model.modules():
        if isinstance(m, (Attention, MLP, DinoVisionTransformer)):
            m.to(dtype)
    if isinstance(model, StreamSplat):
        model.encoder.patch_embed.to(dtype)
        ups = [model.encoder.upsampler] + ([model.decoder.upsampler] if model.decoder is not None else [])
        for up in ups:
            for st in up.stages:
                st.expand.to(dtype)
        if model.decoder is not None:
            model.decoder.cond_proj.to(dtype)


def prepare(model: nn.Module, options: Optional[InferenceOptions] = None) -> nn.Module:
    """Apply ``options`` to ``model`` in place (eval mode is the caller's) and return it: weights cast to
    ``options.dtype`` and the fused paths installed. A no-op for :meth:`InferenceOptions.eager` (or None) on
    a model that was never prepared; on a prepared one, eager options restore the plain classes and fp32.

    Works on a :class:`~streamsplat_ns.networks.StreamSplat` and on any module containing a
    :class:`~streamsplat_ns.networks.dinov2.DinoVisionTransformer` (e.g. Depth Anything V2: its DINOv2 is
    cast and fused; its other layers are left as they are)."""
    opts = (options or InferenceOptions.eager()).validate()
    prev = applied_options(model)
    if prev is None and opts.is_eager():
        return model
    if prev == opts:
        return model
    for m in list(model.modules()):
        cls = _wants(m, opts)
        if cls is None:
            _restore(m)
        else:
            _swap(m, cls, opts)
    dtype = opts.dtype or torch.float32
    prev_dtype = (prev.dtype or torch.float32) if prev is not None else torch.float32
    if torch.finfo(dtype).bits > torch.finfo(prev_dtype).bits:
        warnings.warn(
            f"prepare: casting weights from {prev_dtype} back to {dtype} does not restore the values that "
            f"{prev_dtype} rounded away; load the checkpoint again for the exact fp32 (eager oracle) results",
            RuntimeWarning,
            stacklevel=2,
        )
    if dtype != prev_dtype:
        _cast(model, dtype)
        # new weight tensors: a CUDA graph captured before still reads the old ones (see GraphStep)
        model.__dict__[_GENERATION] = weights_generation(model) + 1
    if opts.is_eager():
        model.__dict__.pop(_APPLIED, None)
    else:
        setattr(model, _APPLIED, opts)
    return model
