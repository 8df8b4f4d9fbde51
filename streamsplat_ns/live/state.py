"""Shared state between the source, the engine and the viewer: bounded by construction.

Three kinds of thread meet here: the frame source's decoding thread (``engine.open_frames``: on a live
source it keeps only the newest frames when the engine lags, counting the others as dropped), the
*engine* thread that turns frames into intervals, and each viewer client's *render* thread that draws
whatever is newest. Nothing in between is an unbounded queue, so memory stays flat however long the
stream runs and a slow viewer never holds up the source:

* :class:`IntervalWindow`: the last ``N`` intervals (the time slider's range) plus a version counter the
  render threads wait on; appending never blocks on a reader.
* :class:`LiveStats`: frames/s, arrival-to-viewer latency and drop counts for the panel and benchmarks.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import torch

from ..gaussians import DynamicGaussians


def now() -> float:
    """The one clock of the live pipeline (monotonic seconds; the engine's ``Frame.t_arrival`` uses it too)."""
    return time.perf_counter()


@dataclass
class LiveInterval:
    """One interval as the viewer holds it: the Gaussians of key frames ``k`` and ``k + 1``."""

    k: int
    frames: Tuple[int, int]
    gaussians: DynamicGaussians
    t_arrival: float = math.nan
    """arrival (``now()``) of the newer frame; NaN for recorded intervals"""
    ready: Optional[Any] = None
    """CUDA event recorded on the engine's stream after the Gaussians were made (readers wait on it)"""
    timings: Dict[str, float] = field(default_factory=dict)


class IntervalWindow:
    """The last ``size`` intervals, or a fixed set (a recording) loaded lazily by ``loader``.

    Readers take :meth:`snapshot` (a list copy: O(N), no tensor copies) and wait on :meth:`wait_change`.
    Times are source frame indices: interval ``k`` spans its key frames ``frames = (i0, i1)``.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"--window must be >= 1 key-frame interval, got {size}")
        self.size = size
        self._items: Deque[LiveInterval] = collections.deque(maxlen=size)
        self._cv = threading.Condition()
        self.version = 0
        self.closed = False
        self.message = ""

    def append(self, item: LiveInterval) -> None:
        with self._cv:
            self._items.append(item)  # the oldest falls out: bounded memory
            self.version += 1
            self._cv.notify_all()

    def close(self, message: str = "") -> None:
        with self._cv:
            self.closed, self.message = True, message
            self.version += 1
            self._cv.notify_all()

    def snapshot(self) -> List[LiveInterval]:
        with self._cv:
            return list(self._items)

    def latest(self) -> Optional[LiveInterval]:
        with self._cv:
            return self._items[-1] if self._items else None

    def range(self) -> Optional[Tuple[float, float]]:
        """(first, last) source frame the window spans."""
        with self._cv:
            if not self._items:
                return None
            return float(self._items[0].frames[0]), float(self._items[-1].frames[1])

    def wait_change(self, version: int, timeout: float) -> int:
        with self._cv:
            if self.version == version:
                self._cv.wait(timeout)
            return self.version

    @staticmethod
    def pick(items: List[LiveInterval], frame: float) -> Tuple[Optional[LiveInterval], float]:
        """The interval showing source frame ``frame`` (fractional) and the normalised time in it.

        Times are source frame indices (as in the PLY convention): interval ``(i0, i1)`` spans frames i0..i1.
        After dropped frames intervals are longer; a frame in no interval shows the next one's start."""
        if not items:
            return None, 0.0
        f = min(max(float(frame), float(items[0].frames[0])), float(items[-1].frames[1]))
        best = items[-1]
        for it in items:  # N is small (the window)
            if f <= it.frames[1]:
                best = it
                break
        i0, i1 = best.frames
        return best, float(min(max((f - i0) / max(i1 - i0, 1), 0.0), 1.0))


class LiveStats:
    """Rates and latencies over the last ``horizon`` seconds (bounded deques), thread-safe."""

    def __init__(self, horizon: float = 5.0, keep_all: bool = False) -> None:
        self.horizon = horizon
        self._lock = threading.Lock()
        self._intervals: Deque[float] = collections.deque()
        self._arrivals: Deque[Tuple[float, int]] = collections.deque()
        self._latency: Deque[Tuple[float, float]] = collections.deque()
        self.dropped_source = 0
        self.dropped_feed = 0
        self.intervals_total = 0
        self.keep_all = keep_all
        self.input_counter: Optional[Callable[[], int]] = None
        """the source's count of delivered frames, sampled whenever the summary is read (input frames/s)"""
        self.records: List[Dict[str, float]] = []
        """every interval's timestamps (benchmarks only: ``keep_all=True``; otherwise left empty)"""

    def _trim(self, dq: Deque, t: float, key=lambda x: x) -> None:
        while dq and t - key(dq[0]) > self.horizon:
            dq.popleft()

    def sample_input(self, count: int, t: Optional[float] = None) -> None:
        """The source's running count of frames delivered (kept or dropped): gives the input rate."""
        t = now() if t is None else t
        with self._lock:
            self._arrivals.append((t, count))
            self._trim(self._arrivals, t, key=lambda x: x[0])

    def interval_done(self, t: Optional[float] = None) -> None:
        t = now() if t is None else t
        with self._lock:
            self.intervals_total += 1
            self._intervals.append(t)
            self._trim(self._intervals, t)

    def viewer_updated(self, item: LiveInterval, t_sent: float, t_render: float = math.nan) -> None:
        """The first image showing interval ``item`` was handed to viser."""
        if math.isnan(item.t_arrival):
            return
        with self._lock:
            self._latency.append((t_sent, t_sent - item.t_arrival))
            self._trim(self._latency, t_sent, key=lambda x: x[0])
            if self.keep_all:
                rec = dict(item.timings)
                rec.update(k=float(item.k), arrival=item.t_arrival, render_done=t_render, viewer_sent=t_sent)
                self.records.append(rec)

    @staticmethod
    def _rate(dq: Deque[float]) -> float:
        if len(dq) < 2 or dq[-1] <= dq[0]:
            return 0.0
        return (len(dq) - 1) / (dq[-1] - dq[0])

    @staticmethod
    def _count_rate(dq: Deque[Tuple[float, int]]) -> float:
        if len(dq) < 2 or dq[-1][0] <= dq[0][0]:
            return 0.0
        return (dq[-1][1] - dq[0][1]) / (dq[-1][0] - dq[0][0])

    def summary(self) -> Dict[str, float]:
        if self.input_counter is not None:
            self.sample_input(int(self.input_counter()))
        with self._lock:
            lat = sorted(x for _, x in self._latency)
            return {
                "fps": self._rate(self._intervals),
                "input_fps": self._count_rate(self._arrivals),
                "latency_p50_ms": 1e3 * lat[len(lat) // 2] if lat else math.nan,
                "latency_max_ms": 1e3 * lat[-1] if lat else math.nan,
                "dropped": float(self.dropped_source + self.dropped_feed),
                "intervals": float(self.intervals_total),
            }

    def markdown(self, extra: str = "") -> str:
        s = self.summary()
        lat = (
            "–" if math.isnan(s["latency_p50_ms"]) else f"{s['latency_p50_ms']:.0f} ms (max {s['latency_max_ms']:.0f})"
        )
        lines = [
            f"frames/s: {s['fps']:.1f} (input {s['input_fps']:.1f})",
            f"latency: {lat}",
            f"dropped {int(s['dropped'])} frames",
        ]
        if extra:
            lines.append(extra)
        return "  \n".join(lines)


def cuda_ready_event(device: torch.device) -> Optional[Any]:
    """An event on the current stream of ``device`` (CUDA only): render threads wait on it before reading."""
    if device.type != "cuda":
        return None
    ev = torch.cuda.Event()
    ev.record(torch.cuda.current_stream(device))
    return ev
