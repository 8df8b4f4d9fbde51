"""A clip as a nerfstudio dataset: ``transforms.json`` + images + seed points, and the parser that reads it.

The files follow nerfstudio's own format (``ns-train nerfacto --data <dir>/transforms.json`` reads them with
``--pipeline.datamanager.dataparser.orientation-method none --...center-method none --...auto-scale-poses False``),
with two additions nerfstudio-data ignores: a ``time`` per frame (the clip's normalised time, D-NeRF's
convention) and the ``train_filenames`` / ``test_filenames`` split (key frames / held-out frames).
:class:`CompareDataParser` is nerfstudio-data plus those times, so time-aware methods (``dnerf``) see them.

Camera. Every frame has StreamSplat's canonical camera (``dataparsers.parsers.CANONICAL_C2W``,
fx = W/2, fy = H/2, cx = W/2, cy = H/2). Ray-based methods get it as ORTHOPHOTO, exactly ours. splatfacto
(nerfstudio 1.1.5) always rasterises pinhole, so it gets ``camera="pinhole"``: the same pose and
intrinsics as a perspective camera, which agrees with the orthographic one on the plane at depth 1.
With one fixed camera for all frames, either is a faithful "same view" for fitting the frames.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence, Type

import numpy as np
import torch
from jaxtyping import Float, UInt8
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.nerfstudio_dataparser import Nerfstudio, NerfstudioDataParserConfig

from ..atomic import atomic_write_bytes, atomic_write_text

#: OpenGL camera-to-world of StreamSplat's canonical camera (x right, looks along world +y, z up)
CANONICAL_C2W = [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
CameraKind = Literal["ortho", "pinhole"]
#: disparity d in [0, 1] (1 = near) -> depth, StreamSplat's canonical mapping (method_spec.md §2)
DEPTH_A, DEPTH_B = 0.2, 9.8


def frame_name(i: int) -> str:
    return f"images/frame_{i:05d}.png"


def write_ply_points(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Binary little-endian PLY (x y z float, red green blue uchar): the layout nerfstudio-data's
    ``ply_file_path`` expects."""
    n = int(xyz.shape[0])
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {n}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    ).encode("ascii")
    rec = np.empty(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    rec["x"], rec["y"], rec["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    rec["r"], rec["g"], rec["b"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    atomic_write_bytes(path, header + rec.tobytes())


def read_ply_points(path: Path):
    """Inverse of :func:`write_ply_points` (numpy only: open3d is not needed)."""
    data = Path(path).read_bytes()
    end = data.find(b"end_header\n")
    if end < 0 or b"element vertex" not in data[:end]:
        raise ValueError(f"{path}: not a PLY written by streamsplat-compare (no header)")
    head = data[:end].decode("ascii").splitlines()
    n = int(next(line.split()[-1] for line in head if line.startswith("element vertex")))
    rec = np.frombuffer(
        data[end + len(b"end_header\n") :],
        count=n,
        dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")],
    )
    xyz = np.stack([rec["x"], rec["y"], rec["z"]], 1).astype(np.float32)
    rgb = np.stack([rec["r"], rec["g"], rec["b"]], 1).astype(np.uint8)
    return xyz, rgb


def seed_points(
    rgb: UInt8[np.ndarray, "H W 3"], disparity: Float[np.ndarray, "H W"], camera: CameraKind, stride: int = 2
):
    """One point per ``stride`` pixels of a key frame, at the depth its disparity gives (the depth StreamSplat
    receives too), so splatfacto starts from the frame rather than from a random cube."""
    H, W = disparity.shape
    v, u = np.mgrid[0:H:stride, 0:W:stride].astype(np.float32) + 0.5
    d = np.clip(disparity[::stride, ::stride], 0.0, 1.0).astype(np.float32)
    depth = 1.0 / (DEPTH_A + DEPTH_B * d)
    xn, zn = (u - W / 2) / (W / 2), -(v - H / 2) / (H / 2)
    if camera == "pinhole":
        xn, zn = xn * depth, zn * depth
    xyz = np.stack([xn, depth, zn], -1).reshape(-1, 3)
    return xyz, rgb[::stride, ::stride].reshape(-1, 3)


def write_dataset(
    out: Path,
    frames: UInt8[np.ndarray, "N H W 3"],
    times: Sequence[float],
    train: Sequence[int],
    test: Sequence[int],
    camera: CameraKind = "ortho",
    seed: Optional[tuple] = None,
) -> Path:
    """Write ``out/transforms.json`` (+ ``out/images/``, ``out/points3D.ply``); returns the json path.

    ``train``: frame indices to fit (the key frames); ``test``: frames to render and score.
    Both camera kinds share ``images/`` (``transforms.json``: ortho, ``transforms_pinhole.json``: pinhole).
    """
    import io

    from PIL import Image

    out = Path(out)
    N, H, W, _ = frames.shape
    used = sorted(set(train) | set(test))
    for i in used:  # always rewritten: the folder may hold another clip's frames from an earlier run
        buf = io.BytesIO()
        Image.fromarray(frames[i]).save(buf, format="PNG")
        atomic_write_bytes(out / frame_name(i), buf.getvalue())
    meta: Dict = {
        "camera_model": "ORTHOPHOTO" if camera == "ortho" else "PINHOLE",
        "fl_x": W / 2.0,
        "fl_y": H / 2.0,
        "cx": W / 2.0,
        "cy": H / 2.0,
        "w": int(W),
        "h": int(H),
        "frames": [
            {
                "file_path": frame_name(i),
                "transform_matrix": CANONICAL_C2W,
                "time": float(times[i]),
                "frame_index": int(i),
            }
            for i in used
        ],
        "train_filenames": [frame_name(i) for i in train],
        "val_filenames": [frame_name(i) for i in test],
        "test_filenames": [frame_name(i) for i in test],
        "streamsplat_compare": {"camera": camera, "note": "StreamSplat's canonical camera; times in [0, 1]"},
    }
    if seed is not None:
        ply = f"points3D_{camera}.ply"
        write_ply_points(out / ply, *seed)
        meta["ply_file_path"] = ply
    path = out / ("transforms.json" if camera == "ortho" else f"transforms_{camera}.json")
    atomic_write_text(path, json.dumps(meta, indent=1))
    return path


@dataclass
class CompareDataParserConfig(NerfstudioDataParserConfig):
    """nerfstudio-data on a ``streamsplat-compare`` dataset, with per-frame times (poses used as written)."""

    _target: Type = field(default_factory=lambda: CompareDataParser)
    orientation_method: Literal["pca", "up", "vertical", "none"] = "none"
    center_method: Literal["poses", "focus", "none"] = "none"
    auto_scale_poses: bool = False
    """One fixed camera: nerfstudio's auto-scaling divides by the largest camera translation (0 here)."""
    load_3D_points: bool = True
    """Seed points for splatfacto, read without open3d."""


class CompareDataParser(Nerfstudio):
    config: CompareDataParserConfig
    includes_time: bool = True

    def _generate_dataparser_outputs(self, split: str = "train"):
        data = Path(self.config.data)
        json_path = data if data.suffix == ".json" else data / "transforms.json"
        if not json_path.is_file():
            raise FileNotFoundError(f"{json_path}: no such dataset file (streamsplat-compare writes it)")
        meta = json.loads(json_path.read_text())
        load_pts = self.config.load_3D_points
        self.config.load_3D_points = False  # nerfstudio would read the PLY with open3d; we read it below
        try:
            outputs = super()._generate_dataparser_outputs(split)
        finally:
            self.config.load_3D_points = load_pts
        by_name = {(json_path.parent / f["file_path"]).resolve(): float(f["time"]) for f in meta["frames"]}
        missing = [p for p in outputs.image_filenames if Path(p).resolve() not in by_name]
        if missing:
            raise ValueError(f"{json_path}: frames without a 'time': {missing[:3]}")
        times = torch.tensor([by_name[Path(p).resolve()] for p in outputs.image_filenames], dtype=torch.float32)
        c = outputs.cameras
        outputs.cameras = Cameras(
            camera_to_worlds=c.camera_to_worlds,
            fx=c.fx,
            fy=c.fy,
            cx=c.cx,
            cy=c.cy,
            width=c.width,
            height=c.height,
            distortion_params=c.distortion_params,
            camera_type=c.camera_type,
            times=times[:, None],
            metadata=c.metadata,
        )
        if load_pts and "ply_file_path" in meta:
            xyz, rgb = read_ply_points(json_path.parent / meta["ply_file_path"])
            outputs.metadata["points3D_xyz"] = torch.from_numpy(xyz)
            outputs.metadata["points3D_rgb"] = torch.from_numpy(rgb)
        return outputs


def camera_type_of(camera: CameraKind) -> CameraType:
    return CameraType.ORTHOPHOTO if camera == "ortho" else CameraType.PERSPECTIVE


def indices_of(outputs) -> List[int]:
    """Clip frame indices of a split's images (from their file names)."""
    return [int(Path(p).stem.split("_")[-1]) for p in outputs.image_filenames]
