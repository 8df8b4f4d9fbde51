"""Clip sampling over many sequences (method_spec §6).

Stage 1: one frame per item. Stage 2: an anchor frame plus ``V-1`` sorted distinct offsets drawn
from ``1..R`` (R per dataset: RE10K 15, others 5), clipped at the sequence end; ``times`` are the
offsets divided by the last one, so they run from 0 to 1. Items are indexed by (sequence, anchor)
like the official providers; optional per-dataset ``weights`` re-balance the mixture through
:meth:`ClipDataset.sampler`. Randomness is a pure function of ``(seed, epoch, index)``.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Dict, List, Mapping, Optional, Tuple, Union
from typing import Sequence as Seq

import numpy as np
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from streamsplat_ns.data.augment import AugmentConfig, augment_clip
from streamsplat_ns.data.errors import DataError
from streamsplat_ns.data.sequences import Sequence

log = logging.getLogger(__name__)

#: stage-2 offset range R per dataset (official nearby_range, raised to at least 5)
DEFAULT_RANGES: Dict[str, int] = {"re10k": 15, "co3d": 5, "davis": 5, "ytvos": 5, "video": 5}


def sample_offsets(rng: np.random.Generator, num_frames: int, max_offset: int, random: bool = True) -> np.ndarray:
    """Offsets ``[0, o1 < ... < o_{V-1}]`` with ``o_i`` in ``1..max_offset`` (needs ``max_offset >= V-1``)."""
    if num_frames == 1:
        return np.zeros(1, np.int64)
    if max_offset < num_frames - 1:
        raise ValueError(f"offset range {max_offset} too small for {num_frames} distinct frames")
    if random:
        offs = np.sort(rng.choice(np.arange(1, max_offset + 1), size=num_frames - 1, replace=False))
    else:  # evaluation: evenly spaced over the range
        offs = np.round(np.linspace(0, max_offset, num_frames)).astype(np.int64)[1:]
    return np.concatenate([[0], offs]).astype(np.int64)


class ClipDataset(Dataset):
    """Clips of ``num_frames`` frames from ``sequences`` (``1`` = stage 1, ``6`` = stage 2)."""

    def __init__(
        self,
        sequences: Seq[Sequence],
        num_frames: int,
        weights: Optional[Mapping[str, float]] = None,
        augment: Union[bool, AugmentConfig] = True,
        size: Tuple[int, int] = (288, 512),
        seed: int = 0,
        random_offsets: bool = True,
        ranges: Optional[Mapping[str, int]] = None,
        max_skips: int = 16,
    ):
        if num_frames < 1:
            raise ValueError("num_frames must be >= 1")
        self.num_frames, self.size, self.seed = int(num_frames), tuple(size), int(seed)
        self.random_offsets, self.max_skips = random_offsets, max_skips
        self.augment = AugmentConfig() if augment is True else (augment or None)
        self.ranges = dict(DEFAULT_RANGES, **(ranges or {}))
        self.epoch = 0
        self.skipped = 0  # bad items skipped in this process (each DataLoader worker counts its own)
        self.sequences: List[Sequence] = []
        seq_ids, anchors, dropped = [], [], []
        for seq in sequences:
            n = seq.num_frames
            if n < self.num_frames:
                dropped.append(f"{seq.dataset}/{seq.name} ({n} frames)")
                continue
            if self.num_frames > 1 and self.range_of(seq) < self.num_frames - 1:
                raise ValueError(f"offset range {self.range_of(seq)} of {seq.dataset} < {self.num_frames - 1}")
            k = len(self.sequences)
            self.sequences.append(seq)
            count = n - self.num_frames + 1  # anchors that leave room for V-1 distinct later frames
            seq_ids.append(np.full(count, k, np.int32))
            anchors.append(np.arange(count, dtype=np.int32))
        if dropped:
            log.warning(
                "ClipDataset: %d sequences shorter than %d frames skipped: %s",
                len(dropped),
                self.num_frames,
                ", ".join(dropped[:5]) + (" ..." if len(dropped) > 5 else ""),
            )
        if not self.sequences:
            raise DataError(f"no sequence has at least {self.num_frames} frames")
        self._seq = np.concatenate(seq_ids)
        self._anchor = np.concatenate(anchors)
        self.datasets = [s.dataset for s in self.sequences]
        self.weights = dict(weights) if weights else None
        if self.weights:
            unknown = set(self.weights) - set(self.datasets)
            if unknown:
                log.warning("ClipDataset: weights given for datasets with no sequences: %s", sorted(unknown))

    def range_of(self, seq: Sequence) -> int:
        return int(self.ranges.get(seq.dataset, getattr(seq, "nearby_range", 5)))

    def __len__(self) -> int:
        return int(self._seq.shape[0])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def item_weights(self) -> torch.Tensor:
        """Per-item sampling weights: each dataset gets its share ``w_d / sum(w)`` of the draws."""
        ds = np.asarray([self.datasets[k] for k in range(len(self.sequences))])[self._seq]
        counts = Counter(ds.tolist())
        w = np.ones(len(self), np.float64)
        if self.weights:
            for d, c in counts.items():
                w[ds == d] = float(self.weights.get(d, 0.0)) / c
        if w.sum() <= 0:
            raise ValueError(f"all dataset weights are zero: {self.weights}")
        return torch.from_numpy(w)

    def sampler(self, num_samples: Optional[int] = None, seed: Optional[int] = None) -> WeightedRandomSampler:
        g = torch.Generator().manual_seed(self.seed if seed is None else seed)
        return WeightedRandomSampler(self.item_weights(), num_samples or len(self), replacement=True, generator=g)

    def clip_indices(self, index: int, rng: np.random.Generator) -> Tuple[Sequence, np.ndarray, np.ndarray]:
        seq = self.sequences[int(self._seq[index])]
        anchor = int(self._anchor[index])
        max_off = min(self.range_of(seq), seq.num_frames - 1 - anchor)
        offs = sample_offsets(rng, self.num_frames, max_off, self.random_offsets)
        times = offs / max(int(offs[-1]), 1)
        return seq, anchor + offs, times.astype(np.float32)

    def __getitem__(self, index: int) -> Dict[str, object]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index) % max(len(self), 1)])
        last: Optional[Exception] = None
        for _attempt in range(self.max_skips + 1):
            seq, frame_ids, times = self.clip_indices(int(index), rng)
            try:
                batch = seq.load(frame_ids.tolist(), self.size)
            except DataError as e:  # bad input: log, count, and draw another clip
                self.skipped += 1
                last = e
                log.warning(
                    "skipping bad clip %s/%s frames %s (%d skipped so far): %s",
                    seq.dataset,
                    seq.name,
                    frame_ids.tolist(),
                    self.skipped,
                    e,
                )
                index = int(rng.integers(len(self)))
                continue
            rgb, disp, mask = batch.rgb, batch.disparity, batch.mask
            if self.augment is not None:
                rgb, disp, mask, _ = augment_clip(rgb, disp, mask, rng, self.augment)
            return {
                "rgb": rgb,
                "disparity": disp,
                "mask": mask,
                "times": torch.from_numpy(times),
                "sequence": seq.name,
                "dataset": seq.dataset,
                "frame_ids": torch.from_numpy(frame_ids),
            }
        raise DataError(f"{self.max_skips + 1} consecutive bad clips; last error: {last}")
