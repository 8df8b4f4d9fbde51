"""Open any reconstruction output in the viewer: a recording, or a ``streamsplat-reconstruct`` folder.

* a recording (``streamsplat-live --record OUT``): its intervals, loaded lazily;
* a reconstruct folder (``OUT/reconstruction.json``): the Gaussians it saved (``"gaussians"`` in the
  manifest), else they are made once by re-running the engine on the manifest's input, checkpoint and
  disparity settings, saved as a recording in ``OUT/gaussians/`` (reused next time).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch

from .record import MANIFEST as REC_MANIFEST
from .record import RecordConfig, Recorder, Recording, is_recording
from .state import IntervalWindow, LiveInterval

log = logging.getLogger(__name__)
GAUSSIANS_DIR = "gaussians"


class RecordedInterval(LiveInterval):
    """An interval of a recording: the Gaussians are read from disk when a render needs them (LRU cache)."""

    def __init__(self, rec: Recording, k: int, frames) -> None:  # noqa: D107 - not the dataclass __init__
        self._rec = rec
        self.k, self.frames = k, tuple(frames)
        self.t_arrival, self.ready, self.timings = math.nan, None, {}

    @property
    def gaussians(self):  # type: ignore[override]
        return self._rec.load(self.k)[0]


@dataclass
class Opened:
    window: IntervalWindow
    model_size: tuple
    fps: float
    background: float
    label: str
    recording: Recording


def _frames_of(rec: Recording, k: int) -> tuple:
    from safetensors import safe_open

    with safe_open(str(rec.paths[k]), framework="pt") as f:
        meta = f.metadata() or {}
    return int(meta.get("i0", k)), int(meta.get("i1", k + 1))


def open_recording(folder: Union[str, Path], device: Union[str, torch.device] = "cpu") -> Opened:
    rec = Recording(folder, device=device)
    items = [RecordedInterval(rec, k, _frames_of(rec, k)) for k in rec.keys]
    window = IntervalWindow(len(items))
    for it in items:
        window.append(it)
    info = rec.info
    status = info.get("status", "?")
    label = f"{info.get('source', folder)}: {len(items)} intervals ({info.get('kind', 'recording')}, {status})"
    return Opened(
        window, rec.model_size, float(info.get("fps") or 30.0), float(info.get("background", 0.5)), label, rec
    )


def reconstruct_gaussians(
    out: Path, manifest: dict, device: Union[str, torch.device], *, budget_mb: float = 4096.0
) -> Path:
    """Re-run the engine on a reconstruct folder's input and save every interval as a recording."""
    from ..api import load_checkpoint
    from ..engine import DisparitySource, ReconstructionEngine, open_frames

    dev = torch.device(device)
    src = manifest.get("input_abs") or manifest.get("input")
    ckpt = manifest.get("checkpoint")
    for what, p in (("input", src), ("checkpoint", ckpt)):
        if not p or ("://" not in str(p) and not Path(str(p)).exists()):
            raise FileNotFoundError(
                f"{out / 'reconstruction.json'}: its {what} {p} is gone and the folder has no "
                f"saved Gaussians; re-run streamsplat-reconstruct (or restore {p})"
            )
    model = load_checkpoint(ckpt, device=dev, dino_weights=manifest.get("dino_weights"))
    disp = manifest.get("disparity") or {}
    if disp.get("mode") == "file":
        disparity = DisparitySource.files(disp["depth_dir"])
    elif disp.get("checkpoint"):
        disparity = DisparitySource.depth_anything(
            disp["checkpoint"], device=dev, preprocess=disp.get("preprocess", "streamsplat")
        )
    else:
        raise ValueError(
            f"{out / 'reconstruction.json'}: cannot tell where its disparity came from ({disp}); "
            f"re-run streamsplat-reconstruct"
        )
    source = open_frames(src, frame_step=int(manifest.get("frame_step") or 1), max_frames=manifest.get("max_frames"))
    engine = ReconstructionEngine(
        model, disparity=disparity, device=dev, background=float(manifest.get("background", 0.5))
    )
    folder = out / GAUSSIANS_DIR
    rec = Recorder(
        folder,
        source=str(src),
        model_size=engine.size,
        fps=source.fps or 30.0,
        config=RecordConfig(budget_mb=budget_mb, policy="stop", queue=4),
        kind="reconstruct",
        background=float(manifest.get("background", 0.5)),
    )
    status, msg = "complete", ""
    log.info("%s: no saved Gaussians; reconstructing %s once into %s", out, src, folder)
    try:
        for iv in engine.stream(source):
            rec.add(iv.k, iv.frames, iv.gaussians, iv.t_arrival, block=True)  # offline: wait for the disk
            if rec.stopped:
                break
        if source.error is not None:
            status, msg = "source-error", str(source.error)
    except BaseException as e:
        status, msg = "error", f"{type(e).__name__}: {e}"
        raise
    finally:
        rec.close(status, msg)
    return folder


def open_output(
    out: Union[str, Path], device: Union[str, torch.device] = "cpu", *, rebuild_budget_mb: float = 4096.0
) -> Opened:
    """Whatever ``out`` is (recording, reconstruct folder, or a folder holding either), opened for viewing."""
    from ..engine.outputs import MANIFEST, read_manifest

    out = Path(out)
    if not out.exists():
        raise FileNotFoundError(
            f"{out}: no such folder (give a streamsplat-reconstruct --output folder or a "
            f"streamsplat-live --record folder)"
        )
    if is_recording(out):
        return open_recording(out, device)
    if (out / MANIFEST).is_file():
        manifest = read_manifest(out)
        saved = manifest.get("gaussians")
        for cand in ([out / saved] if saved else []) + [out / GAUSSIANS_DIR]:
            if is_recording(cand):
                try:
                    return open_recording(cand, device)
                except ValueError as e:  # an empty / broken cache: rebuild below
                    log.warning("%s", e)
        if manifest.get("status") not in (None, "complete"):
            log.warning(
                "%s: the reconstruction did not complete (%s); showing what the input gives now",
                out,
                manifest.get("status"),
            )
        folder = out / GAUSSIANS_DIR
        if (folder / REC_MANIFEST).exists() or (folder / "intervals").exists():
            import shutil

            shutil.rmtree(folder)
        reconstruct_gaussians(out, manifest, device, budget_mb=rebuild_budget_mb)
        return open_recording(folder, device)
    raise FileNotFoundError(
        f"{out}: neither a recording ({REC_MANIFEST} + intervals/) nor a reconstruction "
        f"({MANIFEST}); make one with streamsplat-reconstruct or streamsplat-live --record"
    )
