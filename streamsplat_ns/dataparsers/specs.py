"""Entry-point LEAF module: DataParser configs and their ``DataParserSpecification``s.

nerfstudio imports this module while ``base_datamanager`` is still half-initialised (dataparser
discovery runs inside that import), so it must import nothing of the plugin and nothing of
nerfstudio beyond the base dataparser, cameras, scene box and registry. Each config's ``_target``
is a tiny module-level class that imports the real DataParser only when ``setup()`` is called
(module-level, so a saved ``config.yml`` can name it).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Literal, Optional, Tuple, Type

from nerfstudio.data.dataparsers.base_dataparser import DataParserConfig
from nerfstudio.plugins.registry_dataparser import DataParserSpecification

#: default ``data`` value meaning "the embedded synthetic sample" (generated on demand into a cache dir)
EMBEDDED_SAMPLE = Path("<embedded-sample>")


class _LazyTarget:
    """Calling the class builds the real DataParser named by ``_parser`` (imported on first use)."""

    _parser = ""

    def __new__(cls, config, **kwargs):
        parsers = importlib.import_module("streamsplat_ns.dataparsers.parsers")
        return getattr(parsers, cls._parser)(config, **kwargs)


def _lazy_target(name: str, parser: str) -> type:
    """A module-level ``_target`` class (``name`` must be the attribute it is bound to, for config.yml)."""
    return type(name, (_LazyTarget,), {"_parser": parser, "__module__": __name__, "__qualname__": name})


_DavisTarget = _lazy_target("_DavisTarget", "DavisDataParser")
_YtvosTarget = _lazy_target("_YtvosTarget", "YtvosDataParser")
_Co3dTarget = _lazy_target("_Co3dTarget", "Co3dDataParser")
_Re10kTarget = _lazy_target("_Re10kTarget", "Re10kDataParser")
_VideoTarget = _lazy_target("_VideoTarget", "VideoDataParser")
_CombinedTarget = _lazy_target("_CombinedTarget", "CombinedDataParser")


@dataclass
class StreamSplatDataParserConfig(DataParserConfig):
    """Settings shared by every StreamSplat dataparser."""

    depth_mode: Literal["file", "zeros"] = "file"
    """'file': precomputed disparity maps are required (streamsplat-depth makes them); 'zeros': smoke tests only"""
    max_sequences: Optional[int] = None
    """use at most this many sequences per split (debugging)"""
    num_camera_sequences: int = 4
    """sequences whose frames are exposed as nerfstudio cameras (viewer, ns-render dataset); all are trained on"""
    image_height: int = 288
    image_width: int = 512
    cache_dir: Optional[Path] = None
    """where extracted display frames / video frames / the sample go (default ~/.cache/streamsplat_ns)"""


@dataclass
class DavisDataParserConfig(StreamSplatDataParserConfig):
    """DAVIS 2017 (JPEGImages + Annotations_unsupervised + ImageSets; depth in depthImages)."""

    _target: Type = field(default_factory=lambda: _DavisTarget)
    data: Path = EMBEDDED_SAMPLE
    """DAVIS root (holds JPEGImages/); the default is the embedded synthetic sample"""
    resolution: Literal["auto", "480p", "Full-Resolution"] = "auto"
    """'auto' prefers Full-Resolution (as the official provider), else 480p"""
    mask_source: Literal["unsupervised", "semi", "none"] = "unsupervised"
    train_split: str = "train"
    eval_split: str = "val"


@dataclass
class YtvosDataParserConfig(StreamSplatDataParserConfig):
    """YouTube-VOS 2018/2019 (<split>/JPEGImages, Annotations, meta.json; depth in <split>/depthImages)."""

    _target: Type = field(default_factory=lambda: _YtvosTarget)
    data: Path = Path("data/youtube-vos")
    train_split: str = "train"
    eval_split: str = "valid"


@dataclass
class Co3dDataParserConfig(StreamSplatDataParserConfig):
    """CO3Dv2 (category folders, frame/sequence annotations, many-view set lists; depth in predict_depths)."""

    _target: Type = field(default_factory=lambda: _Co3dTarget)
    data: Path = Path("data/co3d")
    categories: Optional[Tuple[str, ...]] = None
    """categories to use (default: every category folder)"""
    train_subset: str = "manyview_dev"
    eval_subset: str = "manyview_test"


@dataclass
class Re10kDataParserConfig(StreamSplatDataParserConfig):
    """RealEstate10K: pixelSplat .torch chunks + index.json (+ depth_<chunk>.pt), or original .txt + frames."""

    _target: Type = field(default_factory=lambda: _Re10kTarget)
    data: Path = Path("data/re10k")
    format: Literal["auto", "chunks", "txt"] = "auto"
    frames_dir: Optional[Path] = None
    """txt format: frames in <frames_dir>/<clip>/ (default <data>/frames/<split>)"""
    max_chunks: Optional[int] = None
    """chunks format: read only the first N chunks of index.json (debugging)"""
    train_split: str = "train"
    eval_split: str = "test"


@dataclass
class VideoDataParserConfig(StreamSplatDataParserConfig):
    """A user's own video file (mp4/mov/avi/webm) or frame folder; no poses, no calibration."""

    _target: Type = field(default_factory=lambda: _VideoTarget)
    data: Path = EMBEDDED_SAMPLE
    """video file or folder of frames; the default is one sequence of the embedded sample"""
    depth_dir: Optional[Path] = None
    """disparity maps <depth_dir>/<stem>_pred.png (default <parent>/<name>_depth)"""
    extract_frames: bool = True
    """decode a video file once to JPEGs in the cache (fast random access); False decodes clips on demand"""


