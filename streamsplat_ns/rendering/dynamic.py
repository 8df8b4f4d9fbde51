"""Time evaluation of StreamSplat's dynamic Gaussians and the batched B x T render.

Motion is a polynomial in (t - t0) applied in the canonical space (linear in x, *inverse depth* and
z), before inverse depth is mapped to depth; opacity follows the life-cycle
``a(t) = a * sigmoid(-g0 (|t - t0| - g1)) / sigmoid(g0 g1)`` (method_spec.md §4-5). The CUDA
backend fuses all of this into its projection kernel; the torch backend evaluates it here and calls
the reference rasterizer once for all B*T images.
"""

from __future__ import annotations

import collections
import threading
from typing import Optional, Tuple, Union

import torch
from jaxtyping import Float
from torch import Tensor

from ..gaussians import DynamicGaussians, Gaussians
from .camera import DEPTH_A, DEPTH_B, canonical_camera, canonical_to_world
from .rasterizer import Backend, RenderOutput, check_device, check_finite, rasterize, resolve_backend
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


def _check_gaussians(where: str, g: Gaussians) -> Tuple[int, int]:
    """Shapes of every field against ``means`` [B, N, 3] (host-side metadata only, no sync) -> (B, N)."""
    if not isinstance(g, Gaussians):
        raise TypeError(f"{where}: expected Gaussians/DynamicGaussians, got {type(g).__name__}")
    if g.means.dim() != 3 or g.means.shape[-1] != 3:
        raise ValueError(f"{where}: means has shape {tuple(g.means.shape)}; expected [B, N, 3]")
    B, N = g.means.shape[:2]
    want = {"quats": (B, N, 4), "scales": (B, N, 3), "opacities": (B, N), "colours": (B, N, 3)}
    if isinstance(g, DynamicGaussians):
        want.update(t0=(B, N), gamma0=(B, N), gamma1=(B, N))
        m = g.motion
        if m.dim() != 4 or tuple(m.shape[:2]) != (B, N) or m.shape[-1] != 3 or m.shape[2] < 1:
            raise ValueError(
                f"{where}: motion has shape {tuple(m.shape)}; expected [{B}, {N}, K, 3] "
                f"(K >= 1 polynomial terms) to match means {tuple(g.means.shape)}"
            )
    for name, shape in want.items():
        t = getattr(g, name)
        if tuple(t.shape) != shape:
            raise ValueError(
                f"{where}: {name} has shape {tuple(t.shape)}; expected {list(shape)} to match means "
                f"{tuple(g.means.shape)}"
            )
    if g.sh is not None and (
        g.sh.dim() != 4 or tuple(g.sh.shape[:2]) != (B, N) or g.sh.shape[-1] != 3 or g.sh.shape[2] not in (1, 4, 9, 16)
    ):
        raise ValueError(f"{where}: sh has shape {tuple(g.sh.shape)}; expected [{B}, {N}, K, 3], K in (1, 4, 9, 16)")
    return B, N


_CANONICAL: "collections.OrderedDict[tuple, Tuple[Tensor, Tensor]]" = collections.OrderedDict()
_CANONICAL_LOCK = threading.Lock()


