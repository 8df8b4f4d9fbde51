"""Per-scene nerfstudio methods on a clip: train on the key frames, render the held-out frames.

Each method is nerfstudio's own definition (``nerfstudio.configs.method_configs``), trained in this
process through nerfstudio's ``Trainer`` on the dataset :mod:`.nsdata` writes. Changes, all because the
clip has one fixed camera and no network:

* the dataparser is :class:`~.nsdata.CompareDataParser` (nerfstudio-data + per-frame times);
* camera pose optimisation is off (the camera is known and fixed; a learnt pose offset per frame would
  soak up the scene's motion);
* ``ParallelDataManager`` (nerfacto) becomes ``VanillaDataManager`` with the same rays per batch (same
  sampling, no worker processes to spawn inside the timed region);
* no evaluation or viewer during training (we score afterwards, identically for every method);
* the models' own LPIPS-AlexNet metric object (built at construction, downloading AlexNet) is replaced by a
  guard that raises if used, unless AlexNet's weights are already in torch's cache: we never call it.

After training, the run's saved checkpoint is loaded back into the pipeline with
:func:`.ckpt.load_nerfstudio_checkpoint` (weights-only, explicit allow-list) and the held-out cameras are
rendered from it, so every score comes from the checkpoint on disk. (:func:`.ckpt.eval_setup` rebuilds a
pipeline from ``config.yml`` the same way, for runs made by ``ns-train``.)
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import Tensor

from .protocol import Clip

log = logging.getLogger(__name__)

#: methods whose model consumes ``Cameras.times`` (the rest treat the clip as a static scene)
TIME_AWARE = {"dnerf"}
#: methods nerfstudio 1.1.5 can only run on CUDA (splatfacto: gsplat rasterisation, hard-coded ``.cuda()``)
CUDA_ONLY = {"splatfacto", "splatfacto-big", "splatfacto-mcmc"}
#: splatfacto rasterises pinhole only: give it the canonical camera as a perspective one (see nsdata)
PINHOLE = CUDA_ONLY


@dataclass
class MethodRun:
    """What one method produced: renders of the held-out frames and timings (or why there are none)."""

    name: str
    kind: str
    status: str = "ok"
    preds: Optional[Tensor] = None  # [T, H, W, 3] in clip.held_out order, CPU float
    timings: Dict[str, float] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    details: Dict[str, object] = field(default_factory=dict)


def available_methods() -> List[str]:
    from nerfstudio.configs.method_configs import method_configs

    return sorted(method_configs)


@contextlib.contextmanager
def offline_lpips():
    """Let nerfstudio models be built offline: torchmetrics' LPIPS-AlexNet downloads AlexNet at construction.
    With the weights already in torch's hub cache nothing changes; otherwise a guard stands in that raises
    if anything calls it (streamsplat-compare computes its own metrics and never does)."""
    import torchmetrics.image.lpip as tm_lpip

    hub = Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth"
    if hub.is_file():
        yield False
        return

    class _NoAlexNetLPIPS(torch.nn.Module):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__()

        def forward(self, *args, **kwargs):
            raise RuntimeError(
                f"nerfstudio's LPIPS-AlexNet metric needs {hub} (not downloaded here); "
                "streamsplat-compare reports LPIPS-VGG from local weights instead"
            )

    original = tm_lpip.LearnedPerceptualImagePatchSimilarity
    tm_lpip.LearnedPerceptualImagePatchSimilarity = _NoAlexNetLPIPS
    try:
        yield True
    finally:
        tm_lpip.LearnedPerceptualImagePatchSimilarity = original


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def warm_up_gsplat(device: str) -> float:
    """Compile / load gsplat's CUDA kernels (JIT: minutes on first use) and splatfacto's compiled view-matrix
    helper outside the timed region."""
    t = time.perf_counter()
    import gsplat

    means = torch.zeros(1, 3, device=device)
    means[:, 2] = 2.0
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]], device=device)
    K = torch.tensor([[[8.0, 0, 8], [0, 8.0, 8], [0, 0, 1]]], device=device)
    gsplat.rasterization(
        means,
        quats,
        torch.full((1, 3), 0.1, device=device),
        torch.ones(1, device=device),
        torch.ones(1, 3, device=device),
        torch.eye(4, device=device)[None],
        K,
        16,
        16,
    )
    from nerfstudio.models.splatfacto import get_viewmat  # torch.compile'd: compiles on its first call

    get_viewmat(torch.eye(4, device=device)[None, :3])
    _sync(device)
    return time.perf_counter() - t


def build_config(
    name: str,
    dataset_json: Path,
    steps: int,
    device: str,
    output_dir: Path,
    experiment: str,
    rays_per_batch: Optional[int] = None,
    tiny: bool = False,
    scale_schedules: bool = True,
):
    """nerfstudio's TrainerConfig for ``name``, adapted to the clip (see the module docstring)."""
    from nerfstudio.configs.method_configs import method_configs
    from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
    from nerfstudio.data.datamanagers.parallel_datamanager import ParallelDataManagerConfig

    from .nsdata import CompareDataParserConfig

    if name not in method_configs:
        raise ValueError(
            f"--methods {name!r}: not a nerfstudio method here; available: {', '.join(available_methods())}"
        )
    cfg = copy.deepcopy(method_configs[name])
    dm = cfg.pipeline.datamanager
    parser = CompareDataParserConfig(data=Path(dataset_json))
    if isinstance(dm, ParallelDataManagerConfig):
        dm = VanillaDataManagerConfig(
            dataparser=parser,
            train_num_rays_per_batch=dm.train_num_rays_per_batch,
            eval_num_rays_per_batch=dm.eval_num_rays_per_batch,
        )
        cfg.pipeline.datamanager = dm
    dm.dataparser = parser
    dm.data = None
    if rays_per_batch is not None and hasattr(dm, "train_num_rays_per_batch"):
        dm.train_num_rays_per_batch = int(rays_per_batch)
    model = cfg.pipeline.model
    if hasattr(model, "camera_optimizer") and model.camera_optimizer is not None:
        model.camera_optimizer.mode = "off"
    if tiny:
        _shrink(model)
    if scale_schedules and int(steps) < cfg.max_num_iterations:
        compress_schedules(cfg, int(steps))
    cfg.max_num_iterations = int(steps)
    cfg.steps_per_save = max(int(steps), 1)
    cfg.save_only_latest_checkpoint = True
    cfg.steps_per_eval_batch = cfg.steps_per_eval_image = cfg.steps_per_eval_all_images = 0
    cfg.vis = "tensorboard"  # no viewer (it would block after training), no wandb (network)
    cfg.machine.device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    cfg.machine.num_devices = 1
    cfg.output_dir = Path(output_dir).resolve()
    cfg.experiment_name = experiment
    cfg.set_timestamp()
    return cfg


