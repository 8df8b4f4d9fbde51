"""Key mapping between our state dict and the authors' released checkpoints (DSL-Lab/StreamSplat @5d686e9).

Three official layouts (see ``shared/reference/official_layout``):

* ``stage1``: ``StaticEncoder`` (``model.encoder.transformer_encoder.*``, ``model.gaussian_upsampler.*``,
  ``model.predictor.*`` with the truncated-normal ``mix_layer.xyz_static_{mean,scale}``);
* ``stage2``: ``SplatModel`` training layout (frozen encoder under ``model.gs_predictor.*`` with the
  deterministic ``gs_layer.xyz_static``, the decoder, a second upsampler, ``encoder_proj`` and
  ``gs_dynamic_predictor``), plus four ``mix_layer.xyz_dynamic_*`` keys that never affect the output;
* ``inference``: ``stage2`` without those four keys.

Keys are first normalised by stripping a leading ``module.`` (DDP) and every ``_orig_mod.`` segment
(torch.compile). Loading is strict: every key we need must be present with the right shape and every
key of the file must be consumed (the four unused keys above are the only ones dropped).
"""

from __future__ import annotations

import math
import re
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .config import DecoderConfig, DinoConfig, EncoderConfig, ModelConfig, UpsamplerConfig
from .weights_io import check_state_dict

LAYOUTS = ("stage1", "stage2", "inference")
UNUSED_STAGE2_KEYS = tuple(
    f"model.gs_predictor.predictor.mix_layer.xyz_dynamic_{a}.{b}" for a in ("mean", "scale") for b in ("weight", "bias")
)


def _renames(*pairs: Tuple[str, str]) -> List[Tuple[str, str]]:
    """(our prefix, official prefix) pairs as :func:`_sub` rules: ``ours.<rest>`` -> ``official.<rest>``."""
    return [(re.escape(ours) + r"\.(.*)", theirs + r".\1") for ours, theirs in pairs]


def _attn(name: str) -> Tuple[Tuple[str, str], ...]:
    return ((f"{name}.qkv", f"{name}.packed_proj"), (f"{name}.proj", f"{name}.out_proj"))


_MLP = (("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"))
_BLOCK = _renames(*_attn("attn"), ("norm1", "layernorm1"), ("norm2", "layernorm2"), *_MLP)  # ours -> official
_DBLOCK = _renames(
    *_attn("self_attn"),
    *_attn("cross_attn"),
    ("self_norm", "self_attn_ln"),
    ("cross_norm", "cross_attn_ln"),
    ("mlp_norm", "mlp_ln"),
    *_MLP,
)


def _sub(rules, s: str) -> Optional[str]:
    for pat, rep in rules:
        m = re.fullmatch(pat, s)
        if m:
            return m.expand(rep)
    return None


def _ups(rest: str) -> Optional[str]:
    m = re.fullmatch(r"stages\.(\d+)\.expand\.(.*)", rest)
    if m:
        return f"upsampler_{m[1]}.residual_fc.{m[2]}"
    m = re.fullmatch(r"stages\.(\d+)\.blocks\.(\d+)\.(.*)", rest)
    if m:
        b = _sub(_BLOCK, m[3])
        return None if b is None else f"attention_{m[1]}.resblocks.{m[2]}.{b}"
    m = re.fullmatch(r"norm_out\.(.*)", rest)
    return f"layernorm2.{m[1]}" if m else None


_UNHANDLED = object()


def _transformer_key(r: str, simple: Dict[str, str], block_rules, blocks: str, upsampler: str):
    """The mapping both transformers share: plain renames, ``blocks.<i>.*`` and ``upsampler.*``
    (``_UNHANDLED`` when ``r`` is none of these; None when it is but has no official counterpart)."""
    if r in simple:
        return simple[r]
    m = re.fullmatch(r"blocks\.(\d+)\.(.*)", r)
    if m:
        b = _sub(block_rules, m[2])
        return None if b is None else f"{blocks}transformer.resblocks.{m[1]}.{b}"
    if r.startswith("upsampler."):
        u = _ups(r[len("upsampler.") :])
        return None if u is None else upsampler + u
    return _UNHANDLED


