"""What the console scripts share.

``streamsplat-reconstruct`` and ``streamsplat-live`` subclass :class:`ModelArgs` (the model and where depth
comes from), so the flags, defaults and help read the same in both and the disparity source is built in one
place (:meth:`ModelArgs.disparity_source`); the viewer commands (``streamsplat-live``, ``streamsplat-view``)
share their logging set-up and their wait for Ctrl-C.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import torch


@dataclass(kw_only=True)  # keyword-only: each command puts its own positional input first
class ModelArgs:
    checkpoint: Path
    """our .safetensors, or the authors' stage-2 / inference checkpoint"""
    dino_weights: Optional[Path] = None
    """local dinov2_vitb14_reg4_pretrain.pth (default: $STREAMSPLAT_DINO_WEIGHTS)"""
    depth: Literal["auto", "file", "compute"] = "auto"
    """'file': precomputed disparity maps; 'compute': Depth Anything V2 on the fly; 'auto': files if present,
    else compute"""
    depth_dir: Optional[Path] = None
    """folder of <stem>_pred.png maps (default: <parent>/<name>_depth)"""
    depth_checkpoint: Optional[Path] = None
    """depth_anything_v2_<enc>.pth for --depth compute (default: $STREAMSPLAT_DA2_CKPT); ViT-S keeps up with
    30 frames/s"""
    depth_preprocess: Literal["streamsplat", "official"] = "streamsplat"
    depth_short_side: int = 518
    """Depth Anything V2 input short side, a multiple of 14 (518 as trained; lower is faster, e.g. 266 on CPU)"""

    def disparity_source(self, source: str, first_stem: Optional[str], device: torch.device):
        """The :class:`~streamsplat_ns.engine.DisparitySource` these flags ask for (``first_stem``: the source's
        first frame name, None for cameras and streams, which have no depth files)."""
        from streamsplat_ns.engine import DisparitySource

        return DisparitySource.resolve(
            source,
            first_stem,
            self.depth,
            self.depth_dir,
            self.depth_checkpoint,
            device=device,
            preprocess=self.depth_preprocess,
            short_side=self.depth_short_side,
        )


def viewer_logging() -> None:
    """INFO logs with the logger's name; the websocket server's per-connection chatter kept out."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)


def wait_until_stopped(stop: threading.Event) -> None:
    """Block until ``stop`` is set (e.g. from the viewer) or Ctrl-C is pressed."""
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass


def hand_over(running, out: Optional[list], ready: Optional[threading.Event]) -> None:
    """Callers' hooks (tests): append the running session or viewer to ``out``, then set ``ready``."""
    if out is not None:
        out.append(running)
    if ready is not None:
        ready.set()
