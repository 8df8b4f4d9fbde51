"""Orthographic Gaussian rasterization (torch reference + CUDA kernels) and dynamic rendering."""

from ._cuda import cache_dir as cuda_cache_dir
from .camera import (
    canonical_camera,
    canonical_to_world,
    canonical_viewmat,
    inverse_depth_to_depth,
    opengl_c2w_to_viewmat,
    orbit_viewmat,
    ortho_intrinsics,
)
from .dynamic import opacities_at, positions_at, render_canonical, render_dynamic, render_static
from .rasterizer import RenderOutput, rasterize

__all__ = [
    "RenderOutput",
    "rasterize",
    "render_dynamic",
    "render_static",
    "render_canonical",
    "canonical_camera",
    "canonical_viewmat",
    "ortho_intrinsics",
    "orbit_viewmat",
    "opengl_c2w_to_viewmat",
    "positions_at",
    "opacities_at",
    "canonical_to_world",
    "inverse_depth_to_depth",
    "cuda_cache_dir",
]
