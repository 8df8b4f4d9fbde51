"""streamsplat-demo: the README's main job, on any machine (CPU is fine).

Trains stage 1 (the small encoder variant) on the embedded synthetic sample through nerfstudio's
trainer, then reconstructs held-out frames and writes a picture to look at: ground truth on top,
the rendered Gaussians below, for the untrained and the trained model, with their PSNR.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro


@dataclass
class DemoConfig:
    output: Path = Path("outputs/demo")
    """Folder for the training run and the pictures."""
    steps: int = 150
    """Training steps (about 1 s each on 2 CPU cores)."""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"


def save_png(path: Path, img: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8)).save(path)


def _reconstruct(pipeline, clips):
    """Ground truth and renders of a few eval clips (their first frame), and the mean PSNR."""
    from ..losses import psnr

    model = pipeline.model
    model.eval()
    gts, preds = [], []
    with torch.no_grad():
        for _, batch in clips:
            out = model(None, batch)
            gts.append(batch["rgb"][0, 0].permute(1, 2, 0).to(model.device))
            preds.append(out["rgb"][0, 0].clamp(0, 1))
    model.train()
    gt, pred = torch.stack(gts), torch.stack(preds)
    return gt.cpu().numpy(), pred.cpu().numpy(), float(psnr(pred, gt))


def main(cfg: DemoConfig) -> Path:
    from nerfstudio.scripts.train import _set_random_seed

    from ..method_configs.methods import scripted_config

    tc = scripted_config("encoder", True, cfg.output, cfg.steps, experiment="demo")
    tc.steps_per_save = max(cfg.steps, 1)
    tc.machine.device_type = cfg.device
    tc.pipeline.datamanager.eval_num_clips = 6
    _set_random_seed(tc.machine.seed)
    tc.save_config()
    trainer = tc.setup(local_rank=0, world_size=1)
    trainer.setup()
    clips = list(trainer.pipeline.datamanager.eval_batches())
    gt, before, psnr_before = _reconstruct(trainer.pipeline, clips)
    trainer.train()
    _, after, psnr_after = _reconstruct(trainer.pipeline, clips)
    row = lambda x: np.concatenate(list(x), axis=1)  # noqa: E731
    picture = np.concatenate([row(gt), row(before), row(after)], axis=0)
    picture = picture.repeat(3, axis=0).repeat(3, axis=1)  # the small variant renders 64x112: enlarge
    cfg.output.mkdir(parents=True, exist_ok=True)
    path = cfg.output / "reconstruction.png"
    save_png(path, picture)
    run = trainer.base_dir
    print(f"\nheld-out frames, PSNR before training {psnr_before:.2f} dB -> after {cfg.steps} steps {psnr_after:.2f} dB")
    print(f"picture: {path}  (rows: ground truth, untrained, trained)")
    print(f"run: {run}\n  open the viewer:   ns-viewer --load-config {run / 'config.yml'}\n"
          f"  evaluate:          ns-eval --load-config {run / 'config.yml'} --output-path {cfg.output / 'eval.json'}\n"
          f"  stage 2 on top:    ns-train streamsplat-decoder --pipeline.model.encoder-checkpoint "
          f"{run / 'model.safetensors'}")
    return path


def entrypoint() -> None:
    main(tyro.cli(DemoConfig))


if __name__ == "__main__":
    entrypoint()
