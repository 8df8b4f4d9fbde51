"""One reconstruction engine for every command that reconstructs (reconstruct, export, viewer, live).

>>> from streamsplat_ns.engine import open_frames, DisparitySource, ReconstructionEngine
>>> frames = open_frames("clip.mp4", frame_step=1)
>>> engine = ReconstructionEngine(model, disparity=DisparitySource.depth_anything("depth_anything_v2_vits.pth", "cuda"))
>>> for interval in engine.stream(frames):             # in frame order, memory flat
...     rgb = engine.render(interval, [0.0, 0.25, 0.5, 0.75])   # [T, H, W, 3], one batched call
>>> engine.stats                                         # per-stage times (decode, depth, model, render, encode)
"""

from .disparity import DisparitySource
from .engine import Interval, ReconstructionEngine
from .frames import Frame, FrameSource, key_frames, locate, open_frames
from .outputs import HostFrames, PendingFrames, VideoWriter, read_manifest, write_manifest

__all__ = [
    "open_frames",
    "Frame",
    "FrameSource",
    "key_frames",
    "locate",
    "DisparitySource",
    "ReconstructionEngine",
    "Interval",
    "VideoWriter",
    "HostFrames",
    "PendingFrames",
    "write_manifest",
    "read_manifest",
]
