"""A DataManager that yields clips of many videos (not rays of one scene).

The training stream is a rank-sharded torch DataLoader over :class:`~streamsplat_ns.data.clips.ClipDataset`
(1 frame per item in stage 1, 6-frame windows in stage 2). ``train_dataset`` / ``eval_dataset`` are
small *display* datasets (the frames of the first few sequences as orthographic cameras with times),
which is what nerfstudio's viewer and scripts expect to find. The config subclasses
FullImageDatamanagerConfig only so that ``ns-render dataset`` accepts it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Literal, Optional, Tuple, Type, Union

import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.configs.dataparser_configs import AnnotatedDataParserUnion
from nerfstudio.data.datamanagers.base_datamanager import DataManager
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.datasets.base_dataset import InputDataset
from torch.nn import Parameter
from torch.utils.data import DataLoader

from ..data.clips import ClipDataset
from ..data.loading import WeightedSampler, collate_clips
from ..dataparsers.specs import DavisDataParserConfig
from ..rendering.camera import canonical_c2w_opengl

logger = logging.getLogger(__name__)


@dataclass
class StreamSplatDataManagerConfig(FullImageDatamanagerConfig):
    _target: Type = field(default_factory=lambda: StreamSplatDataManager)
    dataparser: AnnotatedDataParserUnion = field(default_factory=DavisDataParserConfig)
    num_frames: int = 1
    """Frames per training clip: 1 (stage 1) or 6 (stage 2: two key frames + 4 supervised in between)."""
    batch_size: int = 32
    """Clips per step and GPU (paper: 32 in stage 1, 16 in stage 2)."""
    num_workers: int = 4
    augment: bool = True
    """EDM-style augmentation (p = 0.12), identical for every frame of a clip."""
    eval_num_clips: int = 16
    """Fixed evaluation windows (evenly spread over the eval split) used by ns-eval and eval steps."""
    seed: int = 42


class StreamSplatDataManager(DataManager):
    config: StreamSplatDataManagerConfig

    def __init__(
        self,
        config: StreamSplatDataManagerConfig,
        device: Union[torch.device, str] = "cpu",
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        **kwargs,
    ) -> None:
        self.config = config
        self.device = device
        self.world_size, self.local_rank = world_size, local_rank
        self.test_mode = test_mode
        if config.data is not None:
            config.dataparser.data = config.data
        self.dataparser = config.dataparser.setup()
        self.includes_time = True
        self.train_dataparser_outputs: DataparserOutputs = self.dataparser.get_dataparser_outputs(split="train")
        split = "test" if test_mode in ("test", "inference") else "val"
        try:
            self.eval_dataparser_outputs = self.dataparser.get_dataparser_outputs(split=split)
        except Exception as e:  # noqa: BLE001 - a dataset without an eval split evaluates on train clips
            logger.warning("no '%s' split (%s); evaluating on training sequences", split, e)
            self.eval_dataparser_outputs = self.train_dataparser_outputs
        self.train_sequences = self.train_dataparser_outputs.metadata["sequences"]
        self.eval_sequences = self.eval_dataparser_outputs.metadata["sequences"]
        self.image_size: Tuple[int, int] = tuple(self.train_dataparser_outputs.metadata["image_size"])  # type: ignore
        self.train_dataset = InputDataset(self._display_outputs(self.train_dataparser_outputs))
        self.eval_dataset = InputDataset(self._display_outputs(self.eval_dataparser_outputs))
        self._train_iter: Optional[Iterator] = None
        self._eval_clips: Optional[ClipDataset] = None
        self._display_cache: Dict[Tuple[int, Tuple[int, ...]], Tuple[torch.Tensor, torch.Tensor]] = {}
        super().__init__()

    @staticmethod
    def _display_outputs(outputs: DataparserOutputs) -> DataparserOutputs:
        """The same cameras and frames, with metadata reduced to names (InputDataset deep-copies it)."""
        meta = {
            "clip_names": list(outputs.metadata.get("camera_sequences", [])),
            "image_size": outputs.metadata.get("image_size"),
        }
        return DataparserOutputs(
            image_filenames=outputs.image_filenames,
            cameras=outputs.cameras,
            mask_filenames=outputs.mask_filenames,
            scene_box=outputs.scene_box,
            metadata=meta,
        )

    # ------------------------------------------------------------------ train
    def setup_train(self) -> None:
        cfg = self.config
        self.train_clips = ClipDataset(
            self.train_sequences,
            cfg.num_frames,
            weights=self.train_dataparser_outputs.metadata.get("weights"),
            augment=cfg.augment,
            size=self.image_size,
            seed=cfg.seed + 1000 * self.local_rank,
        )
        logger.info(
            "training on %d clips of %d frames from %d sequences",
            len(self.train_clips),
            cfg.num_frames,
            len(self.train_clips.sequences),
        )

    def _new_train_iter(self, step: int) -> Iterator:
        cfg = self.config
        # endless, and a pure function of (seed, draw index): a resumed run continues the same draws
        sampler = WeightedSampler(
            self.train_clips.item_weights(), seed=cfg.seed + 7919 * self.local_rank, start=step * cfg.batch_size
        )
        loader = DataLoader(
            self.train_clips,
            batch_size=cfg.batch_size,
            sampler=sampler,
            num_workers=cfg.num_workers,
            collate_fn=collate_clips,
            drop_last=True,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=cfg.num_workers > 0,
            prefetch_factor=4 if cfg.num_workers > 0 else None,
            # its own generator: creating the iterator must not consume the global RNG
            # (that would break exact --load-dir resume)
            generator=torch.Generator().manual_seed(cfg.seed + step),
        )
        return iter(loader)

    def clip_cameras(self, batch: Dict[str, Any]) -> Cameras:
        """One canonical orthographic camera per target frame, with its normalised time."""
        times = batch["times"]
        B, V = times.shape
        H, W = self.image_size
        c2w = canonical_c2w_opengl()[None].expand(B * V, 3, 4)
        return Cameras(
            camera_to_worlds=c2w,
            fx=W / 2.0,
            fy=H / 2.0,
            cx=W / 2.0,
            cy=H / 2.0,
            width=W,
            height=H,
            camera_type=CameraType.ORTHOPHOTO,
            times=times.reshape(-1, 1).float(),
        )

    def next_train(self, step: int) -> Tuple[Cameras, Dict[str, Any]]:
        self.train_count += 1
        if self._train_iter is None:  # first call, also after --load-dir: continue the stream at `step`
            self._train_iter = self._new_train_iter(step)
        batch = next(self._train_iter)
        return self.clip_cameras(batch).to(self.device), batch

    # ------------------------------------------------------------------ eval
    def setup_eval(self) -> None:
        self._eval_clips = ClipDataset(
            self.eval_sequences,
            self.config.num_frames,
            augment=False,
            size=self.image_size,
            seed=self.config.seed,
            random_offsets=False,
        )
        n = len(self._eval_clips)
        k = max(1, min(self.config.eval_num_clips, n))
        self.eval_indices = sorted({int(round(i * (n - 1) / max(k - 1, 1))) for i in range(k)})

    def eval_batches(self) -> Iterator[Tuple[Cameras, Dict[str, Any]]]:
        """The fixed evaluation windows, one clip per batch (deterministic)."""
        assert self._eval_clips is not None
        for i in self.eval_indices:
            batch = collate_clips([self._eval_clips[i]])
            yield self.clip_cameras(batch).to(self.device), batch

    def next_eval(self, step: int) -> Tuple[Cameras, Dict[str, Any]]:
        self.eval_count += 1
        assert self._eval_clips is not None
        i = self.eval_indices[self.eval_count % len(self.eval_indices)]
        batch = collate_clips([self._eval_clips[i]])
        return self.clip_cameras(batch).to(self.device), batch

    def next_eval_image(self, step: int) -> Tuple[Cameras, Dict[str, Any]]:
        return self.next_eval(step)

    # ------------------------------------------------------------------ viewer frames
    def load_display_frames(self, clip: int, frames: Optional[List[int]]):
        """(rgb [V,3,H,W], disparity [V,1,H,W], num_frames) of a display clip, for the viewer."""
        seqs = self.train_sequences
        names = self.train_dataparser_outputs.metadata.get("camera_sequences", [])
        seq = seqs[min(max(clip, 0), max(len(names), 1) - 1)]
        if frames is None:
            return None, None, seq.num_frames
        key = (clip, tuple(frames))
        if key not in self._display_cache:
            fb = seq.load(list(frames), self.image_size)
            self._display_cache = {key: (torch.as_tensor(fb.rgb), torch.as_tensor(fb.disparity))}
        rgb, disp = self._display_cache[key]
        return rgb, disp, seq.num_frames

    # ------------------------------------------------------------------ bookkeeping
    def get_train_rays_per_batch(self) -> int:
        H, W = self.image_size
        return self.config.batch_size * self.config.num_frames * H * W

    def get_eval_rays_per_batch(self) -> int:
        H, W = self.image_size
        return self.config.num_frames * H * W

    def get_datapath(self):
        return self.config.dataparser.data

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        return {}
