"""streamsplat-compare: protocol, the clip as a nerfstudio dataset, safe checkpoint loading, and the command
end to end on the embedded sample on CPU (tiny step counts and tiny nerfstudio models)."""

from __future__ import annotations

import json
import math
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from streamsplat_ns.compare.ckpt import CheckpointError, load_checkpoint, load_nerfstudio_checkpoint, safe_globals
from streamsplat_ns.compare.protocol import Clip, baseline_frames, frame_metrics, group_metrics

RUN: dict = {}


def _clip(n=7, gap=3, h=8, w=12, seed=0) -> Clip:
    g = torch.Generator().manual_seed(seed)
    return Clip(
        name="c",
        source="test",
        rgb=torch.rand(n, 3, h, w, generator=g),
        disparity=torch.rand(n, 1, h, w, generator=g),
        key_gap=gap,
    )


def test_protocol_frames_and_baselines():
    c = _clip(n=8, gap=3)
    assert c.key == [0, 3, 6, 7]  # the engine's rule: every gap-th frame and the last
    assert c.held_out == list(range(8)) and c.middle == [1, 2, 4, 5]
    assert c.interval_of(3) == (3, 6, 0.0) and c.interval_of(7) == (6, 7, 1.0) and c.interval_of(4)[2] == 1 / 3
    gt = c.frames_hwc(c.held_out)
    blend, near = baseline_frames(c, "blend"), baseline_frames(c, "nearest")
    assert torch.allclose(blend[[0, 3, 6, 7]], gt[[0, 3, 6, 7]]) and torch.equal(near[[0, 3, 6, 7]], gt[[0, 3, 6, 7]])
    assert torch.allclose(blend[1], gt[0] * 2 / 3 + gt[3] / 3)
    assert torch.equal(near[2], gt[3]) and torch.equal(near[1], gt[0])
    pf = frame_metrics(blend, gt)
    m = group_metrics(c, pf, c.held_out, skip_key=True)
    assert m["psnr_key"] is None and m["psnr_middle"] < 40 and m["ssim_middle"] < 1
    same = group_metrics(c, frame_metrics(gt, gt), c.held_out)
    assert same["psnr_key"] > 90 and abs(same["ssim_middle"] - 1) < 1e-4
    with pytest.raises(ValueError, match="at least two"):
        _clip(n=1, gap=3)


def test_dataset_written_and_parsed_with_times(tmp_path):
    from nerfstudio.cameras.cameras import CameraType

    from streamsplat_ns.compare.nsdata import (
        CompareDataParserConfig,
        indices_of,
        read_ply_points,
        seed_points,
        write_dataset,
    )

    n, h, w = 7, 8, 12
    frames = (np.random.default_rng(0).random((n, h, w, 3)) * 255).astype(np.uint8)
    times = [i / (n - 1) for i in range(n)]
    disp = np.linspace(0, 1, h * w, dtype=np.float32).reshape(h, w)
    for cam, ctype in (("ortho", CameraType.ORTHOPHOTO), ("pinhole", CameraType.PERSPECTIVE)):
        seed = seed_points(frames[0], disp, cam)
        js = write_dataset(tmp_path, frames, times, [0, 3, 6], list(range(n)), cam, seed)
        parser = CompareDataParserConfig(data=js).setup()
        train, test = parser.get_dataparser_outputs("train"), parser.get_dataparser_outputs("test")
        assert indices_of(train) == [0, 3, 6] and indices_of(test) == list(range(n))
        assert torch.allclose(train.cameras.times[:, 0], torch.tensor([0.0, 0.5, 1.0]))
        assert torch.allclose(test.cameras.times[:, 0], torch.tensor(times))
        assert int(test.cameras.camera_type[0]) == ctype.value
        assert float(test.cameras.fx[0]) == w / 2 and float(test.cameras.fy[0]) == h / 2
        # poses are used as written (no auto-orient / centring / scaling of the single fixed camera)
        c2w = json.loads(js.read_text())["frames"][0]["transform_matrix"]
        assert torch.allclose(test.cameras.camera_to_worlds[0], torch.tensor(c2w)[:3])
        xyz, rgb = read_ply_points(tmp_path / f"points3D_{cam}.ply")
        assert np.allclose(xyz, seed[0]) and np.array_equal(rgb, seed[1])
        assert torch.equal(train.metadata["points3D_xyz"], torch.from_numpy(xyz))
    # seed depth is StreamSplat's disparity -> depth mapping (0 -> 5, 1 -> 0.1); pinhole scales x, z by depth
    depth = 1 / (0.2 + 9.8 * disp[::2, ::2].ravel())
    ortho = seed_points(frames[0], disp, "ortho")[0]
    assert np.allclose(seed[0][:, 1], depth) and np.allclose(ortho[:, 1], depth)
    assert np.allclose(seed[0][:, 0], ortho[:, 0] * depth) and np.allclose(seed[0][:, 2], ortho[:, 2] * depth)


