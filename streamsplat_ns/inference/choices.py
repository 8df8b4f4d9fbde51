"""Per-shape kernel choices: timed once per machine, kept on disk, read by every later process.

Several fused kernels are only faster than cuBLAS / eager PyTorch for some shapes, so the first use of a
shape times the candidates and keeps the fastest. Timing costs seconds per shape, so the decisions are
written to ``<cache_dir>/kernel_choices-<gpu>-<hash>.json`` (atomically, merged with what is already
there), keyed by the GPU name and capability, the driver, torch, CUDA and Triton versions (the file
name's hash and its ``env`` record) and by each shape. A second process reads the file and times nothing.
A file that cannot be read, has another format or another environment, or names a choice that no longer
exists is ignored with a warning and rewritten.

Tuned tables ship with the package (``streamsplat_ns/inference/tuned/*.json``, files of the same format
copied from a machine's cache): where one was written for this environment (GPU, torch, CUDA and Triton; any
driver), a fresh machine starts
from its decisions and times only the shapes it lacks (``$STREAMSPLAT_TUNED_CHOICES=0`` turns them off).

The timer is pluggable (:func:`set_timer`), so CPU tests can count timing calls.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Hashable, Optional, Tuple, Union

import torch

from ..atomic import atomic_write_text
from .options import default_cache_dir

logger = logging.getLogger(__name__)

FORMAT = 1
Timer = Callable[[Callable[[], Any]], float]  # fn -> milliseconds per call


def gpu_time_ms(fn: Callable[[], Any], iters: int = 10, warmup: int = 1) -> float:
    """Mean GPU milliseconds of ``fn`` between CUDA events on the current stream (``warmup`` untimed calls
    first; syncs that stream only).

    The one GPU timer of the project: kernel choices and every benchmark (``benchmarks/common.py``) use it.
    No device-wide synchronisation: another thread may be capturing a CUDA graph meanwhile (a kernel choice
    made on the engine thread while Depth Anything V2 captures) or running long GPU work of its own."""
    for _ in range(warmup):
        fn()
    stream = torch.cuda.current_stream()
    stream.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record(stream)
    for _ in range(iters):
        fn()
    b.record(stream)
    b.synchronize()
    return a.elapsed_time(b) / iters


def cpu_time_ms(fn: Callable[[], Any], iters: int = 3) -> float:
    """Mean wall-clock milliseconds of ``fn`` (CPU, e.g. the Triton interpreter)."""
    fn()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t) * 1e3 / iters


_TIMER: Optional[Timer] = None


def set_timer(timer: Optional[Timer]) -> None:
    """Replace the timer of every choice made from now on (None: CUDA events on GPU, wall clock on CPU)."""
    global _TIMER
    _TIMER = timer


def _default_timer(device: torch.device) -> Timer:
    if _TIMER is not None:
        return _TIMER
    return gpu_time_ms if device.type == "cuda" else cpu_time_ms


def choose_fastest(
    eager: Callable[[], Any], candidates: Dict[Hashable, Callable[[], Any]], timer: Timer, rounds: int = 3
):
    """The key of the fastest of ``candidates`` (config -> zero-argument callable), or None when ``eager()``
    is at least as fast. Each is run once first (compiles; a config that cannot launch is dropped), then
    timed ``rounds`` times in turn and judged by its best round, so a clock ramp or a neighbour on the GPU
    during one measurement does not decide the choice."""
    fns = {None: eager}
    for key, fn in candidates.items():
        try:
            fn()
        except Exception:  # e.g. a config that needs more shared memory than there is
            continue
        fns[key] = fn
    best = {key: float("inf") for key in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            best[key] = min(best[key], float(timer(fn)))
    return min(best, key=lambda k: (best[k], k is not None))


def _driver_version() -> str:
    try:
        return str(torch._C._cuda_getDriverVersion())
    except Exception:
        pass
    try:
        with open("/proc/driver/nvidia/version") as f:
            return f.readline().strip()
    except OSError:
        return "unknown"


def environment(device: torch.device) -> Dict[str, str]:
    """What a kernel choice depends on besides the shape."""
    try:
        import triton

        tv = triton.__version__
    except Exception:  # pragma: no cover
        tv = "none"
    env = {"torch": torch.__version__, "cuda": str(torch.version.cuda), "triton": tv}
    if device.type == "cuda":
        cap = torch.cuda.get_device_capability(device)
        env.update(gpu=torch.cuda.get_device_name(device), capability=f"{cap[0]}.{cap[1]}", driver=_driver_version())
    else:
        env.update(gpu=device.type, capability="", driver="")
    return env


def _to_json(v):
    return list(v) if isinstance(v, tuple) else v


def _from_json(v):
    return tuple(_from_json(x) for x in v) if isinstance(v, list) else v


TUNED_DIR = Path(__file__).resolve().parent / "tuned"
_TUNED: Dict[str, Dict[str, Any]] = {}


#: environment fields a packaged table must share with this process; the driver is left out: it changes
#: neither the code Triton generates nor the kernels cuBLAS picks, and a pool's machines differ in it most
TUNED_MATCH = ("gpu", "capability", "torch", "cuda", "triton")


def tuned_choices(env: Dict[str, str], folder: Optional[Path] = None) -> Dict[str, Any]:
    """The packaged decisions written for this environment (:data:`TUNED_MATCH`; all matching files of
    ``folder``, default :data:`TUNED_DIR`, merged); {} when none matches or ``$STREAMSPLAT_TUNED_CHOICES`` is
    ``0``. A file that cannot be read is skipped with a warning."""
    if os.environ.get("STREAMSPLAT_TUNED_CHOICES", "1") == "0":
        return {}
    folder = TUNED_DIR if folder is None else Path(folder)
    memo = json.dumps([str(folder), env], sort_keys=True)
    if memo not in _TUNED:
        out: Dict[str, Any] = {}
        for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                data = json.loads(f.read_text())
                ok = isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("choices"), dict)
            except (OSError, ValueError, UnicodeDecodeError) as e:
                ok, data = False, str(e)
            if not ok:
                msg = f"packaged kernel-choice table {f} skipped: not a format-{FORMAT} choice file"
                warnings.warn(msg, stacklevel=2)
                continue
            held = data.get("env") if isinstance(data.get("env"), dict) else {}
            if all(held.get(k) == env.get(k) for k in TUNED_MATCH):
                out.update({k: _from_json(v) for k, v in data["choices"].items()})
        _TUNED[memo] = out
    return dict(_TUNED[memo])


def _key_text(kind: str, key: Tuple) -> str:
    return kind + ":" + ",".join(str(k) for k in key)


class KernelChoices:
    """The decisions of one device, backed by one JSON file (``path`` None: kept in memory only)."""

    def __init__(self, device: torch.device, cache_dir: Optional[Path], timer: Optional[Timer] = None) -> None:
        self.device = device
        self.env = environment(device)
        digest = hashlib.sha1(json.dumps(self.env, sort_keys=True).encode()).hexdigest()[:12]
        slug = re.sub(r"[^A-Za-z0-9]+", "-", self.env["gpu"]).strip("-").lower() or "device"
        self.path = None if cache_dir is None else Path(cache_dir) / f"kernel_choices-{slug}-{digest}.json"
        self.timer = timer
        self.timed = 0  # choices timed by this process (tests assert a second process times none)
        self.seconds = 0.0  # wall clock spent timing them, compilation of the candidates included
        self.packaged = 0  # decisions available from a packaged table of this environment (tuned_choices)
        self._depth = 0  # nesting of choose() on this object (a nested choice's time is inside its parent's)
        self._mem: Dict[str, Any] = {}
        self._disk: Optional[Dict[str, Any]] = None
        self._lock = threading.RLock()  # re-entrant: timing one choice can make a nested one (MLP inside norm+MLP)

    # ------------------------------------------------------------------ file
    def _read(self, warn: bool) -> Dict[str, Any]:
        """The choices in the file, or {} (with a warning when ``warn``) if it is missing, corrupt or stale."""
        if self.path is None or not self.path.is_file():
            return {}
        why = None
        try:
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict) or not isinstance(data.get("choices"), dict):
                why = "it is not a kernel-choice file"
            elif data.get("format") != FORMAT:
                why = f"it has format {data.get('format')!r}, this version writes {FORMAT}"
            elif data.get("env") != self.env:
                why = f"it was written for {data.get('env')}, this process runs {self.env}"
        except (OSError, ValueError, UnicodeDecodeError) as e:
            why = f"it cannot be read ({type(e).__name__}: {e})"
        if why is not None:
            if warn:
                warnings.warn(
                    f"kernel-choice cache {self.path} ignored: {why}; the kernels are timed again and "
                    "the file rewritten",
                    RuntimeWarning,
                    stacklevel=4,
                )
            return {}
        return {k: _from_json(v) for k, v in data["choices"].items()}

    def _load(self) -> Dict[str, Any]:
        if self._disk is None:  # this machine's file wins over a packaged table
            tuned = tuned_choices(self.env)
            self.packaged = len(tuned)
            self._disk = {**tuned, **self._read(warn=True)}
        return self._disk

    def _save(self) -> None:
        if self.path is None:
            return
        merged = self._read(warn=False)  # another process may have added shapes meanwhile
        merged.update(self._mem)
        doc = {"format": FORMAT, "env": self.env, "choices": {k: _to_json(v) for k, v in sorted(merged.items())}}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(doc, indent=1) + "\n")
        except OSError as e:  # a read-only home must not stop inference
            logger.warning(
                "could not write the kernel-choice cache %s (%s); set $STREAMSPLAT_CACHE_DIR to a "
                "writable folder to keep the choices between runs",
                self.path,
                e,
            )
        self._disk = merged

    # ------------------------------------------------------------------ choices
    def choose(self, kind: str, key: Tuple, eager: Callable[[], Any], candidates: Dict[Hashable, Callable[[], Any]]):
        """The remembered choice for ``(kind, key)`` (None = eager, else a key of ``candidates``), timing
        the candidates on first use. During CUDA-graph capture an undecided shape runs eager (None) and is
        decided on a later uncaptured call."""
        k = _key_text(kind, key)
        with self._lock:
            if k in self._mem:
                return self._mem[k]
            disk = self._load()
            if k in disk:
                v = disk[k]
                if v is None or v in candidates:
                    self._mem[k] = v
                    return v
                warnings.warn(
                    f"kernel-choice cache {self.path}: {k} names {v}, which is no longer a candidate; timing it again",
                    RuntimeWarning,
                    stacklevel=3,
                )
            if self.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
                return None
            t = time.perf_counter()
            self._depth += 1
            try:
                v = choose_fastest(eager, candidates, self.timer or _default_timer(self.device))
            finally:
                self._depth -= 1
            if self._depth == 0:
                self.seconds += time.perf_counter() - t
            self.timed += 1
            self._mem[k] = v
            self._save()
            return v


_REGISTRY: Dict[Tuple[str, str], KernelChoices] = {}
_REG_LOCK = threading.Lock()


def get_choices(device: Union[str, torch.device], cache_dir: Optional[Union[str, os.PathLike]] = None) -> KernelChoices:
    """The process-wide :class:`KernelChoices` of ``device`` backed by ``cache_dir`` (default
    ``$STREAMSPLAT_CACHE_DIR`` or ``~/.cache/streamsplat``)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    d = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    rk = (str(device), str(d))
    with _REG_LOCK:
        if rk not in _REGISTRY:
            _REGISTRY[rk] = KernelChoices(device, d)
        return _REGISTRY[rk]


def clear_registry() -> None:
    """Forget every in-memory choice (tests; the files stay)."""
    with _REG_LOCK:
        _REGISTRY.clear()
