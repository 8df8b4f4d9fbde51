"""``streamsplat-sample OUT_DIR``: write the embedded synthetic dynamic dataset (DAVIS layout)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import tyro

from streamsplat_ns.data.sample import SampleConfig, make_sample


@dataclass
class SampleArgs:
    out_dir: tyro.conf.Positional[Path]
    """output folder (becomes a DAVIS 2017 root)"""
    num_sequences: int = 4
    num_frames: int = 24
    height: int = 288
    width: int = 512
    seed: int = 0


def main(args: SampleArgs) -> Path:
    t0 = time.perf_counter()
    cfg = SampleConfig(
        num_sequences=args.num_sequences,
        num_frames=args.num_frames,
        height=args.height,
        width=args.width,
        seed=args.seed,
    )
    out = make_sample(args.out_dir, cfg, progress=True)
    print(
        f"wrote {args.num_sequences} sequences x {args.num_frames} frames ({args.height}x{args.width}) to {out} "
        f"in {time.perf_counter() - t0:.1f}s\ntrain with: ns-train streamsplat-encoder davis-data --data {out}"
    )
    return out


def entrypoint() -> None:
    main(tyro.cli(SampleArgs))


if __name__ == "__main__":
    entrypoint()