def _canonical(height: int, width: int, device: torch.device, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    """The canonical camera's (viewmat, K), made once per (device, dtype, size) and never written to: made
    from Python numbers they are a blocking host-to-device copy, i.e. a host synchronisation that waits for
    everything queued (two per render of the engine's loop before this cache)."""
    key = (device, dtype, int(height), int(width))
    with _CANONICAL_LOCK:
        hit = _CANONICAL.get(key)
        if hit is None:
            hit = _CANONICAL[key] = canonical_camera(height, width, device=device, dtype=dtype)
            while len(_CANONICAL) > 16:
                _CANONICAL.popitem(last=False)
        return hit


def _cameras(
    n_img: int,
    height: int,
    width: int,
    viewmats: Optional[Tensor],
    Ks: Optional[Tensor],
    ref: Tensor,
    where: str = "render_dynamic",
    counts: str = "B*T",
) -> Tuple[Tensor, Tensor]:
    for name, t, tail in (("viewmats", viewmats, (4, 4)), ("Ks", Ks, (3, 3))):
        if t is not None and (t.dim() < 2 or tuple(t.shape[-2:]) != tail):
            raise ValueError(f"{where}: {name} has shape {tuple(t.shape)}; expected [..., {tail[0]}, {tail[1]}]")
    if viewmats is None or Ks is None:
        vm, K = _canonical(height, width, ref.device, ref.dtype)
        viewmats = vm if viewmats is None else viewmats
        Ks = K if Ks is None else Ks
    viewmats = viewmats.reshape(-1, 4, 4)
    Ks = Ks.reshape(-1, 3, 3)
    if viewmats.shape[0] == 1:
        viewmats = viewmats.expand(n_img, 4, 4)
    if Ks.shape[0] == 1:
        Ks = Ks.expand(n_img, 3, 3)
    if viewmats.shape[0] != n_img or Ks.shape[0] != n_img:
        raise ValueError(
            f"{where}: need 1 or {n_img} (= {counts}) cameras, got {viewmats.shape[0]} viewmats "
            f"and {Ks.shape[0]} intrinsics (Ks)"
        )
    return viewmats.contiguous(), Ks.contiguous()


def _backgrounds(
    n_img: int,
    backgrounds: Optional[Tensor],
    ref: Tensor,
    where: str = "render_dynamic",
    shapes: str = "[3], [B, 3], [B, T, 3] or [B*T, 3]",
) -> Tensor:
    if backgrounds is None:
        return torch.zeros(n_img, 3, device=ref.device, dtype=ref.dtype)
    if backgrounds.shape[-1:] != (3,) or backgrounds.numel() // 3 not in (1, n_img):
        raise ValueError(
            f"{where}: backgrounds has shape {tuple(backgrounds.shape)}; expected {shapes} "
            f"(one RGB colour for all, per batch item or per image)"
        )
    backgrounds = backgrounds.reshape(-1, 3)
    if backgrounds.shape[0] == 1:
        backgrounds = backgrounds.expand(n_img, 3)
    return backgrounds.contiguous()


def _check_inputs(where: str, g: Gaussians, dynamic: bool, **others: Optional[Tensor]) -> None:
    """Devices of every tensor (metadata, free), then finiteness in one fused reduction with ONE host sync.

    The Gaussians' tensors come first so an error names the first bad one; ``colours`` are only the DC term
    (unused) when ``sh`` is given, so their values are not checked then."""
    motion = dict(motion=g.motion, t0=g.t0, gamma0=g.gamma0, gamma1=g.gamma1) if dynamic else {}
    tensors = dict(
        **motion, quats=g.quats, scales=g.scales, opacities=g.opacities, colours=g.colours, sh=g.sh, **others
    )
    check_device(where, g.means, **tensors)
    check_finite(where, means=g.means, **{**tensors, "colours": g.colours if g.sh is None else None})


def render_dynamic(
    g: DynamicGaussians,
    times: Float[Tensor, "B T"],
    height: int,
    width: int,
    backgrounds: Optional[Tensor] = None,
    viewmats: Optional[Tensor] = None,
    Ks: Optional[Tensor] = None,
    *,
    alpha_clamp: float = 0.99,
    near_plane: float = 1e-4,
    far_plane: float = 1e4,
    backend: Backend = "auto",
    check_inputs: bool = True,
) -> RenderOutput:
    """Render every batch item at each of its T query times in one batched call -> [B, T, H, W, C].

    ``times`` is [T] or [B, T]; ``backgrounds`` is [3], [B, 3] or [B, T, 3]; cameras default to the
    canonical one and may be given as one camera or one per image ([B, T, 4, 4] / [B, T, 3, 3]).

    Every input is validated here, once: shapes always (metadata, free); with ``check_inputs=True`` (the
    default) also devices and finiteness of every tensor (Gaussians, times, cameras, backgrounds) in one
    fused reduction with ONE host synchronisation. ``check_inputs=False`` is the fast path (zero
    synchronisations) for callers whose tensors come from a validated model, e.g. the inference engine.
    The inner ``rasterize`` call never re-validates.
    """
    if not isinstance(g, DynamicGaussians):
        raise TypeError(f"render_dynamic: expected DynamicGaussians, got {type(g).__name__} (use render_static)")
    B, N = _check_gaussians("render_dynamic", g)
    if not isinstance(times, Tensor):
        raise TypeError(f"render_dynamic: times must be a tensor [T] or [B, T], got {type(times).__name__}")
    if times.dim() == 1:
        times = times[None].expand(B, -1)
    if times.dim() != 2 or times.shape[0] != B or times.shape[1] < 1:
        raise ValueError(
            f"render_dynamic: times has shape {tuple(times.shape)}; expected [T] or [{B}, T] "
            f"(the Gaussians have batch {B})"
        )
    if int(width) != width or int(height) != height or width <= 0 or height <= 0:
        raise ValueError(f"render_dynamic: width and height must be positive integers, got {width}x{height}")
    if check_inputs:
        _check_inputs("render_dynamic", g, dynamic=True, times=times, backgrounds=backgrounds, viewmats=viewmats, Ks=Ks)
    T = times.shape[1]
    times = times.to(g.means.dtype)
    n_img = B * T
    if backgrounds is not None and backgrounds.dim() == 2 and backgrounds.shape[0] == B and B > 1 and T > 1:
        backgrounds = backgrounds[:, None].expand(B, T, 3)
    elif backgrounds is not None and backgrounds.dim() == 2 and backgrounds.shape[0] == B == 1:
        backgrounds = backgrounds.reshape(3)
    bgs = _backgrounds(n_img, backgrounds, g.means)
    one_camera = viewmats is None or viewmats.numel() == 16
    viewmats, Ks = _cameras(n_img, height, width, viewmats, Ks, g.means)
    colours = g.colours
    per_image_colours = None
    if g.sh is not None:
        # orthographic SH: the view direction is each camera's forward axis. With one camera for every image
        # (the canonical one by default), one colour per Gaussian serves all times; per-image cameras get
        # per-image colours (deciding that from the values would cost a host synchronisation).
        if one_camera:
            colours = eval_sh_ortho(g.sh, viewmats[:1].expand(B, 4, 4), shared=False)
        else:
            sh_img = g.sh[:, None].expand(B, T, *g.sh.shape[1:]).reshape(n_img, *g.sh.shape[1:])
            per_image_colours = eval_sh_ortho(sh_img, viewmats, shared=False)
    which = resolve_backend(backend, g.means.device)
    if which == "cuda" and per_image_colours is None:
        from . import _cuda

        rgb, depth, alpha = _cuda.rasterize_dynamic(
            g.means,
            g.motion,
            g.t0,
            g.gamma0,
            g.gamma1,
            times,
            g.quats,
            g.scales,
            g.opacities,
            colours,
            viewmats,
            Ks,
            int(width),
            int(height),
            bgs,
            float(alpha_clamp),
            float(near_plane),
            float(far_plane),
            DEPTH_A,
            DEPTH_B,
        )
        return RenderOutput(rgb, depth, alpha).reshape(B, T)
    pos = positions_at(g, times)  # [B,T,N,3]
    world, valid = canonical_to_world(pos)
    opac = opacities_at(g, times) * valid.to(pos.dtype)  # culled Gaussians never pass the 1/255 test

    def per_image(x: Tensor) -> Tensor:
        return x[:, None].expand(B, T, *x.shape[1:]).reshape(n_img, *x.shape[1:])

    out = rasterize(
        world.reshape(n_img, N, 3),
        per_image(g.quats),
        per_image(g.scales),
        opac.reshape(n_img, N),
        per_image(colours) if per_image_colours is None else per_image_colours,
        viewmats,
        Ks,
        width,
        height,
        bgs,
        alpha_clamp=alpha_clamp,
        near_plane=near_plane,
        far_plane=far_plane,
        backend=which,
        check_inputs=False,
    )
    return out.reshape(B, T)


def render_static(
    g: Gaussians,
    height: int,
    width: int,
    backgrounds: Optional[Tensor] = None,
    viewmats: Optional[Tensor] = None,
    Ks: Optional[Tensor] = None,
    **kw,
) -> RenderOutput:
    """Render each batch item's static Gaussians from the canonical (or a given) camera -> [B, H, W, C]."""
    B, N = _check_gaussians("render_static", g)
    if kw.get("check_inputs", True):
        _check_inputs("render_static", g, dynamic=False, backgrounds=backgrounds, viewmats=viewmats, Ks=Ks)
    kw["check_inputs"] = False  # validated above, on the caller's tensors
    world, valid = canonical_to_world(g.means)
    viewmats, Ks = _cameras(B, height, width, viewmats, Ks, g.means, "render_static", "B")
    bgs = _backgrounds(B, backgrounds, g.means, "render_static", "[3] or [B, 3]")
    return rasterize(
        world,
        g.quats,
        g.scales,
        g.opacities * valid.to(world.dtype),
        None if g.sh is not None else g.colours,
        viewmats,
        Ks,
        width,
        height,
        bgs,
        sh=g.sh,
        **kw,
    )


def render_canonical(
    g: Union[Gaussians, DynamicGaussians],
    times: Optional[Tensor] = None,
    height: int = 288,
    width: int = 512,
    background: Union[float, Tensor] = 0.5,
    **kw,
) -> RenderOutput:
    """Render from the canonical camera: dynamic Gaussians at ``times`` ([T] or [B, T], in [0, 1]) ->
    ``RenderOutput`` with ``[B, T, H, W, C]`` tensors; static Gaussians -> ``[B, H, W, C]``. Grey 0.5
    background by default, as the authors evaluate. (``streamsplat_ns.api.render`` is this function.)"""
    dev, dt = g.means.device, g.means.dtype
    bg = background if isinstance(background, Tensor) else torch.full((3,), float(background), device=dev, dtype=dt)
    b = g.means.shape[0]
    if isinstance(g, DynamicGaussians):
        if times is None:
            raise ValueError("render: dynamic Gaussians need times (e.g. torch.linspace(0, 1, 5))")
        times = torch.as_tensor(times, device=dev, dtype=dt)
        if times.dim() == 1:
            times = times[None].expand(b, -1)
        if bg.dim() == 1:
            bg = bg[None].expand(b, 3)
        return render_dynamic(g, times, height, width, backgrounds=bg, **kw)
    if bg.dim() == 1:
        bg = bg[None].expand(b, 3)
    return render_static(g, height, width, backgrounds=bg, **kw)
