"""Recorded sessions: the Gaussians of every interval on disk, small, bounded and always readable.

Layout of a recording folder (``streamsplat-live --record OUT``; ``streamsplat-view OUT`` opens it)::

    OUT/session.json                      what was recorded (source, model size, key-frame rate, status)
    OUT/intervals/k0000000123.safetensors one interval: key frames 123 and 124 (fp16 tensors)

Each interval file is self-describing (its key-frame index, source frame indices and arrival time are in
the safetensors metadata) and is written atomically (temporary name, fsync, rename), so a session whose
source disappears, or a process that is killed, leaves every finished interval readable. Gaussians that
stay below ``min_opacity`` over the whole interval (evaluated at 5 times) are dropped, tensors are stored
in fp16 (identity rotations and the 0/1 anchor times are not stored at all). The folder stays under
``budget_mb``: when the next interval would not fit, the oldest ones are deleted (``policy="drop-oldest"``)
or recording stops (``policy="stop"``), with a message either way.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Union

import torch
from torch import Tensor

from ..atomic import atomic_path, atomic_write_text, clean_stale_temps
from ..gaussians import DynamicGaussians

log = logging.getLogger(__name__)

FORMAT = "streamsplat-gaussians"
VERSION = 1
MANIFEST = "session.json"
INTERVALS = "intervals"
_FIELDS = ("means", "scales", "opacities", "colours", "motion", "gamma0", "gamma1")
PathLike = Union[str, os.PathLike]


def interval_name(k: int) -> str:
    return f"k{k:010d}.safetensors"


def compress_interval(g: DynamicGaussians, min_opacity: float = 1.0 / 255) -> Tuple[Dict[str, Tensor], Dict[str, str]]:
    """fp16 CPU tensors of batch item 0 without its near-transparent Gaussians, and metadata."""
    from ..rendering.dynamic import opacities_at

    with torch.no_grad():
        one = g.map(lambda x: x[:1])
        times = torch.linspace(0, 1, 5, device=g.means.device, dtype=g.means.dtype)[None]
        keep = opacities_at(one, times)[0].amax(0) >= min_opacity  # [N]
        keep &= torch.isfinite(one.means[0]).all(-1)
        out: Dict[str, Tensor] = {}
        for name in _FIELDS:
            out[name] = getattr(one, name)[0][keep].to("cpu", torch.float16).contiguous()
        if one.sh is not None:
            out["sh"] = one.sh[0][keep].to("cpu", torch.float16).contiguous()
        meta = {}
        q = one.quats[0][keep]
        ident = torch.tensor([1.0, 0.0, 0.0, 0.0], device=q.device, dtype=q.dtype)
        if q.numel() and bool((q == ident).all()):
            meta["quats"] = "identity"
        else:
            out["quats"] = q.to("cpu", torch.float16).contiguous()
        t0 = one.t0[0][keep]
        if bool(((t0 == 0) | (t0 == 1)).all()):
            out["t0"] = t0.to("cpu", torch.uint8).contiguous()
        else:
            out["t0"] = t0.to("cpu", torch.float16).contiguous()
    meta["num_gaussians"] = str(int(keep.sum()))
    meta["num_gaussians_in"] = str(int(keep.numel()))
    return out, meta


def decompress_interval(
    tensors: Dict[str, Tensor], meta: Dict[str, str], device: Union[str, torch.device] = "cpu"
) -> DynamicGaussians:
    """Inverse of :func:`compress_interval`: fp32 DynamicGaussians with batch 1 on ``device``."""
    f = {k: v.to(device, torch.float32)[None] for k, v in tensors.items()}
    n = f["means"].shape[1]
    if "quats" not in f:
        q = torch.zeros(1, n, 4, device=device)
        q[..., 0] = 1.0
        f["quats"] = q
    return DynamicGaussians(
        means=f["means"],
        quats=f["quats"],
        scales=f["scales"],
        opacities=f["opacities"],
        colours=f["colours"],
        sh=f.get("sh"),
        motion=f["motion"],
        t0=f["t0"],
        gamma0=f["gamma0"],
        gamma1=f["gamma1"],
    )


@dataclass
class RecordConfig:
    budget_mb: float = 2048.0
    policy: Literal["drop-oldest", "stop"] = "drop-oldest"
    min_opacity: float = 1.0 / 255
    queue: int = 32
    """intervals waiting for the disk; when the disk is slower than the stream, newer ones are skipped
    (counted) rather than holding up the engine"""


class Recorder:
    """Writes intervals in a background thread (the engine hands them over and never waits on the disk).

    >>> rec = Recorder(out, source="cam", model_size=(288, 512), fps=30.0)
    >>> rec.add(k, (i0, i1), gaussians, t_arrival)   # from the engine thread
    >>> rec.close("source ended")                     # flushes, writes the final session.json
    """

    def __init__(
        self,
        folder: PathLike,
        *,
        source: str,
        model_size: Tuple[int, int],
        fps: Optional[float],
        config: Optional[RecordConfig] = None,
        background: float = 0.5,
        kind: str = "live",
    ) -> None:
        self.folder = Path(folder)
        self.cfg = config or RecordConfig()
        if self.cfg.budget_mb <= 0:
            raise ValueError(f"--record-budget-mb must be > 0, got {self.cfg.budget_mb}")
        if (self.folder / INTERVALS).is_dir() and any((self.folder / INTERVALS).iterdir()):
            raise FileExistsError(
                f"{self.folder}: already holds a recording ({INTERVALS}/ is not empty); "
                f"choose a new --record folder or delete the old one"
            )
        (self.folder / INTERVALS).mkdir(parents=True, exist_ok=True)
        clean_stale_temps(self.folder / INTERVALS)
        self.budget = int(self.cfg.budget_mb * 2**20)
        self.files: "OrderedDict[int, int]" = OrderedDict()  # k -> bytes on disk (oldest first)
        self.bytes = 0
        self.written = 0
        self.deleted = 0
        self.skipped = 0
        self.stopped: Optional[str] = None
        self.error: Optional[BaseException] = None
        self.info = {
            "format": FORMAT,
            "version": VERSION,
            "kind": kind,
            "source": str(source),
            "model_size": [int(model_size[0]), int(model_size[1])],
            "fps": fps,
            "background": background,
            "dtype": "float16",
            "min_opacity": self.cfg.min_opacity,
            "budget_mb": self.cfg.budget_mb,
            "policy": self.cfg.policy,
            "started": time.time(),
        }
        self._write_manifest("recording", "")
        self._q: "queue.Queue" = queue.Queue(maxsize=max(1, self.cfg.queue))
        self._thread = threading.Thread(target=self._run, name="streamsplat-record", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ engine side
    def add(
        self, k: int, frames: Tuple[int, int], g: DynamicGaussians, t_arrival: float = float("nan"), block: bool = False
    ) -> bool:
        """Queue an interval; False when it was not taken (recording stopped, or the disk is behind).
        ``block=True`` (offline use) waits for the disk instead."""
        if self.stopped is not None:
            return False
        if block:
            return self._put((k, frames, g, t_arrival))
        try:
            self._q.put_nowait((k, frames, g, t_arrival))
            return True
        except queue.Full:
            self.skipped += 1
            if self.skipped == 1:
                log.warning(
                    "%s: the disk is slower than the stream; skipping intervals (counted in session.json)", self.folder
                )
            return False

    def _put(self, item) -> bool:
        """Blocking put that gives up when the writer thread is gone (a dead thread must not hang the engine)."""
        while True:
            try:
                self._q.put(item, timeout=0.5)
                return True
            except queue.Full:
                if not self._thread.is_alive():
                    self.stopped = self.stopped or f"the recording thread ({self._thread.name}) stopped"
                    return False

    def close(self, status: str = "complete", message: str = "") -> None:
        """Flush queued intervals and write the final manifest (call once, also after errors)."""
        self._put(None)
        self._thread.join()  # returns: the thread ends at the marker, or has already ended
        final = "stopped" if self.stopped else status
        msg = "; ".join(x for x in (message, self.stopped or "") if x)
        self._write_manifest(final, msg)

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        from safetensors.torch import save_file

        while True:
            item = self._q.get()
            if item is None:
                return
            if self.stopped is not None:
                continue
            k, frames, g, t_arr = item
            try:
                tensors, meta = compress_interval(g, self.cfg.min_opacity)
                meta.update(
                    k=str(k),
                    i0=str(frames[0]),
                    i1=str(frames[1]),
                    t_arrival=repr(float(t_arr)),
                    format=FORMAT,
                    version=str(VERSION),
                )
                size = sum(t.numel() * t.element_size() for t in tensors.values()) + 4096  # + header
                if size > self.budget:
                    self._stop(
                        f"recording stopped: one interval ({size / 2**20:.1f} MB) exceeds "
                        f"--record-budget-mb {self.cfg.budget_mb}"
                    )
                    continue
                while self.bytes + size > self.budget:
                    if self.cfg.policy == "stop":
                        self._stop(
                            f"recording stopped at key frame {k}: --record-budget-mb {self.cfg.budget_mb} "
                            f"reached ({self.written} intervals kept)"
                        )
                        break
                    old, nbytes = self.files.popitem(last=False)
                    (self.folder / INTERVALS / interval_name(old)).unlink(missing_ok=True)
                    self.bytes -= nbytes
                    self.deleted += 1
                    if self.deleted == 1:
                        log.warning(
                            "%s: --record-budget-mb %s reached; deleting the oldest intervals from now on",
                            self.folder,
                            self.cfg.budget_mb,
                        )
                if self.stopped is not None:
                    continue
                path = self.folder / INTERVALS / interval_name(k)
                with atomic_path(path) as tmp:
                    save_file(tensors, str(tmp), metadata=meta)
                nbytes = path.stat().st_size
                self.files[k] = nbytes
                self.bytes += nbytes
                self.written += 1
            except BaseException as e:  # noqa: BLE001 - a full disk ends recording, not the live session
                self.error = e
                self._stop(f"recording stopped: {e}")

    def _stop(self, message: str) -> None:
        self.stopped = message
        log.warning("%s", message)
        self._write_manifest("stopped", message)

    def _write_manifest(self, status: str, message: str) -> None:
        info = dict(
            self.info,
            status=status,
            message=message,
            intervals_written=getattr(self, "written", 0),
            intervals_deleted_for_budget=getattr(self, "deleted", 0),
            intervals_skipped_disk_behind=getattr(self, "skipped", 0),
            bytes=getattr(self, "bytes", 0),
            updated=time.time(),
        )
        try:
            atomic_write_text(self.folder / MANIFEST, json.dumps(info, indent=1))
        except OSError as e:  # the intervals themselves stay readable without an up-to-date manifest
            log.warning("%s: could not update the manifest: %s", self.folder / MANIFEST, e)


def is_recording(folder: PathLike) -> bool:
    folder = Path(folder)
    return (folder / MANIFEST).is_file() and (folder / INTERVALS).is_dir()


class Recording:
    """A recording folder opened for reading: intervals listed from the files (not the manifest, which may
    lag a killed process), loaded lazily with a small LRU cache."""

    def __init__(self, folder: PathLike, device: Union[str, torch.device] = "cpu", cache: int = 8) -> None:
        self.folder = Path(folder)
        man = self.folder / MANIFEST
        if not man.is_file():
            raise FileNotFoundError(
                f"{self.folder}: not a recording (no {MANIFEST}); record one with "
                f"`streamsplat-live SOURCE --checkpoint CKPT --record {self.folder}`"
            )
        try:
            self.info = json.loads(man.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{man}: not valid JSON ({e}); the interval files in {INTERVALS}/ are still readable "
                f"but their model size is unknown; restore or delete the manifest"
            ) from e
        if self.info.get("format") != FORMAT:
            raise ValueError(f"{man}: format {self.info.get('format')!r} is not {FORMAT!r}")
        self.device = torch.device(device)
        self.paths: "OrderedDict[int, Path]" = OrderedDict()
        for p in sorted((self.folder / INTERVALS).glob("k*.safetensors")):
            try:
                self.paths[int(p.stem[1:])] = p
            except ValueError:
                continue
        if not self.paths:
            raise ValueError(
                f"{self.folder}: the recording has no intervals (status: {self.info.get('status')}, "
                f"{self.info.get('message') or 'no message'})"
            )
        self._cache: "OrderedDict[int, Tuple[DynamicGaussians, Dict[str, str]]]" = OrderedDict()
        self._cache_size = cache
        self._lock = threading.Lock()

    @property
    def keys(self) -> List[int]:
        return list(self.paths)

    @property
    def model_size(self) -> Tuple[int, int]:
        h, w = self.info["model_size"]
        return int(h), int(w)

    def load(self, k: int) -> Tuple[DynamicGaussians, Dict[str, str]]:
        from safetensors import safe_open

        with self._lock:
            if k in self._cache:
                self._cache.move_to_end(k)
                return self._cache[k]
        p = self.paths[k]
        try:
            with safe_open(str(p), framework="pt") as f:
                meta = dict(f.metadata() or {})
                tensors = {name: f.get_tensor(name) for name in f.keys()}
        except Exception as e:  # noqa: BLE001 - name the file
            raise ValueError(f"{p}: unreadable interval file ({e}); delete it to open the rest") from e
        out = (decompress_interval(tensors, meta, self.device), meta)
        with self._lock:
            self._cache[k] = out
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return out
