"""``streamsplat-build-cuda``: compile the CUDA rasterizer ahead of time into the user cache.

Without it the kernels are compiled on first use (about a minute); with it, the first render starts at
once. The sources ship inside the package (``streamsplat_ns/rendering/csrc/``); builds go to
``$STREAMSPLAT_CUDA_CACHE_DIR``, else ``$STREAMSPLAT_CACHE_DIR/cuda`` (default ``~/.cache/streamsplat/cuda``),
keyed by sources, torch and GPU architecture::

    streamsplat-build-cuda                 # for the GPU of this machine
    streamsplat-build-cuda --arch 9.0      # for an H100/H200 from a machine without one (nvcc needed)
    streamsplat-build-cuda --check         # only say what the loader sees and why it cannot build
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

import tyro


@dataclass
class BuildCuda:
    arch: Tuple[str, ...] = ()
    """Compute capabilities to build for, e.g. 8.0 9.0 (default: this machine's GPU)."""
    check: bool = False
    """Print the loader's view (sources, cache, reason it cannot build) as JSON and exit; builds nothing."""
    verbose: bool = False
    """Show the compiler's output."""


def main(args: BuildCuda) -> int:
    from ..rendering import _cuda

    if args.check:
        info = _cuda.status()
        info["build_reason"] = _cuda.build_reason(args.arch[0] if args.arch else None)
        print(json.dumps(info, indent=1))
        return 0
    archs: List[Optional[str]] = list(args.arch) or [None]
    for arch in archs:
        reason = _cuda.build_reason(arch)
        if reason is not None:
            print(f"streamsplat-build-cuda: cannot build{f' for {arch}' if arch else ''}: {reason}", file=sys.stderr)
            return 1
        t = time.time()
        _cuda.build(arch, verbose=args.verbose)
        name = _cuda.module_name(_cuda._device_arch() if arch is None else arch.replace(".", ""))
        print(f"built {name} in {time.time() - t:.0f}s under {_cuda.cache_dir()}")
    return 0


def entrypoint() -> None:
    sys.exit(main(tyro.cli(BuildCuda)))


if __name__ == "__main__":
    entrypoint()
