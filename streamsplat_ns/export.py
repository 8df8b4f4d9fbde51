"""Standard (Inria) 3DGS ``.ply`` export of StreamSplat Gaussians, with ONE convention everywhere.

The convention (``streamsplat-reconstruct --ply-frames``, ``streamsplat-export``, the Python API; see
docs/api.md):

* frame: :data:`PLY_FRAME` = ``"opencv"``, the canonical camera's frame (x right, y down, z forward), so a
  viewer's identity camera sees the input view; ``"world"`` = the renderer's (x right, y = depth, z up);
* opacity cut-off: :data:`PLY_MIN_OPACITY` = 1/255, the renderer's own cut-off (fainter Gaussians never
  show), opacity taken at the exported time, after the life-cycle;
* time: the source frame index (a float: 12.5 is half-way between frames 12 and 13), located in the
  intervals of :func:`streamsplat_ns.engine.key_frames`;
* file name: :func:`ply_name` = ``<name>_frame<frame, %09.3f>.ply`` (e.g. ``clip_frame00012.500.ply``);
* written atomically (temp name + rename); a full disk raises ``OutOfSpaceError`` naming the file.

Properties, all little-endian float32: ``x y z nx ny nz f_dc_0..2 f_rest_* opacity scale_0..2 rot_0..3``
with opacity as a logit, scales as logs and rotations as (w, x, y, z), which every 3DGS viewer reads.
Dynamic Gaussians are first evaluated at a time t of their interval (positions moved, opacities through
the life-cycle), then mapped from the canonical (x, inverse depth, z) space to the renderer's world
(x, depth, z); Gaussians whose inverse depth left [0, 1] are culled by the renderer and left out here.
"""

from __future__ import annotations

import os
from typing import Literal, Optional, Union

import numpy as np
import torch
from torch import Tensor

from .atomic import atomic_path
from .gaussians import SH_C0, DynamicGaussians, Gaussians

PLY_FRAME: Literal["world", "opencv"] = "opencv"
PLY_MIN_OPACITY = 1.0 / 255.0
# canonical world -> OpenCV camera frame of the canonical camera: x_c = x, y_c = -z, z_c = depth;
# a +90 degree rotation about x, i.e. the quaternion (cos 45, sin 45, 0, 0)
_Q_CAM = np.array([np.sqrt(0.5), np.sqrt(0.5), 0.0, 0.0])
_R_CAM = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def ply_header(n: int, n_rest: int) -> bytes:
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(n_rest)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    lines = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    lines += [f"property float {p}" for p in names] + ["end_header"]
    return ("\n".join(lines) + "\n").encode("ascii")


def write_ply(
    path: Union[str, os.PathLike],
    means: np.ndarray,
    quats: np.ndarray,
    scales: np.ndarray,
    opacities: np.ndarray,
    colours: np.ndarray,
    sh: Optional[np.ndarray] = None,
    sh_degree: int = 3,
) -> int:
    """Write N Gaussians given in world units (opacities in (0, 1), scales as std-devs, RGB colours in
    [0, 1] or SH ``[N, K, 3]``). ``sh_degree`` pads f_rest with zeros up to that degree (3 = the format
    most viewers expect). Returns the number of Gaussians written."""
    n = means.shape[0]
    k_out = (sh_degree + 1) ** 2
    if sh is not None:
        dc = sh[:, 0, :]
        rest = sh[:, 1:, :]
        if rest.shape[1] > k_out - 1:
            raise ValueError(f"SH of degree {int(np.sqrt(sh.shape[1])) - 1} do not fit sh_degree={sh_degree}")
    else:
        dc = (colours - 0.5) / SH_C0
        rest = np.zeros((n, 0, 3), np.float32)
    rest = np.concatenate([rest, np.zeros((n, k_out - 1 - rest.shape[1], 3), np.float32)], axis=1)
    rest = rest.transpose(0, 2, 1).reshape(n, 3 * (k_out - 1))  # channel-major, as the Inria code writes it
    a = np.clip(opacities.astype(np.float64), 1e-6, 1 - 1e-6)
    q = quats / np.linalg.norm(quats, axis=-1, keepdims=True).clip(1e-12)
    cols = [means, np.zeros((n, 3)), dc, rest, np.log(a / (1 - a))[:, None], np.log(np.clip(scales, 1e-12, None)), q]
    data = np.concatenate(
        [np.asarray(c, np.float64).reshape(n, c.shape[-1] if np.ndim(c) > 1 else 1) for c in cols], axis=1
    ).astype("<f4")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(ply_header(n, rest.shape[1]))
        f.write(data.tobytes())
    return n


