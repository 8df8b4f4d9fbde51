"""The reconstruction engine: frames -> disparity -> StreamSplat step -> intervals, as a pipeline.

One engine serves ``streamsplat-reconstruct``, ``streamsplat-export``, the viewer / ``ns-render`` and live
mode, so they all pair frames with :func:`~streamsplat_ns.engine.frames.key_frames` and give the same
Gaussians for the same frames.

Pipeline (CUDA): decoding and colour conversion run in the frame source's thread; a prefetch thread reads
disparity maps (file mode) and pins each frame; the main thread only enqueues device work: the uint8 frame
is uploaded and resized on the device, Depth Anything V2 runs one frame ahead on a side stream (so it
overlaps the StreamSplat step of the previous frame), the step runs through a
:class:`~streamsplat_ns.streaming.StreamingSession` (the CUDA-graph step by default), and all renders of
an interval are one batched call. Nothing synchronises the host per frame: inputs are validated on the
host (shapes, dtypes, finite disparity maps) before upload, and stage times are CUDA events read back
lazily (``query()``) or at the end (:attr:`ReconstructionEngine.stats`). Only the previous frame's state,
the current interval and a few queued frames are alive, so memory stays flat however long the stream.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from ..gaussians import DynamicGaussians
from ..inference import InferenceOptions, prepare
from ..streaming import StreamingSession
from .disparity import DisparitySource
from .frames import Frame, FrameSource, _get_alive, key_frames

log = logging.getLogger(__name__)
STAGES = ("decode", "upload", "depth", "model", "render", "encode")


@dataclass
class Interval:
    """The dynamic Gaussians between two consecutive key frames.

    ``k``: interval number (key frames k and k + 1); ``frames``: their source indices (times 0 and 1 of
    the Gaussians); ``gaussians``: batch 1, canonical space; ``t_arrival``: ``perf_counter()`` when the
    newer frame arrived; ``timings``: host stamps (``arrival``, ``enqueued``, and with
    ``sync_timings=True`` the true ``depth_done`` / ``model_done``)."""

    k: int
    frames: Tuple[int, int]
    gaussians: DynamicGaussians
    t_arrival: float
    stems: Tuple[str, str] = ("", "")
    timings: Dict[str, float] = field(default_factory=dict)

    def local_time(self, frame: float) -> float:
        """Normalised time in this interval of source frame ``frame`` (fractional allowed)."""
        a, b = self.frames
        return (float(frame) - a) / max(b - a, 1)


class _StageTimer:
    """Per-stage device time. CUDA: event pairs, read back when done (``query`` never blocks), so memory
    stays bounded and no frame waits on the host; CPU: wall time of each (synchronous) stage."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.total: Dict[str, float] = {s: 0.0 for s in STAGES}
        self.count: Dict[str, int] = {s: 0 for s in STAGES}
        self._pending: Deque[Tuple[str, "torch.cuda.Event", "torch.cuda.Event"]] = collections.deque()
        # renders may come from other threads (viewers) and stats from any: one reader of the deque at a time
        self._lock = threading.RLock()

    @contextlib.contextmanager
    def __call__(self, name: str, stream: Optional["torch.cuda.Stream"] = None):
        if not self.cuda:
            t = time.perf_counter()
            yield
            self.add(name, time.perf_counter() - t)
            return
        s = stream or torch.cuda.current_stream()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(s)
        yield
        b.record(s)
        self._pending.append((name, a, b))
        self.resolve(block=False)

    def add(self, name: str, seconds: float, n: int = 1) -> None:
        with self._lock:
            self.total[name] = self.total.get(name, 0.0) + seconds
            self.count[name] = self.count.get(name, 0) + n

    def resolve(self, block: bool) -> None:
        with self._lock:
            while self._pending:
                name, a, b = self._pending[0]
                if not block and not b.query():
                    return
                b.synchronize()
                self._pending.popleft()
                self.add(name, a.elapsed_time(b) / 1000.0)


