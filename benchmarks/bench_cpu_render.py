"""CPU torch-backend render time at the paper's size (a benchmark, not a test).

288x512, 73,728 pixel-aligned Gaussians (2 frames x one per 2x2 cell, small footprints, depths in
StreamSplat's 0.1-5 range), forward only and forward+backward, median of --reps runs.

    python3 benchmarks/bench_cpu_render.py [--threads 2] [--reps 3]
"""

import argparse
import statistics
import time

import torch

from streamsplat_ns.rendering import canonical_camera, rasterize


def scene(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    gy, gx = torch.meshgrid(torch.arange(144), torch.arange(256), indexing="ij")
    x, z = -1 + (2 * gx.flatten() + 1) / 256, 1 - (2 * gy.flatten() + 1) / 144
    frames = []
    for _ in range(2):
        n = x.numel()
        frames.append(torch.stack([x + (torch.rand(n, generator=g) - 0.5) / 256,
                                   1 / (0.2 + 9.8 * torch.rand(n, generator=g)),
                                   z + (torch.rand(n, generator=g) - 0.5) / 144], -1))
    means = torch.cat(frames)
    n = means.shape[0]
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1
    scales = 0.1 * torch.nn.functional.softplus(torch.randn(n, 3, generator=g) - 3)
    return means, quats, scales, 0.05 + 0.95 * torch.rand(n, generator=g), torch.rand(n, 3, generator=g)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    vm, K = canonical_camera(288, 512)
    tensors = scene()
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
    print(f"| 288x512, 73,728 G, torch backend, {a.threads} threads | forward {statistics.median(fwd):.2f} s | "
          f"forward+backward {statistics.median(fb):.2f} s |")


if __name__ == "__main__":
    main()
