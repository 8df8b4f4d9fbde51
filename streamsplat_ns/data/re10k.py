"""RealEstate10K readers: pixelSplat/MVSplat ``.torch`` chunks (lazy) and the original per-clip ``.txt`` files.

Chunks are read through :class:`~streamsplat_ns.data.safe_pickle.TorchZipReader`: discovery reads
only each chunk's small ``data.pkl`` (keys and frame counts) and a clip load fetches only the JPEG
storages it needs, so no chunk is ever held in memory whole. Depth companions
``depth_<chunk>.pt`` are pickles loaded with the restricted unpickler (plain pickle or torch zip).
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from typing import Sequence as Seq

import numpy as np

from streamsplat_ns.data.depth_io import depth_command, folder_depth_path, re10k_depth_path
from streamsplat_ns.data.errors import DataError, MissingDepthError
from streamsplat_ns.data.safe_pickle import TorchZipReader, is_torch_zip, safe_load, to_bytes, to_numpy
from streamsplat_ns.data.sequences import (
    DepthMode,
    FrameBatch,
    FrameListSequence,
    Sequence,
    decode_rgb,
    depth_to_disparity,
    list_images,
    stack_batch,
)

log = logging.getLogger(__name__)
NEARBY_RANGE = 15


# ----------------------------------------------------------------------------------------------
# Chunks
# ----------------------------------------------------------------------------------------------


def _load_chunk_examples(path: Path) -> List[Dict[str, Any]]:
    """The example list of a chunk; tensors stay lazy (StoredTensor) for zip chunks."""
    if is_torch_zip(path):
        data = TorchZipReader(path).load(materialize=False)
    else:  # legacy (pre-1.6) torch.save format: no lazy path, fall back to torch's safe loader
        import torch

        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise DataError(
                f"{path}: cannot load RE10K chunk ({type(e).__name__}: {e}); the file is truncated or "
                f"corrupt, re-download it"
            ) from e
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise DataError(f"{path}: expected a torch.save'd list of dicts (pixelSplat RE10K chunk format)")
    for i, ex in enumerate(data):
        missing = [k for k in ("key", "images") if k not in ex]
        if missing:
            raise DataError(f"{path}: example {i} lacks {missing}; not a pixelSplat RE10K chunk")
    return data


class _LRU:
    """Tiny per-process LRU (DataLoader workers each hold their own)."""

    def __init__(self, size: int):
        self.size, self.d = size, OrderedDict()

    def get(self, key, make):
        if key in self.d:
            self.d.move_to_end(key)
            return self.d[key]
        val = make()
        self.d[key] = val
        while len(self.d) > self.size:
            self.d.popitem(last=False)
        return val


_CHUNKS = _LRU(8)  # data.pkl of a chunk: small (keys, shapes, storage refs)
_DEPTHS = _LRU(1)  # depth companions are large; one per worker


def _first_difference(a: List[str], b: List[str]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def load_depth_companion(path: Path, keys: List[str]) -> List[np.ndarray]:
    """Restricted-load ``depth_<chunk>.pt`` and check its keys against the chunk's clip keys."""
    if not path.is_file():
        raise MissingDepthError(path, depth_command("re10k", path.parent.parent, path.parent.name))
    d = safe_load(path, materialize=True)
    if not isinstance(d, dict) or "key" not in d or "predicted_depth_norm" not in d:
        raise DataError(f"{path}: expected a dict with 'key' and 'predicted_depth_norm' (official RE10K depth format)")
    dkeys = [str(k) for k in d["key"]]
    if dkeys != list(keys):
        raise DataError(
            f"{path}: clip keys differ from the chunk's ({len(dkeys)} vs {len(keys)} clips, first "
            f"difference at {_first_difference(dkeys, keys)}); "
            f"the depth file belongs to another chunk, delete it and re-run streamsplat-depth"
        )
    maps = [to_numpy(x) for x in d["predicted_depth_norm"]]
    if len(maps) != len(keys):
        raise DataError(f"{path}: {len(maps)} depth stacks for {len(keys)} clips")
    return maps