class _Prefetch:
    """Thread between the frame source and the device: host-side checks, disparity files, pinned copies."""

    def __init__(
        self,
        frames: Iterable[Frame],
        disparity: Optional[DisparitySource],
        size: Tuple[int, int],
        pin: bool,
        depth: int = 3,
    ) -> None:
        self.frames, self.disparity, self.size, self.pin = frames, disparity, size, pin
        self.q: "queue.Queue" = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.error: Optional[BaseException] = None
        self.shape: Optional[Tuple[int, ...]] = None
        self.thread = threading.Thread(target=self._run, name="prefetch", daemon=True)
        self.thread.start()

    def _check(self, f: Frame) -> None:
        rgb = f.rgb
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            got = (getattr(rgb, "dtype", type(rgb)), getattr(rgb, "shape", None))
            raise ValueError(f"frame {f.index} ({f.stem}): expected RGB uint8 [H, W, 3], got {got}")
        if self.shape is None:
            self.shape = rgb.shape
        elif rgb.shape != self.shape:
            raise ValueError(
                f"frame {f.index} ({f.stem}) is {rgb.shape[1]}x{rgb.shape[0]}, the stream started at "
                f"{self.shape[1]}x{self.shape[0]}; every frame must have the same size"
            )

    def _run(self) -> None:
        try:
            for f in self.frames:
                if self.stop.is_set():
                    break
                self._check(f)
                d = self.disparity.load(f.stem, self.size) if self.disparity is not None else None
                rgb = torch.from_numpy(f.rgb)
                if self.pin:
                    rgb = rgb.pin_memory()
                    d = None if d is None else torch.from_numpy(d).pin_memory()
                elif d is not None:
                    d = torch.from_numpy(d)
                if not self._put((f, rgb, d)):
                    break
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            self.error = e
        finally:
            self._put(None)
            close = getattr(self.frames, "close", None)
            if self.stop.is_set() and close is not None:
                close()

    def _put(self, item) -> bool:
        # a source that drops late frames (live, realtime) wants the newest frame here too, not a backlog
        drop = item is not None and bool(getattr(self.frames, "drops_late", False))
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.05) if not drop else self.q.put_nowait(item)
                return True
            except queue.Full:
                if drop:
                    with contextlib.suppress(queue.Empty):
                        self.q.get_nowait()
                        self.frames.dropped += 1
        return False

    def __iter__(self):
        while True:
            item = _get_alive(self.q, self.thread, "the engine's prefetch thread")
            if item is None:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self.q.get_nowait()
        self.thread.join(timeout=10)


@dataclass
class _Prepared:
    frame: Frame
    rgb: Tensor
    disp: Tensor
    ready: Optional["torch.cuda.Event"]
    t_enqueued: float
    t_depth: Optional[float] = None