def orthographic_precision(cfg, camera: str) -> Optional[str]:
    """nerfstudio 1.1.5 cannot generate ORTHOPHOTO rays under autocast (``Cameras._generate_rays_from_coords``
    writes a half-precision matmul into float32 origins: "Index put requires the source and destination
    dtypes match"), so a method trained with mixed precision (nerfacto) on the orthographic clip trains in
    fp32. Returns the note for the table, or None when nothing changed."""
    if camera != "ortho" or not getattr(cfg, "mixed_precision", False):
        return None
    cfg.mixed_precision = False
    return "mixed precision off (nerfstudio 1.1.5's orthographic rays fail under autocast)"


#: splatfacto's step-based schedules (defined for its 30,000 default iterations)
_SPLAT_SCHEDULES = (
    "warmup_length",
    "resolution_schedule",
    "stop_split_at",
    "stop_screen_size_at",
    "sh_degree_interval",
)


def compress_schedules(cfg, steps: int) -> List[str]:
    """Fit schedules written for the method's default iteration count into ``steps``: splatfacto's
    resolution warm-up, densification stop, SH-degree interval, and any learning-rate decay that ends at
    the default count (nerfacto's decays run over 200,000 steps and dnerf has none: unchanged). Without
    this, splatfacto under 3,000 steps would never train at full resolution. Returns what changed."""
    f = steps / float(cfg.max_num_iterations)
    changed = []
    model = cfg.pipeline.model
    for attr in _SPLAT_SCHEDULES:
        if hasattr(model, attr) and type(model).__name__.startswith("Splatfacto"):
            setattr(model, attr, max(1, int(round(getattr(model, attr) * f))))
            changed.append(attr)
    for group, opt in cfg.optimizers.items():
        sched = opt.get("scheduler")
        if sched is not None and getattr(sched, "max_steps", None) == cfg.max_num_iterations:
            sched.max_steps = steps
            if getattr(sched, "warmup_steps", 0):
                sched.warmup_steps = max(0, int(round(sched.warmup_steps * f)))
            changed.append(f"{group} lr schedule")
    return changed


