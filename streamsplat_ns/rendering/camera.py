"""Camera maths of StreamSplat: the canonical orthographic camera, canonical-to-world, viewer poses, orbits.

The canonical camera looks along world +y (the inverse-depth axis of the canonical space), with world
+x image-right and world +z image-up; the image spans x, z in [-1, 1] whatever the aspect ratio, so
pixels are anisotropic in world units (2/W by 2/H). Intrinsics follow gsplat's ortho convention:
fx, fy are pixels per world unit and pixel centres sit at +0.5.

Plain tensors and floats only (no nerfstudio): the nerfstudio viewer, ``streamsplat-camera-path`` and
the renderers all build on these.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from jaxtyping import Bool, Float
from torch import Tensor

# depth = 1 / (DEPTH_A + DEPTH_B * y_hat): y_hat = 1 -> 0.1 (near), y_hat = 0 -> 5 (far)
DEPTH_A = 0.2
DEPTH_B = 9.8
DEPTH_EPS = 1e-6


def inverse_depth_to_depth(y_hat: Tensor, a: float = DEPTH_A, b: float = DEPTH_B) -> Tensor:
    return 1.0 / (a + b * y_hat + DEPTH_EPS)


def canonical_to_world(
    pos: Float[Tensor, "*b 3"], a: float = DEPTH_A, b: float = DEPTH_B
) -> Tuple[Float[Tensor, "*b 3"], Bool[Tensor, "*b"]]:
    """(x, y_hat, z) -> (x, depth, z); Gaussians whose y_hat left [0, 1] are flagged invalid (culled)."""
    y = pos[..., 1]
    valid = (y >= 0) & (y <= 1)
    y_safe = torch.where(valid, y, torch.full_like(y, 0.5))
    world = torch.stack([pos[..., 0], inverse_depth_to_depth(y_safe, a, b), pos[..., 2]], dim=-1)
    return world, valid


# world -> camera (OpenCV frame: x right, y down, z forward): x_c = x, y_c = -z, z_c = y
_CANONICAL_W2C = ((1.0, 0.0, 0.0, 0.0), (0.0, 0.0, -1.0, 0.0), (0.0, 1.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))


def canonical_viewmat(device=None, dtype=torch.float32) -> Float[Tensor, "4 4"]:
    return torch.tensor(_CANONICAL_W2C, device=device, dtype=dtype)


def ortho_intrinsics(
    height: int, width: int, device=None, dtype=torch.float32, zoom: float = 1.0
) -> Float[Tensor, "3 3"]:
    """K mapping world x, z in [-1/zoom, 1/zoom] onto the full image."""
    return torch.tensor(
        [[zoom * width / 2.0, 0.0, width / 2.0], [0.0, zoom * height / 2.0, height / 2.0], [0.0, 0.0, 1.0]],
        device=device,
        dtype=dtype,
    )


def canonical_camera(
    height: int, width: int, device=None, dtype=torch.float32
) -> Tuple[Float[Tensor, "4 4"], Float[Tensor, "3 3"]]:
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


def orbit_viewmat(
    yaw: float,
    pitch: float,
    target_depth: float = 1.0,
    device=None,
    dtype=torch.float32,
    center: Optional[Tuple[float, float, float]] = None,
) -> Float[Tensor, "4 4"]:
    """An orthographic view of the canonical scene rotated about a point on the optical axis.

    Used for novel-view orbits (ns-render / the viewer): yaw turns about world z (up), pitch about the
    camera's x axis, both in radians, around ``center`` (default: (0, target_depth, 0)).
    """
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


# ---------------------------------------------------------------- viewer poses (perspective -> ortho)
# nerfstudio's viewer and ns-render hand over perspective cameras; StreamSplat's scene only makes sense
# orthographically. perspective_to_ortho keeps the pose and turns the perspective framing at the orbit
# pivot into an orthographic one, so the canonical view, orbits and scroll-zoom all behave.

Vec3 = Tuple[float, float, float]

VIEWER_PIVOT_Y_HAT = 0.5
"""The viewer orbits about (0, depth(y_hat), 0): the middle of the canonical volume in inverse depth."""
ORTHO_PUSHBACK = 100.0
"""The ortho camera is moved back so the pivot sits this far in front: nothing near it is near-culled."""


def viewer_pivot() -> Vec3:
    """The world point the viewer and the orbit paths turn about."""
    return (0.0, 1.0 / (DEPTH_A + DEPTH_B * VIEWER_PIVOT_Y_HAT), 0.0)


def canonical_viewer_c2w(fov_deg: float, yaw_deg: float = 0.0, pitch_deg: float = 0.0) -> Float[Tensor, "3 4"]:
    """OpenGL camera-to-world [3, 4] of a perspective camera (vertical ``fov_deg``) that ``perspective_to_ortho``
    maps exactly onto the canonical view; yaw (about world up, z) and pitch orbit it about the pivot.

    Shared by the viewer's initial camera and ``streamsplat-camera-path``."""
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    cz, sz, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    Rz = torch.tensor([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    Rx = torch.tensor([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]], dtype=torch.float64)
    R = Rz @ Rx  # columns: right, forward, up (canonical: +x, +y, +z)
    right, forward, up = R[:, 0], R[:, 1], R[:, 2]
    dist = 1.0 / math.tan(math.radians(fov_deg) / 2.0)
    pos = torch.tensor(viewer_pivot(), dtype=torch.float64) - dist * forward
    return torch.stack([right, up, -forward, pos], dim=1).float()


def viewer_look_at(fov_deg: float, scale: float = 1.0) -> Tuple[Vec3, Vec3, Vec3]:
    """(position, look_at, up) that put an interactive viewer's camera (vertical ``fov_deg``) at the canonical
    view, orbiting about the pivot with world z up; ``scale`` converts to the viewer's units (viser)."""
    c2w = canonical_viewer_c2w(fov_deg)
    position = tuple(float(x) * scale for x in c2w[:, 3])
    look_at = tuple(float(x) * scale for x in viewer_pivot())
    return position, look_at, (0.0, 0.0, 1.0)  # type: ignore[return-value]


def orbit_angles(k: int, n: int, yaw_deg: float, pitch_deg: float, full_circle: bool = False) -> Tuple[float, float]:
    """(yaw, pitch) in degrees of frame ``k`` of an ``n``-frame orbit: yaw = A sin(phase), pitch = B cos(phase),
    or a full turn in yaw (pitch 0) with ``full_circle``."""
    phase = 2 * math.pi * k / n
    yaw = 360.0 * k / n if full_circle else yaw_deg * math.sin(phase)
    pitch = 0.0 if full_circle else pitch_deg * math.cos(phase)
    return yaw, pitch


def perspective_to_ortho(
    c2w: Float[Tensor, "3 4"],
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    *,
    orthographic: bool,
    model_size: Tuple[int, int],
    zoom: float = 1.0,
) -> Tuple[Float[Tensor, "4 4"], Float[Tensor, "3 3"], float]:
    """An OpenGL camera -> (viewmat, K, z_offset) of an orthographic view of the canonical scene.

    Orthographic cameras (the datamanager's) keep their intrinsics (pixels per world unit). Perspective
    ones (viewer, ns-render) keep their pose; the ortho scale is the perspective one at the pivot's depth,
    so the view from ``canonical_viewer_c2w`` is exactly the canonical image and scrolling in zooms in.
    x is scaled by the model's aspect ratio (``model_size`` = (H, W)), like the canonical camera's
    anisotropic pixels. The camera is then moved back along its axis by ``z_offset`` (no effect on an
    ortho image) so no Gaussian is near-culled; ``zoom`` multiplies the scale.
    """
    device = c2w.device
    viewmat = opengl_c2w_to_viewmat(c2w.float())
    zoom = max(zoom, 1e-3)
    pivot_z = float(viewmat[2, :3] @ torch.tensor(viewer_pivot(), device=device) + viewmat[2, 3])
    if orthographic:
        sx, sy = fx * zoom, fy * zoom
    else:
        hm, wm = model_size
        s = zoom / max(pivot_z, 1e-3)
        sx, sy = fy * s * (wm / hm), fy * s
    K = torch.tensor([[sx, 0.0, cx], [0.0, sy, cy], [0.0, 0.0, 1.0]], device=device)
    z_offset = ORTHO_PUSHBACK - pivot_z
    viewmat = viewmat.clone()
    viewmat[2, 3] += z_offset
    return viewmat, K, z_offset


def z_to_ray_distance(z: Float[Tensor, "H W 1"], fx: float, fy: float, cx: float, cy: float) -> Float[Tensor, "H W 1"]:
    """z-depth -> distance along a perspective camera's pixel rays, z * |(u', v', 1)| (what nerfstudio composites)."""
    H, W = z.shape[:2]
    v, u = torch.meshgrid(torch.arange(H, device=z.device) + 0.5, torch.arange(W, device=z.device) + 0.5, indexing="ij")
    return z * torch.sqrt(((u - cx) / fx) ** 2 + ((v - cy) / fy) ** 2 + 1.0)[..., None]
