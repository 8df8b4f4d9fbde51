"""Public Python API: load a model (ours or the authors' checkpoints), predict, render, stream.

>>> from streamsplat_ns.api import load_checkpoint, render
>>> model = load_checkpoint("streamsplat.safetensors", device="cuda", dino_weights="dinov2_vitb14_reg4_pretrain.pth")
>>> g = model.predict_pair(rgb0, disp0, rgb1, disp1)          # DynamicGaussians, canonical space
>>> out = render(g, times=torch.linspace(0, 1, 5), height=288, width=512)
"""

from __future__ import annotations

from typing import Optional, Union

import torch

from .gaussians import DynamicGaussians, Gaussians
from .inference import InferenceOptions, prepare
from .networks import checkpoint as _checkpoint
from .networks.checkpoint import (
    CONFIG_KEY,
    DINO_ENV,
    DINO_FILE,
    FORMAT_KEY,
    CheckpointError,
    check_finite,
    check_state_dict,
    read_tensors,
    save_checkpoint,
)
from .networks.model import StreamSplat
from .rendering import render_canonical
from .streaming import StreamingSession


def load_checkpoint(
    path,
    device: Union[str, torch.device] = "cpu",
    *,
    inference: Optional[InferenceOptions] = None,
    **kwargs,
) -> StreamSplat:
    """Load our checkpoints or the authors' (validated: see :func:`streamsplat_ns.networks.checkpoint.
    load_checkpoint`, which takes the same keyword arguments) and, with ``inference`` (e.g.
    ``InferenceOptions.fastest()``), prepare the model for fast inference in place."""
    model = _checkpoint.load_checkpoint(path, device, **kwargs)
    return model if inference is None else prepare(model, inference)


__all__ = [
    "load_checkpoint",
    "save_checkpoint",
    "read_tensors",
    "check_state_dict",
    "check_finite",
    "CheckpointError",
    "render",
    "StreamSplat",
    "StreamingSession",
    "Gaussians",
    "DynamicGaussians",
    "CONFIG_KEY",
    "FORMAT_KEY",
    "DINO_ENV",
    "DINO_FILE",
]


#: Render from the canonical camera (dynamic Gaussians at normalised times, or static ones) -> ``RenderOutput``.
render = render_canonical
