"""The nerfstudio methods: ``streamsplat-encoder`` (stage 1) and ``streamsplat-decoder`` (stage 2).

One literal trainer config per name, as nerfstudio's own method configs. The plain names are the paper's
recipe (288x512, 10 x 768 transformers, batch 32 / 16, AdamW 5e-4, warm-up + cosine) for a CUDA machine;
the ``-small`` names (64x112, narrow networks, CPU) train on the embedded sample in minutes. On a machine
without CUDA the plain names fall back to the ``-small`` configs, and say so: in ``ns-train --help``, in
the saved config (``pipeline.model.variant_note``) and at start-up.
"""

from __future__ import annotations

import copy

import torch
from nerfstudio.configs.base_config import LoggingConfig, MachineConfig, ViewerConfig
from nerfstudio.plugins.types import MethodSpecification

from ..nerfstudio.datamanager import StreamSplatDataManagerConfig
from ..nerfstudio.model import StreamSplatModelConfig
from ..nerfstudio.pipeline import StreamSplatPipelineConfig
from ..nerfstudio.trainer import AdamWOptimizerConfig, StreamSplatTrainerConfig, WarmupCosineSchedulerConfig
from ..networks.config import DecoderConfig, DinoConfig, EncoderConfig, UpsamplerConfig

HAS_CUDA = torch.cuda.is_available()


def adamw(lr: float = 5e-4) -> AdamWOptimizerConfig:
    """The paper's optimiser: AdamW, weight decay 0.05, betas (0.9, 0.95), gradient clipping at 1."""
    return AdamWOptimizerConfig(lr=lr, eps=1e-8, max_norm=1.0, weight_decay=0.05, betas=(0.9, 0.95))


def small_encoder() -> EncoderConfig:
    return EncoderConfig(
        image_height=64,
        image_width=112,
        width=128,
        depth=4,
        head_dim=32,
        upsampler=UpsamplerConfig(window_size=448, min_width=32, head_dim=16),
    )


def small_decoder() -> DecoderConfig:
    return DecoderConfig(
        width=128,
        depth=4,
        head_dim=32,
        head_hidden=64,
        dino=DinoConfig(embed_dim=96, depth=2, num_heads=2, img_size=56, num_register_tokens=4),
        upsampler=UpsamplerConfig(window_size=448, min_width=32, head_dim=16),
    )


def _run(steps: int, eval_every: int, eval_image_every: int, save_every: int, log_every: int) -> dict:
    """Trainer settings of a run length (shared by the stages of one size): iterations, eval, save, logs."""
    return dict(
        steps_per_eval_batch=eval_every,
        steps_per_eval_image=eval_image_every,
        steps_per_eval_all_images=1_000_000,
        steps_per_save=save_every,
        max_num_iterations=steps,
        mixed_precision=False,  # bf16 autocast lives inside the model (nerfstudio's switch is fp16)
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15, quit_on_train_completion=True),
        logging=LoggingConfig(steps_per_log=log_every),
        vis="tensorboard",
    )


def _paper_run() -> dict:
    return _run(steps=600_000, eval_every=1000, eval_image_every=2000, save_every=5000, log_every=50)


def _small_run() -> dict:
    return _run(steps=2_000, eval_every=100, eval_image_every=100, save_every=250, log_every=10)


streamsplat_encoder_config = StreamSplatTrainerConfig(
    method_name="streamsplat-encoder",
    **_paper_run(),
    pipeline=StreamSplatPipelineConfig(
        datamanager=StreamSplatDataManagerConfig(num_frames=1, batch_size=32, num_workers=8, eval_num_clips=32),
        model=StreamSplatModelConfig(
            stage="encoder",
            encoder=EncoderConfig(),
            decoder=DecoderConfig(),
            lambda_depth=0.05,
            lambda_lpips=0.05,
            lpips_start_step=50_000,
            # measured on an H100 (docs/benchmarks.md): compiled blocks lift stage 1 to >= 90 samples/s
            compile_blocks=True,
        ),
    ),
    optimizers={
        "networks": {
            "optimizer": adamw(5e-4),
            "scheduler": WarmupCosineSchedulerConfig(warmup_steps=50_000, max_steps=600_000, final_ratio=0.1),
        }
    },
    machine=MachineConfig(device_type="cuda"),
)

streamsplat_decoder_config = StreamSplatTrainerConfig(
    method_name="streamsplat-decoder",
    **_paper_run(),
    pipeline=StreamSplatPipelineConfig(
        datamanager=StreamSplatDataManagerConfig(num_frames=6, batch_size=16, num_workers=8, eval_num_clips=32),
        model=StreamSplatModelConfig(
            stage="decoder",
            encoder=EncoderConfig(),
            decoder=DecoderConfig(),
            lambda_depth=0.01,
            robust_depth_threshold=0.3,
            depth_alpha_threshold=0.1,
            lambda_mask=3.0,
            lambda_lpips=0.05,
            lpips_start_step=40_000,
            # batch 16 needs gradient checkpointing to fit (34.6 GiB); compile keeps it >= 20 samples/s
            compile_blocks=True,
            grad_checkpoint=True,
        ),
    ),
    optimizers={
        "networks": {
            "optimizer": adamw(5e-4),
            "scheduler": WarmupCosineSchedulerConfig(warmup_steps=20_000, max_steps=600_000, final_ratio=0.5),
        }
    },
    machine=MachineConfig(device_type="cuda"),
)

