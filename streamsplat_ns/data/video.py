"""A user's own video (mp4/mov/avi/webm/...) or folder of frames: no poses, no calibration.

Video files are decoded with PyAV (a nerfstudio dependency). Discovery demuxes packets only (no
decoding) to index presentation timestamps; a clip load seeks to the nearest key frame before the
first wanted frame and decodes forward, so a video is never held in memory whole. Frame ``i`` has
stem ``%05d`` (``i``), which names its depth map ``<depth_dir>/<stem>_pred.png``.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Iterator, List, Optional, Tuple
from typing import Sequence as Seq

import numpy as np

from streamsplat_ns.data.depth_io import VIDEO_EXTS, default_depth_dir, depth_command, folder_depth_path, read_depth_png
from streamsplat_ns.data.errors import DataError, MissingDepthError
from streamsplat_ns.data.sequences import (
    DepthMode,
    FrameBatch,
    FrameListSequence,
    Sequence,
    depth_to_disparity,
    list_images,
    stack_batch,
    stem_numbers,
)

log = logging.getLogger(__name__)
NEARBY_RANGE = 5


def _open(path: Path):
    import av

    try:
        container = av.open(str(path))
    except Exception as e:  # noqa: BLE001 - av raises several error types
        raise DataError(f"{path}: cannot open video ({type(e).__name__}: {e}); is it a valid mp4/mov/avi/webm?") from e
    if not container.streams.video:
        container.close()
        raise DataError(f"{path}: has no video stream")
    return container


def _to_rgb(frame, size: Optional[Tuple[int, int]]) -> np.ndarray:
    if size is None:
        return frame.to_ndarray(format="rgb24")
    h, w = size
    # libswscale bilinear resize inside the decoder's colour conversion
    return frame.reformat(width=w, height=h, format="rgb24", interpolation="BILINEAR").to_ndarray()


class VideoFileSequence(Sequence):
    """Frames of one video file, decoded on demand."""

    def __init__(
        self,
        path: Path,
        depth_dir: Optional[Path] = None,
        depth_mode: DepthMode = "file",
        nearby_range: int = NEARBY_RANGE,
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: video file not found")
        self.name, self.dataset, self.nearby_range, self.depth_mode = self.path.stem, "video", nearby_range, depth_mode
        self.depth_dir = Path(depth_dir) if depth_dir else default_depth_dir(self.path)
        self.depth_command = depth_command("video", self.path, None, f"--output {self.depth_dir}")
        self._pts, self._size = self._index()

    def _index(self) -> Tuple[List[int], Tuple[int, int]]:
        container = _open(self.path)
        try:
            stream = container.streams.video[0]
            size = (int(stream.codec_context.height), int(stream.codec_context.width))
            pts = []
            try:
                for packet in container.demux(stream):
                    if packet.pts is not None and packet.size > 0:
                        pts.append(int(packet.pts))
            except Exception as e:  # noqa: BLE001
                raise DataError(
                    f"{self.path}: demuxing failed after {len(pts)} packets ({e}); the file is truncated"
                ) from e
        finally:
            container.close()
        if not pts:
            raise DataError(f"{self.path}: the video has no frames")
        return sorted(set(pts)), size

    @property
    def num_frames(self) -> int:
        return len(self._pts)

    def native_size(self) -> Tuple[int, int]:
        return self._size

    def frame_positions(self) -> np.ndarray:
        """Presentation timestamps: times follow the video's clock (variable frame rate included)."""
        return np.asarray(self._pts, dtype=np.float64)

    def stem(self, index: int) -> str:
        return f"{index:05d}"

    def depth_path(self, index: int) -> Path:
        return folder_depth_path(self.depth_dir, self.stem(index))

    def check(self) -> None:
        if self.depth_mode == "file" and not self.depth_path(0).is_file():
            raise MissingDepthError(self.depth_path(0), self.depth_command)

    def decode(self, indices: Seq[int], size: Optional[Tuple[int, int]] = None) -> List[np.ndarray]:
        """RGB uint8 frames at ``indices`` (any order), one seek + forward decode."""
        idx = self._check_indices(indices)
        want = {self._pts[i]: i for i in idx}
        got = {}
        container = _open(self.path)
        try:
            stream = container.streams.video[0]
            lo, hi = min(want), max(want)
            container.seek(lo, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                if frame.pts in want:
                    got[want[frame.pts]] = _to_rgb(frame, size)
                if frame.pts >= hi:
                    break
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001
            raise DataError(f"{self.path}: decoding failed ({type(e).__name__}: {e}); the file is corrupt") from e
        finally:
            container.close()
        missing = [i for i in idx if i not in got]
        if missing:
            raise DataError(f"{self.path}: could not decode frames {missing[:5]}; the file is corrupt or truncated")
        return [got[i] for i in idx]

    def iter_frames(self, size: Optional[Tuple[int, int]] = None) -> Iterator[Tuple[int, np.ndarray]]:
        """Sequential decode of the whole video, one frame at a time (for depth precomputation)."""
        container = _open(self.path)
        rank = {p: i for i, p in enumerate(self._pts)}
        try:
            for frame in container.decode(container.streams.video[0]):
                if frame.pts in rank:
                    yield rank[frame.pts], _to_rgb(frame, size)
        except Exception as e:  # noqa: BLE001
            raise DataError(f"{self.path}: decoding failed ({type(e).__name__}: {e})") from e
        finally:
            container.close()

    def load(self, indices: Seq[int], size=(288, 512)) -> FrameBatch:
        idx = self._check_indices(indices)
        rgbs = self.decode(idx, size)
        disps = []
        for i in idx:
            if self.depth_mode == "zeros":
                disps.append(np.zeros(size, np.float32))
            else:
                p = self.depth_path(i)
                if not p.is_file():
                    raise MissingDepthError(p, self.depth_command)
                disps.append(depth_to_disparity(read_depth_png(p), size))
        return stack_batch(rgbs, disps, [np.zeros(size, np.float32) for _ in idx])


def extract_frames(video: VideoFileSequence, out_dir: Path, quality: int = 95, progress: bool = True) -> List[Path]:
    """Write every frame as ``<out_dir>/%05d.jpg`` (resumable: a ``.complete`` marker ends the job)."""
    from PIL import Image

    out_dir = Path(out_dir)
    marker = out_dir / ".complete"
    paths = [out_dir / f"{video.stem(i)}.jpg" for i in range(video.num_frames)]
    if marker.is_file() and all(p.is_file() for p in paths):
        return paths
    out_dir.mkdir(parents=True, exist_ok=True)
    it = video.iter_frames()
    if progress:
        from tqdm import tqdm

        it = tqdm(it, total=video.num_frames, desc=f"extracting {video.path.name}", unit="frame")
    for i, rgb in it:
        Image.fromarray(rgb).save(paths[i], quality=quality)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{video.path}: {len(missing)} frames could not be decoded (first {missing[0].name})")
    marker.write_text(str(video.num_frames))
    return paths


def cache_dir_for(path: Path, root: Path) -> Path:
    h = hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:12]
    return Path(root) / f"{Path(path).stem}-{h}"


