"""Inference-only machinery: options, fused Triton kernels, kernel choices (cached on disk), CUDA graphs.

>>> from streamsplat_ns.inference import InferenceOptions, prepare
>>> model = prepare(model, InferenceOptions.fastest())     # bf16 + fused kernels; no-op for eager()
"""

from .choices import cpu_time_ms, gpu_time_ms
from .options import InferenceOptions, default_cache_dir
from .prepare import prepare

__all__ = ["InferenceOptions", "prepare", "default_cache_dir", "gpu_time_ms", "cpu_time_ms"]
