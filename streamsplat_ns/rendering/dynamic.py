"""Time evaluation of StreamSplat's dynamic Gaussians and the batched B x T render.

Motion is a polynomial in (t - t0) applied in the canonical space (linear in x, *inverse depth* and
z), before inverse depth is mapped to depth; opacity follows the life-cycle
``a(t) = a * sigmoid(-g0 (|t - t0| - g1)) / sigmoid(g0 g1)`` (method_spec.md §4-5). The CUDA
backend fuses all of this into its projection kernel; the torch backend evaluates it here and calls
the reference rasterizer once for all B*T images.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from ..gaussians import DynamicGaussians, Gaussians
# the depth mapping lives with the camera maths; re-exported here for existing callers
from .camera import DEPTH_A, DEPTH_B, DEPTH_EPS, canonical_camera, canonical_to_world, inverse_depth_to_depth  # noqa: F401,E501
from .rasterizer import Backend, RenderOutput, check_finite, rasterize, resolve_backend
from .sh import eval_sh_ortho


def positions_at(g: DynamicGaussians, times: Float[Tensor, "B T"]) -> Float[Tensor, "B T N 3"]:
    dt = times[:, :, None] - g.t0[:, None, :]  # [B,T,N]
    pos = g.means[:, None]
    term = torch.ones_like(dt)
    for k in range(g.motion.shape[2]):
        term = term * dt
        pos = pos + g.motion[:, None, :, k, :] * term[..., None]
    return pos


def lifecycle(gamma0: Tensor, gamma1: Tensor, dt: Tensor) -> Tensor:
    """Opacity multiplier; exactly 1 at dt = 0, constant when gamma0 = 0."""
    return torch.sigmoid(-gamma0 * (dt.abs() - gamma1)) / torch.sigmoid(gamma0 * gamma1)


def opacities_at(g: DynamicGaussians, times: Float[Tensor, "B T"]) -> Float[Tensor, "B T N"]:
    dt = times[:, :, None] - g.t0[:, None, :]
    return g.opacities[:, None] * lifecycle(g.gamma0[:, None], g.gamma1[:, None], dt)


def _cameras(n_img: int, height: int, width: int, viewmats: Optional[Tensor], Ks: Optional[Tensor],
             ref: Tensor) -> Tuple[Tensor, Tensor]:
    if viewmats is None or Ks is None:
        vm, K = canonical_camera(height, width, device=ref.device, dtype=ref.dtype)
        viewmats = vm if viewmats is None else viewmats
        Ks = K if Ks is None else Ks
    viewmats = viewmats.reshape(-1, 4, 4)
    Ks = Ks.reshape(-1, 3, 3)
    if viewmats.shape[0] == 1:
        viewmats = viewmats.expand(n_img, 4, 4)
    if Ks.shape[0] == 1:
        Ks = Ks.expand(n_img, 3, 3)
    if viewmats.shape[0] != n_img or Ks.shape[0] != n_img:
        raise ValueError(f"render_dynamic: need 1 or {n_img} (= B*T) cameras, got {viewmats.shape[0]} viewmats "
                         f"and {Ks.shape[0]} intrinsics")
    return viewmats.contiguous(), Ks.contiguous()


def _backgrounds(n_img: int, backgrounds: Optional[Tensor], ref: Tensor) -> Tensor:
    if backgrounds is None:
        return torch.zeros(n_img, 3, device=ref.device, dtype=ref.dtype)
    backgrounds = backgrounds.reshape(-1, 3)
    if backgrounds.shape[0] == 1:
        backgrounds = backgrounds.expand(n_img, 3)
    if backgrounds.shape[0] != n_img:
        raise ValueError(f"render_dynamic: need 1, B or B*T backgrounds, got {backgrounds.shape[0]}")
    return backgrounds.contiguous()


def render_dynamic(g: DynamicGaussians, times: Float[Tensor, "B T"], height: int, width: int,
                   backgrounds: Optional[Tensor] = None, viewmats: Optional[Tensor] = None,
                   Ks: Optional[Tensor] = None, *, alpha_clamp: float = 0.99, near_plane: float = 1e-4,
                   far_plane: float = 1e4, backend: Backend = "auto", check_inputs: bool = True) -> RenderOutput:
    """Render every batch item at each of its T query times in one batched call -> [B, T, H, W, C].

    ``backgrounds`` is [3], [B, 3] or [B, T, 3]; cameras default to the canonical one and may be
    given as one camera or one per image ([B, T, 4, 4] / [B, T, 3, 3]).
    """
    B, N = g.means.shape[:2]
    if times.dim() == 1:
        times = times[None].expand(B, -1)
    if times.shape[0] != B:
        raise ValueError(f"render_dynamic: times has batch {times.shape[0]}, Gaussians have {B}")
    T = times.shape[1]
    times = times.to(g.means.dtype)
    n_img = B * T
    if backgrounds is not None and backgrounds.dim() == 2 and backgrounds.shape[0] == B and T > 1:
        backgrounds = backgrounds[:, None].expand(B, T, 3)
    bgs = _backgrounds(n_img, backgrounds, g.means)
    viewmats, Ks = _cameras(n_img, height, width, viewmats, Ks, g.means)
    colours = g.colours
    per_image_colours = None
    if g.sh is not None:
        # orthographic SH: the view direction is each camera's forward axis. When every time of a batch
        # item uses the same direction (the canonical camera), one colour per Gaussian serves all times.
        fwd = viewmats[:, 2, :3].reshape(B, T, 3)
        if bool((fwd == fwd[:, :1]).all()):
            colours = eval_sh_ortho(g.sh, viewmats.reshape(B, T, 4, 4)[:, 0], shared=False)
        else:
            sh_img = g.sh[:, None].expand(B, T, *g.sh.shape[1:]).reshape(n_img, *g.sh.shape[1:])
            per_image_colours = eval_sh_ortho(sh_img, viewmats, shared=False)
    if check_inputs:
        check_finite(means=g.means, motion=g.motion, gamma0=g.gamma0, gamma1=g.gamma1, quats=g.quats,
                     scales=g.scales, opacities=g.opacities, colours=g.colours, times=times)
    which = resolve_backend(backend, g.means.device)
    if which == "cuda" and per_image_colours is None:
        from . import _cuda

        rgb, depth, alpha = _cuda.rasterize_dynamic(
            g.means, g.motion, g.t0, g.gamma0, g.gamma1, times, g.quats, g.scales, g.opacities, colours,
            viewmats, Ks, int(width), int(height), bgs, float(alpha_clamp), float(near_plane), float(far_plane),
            DEPTH_A, DEPTH_B)
        return RenderOutput(rgb, depth, alpha).reshape(B, T)
    pos = positions_at(g, times)  # [B,T,N,3]
    world, valid = canonical_to_world(pos)
    opac = opacities_at(g, times) * valid.to(pos.dtype)  # culled Gaussians never pass the 1/255 test

    def per_image(x: Tensor) -> Tensor:
        return x[:, None].expand(B, T, *x.shape[1:]).reshape(n_img, *x.shape[1:])

    out = rasterize(world.reshape(n_img, N, 3), per_image(g.quats), per_image(g.scales),
                    opac.reshape(n_img, N), per_image(colours) if per_image_colours is None else per_image_colours,
                    viewmats, Ks, width, height, bgs, alpha_clamp=alpha_clamp, near_plane=near_plane,
                    far_plane=far_plane, backend=which, check_inputs=False)
    return out.reshape(B, T)


def render_static(g: Gaussians, height: int, width: int, backgrounds: Optional[Tensor] = None,
                  viewmats: Optional[Tensor] = None, Ks: Optional[Tensor] = None, **kw) -> RenderOutput:
    """Render each batch item's static Gaussians from the canonical (or a given) camera -> [B, H, W, C]."""
    B, N = g.means.shape[:2]
    world, valid = canonical_to_world(g.means)
    viewmats, Ks = _cameras(B, height, width, viewmats, Ks, g.means)
    bgs = _backgrounds(B, backgrounds, g.means)
    return rasterize(world, g.quats, g.scales, g.opacities * valid.to(world.dtype),
                     None if g.sh is not None else g.colours, viewmats, Ks, width, height, bgs, sh=g.sh, **kw)