def discover(
    path: Path, depth_dir: Optional[Path] = None, depth_mode: DepthMode = "file", extract_to: Optional[Path] = None
) -> List[Sequence]:
    """One sequence from a video file or a frame folder (``extract_to``: decode the video to JPEGs there)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such video file or frame folder")
    if path.is_dir():
        images = list_images(path)
        if not images:
            raise DataError(f"{path}: folder has no frames (.jpg/.png); pass a video file or a folder of images")
        ddir = Path(depth_dir) if depth_dir else default_depth_dir(path)
        cmd = depth_command("video", path, None, f"--output {ddir}")
        depths = [folder_depth_path(ddir, p.stem) for p in images]
        return [
            FrameListSequence(
                path.name, "video", images, depths, None, NEARBY_RANGE, depth_mode, cmd, positions=stem_numbers(images)
            )
        ]
    if path.suffix.lower() not in VIDEO_EXTS:
        raise DataError(f"{path}: unsupported video extension (supported: {', '.join(VIDEO_EXTS)})")
    video = VideoFileSequence(path, depth_dir, depth_mode)
    if extract_to is None:
        return [video]
    images = extract_frames(video, cache_dir_for(path, extract_to))
    depths = [video.depth_path(i) for i in range(video.num_frames)]
    return [
        FrameListSequence(
            video.name,
            "video",
            images,
            depths,
            None,
            NEARBY_RANGE,
            depth_mode,
            video.depth_command,
            positions=video.frame_positions(),
        )
    ]