@dataclass
class CombinedDataParserConfig(StreamSplatDataParserConfig):
    """Any subset of the datasets, mixed with per-dataset sampling weights (0 = unused)."""

    _target: Type = field(default_factory=lambda: _CombinedTarget)
    data: Path = EMBEDDED_SAMPLE
    """used as DAVIS root when no dataset path is given (default: the embedded sample)"""
    davis: Optional[Path] = None
    ytvos: Optional[Path] = None
    co3d: Optional[Path] = None
    re10k: Optional[Path] = None
    video: Optional[Path] = None
    davis_weight: float = 1.0
    ytvos_weight: float = 1.0
    co3d_weight: float = 1.0
    re10k_weight: float = 1.0
    video_weight: float = 1.0
    davis_resolution: Literal["auto", "480p", "Full-Resolution"] = "auto"


DATASETS: Dict[str, Type[StreamSplatDataParserConfig]] = {
    "davis": DavisDataParserConfig,
    "ytvos": YtvosDataParserConfig,
    "co3d": Co3dDataParserConfig,
    "re10k": Re10kDataParserConfig,
    "video": VideoDataParserConfig,
}
"""Dataset name -> its config: the one map from names to dataparsers (combined mixes, CLIs, comparisons)."""
_ALIASES = {"youtube-vos": "ytvos", "youtube_vos": "ytvos", "co3dv2": "co3d"}


def dataparser_config(kind: str, data: Optional[Path] = None, **kwargs) -> StreamSplatDataParserConfig:
    """The config of dataset ``kind`` (a key of ``DATASETS`` or an alias), reading ``data`` (default: its own)."""
    cls = DATASETS.get(_ALIASES.get(kind, kind))
    if cls is None:
        raise ValueError(f"unknown dataset {kind!r}: choose one of {', '.join(DATASETS)} (or {', '.join(_ALIASES)})")
    return cls(**kwargs) if data is None else cls(data=Path(data), **kwargs)


re10k = DataParserSpecification(config=Re10kDataParserConfig(), description="RealEstate10K (pixelSplat chunks or txt)")
co3dv2 = DataParserSpecification(config=Co3dDataParserConfig(), description="CO3Dv2 many-view sequences")
davis = DataParserSpecification(config=DavisDataParserConfig(), description="DAVIS 2017 (default: embedded sample)")
youtube_vos = DataParserSpecification(config=YtvosDataParserConfig(), description="YouTube-VOS")
combined = DataParserSpecification(config=CombinedDataParserConfig(), description="weighted mix of the datasets")
video = DataParserSpecification(config=VideoDataParserConfig(), description="your own video or frame folder")

#: entry-point name -> attribute (for pyproject and NERFSTUDIO_DATAPARSER_CONFIGS)
ENTRY_POINTS = {
    "re10k-data": "re10k",
    "co3dv2-data": "co3dv2",
    "davis-data": "davis",
    "youtube-vos-data": "youtube_vos",
    "streamsplat-combined-data": "combined",
    "video-data": "video",
}
