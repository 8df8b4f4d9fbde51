"""Sequences: one video of a dataset, read lazily frame by frame.

Every dataset reader turns its on-disk layout into :class:`Sequence` objects; the clip dataset,
the dataparsers and the depth CLI only talk to this interface. ``load`` returns frames resized to
the training size with RGB bilinear, disparity and masks nearest (as the official providers), and
disparity re-normalised per frame after resizing.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Literal, Optional, Tuple, Union
from typing import Sequence as Seq

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from streamsplat_ns.data.depth_io import minmax, read_depth_png
from streamsplat_ns.data.errors import DataError, MissingDepthError

log = logging.getLogger(__name__)

DepthMode = Literal["file", "zeros"]
Size = Tuple[int, int]  # (H, W)


@dataclass
class FrameBatch:
    """Frames of one sequence at the requested indices."""

    rgb: Float[Tensor, "V 3 H W"]  # [0, 1]
    disparity: Float[Tensor, "V 1 H W"]  # [0, 1], min-max per frame, 1 = near
    mask: Float[Tensor, "V 1 H W"]  # object ids as float, 0 = background


# ----------------------------------------------------------------------------------------------
# Frame decoding helpers (numpy in, numpy out; cheap enough for DataLoader workers)
# ----------------------------------------------------------------------------------------------


def _pil_rgb(im, size: Size, source: str) -> np.ndarray:
    from PIL import Image

    h, w = size
    try:
        if im.format == "JPEG":
            im.draft("RGB", (w, h))  # DCT-domain downscale: big speed-up for Full-Resolution frames
        im = im.convert("RGB")
        if im.size != (w, h):
            im = im.resize((w, h), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{source}: corrupt or truncated image ({e}); re-extract or delete this frame") from e


def read_rgb(path: Union[str, Path], size: Size) -> np.ndarray:
    """``uint8 [H, W, 3]`` at ``size``; a corrupt file raises :class:`DataError` naming it."""
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as im:
            return _pil_rgb(im, size, str(path))
    except FileNotFoundError as e:
        raise DataError(f"{path}: frame file is missing; the dataset copy is incomplete") from e
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError) as e:  # PIL.UnidentifiedImageError is an OSError
        raise DataError(f"{path}: unreadable image ({e}); re-extract or delete this frame") from e


def decode_rgb(data: bytes, size: Size, source: str) -> np.ndarray:
    """Decode encoded image bytes (RE10K chunks store JPEG bytes) to ``uint8 [H, W, 3]``."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return _pil_rgb(im, size, source)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{source}: corrupt encoded frame ({e})") from e


def image_size(path: Union[str, Path]) -> Tuple[int, int]:
    """(H, W) from the header only."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: unreadable image ({e})") from e
    return h, w


def resize_nearest(arr: np.ndarray, size: Size) -> np.ndarray:
    """Nearest resize of a 2-D map (index arithmetic: exact for masks, no new values)."""
    h, w = size
    H, W = arr.shape[:2]
    if (H, W) == (h, w):
        return arr
    ys = np.minimum((np.arange(h) * H / h + 0.5 * H / h).astype(np.int64), H - 1)
    xs = np.minimum((np.arange(w) * W / w + 0.5 * W / w).astype(np.int64), W - 1)
    return arr[ys[:, None], xs[None, :]]


def read_mask(path: Union[str, Path], size: Size) -> np.ndarray:
    """Palette PNG → object ids (float32); DAVIS void (255) becomes background."""
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as im:
            arr = np.array(im)  # never .convert("RGB"): the pixel value is the object id
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: unreadable mask PNG ({e})") from e
    if arr.ndim == 3:
        arr = arr[..., 0]
    arr = resize_nearest(arr, size).astype(np.float32)
    arr[arr == 255] = 0.0
    return arr


def depth_to_disparity(depth01: np.ndarray, size: Size) -> np.ndarray:
    """Nearest-resize a [0,1] map and min-max normalise it per frame (as training does)."""
    return minmax(resize_nearest(depth01, size))


def stack_batch(rgbs: List[np.ndarray], disps: List[np.ndarray], masks: List[np.ndarray]) -> FrameBatch:
    rgb = torch.from_numpy(np.stack(rgbs)).permute(0, 3, 1, 2).contiguous().float().mul_(1.0 / 255.0)
    disp = torch.from_numpy(np.stack(disps)).float()[:, None]
    mask = torch.from_numpy(np.stack(masks)).float()[:, None]
    return FrameBatch(rgb=rgb.contiguous(), disparity=disp.contiguous(), mask=mask.contiguous())


# ----------------------------------------------------------------------------------------------
# Sequences
# ----------------------------------------------------------------------------------------------


class Sequence:
    """One video. Subclasses implement ``num_frames``, ``load`` and optionally ``image_path``."""

    name: str
    dataset: str
    nearby_range: int

    @property
    def num_frames(self) -> int:
        raise NotImplementedError

    def load(self, indices: Seq[int], size: Size = (288, 512)) -> FrameBatch:
        raise NotImplementedError

    def image_path(self, index: int) -> Optional[Path]:
        """Path of a frame image on disk (``None`` when frames live inside a chunk or video)."""
        return None

    def mask_path(self, index: int) -> Optional[Path]:
        return None

    def native_size(self) -> Tuple[int, int]:
        """(H, W) of the source frames."""
        raise NotImplementedError

    def check(self) -> None:
        """Cheap validation at discovery time (e.g. the first depth map exists)."""

    def frame_positions(self) -> np.ndarray:
        """Where each frame lies in the source video (frame number, timestamp, ...; any monotone unit).
        Default: the frame index."""
        return np.arange(self.num_frames, dtype=np.float64)

    def position_extent(self) -> Tuple[float, float]:
        """First and last position of the WHOLE source sequence (every split), so that a frame gets the same
        time whichever split lists it. Default: this sequence's own frames."""
        pos = self.frame_positions()
        return float(pos[0]), float(pos[-1])

    def frame_times(self) -> np.ndarray:
        """Time of each frame in [0, 1], normalised over the whole sequence (not over this split's frames)."""
        pos = self.frame_positions()
        lo, hi = self.position_extent()
        return (pos - lo) / max(hi - lo, 1e-12) if hi > lo else np.zeros(len(pos))

    def _check_indices(self, indices: Seq[int]) -> List[int]:
        idx = [int(i) for i in indices]
        n = self.num_frames
        bad = [i for i in idx if i < 0 or i >= n]
        if bad:
            raise IndexError(f"{self.dataset}/{self.name}: frame indices {bad} out of range [0, {n})")
        return idx

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.dataset}/{self.name}, {self.num_frames} frames)"