def test_checkpoint_errors_name_the_file(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save(
        {
            "step": 3,
            "pipeline": {"w": torch.ones(2)},
            "optimizers": {"lr": np.float64(1e-3)},
            "dtype": np.dtype("float32"),
        },
        good,
    )
    obj = load_nerfstudio_checkpoint(good)
    assert obj["optimizers"]["lr"] == 1e-3 and obj["step"] == 3
    data = good.read_bytes()
    cases = {"empty.ckpt": b"", "truncated.ckpt": data[: len(data) // 2], "garbage.ckpt": b"\x00not a checkpoint" * 9}
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
            load_checkpoint(tmp_path / name)
    # a flipped byte inside a stored member: the archive's CRC catches it
    bad = tmp_path / "flipped.ckpt"
    with zipfile.ZipFile(good) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    raw = bytearray(data)
    off = info.header_offset  # local header: name and extra lengths at +26 and +28
    u16 = lambda i: int.from_bytes(raw[i : i + 2], "little")  # noqa: E731
    start = off + 30 + u16(off + 26) + u16(off + 28)
    raw[start + 2] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="flipped.ckpt.*(CRC|corrupt)"):
        load_checkpoint(bad)
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"step": 1, "pipeline": {}, "x": pathlib_obj()}, unsafe)
    with pytest.raises(CheckpointError, match=r"unsafe\.ckpt: refused to unpickle .*PosixPath"):
        load_checkpoint(unsafe)
    with pytest.raises(CheckpointError, match="missing.ckpt: no such"):
        load_checkpoint(tmp_path / "missing.ckpt")
    objs = [g[0] if isinstance(g, tuple) else g for g in safe_globals()]
    assert all(getattr(g, "__module__", "").startswith("numpy") for g in objs)


def test_numpy_scalar_loads_under_either_pickle_name(tmp_path):
    """numpy < 2 pickles its scalars as numpy.core.multiarray.scalar, numpy >= 2 as numpy._core...: a
    checkpoint written under either numpy loads under the other."""
    src = tmp_path / "np1.ckpt"
    torch.save({"step": 1, "pipeline": {}, "lr": np.float64(0.25)}, src)
    names = {b"cnumpy.core.multiarray\nscalar\n", b"cnumpy._core.multiarray\nscalar\n"}
    with zipfile.ZipFile(src) as z:
        members = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    pkl = next(d for n, d in members if n.endswith("data.pkl"))
    have = next(n for n in names if n in pkl)
    other = (names - {have}).pop()
    dst = tmp_path / "np2.ckpt"
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_STORED) as z:
        for n, d in members:
            z.writestr(n, d.replace(have, other) if n.endswith("data.pkl") else d)
    for p in (src, dst):
        assert load_nerfstudio_checkpoint(p)["lr"] == 0.25


