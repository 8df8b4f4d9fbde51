"""``prepare(model, options)``: cast weights and install the inference-only paths."""

from __future__ import annotations

from typing import Optional

import torch

from .options import InferenceOptions


def prepare(model, options: Optional[InferenceOptions] = None):
    """Apply ``options`` to ``model`` in place and return it: weights cast to ``options.dtype`` and the fused
    paths installed. A no-op for :meth:`InferenceOptions.eager` (or None)."""
    opts = (options or InferenceOptions.eager()).validate()
    if opts.is_eager():
        return model
    model.cast_for_inference(opts.dtype or torch.float32, fused=opts.fused, fused_silu=opts.fused_silu,
                             fused_mlp=opts.fused_mlp, fused_heads=opts.fused_heads)
    return model
