"""streamsplat-demo: render a small procedural dynamic Gaussian scene to PNGs (no data, no weights).

A smoke test of the install: it exercises the rasterizer, the polynomial motion and the opacity
life-cycle on whatever backend is available and writes a time strip you can look at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from ..gaussians import DynamicGaussians
from ..rendering import render_dynamic


@dataclass
class DemoConfig:
    output: Path = Path("outputs/demo")
    """Folder for the PNGs."""
    height: int = 144
    width: int = 256
    frames: int = 6
    """Number of times rendered in [0, 1]."""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"


def procedural_scene(n_side: int = 48, device="cpu") -> DynamicGaussians:
    """A textured back wall (frame 0, static) and a disc flying forward (frame 1, fading in)."""
    g = torch.Generator().manual_seed(0)
    ys, xs = torch.meshgrid(torch.linspace(1, -1, n_side), torch.linspace(-1, 1, n_side), indexing="ij")
    wall = torch.stack([xs.flatten(), torch.full_like(xs.flatten(), 0.1), ys.flatten()], -1)
    wall_col = torch.stack([0.5 + 0.5 * torch.sin(6 * xs), 0.5 + 0.5 * torch.cos(5 * ys),
                            0.5 + 0.5 * torch.sin(3 * (xs + ys))], -1).reshape(-1, 3)
    r = torch.rand(600, generator=g).sqrt() * 0.35
    th = torch.rand(600, generator=g) * 2 * math.pi
    disc = torch.stack([r * torch.cos(th), torch.full_like(r, 0.5), r * torch.sin(th)], -1)
    disc_col = torch.tensor([1.0, 0.4, 0.1]).expand(600, 3) * (0.6 + 0.4 * torch.rand(600, 1, generator=g))
    means = torch.cat([wall, disc])[None]
    n_wall, n = wall.shape[0], means.shape[1]
    motion = torch.zeros(1, n, 1, 3)
    motion[0, n_wall:, 0] = torch.tensor([0.6, 0.35, 0.2])  # moves right, nearer and up (backward from t0 = 1)
    quats = torch.zeros(1, n, 4)
    quats[..., 0] = 1
    scales = torch.cat([torch.full((n_wall, 3), 1.2 / n_side), torch.full((600, 3), 0.02)])[None]
    t0 = torch.cat([torch.zeros(n_wall), torch.ones(600)])[None]
    gamma0 = torch.cat([torch.zeros(n_wall), torch.full((600,), 8.0)])[None]
    gamma1 = torch.cat([torch.zeros(n_wall), torch.full((600,), 0.6)])[None]
    return DynamicGaussians(means=means, quats=quats, scales=scales,
                            opacities=torch.full((1, n), 0.9), colours=torch.cat([wall_col, disc_col])[None],
                            motion=motion, t0=t0, gamma0=gamma0, gamma1=gamma1).to(device)


def save_png(path: Path, img: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8)).save(path)


def main(cfg: DemoConfig) -> Path:
    cfg.output.mkdir(parents=True, exist_ok=True)
    g = procedural_scene(device=cfg.device)
    times = torch.linspace(0, 1, cfg.frames, device=cfg.device)[None]
    with torch.no_grad():
        out = render_dynamic(g, times, cfg.height, cfg.width, backgrounds=torch.full((3,), 0.5, device=cfg.device))
    rgb = out.rgb[0].cpu().numpy()
    for i in range(cfg.frames):
        save_png(cfg.output / f"frame_{i:02d}.png", rgb[i])
    strip = cfg.output / "time_strip.png"
    save_png(strip, np.concatenate(list(rgb), axis=1))
    print(f"wrote {cfg.frames} frames and {strip}")
    return strip


def entrypoint() -> None:
    main(tyro.cli(DemoConfig))


if __name__ == "__main__":
    entrypoint()