def _to_unit(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    return arr.astype(np.float32)


class RE10KChunkSequence(Sequence):
    """One clip inside a pixelSplat ``.torch`` chunk."""

    def __init__(self, chunk: Path, key: str, position: int, num_frames: int, depth_mode: DepthMode = "file"):
        self.chunk, self.key, self.position, self._n = Path(chunk), key, int(position), int(num_frames)
        self._ts: Optional[np.ndarray] = None
        self.name, self.dataset, self.nearby_range, self.depth_mode = key, "re10k", NEARBY_RANGE, depth_mode
        self.depth_file = re10k_depth_path(self.chunk)

    @property
    def num_frames(self) -> int:
        return self._n

    def frame_positions(self) -> np.ndarray:
        """The clip's timestamps (µs) when the chunk has usable ones (read on first use, not at discovery):
        times follow the video's clock; otherwise frames are spaced by index."""
        if self._ts is None:
            ts = self._example().get("timestamps")
            ts = None if ts is None else to_numpy(ts).astype(np.float64).reshape(-1)
            ok = ts is not None and len(ts) == self._n and bool(np.all(np.diff(ts) > 0))
            self._ts = ts if ok else super().frame_positions()
        return self._ts

    def _example(self) -> Dict[str, Any]:
        examples = _CHUNKS.get(str(self.chunk), lambda: _load_chunk_examples(self.chunk))
        if self.position >= len(examples) or str(examples[self.position]["key"]) != self.key:
            raise DataError(
                f"{self.chunk}: clip {self.key} is not at position {self.position}; the chunk changed since discovery"
            )
        return examples[self.position]

    def encoded_frame(self, index: int) -> bytes:
        return to_bytes(self._example()["images"][index])

    def native_size(self) -> Tuple[int, int]:
        import io

        from PIL import Image

        with Image.open(io.BytesIO(self.encoded_frame(0))) as im:
            return im.size[1], im.size[0]

    def check(self) -> None:
        if self.depth_mode == "file" and not self.depth_file.is_file():
            cmd = depth_command("re10k", self.chunk.parent.parent, self.chunk.parent.name)
            raise MissingDepthError(self.depth_file, cmd)

    def load_depth_stack(self) -> np.ndarray:
        examples = _CHUNKS.get(str(self.chunk), lambda: _load_chunk_examples(self.chunk))
        keys = [str(e["key"]) for e in examples]
        maps = _DEPTHS.get(str(self.depth_file), lambda: load_depth_companion(self.depth_file, keys))
        stack = maps[self.position]
        if stack.ndim != 3 or stack.shape[0] != self._n:
            raise DataError(
                f"{self.depth_file}: clip {self.key} has depth of shape {stack.shape} but "
                f"{self._n} frames; delete the file and re-run streamsplat-depth"
            )
        return stack

    def load(self, indices: Seq[int], size=(288, 512)) -> FrameBatch:
        idx = self._check_indices(indices)
        ex = self._example()
        rgbs = [decode_rgb(to_bytes(ex["images"][i]), size, f"{self.chunk}[{self.key}][{i}]") for i in idx]
        if self.depth_mode == "zeros":
            disps = [np.zeros(size, np.float32) for _ in idx]
        else:
            stack = self.load_depth_stack()
            disps = [depth_to_disparity(_to_unit(stack[i]), size) for i in idx]
        masks = [np.zeros(size, np.float32) for _ in idx]
        return stack_batch(rgbs, disps, masks)


def read_index(stage: Path) -> Dict[str, str]:
    p = stage / "index.json"
    if not p.is_file():
        raise DataError(
            f"{p}: index.json missing. pixelSplat/MVSplat RE10K stages have <split>/index.json mapping "
            f"clip keys to chunk files (made by real_estate_10k_tools generate_index)"
        )
    try:
        idx = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{p}: unreadable index.json ({e})") from e
    if not isinstance(idx, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in idx.items()):
        raise DataError(f'{p}: expected a JSON object {{clip_key: "000123.torch"}}')
    return idx


def discover_chunks(
    root: Path,
    split: str = "train",
    depth_mode: DepthMode = "file",
    max_chunks: Optional[int] = None,
    progress: bool = True,
) -> List[RE10KChunkSequence]:
    """Clips of ``<root>/<split>/*.torch`` via ``index.json``; reads only each chunk's ``data.pkl``."""
    stage = Path(root) / split
    index = read_index(stage)
    by_chunk: Dict[str, List[str]] = {}
    for key, fname in index.items():
        by_chunk.setdefault(fname, []).append(key)
    chunk_names = sorted(by_chunk)[:max_chunks] if max_chunks else sorted(by_chunk)
    out: List[RE10KChunkSequence] = []
    it = chunk_names
    if progress and len(chunk_names) > 20:
        from tqdm import tqdm

        it = tqdm(chunk_names, desc=f"RE10K {split}: reading chunk headers", unit="chunk")
    for fname in it:
        chunk = stage / fname
        if not chunk.is_file():
            raise DataError(
                f"{stage / 'index.json'}: lists {len(by_chunk[fname])} clips in {fname}, which does not "
                f"exist; index.json does not match this copy (regenerate it)"
            )
        examples = _load_chunk_examples(chunk)
        keys_here = {str(e["key"]): i for i, e in enumerate(examples)}
        for key in by_chunk[fname]:
            if key not in keys_here:
                raise DataError(
                    f"{stage / 'index.json'}: says clip {key} is in {fname}, but that chunk holds "
                    f"{len(keys_here)} other clips; index.json is wrong for this copy (regenerate it)"
                )
        for key in sorted(by_chunk[fname], key=lambda k: keys_here[k]):
            pos = keys_here[key]
            ex = examples[pos]
            n = len(ex["images"])
            if "timestamps" in ex and len(ex["timestamps"]) != n:
                raise DataError(f"{chunk}: clip {key} has {n} images but {len(ex['timestamps'])} timestamps")
            out.append(RE10KChunkSequence(chunk, key, pos, n, depth_mode))
    return out


# ----------------------------------------------------------------------------------------------
# Original release: <root>/<split>/<clip>.txt + extracted frames
# ----------------------------------------------------------------------------------------------


def parse_camera_txt(path: Path) -> Tuple[str, np.ndarray, np.ndarray]:
    """``(url, timestamps_us [F] int64, cameras [F, 18])`` of an original RealEstate10K clip file."""
    try:
        lines = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: unreadable RE10K camera file ({e})") from e
    if not lines:
        raise DataError(f"{path}: empty RE10K camera file")
    url, rows = lines[0], []
    for ln_no, ln in enumerate(lines[1:], start=2):
        vals = ln.split()
        if len(vals) != 19:
            raise DataError(
                f"{path}:{ln_no}: expected 19 numbers (timestamp, fx fy cx cy, 0 0, 3x4 w2c), got {len(vals)}"
            )
        try:
            rows.append([float(v) for v in vals])
        except ValueError as e:
            raise DataError(f"{path}:{ln_no}: non-numeric value ({e})") from e
    if not rows:
        raise DataError(f"{path}: no frames after the URL line")
    arr = np.asarray(rows, dtype=np.float64)
    return url, arr[:, 0].astype(np.int64), arr[:, 1:].astype(np.float32)


def _txt_positions(ts: np.ndarray) -> Dict[str, Any]:
    """Frame times from the txt's timestamps (the whole clip's first and last) when they increase."""
    if len(ts) > 1 and np.all(np.diff(ts) > 0):
        return {"positions": [int(x) for x in ts], "extent": (int(ts[0]), int(ts[-1]))}
    return {}


def discover_txt(
    root: Path,
    split: str = "train",
    frames_dir: Optional[Path] = None,
    depth_dir: Optional[Path] = None,
    depth_mode: DepthMode = "file",
) -> List[FrameListSequence]:
    """Clips ``<root>/<split>/<clip>.txt`` with frames in ``<frames_dir>/<clip>/`` (default ``<root>/frames/<split>``).

    Frames are matched to the txt lines by timestamp stem (``<µs>.jpg``) when possible, else by sorted
    order if the counts agree. Depth: ``<depth_dir>/<clip>/<stem>_pred.png`` (default ``<root>/depths/<split>``).
    """
    root = Path(root)
    frames_dir = Path(frames_dir) if frames_dir else root / "frames" / split
    depth_dir = Path(depth_dir) if depth_dir else root / "depths" / split
    txts = sorted((root / split).glob("*.txt"))
    if not txts:
        raise DataError(f"{root / split}: no RealEstate10K .txt camera files")
    out: List[FrameListSequence] = []
    skipped = 0
    for t in txts:
        _url, ts, _cams = parse_camera_txt(t)
        fdir = frames_dir / t.stem
        if not fdir.is_dir():
            skipped += 1  # most clips' videos are gone from YouTube; only extracted ones are usable
            continue
        imgs = list_images(fdir)
        by_stem = {p.stem: p for p in imgs}
        if all(str(int(x)) in by_stem for x in ts):
            images = [by_stem[str(int(x))] for x in ts]
        elif len(imgs) == len(ts):
            images = imgs
        else:
            raise DataError(
                f"{fdir}: {len(imgs)} frames but {t} lists {len(ts)} timestamps and the file stems are "
                f"not the timestamps; re-extract the frames named <timestamp_us>.jpg"
            )
        depths = [folder_depth_path(depth_dir / t.stem, p.stem) for p in images]
        cmd = depth_command("re10k", root, split, "--re10k-format txt")
        out.append(
            FrameListSequence(
                t.stem, "re10k", images, depths, None, NEARBY_RANGE, depth_mode, cmd, **_txt_positions(ts)
            )
        )
    if skipped:
        log.info("RE10K txt: %d of %d clips have no extracted frames in %s (skipped)", skipped, len(txts), frames_dir)
    if not out:
        raise DataError(
            f"{frames_dir}: none of the {len(txts)} RE10K clips has extracted frames "
            f"(expected {frames_dir}/<clip_id>/<timestamp_us>.jpg)"
        )
    return out


def discover(
    root: Path,
    split: str = "train",
    fmt: str = "auto",
    depth_mode: DepthMode = "file",
    frames_dir: Optional[Path] = None,
    max_chunks: Optional[int] = None,
) -> List[Sequence]:
    root = Path(root)
    if fmt == "auto":
        fmt = "chunks" if (root / split / "index.json").is_file() or list((root / split).glob("*.torch")) else "txt"
    if fmt == "chunks":
        return list(discover_chunks(root, split, depth_mode, max_chunks))
    return list(discover_txt(root, split, frames_dir, depth_mode=depth_mode))
