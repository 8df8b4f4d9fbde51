"""Public Python API: load a model (ours or the authors' checkpoints), predict, render, stream.

>>> from streamsplat_ns.api import load_checkpoint, render
>>> model = load_checkpoint("streamsplat.safetensors", device="cuda", dino_weights="dinov2_vitb14_reg4_pretrain.pth")
>>> g = model.predict_pair(rgb0, disp0, rgb1, disp1)          # DynamicGaussians, canonical space
>>> out = render(g, times=torch.linspace(0, 1, 5), height=288, width=512)
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

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


def render(
    g: Union[Gaussians, DynamicGaussians],
    times: Optional[Tensor] = None,
    height: int = 288,
    width: int = 512,
    background: Union[float, Tensor] = 0.5,
    **kw,
):
    """Render from the canonical camera: dynamic Gaussians at ``times`` ([T] or [B, T], in [0, 1]) ->
    ``RenderOutput`` with ``[B, T, H, W, C]`` tensors; static Gaussians -> ``[B, H, W, C]``. Grey 0.5
    background by default, as the authors evaluate."""
    from .rendering import render_dynamic, render_static

    dev, dt = g.means.device, g.means.dtype
    bg = background if isinstance(background, Tensor) else torch.full((3,), float(background), device=dev, dtype=dt)
    b = g.means.shape[0]
    if isinstance(g, DynamicGaussians):
        if times is None:
            raise ValueError("render: dynamic Gaussians need times (e.g. torch.linspace(0, 1, 5))")
        times = torch.as_tensor(times, device=dev, dtype=dt)
        if times.dim() == 1:
            times = times[None].expand(b, -1)
        if bg.dim() == 1:
            bg = bg[None].expand(b, 3)
        return render_dynamic(g, times, height, width, backgrounds=bg, **kw)
    if bg.dim() == 1:
        bg = bg[None].expand(b, 3)
    return render_static(g, height, width, backgrounds=bg, **kw)
