"""A live session: frame source -> engine -> (window for the viewer, recorder), and how it ends.

The engine runs on the calling thread; the source decodes in its own thread (``open_frames``), each
browser renders in its own thread. Hand-overs are bounded: the source keeps at most ``queue`` frames and,
for live sources (cameras, streams, real-time playback), lets the oldest go when the engine lags
(counted, shown in the panel as "dropped k frames"); the window keeps the last ``window`` intervals;
the recorder takes intervals without waiting on the disk.

A source that fails mid-stream (camera unplugged, stream gone, damaged file) ends the session with a
message naming it; intervals recorded so far stay on disk and open with ``streamsplat-view``.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional

import torch

from .record import RecordConfig, Recorder
from .state import IntervalWindow, LiveInterval, LiveStats, cuda_ready_event, now
from .viewer import LiveViewer, ViewerOptions

log = logging.getLogger(__name__)


@dataclass
class SessionResult:
    intervals: int = 0
    frames_used: int = 0
    dropped: int = 0
    ok: bool = True
    message: str = ""
    record: Optional[Path] = None
    stats: Dict[str, float] = field(default_factory=dict)


class LiveSession:
    """Runs intervals from ``intervals`` (any iterable of engine Intervals) into a window, a viewer and a
    recorder. Split from source/engine construction so tests and benchmarks can feed any iterable.

    ``source`` (optional) is the FrameSource: its ``dropped`` / ``error`` are reported.
    """

    def __init__(
        self,
        *,
        model_size,
        device: torch.device,
        window: int = 30,
        fps: float = 30.0,
        viewer: Optional[ViewerOptions] = None,
        serve: bool = True,
        headless_render: bool = False,
        record: Optional[Path] = None,
        record_config: Optional[RecordConfig] = None,
        source_label: str = "",
        keep_stats: bool = False,
        background: float = 0.5,
    ) -> None:
        self.device = torch.device(device)
        self.model_size = (int(model_size[0]), int(model_size[1]))
        self.window = IntervalWindow(window)
        self.stats = LiveStats(keep_all=keep_stats)
        self.fps = fps
        self.source_label = source_label
        self.recorder: Optional[Recorder] = None
        if record is not None:
            self.recorder = Recorder(
                record,
                source=source_label,
                model_size=self.model_size,
                fps=fps,
                config=record_config,
                background=background,
                kind="live",
            )
        self.viewer: Optional[LiveViewer] = None
        if serve:
            self.viewer = LiveViewer(
                self.window,
                model_size=self.model_size,
                device=self.device,
                stats=self.stats,
                opts=viewer,
                fps=fps,
                follow_live=True,
                headless=headless_render,
                source_label=source_label,
            )
        self.result = SessionResult(record=record)
        self.stop_event = threading.Event()

    def run(
        self, intervals: Iterable[Any], source: Any = None, on_interval: Optional[Callable[[LiveInterval], None]] = None
    ) -> SessionResult:
        """Consume ``intervals`` until the source ends, fails or :attr:`stop_event` is set."""
        res = self.result
        status, message = "complete", ""
        it = iter(intervals)
        if source is not None and hasattr(source, "emitted"):
            self.stats.input_counter = lambda: source.emitted
        try:
            while not self.stop_event.is_set():
                try:
                    iv = next(it)
                except StopIteration:
                    break
                item = LiveInterval(
                    int(iv.k),
                    tuple(int(x) for x in iv.frames),
                    iv.gaussians,
                    float(getattr(iv, "t_arrival", math.nan)),
                    ready=cuda_ready_event(self.device),
                    timings=dict(getattr(iv, "timings", None) or {}),
                )
                item.timings["yielded"] = now()
                self.window.append(item)
                if self.recorder is not None:
                    self.recorder.add(item.k, item.frames, item.gaussians, item.t_arrival)
                self.stats.interval_done(item.timings["yielded"])
                if source is not None:
                    self.stats.dropped_source = int(getattr(source, "dropped", 0))
                res.intervals += 1
                if on_interval is not None:
                    on_interval(item)
            err = getattr(source, "error", None) if source is not None else None
            if err is not None:
                status, message = "source-error", f"the source stopped: {err}"
            elif self.stop_event.is_set():
                status, message = "stopped", "stopped by the user"
            else:
                status, message = "complete", f"the source ended after {res.intervals} intervals"
        except KeyboardInterrupt:
            status, message = "stopped", "stopped by the user (Ctrl-C)"
        except Exception as e:  # noqa: BLE001 - a failing source ends the session cleanly, with a message
            log.debug("live session error", exc_info=True)
            status, message = "source-error", f"the source stopped: {type(e).__name__}: {e}"
        finally:
            if source is not None:
                self.stats.dropped_source = int(getattr(source, "dropped", 0))
                res.frames_used = int(getattr(source, "emitted", 0))
                try:
                    source.close()
                except Exception:  # noqa: BLE001
                    pass
            res.dropped = self.stats.dropped_source + self.stats.dropped_feed
            if res.dropped:
                message += f"; dropped {res.dropped} frames (the engine could not keep up with the source)"
            if self.recorder is not None:
                self.recorder.close(status, message)
                rec = self.recorder
                message += (
                    f"; recording: {rec.written} intervals in {rec.folder}"
                    + (f" ({rec.deleted} oldest deleted for the budget)" if rec.deleted else "")
                    + (f" ({rec.skipped} skipped: disk behind)" if rec.skipped else "")
                    + (f" [{rec.stopped}]" if rec.stopped else "")
                )
            res.ok = status in ("complete", "stopped")
            res.message = message
            res.stats = self.stats.summary()
            self.window.close(message)
            if self.viewer is not None:
                self.viewer.set_message(message)
        return res

    def close(self) -> None:
        if self.viewer is not None:
            self.viewer.close()
