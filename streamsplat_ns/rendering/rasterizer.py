"""Public rasterizer API: C orthographic cameras of N Gaussians in one call, two exact backends.

``backend="auto"`` takes the CUDA kernels when the tensors live on a CUDA device and the extension
is built (or can be JIT-built); otherwise the pure-PyTorch reference, which also runs on CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Optional

import torch
from jaxtyping import Float
from torch import Tensor

from . import _torch_impl
from .sh import eval_sh_ortho

logger = logging.getLogger(__name__)

Backend = Literal["auto", "torch", "cuda"]
_announced: set = set()


@dataclass
class RenderOutput:
    """Rendered images; leading dims are [C] (or [B, T] for dynamic renders)."""

    rgb: Float[Tensor, "*batch H W 3"]
    depth: Float[Tensor, "*batch H W 1"]  # accumulated sum of w_i * z_i, NOT divided by alpha
    alpha: Float[Tensor, "*batch H W 1"]

    def expected_depth(self, eps: float = 1e-10) -> Float[Tensor, "*batch H W 1"]:
        return self.depth / self.alpha.clamp_min(eps)

    def reshape(self, *lead: int) -> "RenderOutput":
        return RenderOutput(*(x.reshape(*lead, *x.shape[-3:]) for x in (self.rgb, self.depth, self.alpha)))


def _announce(msg: str) -> None:
    if msg not in _announced:
        _announced.add(msg)
        logger.info(msg)


def resolve_backend(backend: Backend, device: torch.device) -> str:
    """Pick the backend and say once which one runs and why."""
    if backend == "torch":
        return "torch"
    if device.type != "cuda":
        if backend == "cuda":
            raise ValueError("backend='cuda' needs CUDA tensors; move the Gaussians to a GPU or use backend='torch'")
        return "torch"
    from . import _cuda  # light: importing does not build anything

    if _cuda.is_available():
        _announce("streamsplat_ns rasterizer: using the CUDA backend")
        return "cuda"
    reason = _cuda.unavailable_reason()
    if backend == "cuda":
        raise RuntimeError(f"the CUDA rasterizer backend is unavailable: {reason}")
    _announce(f"streamsplat_ns rasterizer: CUDA backend unavailable ({reason}); using the PyTorch reference")
    return "torch"


def check_finite(where: str = "rasterize", **tensors: Optional[Tensor]) -> None:
    """NaN/Inf inputs would silently poison every pixel they touch (or make Gaussians vanish): fail loudly
    with the argument's name. One fused reduction and ONE host synchronisation for all inputs."""
    names = [n for n, t in tensors.items() if t is not None and t.is_floating_point() and t.numel()]
    if not names:
        return
    flags = torch.stack([torch.isfinite(tensors[n]).all() for n in names]).cpu()  # the one sync
    if not bool(flags.all()):
        bad = names[int((~flags).nonzero()[0, 0])]
        raise ValueError(
            f"{where}: input {bad!r} contains NaN or Inf values (check what produced it; a model "
            f"loaded from a checkpoint is validated at load)"
        )


def check_device(where: str, ref: Tensor, **tensors: Optional[Tensor]) -> None:
    """Every input on the device of the Gaussians, floating point (host-side metadata only, no sync)."""
    for name, t in tensors.items():
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.device != ref.device:
            raise ValueError(
                f"{where}: {name} is on {t.device} but the Gaussians are on {ref.device}; "
                f"move it with .to({str(ref.device)!r})"
            )
        if not t.is_floating_point():
            raise TypeError(f"{where}: {name} must be a floating-point tensor, got {t.dtype}")


def _lead(x: Tensor, name: str, n_feat: int) -> Tensor:
    """Normalise Gaussian attributes to [Ib, N, ...]."""
    tail = f", {n_feat}" if n_feat else ""
    if n_feat and (x.dim() == 0 or x.shape[-1] != n_feat):
        raise ValueError(
            f"rasterize: {name} has shape {tuple(x.shape)}; expected [N{tail}] or [C, N{tail}] "
            f"(its last dimension must be {n_feat})"
        )
    want = x.dim() - (0 if n_feat == 0 else 1)
    if want == 1:
        return x[None]
    if want == 2:
        return x
    raise ValueError(f"rasterize: {name} has shape {tuple(x.shape)}; expected [N{tail}] or [C, N{tail}]")


