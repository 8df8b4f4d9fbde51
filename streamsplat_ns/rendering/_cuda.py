"""CUDA backend of the orthographic rasterizer: extension loader and autograd Functions.

The kernels ship inside the package, in ``streamsplat_ns/rendering/csrc/`` (projection, forward, backward,
bindings; semantics: docs/rasterizer.md), so an editable and a plain ``pip install .`` find them alike.
They are compiled for the GPU at hand into the user cache (``$STREAMSPLAT_CUDA_CACHE_DIR``, else
``$STREAMSPLAT_CACHE_DIR/cuda``, default ``~/.cache/streamsplat/cuda``), either ahead of time with
``streamsplat-build-cuda`` or just in time on first use; a build is keyed by the sources, torch's version
and the GPU architecture, so a stale one is never loaded. Importing this module never builds anything and
works without nvcc or a GPU, so CPU-only installs and CI stay cheap; :func:`unavailable_reason` says why the
backend cannot run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import threading
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

_EXT = None
_EXT_ERROR: Optional[str] = None
_LOCK = threading.Lock()
SOURCES = ("projection.cu", "forward.cu", "backward.cu", "bindings.cpp")
"""Compiled translation units, in ``csrc/``."""
HEADERS = ("common.cuh", "rasterizer.h")
# bit -> tensor name, as set by the projection kernel's NaN check
_NAN_FLAGS = (
    (1, "means"),
    (2, "quats"),
    (4, "scales"),
    (8, "opacities"),
    (16, "colours"),
    (32, "motion"),
    (64, "t0"),
    (128, "gamma0"),
    (256, "gamma1"),
    (512, "times"),
    (1024, "viewmats"),
    (2048, "Ks"),
    (4096, "backgrounds"),
)


def cuda_source_dir() -> Path:
    """The kernel sources, shipped as package data next to this module."""
    return Path(__file__).resolve().parent / "csrc"


def missing_sources() -> List[str]:
    return [f for f in SOURCES + HEADERS if not (cuda_source_dir() / f).is_file()]


CUDA_CACHE_ENV = "STREAMSPLAT_CUDA_CACHE_DIR"


def cache_dir() -> Path:
    """Where built kernels live: ``$STREAMSPLAT_CUDA_CACHE_DIR``, else ``$STREAMSPLAT_CACHE_DIR/cuda`` (default
    ``~/.cache/streamsplat/cuda``). A variable of its own, so a run can start with empty kernel-choice and
    Triton caches (a "fresh machine") and still load the extension that was built already."""
    own = os.environ.get(CUDA_CACHE_ENV)
    if own:
        return Path(own).expanduser()
    root = os.environ.get("STREAMSPLAT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "streamsplat")
    return Path(root) / "cuda"


def module_name(arch: str) -> str:
    """Name of the build for ``arch`` ("90" for sm_90): changes with the sources, torch and its CUDA."""
    h = hashlib.sha256(f"{torch.__version__}|{torch.version.cuda}".encode())
    for f in sorted(SOURCES + HEADERS):
        h.update(f.encode())
        h.update((cuda_source_dir() / f).read_bytes())
    return f"streamsplat_ns_raster_sm{arch}_{h.hexdigest()[:12]}"


def _device_arch() -> str:
    major, minor = torch.cuda.get_device_capability()
    return f"{major}{minor}"


def _built_library(arch: str) -> Optional[Path]:
    """The compiled module for ``arch`` in the cache, if a build (ahead of time or JIT) left one."""
    if missing_sources():
        return None
    name = module_name(arch)
    so = cache_dir() / name / f"{name}.so"
    return so if so.is_file() else None


def _nvcc() -> Optional[str]:
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME and os.path.isfile(os.path.join(CUDA_HOME, "bin", "nvcc")):
        return os.path.join(CUDA_HOME, "bin", "nvcc")
    return shutil.which("nvcc")


def build_reason(arch: Optional[str] = None) -> Optional[str]:
    """Why the kernels cannot be compiled here for ``arch`` (default: this GPU's); None when they can."""
    missing = missing_sources()
    if missing:
        return (
            f"CUDA sources {missing} are missing from {cuda_source_dir()} (a broken install: reinstall "
            "streamsplat-ns, whose wheel ships them as package data)"
        )
    cpu_only = torch.version.cuda is None
    if arch is None and not torch.cuda.is_available():
        return "no CUDA device visible to PyTorch" + (
            f" (and torch {torch.__version__} is a CPU-only build)"
            if cpu_only
            else " (pass an architecture, e.g. --arch 9.0, to build without one)"
        )
    if cpu_only:
        return (
            f"this PyTorch ({torch.__version__}) is a CPU-only build: install a CUDA build of torch to "
            "compile the kernels"
        )
    try:
        nvcc = _nvcc()
    except Exception as e:  # pragma: no cover - broken torch installs
        return f"cannot locate the CUDA toolkit: {e}"
    if nvcc is None:
        return (
            f"nvcc not found: install the CUDA toolkit (torch was built with CUDA {torch.version.cuda}) and "
            "set CUDA_HOME"
        )
    return None


def unavailable_reason() -> Optional[str]:
    """Why the CUDA backend cannot run here (None when it can); never builds anything."""
    if _EXT is not None:
        return None
    if _EXT_ERROR is not None:
        return _EXT_ERROR
    if not torch.cuda.is_available():
        cpu_only = " (PyTorch is a CPU-only build)" if torch.version.cuda is None else ""
        return f"no CUDA device visible to PyTorch{cpu_only}"
    if _built_library(_device_arch()) is not None:
        return None
    reason = build_reason()
    if reason is not None:
        return f"{reason}; and no prebuilt kernels in {cache_dir()} (streamsplat-build-cuda builds them)"
    return None


def is_available() -> bool:
    return unavailable_reason() is None


def status() -> Dict[str, object]:
    """What the loader sees, for ``streamsplat-build-cuda --check`` and bug reports."""
    arch = _device_arch() if torch.cuda.is_available() else None
    return {
        "sources": str(cuda_source_dir()),
        "missing_sources": missing_sources(),
        "cache": str(cache_dir()),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "device_arch": arch,
        "prebuilt": str(_built_library(arch)) if arch and _built_library(arch) else None,
        "unavailable_reason": unavailable_reason(),
    }


def _import_library(name: str, so: Path):
    spec = importlib.util.spec_from_file_location(name, so)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {so}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build(arch: Optional[str] = None, verbose: bool = False):
    """Compile the kernels for ``arch`` ("9.0" or "90"; default: this GPU's) into :func:`cache_dir`.

    Returns the loaded module. ``streamsplat-build-cuda`` calls this ahead of time; :func:`load_extension`
    calls it on first use when no build is cached.
    """
    arch = _device_arch() if arch is None else arch.replace(".", "").replace("sm_", "")
    if not arch.isdigit() or len(arch) < 2:
        raise ValueError(f"arch must look like 9.0 or 90 (the GPU's compute capability), got {arch!r}")
    reason = build_reason(arch)
    if reason is not None:
        raise RuntimeError(f"cannot build the streamsplat_ns CUDA kernels: {reason}")
    from torch.utils.cpp_extension import load

    name = module_name(arch)
    build_dir = cache_dir() / name
    build_dir.mkdir(parents=True, exist_ok=True)
    src = cuda_source_dir()
    # build for this architecture only (torch would otherwise add every arch of TORCH_CUDA_ARCH_LIST)
    old = os.environ.get("TORCH_CUDA_ARCH_LIST")
    os.environ["TORCH_CUDA_ARCH_LIST"] = f"{arch[:-1]}.{arch[-1]}"
    try:
        return load(
            name=name,
            sources=[str(src / s) for s in SOURCES],
            extra_include_paths=[str(src)],
            extra_cflags=["-O3"],
            # no --use_fast_math: approximate division/exp would move tile edges and the 1/255 cut-off
            extra_cuda_cflags=["-O3", f"-gencode=arch=compute_{arch},code=sm_{arch}", "-lineinfo"],
            build_directory=str(build_dir),
            verbose=verbose,
        )
    finally:
        if old is None:
            os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = old


def load_extension(verbose: bool = False):
    """The compiled module: the cached build for this GPU if there is one, else a JIT build into the cache."""
    global _EXT, _EXT_ERROR
    if _EXT is not None:
        return _EXT
    with _LOCK:
        if _EXT is not None:
            return _EXT
        reason = unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"streamsplat_ns CUDA rasterizer unavailable: {reason}")
        arch = _device_arch()
        so = _built_library(arch)
        if so is not None:
            try:
                _EXT = _import_library(module_name(arch), so)
                return _EXT
            except ImportError:
                pass  # a damaged or half-written build: rebuild below
        try:
            _EXT = build(arch, verbose=verbose)
        except Exception as e:
            _EXT_ERROR = f"JIT build failed: {e}"
            raise
        return _EXT


