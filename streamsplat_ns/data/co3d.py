"""CO3Dv2 reader (category/sequence folders, ``frame_annotations.jgz``, ``sequence_annotations.jgz``, set lists).

Like the official provider it uses the many-view set lists (``manyview_dev*`` for train with the
``train``+``val`` frames, ``manyview_test`` for test with its ``train`` frames), sorted by
``frame_number``. Categories without set lists fall back to every frame of ``frame_annotations.jgz``.
Masks are zeros (static scenes; the official provider ignores CO3D masks) and cameras are unused.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from streamsplat_ns.data.depth_io import co3d_depth_path, depth_command
from streamsplat_ns.data.errors import DataError
from streamsplat_ns.data.sequences import DepthMode, FrameListSequence

log = logging.getLogger(__name__)
NEARBY_RANGE = 5


def read_jgz(path: Path) -> list:
    """gzip-compressed JSON list (``frame_annotations.jgz`` / ``sequence_annotations.jgz``)."""
    try:
        with gzip.open(path, "rt", encoding="utf8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: unreadable gzip-JSON annotation file ({e}); re-download the category") from e
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of annotations")
    return data


def frames_from_annotations(cat_dir: Path) -> Dict[str, List[Tuple[int, str]]]:
    """``{sequence_name: [(frame_number, image_path), ...]}`` from ``frame_annotations.jgz`` (lenient keys)."""
    out: Dict[str, List[Tuple[int, str]]] = defaultdict(list)
    for i, fa in enumerate(read_jgz(cat_dir / "frame_annotations.jgz")):
        try:
            out[str(fa["sequence_name"])].append((int(fa["frame_number"]), str(fa["image"]["path"])))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(
                f"{cat_dir / 'frame_annotations.jgz'}: entry {i} lacks sequence_name/frame_number/image.path ({e})"
            ) from e
    return out


def sequence_names(cat_dir: Path) -> Optional[List[str]]:
    p = cat_dir / "sequence_annotations.jgz"
    if not p.is_file():
        return None
    return [str(s.get("sequence_name")) for s in read_jgz(p) if isinstance(s, dict) and "sequence_name" in s]


def _read_set_list(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable set list ({e})") from e
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected {{'train': [[seq, frame_number, image_path], ...], ...}}")
    return d


def discover(
    root: Path,
    split: str = "train",
    depth_mode: DepthMode = "file",
    categories: Optional[List[str]] = None,
    subset: Optional[str] = None,
) -> List[FrameListSequence]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: CO3Dv2 root not found")
    cats = categories or sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and ((p / "frame_annotations.jgz").is_file() or (p / "set_lists").is_dir())
    )
    if not cats:
        raise DataError(f"{root}: no CO3Dv2 categories (expected <category>/frame_annotations.jgz and set_lists/)")
    subset = subset or ("manyview_test" if split in ("test", "val") else "manyview_dev")
    lists = ["train"] if "test" in subset else ["train", "val"]
    cmd = depth_command("co3d", root, split)
    seqs: Dict[str, Dict[int, str]] = {}
    # frame numbers of each sequence over EVERY set list (all subsets, all splits): times are normalised over
    # the whole sequence, so a frame has the same time in train and test
    extent: Dict[str, Tuple[int, int]] = {}
    for cat in cats:
        cat_dir = root / cat
        all_files = sorted((cat_dir / "set_lists").glob("set_lists_*.json")) if (cat_dir / "set_lists").is_dir() else []
        files = [f for f in all_files if subset in f.name]
        entries: Dict[str, Dict[int, str]] = defaultdict(dict)
        if files:
            for f in all_files:
                d = _read_set_list(f)
                for lst, rows in d.items():
                    if not isinstance(rows, list):
                        continue
                    for row in rows:
                        if not (isinstance(row, (list, tuple)) and len(row) >= 3):
                            raise DataError(
                                f"{f}: malformed row {row!r} in '{lst}' (expected [seq, frame_number, path])"
                            )
                        name, fn = f"{cat}/{row[0]}", int(row[1])
                        lo, hi = extent.get(name, (fn, fn))
                        extent[name] = (min(lo, fn), max(hi, fn))
                        if f in files and lst in lists:
                            entries[str(row[0])][fn] = str(row[2])
        elif (cat_dir / "frame_annotations.jgz").is_file():
            log.info("CO3D %s: no set_lists matching '%s'; using all frames of frame_annotations.jgz", cat, subset)
            known = sequence_names(cat_dir)
            for s, frames in frames_from_annotations(cat_dir).items():
                if known is None or s in known:
                    entries[s].update({fn: p for fn, p in frames})
        for s, frames in entries.items():
            seqs.setdefault(f"{cat}/{s}", {}).update(frames)
    out: List[FrameListSequence] = []
    for name, frames in sorted(seqs.items()):
        order = sorted(frames)
        images = [root / frames[k] for k in order]
        depths = [co3d_depth_path(p) for p in images]
        lo, hi = extent.get(name, (order[0], order[-1]))
        out.append(
            FrameListSequence(
                name,
                "co3d",
                images,
                depths,
                None,
                NEARBY_RANGE,
                depth_mode,
                cmd,
                positions=order,
                extent=(min(lo, order[0]), max(hi, order[-1])),
            )
        )
    if not out:
        raise DataError(f"{root}: no CO3Dv2 sequences for subset '{subset}' (set lists {lists})")
    return out
