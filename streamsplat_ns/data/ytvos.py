"""YouTube-VOS reader (``<split>/JPEGImages``, ``Annotations``, ``meta.json``; 6 fps folders)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import List, Optional

from streamsplat_ns.data.depth_io import depth_command, ytvos_depth_path
from streamsplat_ns.data.errors import DataError
from streamsplat_ns.data.sequences import DepthMode, FrameListSequence, list_images, stem_numbers

log = logging.getLogger(__name__)
NEARBY_RANGE = 5  # official 3, raised to 5; one step = 5 source frames (6 fps folders)


def read_meta(path: Path) -> dict:
    try:
        meta = json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise DataError(f"{path}: meta.json missing; the YouTube-VOS split folder is incomplete") from e
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable meta.json ({e})") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
        raise DataError(f'{path}: expected {{"videos": {{<video_id>: {{"objects": ...}}}}}}')
    return meta


def discover(
    root: Path, split: str = "train", depth_mode: DepthMode = "file", names: Optional[List[str]] = None
) -> List[FrameListSequence]:
    """Videos of ``meta.json`` that have frames. Train masks per frame; ``valid`` masks are all ones
    (official: only first-appearance frames are annotated there)."""
    root = Path(root)
    sdir = root / split
    if not (sdir / "JPEGImages").is_dir():
        raise DataError(f"{sdir}: not a YouTube-VOS split folder (expected {sdir}/JPEGImages and meta.json)")
    meta = read_meta(sdir / "meta.json")
    vids = names or sorted(meta["videos"].keys())
    cmd = depth_command("ytvos", root, split)
    seqs: List[FrameListSequence] = []
    for vid in vids:
        folder = sdir / "JPEGImages" / vid
        if not folder.is_dir():
            raise DataError(f"{folder}: video listed in {sdir / 'meta.json'} has no frame folder")
        images = list_images(folder)
        if not images:
            raise DataError(f"{folder}: no frames")
        if split == "train":
            masks = [sdir / "Annotations" / vid / f"{p.stem}.png" for p in images]
            fill = 0.0
        else:
            masks, fill = None, 1.0
        depths = [ytvos_depth_path(root, split, vid, p.stem) for p in images]
        seqs.append(
            FrameListSequence(
                vid,
                "ytvos",
                images,
                depths,
                masks,
                NEARBY_RANGE,
                depth_mode,
                cmd,
                mask_fill=fill,
                positions=stem_numbers(images),
            )
        )
    return seqs