def ply_name(name: str, frame: float) -> str:
    """THE PLY file name: ``<name>_frame<source frame, %09.3f>.ply`` (name made file-system safe)."""
    import re

    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)) or "clip"
    return f"{safe}_frame{float(frame):09.3f}.ply"


def read_ply(path: Union[str, os.PathLike]) -> dict:
    """Minimal reader of the files :func:`write_ply` writes (for tests and round trips)."""
    with open(path, "rb") as f:
        raw = f.read()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    header = raw[:end].decode("ascii").splitlines()
    names = [l.split()[-1] for l in header if l.startswith("property")]
    n = int(next(l for l in header if l.startswith("element vertex")).split()[-1])
    arr = np.frombuffer(raw[end:], dtype="<f4").reshape(n, len(names))
    return {name: arr[:, i] for i, name in enumerate(names)}


def gaussians_at(g: Union[Gaussians, DynamicGaussians], time: Optional[float] = None, batch_index: int = 0):
    """World-space means / quats / scales / opacities / colours / sh of one batch item at ``time``."""
    from .rendering.dynamic import canonical_to_world, opacities_at, positions_at

    with torch.no_grad():
        b = batch_index
        if isinstance(g, DynamicGaussians):
            if time is None:
                raise ValueError("exporting dynamic Gaussians needs a time in [0, 1] of their interval")
            t = torch.tensor([[float(time)]], device=g.means.device, dtype=g.means.dtype)
            one = DynamicGaussians(**{k: (None if v is None else v[b : b + 1]) for k, v in vars(g).items()})
            pos = positions_at(one, t)[0, 0]
            opa = opacities_at(one, t)[0, 0]
        else:
            pos, opa = g.means[b], g.opacities[b]
        world, valid = canonical_to_world(pos)
        sh = None if g.sh is None else g.sh[b]
        return world, valid, g.quats[b], g.scales[b], opa, g.colours[b], sh


def export_ply(
    path: Union[str, os.PathLike],
    g: Union[Gaussians, DynamicGaussians],
    time: Optional[float] = None,
    batch_index: int = 0,
    min_opacity: float = PLY_MIN_OPACITY,
    frame: Literal["world", "opencv"] = PLY_FRAME,
    sh_degree: int = 3,
) -> int:
    """Export one batch item (dynamic Gaussians at ``time``) as a standard 3DGS ``.ply``.

    ``frame="world"``: the renderer's world (x right, y = depth forward, z up). ``frame="opencv"``: the
    canonical camera's OpenCV frame (x right, y down, z forward), handy for viewers that start at the origin
    looking down +z (the default, :data:`PLY_FRAME`). Gaussians culled by the renderer or below ``min_opacity``
    (default 1/255, the renderer's cut-off) are left out. Written atomically."""
    world, valid, quats, scales, opa, colours, sh = gaussians_at(g, time, batch_index)
    keep = (valid & (opa >= min_opacity)).cpu().numpy()

    def np_(x: Optional[Tensor]):
        return None if x is None else x.detach().float().cpu().numpy()[keep]

    means, q = np_(world), np_(quats)
    if frame == "opencv":
        means = means @ _R_CAM.T
        q = _quat_mul(np.broadcast_to(_Q_CAM, q.shape), q)
    elif frame != "world":
        raise ValueError(f"frame must be 'world' or 'opencv', got {frame!r}")
    return write_ply(path, means, q, np_(scales), np_(opa), np_(colours), np_(sh), sh_degree)
