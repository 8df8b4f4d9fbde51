"""DAVIS 2017 reader (``JPEGImages``/``Annotations(_unsupervised)``/``ImageSets``, 480p or Full-Resolution)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Literal, Optional

from streamsplat_ns.data.depth_io import davis_depth_path, depth_command
from streamsplat_ns.data.errors import DataError
from streamsplat_ns.data.sequences import DepthMode, FrameListSequence, list_images

log = logging.getLogger(__name__)

Resolution = Literal["auto", "480p", "Full-Resolution"]
MaskSource = Literal["unsupervised", "semi", "none"]
MASK_DIRS = {"unsupervised": "Annotations_unsupervised", "semi": "Annotations"}
NEARBY_RANGE = 5  # official nearby_range 4, raised to 5 by max(default, 5) (method_spec §6)


def resolve_resolution(root: Path, resolution: str = "auto") -> str:
    jpeg = Path(root) / "JPEGImages"
    if resolution != "auto":
        if not (jpeg / resolution).is_dir():
            raise DataError(
                f"{jpeg / resolution}: no such folder; this DAVIS copy has "
                f"{sorted(p.name for p in jpeg.iterdir()) if jpeg.is_dir() else 'no JPEGImages'}"
            )
        return resolution
    for r in ("Full-Resolution", "480p"):  # the official provider reads Full-Resolution
        if (jpeg / r).is_dir():
            return r
    raise DataError(f"{root}: not a DAVIS 2017 root (expected JPEGImages/480p or JPEGImages/Full-Resolution)")


def _split_files(root: Path) -> List[str]:
    sets = root / "ImageSets"
    return sorted(p.stem for p in sets.rglob("*.txt")) if sets.is_dir() else []


def split_names(root: Path, split: str, res: str) -> List[str]:
    """Sequence names of ``ImageSets/2017/<split>.txt`` (or ``2019``); ``all`` = every folder."""
    root = Path(root)
    if split == "all":
        return sorted(p.name for p in (root / "JPEGImages" / res).iterdir() if p.is_dir())
    for year in ("2017", "2019"):
        f = root / "ImageSets" / year / f"{split}.txt"
        if f.is_file():
            names = [ln.strip() for ln in f.read_text().splitlines() if ln.strip()]
            if not names:
                raise DataError(f"{f}: split file is empty")
            return names
    raise DataError(
        f"{root}/ImageSets/2017/{split}.txt: split file not found; use split 'all' or one of {_split_files(root)}"
    )


def discover(
    root: Path,
    split: str = "train",
    resolution: str = "auto",
    mask_source: MaskSource = "unsupervised",
    depth_mode: DepthMode = "file",
    names: Optional[List[str]] = None,
) -> List[FrameListSequence]:
    root = Path(root)
    if not (root / "JPEGImages").is_dir():
        raise DataError(
            f"{root}: not a DAVIS 2017 root (no JPEGImages/). Point --data at the folder that holds "
            f"JPEGImages/, Annotations_unsupervised/ and ImageSets/"
        )
    res = resolve_resolution(root, resolution)
    names = names or split_names(root, split, res)
    cmd = depth_command("davis", root, split, f"--resolution {res}")
    seqs: List[FrameListSequence] = []
    for name in names:
        folder = root / "JPEGImages" / res / name
        if not folder.is_dir():
            raise DataError(f"{folder}: sequence listed in the split file is missing; the download is incomplete")
        images = [p for p in list_images(folder)]
        if not images:
            raise DataError(f"{folder}: no frames")
        masks = None
        if mask_source != "none":
            mdir = root / MASK_DIRS[mask_source] / res / name
            if not mdir.is_dir():
                raise DataError(
                    f"{mdir}: mask folder missing. StreamSplat uses the unsupervised annotations "
                    f"(DAVIS-2017-Unsupervised-trainval-{res}.zip); or pass mask_source 'semi' or 'none'"
                )
            masks = [mdir / f"{p.stem}.png" for p in images]
        depths = [davis_depth_path(root, res, name, p.stem) for p in images]
        seqs.append(FrameListSequence(name, "davis", images, depths, masks, NEARBY_RANGE, depth_mode, cmd))
    return seqs
