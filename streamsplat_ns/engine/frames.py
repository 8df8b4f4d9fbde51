"""Frame sources: video files, folders of frames, camera devices and stream URLs, decoded in a thread.

``open_frames(source)`` returns a :class:`FrameSource`: an iterable of :class:`Frame` (RGB uint8 at the
native size). Decoding and colour conversion run in a background thread that feeds a small bounded queue,
so the consumer (the GPU) never waits on the decoder and memory stays flat however long the stream.

Which frames come out is THE pairing rule (:func:`key_frames`): every ``frame_step``-th frame and the
last one, so every source frame lies inside an interval; ``max_frames`` keeps the first key frames.

Damaged input stops the source cleanly instead of raising inside the thread: iteration ends and
:attr:`FrameSource.error` holds a :class:`~streamsplat_ns.data.errors.DataError` naming the file and how far
decoding got. Callers finalise what they have and report it (``streamsplat-reconstruct`` exits non-zero).
Problems that can be seen before any work (missing file, unreadable header, frames of differing sizes in
a folder) raise at :func:`open_frames`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple, Union

import numpy as np
from jaxtyping import UInt8

from ..data.errors import DataError

log = logging.getLogger(__name__)

_END = object()


def _get_alive(q: "queue.Queue", thread: threading.Thread, what: str, poll: float = 0.5):
    """``q.get()`` that cannot wait forever on a producer that died without its end marker: a dead
    producer with an empty queue is an error naming it (a hang would hide the cause)."""
    while True:
        try:
            return q.get(timeout=poll)
        except queue.Empty:
            if not thread.is_alive():
                try:
                    return q.get_nowait()  # it may have put its last item just before exiting
                except queue.Empty:
                    raise RuntimeError(f"{what} ({thread.name}) stopped without ending the stream") from None


def key_frames(num_frames: int, gap: int) -> List[int]:
    """THE pairing rule (CLI, viewer, ns-render, export, live): every ``gap``-th frame and the last frame.

    Consecutive key frames form the intervals; the last interval is shorter when ``gap`` does not divide
    ``num_frames - 1``, so no frame is left out.

    >>> key_frames(10, 3)
    [0, 3, 6, 9]
    >>> key_frames(11, 3)
    [0, 3, 6, 9, 10]
    """
    if gap < 1:
        raise ValueError(f"key_frames: gap must be >= 1, got {gap}")
    if num_frames < 1:
        return []
    keys = list(range(0, num_frames, gap))
    if keys[-1] != num_frames - 1:
        keys.append(num_frames - 1)
    return keys


def locate(keys: List[int], frame: float) -> Tuple[int, float]:
    """Interval ``j`` (between ``keys[j]`` and ``keys[j + 1]``) holding source frame ``frame`` (fractional),
    and the normalised time in it (0 = ``keys[j]``, 1 = ``keys[j + 1]``). Clamped to the key-frame span."""
    if len(keys) < 2:
        raise ValueError(f"locate: need at least two key frames, got {keys}")
    f = min(max(float(frame), float(keys[0])), float(keys[-1]))
    j = len(keys) - 2
    for i in range(len(keys) - 1):
        if f < keys[i + 1]:
            j = i
            break
    a, b = keys[j], keys[j + 1]
    return j, min(max((f - a) / (b - a), 0.0), 1.0)


@dataclass
class Frame:
    """One decoded source frame. ``index`` counts every source frame (selected or not); ``stem`` names its
    disparity map (``<stem>_pred.png``); ``t_arrival`` is ``time.perf_counter()`` when it became available."""

    index: int
    stem: str
    rgb: UInt8[np.ndarray, "H W 3"]
    t_arrival: float


class FrameSource:
    """Iterable of :class:`Frame` decoded in a background thread (one pass; close() stops it early).

    Attributes: ``path``, ``fps`` (None if unknown), ``num_frames`` (frames the source announces; None for
    live or unknown), ``size`` ((H, W) if known before decoding), ``error`` (set when decoding stopped
    early on damaged input), ``dropped`` (frames discarded because the consumer lagged; only when
    ``drop_late``), ``decoded`` (source frames read so far), ``decode_s`` (thread time spent decoding)."""

    live = False

    def __init__(
        self,
        path: Union[str, Path],
        *,
        frame_step: int = 1,
        max_frames: Optional[int] = None,
        realtime: bool = False,
        fps: Optional[float] = None,
        queue_size: int = 4,
        drop_late: Optional[bool] = None,
    ) -> None:
        if frame_step < 1:
            raise ValueError(f"frame_step must be >= 1, got {frame_step}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self.path = path
        self.frame_step, self.max_frames, self.realtime = frame_step, max_frames, realtime
        self.fps: Optional[float] = fps
        self.num_frames: Optional[int] = None
        self.size: Optional[Tuple[int, int]] = None
        self.error: Optional[Exception] = None
        self.dropped = 0
        self.decoded = 0
        self.emitted = 0
        self.decode_s = 0.0
        self._drop = drop_late
        self._queue: "queue.Queue" = queue.Queue(maxsize=max(1, queue_size))
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._iterated = False

    # ------------------------------------------------------------------ subclass interface
    def _items(self) -> Iterator[Tuple[int, str, Callable[[], np.ndarray]]]:
        """Yield (source index, stem, function decoding + converting that frame to RGB uint8)."""
        raise NotImplementedError

    def _finish(self) -> None:
        """Called in the thread after the last item (natural end only): check what the source announced."""

    # ------------------------------------------------------------------ public
    @property
    def key_indices(self) -> Optional[List[int]]:
        """Source indices this source will yield, when the frame count is known up front."""
        if self.num_frames is None:
            return None
        keys = key_frames(self.num_frames, self.frame_step)
        return keys[: self.max_frames] if self.max_frames else keys

    @property
    def first_stem(self) -> str:
        """Stem of the first frame (names its disparity map)."""
        return "00000"

    def start(self) -> "FrameSource":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"frames:{Path(str(self.path)).name}", daemon=True)
            self._thread.start()
        return self

    def __iter__(self) -> Iterator[Frame]:
        if self._iterated:
            raise RuntimeError(f"{self.path}: a FrameSource is read once; open it again to re-read")
        self._iterated = True
        self.start()
        try:
            while True:
                item = _get_alive(self._queue, self._thread, f"{self.path}: the decoding thread")
                if item is _END:
                    return
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop decoding and release the decoder (safe to call twice)."""
        self._stop.set()
        never_started = self._thread is None
        if never_started:  # the decoder is still ours to release; a later iteration ends at once
            self._thread = threading.current_thread()
            self._close_decoder()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if never_started:
            self._queue.put_nowait(_END)
        elif self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe_progress(self) -> str:
        total = f" of {self.num_frames}" if self.num_frames else ""
        return f"{self.decoded}{total} source frames decoded, {self.emitted} used"

    # ------------------------------------------------------------------ thread
    @property
    def drops_late(self) -> bool:
        """Whether late frames are dropped (newest kept) rather than waited for."""
        return bool(self._drop if self._drop is not None else (self.realtime or self.live))

    def _put(self, item) -> bool:
        drop = self.drops_late and item is not _END
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05) if not drop else self._queue.put_nowait(item)
                return True
            except queue.Full:
                if drop:
                    try:  # the consumer lags: keep the newest frames, count the one let go
                        self._queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass
        return False

    def _emit(self, index: int, stem: str, get: Callable[[], np.ndarray], t0: float) -> bool:
        t = time.perf_counter()
        rgb = get()
        self.decode_s += time.perf_counter() - t
        if self.size is not None and rgb.shape[:2] != self.size:
            raise DataError(
                f"{self._name(stem)}: frame {index} is {rgb.shape[1]}x{rgb.shape[0]} but the stream "
                f"started at {self.size[1]}x{self.size[0]}; every frame must have the same size"
            )
        self.size = self.size or tuple(rgb.shape[:2])
        if self.realtime and self.fps:
            wait = t0 + index / self.fps - time.perf_counter()
            if wait > 0:
                self._stop.wait(wait)
        ok = self._put(Frame(index, stem, np.ascontiguousarray(rgb), time.perf_counter()))
        self.emitted += ok
        return ok

    def _name(self, stem: str) -> str:
        return str(self.path)

    def _run(self) -> None:
        pending = None
        natural_end = True
        t0 = time.perf_counter()
        try:
            for index, stem, get in self._items():
                self.decoded = index + 1
                if self._stop.is_set():
                    natural_end = False
                    break
                if index % self.frame_step == 0:
                    pending = None
                    if not self._emit(index, stem, get, t0):
                        natural_end = False
                        break
                    if self.max_frames is not None and self.emitted >= self.max_frames:
                        natural_end = False
                        break
                else:
                    pending = (index, stem, get)
            if natural_end:
                if pending is not None:  # the last frame closes the last (shorter) interval
                    self._emit(*pending, t0)
                self._finish()
        except Exception as e:  # noqa: BLE001 - reported through .error, the caller finalises
            self.error = (
                e
                if isinstance(e, DataError)
                else DataError(
                    f"{self.path}: decoding stopped after {self.decoded} frames ({type(e).__name__}: {e}); "
                    f"the input is damaged or truncated"
                )
            )
            log.warning("%s", self.error)
        finally:
            self._close_decoder()
            self._put(_END)

    def _close_decoder(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------- folders
class FolderSource(FrameSource):
    """A folder of images (sorted numerically by name); sizes checked up front from the headers."""

    def __init__(self, folder: Path, **kw) -> None:
        from PIL import Image

        from ..data.sequences import list_images

        super().__init__(folder, **kw)
        self.images = list_images(folder)
        if not self.images:
            raise DataError(f"{folder}: folder has no frames (.jpg/.png); pass a video file or a folder of images")
        self.num_frames = len(self.images)
        self.fps = self.fps or 30.0  # a folder has no rate: only used for realtime pacing
        first = None
        for p in self.images:  # headers only (no pixel decoding): cheap even for thousands of frames
            try:
                with Image.open(p) as im:
                    size = im.size
            except Exception as e:  # noqa: BLE001
                raise DataError(
                    f"{p}: not a readable image ({type(e).__name__}: {e}); re-export it or remove it from {folder}"
                ) from e
            if first is None:
                first = (p, size)
            elif size != first[1]:
                raise DataError(
                    f"{p}: frame size {size[0]}x{size[1]} differs from {first[0].name} "
                    f"({first[1][0]}x{first[1][1]}); every frame of {folder} must have the same size "
                    f"(resize or remove the odd frames)"
                )
        self.size = (first[1][1], first[1][0])

    def _name(self, stem: str) -> str:
        return str(next((p for p in self.images if p.stem == stem), self.path))

    @property
    def first_stem(self) -> str:
        return self.images[0].stem

    def _items(self):
        from PIL import Image

        def loader(p: Path) -> Callable[[], np.ndarray]:
            def get() -> np.ndarray:
                try:
                    with Image.open(p) as im:
                        return np.array(im.convert("RGB"))  # writable: torch.from_numpy needs it
                except Exception as e:  # noqa: BLE001
                    raise DataError(
                        f"{p}: cannot decode the image ({type(e).__name__}: {e}); the file is damaged "
                        f"or truncated: re-export it or remove it from {self.path}"
                    ) from e

            return get

        for i, p in enumerate(self.images):
            yield i, p.stem, loader(p)


# ---------------------------------------------------------------------------------------------- PyAV
def _is_device(s: str) -> bool:
    return s.startswith("/dev/video")


def _is_url(s: str) -> bool:
    return "://" in s


class AVSource(FrameSource):
    """A video file, camera device or stream URL decoded with PyAV (FFmpeg). Frame ``i`` has stem ``%05d``,
    which names its depth map as ``streamsplat-depth`` writes it."""

    def __init__(self, source: str, **kw) -> None:
        import av

        self.live = _is_device(source) or _is_url(source)
        super().__init__(source, **kw)
        opts = {"format": "v4l2"} if _is_device(source) else {}
        try:
            self._container = av.open(source, **opts, timeout=10.0 if self.live else None)
        except Exception as e:  # noqa: BLE001 - av raises several error types
            what = "camera device" if _is_device(source) else "stream URL" if _is_url(source) else "video"
            raise DataError(
                f"{source}: cannot open {what} ({type(e).__name__}: {e}); is it a valid "
                f"mp4/mov/avi/webm/mkv (or a connected camera / reachable stream)?"
            ) from e
        if not self._container.streams.video:
            self._container.close()
            raise DataError(f"{source}: has no video stream")
        self._stream = self._container.streams.video[0]
        if not self.live:
            self._stream.thread_type = "AUTO"  # frame + slice threads inside FFmpeg (no GIL)
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = self.fps or (float(rate) if rate else None)
        announced = int(self._stream.frames or 0)
        self.num_frames = announced if (announced > 0 and not self.live) else None
        ctx = self._stream.codec_context
        if ctx.width and ctx.height:
            self.size = (int(ctx.height), int(ctx.width))

    def _items(self):
        index = 0
        for frame in self._container.decode(self._stream):
            # colour conversion (libswscale, GIL released) happens in get(), here in the decoding thread
            yield index, f"{index:05d}", (lambda f=frame: f.to_ndarray(format="rgb24"))
            index += 1

    def _finish(self) -> None:
        if self.num_frames is not None and self.decoded < self.num_frames:
            raise DataError(
                f"{self.path}: decoded only {self.decoded} of the {self.num_frames} frames the container "
                f"announces; the file is truncated or damaged (re-download or re-encode it)"
            )

    def _close_decoder(self) -> None:
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - closing a broken container may fail again
            pass


def open_frames(
    source: Union[str, Path],
    *,
    frame_step: int = 1,
    max_frames: Optional[int] = None,
    realtime: bool = False,
    fps: Optional[float] = None,
    queue_size: int = 4,
    drop_late: Optional[bool] = None,
) -> FrameSource:
    """Open a video file, a folder of frames, a camera device (``/dev/videoN``) or a URL PyAV can read.

    ``frame_step``/``max_frames`` select key frames (:func:`key_frames`); ``realtime`` paces a file or folder
    at its frame rate (``fps`` overrides it; folders default to 30) as a camera would deliver it;
    ``drop_late`` (default: on for realtime and live sources) discards the oldest queued frame when the
    consumer lags, counting it in ``.dropped``. Decoding starts on first iteration (or ``.start()``)."""
    kw = dict(
        frame_step=frame_step,
        max_frames=max_frames,
        realtime=realtime,
        fps=fps,
        queue_size=queue_size,
        drop_late=drop_late,
    )
    s = str(source)
    if _is_device(s) or _is_url(s):
        return AVSource(s, **kw)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such video file or frame folder")
    if path.is_dir():
        return FolderSource(path, **kw)
    return AVSource(str(path), **kw)
