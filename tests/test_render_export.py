"""ns-render with streamsplat-camera-path JSONs (time sweep, orbit) and the streamsplat-export PLYs.

Uses the 3-step run of ``conftest_ns``; content checks swap in the pixel-aligned oracle encoder of
test_viewer_browser (a 3-step network renders near-uniform noise), the nerfstudio path stays real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from streamsplat_ns.cli import camera_path as cp  # noqa: E402

from conftest_ns import trained_config  # noqa: E402

INRIA_FIELDS = (
    ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    + [f"f_rest_{i}" for i in range(45)]
    + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
)


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    return trained_config(tmp_path_factory)


@pytest.fixture(scope="module")
def pipeline(config_path):
    from nerfstudio.utils.eval_utils import eval_setup

    from test_viewer_browser import oracle_predict_static

    _, pipe, _, _ = eval_setup(config_path, test_mode="test")
    pipe.model.net.predict_static = oracle_predict_static
    return pipe


def path_cameras(args):
    from nerfstudio.cameras.camera_paths import get_path_from_json

    return get_path_from_json(cp.make_camera_path(args))


def test_camera_path_json(config_path, tmp_path):
    sweep = cp.main(cp.Sweep(output=tmp_path / "s.json", load_config=config_path, frames=5, scale=1.0))
    assert json.loads((tmp_path / "s.json").read_text()) == sweep
    assert (sweep["render_height"], sweep["render_width"]) == (64, 112)
    assert [f["render_time"] for f in sweep["camera_path"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert len({tuple(f["camera_to_world"]) for f in sweep["camera_path"]}) == 1  # one pose
    orbit = cp.make_camera_path(cp.Orbit(load_config=config_path, frames=6, time=0.5))
    assert {f["render_time"] for f in orbit["camera_path"]} == {0.5}
    assert len({tuple(f["camera_to_world"]) for f in orbit["camera_path"]}) == 6
    cams = path_cameras(cp.Orbit(load_config=config_path, frames=6, time=0.5))
    assert cams.times is not None and cams.times.shape == (6, 1)
    with pytest.raises(ValueError, match="outside"):
        cp.make_camera_path(cp.Sweep(t_end=2.0))
    with pytest.raises(FileNotFoundError, match="config.yml"):
        cp.make_camera_path(cp.Sweep(load_config=tmp_path / "missing.yml"))


def test_path_renders_sweep_is_canonical_orbit_is_novel(pipeline, config_path):
    """What ns-render computes per frame: sweep frame k = the canonical view at time k; orbit views move."""
    from nerfstudio.cameras.cameras import Cameras, CameraType

    from streamsplat_ns.rendering.camera import canonical_c2w_opengl

    model = pipeline.model
    sweep = path_cameras(cp.Sweep(load_config=config_path, frames=3, scale=1.0))
    frames = [model.get_outputs_for_camera(sweep[i : i + 1])["rgb"] for i in range(3)]
    H, W = frames[0].shape[:2]
    for i, t in enumerate([0.0, 0.5, 1.0]):
        ortho = Cameras(
            camera_to_worlds=canonical_c2w_opengl()[None],
            fx=W / 2,
            fy=H / 2,
            cx=W / 2,
            cy=H / 2,
            width=W,
            height=H,
            camera_type=CameraType.ORTHOPHOTO,
            times=torch.tensor([[t]]),
        )
        ref = model.get_outputs_for_camera(ortho)["rgb"]
        assert float((frames[i] - ref).abs().max()) < 1e-3, "sweep frame is not the canonical view"
    assert float((frames[0] - frames[2]).abs().mean()) > 0.02, "the time sweep does not change the render"
    # the canonical view reproduces the input frame (oracle Gaussians): the mapping is the canonical one
    rgb, _, _ = model.clip_provider(0, [0])
    assert float((frames[0] - rgb[0].permute(1, 2, 0)).abs().mean()) < 0.08

    orbit = path_cameras(cp.Orbit(load_config=config_path, frames=4, time=0.0, yaw=30, pitch=0, scale=1.0))
    views = [model.get_outputs_for_camera(orbit[i : i + 1]) for i in (0, 1)]  # yaw 0, yaw 30
    assert float((views[0]["rgb"] - frames[0]).abs().max()) < 1e-3
    assert float((views[1]["rgb"] - views[0]["rgb"]).abs().mean()) > 0.02, "the orbit shows no novel view"
    assert float(views[1]["accumulation"].mean()) > 0.5, "the orbit lost the scene"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ns-render needs ffmpeg (apt-get install -y ffmpeg)")
def test_ns_render_camera_path_to_mp4(config_path, tmp_path):
    """The real command line: streamsplat-camera-path JSON -> ns-render camera-path -> mp4."""
    cp.main(cp.Sweep(output=tmp_path / "sweep.json", load_config=config_path, frames=4, seconds=1.0, scale=1.0))
    ns_render = shutil.which("ns-render")
    cmd = ([ns_render] if ns_render else [sys.executable, "-m", "nerfstudio.scripts.render"]) + [
        "camera-path",
        "--load-config",
        str(config_path),
        "--camera-path-filename",
        str(tmp_path / "sweep.json"),
        "--output-path",
        str(tmp_path / "sweep.mp4"),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env={**os.environ, "STREAMSPLAT_CLIP": "1"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
            "stream=width,height,nb_read_frames,codec_name",
            "-of",
            "json",
            str(tmp_path / "sweep.mp4"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    s = json.loads(probe.stdout)["streams"][0]
    assert (s["width"], s["height"], int(s["nb_read_frames"])) == (112, 64, 4), s


def read_ply_independently(path: Path):
    """A small PLY parser written from the format spec (not streamsplat_ns.export.read_ply)."""
    raw = path.read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    lines = raw[:end].decode("ascii").split("\n")
    assert lines[0] == "ply" and lines[1] == "format binary_little_endian 1.0", lines[:2]
    count, props = None, []
    for line in lines[2:]:
        parts = line.split()
        if parts[:2] == ["element", "vertex"]:
            count = int(parts[2])
        elif parts and parts[0] == "property":
            assert parts[1] == "float", line
            props.append(parts[2])
        elif parts and parts[0] == "element":
            raise AssertionError(f"unexpected element: {line}")
    dtype = np.dtype([(p, "<f4") for p in props])
    assert len(raw) - end == count * dtype.itemsize, "payload size does not match the header"
    return props, np.frombuffer(raw, dtype=dtype, offset=end, count=count)


def test_export_cli_ply_round_trip(pipeline, config_path, tmp_path, monkeypatch):
    from streamsplat_ns.cli import export as ex
    from streamsplat_ns.export import gaussians_at

    # the CLI builds its own pipeline with eval_setup: hand it ours (with the oracle encoder)
    monkeypatch.setattr("nerfstudio.utils.eval_utils.eval_setup", lambda *a, **k: (None, pipeline, None, 2))
    paths = ex.main(
        ex.Export(
            load_config=config_path,
            times=[0.0, 1.0],
            clip=1,
            output_dir=tmp_path / "ply",
            frame="world",
            min_opacity=0.0,
        )
    )
    from streamsplat_ns.export import ply_name

    n = pipeline.model.clip_provider(1, None)[2]  # times 0 and 1 are the clip's first and last source frames
    assert [p.name for p in paths] == [ply_name("synth-01", 0), ply_name("synth-01", n - 1)]
    props, v0 = read_ply_independently(paths[0])
    assert props == INRIA_FIELDS
    g, _ = pipeline.model.clip_gaussians(1, 0.0)
    world, valid, quats, scales, opa, colours, _ = gaussians_at(g)
    world, opa = world[valid].numpy(), opa[valid].numpy()
    assert len(v0) == len(world) > 100
    np.testing.assert_allclose(np.stack([v0["x"], v0["y"], v0["z"]], 1), world, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(1 / (1 + np.exp(-v0["opacity"])), opa, atol=1e-5)
    np.testing.assert_allclose(np.exp(v0["scale_0"]), scales[valid][:, 0].numpy(), rtol=1e-4)
    np.testing.assert_allclose(v0["f_dc_1"] * 0.28209479177387814 + 0.5, colours[valid][:, 1].numpy(), atol=1e-5)
    assert np.all(v0["nx"] == 0) and np.all(v0["f_rest_44"] == 0)
    q = np.stack([v0[f"rot_{i}"] for i in range(4)], 1)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    _, v1 = read_ply_independently(paths[1])
    assert np.abs(v1["f_dc_0"] - v0["f_dc_0"]).mean() > 1e-3, "t=0 and t=1 exported the same Gaussians"
    with pytest.raises(ValueError, match="--clip 7 is out of range"):
        ex.main(ex.Export(load_config=config_path, clip=7, output_dir=tmp_path / "x"))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ex.main(ex.Export(load_config=config_path, times=[1.5], output_dir=tmp_path / "x"))


def test_export_console_script():
    exe = shutil.which("streamsplat-export")
    cmd = [exe] if exe else [sys.executable, "-m", "streamsplat_ns.cli.export"]
    res = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "--times" in res.stdout and "--clip" in res.stdout, res.stderr[-2000:]