def rasterize(
    means: Float[Tensor, "*c N 3"],
    quats: Float[Tensor, "*c N 4"],
    scales: Float[Tensor, "*c N 3"],
    opacities: Float[Tensor, "*c N"],
    colours: Optional[Float[Tensor, "*c N 3"]],
    viewmats: Float[Tensor, "C 4 4"],
    Ks: Float[Tensor, "C 3 3"],
    width: int,
    height: int,
    backgrounds: Optional[Float[Tensor, "C 3"]] = None,
    *,
    sh: Optional[Float[Tensor, "*c N K 3"]] = None,
    alpha_clamp: float = 0.99,
    near_plane: float = 1e-4,
    far_plane: float = 1e4,
    tile_size: int = 16,
    backend: Backend = "auto",
    check_inputs: bool = True,
) -> RenderOutput:
    """Render C orthographic cameras; Gaussians are shared ([N, ...]) or per camera ([C, N, ...]).

    Inputs are validated at this boundary: shapes always (host-side metadata, free), and with
    ``check_inputs=True`` (the default) also devices and finiteness with one fused reduction and ONE host
    synchronisation per call. ``check_inputs=False`` is the fast path with zero synchronisations, for
    callers that validated already (``render_dynamic``, the inference engine).

    ``sh`` (degree <= 3, K = (deg+1)^2 coefficients) replaces ``colours``: it is evaluated with the
    orthographic view direction (the camera's forward axis, identical for every Gaussian) and mapped
    to colour as ``max(sh(dir) + 0.5, 0)``, gsplat's convention.
    """
    if check_inputs:
        check_device(
            "rasterize",
            means,
            means=means,
            quats=quats,
            scales=scales,
            opacities=opacities,
            colours=colours,
            viewmats=viewmats,
            Ks=Ks,
            backgrounds=backgrounds,
            sh=sh,
        )
    if viewmats.dim() == 2:
        viewmats = viewmats[None]
    if viewmats.dim() != 3 or tuple(viewmats.shape[1:]) != (4, 4):
        raise ValueError(f"rasterize: viewmats has shape {tuple(viewmats.shape)}; expected [C, 4, 4] or [4, 4]")
    C = viewmats.shape[0]
    if Ks.dim() == 2:
        Ks = Ks[None].expand(C, *Ks.shape)
    if Ks.dim() != 3 or tuple(Ks.shape[1:]) != (3, 3):
        raise ValueError(f"rasterize: Ks has shape {tuple(Ks.shape)}; expected [C, 3, 3] or [3, 3]")
    if Ks.shape[0] != C:
        raise ValueError(f"rasterize: got {C} viewmats but {Ks.shape[0]} intrinsics (Ks)")
    means = _lead(means, "means", 3)
    quats = _lead(quats, "quats", 4)
    scales = _lead(scales, "scales", 3)
    opacities = _lead(opacities, "opacities", 0)
    Ib = means.shape[0]
    if Ib not in (1, C):
        raise ValueError(f"rasterize: per-camera Gaussians need a leading dim of {C} (cameras), got {Ib}")
    if sh is not None:
        sh = sh if sh.dim() == 4 else sh[None]
        if sh.dim() != 4 or sh.shape[-1] != 3 or sh.shape[-2] not in (1, 4, 9, 16) or sh.shape[0] not in (1, C):
            raise ValueError(
                f"rasterize: sh has shape {tuple(sh.shape)}; expected [N, K, 3] or [C, N, K, 3] with K in (1, 4, 9, 16)"
            )
        colours = eval_sh_ortho(sh, viewmats, shared=(sh.shape[0] == 1 and C > 1))
    elif colours is None:
        raise ValueError("rasterize: pass colours [.., N, 3] or sh [.., N, K, 3]")
    else:
        colours = _lead(colours, "colours", 3)
    N = means.shape[1]
    if colours.shape[0] not in (1, C):
        raise ValueError(f"rasterize: colours need a leading dim of 1 or {C}, got {tuple(colours.shape)}")
    if colours.shape[0] != Ib:  # one side per camera, the other shared: expand the shared side
        means, quats, scales, opacities, colours = (
            x.expand(C, *x.shape[1:]) for x in (means, quats, scales, opacities, colours)
        )
        Ib = C
    for name, t, tail in (
        ("quats", quats, (4,)),
        ("scales", scales, (3,)),
        ("opacities", opacities, ()),
        ("colours", colours, (3,)),
    ):
        if t.shape[0] != Ib or t.shape[1] != N or tuple(t.shape[2:]) != tail:
            raise ValueError(
                f"rasterize: {name} has shape {tuple(t.shape)}; expected "
                f"[{Ib}, {N}{''.join(', ' + str(x) for x in tail)}] to match means {tuple(means.shape)}"
            )
    if backgrounds is None:
        backgrounds = torch.zeros(C, 3, device=means.device, dtype=means.dtype)
    elif backgrounds.dim() == 1 and backgrounds.shape[0] == 3:
        backgrounds = backgrounds[None].expand(C, 3)
    if tuple(backgrounds.shape) != (C, 3):
        raise ValueError(
            f"rasterize: backgrounds has shape {tuple(backgrounds.shape)}; expected [3] or [{C}, 3] "
            f"(one RGB colour per camera)"
        )
    if int(width) != width or int(height) != height or width <= 0 or height <= 0:
        raise ValueError(f"rasterize: width and height must be positive integers, got {width}x{height}")
    if check_inputs:
        check_finite(
            "rasterize",
            means=means,
            quats=quats,
            scales=scales,
            opacities=opacities,
            colours=colours,
            viewmats=viewmats,
            Ks=Ks,
            backgrounds=backgrounds,
        )
    which = resolve_backend(backend, means.device)
    args = (
        means,
        quats,
        scales,
        opacities,
        colours,
        viewmats,
        Ks,
        int(width),
        int(height),
        backgrounds,
        float(alpha_clamp),
        float(near_plane),
        float(far_plane),
        int(tile_size),
    )
    if which == "cuda":
        from . import _cuda

        rgb, depth, alpha = _cuda.rasterize_images(*args)
    else:
        rgb, depth, alpha = _torch_impl.rasterize_images(*args)
    return RenderOutput(rgb, depth, alpha)
