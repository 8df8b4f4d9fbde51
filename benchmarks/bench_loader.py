"""Loader throughput: stage-2 clips/s at 288x512 with N DataLoader workers (default 2).

Uses the embedded sample (DAVIS layout, 288x512 JPEGs, 16-bit depth, palette masks) so the number
is reproducible anywhere; the default EDM augmentation (p = 0.12) is on. Prints a JSON line.

    python -m benchmarks.bench_loader --workers 2 --clips 300
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--clips", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument("--data", type=Path, default=None, help="DAVIS root (default: embedded sample)")
    args = ap.parse_args()

    from streamsplat_ns.data import davis
    from streamsplat_ns.data.clips import ClipDataset
    from streamsplat_ns.data.loading import collate_clips
    from streamsplat_ns.data.sample import ensure_sample

    root = args.data or ensure_sample(Path(tempfile.gettempdir()) / "streamsplat_bench_sample")
    seqs = davis.discover(root, "all")
    ds = ClipDataset(seqs, args.frames, augment=not args.no_augment, size=(288, 512))
    torch.set_num_threads(1)
    dl = DataLoader(
        ds,
        batch_size=args.batch_size,
        sampler=ds.sampler(args.clips + 8 * args.batch_size),
        num_workers=args.workers,
        collate_fn=collate_clips,
        persistent_workers=False,
        worker_init_fn=lambda _: torch.set_num_threads(1),
    )
    it = iter(dl)
    for _ in range(2 * max(1, args.workers)):  # warm-up: worker start, first file opens
        next(it)
    n, t0 = 0, time.perf_counter()
    while n < args.clips:
        b = next(it)
        n += b["rgb"].shape[0]
    dt = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "clips_per_s": round(n / dt, 2),
                "frames_per_s": round(n * args.frames / dt, 1),
                "workers": args.workers,
                "clips": n,
                "seconds": round(dt, 2),
                "augment": not args.no_augment,
                "frames_per_clip": args.frames,
                "size": [288, 512],
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