class FrameListSequence(Sequence):
    """Frames stored as image files, with per-frame depth PNGs and optional masks.

    Used for DAVIS, YouTube-VOS, CO3D, RE10K txt+frames and users' frame folders.
    """

    def __init__(
        self,
        name: str,
        dataset: str,
        images: List[Path],
        depths: Optional[List[Path]],
        masks: Optional[List[Optional[Path]]] = None,
        nearby_range: int = 5,
        depth_mode: DepthMode = "file",
        depth_command: str = "",
        mask_fill: float = 0.0,
        positions: Optional[Seq[float]] = None,
        extent: Optional[Tuple[float, float]] = None,
    ):
        if not images:
            raise DataError(f"{dataset}/{name}: sequence has no frames")
        if depths is not None and len(depths) != len(images):
            raise DataError(f"{dataset}/{name}: {len(images)} frames but {len(depths)} depth paths")
        if masks is not None and len(masks) != len(images):
            raise DataError(f"{dataset}/{name}: {len(images)} frames but {len(masks)} mask paths")
        self.name, self.dataset, self.nearby_range = name, dataset, int(nearby_range)
        self.images = [Path(p) for p in images]
        self.depths = None if depths is None else [Path(p) for p in depths]
        self.masks = masks
        self.depth_mode, self.depth_command, self.mask_fill = depth_mode, depth_command, float(mask_fill)
        self._native: Optional[Tuple[int, int]] = None
        if positions is not None and len(positions) != len(images):
            raise DataError(f"{dataset}/{name}: {len(images)} frames but {len(positions)} frame positions")
        self._positions = None if positions is None else np.asarray(positions, dtype=np.float64)
        if self._positions is not None and len(self._positions) > 1 and np.any(np.diff(self._positions) <= 0):
            raise DataError(f"{dataset}/{name}: frame positions (numbers/timestamps) are not increasing")
        self._extent = None if extent is None else (float(extent[0]), float(extent[1]))

    @property
    def num_frames(self) -> int:
        return len(self.images)

    def frame_positions(self) -> np.ndarray:
        return super().frame_positions() if self._positions is None else self._positions

    def position_extent(self) -> Tuple[float, float]:
        return super().position_extent() if self._extent is None else self._extent

    def image_path(self, index: int) -> Optional[Path]:
        return self.images[index]

    def mask_path(self, index: int) -> Optional[Path]:
        return None if self.masks is None else self.masks[index]

    def native_size(self) -> Tuple[int, int]:
        if self._native is None:
            self._native = image_size(self.images[0])
        return self._native

    def depth_path(self, index: int) -> Optional[Path]:
        return None if self.depths is None else self.depths[index]

    def check(self) -> None:
        if self.depth_mode == "file":
            if self.depths is None:
                raise MissingDepthError(f"<depth maps for {self.dataset}/{self.name}>", self.depth_command)
            if not self.depths[0].is_file():
                raise MissingDepthError(self.depths[0], self.depth_command)

    def _read_depth(self, i: int, size: Size) -> np.ndarray:
        if self.depth_mode == "zeros":
            return np.zeros(size, np.float32)
        p = self.depths[i] if self.depths is not None else None
        if p is None or not p.is_file():
            raise MissingDepthError(p or f"<depth of {self.images[i]}>", self.depth_command)
        return depth_to_disparity(read_depth_png(p), size)

    def _read_mask(self, i: int, size: Size) -> np.ndarray:
        p = self.mask_path(i)
        if p is None or not Path(p).is_file():
            return np.full(size, self.mask_fill, np.float32)
        return read_mask(p, size)

    def load(self, indices: Seq[int], size: Size = (288, 512)) -> FrameBatch:
        idx = self._check_indices(indices)
        rgbs = [read_rgb(self.images[i], size) for i in idx]
        disps = [self._read_depth(i, size) for i in idx]
        masks = [self._read_mask(i, size) for i in idx]
        return stack_batch(rgbs, disps, masks)


IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def numeric_sort_key(p: Path):
    """Sort frames by the number in their stem (``2.jpg`` before ``10.jpg``), then by name."""
    digits = "".join(c for c in p.stem if c.isdigit())
    return (int(digits) if digits else -1, p.name)


def list_images(folder: Path) -> List[Path]:
    return sorted(
        (p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")),
        key=numeric_sort_key,
    )


def stem_numbers(images: Seq[Path]) -> Optional[List[int]]:
    """Frame numbers from all-digit file stems (``00005.jpg`` -> 5) when they strictly increase, else None
    (then frames are spaced by index). Gaps in the numbering then show in the frame times."""
    stems = [Path(p).stem for p in images]
    if not stems or not all(s.isdigit() for s in stems):
        return None
    nums = [int(s) for s in stems]
    return nums if all(b > a for a, b in zip(nums, nums[1:])) else None