streamsplat_encoder_small_config = StreamSplatTrainerConfig(
    method_name="streamsplat-encoder-small",
    **_small_run(),
    pipeline=StreamSplatPipelineConfig(
        datamanager=StreamSplatDataManagerConfig(num_frames=1, batch_size=8, num_workers=0, eval_num_clips=4),
        model=StreamSplatModelConfig(
            stage="encoder",
            encoder=small_encoder(),
            decoder=small_decoder(),
            lambda_depth=0.05,
            lambda_lpips=0.05,
            lpips_start_step=2000,
            allow_random_dino=True,
        ),
    ),
    optimizers={
        "networks": {
            "optimizer": adamw(1e-3),
            "scheduler": WarmupCosineSchedulerConfig(warmup_steps=50, max_steps=5_000, final_ratio=0.1),
        }
    },
    machine=MachineConfig(device_type="cpu"),
)

streamsplat_decoder_small_config = StreamSplatTrainerConfig(
    method_name="streamsplat-decoder-small",
    **_small_run(),
    pipeline=StreamSplatPipelineConfig(
        datamanager=StreamSplatDataManagerConfig(num_frames=6, batch_size=4, num_workers=0, eval_num_clips=4),
        model=StreamSplatModelConfig(
            stage="decoder",
            encoder=small_encoder(),
            decoder=small_decoder(),
            lambda_depth=0.01,
            robust_depth_threshold=0.3,
            depth_alpha_threshold=0.1,
            lambda_mask=3.0,
            lambda_lpips=0.05,
            lpips_start_step=2000,
            allow_random_dino=True,
        ),
    ),
    optimizers={
        "networks": {
            "optimizer": adamw(1e-3),
            "scheduler": WarmupCosineSchedulerConfig(warmup_steps=50, max_steps=5_000, final_ratio=0.5),
        }
    },
    machine=MachineConfig(device_type="cpu"),
)

CONFIGS = {
    c.method_name: c
    for c in (
        streamsplat_encoder_config,
        streamsplat_decoder_config,
        streamsplat_encoder_small_config,
        streamsplat_decoder_small_config,
    )
}


def trainer_config(stage: str, small: bool) -> StreamSplatTrainerConfig:
    """A fresh copy of the literal config of ``stage`` ("encoder" / "decoder"), paper-size or small."""
    if stage not in ("encoder", "decoder"):
        raise ValueError(f"stage must be 'encoder' or 'decoder', got {stage!r}")
    return copy.deepcopy(CONFIGS[f"streamsplat-{stage}{'-small' if small else ''}"])


def scripted_config(
    stage: str,
    small: bool,
    output_dir,
    steps: int,
    experiment: str = "streamsplat",
    timestamp: str = "run",
    method_name: str = "",
) -> StreamSplatTrainerConfig:
    """A trainer config for runs driven from Python (the demo, tests, benchmarks): a fixed run folder,
    ``steps`` iterations, tensorboard logging and no periodic evaluation (callers evaluate themselves)."""
    cfg = trainer_config(stage, small)
    cfg.method_name = method_name or cfg.method_name
    cfg.output_dir, cfg.experiment_name, cfg.timestamp = output_dir, experiment, timestamp
    cfg.max_num_iterations = steps
    cfg.steps_per_eval_batch = cfg.steps_per_eval_image = cfg.steps_per_eval_all_images = 10**9
    cfg.vis = "tensorboard"
    return cfg


def for_this_machine(stage: str, has_cuda: bool = HAS_CUDA) -> StreamSplatTrainerConfig:
    """The config behind the plain name ``streamsplat-<stage>``: the paper's with CUDA, else the small one,
    marked with a ``variant_note`` that the model prints at start-up (a name never changes meaning silently)."""
    if has_cuda:
        return trainer_config(stage, small=False)
    cfg = trainer_config(stage, small=True)
    cfg.method_name = f"streamsplat-{stage}"
    cfg.pipeline.model.variant_note = (
        f"streamsplat-{stage}: no CUDA device on this machine, so this is the small CPU variant "
        f"(= streamsplat-{stage}-small: {cfg.pipeline.model.encoder.image_height}x"
        f"{cfg.pipeline.model.encoder.image_width}, narrow networks), not the paper's recipe"
    )
    return cfg


_ENC_DESC = "StreamSplat stage 1: static encoder, one RGB-D frame -> pixel-aligned 3D Gaussians"
_DEC_DESC = "StreamSplat stage 2: frozen encoder + bidirectional dynamic decoder over a pair of frames"
_CPU_NOTE = "" if HAS_CUDA else " (no CUDA here: the small CPU variant)"

streamsplat_encoder = MethodSpecification(config=for_this_machine("encoder"), description=_ENC_DESC + _CPU_NOTE)
streamsplat_decoder = MethodSpecification(config=for_this_machine("decoder"), description=_DEC_DESC + _CPU_NOTE)
streamsplat_encoder_small = MethodSpecification(
    config=streamsplat_encoder_small_config, description=_ENC_DESC + " (small, CPU)"
)
streamsplat_decoder_small = MethodSpecification(
    config=streamsplat_decoder_small_config, description=_DEC_DESC + " (small, CPU)"
)

__all__ = ["streamsplat_encoder", "streamsplat_decoder", "streamsplat_encoder_small", "streamsplat_decoder_small"]
