"""Disparity-map IO: 8/16-bit PNGs, the metadata sidecar and the per-dataset path rules.

Convention (data_formats.md §5.3): maps hold *relative inverse depth* (bright = near),
min-max-normalised per frame. The authors' script writes 8-bit PNGs (value / 255); ours writes
16-bit PNGs (value / 65535) on the same path, plus a ``depth_meta.json`` sidecar at the depth root.
Loaders accept both, and always re-normalise per frame after resizing, as training does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
from jaxtyping import Float, UInt16

from streamsplat_ns.atomic import atomic_write_bytes  # noqa: F401  (one home; re-exported for callers)
from streamsplat_ns.data.errors import DataError

SIDECAR_NAME = "depth_meta.json"
DEPTH_SUFFIX = "_pred.png"

#: assumed when a depth tree has no sidecar (maps made by the official StreamSplat script)
LEGACY_SIDECAR: Dict[str, Any] = {
    "model": "depth_anything_v2",
    "encoder": "vitl",
    "preprocess": "streamsplat",
    "input_short_side": 518,
    "multiple_of": 14,
    "quantity": "relative_inverse_depth",
    "normalization": "minmax_per_frame",
    "dtype": "uint8",
}


def _cv2():
    try:
        import cv2

        cv2.setNumThreads(1)  # DataLoader workers already parallelise
        return cv2
    except ImportError:  # pragma: no cover - opencv is a nerfstudio dependency
        return None


def read_depth_png(path: Union[str, Path]) -> Float[np.ndarray, "H W"]:
    """Read an 8- or 16-bit grayscale PNG as float32 in [0, 1] (bit depth is self-describing)."""
    path = Path(path)
    arr = None
    cv2 = _cv2()
    if cv2 is not None:
        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        from PIL import Image

        try:
            with Image.open(path) as im:
                arr = np.array(im)
        except FileNotFoundError:
            raise
        except Exception as e:  # noqa: BLE001
            if not path.exists():
                raise FileNotFoundError(str(path)) from e
            raise DataError(f"{path}: unreadable depth PNG ({e}); delete it and re-run streamsplat-depth") from e
    if arr.ndim == 3:  # colour-mapped or RGB(A) by mistake: keep the first channel
        arr = arr[..., 0]
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if arr.dtype in (np.int32, np.int64):  # PIL mode "I"
        return np.clip(arr.astype(np.float32) / 65535.0, 0.0, 1.0)
    raise DataError(f"{path}: unsupported depth PNG dtype {arr.dtype}; expected 8- or 16-bit grayscale")


def quantize16(disp: Float[np.ndarray, "H W"], normalize: bool = True) -> UInt16[np.ndarray, "H W"]:
    """Per-frame min-max normalise (as the official script) and quantise to uint16."""
    d = np.asarray(disp, dtype=np.float64)
    if normalize:
        d = minmax(d)
    return np.round(np.clip(d, 0.0, 1.0) * 65535.0).astype(np.uint16)


def minmax(d: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Min-max normalise to [0, 1]; a constant map becomes all zeros (not NaN)."""
    d = np.nan_to_num(np.asarray(d, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(d.min()), float(d.max())
    if hi - lo < eps:
        return np.zeros_like(d, dtype=np.float32)
    return ((d - lo) / (hi - lo)).astype(np.float32)


def encode_png16(arr: UInt16[np.ndarray, "H W"]) -> bytes:
    cv2 = _cv2()
    if cv2 is not None:
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr, dtype=np.uint16), [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if ok:
            return buf.tobytes()
    import io

    from PIL import Image

    b = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint16)).save(b, format="PNG")
    return b.getvalue()


def write_depth_png16(path: Union[str, Path], disp: np.ndarray, normalize: bool = True) -> None:
    """Write a 16-bit disparity PNG (per-frame min-max unless ``normalize=False``), atomically."""
    atomic_write_bytes(path, encode_png16(quantize16(disp, normalize=normalize)))


def write_sidecar(depth_root: Union[str, Path], meta: Dict[str, Any]) -> Path:
    full = dict(LEGACY_SIDECAR)
    full.update(meta)
    p = Path(depth_root) / SIDECAR_NAME
    atomic_write_bytes(p, (json.dumps(full, indent=2, sort_keys=True) + "\n").encode())
    return p


def read_sidecar(depth_root: Union[str, Path]) -> Dict[str, Any]:
    """The sidecar at ``depth_root``, or the legacy (official-script) defaults when it is absent."""
    p = Path(depth_root) / SIDECAR_NAME
    if not p.is_file():
        return dict(LEGACY_SIDECAR, source="assumed (no sidecar)")
    try:
        meta = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{p}: unreadable depth sidecar ({e}); delete it or re-run streamsplat-depth") from e
    return dict(LEGACY_SIDECAR, **meta)


# ----------------------------------------------------------------------------------------------
# Path rules (identical to the official StreamSplat providers, so the authors' maps load unchanged)
# ----------------------------------------------------------------------------------------------


def davis_depth_path(root: Path, resolution: str, seq: str, stem: str) -> Path:
    """``DAVIS/depthImages/<res>/<seq>/<stem>_pred.png``."""
    return Path(root) / "depthImages" / resolution / seq / f"{stem}{DEPTH_SUFFIX}"


def ytvos_depth_path(root: Path, split: str, vid: str, stem: str) -> Path:
    """``<root>/<split>/depthImages/<vid>/<stem>_pred.png``."""
    return Path(root) / split / "depthImages" / vid / f"{stem}{DEPTH_SUFFIX}"


def co3d_depth_path(image_path: Path) -> Path:
    """Replace the path *component* ``images`` (the last one) by ``predict_depths``; stem + ``_pred.png``."""
    parts = list(Path(image_path).parts)
    idx = max((i for i, p in enumerate(parts[:-1]) if p == "images"), default=None)
    if idx is None:
        raise DataError(f"{image_path}: CO3D image path has no 'images' component")
    parts[idx] = "predict_depths"
    return Path(*parts[:-1]) / (Path(parts[-1]).stem + DEPTH_SUFFIX)


def folder_depth_path(depth_dir: Path, stem: str) -> Path:
    """Generic frame folder: ``<depth_dir>/<stem>_pred.png`` (matched by stem, not sort order)."""
    return Path(depth_dir) / f"{stem}{DEPTH_SUFFIX}"


def default_depth_dir(frames: Path) -> Path:
    """Default depth folder of a user's video file or frame folder: ``<parent>/<name>_depth``."""
    frames = Path(frames)
    name = frames.stem if frames.is_file() or frames.suffix.lower() in VIDEO_EXTS else frames.name
    return frames.parent / f"{name}_depth"


def re10k_depth_path(chunk_path: Path) -> Path:
    """``<stage>/depth_<chunkstem>.pt`` next to ``<stage>/<chunkstem>.torch``."""
    chunk_path = Path(chunk_path)
    return chunk_path.parent / f"depth_{chunk_path.stem}.pt"


VIDEO_EXTS = (".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v")


def depth_command(dataset: str, data: Union[str, Path], split: Optional[str] = None, extra: str = "") -> str:
    """The ``streamsplat-depth`` command line that creates the maps a loader asked for."""
    cmd = f"streamsplat-depth --dataset {dataset} --data {data}"
    if split:
        cmd += f" --split {split}"
    cmd += " --checkpoint /path/to/depth_anything_v2_vitl.pth"
    if extra:
        cmd += " " + extra
    return cmd
