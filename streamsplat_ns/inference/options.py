"""One set of inference switches, used by every inference entry point (streaming, the engine, the CLIs).

Training never sees these: :func:`streamsplat_ns.inference.prepare` applies them to a loaded model by
casting weights and installing inference-only module classes, and ``networks/`` stays plain PyTorch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Union

import torch

CACHE_ENV = "STREAMSPLAT_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$STREAMSPLAT_CACHE_DIR``, else ``~/.cache/streamsplat``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "streamsplat"


@dataclass
class InferenceOptions:
    """How a model runs at inference. ``fastest()`` on CUDA, ``eager()`` (the test oracle) elsewhere."""

    dtype: Optional[torch.dtype] = None
    """weight dtype of the transformers, upsamplers and DINOv2 (None = fp32); norms, heads and the
    residual stream stay fp32"""
    fused: bool = False
    """fused Triton kernels on CUDA: residual add + norm + cast, DINOv2 with LayerScale folded, and (unless
    switched off below) fc1 + SiLU GEMM, add + norm + MLP for narrow blocks, one-kernel dynamic heads"""
    cuda_graph: bool = False
    """capture the streaming step in one CUDA graph (CUDA only)"""
    overlap: bool = True
    """CUDA graph: run DINO and the static upsampler on a second stream beside the encoder / decoder"""
    fused_silu: Optional[bool] = None
    """fc1 + SiLU in one GEMM where faster (None = follow ``fused``)"""
    fused_mlp: Optional[bool] = None
    """add + RMSNorm + MLP + add in one kernel for narrow blocks where faster (None = follow ``fused``)"""
    fused_heads: Optional[bool] = None
    """the dynamic heads in one kernel where TF32 is allowed and faster (None = follow ``fused``)"""
    cache_dir: Optional[Path] = None
    """where kernel choices are kept between processes (None = $STREAMSPLAT_CACHE_DIR or ~/.cache/streamsplat)"""

    @staticmethod
    def fastest() -> "InferenceOptions":
        """bf16 weights, every fused kernel, the CUDA-graph step (falls back to eager pieces off CUDA)."""
        return InferenceOptions(dtype=torch.bfloat16, fused=True, cuda_graph=True, overlap=True)

    @staticmethod
    def eager() -> "InferenceOptions":
        """fp32, plain PyTorch modules, no graph: for debugging and as the oracle of the tests."""
        return InferenceOptions()

    @staticmethod
    def default_for(device: Union[str, torch.device, None]) -> "InferenceOptions":
        """:meth:`fastest` on CUDA, :meth:`eager` elsewhere."""
        dev = torch.device(device) if device is not None else torch.device("cpu")
        return InferenceOptions.fastest() if dev.type == "cuda" else InferenceOptions.eager()

    def replace(self, **changes) -> "InferenceOptions":
        return replace(self, **changes)

    @property
    def use_fused_silu(self) -> bool:
        return self.fused if self.fused_silu is None else bool(self.fused_silu)

    @property
    def use_fused_mlp(self) -> bool:
        return self.fused if self.fused_mlp is None else bool(self.fused_mlp)

    @property
    def use_fused_heads(self) -> bool:
        return self.fused if self.fused_heads is None else bool(self.fused_heads)

    @property
    def any_fused(self) -> bool:
        return self.fused or self.use_fused_silu or self.use_fused_mlp or self.use_fused_heads

    @property
    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir is not None else default_cache_dir()

    def is_eager(self) -> bool:
        """True when :func:`prepare` has nothing to do (fp32 weights, nothing fused)."""
        return (self.dtype is None or self.dtype == torch.float32) and not self.any_fused

    def validate(self) -> "InferenceOptions":
        if self.dtype is not None and self.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(
                f"InferenceOptions.dtype must be None, torch.float32, torch.bfloat16 or torch.float16, got {self.dtype}"
            )
        return self
