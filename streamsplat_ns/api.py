"""Public Python API: load a model (ours or the authors' checkpoints), predict, render, stream.

>>> from streamsplat_ns.api import load_checkpoint, render
>>> model = load_checkpoint("streamsplat.safetensors", device="cuda", dino_weights="dinov2_vitb14_reg4_pretrain.pth")
>>> g = model.predict_pair(rgb0, disp0, rgb1, disp1)          # DynamicGaussians, canonical space
>>> out = render(g, times=torch.linspace(0, 1, 5), height=288, width=512)
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from .gaussians import DynamicGaussians, Gaussians
from .networks import official
from .networks.config import ModelConfig
from .networks.model import StreamSplat
from .streaming import StreamingSession

PathLike = Union[str, os.PathLike]
CONFIG_KEY = "streamsplat_ns.config"
FORMAT_KEY = "streamsplat_ns.format"
DINO_ENV = "STREAMSPLAT_DINO_WEIGHTS"
DINO_FILE = "dinov2_vitb14_reg4_pretrain.pth"

__all__ = ["load_checkpoint", "save_checkpoint", "render", "StreamSplat", "StreamingSession", "Gaussians",
           "DynamicGaussians"]


def _read_tensors(path: Path) -> Tuple[Dict[str, Tensor], Dict[str, str]]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        tensors, meta = {}, {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
        return tensors, meta
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a flat dict of tensors (a state dict)")
    return obj, {}


def _resolve_dino(explicit: Optional[PathLike], cfg: ModelConfig) -> Optional[Path]:
    cands = [explicit, os.environ.get(DINO_ENV), cfg.decoder.dino_weights if cfg.decoder else None,
             Path.home() / ".cache" / "streamsplat" / DINO_FILE]
    for c in cands:
        if c and Path(c).is_file():
            return Path(c)
    if explicit:
        raise FileNotFoundError(f"DINOv2 weights not found at {explicit!s}")
    return None


def load_checkpoint(
    path: PathLike, device: Union[str, torch.device] = "cpu", *, dino_weights: Optional[PathLike] = None,
    image_size: Optional[Tuple[int, int]] = None, config: Optional[ModelConfig] = None,
    allow_random_dino: bool = False, dtype: Optional[torch.dtype] = None, fused: bool = False,
) -> StreamSplat:
    """Load our checkpoints (safetensors + JSON config) or the authors' stage-1 / stage-2 / inference files.

    Loading is strict (every key used, none missing, shapes equal). The authors' files never contain DINOv2:
    pass ``dino_weights`` (the official ``dinov2_vitb14_reg4_pretrain.pth``), set ``$STREAMSPLAT_DINO_WEIGHTS``
    or put it in ``~/.cache/streamsplat/``; ``allow_random_dino=True`` is for benchmarks and tests only.
    ``config`` overrides the config inferred from an official file's shapes (needed for non-paper head
    sizes); ``dtype=torch.bfloat16`` stores transformer weights in bf16 for fast inference and ``fused=True``
    adds the Triton add + RMSNorm kernel (CUDA only). Returns an eval-mode model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path!s} (give the path of a .safetensors or .pth file)")
    tensors, meta = _read_tensors(path)
    if CONFIG_KEY in meta:
        cfg = ModelConfig.from_dict(json.loads(meta[CONFIG_KEY]))
        std_head = json.loads(meta.get("streamsplat_ns.position_std_head", "null"))
        model = StreamSplat.from_config(cfg, std_head)
        own = model.state_dict()
        need = {k for k in own if not k.startswith("dino.")}
        missing = sorted(need - set(tensors))
        unexpected = sorted(set(tensors) - set(own))
        wrong = sorted(k for k in set(tensors) & set(own) if tuple(tensors[k].shape) != tuple(own[k].shape))
        if missing or unexpected or wrong:
            raise ValueError(f"{path}: checkpoint does not match its own config: missing {missing[:10]}, "
                             f"unexpected {unexpected[:10]}, wrong shapes {wrong[:10]}")
        has_dino = any(k.startswith("dino.") for k in tensors)
        model.load_state_dict(tensors, strict=has_dino)
    else:
        sd = official.normalize_keys(tensors)
        layout = official.detect_layout(sd)
        if layout is None:
            sample = sorted(sd)[:12]
            raise ValueError(f"{path}: unknown checkpoint layout (neither ours nor the authors' stage-1, stage-2 or "
                             f"inference layout); first keys: {sample}")
        cfg = copy.deepcopy(config) if config is not None else official.infer_config(sd, layout, image_size)
        # the authors' stage-1 head is tanh * (1 - 1e-3); their stage-2 / inference models use plain tanh
        cfg.encoder.position_mean_scale = (1 - 1e-3) if layout == "stage1" else 1.0
        model = StreamSplat.from_config(cfg, position_std_head=(layout == "stage1"))
        ours = official.from_official(sd, model.state_dict(), layout, source=str(path))
        model.load_state_dict(ours, strict=False)
        has_dino = False
    if model.decoder is not None and not has_dino:
        dp = _resolve_dino(dino_weights, cfg)
        if dp is not None:
            model.dino.model.load_pretrained(dp)
        elif not allow_random_dino:
            raise FileNotFoundError(
                f"{path} has a dynamic decoder but no DINOv2 weights: pass dino_weights=<local {DINO_FILE}>, "
                f"set ${DINO_ENV}, or place it in ~/.cache/streamsplat/ (no download is attempted)")
    model = model.to(device).eval()
    if dtype is not None and dtype != torch.float32:
        model.cast_for_inference(dtype, fused=fused)
    return model


def save_checkpoint(model: StreamSplat, path: PathLike, include_dino: bool = True) -> None:
    """Our format: safetensors with the JSON :class:`ModelConfig` in the metadata (fp32 weights)."""
    from safetensors.torch import save_file

    sd = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()
          if include_dino or not k.startswith("dino.")}
    meta = {CONFIG_KEY: json.dumps(model.config.to_dict()), FORMAT_KEY: "1",
            "streamsplat_ns.position_std_head": json.dumps(bool(model.position_std_head))}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata=meta)


def render(g: Union[Gaussians, DynamicGaussians], times: Optional[Tensor] = None, height: int = 288,
           width: int = 512, background: Union[float, Tensor] = 0.5, **kw):
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