def test_training_budget_stops_the_trainer():
    import time
    from types import SimpleNamespace

    from nerfstudio.engine.callbacks import TrainingCallbackLocation

    from streamsplat_ns.compare.methods import stop_after

    trainer = SimpleNamespace(callbacks=[], stop_training=False)
    t0 = [time.perf_counter()]
    stop_after(trainer, 60.0, t0)
    trainer.callbacks[0].run_callback_at_location(0, TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
    assert not trainer.stop_training
    t0[0] -= 61.0
    trainer.callbacks[0].run_callback_at_location(1, TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
    assert trainer.stop_training


def pathlib_obj():
    return Path("/x")


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory):
    """The command once on the embedded sample: tiny random StreamSplat, nerfacto + dnerf (tiny, 3 steps),
    splatfacto (skipped without CUDA), both baselines."""
    if "result" not in RUN:
        from streamsplat_ns.api import save_checkpoint
        from streamsplat_ns.compare.run import CompareConfig, run_comparison
        from streamsplat_ns.networks.config import ModelConfig
        from streamsplat_ns.networks.model import StreamSplat

        root = tmp_path_factory.mktemp("compare")
        torch.manual_seed(0)
        ckpt = root / "tiny.safetensors"
        save_checkpoint(StreamSplat.from_config(ModelConfig.tiny()), ckpt)
        cfg = CompareConfig(
            checkpoint=ckpt,
            methods=("splatfacto", "nerfacto", "dnerf"),
            steps=("3",),
            rays_per_batch=64,
            tiny=True,
            max_frames=7,
            key_gap=3,
            image_size=(16, 32),
            output=root / "out",
            device="cpu",
        )
        RUN["result"] = run_comparison(cfg, argv=["--tiny"])
        RUN["out"] = root / "out"
    return RUN


@pytest.mark.slow
def test_compare_end_to_end_cpu(compare_run):
    out = compare_run["out"]
    doc = json.loads((out / "table.json").read_text())
    md = (out / "table.md").read_text()
    rows = {r["method"]: r for r in doc["rows"]}
    assert list(rows) == [
        "StreamSplat",
        "splatfacto",
        "nerfacto",
        "dnerf",
        "baseline: nearest key frame",
        "baseline: linear blend",
    ]
    assert doc["clip"]["key_frames"] == [0, 3, 6] and doc["clip"]["middle_frames"] == [1, 2, 4, 5]
    if not torch.cuda.is_available():
        assert rows["splatfacto"]["status"] == "skipped: needs CUDA" and "skipped: needs CUDA" in md
    for name in ("StreamSplat", "nerfacto", "dnerf", "baseline: nearest key frame", "baseline: linear blend"):
        r = rows[name]
        assert r["status"] == "ok", (name, r["status"])
        assert math.isfinite(r["metrics"]["psnr_middle"]) and 0 < r["metrics"]["ssim_middle"] <= 1
        assert r["timings"]["total_s"] > 0 and (out / "grids").joinpath(Path(r["details"]["grid"]).name).is_file()
        assert f"| {name} |" in md
    for name in ("StreamSplat", "nerfacto", "dnerf"):
        assert math.isfinite(rows[name]["metrics"]["psnr_key"])
    assert rows["nerfacto"]["timings"]["train_s"] > 0 and rows["nerfacto"]["timings"]["render_s"] > 0
    assert rows["nerfacto"]["details"]["checkpoint_step"] == 2 and rows["dnerf"]["details"]["steps_done"] == 3
    assert "ignores time" in " ".join(rows["nerfacto"]["notes"]) and "uses the clip's times" in rows["dnerf"]["notes"]
    assert rows["baseline: linear blend"]["metrics"]["psnr_key"] is None and "(input)" in md
    assert "LPIPS" in md  # either reported or skipped with a note, never silently


@pytest.mark.slow
def test_nerfacto_checkpoint_loads_safely(compare_run):
    """A real nerfacto checkpoint: plain weights-only loading refuses its numpy scalars; ours loads it,
    and eval_setup rebuilds the pipeline from config.yml with those weights."""
    from streamsplat_ns.compare.ckpt import eval_setup, latest_checkpoint
    from streamsplat_ns.compare.methods import offline_lpips

    row = next(r for r in compare_run["result"]["rows"] if r["method"] == "nerfacto")
    ckpt = Path(row["details"]["checkpoint"])
    assert ckpt == latest_checkpoint(ckpt.parent.parent)
    try:
        torch.load(ckpt, map_location="cpu", weights_only=True)
        plain_ok = True
    except pickle.UnpicklingError as e:
        plain_ok = False
        assert "numpy" in str(e)
    state = load_nerfstudio_checkpoint(ckpt)
    assert state["step"] == 2 and any(k.startswith("_model.field") for k in state["pipeline"])
    with offline_lpips():
        _, pipeline, step, used = eval_setup(Path(row["details"]["config"]), device="cpu")
    assert step == 2 and used == ckpt
    sd = pipeline.state_dict()
    k = next(k for k in state["pipeline"] if k.startswith("_model.field") and state["pipeline"][k].numel() > 1)
    assert torch.equal(sd[k.replace("_model.", "model.", 1)] if k not in sd else sd[k], state["pipeline"][k])
    print("plain torch.load(weights_only=True) of a nerfacto checkpoint works:", plain_ok)


@pytest.mark.gpu
def test_compare_splatfacto_on_gpu(tmp_path):
    """On CUDA every row runs: splatfacto (gsplat JIT on first use, untimed), nerfacto, dnerf, StreamSplat."""
    from streamsplat_ns.api import save_checkpoint
    from streamsplat_ns.compare.run import CompareConfig, run_comparison
    from streamsplat_ns.networks.config import ModelConfig
    from streamsplat_ns.networks.model import StreamSplat

    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(StreamSplat.from_config(ModelConfig.tiny()), ckpt)
    cfg = CompareConfig(
        checkpoint=ckpt,
        methods=("splatfacto", "nerfacto", "dnerf"),
        steps=("30",),
        max_frames=11,
        key_gap=5,
        image_size=(64, 112),
        output=tmp_path / "out",
        device="cuda",
    )
    rows = {r["method"]: r for r in run_comparison(cfg, argv=[])["rows"]}
    for name in ("StreamSplat", "splatfacto", "nerfacto", "dnerf"):
        assert rows[name]["status"] == "ok", (name, rows[name]["status"])
        assert math.isfinite(rows[name]["metrics"]["psnr_middle"])
    assert rows["splatfacto"]["details"]["steps_done"] == 30 and rows["splatfacto"]["details"]["camera"] == "pinhole"
    assert "gsplat_warmup_s" in rows["splatfacto"]["timings"]


def test_orthographic_methods_train_without_autocast():
    """nerfacto trains with mixed precision; on the orthographic clip that fails inside nerfstudio's ray
    generation (seen on an H200: "Index put requires the source and destination dtypes match"). The compare
    config turns it off, with a note, and rays then generate under the trainer's autocast setting."""
    import copy

    from nerfstudio.cameras.cameras import Cameras, CameraType
    from nerfstudio.configs.method_configs import method_configs

    from streamsplat_ns.compare.methods import orthographic_precision

    cam = Cameras(
        camera_to_worlds=torch.eye(4)[:3][None], fx=1.0, fy=1.0, cx=8.0, cy=8.0, width=16, height=16,
        camera_type=CameraType.ORTHOPHOTO,
    )  # fmt: skip
    cfg = copy.deepcopy(method_configs["nerfacto"])
    assert cfg.mixed_precision
    with pytest.raises(RuntimeError, match="dtypes match"), torch.autocast("cpu", dtype=torch.bfloat16):
        cam.generate_rays(camera_indices=0)  # what nerfacto's autocast did to the orthographic rays
    assert "mixed precision off" in orthographic_precision(cfg, "ortho")
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.mixed_precision):
        assert cam.generate_rays(camera_indices=0).origins.dtype == torch.float32
    pinhole = copy.deepcopy(method_configs["nerfacto"])
    assert orthographic_precision(pinhole, "pinhole") is None and pinhole.mixed_precision