class ReconstructionEngine:
    """Stream frames into dynamic Gaussians, render them, in a pipeline that keeps the device busy.

    ``options`` default to :meth:`InferenceOptions.default_for` the device (the fastest path on CUDA; eager
    on CPU) and are applied to ``model`` in place (:func:`streamsplat_ns.inference.prepare`); pass
    ``InferenceOptions.eager()`` to leave a training model untouched. ``disparity`` is needed by
    :meth:`stream` (not by :meth:`reconstruct_clip`, which takes disparity as input).
    """

    def __init__(
        self,
        model,
        *,
        options: Optional[InferenceOptions] = None,
        disparity: Optional[DisparitySource] = None,
        device: Union[str, torch.device, None] = None,
        background: float = 0.5,
        render_backend: str = "auto",
        overlap_depth: bool = True,
        sync_timings: bool = False,
        lookahead: Optional[int] = None,
        prefetch_depth: int = 3,
    ) -> None:
        model._require_decoder()
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.options = options if options is not None else InferenceOptions.default_for(self.device)
        self.model = prepare(model, self.options)
        self.disparity = disparity
        self.background = float(background)
        self.render_backend = render_backend
        self.cuda = self.device.type == "cuda"
        self.overlap_depth = overlap_depth and self.cuda
        self.sync_timings = sync_timings
        # frames prepared (uploaded, depth queued) before the step of the oldest: 1 overlaps depth with the
        # step; live mode passes 0 (a frame is not held back waiting for the next one to arrive)
        self.lookahead = (1 if self.overlap_depth else 0) if lookahead is None else max(0, int(lookahead))
        self.prefetch_depth = max(1, int(prefetch_depth))
        self.size: Tuple[int, int] = (int(model.height), int(model.width))
        if disparity is not None and hasattr(disparity, "bind"):
            disparity.bind(self.options, self.size)
        self.timer = _StageTimer(self.device)
        self._side = torch.cuda.Stream(self.device) if self.overlap_depth else None
        self._times: "collections.OrderedDict[Tuple[int, Tuple[float, ...]], Tensor]" = collections.OrderedDict()
        self._times_lock = threading.Lock()
        self._writers: List = []
        self._sources: List = []
        self._warm: Optional[StreamingSession] = None  # a warmed-up session the next stream() starts with
        self._render_pool = None  # render_async: one worker thread with its own CUDA stream, made on first use
        self._render_stream: Optional["torch.cuda.Stream"] = None
        self._render_slots = threading.BoundedSemaphore(2)  # renders in flight at most
        self.render_blocked_s = 0.0  # the caller's time waiting for a free render slot
        self.frames_done = 0
        self.intervals_done = 0
        self.t_start: Optional[float] = None
        self.t_first: Optional[float] = None
        self.t_end: Optional[float] = None

    # ------------------------------------------------------------------ streaming
    def session(self) -> StreamingSession:
        return StreamingSession(self.model, self.options)

    def _upload(self, rgb_host: Tensor, disp_host: Optional[Tensor], stream) -> Tuple[Tensor, Tensor, Tensor]:
        """uint8 [H, W, 3] host -> (uint8 [1, 3, H, W] native, float [1, 3, h, w] at the model size, disparity)
        on the device: 4x fewer bytes cross the bus than float frames."""
        with self.timer("upload", stream):
            u8 = rgb_host.to(self.device, non_blocking=True).permute(2, 0, 1)[None]
            x = u8.float().div_(255.0)
            rgb = (
                x
                if tuple(x.shape[-2:]) == self.size
                else F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
            )
            disp = None
            if disp_host is not None:
                disp = disp_host.to(self.device, non_blocking=True)[None, None]
        return u8, rgb, disp

    def _prepare(self, frame: Frame, rgb_host: Tensor, disp_host: Optional[Tensor]) -> _Prepared:
        stream = self._side
        ctx = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
        t = time.perf_counter()
        with ctx:  # no wait on the main stream: depth of this frame overlaps the previous frame's step
            native, rgb, disp = self._upload(rgb_host, disp_host, stream)
            if disp is None:
                if self.disparity is None:
                    raise ValueError("ReconstructionEngine.stream needs a DisparitySource (files or Depth Anything V2)")
                with self.timer("depth", stream):
                    disp = self.disparity.compute(native, self.size)
            ready = None
            if stream is not None:
                ready = torch.cuda.Event()
                ready.record(stream)
        p = _Prepared(frame, rgb, disp, ready, t)
        if self.sync_timings:
            if ready is not None:
                ready.synchronize()
            p.t_depth = time.perf_counter()
        return p

    def _step(self, session: StreamingSession, p: _Prepared) -> Optional[DynamicGaussians]:
        if p.ready is not None:
            main = torch.cuda.current_stream(self.device)
            main.wait_event(p.ready)
            p.rgb.record_stream(main)  # made on the side stream, read on main: keep the allocator honest
            p.disp.record_stream(main)
        with self.timer("model"):
            return session.push(p.rgb, p.disp)

    @torch.no_grad()
    def stream(self, frames: Iterable[Frame]) -> Iterator[Interval]:
        """Yield one :class:`Interval` per new key frame (from the second on), in frame order."""
        if isinstance(frames, FrameSource):
            self._sources.append(frames)
        self.t_start = self.t_start or time.perf_counter()
        session, self._warm = (self._warm or self.session()), None
        pre = _Prefetch(frames, self.disparity, self.size, pin=self.cuda, depth=self.prefetch_depth)
        ahead: Deque[_Prepared] = collections.deque()
        lookahead = self.lookahead
        prev: Optional[_Prepared] = None
        try:
            items = iter(pre)
            exhausted = False
            while True:
                while not exhausted and len(ahead) <= lookahead:
                    item = next(items, None)
                    if item is None:
                        exhausted = True
                        break
                    ahead.append(self._prepare(*item))
                if not ahead:
                    break
                p = ahead.popleft()
                g = self._step(session, p)
                self.frames_done += 1
                if g is not None:
                    assert prev is not None
                    iv = Interval(
                        self.intervals_done,
                        (prev.frame.index, p.frame.index),
                        g,
                        p.frame.t_arrival,
                        (prev.frame.stem, p.frame.stem),
                        self._timings(p),
                    )
                    self.intervals_done += 1
                    if self.t_first is None:
                        self.t_first = time.perf_counter()
                    yield iv
                prev = p
        finally:
            pre.close()
            _close(session)
            self.t_end = time.perf_counter()

    @torch.no_grad()
    def warm_up(self, height: int, width: int, frames: int = 4, times: Optional[Sequence[float]] = None) -> float:
        """Run ``frames`` synthetic frames of the source's size (``height`` x ``width``) through the whole path
        (upload, depth, step, a render at ``times``) before the source starts, so that kernel choices, Triton
        compilation, the depth and step CUDA graphs and the allocator are ready and the next :meth:`stream`
        runs at full speed from its first frame: a live source then drops nothing to the warm-up. The warm
        session (graph kept) is the one the next :meth:`stream` uses. Returns the seconds it took."""
        t0 = time.perf_counter()
        session, self._warm = (self._warm or self.session()), None
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, (int(height), int(width) + frames, 3), dtype=np.uint8)  # shifts: some motion
        disp = None
        if getattr(self.disparity, "mode", "file") != "compute":  # maps from files arrive at the model size
            h, w = self.size
            disp = torch.linspace(0.1, 1.0, h * w, dtype=torch.float32).reshape(h, w)
            disp = disp.pin_memory() if self.cuda else disp
        try:
            for i in range(max(3, int(frames))):  # eager, eager + capture, replay
                arr = np.ascontiguousarray(base[:, i % (frames + 1) : i % (frames + 1) + int(width)])
                rgb = torch.from_numpy(arr)
                rgb = rgb.pin_memory() if self.cuda else rgb
                g = self._step(session, self._prepare(Frame(-1, "warm-up", arr, time.perf_counter()), rgb, disp))
                if g is not None and times:
                    self.render(g, times)
            if self.cuda:
                torch.cuda.synchronize(self.device)
        except BaseException:
            _close(session)
            raise
        session.restart()
        self._warm = session
        self.timer = _StageTimer(self.device)  # the warm-up is not part of the run's statistics
        return time.perf_counter() - t0

    def _timings(self, p: _Prepared) -> Dict[str, float]:
        t = {"arrival": p.frame.t_arrival, "enqueued": p.t_enqueued}
        if self.sync_timings:
            if p.t_depth is not None:
                t["depth_done"] = p.t_depth
            if self.cuda:
                torch.cuda.current_stream(self.device).synchronize()
            t["model_done"] = time.perf_counter()
        return t

    # ------------------------------------------------------------------ rendering
    def _times_tensor(self, times: Union[Tensor, Sequence[float]]) -> Tensor:
        """``times`` on the device, cached per (CUDA stream, times): the copy is queued without a host wait
        (a pageable host->device copy would wait for the whole queue) and ordered before every use, since only
        the stream that made it reads it (renders run on the caller's stream, the render thread's, viewers')."""
        if isinstance(times, Tensor):
            return times.to(self.device, torch.float32)
        stream = torch.cuda.current_stream(self.device).cuda_stream if self.cuda else 0
        key = (stream, tuple(float(t) for t in times))
        with self._times_lock:
            hit = self._times.get(key)
            if hit is None:
                hit = torch.tensor(key[1], dtype=torch.float32)
                hit = hit.pin_memory().to(self.device, non_blocking=True) if self.cuda else hit
                self._times[key] = hit
                while len(self._times) > 32:
                    self._times.popitem(last=False)
            return hit

    @torch.no_grad()
    def render_output(
        self,
        what: Union[Interval, DynamicGaussians],
        times,
        *,
        height: Optional[int] = None,
        width: Optional[int] = None,
        viewmats: Optional[Tensor] = None,
        Ks: Optional[Tensor] = None,
    ):
        """All ``times`` (normalised in the interval) in one batched render -> ``RenderOutput`` [1, T, ...]."""
        from ..rendering import render_canonical as render

        g = what.gaussians if isinstance(what, Interval) else what
        t = self._times_tensor(times)
        h, w = height or self.size[0], width or self.size[1]
        kw = {} if viewmats is None else {"viewmats": viewmats, "Ks": Ks}
        with self.timer("render"):
            # inputs are network outputs of validated frames and checkpoints: no per-tensor finiteness sync
            return render(g, t, h, w, background=self.background, backend=self.render_backend, check_inputs=False, **kw)

    def render(self, what: Union[Interval, DynamicGaussians], times, **kw) -> Float[Tensor, "T H W 3"]:
        """RGB of the canonical view at ``times`` in [0, 1] of the interval, one batched call -> [T, H, W, 3]."""
        return self.render_output(what, times, **kw).rgb[0]

    def render_async(self, what: Union[Interval, DynamicGaussians], times):
        """:meth:`render` on the engine's render thread and CUDA stream, returned as
        :class:`~streamsplat_ns.engine.outputs.PendingFrames` for the video writers. A batched render
        synchronises its thread once (the rasterizer reads its tile-intersection count), so rendered here the
        main thread queues the next step meanwhile and the two overlap on the GPU. At most two renders are in
        flight (the caller waits beyond that: memory stays bounded). Off CUDA it renders now."""
        from concurrent.futures import Future, ThreadPoolExecutor

        from .outputs import HostFrames, PendingFrames

        g = what.gaussians if isinstance(what, Interval) else what
        if not self.cuda:
            done: Future = Future()
            done.set_result(HostFrames(self.render(g, times)))
            return PendingFrames(done)
        if self._render_pool is None:
            self._render_pool = ThreadPoolExecutor(1, thread_name_prefix="render")
            self._render_stream = torch.cuda.Stream(self.device)
        ready = torch.cuda.Event()
        ready.record()  # the interval's Gaussians are queued on this (the caller's) stream
        rs = self._render_stream
        if not self._render_slots.acquire(blocking=False):
            t = time.perf_counter()
            self._render_slots.acquire()
            self.render_blocked_s += time.perf_counter() - t

        def job():
            try:
                with torch.cuda.stream(rs):
                    rs.wait_event(ready)
                    for f in dataclasses.fields(g):  # made on the main stream, read on this one: keep the
                        t = getattr(g, f.name)  # allocator from reusing them before this render is done
                        if isinstance(t, Tensor):
                            t.record_stream(rs)
                    return HostFrames(self.render(g, times))
            finally:
                self._render_slots.release()

        return PendingFrames(self._render_pool.submit(job))

    # ------------------------------------------------------------------ clips (viewer, export, ns-render)
    @torch.no_grad()
    def reconstruct_clip(
        self,
        rgb: Float[Tensor, "N 3 H W"],
        disp: Float[Tensor, "N 1 H W"],
        key_gap: int,
        *,
        frames: Optional[Sequence[int]] = None,
    ) -> List[Interval]:
        """Intervals of a clip already in memory (RGB in [0, 1], disparity any scale).

        Without ``frames`` the rows are the clip's frames 0..N-1 and the key frames are
        ``key_frames(N, key_gap)``. With ``frames`` the rows are already the key frames and ``frames`` their
        source indices (a viewer loads only the pair it shows)."""
        if rgb.dim() != 4 or rgb.shape[1] != 3 or disp.dim() != 4 or disp.shape[1] != 1 or len(rgb) != len(disp):
            raise ValueError(
                f"reconstruct_clip: rgb must be [N, 3, H, W] and disp [N, 1, H, W] with the same N, got "
                f"{tuple(rgb.shape)} and {tuple(disp.shape)}"
            )
        if frames is None:
            idx = key_frames(len(rgb), key_gap)
            rows = idx
        else:
            idx, rows = [int(f) for f in frames], list(range(len(rgb)))
            if len(idx) != len(rgb) or any(b <= a for a, b in zip(idx, idx[1:])):
                raise ValueError(f"reconstruct_clip: frames must be {len(rgb)} increasing source indices, got {idx}")
        if len(rows) < 2:
            raise ValueError(f"reconstruct_clip: need at least two key frames, got {len(rows)}")
        session = self.session()
        out: List[Interval] = []
        now = time.perf_counter()
        try:
            for j, r in enumerate(rows):
                x = rgb[r : r + 1].to(self.device, torch.float32)
                d = disp[r : r + 1].to(self.device, torch.float32)
                if tuple(x.shape[-2:]) != self.size:
                    x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
                    d = F.interpolate(d, size=self.size, mode="nearest")
                with self.timer("model"):
                    g = session.push(x, d)
                if g is not None:
                    out.append(Interval(j - 1, (idx[j - 1], idx[j]), g, now))
        finally:
            _close(session)
        return out

    def close(self) -> None:
        """Release the depth path's CUDA graphs and a warm session no stream used (the streaming sessions
        close at the end of each stream)."""
        warm, self._warm = self._warm, None
        if warm is not None:
            _close(warm)
        pool, self._render_pool = self._render_pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        if self.disparity is not None and hasattr(self.disparity, "close"):
            self.disparity.close()

    def __enter__(self) -> "ReconstructionEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ outputs and statistics
    def open_video(
        self, path, fps: float, height: Optional[int] = None, width: Optional[int] = None, preset: str = "veryfast"
    ):
        """A background-thread mp4 writer whose encode time shows in :attr:`stats`."""
        from .outputs import VideoWriter

        w = VideoWriter(path, fps, height or self.size[0], width or self.size[1], preset=preset)
        self._writers.append(w)
        return w

    @property
    def stats(self) -> dict:
        """Frames, wall clock, first-interval latency and per-stage seconds (resolves pending device timings:
        call at the end, not per frame)."""
        self.timer.resolve(block=True)
        stages = dict(self.timer.total)
        stages["decode"] = sum(s.decode_s for s in self._sources)
        stages["encode"] = sum(w.encode_s for w in self._writers)
        end = self.t_end or time.perf_counter()
        wall = (end - self.t_start) if self.t_start else 0.0
        n = max(self.frames_done, 1)
        return {
            "frames": self.frames_done,
            "intervals": self.intervals_done,
            "wall_s": wall,
            "frames_per_s": self.frames_done / wall if wall > 0 else None,
            "first_interval_s": None if self.t_first is None or self.t_start is None else self.t_first - self.t_start,
            "stages_s": stages,
            "stages_ms_per_frame": {k: 1000 * v / n for k, v in stages.items()},
            # where the caller (main thread) waited on the pipeline behind it: the bottleneck, if any
            "blocked_ms_per_frame": {
                "render": 1000 * self.render_blocked_s / n,
                "encode": 1000 * sum(w.blocked_s for w in self._writers) / n,
            },
            "dropped": sum(getattr(s, "dropped", 0) for s in self._sources),
            "device": str(self.device),
            "options": _describe(self.options),
            "overlap_depth": self.overlap_depth,
            "kernel_choices": self._choice_stats(),
        }

    def _choice_stats(self) -> Optional[dict]:
        """Kernel choices this process timed (0 once the on-disk cache has them) and the seconds that took,
        Triton compilation of the candidates included: most of a fresh machine's first-output latency."""
        if not self.cuda:
            return None
        from ..inference.choices import get_choices

        c = get_choices(self.device, self.options.resolved_cache_dir)
        return {"timed": c.timed, "seconds": c.seconds, "packaged": c.packaged, "cache": str(c.path)}


def _close(session: StreamingSession) -> None:
    close = getattr(session, "close", None)  # releases a CUDA-graph session's memory now
    if close is not None:
        close()


def _describe(options: InferenceOptions) -> dict:
    from dataclasses import asdict

    d = asdict(options)
    d["dtype"] = None if options.dtype is None else str(options.dtype).replace("torch.", "")
    d["cache_dir"] = None if options.cache_dir is None else str(options.cache_dir)
    return d