def official_key(key: str, layout: str) -> Optional[str]:
    """The official name of one of our state-dict keys (None: the key has no official counterpart)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    e = "model." if layout == "stage1" else "model.gs_predictor."
    te = e + "encoder.transformer_encoder."
    if key.startswith("encoder."):
        r = key[len("encoder.") :]
        simple = {
            "patch_embed.weight": te + "conv.weight",
            "pos_enc.pe": te + "positional_encoding.pe",
            "norm_in.weight": te + "layernorm1.weight",
            "norm_out.weight": te + "layernorm2.weight",
            "heads.x_map": e + "predictor.x_map",
            "heads.z_map": e + "predictor.z_map",
        }
        k = _transformer_key(r, simple, _BLOCK, te, e + "gaussian_upsampler.")
        if k is not _UNHANDLED:
            return k
        m = re.fullmatch(r"heads\.(rgb|opacity|scale)\.(weight|bias)", r)
        if m:
            return f"{e}predictor.gs_layer.{m[1]}.{m[2]}"
        m = re.fullmatch(r"heads\.position\.(mean|log_std)\.(weight|bias)", r)
        if m:
            if layout == "stage1":
                return f"{e}predictor.mix_layer.xyz_static_{'mean' if m[1] == 'mean' else 'scale'}.{m[2]}"
            return f"{e}predictor.gs_layer.xyz_static.{m[2]}" if m[1] == "mean" else None
        return None
    if key.startswith("decoder.") and layout != "stage1":
        r = key[len("decoder.") :]
        d = "model.decoder.transformer_decoder."
        g = "model.gs_dynamic_predictor."
        simple = {
            "pos_embed": d + "positional_embedding",
            "frame_embed": d + "cls_embedding",
            "norm_in.weight": d + "layernorm1.weight",
            "norm_out.weight": d + "layernorm2.weight",
            "cond_proj.weight": d + "condition_proj.weight",
            "cond_pe.pe": d + "positional_encoding.pe",
            "cond_norm.weight": d + "condition_ln.weight",
            "static_proj.weight": "model.encoder_proj.weight",
            "heads.velocity_scale": g + "dynamic_scalar",
            "heads.velocity_log_std.weight": g + "gs_layer.xyz_dynamic_scale.weight",
        }
        k = _transformer_key(r, simple, _DBLOCK, d, "model.gaussian_upsampler.")
        if k is not _UNHANDLED:
            return k
        m = re.fullmatch(r"heads\.(velocity|lifecycle)\.(\d+)\.(weight|bias)", r)
        if m:
            name = "xyz_dynamic" if m[1] == "velocity" else "opacity_dynamic"
            return f"{g}gs_layer.{name}.layers.{int(m[2]) * 3 // 2 + 1}.{m[3]}"
    return None


def normalize_keys(sd: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Strip a leading ``module.`` (DDP) and every ``_orig_mod.`` segment (torch.compile)."""
    out = {}
    for k, v in sd.items():
        k2 = k[len("module.") :] if k.startswith("module.") else k
        k2 = k2.replace("_orig_mod.", "")
        if k2 in out:
            raise ValueError(f"checkpoint key {k!r} collides with another after normalisation ({k2!r})")
        out[k2] = v
    return out


def detect_layout(sd: Dict[str, Tensor]) -> Optional[str]:
    keys = sd.keys()
    if any(k.startswith("model.gs_predictor.") for k in keys) and any(k.startswith("model.decoder.") for k in keys):
        return "stage2" if UNUSED_STAGE2_KEYS[0] in sd else "inference"
    if any(k.startswith("model.encoder.transformer_encoder.") for k in keys):
        return "stage1"
    return None


def _count(sd: Dict[str, Tensor], pattern: str) -> int:
    idx = {int(m[1]) for k in sd for m in [re.match(pattern, k)] if m}
    return max(idx) + 1 if idx else 0