def _shrink(model) -> None:
    """CPU smoke tests only: far fewer samples and smaller grids/MLPs (results are not the method's)."""
    for attr, value in (
        ("num_proposal_samples_per_ray", (8, 8)),
        ("num_nerf_samples_per_ray", 8),
        ("num_levels", 4),
        ("log2_hashmap_size", 12),
        ("hidden_dim", 16),
        ("hidden_dim_color", 16),
        ("num_coarse_samples", 4),
        ("num_importance_samples", 4),
        ("eval_num_rays_per_chunk", 4096),
    ):
        if hasattr(model, attr):
            setattr(model, attr, value)
    if hasattr(model, "proposal_net_args_list"):
        model.proposal_net_args_list = [
            dict(a, num_levels=2, log2_hashmap_size=10, max_res=64) for a in model.proposal_net_args_list
        ]


def _default_iterations(name: str) -> int:
    from nerfstudio.configs.method_configs import method_configs

    return int(method_configs[name].max_num_iterations) if name in method_configs else 0


def render_held_out(pipeline, dataset_json: Path, clip: Clip, device: str) -> Tensor:
    """RGB of every held-out frame, rendered through the model's ``get_outputs_for_camera``."""
    from .nsdata import CompareDataParserConfig, indices_of

    outputs = (
        CompareDataParserConfig(data=Path(dataset_json), load_3D_points=False).setup().get_dataparser_outputs("test")
    )
    order = {f: i for i, f in enumerate(indices_of(outputs))}
    missing = [f for f in clip.held_out if f not in order]
    if missing:
        raise RuntimeError(f"{dataset_json}: held-out frames {missing[:5]} are not in its test split")
    cams = outputs.cameras
    model = pipeline.model
    model.eval()
    frames = []
    with torch.no_grad():
        for f in clip.held_out:
            cam = cams[order[f] : order[f] + 1].to(model.device)
            out = model.get_outputs_for_camera(cam)
            rgb = out["rgb"] if "rgb" in out else out.get("rgb_fine")  # vanilla NeRF / dnerf: coarse + fine
            if rgb is None:
                raise KeyError(f"{type(model).__name__} returned no 'rgb' or 'rgb_fine' (got {sorted(out)})")
            frames.append(rgb.float().clamp(0, 1).cpu())
    return torch.stack(frames)


def stop_after(trainer, seconds: float, t_start: List[float]) -> None:
    """Stop ``trainer`` once its optimisation has run ``seconds`` (checked after every iteration; the loop
    then ends and nerfstudio saves the checkpoint of the last finished step as usual)."""
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation

    def check(step: int) -> None:
        if time.perf_counter() - t_start[0] > seconds:
            trainer.stop_training = True

    trainer.callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], check))


