"""DataParser implementations (imported lazily by the ``_target`` classes of :mod:`.specs`).

Every parser returns ORTHOPHOTO cameras on StreamSplat's canonical image plane (fx=W/2, fy=H/2,
cx=W/2, cy=H/2, c2w = data_formats.md §5.5), one per frame of the first ``num_camera_sequences``
sequences, with ``times`` in [0, 1] normalised over the whole sequence (``Sequence.frame_times``: the
same frame has the same time in every split; the viewer's time slider) and
``Cameras.metadata = {clip_id, frame_id}``. Training uses ``metadata["sequences"]`` (every sequence),
``metadata["weights"]`` (per-dataset mixture) and ``metadata["image_size"]``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox

from streamsplat_ns.data import co3d as co3d_reader
from streamsplat_ns.data import davis as davis_reader
from streamsplat_ns.data import re10k as re10k_reader
from streamsplat_ns.data import video as video_reader
from streamsplat_ns.data import ytvos as ytvos_reader
from streamsplat_ns.data.errors import DataError
from streamsplat_ns.data.sample import ensure_sample
from streamsplat_ns.data.sequences import FrameListSequence, Sequence
from streamsplat_ns.dataparsers.specs import (
    EMBEDDED_SAMPLE,
    Co3dDataParserConfig,
    CombinedDataParserConfig,
    DavisDataParserConfig,
    Re10kDataParserConfig,
    StreamSplatDataParserConfig,
    VideoDataParserConfig,
    YtvosDataParserConfig,
    dataparser_config,
)

log = logging.getLogger(__name__)

#: canonical camera-to-world (OpenGL): camera x -> world x, camera y -> world z (up), looks along world +y
CANONICAL_C2W = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])


def cache_root(cfg: StreamSplatDataParserConfig) -> Path:
    if cfg.cache_dir is not None:
        return Path(cfg.cache_dir)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "streamsplat_ns"


def is_eval(split: str) -> bool:
    return split in ("val", "test", "eval")


def resolve_sample(data: Path, cfg: StreamSplatDataParserConfig) -> Tuple[Path, bool]:
    """``(root, is_sample)``: the default path means the embedded sample, generated on demand."""
    if Path(data) == EMBEDDED_SAMPLE or str(data) in ("", "."):
        if str(data) in ("", ".") and (Path(data) / "JPEGImages").is_dir():
            return Path(data), False
        root = ensure_sample(None if cfg.cache_dir is None else Path(cfg.cache_dir) / "sample")
        log.info("no --data given: using the embedded synthetic sample at %s", root)
        return root, True
    return Path(data), False


def canonical_cameras(
    sizes: List[Tuple[int, int]], times: List[float], clip_ids: List[int], frame_ids: List[int]
) -> Cameras:
    n = len(sizes)
    hw = torch.tensor(sizes, dtype=torch.float32).view(n, 2)
    h, w = hw[:, :1], hw[:, 1:]
    return Cameras(
        camera_to_worlds=CANONICAL_C2W.expand(n, 3, 4).clone(),
        fx=w / 2,
        fy=h / 2,
        cx=w / 2,
        cy=h / 2,
        width=w.long(),
        height=h.long(),
        camera_type=CameraType.ORTHOPHOTO,
        times=torch.tensor(times, dtype=torch.float32),
        metadata={
            "clip_id": torch.tensor(clip_ids, dtype=torch.long).view(n, 1),
            "frame_id": torch.tensor(frame_ids, dtype=torch.long).view(n, 1),
        },
    )


def display_frames(seq: Sequence, cache: Path) -> List[Path]:
    """Image files of a sequence; frames inside chunks/videos are written once to ``cache``."""
    if seq.image_path(0) is not None:
        return [seq.image_path(i) for i in range(seq.num_frames)]
    from PIL import Image

    out = cache / "display" / seq.dataset / seq.name
    paths = [out / f"{i:05d}.jpg" for i in range(seq.num_frames)]
    if all(p.is_file() for p in paths):
        return paths
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(seq, re10k_reader.RE10KChunkSequence):
        for i, p in enumerate(paths):
            p.write_bytes(seq.encoded_frame(i))  # the original JPEG bytes, no re-encode
    elif isinstance(seq, video_reader.VideoFileSequence):
        for i, rgb in seq.iter_frames():
            Image.fromarray(rgb).save(paths[i], quality=95)
    else:
        raise DataError(f"{seq}: cannot produce display frames")
    return paths


class StreamSplatDataParser(DataParser):
    """Common output construction; subclasses implement :meth:`sequences` and :meth:`weights`."""

    config: StreamSplatDataParserConfig
    includes_time: bool = True

    def sequences(self, split: str) -> List[Sequence]:
        raise NotImplementedError

    def weights(self) -> Optional[Dict[str, float]]:
        return None

    def depth_roots(self) -> Dict[str, str]:
        return {}

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        cfg = self.config
        seqs = self.sequences(split)
        if cfg.max_sequences:
            seqs = seqs[: cfg.max_sequences]
        if not seqs:
            raise DataError(f"{type(self).__name__}: no sequences for split '{split}' in {cfg.data}")
        for s in seqs:  # fail now (missing depth, bad layout), not minutes into training
            s.check()
        images, masks, sizes, times, clip_ids, frame_ids = [], [], [], [], [], []
        for k, seq in enumerate(seqs[: max(1, cfg.num_camera_sequences)]):
            paths = display_frames(seq, cache_root(cfg))
            size = seq.native_size()
            seq_times = seq.frame_times()  # over the whole sequence: a frame's time is the same in every split
            for i, p in enumerate(paths):
                images.append(p)
                masks.append(seq.mask_path(i))
                sizes.append(size)
                times.append(float(seq_times[i]))
                clip_ids.append(k)
                frame_ids.append(i)
        mask_filenames = masks if all(m is not None and Path(m).is_file() for m in masks) else None
        cameras = canonical_cameras(sizes, times, clip_ids, frame_ids)
        metadata = {
            "sequences": seqs,
            "weights": self.weights(),
            "image_size": (cfg.image_height, cfg.image_width),
            "datasets": sorted({s.dataset for s in seqs}),
            "split": split,
            "mask_semantics": "object_ids",
            "depth_roots": self.depth_roots(),
            "camera_sequences": [s.name for s in seqs[: max(1, cfg.num_camera_sequences)]],
        }
        return DataparserOutputs(
            image_filenames=images,
            cameras=cameras,
            mask_filenames=mask_filenames,
            scene_box=SceneBox(aabb=torch.tensor([[-1.0, 0.0, -1.0], [1.0, 5.0, 1.0]])),
            metadata=metadata,
        )


class DavisDataParser(StreamSplatDataParser):
    config: DavisDataParserConfig

    def sequences(self, split: str) -> List[Sequence]:
        root, _ = resolve_sample(self.config.data, self.config)
        self.root = root
        s = self.config.eval_split if is_eval(split) else self.config.train_split
        return list(
            davis_reader.discover(root, s, self.config.resolution, self.config.mask_source, self.config.depth_mode)
        )

    def depth_roots(self) -> Dict[str, str]:
        return {"davis": str(self.root / "depthImages")}


class YtvosDataParser(StreamSplatDataParser):
    config: YtvosDataParserConfig

    def sequences(self, split: str) -> List[Sequence]:
        s = self.config.eval_split if is_eval(split) else self.config.train_split
        return list(ytvos_reader.discover(self.config.data, s, self.config.depth_mode))


class Co3dDataParser(StreamSplatDataParser):
    config: Co3dDataParserConfig

    def sequences(self, split: str) -> List[Sequence]:
        sub = self.config.eval_subset if is_eval(split) else self.config.train_subset
        cats = list(self.config.categories) if self.config.categories else None
        return list(
            co3d_reader.discover(
                self.config.data, "test" if is_eval(split) else "train", self.config.depth_mode, cats, sub
            )
        )


class Re10kDataParser(StreamSplatDataParser):
    config: Re10kDataParserConfig

    def sequences(self, split: str) -> List[Sequence]:
        s = self.config.eval_split if is_eval(split) else self.config.train_split
        return re10k_reader.discover(
            self.config.data,
            s,
            self.config.format,
            self.config.depth_mode,
            self.config.frames_dir,
            self.config.max_chunks,
        )


class VideoDataParser(StreamSplatDataParser):
    config: VideoDataParserConfig

    def sequences(self, split: str) -> List[Sequence]:
        cfg = self.config
        if Path(cfg.data) == EMBEDDED_SAMPLE:
            root, _ = resolve_sample(cfg.data, cfg)
            seq = davis_reader.discover(root, "val", mask_source="none", depth_mode=cfg.depth_mode)[0]
            return [
                FrameListSequence(
                    seq.name,
                    "video",
                    seq.images,
                    seq.depths,
                    None,
                    video_reader.NEARBY_RANGE,
                    cfg.depth_mode,
                    seq.depth_command,
                )
            ]
        extract = cache_root(cfg) / "video_frames" if cfg.extract_frames else None
        return video_reader.discover(cfg.data, cfg.depth_dir, cfg.depth_mode, extract)


class CombinedDataParser(StreamSplatDataParser):
    config: CombinedDataParserConfig

    def _parts(self):
        c = self.config
        parts = {"davis": c.davis, "ytvos": c.ytvos, "co3d": c.co3d, "re10k": c.re10k, "video": c.video}
        parts = {k: v for k, v in parts.items() if v is not None and getattr(c, f"{k}_weight") > 0}
        if not parts:
            parts = {"davis": c.data}
        return parts

    def weights(self) -> Optional[Dict[str, float]]:
        return {k: float(getattr(self.config, f"{k}_weight")) for k in self._parts()}

    def sequences(self, split: str) -> List[Sequence]:
        c = self.config
        common = dict(
            depth_mode=c.depth_mode,
            max_sequences=c.max_sequences,
            num_camera_sequences=1,
            image_height=c.image_height,
            image_width=c.image_width,
            cache_dir=c.cache_dir,
        )
        seqs: List[Sequence] = []
        per: Dict[str, List[Sequence]] = {}
        for name, path in self._parts().items():
            extra = {"resolution": c.davis_resolution} if name == "davis" else {}
            got = dataparser_config(name, Path(path), **common, **extra).setup().sequences(split)
            per[name] = got[: c.max_sequences] if c.max_sequences else got
        # interleave so the camera sequences cover every dataset
        while any(per.values()):
            for name in list(per):
                if per[name]:
                    seqs.append(per[name].pop(0))
        return seqs