def _grid_for(tokens: int, image_size: Optional[Tuple[int, int]], div: int) -> Tuple[int, int]:
    if image_size is not None:
        return image_size[0] // div, image_size[1] // div
    h = int(round(math.sqrt(tokens * 9 / 16)))  # the paper's 9:16 (288 x 512)
    if h * (tokens // max(h, 1)) != tokens:
        raise ValueError(f"cannot infer the image size from {tokens} tokens; pass image_size=(H, W)")
    return h, tokens // h


def _velocity_scale(sd: Dict[str, Tensor]) -> Tuple[float, float, float]:
    """The file's ``dynamic_scalar`` buffer (what its outputs use); the code default when unreadable."""
    v = sd.get("model.gs_dynamic_predictor.dynamic_scalar")
    if v is None or v.device.type == "meta" or v.numel() != 3:
        return DecoderConfig.velocity_scale
    return tuple(float(f"{x:.7g}") for x in v.detach().float().cpu().tolist())


def infer_config(sd: Dict[str, Tensor], layout: str, image_size: Optional[Tuple[int, int]] = None) -> ModelConfig:
    """Paper config with sizes read from the tensor shapes (head_dim 64 and window 2304 as in the paper)."""
    e = "model." if layout == "stage1" else "model.gs_predictor."
    te = e + "encoder.transformer_encoder."
    conv = sd[te + "conv.weight"]
    width, cin, p = conv.shape[0], conv.shape[1], conv.shape[2]
    tokens = sd[te + "positional_encoding.pe"].shape[0]
    th, tw = _grid_for(tokens, image_size, p)
    stages = _count(sd, re.escape(e + "gaussian_upsampler.") + r"upsampler_(\d+)\.")
    ups_depth = _count(sd, re.escape(e + "gaussian_upsampler.attention_0.resblocks.") + r"(\d+)\.")
    widths = [sd[f"{e}gaussian_upsampler.upsampler_{s}.residual_fc.weight"].shape[0] // 4 for s in range(stages)]
    ups = UpsamplerConfig(stages=stages, depth=ups_depth, window_size=2304, min_width=min(64, min(widths)))
    mlp_hidden = sd[te + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    enc = EncoderConfig(
        image_height=th * p,
        image_width=tw * p,
        in_channels=cin,
        patch_size=p,
        width=width,
        depth=_count(sd, re.escape(te + "transformer.resblocks.") + r"(\d+)\."),
        mlp_ratio=mlp_hidden // width,
        upsampler=ups,
        position_mean_scale=(1 - 1e-3) if layout == "stage1" else 1.0,
    )
    if layout == "stage1":
        return ModelConfig(enc, None)
    d = "model.decoder.transformer_decoder."
    g = "model.gs_dynamic_predictor.gs_layer."
    m = sd[d + "positional_encoding.pe"].shape[0]
    dg = (enc.image_height // 16, enc.image_width // 16)
    if dg[0] * dg[1] != m:
        dg = _grid_for(m, None, 1)
    dwidths = [sd[f"model.gaussian_upsampler.upsampler_{s}.residual_fc.weight"].shape[0] // 4 for s in range(stages)]
    dec = DecoderConfig(
        width=sd[d + "layernorm1.weight"].shape[0],
        depth=_count(sd, re.escape(d + "transformer.resblocks.") + r"(\d+)\."),
        mlp_ratio=sd[d + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0] // width,
        upsampler=UpsamplerConfig(stages=stages, depth=ups_depth, window_size=2304, min_width=min(64, min(dwidths))),
        head_hidden=sd[g + "xyz_dynamic.layers.1.weight"].shape[0],
        motion_order=sd[g + "xyz_dynamic.layers.7.weight"].shape[0] // 3,
        velocity_scale=_velocity_scale(sd),
        dino=DinoConfig.vit(
            {384: "s", 768: "b", 1024: "l"}.get(sd[d + "condition_proj.weight"].shape[1], "b"),
            registers=4,
            interpolate_offset=0.0,
            interpolate_antialias=True,
        ),
        dino_grid=dg,
    )
    return ModelConfig(enc, dec, depth_norm="frame")


def to_official(
    model_sd: Dict[str, Tensor], layout: str, stage2_extra: Optional[Dict[str, Tensor]] = None
) -> Dict[str, Tensor]:
    """Our state dict -> the official layout (tests use it to write checkpoints in the authors' format)."""
    out = {}
    for k, v in model_sd.items():
        o = official_key(k, layout)
        if o is not None:
            out[o] = v
    if layout == "stage2":
        for k in UNUSED_STAGE2_KEYS:
            if stage2_extra and k in stage2_extra:
                out[k] = stage2_extra[k]
            else:
                c = next(v for kk, v in out.items() if kk.endswith("predictor.gs_layer.xyz_static.weight")).shape[1]
                out[k] = torch.zeros((3, c) if k.endswith("weight") else (3,))
    return out


def from_official(
    sd: Dict[str, Tensor], model_sd_template: Dict[str, Tensor], layout: str, source: str = "checkpoint"
) -> Dict[str, Tensor]:
    """Rename an official state dict to ours, strictly. ``model_sd_template`` is our model's state dict
    (for the key set and shapes); keys without an official counterpart (DINO) are left out of the result."""
    mapping = {}
    for k in model_sd_template:
        o = official_key(k, layout)
        if o is not None:
            mapping[k] = o

    expected = {o: model_sd_template[k] for k, o in mapping.items()}
    ignorable = UNUSED_STAGE2_KEYS if layout == "stage2" else ()
    check_state_dict(
        expected,
        sd,
        source=source,
        what=f"the official {layout!r} layout of this model config",
        ignore=ignorable,
        fix="pass config=/image_size= matching the file, or the right checkpoint",
    )
    return {k: sd[o] for k, o in mapping.items()}
