"""The nerfstudio methods: ``streamsplat-encoder`` (stage 1) and ``streamsplat-decoder`` (stage 2).

The plain names are the paper's recipe (288x512, 10 x 768 transformers, batch 32 / 16, AdamW 5e-4,
warm-up + cosine) on a GPU machine. On a machine without CUDA they resolve to the ``-small``
variants (64x112, narrow networks, CPU device) so that ``ns-train streamsplat-encoder`` with no
arguments trains on the embedded sample in minutes; the ``-small`` names are always available.
"""

from __future__ import annotations

import torch
from nerfstudio.configs.base_config import LoggingConfig, MachineConfig, ViewerConfig
from nerfstudio.plugins.types import MethodSpecification

from ..networks.config import DecoderConfig, DinoConfig, EncoderConfig, UpsamplerConfig
from ..nerfstudio.datamanager import StreamSplatDataManagerConfig
from ..nerfstudio.model import StreamSplatModelConfig
from ..nerfstudio.pipeline import StreamSplatPipelineConfig
from ..nerfstudio.trainer import AdamWOptimizerConfig, StreamSplatTrainerConfig, WarmupCosineSchedulerConfig

HAS_CUDA = torch.cuda.is_available()


def adamw(lr: float = 5e-4) -> AdamWOptimizerConfig:
    """The paper's optimiser: AdamW, weight decay 0.05, betas (0.9, 0.95), gradient clipping at 1."""
    return AdamWOptimizerConfig(lr=lr, eps=1e-8, max_norm=1.0, weight_decay=0.05, betas=(0.9, 0.95))


def small_encoder() -> EncoderConfig:
    return EncoderConfig(image_height=64, image_width=112, width=128, depth=4, head_dim=32,
                         upsampler=UpsamplerConfig(window_size=448, min_width=32, head_dim=16))


def small_decoder() -> DecoderConfig:
    return DecoderConfig(width=128, depth=4, head_dim=32, head_hidden=64,
                         dino=DinoConfig(embed_dim=96, depth=2, num_heads=2, img_size=56, num_register_tokens=4),
                         upsampler=UpsamplerConfig(window_size=448, min_width=32, head_dim=16))


def _trainer(method_name: str, stage: str, small: bool) -> StreamSplatTrainerConfig:
    enc = small_encoder() if small else EncoderConfig()
    stage2 = stage == "decoder"
    model = StreamSplatModelConfig(
        stage="decoder" if stage2 else "encoder", encoder=enc, decoder=small_decoder() if small else DecoderConfig(),
        lambda_depth=0.01 if stage2 else 0.05, robust_depth_threshold=0.3 if stage2 else 0.0,
        depth_alpha_threshold=0.1 if stage2 else 0.0, lambda_mask=3.0 if stage2 else 0.0, lambda_lpips=0.05,
        lpips_start_step=2000 if small else (40_000 if stage2 else 50_000), allow_random_dino=small,
        # measured on an H100 (docs/benchmarks.md): compiled blocks lift stage 1 to >= 90 samples/s; stage 2
        # at batch 16 needs gradient checkpointing to fit (34.6 GiB), and compile keeps it >= 20 samples/s
        compile_blocks=not small, grad_checkpoint=stage2 and not small)
    dm = StreamSplatDataManagerConfig(num_frames=6 if stage2 else 1,
                                      batch_size=(4 if stage2 else 8) if small else (16 if stage2 else 32),
                                      num_workers=0 if small else 8, eval_num_clips=4 if small else 32)
    if small:
        sched = WarmupCosineSchedulerConfig(warmup_steps=50, max_steps=5_000, final_ratio=0.5 if stage2 else 0.1)
        lr = 1e-3
    else:
        sched = WarmupCosineSchedulerConfig(warmup_steps=20_000 if stage2 else 50_000, max_steps=600_000,
                                            final_ratio=0.5 if stage2 else 0.1)
        lr = 5e-4
    return StreamSplatTrainerConfig(
        method_name=method_name,
        steps_per_eval_batch=100 if small else 1000,
        steps_per_eval_image=100 if small else 2000,
        steps_per_eval_all_images=1_000_000,
        steps_per_save=250 if small else 5000,
        max_num_iterations=2_000 if small else 600_000,
        mixed_precision=False,  # bf16 autocast lives inside the model (nerfstudio's switch is fp16)
        pipeline=StreamSplatPipelineConfig(datamanager=dm, model=model),
        optimizers={"networks": {"optimizer": adamw(lr), "scheduler": sched}},
        machine=MachineConfig(device_type="cuda" if HAS_CUDA and not small else "cpu"),
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15, quit_on_train_completion=True),
        logging=LoggingConfig(steps_per_log=10 if small else 50),
        vis="tensorboard",
    )


def scripted_config(stage: str, small: bool, output_dir, steps: int, experiment: str = "streamsplat",
                    timestamp: str = "run", method_name: str = "") -> StreamSplatTrainerConfig:
    """A trainer config for runs driven from Python (the demo, tests, benchmarks): a fixed run folder,
    ``steps`` iterations, tensorboard logging and no periodic evaluation (callers evaluate themselves)."""
    cfg = _trainer(method_name or f"streamsplat-{stage}{'-small' if small else ''}", stage, small)
    cfg.output_dir, cfg.experiment_name, cfg.timestamp = output_dir, experiment, timestamp
    cfg.max_num_iterations = steps
    cfg.steps_per_eval_batch = cfg.steps_per_eval_image = cfg.steps_per_eval_all_images = 10**9
    cfg.vis = "tensorboard"
    return cfg


def _spec(name: str, stage: str, small: bool, description: str) -> MethodSpecification:
    return MethodSpecification(config=_trainer(name, stage, small), description=description)


_ENC_DESC = "StreamSplat stage 1: static encoder, one RGB-D frame -> pixel-aligned 3D Gaussians"
_DEC_DESC = "StreamSplat stage 2: frozen encoder + bidirectional dynamic decoder over a pair of frames"
_CPU_NOTE = " (no CUDA here: the small CPU variant)"

streamsplat_encoder = _spec("streamsplat-encoder", "encoder", not HAS_CUDA,
                            _ENC_DESC + ("" if HAS_CUDA else _CPU_NOTE))
streamsplat_decoder = _spec("streamsplat-decoder", "decoder", not HAS_CUDA,
                            _DEC_DESC + ("" if HAS_CUDA else _CPU_NOTE))
streamsplat_encoder_small = _spec("streamsplat-encoder-small", "encoder", True, _ENC_DESC + " (small, CPU)")
streamsplat_decoder_small = _spec("streamsplat-decoder-small", "decoder", True, _DEC_DESC + " (small, CPU)")

__all__ = ["streamsplat_encoder", "streamsplat_decoder", "streamsplat_encoder_small", "streamsplat_decoder_small"]
