"""Where do the demo weights lose their in-between frames: the representation or the decoder's prediction?

On the first interval of a held-out sequence (default synth-03, key frames 0 and 5) this prints:

1. the background's true shift per frame (phase correlation of frame 0 against frames 1-3);
2. the decoder's predicted velocity of the frame-0 Gaussians, in pixels over the interval, and the
   opacity life-cycle (gamma0, gamma1) it chose;
3. the in-between PSNR when only the velocities are optimised (Adam on the rendered in-between frames, every
   other output of the network fixed): what the representation can do with the same Gaussians.

    python3 experiments/demo_motion_probe.py --steps 50 --lr 5e-3      # ~5 minutes on 2 CPU cores

Session 6 (2026-12-02, the packaged weights): the background pans about -1 px per frame; the decoder predicts
+0.55 px over the interval; optimising the velocities alone takes the in-between PSNR from 23.84 to 33.74 dB
in 50 steps (linear blend: 24.85). So the decoder's motion inference, not the representation, is the limit.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def shift_px(a: np.ndarray, b: np.ndarray):
    """Integer (dx, dy) that moves ``a`` onto ``b``: the peak of the phase correlation."""
    f = np.fft.fft2(a) * np.conj(np.fft.fft2(b))
    r = np.fft.ifft2(f / (np.abs(f) + 1e-9)).real
    dy, dx = np.unravel_index(r.argmax(), r.shape)
    h, w = r.shape
    dy, dx = (dy - h if dy > h // 2 else dy), (dx - w if dx > w // 2 else dx)
    return -int(dx), -int(dy)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", type=Path, default=None, help="stage-2 checkpoint (default: the packaged demo)")
    ap.add_argument("--sequence", default="synth-03")
    ap.add_argument("--gap", type=int, default=5, help="key-frame gap of the interval")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--lr", type=float, default=5e-3, help="Adam step on the velocities (canonical units)")
    ap.add_argument("--sample-root", type=Path, default=None, help="a generated sample folder (default: embedded)")
    ap.add_argument("--coarse", type=float, default=0.0, help="add this weight of losses.coarse_mse to the MSE")
    a = ap.parse_args()

    from streamsplat_ns.assets import demo_weights_path
    from streamsplat_ns.cli.demo import load_sample_sequence
    from streamsplat_ns.data.sample import ensure_sample
    from streamsplat_ns.engine import ReconstructionEngine
    from streamsplat_ns.inference import InferenceOptions
    from streamsplat_ns.losses import coarse_mse
    from streamsplat_ns.networks.checkpoint import load_checkpoint
    from streamsplat_ns.rendering import render_canonical

    model = load_checkpoint(a.weights or demo_weights_path(), "cpu", allow_random_dino=True)
    eng = ReconstructionEngine(model, options=InferenceOptions.eager(), device=torch.device("cpu"))
    h, w = eng.size
    rgb, disp = load_sample_sequence(a.sample_root or ensure_sample(), a.sequence, eng.size)
    g0 = eng.reconstruct_clip(rgb[: a.gap + 1], disp[: a.gap + 1], a.gap)[0].gaussians
    n = g0.means.shape[1] // 2  # frame-0 Gaussians first, one per pixel
    # canonical x units per pixel column, from the frame-0 Gaussians' positions
    sx = np.polyfit(np.arange(w), g0.means[0, :n, 0].reshape(h, w).mean(0).numpy(), 1)[0]

    grey = [f.mean(0).numpy() for f in rgb]
    print("background shift of frame k from frame 0 (px):", {k: shift_px(grey[0], grey[k]) for k in (1, 2, 3)})
    vx = (g0.motion[0, :n, 0, 0] / sx).numpy()
    print(
        f"decoder velocity of frame-0 Gaussians, x px over the interval: median {np.median(vx):.2f} "
        f"(10-90%: {np.quantile(vx, 0.1):.2f} .. {np.quantile(vx, 0.9):.2f}); life-cycle median gamma0 "
        f"{g0.gamma0[0].median():.2f}, gamma1 {g0.gamma1[0].median():.2f}"
    )

    times = torch.arange(1, a.gap) / a.gap
    gt = rgb[1 : a.gap].permute(0, 2, 3, 1)
    blend = torch.stack([(1 - t) * rgb[0] + t * rgb[a.gap] for t in times]).permute(0, 2, 3, 1)
    print(f"in-between frames: linear blend {psnr(blend, gt):.2f} dB")
    motion = g0.motion.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([motion], lr=a.lr)
    t0 = time.time()
    for it in range(a.steps + 1):
        out = render_canonical(dataclasses.replace(g0, motion=motion), times, h, w).rgb[0]
        if it % 10 == 0 or it == a.steps:
            med = float((motion.detach()[0, :n, 0, 0] / sx).median())
            print(
                f"  step {it:3d}: {psnr(out.detach(), gt):.2f} dB, median x velocity {med:.2f} px ({time.time() - t0:.0f} s)"
            )
        if it == a.steps:
            break
        loss = F.mse_loss(out, gt) + (a.coarse * coarse_mse(out, gt) if a.coarse else 0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()


if __name__ == "__main__":
    main()
