"""The canonical orthographic camera of StreamSplat and helpers to build others.

The canonical camera looks along world +y (the inverse-depth axis of the canonical space), with world
+x image-right and world +z image-up; the image spans x, z in [-1, 1] whatever the aspect ratio, so
pixels are anisotropic in world units (2/W by 2/H). Intrinsics follow gsplat's ortho convention:
fx, fy are pixels per world unit and pixel centres sit at +0.5.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

# world -> camera (OpenCV frame: x right, y down, z forward): x_c = x, y_c = -z, z_c = y
_CANONICAL_W2C = ((1.0, 0.0, 0.0, 0.0), (0.0, 0.0, -1.0, 0.0), (0.0, 1.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))


def canonical_viewmat(device=None, dtype=torch.float32) -> Float[Tensor, "4 4"]:
    return torch.tensor(_CANONICAL_W2C, device=device, dtype=dtype)


def ortho_intrinsics(height: int, width: int, device=None, dtype=torch.float32,
                     zoom: float = 1.0) -> Float[Tensor, "3 3"]:
    """K mapping world x, z in [-1/zoom, 1/zoom] onto the full image."""
    return torch.tensor([[zoom * width / 2.0, 0.0, width / 2.0],
                         [0.0, zoom * height / 2.0, height / 2.0],
                         [0.0, 0.0, 1.0]], device=device, dtype=dtype)


def canonical_camera(height: int, width: int, device=None,
                     dtype=torch.float32) -> Tuple[Float[Tensor, "4 4"], Float[Tensor, "3 3"]]:
    """(viewmat, K) of the fixed canonical camera at the given resolution."""
    return canonical_viewmat(device, dtype), ortho_intrinsics(height, width, device, dtype)


def opengl_c2w_to_viewmat(c2w: Float[Tensor, "*batch 3 4"]) -> Float[Tensor, "*batch 4 4"]:
    """nerfstudio's OpenGL camera-to-world (x right, y up, looking -z) -> OpenCV world-to-camera."""
    R = c2w[..., :3, :3] * torch.tensor([1.0, -1.0, -1.0], device=c2w.device, dtype=c2w.dtype)
    t = c2w[..., :3, 3:4]
    Rt = R.transpose(-1, -2)
    top = torch.cat([Rt, -Rt @ t], dim=-1)
    bottom = torch.zeros(*top.shape[:-2], 1, 4, device=c2w.device, dtype=c2w.dtype)
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], dim=-2)


def canonical_c2w_opengl(device=None, dtype=torch.float32) -> Float[Tensor, "3 4"]:
    """The canonical camera as an OpenGL camera-to-world matrix (what nerfstudio's Cameras hold)."""
    w2c = canonical_viewmat(device, dtype)
    R_cv = w2c[:3, :3].T  # camera->world rotation, OpenCV axes
    R_gl = R_cv * torch.tensor([1.0, -1.0, -1.0], device=device, dtype=dtype)
    return torch.cat([R_gl, torch.zeros(3, 1, device=device, dtype=dtype)], dim=1)


def orbit_viewmat(yaw: float, pitch: float, target_depth: float = 1.0, device=None,
                  dtype=torch.float32, center: Optional[Tuple[float, float, float]] = None) -> Float[Tensor, "4 4"]:
    """An orthographic view of the canonical scene rotated about a point on the optical axis.

    Used for novel-view orbits (ns-render / the viewer): yaw turns about world z (up), pitch about the
    camera's x axis, both in radians, around ``center`` (default: (0, target_depth, 0)).
    """
    import math

    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    Rz = torch.tensor([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)
    Rx = torch.tensor([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]], dtype=dtype)
    c = torch.tensor(center if center is not None else (0.0, target_depth, 0.0), dtype=dtype)
    w2c0 = canonical_viewmat(dtype=dtype)
    R_obj = Rx @ Rz  # rotate the scene about c, then view with the canonical camera
    R = w2c0[:3, :3] @ R_obj
    t = w2c0[:3, :3] @ (c - R_obj @ c)
    out = torch.eye(4, dtype=dtype)
    out[:3, :3] = R
    out[:3, 3] = t
    return out.to(device)
