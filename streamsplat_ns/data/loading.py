"""Batching clips for a DataLoader: the one collate function and the one weighted sampler.

Used by the nerfstudio DataManager, ``ClipDataset.sampler`` and the loader/training benchmarks alike.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional

import torch
from torch.utils.data import Sampler


def collate_clips(items: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Stack the tensor fields of clip dicts along a new batch dim; other fields become lists."""
    out: Dict[str, Any] = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    return out


class WeightedSampler(Sampler[int]):
    """Weighted draws with replacement, in blocks, so no huge index list is ever materialised.

    Block k is a pure function of (seed, k), so a run resumed at draw ``start`` continues with the same
    draws. Endless unless ``num_samples`` is given.
    """

    def __init__(
        self, weights: torch.Tensor, seed: int, start: int = 0, num_samples: Optional[int] = None, block: int = 4096
    ) -> None:
        self.weights = weights.double()
        self.seed, self.start, self.num_samples, self.block = seed, start, num_samples, block

    def __len__(self) -> int:
        if self.num_samples is None:
            raise TypeError("an endless WeightedSampler has no length (pass num_samples for a finite one)")
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        k, skip = divmod(self.start, self.block)
        left = self.num_samples
        while left is None or left > 0:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + k)
            draws = torch.multinomial(self.weights, self.block, replacement=True, generator=g).tolist()[skip:]
            if left is not None:
                draws = draws[:left]
                left -= len(draws)
            yield from draws
            k, skip = k + 1, 0