def run_nerfstudio_method(
    name: str,
    clip: Clip,
    datasets: Dict[str, Path],
    steps: int,
    device: str,
    output_dir: Path,
    rays_per_batch: Optional[int] = None,
    tiny: bool = False,
    seed: int = 42,
    max_train_seconds: Optional[float] = None,
    scale_schedules: bool = True,
) -> MethodRun:
    """Train ``name`` on the key frames (``steps``, or fewer when ``max_train_seconds`` of optimisation run
    out first), reload its checkpoint safely, render the held-out frames."""
    from nerfstudio.utils import writer

    from .ckpt import latest_checkpoint, load_nerfstudio_checkpoint

    run = MethodRun(name=name, kind="per-scene optimisation")
    run.notes.append("uses the clip's times" if name in TIME_AWARE else "static scene model: ignores time")
    if name in CUDA_ONLY and not str(device).startswith("cuda"):
        run.status = "skipped: needs CUDA"
        run.notes.append("nerfstudio 1.1.5 splatfacto rasterises with gsplat's CUDA kernels only")
        return run
    camera = "pinhole" if name in PINHOLE else "ortho"
    run.details.update(camera=camera, steps=int(steps))
    if camera == "pinhole":
        run.notes.append("canonical camera as pinhole (splatfacto has no orthographic mode)")
    if tiny:
        run.notes.append("tiny variant (CPU smoke test): not the method's quality")
    try:
        if name in CUDA_ONLY:
            run.timings["gsplat_warmup_s"] = warm_up_gsplat(device)
        default_iters = _default_iterations(name)
        cfg = build_config(
            name, datasets[camera], steps, device, output_dir, clip.name, rays_per_batch, tiny, scale_schedules
        )
        if scale_schedules and steps < default_iters and name in CUDA_ONLY:
            run.notes.append(f"step schedules compressed from {default_iters} to {steps} steps")
        note = orthographic_precision(cfg, camera)
        if note is not None:
            run.notes.append(note)
        run.details["rays_per_batch"] = getattr(cfg.pipeline.datamanager, "train_num_rays_per_batch", None)
        cfg.save_config()
        from nerfstudio.scripts.train import _set_random_seed

        _set_random_seed(seed)
        writer.EVENT_WRITERS.clear()  # nerfstudio's writers are module-global: one run's events per folder
        with offline_lpips():
            _sync(device)
            t0 = time.perf_counter()
            trainer = cfg.setup(local_rank=0, world_size=1)
            trainer.setup()
            t1 = time.perf_counter()
            if max_train_seconds is not None:
                stop_after(trainer, float(max_train_seconds), [t1])
            trainer.train()
            _sync(device)
            t2 = time.perf_counter()
            run.timings.update(setup_s=t1 - t0, fit_s=t2 - t1, train_s=t2 - t0)
            config_path = trainer.base_dir / "config.yml"
            # score what was saved: the run's checkpoint, loaded weights-only with the allow-list
            ckpt_path = latest_checkpoint(trainer.checkpoint_dir)
            state = load_nerfstudio_checkpoint(ckpt_path, map_location="cpu")
            pipeline = trainer.pipeline
            pipeline.load_pipeline(state["pipeline"], state["step"])
            step = int(state["step"])
            del trainer, state
        run.details.update(
            config=str(config_path), checkpoint=str(ckpt_path), checkpoint_step=step, steps_done=step + 1
        )
        if step + 1 < steps:
            run.notes.append(f"{step + 1} of {steps} steps: stopped by the {max_train_seconds:g} s training budget")
        _sync(device)
        t3 = time.perf_counter()
        run.preds = render_held_out(pipeline, datasets[camera], clip, device)
        _sync(device)
        run.timings["render_s"] = time.perf_counter() - t3
        run.timings["total_s"] = run.timings["train_s"] + run.timings["render_s"]
        del pipeline
    except Exception as e:  # noqa: BLE001 - one failing method must not lose the whole table
        log.error("%s failed:\n%s", name, traceback.format_exc())
        run.status = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    finally:
        writer.EVENT_WRITERS.clear()
        gc.collect()
        if str(device).startswith("cuda"):
            torch.cuda.empty_cache()
    return run
