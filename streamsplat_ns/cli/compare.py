"""``streamsplat-compare``: StreamSplat vs per-scene nerfstudio methods vs two baselines, same frames, one table.

    streamsplat-compare --checkpoint streamsplat.safetensors --methods splatfacto nerfacto dnerf \
        --steps splatfacto=3000 nerfacto=3000 dnerf=1500 --data bikes.mp4 --output outputs/compare/bikes

See docs/compare.md for the protocol and what each method is given.
"""

from __future__ import annotations

import logging

import tyro

from streamsplat_ns.compare.run import CompareConfig, run_comparison


def entrypoint() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_comparison(tyro.cli(CompareConfig))


if __name__ == "__main__":
    entrypoint()
