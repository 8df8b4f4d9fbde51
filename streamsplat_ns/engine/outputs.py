"""Outputs of a reconstruction: mp4s encoded in a background thread, PLY files, the JSON manifest.

Every file is written atomically (:mod:`streamsplat_ns.atomic`): under a temporary name, renamed when
complete. A video writer always finalises what it has: a run that stops early (damaged input, Ctrl-C, a
later error) still leaves a playable mp4 of the frames done. A full disk raises
:class:`~streamsplat_ns.atomic.OutOfSpaceError` naming the file; finished outputs stay.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..atomic import OutOfSpaceError, atomic_write_text, is_disk_full, temp_name

log = logging.getLogger(__name__)
MANIFEST = "reconstruction.json"
MANIFEST_VERSION = 1


class HostFrames:
    """A batch of rendered frames on its way to the host: uint8 conversion on the device, then a
    non-blocking copy into pinned memory; the writer thread waits on the event, never the main thread."""

    def __init__(self, rgb: Float[Tensor, "T H W 3"]) -> None:
        u8 = (rgb.detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8)
        if u8.is_cuda:
            self.host = torch.empty(u8.shape, dtype=torch.uint8, pin_memory=True)
            self.host.copy_(u8, non_blocking=True)
            self.event: Optional[torch.cuda.Event] = torch.cuda.Event()
            self.event.record()
        else:
            self.host, self.event = u8, None

    def numpy(self) -> np.ndarray:
        if self.event is not None:
            self.event.synchronize()
        return self.host.numpy()


class PendingFrames:
    """Frames still being rendered on the engine's render thread (:meth:`ReconstructionEngine.render_async`):
    the writers take them like :class:`HostFrames` and wait for them in their own thread."""

    def __init__(self, future) -> None:
        self._future = future

    def result(self) -> HostFrames:
        return self._future.result()

    def numpy(self) -> np.ndarray:
        return self.result().numpy()


class VideoWriter:
    """H.264 mp4 (libx264, else h264/mpeg4) written in a background thread to a temporary name.

    ``write(frames, indices)`` only enqueues (bounded queue: memory stays flat; the caller waits only when
    the encoder falls behind). ``close()`` flushes, renames to ``path`` and returns the frame count; an
    error inside the thread (e.g. a full disk) is raised by the next ``write``/``close``."""

    def __init__(
        self, path: Union[str, Path], fps: float, height: int, width: int, queue_size: int = 8, preset: str = "veryfast"
    ) -> None:
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_name(self.path)
        self.frames = 0
        self.encode_s = 0.0
        self.blocked_s = 0.0  # the caller's time waiting on a full queue: this writer was the bottleneck
        self.error: Optional[BaseException] = None
        self.closed = False
        try:
            self.container = av.open(str(self.tmp), mode="w", format="mp4")
            rate = Fraction(fps).limit_denominator(1000)
            for codec in ("libx264", "h264", "mpeg4"):
                try:
                    self.stream = self.container.add_stream(codec, rate=rate)
                    if codec == "libx264":  # 'veryfast': ~4x the frames/s of x264's default, slightly larger files
                        self.stream.options = {"preset": preset}
                        # frame threads (PyAV's default is slice threads, which a 288-row frame barely splits):
                        # the 4x interpolated video is the pipeline's largest CPU cost per source frame
                        self.stream.thread_type = "FRAME"
                        self.stream.thread_count = 0  # x264's own count for this machine
                    break
                except Exception:  # noqa: BLE001 - codec availability depends on the FFmpeg build
                    continue
            else:  # pragma: no cover
                raise RuntimeError(f"{self.path}: no mp4 video encoder available in this FFmpeg build")
            # even sizes keep yuv420p encoders happy; odd model sizes are padded by one pixel
            self.width, self.height = width + width % 2, height + height % 2
            self.stream.width, self.stream.height = self.width, self.height
            self.stream.pix_fmt = "yuv420p"
        except BaseException as e:
            self.tmp.unlink(missing_ok=True)
            if is_disk_full(e):
                raise OutOfSpaceError(self.path) from e
            raise
        self._queue: "queue.Queue" = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name=f"encode:{self.path.name}", daemon=True)
        self._thread.start()

    def write(self, frames: HostFrames, indices: Optional[Sequence[int]] = None) -> None:
        self._raise()
        if self.closed:
            raise RuntimeError(f"{self.path}: writer is closed")
        self._put((frames, None if indices is None else list(indices)))

    def _put(self, item) -> None:
        # bounded wait per try: an encoder thread that died (or never drains) is an error, not a hang
        try:
            self._queue.put_nowait(item)
            return
        except queue.Full:
            pass
        t = time.perf_counter()
        while True:
            try:
                self._queue.put(item, timeout=0.5)
                self.blocked_s += time.perf_counter() - t
                return
            except queue.Full:
                if not self._thread.is_alive():
                    self._raise()
                    raise RuntimeError(f"{self.path}: the encoder thread ({self._thread.name}) stopped") from None

    def _raise(self) -> None:
        if self.error is not None:
            e, self.error = self.error, None
            if is_disk_full(e) and not isinstance(e, OutOfSpaceError):
                raise OutOfSpaceError(self.path) from e
            raise e

    def _run(self) -> None:
        import av

        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.error is not None:
                continue  # drain: the main thread reports the error
            frames, idx = item
            try:
                arr = frames.numpy()
                t = time.perf_counter()
                for i in range(arr.shape[0]) if idx is None else idx:
                    a = arr[i]
                    if a.shape[0] != self.height or a.shape[1] != self.width:
                        a = np.pad(a, ((0, self.height - a.shape[0]), (0, self.width - a.shape[1]), (0, 0)), "edge")
                    for pkt in self.stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(a), format="rgb24")):
                        self.container.mux(pkt)
                    self.frames += 1
                self.encode_s += time.perf_counter() - t
            except BaseException as e:  # noqa: BLE001 - reported in the main thread
                self.error = e

    def close(self) -> int:
        """Finish the video: flush the encoder, rename it into place. Keeps whatever frames were written
        (a run that stops early still gets a playable video); with none, no file is left. Idempotent."""
        if self.closed:
            return self.frames
        self.closed = True
        if self._thread.is_alive():
            self._put(None)
        self._thread.join()  # returns: the thread ends at the marker, or has already ended
        try:
            if self.error is None:
                for pkt in self.stream.encode():
                    self.container.mux(pkt)
            self.container.close()
            if self.error is not None:
                raise self.error
            if self.frames == 0:
                self.tmp.unlink(missing_ok=True)
                return 0
            with open(self.tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(self.tmp, self.path)
        except BaseException as e:
            with contextlib.suppress(Exception):
                self.container.close()
            self.tmp.unlink(missing_ok=True)
            self.error = None
            if is_disk_full(e) and not isinstance(e, OutOfSpaceError):
                raise OutOfSpaceError(self.path) from e
            raise
        return self.frames

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_manifest(out_dir: Union[str, Path], manifest: dict) -> Path:
    """``OUT/reconstruction.json`` (atomic): what was reconstructed, from what, with which options, and the
    outputs. ``streamsplat-view OUT`` reads it. Paths are stored as given (and absolute under ``*_abs``)."""
    path = Path(out_dir) / MANIFEST
    doc = {"format": "streamsplat_ns.reconstruction", "version": MANIFEST_VERSION, **manifest}
    atomic_write_text(path, json.dumps(_jsonable(doc), indent=2) + "\n")
    return path


def read_manifest(out_dir: Union[str, Path]) -> dict:
    path = Path(out_dir)
    path = path if path.suffix == ".json" else path / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no reconstruction manifest; run streamsplat-reconstruct ... --output {path.parent} first"
        )
    try:
        doc = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); re-run streamsplat-reconstruct") from e
    if doc.get("format") != "streamsplat_ns.reconstruction":
        raise ValueError(f"{path}: not a streamsplat-reconstruct manifest (no format key)")
    return doc


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, torch.dtype):
        return str(x).replace("torch.", "")
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    return str(x)


def close_all(writers: List[VideoWriter]) -> Optional[BaseException]:
    """Close every writer (each finalises its frames); return the first error instead of stopping at it."""
    first = None
    for w in writers:
        try:
            w.close()
        except BaseException as e:  # noqa: BLE001
            log.error("%s", e)
            first = first or e
    return first
