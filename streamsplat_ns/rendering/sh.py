"""Real spherical harmonics up to degree 3, evaluated with the orthographic view direction.

For an orthographic camera every Gaussian is seen along the same direction (the camera's forward
axis), unlike gsplat, which uses ``mean - camera_position`` for all camera models.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from ..gaussians import SH_C0

C0 = SH_C0
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def sh_degree_from_coeffs(k: int) -> int:
    for deg in range(4):
        if (deg + 1) ** 2 == k:
            return deg
    raise ValueError(f"SH coefficients per channel must be 1, 4, 9 or 16 (degree <= 3), got {k}")


def eval_sh(sh: Float[Tensor, "*b K 3"], dirs: Float[Tensor, "*b 3"]) -> Float[Tensor, "*b 3"]:
    deg = sh_degree_from_coeffs(sh.shape[-2])
    out = C0 * sh[..., 0, :]
    if deg == 0:
        return out
    d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    x, y, z = d[..., 0:1], d[..., 1:2], d[..., 2:3]
    out = out - C1 * y * sh[..., 1, :] + C1 * z * sh[..., 2, :] - C1 * x * sh[..., 3, :]
    if deg == 1:
        return out
    xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
    out = (
        out
        + C2[0] * xy * sh[..., 4, :]
        + C2[1] * yz * sh[..., 5, :]
        + C2[2] * (2 * zz - xx - yy) * sh[..., 6, :]
        + C2[3] * xz * sh[..., 7, :]
        + C2[4] * (xx - yy) * sh[..., 8, :]
    )
    if deg == 2:
        return out
    return (
        out
        + C3[0] * y * (3 * xx - yy) * sh[..., 9, :]
        + C3[1] * xy * z * sh[..., 10, :]
        + C3[2] * y * (4 * zz - xx - yy) * sh[..., 11, :]
        + C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[..., 12, :]
        + C3[4] * x * (4 * zz - xx - yy) * sh[..., 13, :]
        + C3[5] * z * (xx - yy) * sh[..., 14, :]
        + C3[6] * x * (xx - 3 * yy) * sh[..., 15, :]
    )


def eval_sh_ortho(
    sh: Float[Tensor, "Ib N K 3"], viewmats: Float[Tensor, "C 4 4"], shared: bool
) -> Float[Tensor, "Ic N 3"]:
    """Colours per camera: the view direction is each camera's forward (+z) axis in world frame."""
    fwd = viewmats[:, 2, :3]  # third row of R = camera z axis expressed in world coordinates
    if shared:
        dirs = fwd[:, None, :].expand(-1, sh.shape[1], 3)
        rgb = eval_sh(sh.expand(fwd.shape[0], *sh.shape[1:]), dirs)
    else:
        dirs = fwd[:, None, :].expand(sh.shape[0], sh.shape[1], 3)
        rgb = eval_sh(sh, dirs)
    return torch.clamp_min(rgb + 0.5, 0.0)
