"""CPU torch-backend render time at the paper's size (a benchmark, not a test).

288x512, 73,728 pixel-aligned Gaussians (``benchmarks.common.small_world_scene``: 2 frames x one per 2x2 cell,
small footprints, depths in StreamSplat's 0.1-5 range), forward only and forward+backward, median of --reps runs.

    python -m benchmarks.bench_cpu_render [--threads 2] [--reps 3]
"""

import argparse
import statistics
import time

import torch

from streamsplat_ns.rendering import canonical_camera, rasterize

from .common import small_world_scene


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    vm, K = canonical_camera(288, 512)
    tensors = small_world_scene()
    fwd, fb = [], []
    for _ in range(a.reps):
        t = time.perf_counter()
        with torch.no_grad():
            rasterize(*tensors, vm, K, 512, 288, backend="torch")
        fwd.append(time.perf_counter() - t)
        ps = [x.clone().requires_grad_(True) for x in tensors]
        t = time.perf_counter()
        out = rasterize(*ps, vm, K, 512, 288, backend="torch")
        (out.rgb.sum() + out.depth.sum()).backward()
        fb.append(time.perf_counter() - t)
    print(
        f"| 288x512, 73,728 G, torch backend, {a.threads} threads | forward {statistics.median(fwd):.2f} s | "
        f"forward+backward {statistics.median(fb):.2f} s |"
    )


if __name__ == "__main__":
    main()
