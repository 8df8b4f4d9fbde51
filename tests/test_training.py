"""nerfstudio integration: entry points, both training stages, exact resume, checkpoints, eval JSON."""

import json
import subprocess
import sys

import pytest
import torch

from nsutil import params, run_dir, small_config, train


def test_entry_points_are_discovered():
    from nerfstudio.plugins.registry import discover_methods
    from nerfstudio.plugins.registry_dataparser import discover_dataparsers

    methods, _ = discover_methods()
    for name in (
        "streamsplat-encoder",
        "streamsplat-decoder",
        "streamsplat-encoder-small",
        "streamsplat-decoder-small",
    ):
        assert name in methods, name
    parsers, _ = discover_dataparsers()
    for name in (
        "re10k-data",
        "co3dv2-data",
        "davis-data",
        "youtube-vos-data",
        "streamsplat-combined-data",
        "video-data",
    ):
        assert name in parsers, name


@pytest.fixture(scope="module")
def stage1_runs(tmp_path_factory):
    """Four steps straight, and 2 + 2 steps resumed with --load-dir."""
    root = tmp_path_factory.mktemp("stage1")
    full = train(small_config(root / "full", steps=4))
    first_cfg = small_config(root / "split", steps=2)
    first = train(first_cfg)
    resumed_cfg = small_config(root / "resumed", steps=2, load_dir=run_dir(first_cfg) / "nerfstudio_models")
    resumed = train(resumed_cfg)
    return full, first, resumed, resumed_cfg


def test_resume_is_exact(stage1_runs):
    full, first, resumed, resumed_cfg = stage1_runs
    assert sorted(p.name for p in (run_dir(resumed_cfg) / "nerfstudio_models").iterdir()) == ["step-000000003.ckpt"]
    a, b, half = params(full), params(resumed), params(first)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    # the comparison means something: two more steps do change the weights
    assert any(not torch.allclose(a[k], half[k]) for k in a)


def test_checkpoints_load_safely_and_in_our_format(stage1_runs):
    full = stage1_runs[0]
    ckpt = next(full.checkpoint_dir.glob("step-*.ckpt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=True)  # no numpy scalars, no pickled objects
    assert state["step"] == 3 and "networks" in state["optimizers"]
    assert not list(full.base_dir.glob(".*.tmp"))  # atomic writes leave no temp files behind
    from streamsplat_ns.api import load_checkpoint

    model = load_checkpoint(full.base_dir / "model.safetensors")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, full.pipeline.model.net.state_dict()[k].cpu(), msg=k)


def test_stage2_freezes_the_stage1_encoder(stage1_runs, tmp_path):
    full = stage1_runs[0]
    enc_before = {k: v.clone() for k, v in full.pipeline.model.net.encoder.state_dict().items()}
    cfg = small_config(tmp_path, stage="decoder", steps=2, encoder_ckpt=full.base_dir / "model.safetensors")
    cfg.pipeline.datamanager.batch_size = 1
    t2 = train(cfg)
    net = t2.pipeline.model.net
    for k, v in net.encoder.state_dict().items():
        torch.testing.assert_close(v, enc_before[k], msg=k)  # loaded exactly and not trained
    assert not any(p.requires_grad for p in net.encoder.parameters())
    groups = t2.pipeline.model.get_param_groups()["networks"]
    assert groups and all(p.requires_grad for p in groups)
    assert (t2.base_dir / "model.safetensors").is_file()
    _, losses, metrics = t2.pipeline.get_train_loss_dict(step=100)
    assert losses["mask"] > 0  # the foreground loss the released code drops is really applied
    assert {"mse", "depth"} <= set(losses) and "psnr_middle" in metrics
    assert "coarse" not in losses  # off in the paper config
    t2.pipeline.model.config.lambda_coarse = 0.5  # the demo recipe's option (--coarse-loss)
    _, losses, _ = t2.pipeline.get_train_loss_dict(step=101)
    assert losses["coarse"] > 0


def test_nonfinite_gradients_are_skipped(tmp_path, monkeypatch):
    cfg = small_config(tmp_path, steps=1)
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    before = params(trainer)
    model = trainer.pipeline.model
    orig = model.get_loss_dict

    def poisoned(outputs, batch, metrics_dict=None):
        d = orig(outputs, batch, metrics_dict)
        d["mse"] = d["mse"] * float("nan")
        return d

    monkeypatch.setattr(model, "get_loss_dict", poisoned)
    trainer.train_iteration(0)
    assert trainer.nonfinite_skips == 1
    after = params(trainer)
    for k in before:
        assert torch.equal(before[k], after[k]), k


def test_ns_eval_writes_paper_metrics(stage1_runs, tmp_path):
    full = stage1_runs[0]
    out = tmp_path / "eval.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "nerfstudio.scripts.eval",
            "--load-config",
            str(full.base_dir / "config.yml"),
            "--output-path",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())["results"]
    assert 5.0 < res["psnr_key"] < 60.0 and 0.0 < res["ssim_key"] <= 1.0 and "psnr_key_std" in res


def test_stage2_viewer_path_follows_time(stage1_runs, tmp_path):
    """The viewer/ns-render path of a stage-2 model: key pairs are reconstructed on demand and cached, the
    render moves with the time slider, and depth/accumulation come out for "Composite depth"."""
    import numpy as np
    from nerfstudio.cameras.cameras import CameraType
    from nerfstudio.viewer.utils import CameraState, get_camera

    from streamsplat_ns.rendering.camera import canonical_viewer_c2w

    full = stage1_runs[0]
    cfg = small_config(tmp_path, stage="decoder", steps=1, encoder_ckpt=full.base_dir / "model.safetensors")
    cfg.pipeline.datamanager.batch_size = 1
    pipeline = cfg.pipeline.setup(device="cpu", test_mode="val")
    model = pipeline.model.eval()
    cam = get_camera(
        CameraState(
            fov=np.radians(75.0),
            aspect=1.75,
            c2w=canonical_viewer_c2w(75.0),
            camera_type=CameraType.PERSPECTIVE,
            time=0.0,
        ),
        64,
        112,
    )
    outs = []
    for t in (0.02, 0.05, 0.6):
        cam.times = torch.full((1, 1), t)
        outs.append(model.get_outputs_for_camera(cam))
    n_frames = model.clip_provider(0, None)[2]
    gap = model.config.viewer_key_gap
    pairs = [k for k in model._cache if k[0] == "pair"]
    # keys: ("pair", clip, first frame, last frame, training step); t=0.02 and 0.05 share the first pair
    later = min(int(0.6 * (n_frames - 1) // gap), (n_frames - 1) // gap - 1) * gap
    assert len(pairs) == 2 and all(k[3] - k[2] == gap for k in pairs) and {k[2] for k in pairs} == {0, later}
    assert n_frames > 2 * gap
    assert float((outs[0]["rgb"] - outs[1]["rgb"]).abs().mean()) > 0  # motion inside one pair
    assert float((outs[0]["rgb"] - outs[2]["rgb"]).abs().mean()) > 0.01  # another pair later in the video
    for o in outs:
        assert o["rgb"].shape == (64, 112, 3) and torch.isfinite(o["depth"]).all()
        assert o["accumulation"].shape == (64, 112, 1)