# ----------------------------------------------------------------------------------------------------------
# input preparation


def _prep(x: Tensor, name: str, device: torch.device) -> Tensor:
    """float32, contiguous, on the render device; clear errors otherwise."""
    if not isinstance(x, Tensor):
        raise TypeError(f"rasterize (cuda): {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.device != device:
        raise ValueError(
            f"rasterize (cuda): {name} is on {x.device} but the Gaussians are on {device}; "
            "move every input to the same CUDA device"
        )
    if not x.is_floating_point():
        raise TypeError(f"rasterize (cuda): {name} must be a floating-point tensor, got {x.dtype}")
    if x.dtype != torch.float32:
        x = x.float()  # autograd casts the gradient back
    return x.contiguous()


def _check_flags(info: Tensor) -> int:
    flags = int(info[1])
    if flags:
        names = [n for bit, n in _NAN_FLAGS if flags & bit]
        raise ValueError(f"rasterize (cuda): input(s) {', '.join(repr(n) for n in names)} contain NaN values")
    return int(info[0])


def _prep_all(device: torch.device, **tensors: Tensor) -> Tuple[Tensor, ...]:
    """:func:`_prep` on each named tensor, in the order given."""
    return tuple(_prep(t, name, device) for name, t in tensors.items())


def _cfg(
    width, height, alpha_clamp, near_plane, far_plane, depth_a, depth_b, tile_size, per_set, dynamic
) -> Tuple[int, int, float, float, float, float, float, int, int, bool]:
    """The extension's scalar arguments in its order, with the types its bindings take."""
    return (
        int(width),
        int(height),
        float(alpha_clamp),
        float(near_plane),
        float(far_plane),
        float(depth_a),
        float(depth_b),
        int(tile_size),
        int(per_set),
        bool(dynamic),
    )


def _grad_or_zeros(g: Optional[Tensor], like: Tensor) -> Tensor:
    return torch.zeros_like(like) if g is None else g.contiguous().float()


class _RasterizeFn(torch.autograd.Function):
    """One batched render; motion / life-cycle evaluated in the projection kernel when ``dynamic``."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(
        ctx, means, quats, scales, opacities, colours, motion, t0, gamma0, gamma1, times, viewmats, Ks, backgrounds, cfg
    ):
        ext = load_extension()
        # cfg = (width, height, alpha_clamp, near_plane, far_plane, depth_a, depth_b, tile_size, per_set, dynamic)
        inputs = (
            means,
            quats,
            scales,
            opacities,
            colours,
            motion,
            t0,
            gamma0,
            gamma1,
            times,
            viewmats,
            Ks,
            backgrounds,
        )
        out = ext.rasterize_forward(*inputs, *cfg)
        _check_flags(out[10])
        rgb, depth, alpha, T_final, last, xy, conic, z, flat_ids, offsets = out[:10]
        ctx.cfg = cfg
        ctx.save_for_backward(*inputs, xy, conic, z, flat_ids, offsets, T_final, last)
        return rgb, depth, alpha

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, v_rgb, v_depth, v_alpha):
        ext = load_extension()
        saved = ctx.saved_tensors
        rgb_like = saved[18]
        I, H, W = rgb_like.shape
        v_rgb = _grad_or_zeros(v_rgb, rgb_like.new_empty(I, H, W, 3))
        v_depth = _grad_or_zeros(v_depth, rgb_like.new_empty(I, H, W, 1))
        v_alpha = _grad_or_zeros(v_alpha, rgb_like.new_empty(I, H, W, 1))
        grads = ext.rasterize_backward(*saved, v_rgb, v_depth, v_alpha, *ctx.cfg)
        v_means, v_quats, v_scales, v_opac, v_colours, v_motion, v_g0, v_g1, v_bg = grads
        dynamic = ctx.cfg[-1]
        if not dynamic:
            v_motion = v_g0 = v_g1 = None
        return (v_means, v_quats, v_scales, v_opac, v_colours, v_motion, None, v_g0, v_g1, None, None, None, v_bg, None)


def _check_call(
    who: str, means_shape: str, means: Tensor, width: int, height: int, tile_size: int, alpha_clamp: float
) -> torch.device:
    """The checks every entry point starts with; returns the render device."""
    if not isinstance(means, Tensor) or means.dim() != 3 or means.shape[-1] != 3:
        raise ValueError(f"{who}: means must be {means_shape}, got {getattr(means, 'shape', None)}")
    if means.device.type != "cuda":
        raise ValueError(f"{who}: tensors must be on a CUDA device, got {means.device}")
    _check_cfg(width, height, tile_size, alpha_clamp)
    return means.device


def _check_cfg(width: int, height: int, tile_size: int, alpha_clamp: float) -> None:
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"rasterize (cuda): image size must be positive, got {width}x{height}")
    if tile_size <= 0 or tile_size * tile_size > 1024 or (tile_size * tile_size) % 32:
        raise ValueError(
            f"rasterize (cuda): tile_size must be 8, 16, 24 or 32 (tile_size^2 a multiple of 32), got {tile_size}"
        )
    if not 0.0 < alpha_clamp < 1.0:
        raise ValueError(f"rasterize (cuda): alpha_clamp must lie in (0, 1), got {alpha_clamp}")


def rasterize_images(
    means: Float[Tensor, "Ib N 3"],
    quats: Float[Tensor, "Ib N 4"],
    scales: Float[Tensor, "Ib N 3"],
    opacities: Float[Tensor, "Ib N"],
    colours: Float[Tensor, "Ib N 3"],
    viewmats: Float[Tensor, "I 4 4"],
    Ks: Float[Tensor, "I 3 3"],
    width: int,
    height: int,
    backgrounds: Optional[Float[Tensor, "I 3"]] = None,
    alpha_clamp: float = 0.99,
    near_plane: float = 1e-4,
    far_plane: float = 1e4,
    tile_size: int = 16,
) -> Tuple[Float[Tensor, "I H W 3"], Float[Tensor, "I H W 1"], Float[Tensor, "I H W 1"]]:
    """Render I images in one launch sequence; Ib = 1 shares the Gaussians (gradients summed over images).

    Same signature and outputs as ``_torch_impl.rasterize_images``; differentiable w.r.t. means, quats,
    scales, opacities, colours and backgrounds.
    """
    device = _check_call("rasterize (cuda)", "[Ib, N, 3]", means, width, height, tile_size, alpha_clamp)
    Ib, N = means.shape[:2]
    viewmats = _prep(viewmats, "viewmats", device)
    Ks = _prep(Ks, "Ks", device)
    I = viewmats.shape[0]
    if viewmats.shape != (I, 4, 4) or Ks.shape != (I, 3, 3):
        raise ValueError(
            f"rasterize (cuda): viewmats must be [I, 4, 4] and Ks [I, 3, 3], got "
            f"{tuple(viewmats.shape)} and {tuple(Ks.shape)}"
        )
    if Ib not in (1, I):
        raise ValueError(f"rasterize (cuda): Gaussians need a leading dim of 1 or {I} (images), got {Ib}")
    for name, t, tail in (
        ("quats", quats, (4,)),
        ("scales", scales, (3,)),
        ("opacities", opacities, ()),
        ("colours", colours, (3,)),
    ):
        if tuple(t.shape) != (Ib, N, *tail):
            raise ValueError(f"rasterize (cuda): {name} has shape {tuple(t.shape)}, expected {(Ib, N, *tail)}")
    if backgrounds is None:
        backgrounds = torch.zeros(I, 3, device=device)
    backgrounds = _prep(backgrounds, "backgrounds", device)
    if backgrounds.shape != (I, 3):
        raise ValueError(f"rasterize (cuda): backgrounds must be [I, 3] = [{I}, 3], got {tuple(backgrounds.shape)}")
    means, quats, scales, opacities, colours = _prep_all(
        device, means=means, quats=quats, scales=scales, opacities=opacities, colours=colours
    )
    empty = means.new_empty(0)
    per_set = I if Ib == 1 else 1
    cfg = _cfg(width, height, alpha_clamp, near_plane, far_plane, 0.0, 0.0, tile_size, per_set, False)
    return _RasterizeFn.apply(
        means, quats, scales, opacities, colours, empty, empty, empty, empty, empty, viewmats, Ks, backgrounds, cfg
    )


def rasterize_dynamic(
    means: Float[Tensor, "B N 3"],
    motion: Float[Tensor, "B N K 3"],
    t0: Float[Tensor, "B N"],
    gamma0: Float[Tensor, "B N"],
    gamma1: Float[Tensor, "B N"],
    times: Float[Tensor, "B T"],
    quats: Float[Tensor, "B N 4"],
    scales: Float[Tensor, "B N 3"],
    opacities: Float[Tensor, "B N"],
    colours: Float[Tensor, "B N 3"],
    viewmats: Float[Tensor, "BT 4 4"],
    Ks: Float[Tensor, "BT 3 3"],
    width: int,
    height: int,
    backgrounds: Optional[Float[Tensor, "BT 3"]] = None,
    alpha_clamp: float = 0.99,
    near_plane: float = 1e-4,
    far_plane: float = 1e4,
    depth_a: float = 0.2,
    depth_b: float = 9.8,
    tile_size: int = 16,
) -> Tuple[Float[Tensor, "BT H W 3"], Float[Tensor, "BT H W 1"], Float[Tensor, "BT H W 1"]]:
    """Render every batch item b at its T times (image index b*T + t) with motion and life-cycle fused.

    Per image (b, t) and Gaussian n: ``p = means + sum_k motion_k dt^(k+1)`` (dt = times[b,t] - t0[b,n]) in
    canonical (x, y_hat, z); culled unless 0 <= y_hat <= 1; world = (x, 1/(depth_a + depth_b y_hat + 1e-6), z);
    opacity *= sigmoid(-gamma0 (|dt| - gamma1)) / sigmoid(gamma0 gamma1). Gradients reach means, motion,
    gamma0, gamma1, quats, scales, opacities, colours and backgrounds (not t0 / times).
    """
    device = _check_call("rasterize_dynamic (cuda)", "[B, N, 3]", means, width, height, tile_size, alpha_clamp)
    B, N = means.shape[:2]
    if motion.dim() != 4 or tuple(motion.shape[:2]) != (B, N) or motion.shape[3] != 3:
        raise ValueError(
            f"rasterize_dynamic (cuda): motion must be [B, N, K, 3] = [{B}, {N}, K, 3], got {tuple(motion.shape)}"
        )
    if times.dim() != 2 or times.shape[0] != B:
        raise ValueError(f"rasterize_dynamic (cuda): times must be [B, T] with B = {B}, got {tuple(times.shape)}")
    T = times.shape[1]
    if T < 1:
        raise ValueError("rasterize_dynamic (cuda): times must hold at least one time per batch item")
    I = B * T
    for name, t, tail in (
        ("t0", t0, ()),
        ("gamma0", gamma0, ()),
        ("gamma1", gamma1, ()),
        ("quats", quats, (4,)),
        ("scales", scales, (3,)),
        ("opacities", opacities, ()),
        ("colours", colours, (3,)),
    ):
        if tuple(t.shape) != (B, N, *tail):
            raise ValueError(f"rasterize_dynamic (cuda): {name} has shape {tuple(t.shape)}, expected {(B, N, *tail)}")
    viewmats = _prep(viewmats, "viewmats", device)
    Ks = _prep(Ks, "Ks", device)
    if viewmats.shape != (I, 4, 4) or Ks.shape != (I, 3, 3):
        raise ValueError(
            f"rasterize_dynamic (cuda): need one camera per image (B*T = {I}): viewmats [{I}, 4, 4], "
            f"Ks [{I}, 3, 3]; got {tuple(viewmats.shape)} and {tuple(Ks.shape)}"
        )
    if backgrounds is None:
        backgrounds = torch.zeros(I, 3, device=device)
    backgrounds = _prep(backgrounds, "backgrounds", device)
    if backgrounds.shape != (I, 3):
        raise ValueError(f"rasterize_dynamic (cuda): backgrounds must be [{I}, 3], got {tuple(backgrounds.shape)}")
    means, motion, t0, gamma0, gamma1, times, quats, scales, opacities, colours = _prep_all(
        device,
        means=means,
        motion=motion,
        t0=t0,
        gamma0=gamma0,
        gamma1=gamma1,
        times=times,
        quats=quats,
        scales=scales,
        opacities=opacities,
        colours=colours,
    )
    times = times.reshape(I)
    cfg = _cfg(width, height, alpha_clamp, near_plane, far_plane, depth_a, depth_b, tile_size, T, True)
    return _RasterizeFn.apply(
        means, quats, scales, opacities, colours, motion, t0, gamma0, gamma1, times, viewmats, Ks, backgrounds, cfg
    )
