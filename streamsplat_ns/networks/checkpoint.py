"""Network checkpoints: one home for reading, validating, loading and saving weights.

Every loader of weights (our ``.safetensors``, the authors' files, DINOv2 and Depth Anything V2
``.pth``, the stage-2 encoder checkpoint, nerfstudio's ``step-*.ckpt``) reads files through
:func:`read_tensors` / :func:`torch_load` and checks them with :func:`check_state_dict` and
:func:`check_finite`, so a truncated file, a file of the wrong kind (a ``config.yml``), a layout that does
not fit, or weights holding NaN/Inf all fail at load time with a :class:`CheckpointError` that names the
file, what is wrong (the first bad key) and the fix, before any work starts.

``streamsplat_ns.api`` re-exports :func:`load_checkpoint` and :func:`save_checkpoint`.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from ..atomic import atomic_path
from . import official
from .config import ModelConfig
from .model import StreamSplat
from .weights_io import (  # noqa: F401 - re-exported: the loaders' public vocabulary
    TORCH_SUFFIXES,
    CheckpointError,
    building_on,
    check_finite,
    check_state_dict,
    first_nonfinite,
    read_tensors,
    torch_load,
)

PathLike = Union[str, os.PathLike]
CONFIG_KEY = "streamsplat_ns.config"
FORMAT_KEY = "streamsplat_ns.format"
STD_HEAD_KEY = "streamsplat_ns.position_std_head"
DINO_ENV = "STREAMSPLAT_DINO_WEIGHTS"
DINO_FILE = "dinov2_vitb14_reg4_pretrain.pth"


# -------------------------------------------------------------------------------------- our network files
def resolve_dino(explicit: Optional[PathLike], cfg: ModelConfig) -> Optional[Path]:
    cands = [
        explicit,
        os.environ.get(DINO_ENV),
        cfg.decoder.dino_weights if cfg.decoder else None,
        Path.home() / ".cache" / "streamsplat" / DINO_FILE,
    ]
    for c in cands:
        if c and Path(c).is_file():
            return Path(c)
    if explicit:
        raise FileNotFoundError(f"DINOv2 weights not found at {explicit!s}")
    return None


def _sync_config_from_weights(model: StreamSplat) -> None:
    """Config fields that are stored as weights (the velocity scale buffer) report the file's values."""
    if model.decoder is not None and model.config.decoder is not None:
        buf = model.decoder.heads.velocity_scale.detach().float().cpu()
        if not torch.equal(buf, torch.tensor(model.config.decoder.velocity_scale, dtype=torch.float32)):
            # the file's values, printed as float32 holds them (0.1f reports 0.1, not 0.10000000149)
            model.config.decoder.velocity_scale = tuple(float(f"{v:.7g}") for v in buf.tolist())


def load_checkpoint(
    path: PathLike,
    device: Union[str, torch.device] = "cpu",
    *,
    dino_weights: Optional[PathLike] = None,
    image_size: Optional[Tuple[int, int]] = None,
    config: Optional[ModelConfig] = None,
    allow_random_dino: bool = False,
) -> StreamSplat:
    """Load our checkpoints (safetensors + JSON config) or the authors' stage-1 / stage-2 / inference files.

    Validated before use: the file is complete and of the right kind, loading is strict (every key used,
    none missing, shapes equal) and every weight is finite. The authors' files never contain DINOv2: pass
    ``dino_weights`` (the official ``dinov2_vitb14_reg4_pretrain.pth``), set ``$STREAMSPLAT_DINO_WEIGHTS``
    or put it in ``~/.cache/streamsplat/``; ``allow_random_dino=True`` is for benchmarks and tests only.
    ``config`` overrides the config inferred from an official file's shapes (needed for non-paper head
    sizes). Returns a plain eval-mode fp32 model; :func:`streamsplat_ns.api.load_checkpoint` also applies
    inference options (networks/ never sees inference switches).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path!s} (give the path of a .safetensors or .pth file)")
    fix = "pass the .safetensors written by training (RUN/model.safetensors) or the authors' checkpoint"
    tensors, meta = read_tensors(path, fix=fix)
    check_finite(tensors, source=path)
    if CONFIG_KEY in meta:
        try:
            cfg = ModelConfig.from_dict(json.loads(meta[CONFIG_KEY]))
            std_head = json.loads(meta.get(STD_HEAD_KEY, "null"))
        except (json.JSONDecodeError, TypeError, ValueError, KeyError) as e:
            raise CheckpointError(path, f"unreadable model config in the file's metadata ({e})", fix) from e
        with building_on(device):
            model = StreamSplat.from_config(cfg, std_head)
        has_dino = any(k.startswith("dino.") for k in tensors)
        check_state_dict(
            model.state_dict(),
            tensors,
            source=path,
            what="its own config",
            optional=lambda k: k.startswith("dino.") and not has_dino,
        )
        model.load_state_dict(tensors, strict=has_dino)
    else:
        sd = official.normalize_keys(tensors)
        layout = official.detect_layout(sd)
        if layout is None:
            sample = sorted(sd)[:12]
            raise CheckpointError(
                path,
                f"unknown checkpoint layout (neither ours nor the authors' stage-1, stage-2 "
                f"or inference layout); first keys: {sample}",
                fix,
            )
        cfg = copy.deepcopy(config) if config is not None else official.infer_config(sd, layout, image_size)
        # the authors' stage-1 head is tanh * (1 - 1e-3); their stage-2 / inference models use plain tanh
        cfg.encoder.position_mean_scale = (1 - 1e-3) if layout == "stage1" else 1.0
        with building_on(device):
            model = StreamSplat.from_config(cfg, position_std_head=(layout == "stage1"))
        ours = official.from_official(sd, model.state_dict(), layout, source=str(path))
        model.load_state_dict(ours, strict=False)
        has_dino = False
    _sync_config_from_weights(model)
    if model.decoder is not None and not has_dino:
        dp = resolve_dino(dino_weights, cfg)
        if dp is not None:
            model.dino.model.load_pretrained(dp)
        elif not allow_random_dino:
            raise FileNotFoundError(
                f"{path} has a dynamic decoder but no DINOv2 weights: pass dino_weights=<local {DINO_FILE}>, "
                f"set ${DINO_ENV}, or place it in ~/.cache/streamsplat/ (no download is attempted)"
            )
    return model.to(device).eval()


def save_tensors(path: PathLike, tensors: Dict[str, Tensor], metadata: Optional[Dict[str, str]] = None) -> None:
    """Write a ``.safetensors`` file atomically (temp name + rename; a full disk names the file)."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def save_checkpoint(model: StreamSplat, path: PathLike, include_dino: bool = True) -> None:
    """Our format: safetensors with the JSON :class:`ModelConfig` in the metadata (fp32 weights), written
    atomically. Non-finite weights are refused (the file would only fail later, at load)."""
    sd = {
        k: v.detach().float().cpu().contiguous()
        for k, v in model.state_dict().items()
        if include_dino or not k.startswith("dino.")
    }
    bad = first_nonfinite(sd)
    if bad is not None:
        raise ValueError(f"{path}: not saved: the model's weight {bad!r} holds NaN/Inf (training diverged)")
    meta = {
        CONFIG_KEY: json.dumps(model.config.to_dict()),
        FORMAT_KEY: "1",
        STD_HEAD_KEY: json.dumps(bool(model.position_std_head)),
    }
    save_tensors(path, sd, meta)
