"""Live mode and the standalone viewer without a browser (tests/test_live_browser.py drives Chromium).

A tiny random model streams a synthetic folder of frames (with disparity maps). The networks are random,
so content checks use :func:`oracle_colours`: the frame's own pixels become the Gaussians' colours (what
a trained model approaches); everything else (engine, window, render threads, recorder) is the real path.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

H_SRC, W_SRC = 64, 128


# ------------------------------------------------------------------ helpers (also used by test_live_browser)
def synthetic_frames(folder: Path, n: int = 24, h: int = H_SRC, w: int = W_SRC) -> tuple:
    """A square sweeping over a gradient whose hue drifts; disparity maps in ``<folder>_depth`` (nearer square)."""
    from PIL import Image

    from streamsplat_ns.data.depth_io import write_depth_png16

    folder.mkdir(parents=True, exist_ok=True)
    ddir = folder.parent / f"{folder.name}_depth"
    ddir.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        ph = 2 * math.pi * i / max(n, 1)
        img = np.stack(
            [
                0.5 + 0.4 * np.sin(xx / w * 3 + ph),
                0.5 + 0.4 * np.cos(yy / h * 3 + 2 * ph),
                0.5 + 0.4 * np.sin(ph + xx / w),
            ],
            -1,
        )
        disp = 0.2 + 0.5 * yy / h
        x0 = int((i * 7) % (w - 24))
        img[16:40, x0 : x0 + 24] = (1.0, 1.0, 0.1) if (i // 4) % 2 == 0 else (0.1, 0.2, 1.0)
        disp[16:40, x0 : x0 + 24] = 0.95
        Image.fromarray((img.clip(0, 1) * 255).astype(np.uint8)).save(folder / f"{i:05d}.png")
        write_depth_png16(ddir / f"{i:05d}_pred.png", disp)
    return folder, ddir


def tiny_model(seed: int = 0):
    from streamsplat_ns.networks import ModelConfig, StreamSplat

    torch.manual_seed(seed)
    return StreamSplat.from_config(ModelConfig.tiny()).eval()


def oracle_colours(model):
    """Make the model's Gaussians take the input frame's colours (grid-pooled) at high opacity."""
    orig = model.encode_frame
    gh, gw = model.config.encoder.gaussian_grid

    def encode_frame(rgb, disp, *a, **kw):
        st = orig(rgb, disp, *a, **kw)
        col = F.adaptive_avg_pool2d(rgb.float(), (gh, gw)).permute(0, 2, 3, 1).reshape(rgb.shape[0], gh * gw, 3)
        g = st.gaussians
        st.gaussians = type(g)(
            means=g.means,
            quats=g.quats,
            scales=g.scales,
            opacities=torch.full_like(g.opacities, 0.95),
            colours=col.to(g.colours.dtype),
            sh=g.sh,
        )
        return st

    model.encode_frame = encode_frame
    return model


def frames_of(folder: Path, fail_after: int | None = None):
    """Engine Frames from a folder; raises like an unplugged camera after ``fail_after`` frames."""
    from PIL import Image

    from streamsplat_ns.engine import Frame

    for i, p in enumerate(sorted(folder.glob("*.png"))):
        if fail_after is not None and i >= fail_after:
            raise OSError("camera /dev/video9 disconnected (test)")
        yield Frame(i, p.stem, np.asarray(Image.open(p).convert("RGB")).copy(), time.perf_counter())


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return synthetic_frames(tmp_path_factory.mktemp("live") / "clip", n=8)


# ------------------------------------------------------------------ bounded hand-overs
def test_window_is_bounded_and_maps_frames_to_intervals():
    from streamsplat_ns.live.state import IntervalWindow, LiveInterval

    w = IntervalWindow(3)
    for k in range(10):
        w.append(LiveInterval(k, (2 * k, 2 * k + 2), None))
    items = w.snapshot()
    assert [it.k for it in items] == [7, 8, 9] and w.range() == (14.0, 20.0)
    it, local = IntervalWindow.pick(items, 17.0)
    assert it.k == 8 and local == pytest.approx(0.5)
    it, local = IntervalWindow.pick(items, 3.0)  # older than the window: clamped to its start
    assert it.k == 7 and local == 0.0


# ------------------------------------------------------------------ recording
def _random_interval(n: int, seed: int):
    from streamsplat_ns.gaussians import DynamicGaussians

    g = torch.Generator().manual_seed(seed)
    op = torch.rand(1, n, generator=g) * 0.9 + 0.05
    op[0, : n // 4] = 1e-4  # near-transparent: not recorded
    q = torch.zeros(1, n, 4)
    q[..., 0] = 1
    return DynamicGaussians(
        means=torch.rand(1, n, 3, generator=g) * 2 - 1,
        quats=q,
        scales=torch.rand(1, n, 3, generator=g) * 0.01,
        opacities=op,
        colours=torch.rand(1, n, 3, generator=g),
        motion=torch.randn(1, n, 3, 3, generator=g) * 0.1,
        t0=torch.cat([torch.zeros(1, n // 2), torch.ones(1, n - n // 2)], 1),
        gamma0=torch.rand(1, n, generator=g) * 5,
        gamma1=torch.rand(1, n, generator=g),
    )


def test_recording_roundtrip_and_budget(tmp_path):
    from streamsplat_ns.live.record import RecordConfig, Recorder, Recording

    n = 4000
    g0 = _random_interval(n, 0)
    rec = Recorder(tmp_path / "a", source="test", model_size=(32, 64), fps=30.0)
    for k in range(3):
        rec.add(k, (k, k + 1), _random_interval(n, k), 1.0)
    rec.close("complete", "done")
    r = Recording(tmp_path / "a")
    assert r.keys == [0, 1, 2] and r.info["status"] == "complete"
    g, meta = r.load(0)
    keep = g0.opacities[0] >= 1 / 255
    assert g.num_gaussians == int(keep.sum()) < n, "near-transparent Gaussians must be dropped"
    for name in ("means", "scales", "colours", "motion", "gamma0", "gamma1", "t0"):
        ref = getattr(g0, name)[0][keep]
        assert torch.allclose(getattr(g, name)[0], ref, rtol=2e-3, atol=1e-4), name
    assert meta["quats"] == "identity" and int(meta["i1"]) == 1
    one = (tmp_path / "a" / "intervals" / "k0000000000.safetensors").stat().st_size
    assert one < n * 26 * 2, f"interval file not compressed: {one} bytes"
    with pytest.raises(FileExistsError, match="already holds a recording"):
        Recorder(tmp_path / "a", source="test", model_size=(32, 64), fps=30.0)

    # budget of ~2.5 intervals: drop-oldest keeps the newest two; stop keeps the first two and says so
    budget = 2.5 * one / 2**20
    rec = Recorder(tmp_path / "b", source="t", model_size=(32, 64), fps=30.0, config=RecordConfig(budget_mb=budget))
    for k in range(6):
        rec.add(k, (k, k + 1), _random_interval(n, k), block=True)
    rec.close()
    assert Recording(tmp_path / "b").keys == [4, 5] and rec.deleted == 4
    rec = Recorder(
        tmp_path / "c", source="t", model_size=(32, 64), fps=30.0, config=RecordConfig(budget_mb=budget, policy="stop")
    )
    for k in range(6):
        rec.add(k, (k, k + 1), _random_interval(n, k), block=True)
    rec.close()
    info = json.loads((tmp_path / "c" / "session.json").read_text())
    assert Recording(tmp_path / "c").keys == [0, 1]
    assert info["status"] == "stopped" and "budget" in info["message"]


# ------------------------------------------------------------------ sessions
def test_source_that_disappears_ends_session_and_keeps_recording(source, tmp_path):
    """A camera that fails mid-stream: the session ends with a message naming it; the recording opens."""
    from streamsplat_ns.cli.view import ViewArgs
    from streamsplat_ns.cli.view import main as view_main
    from streamsplat_ns.engine import DisparitySource, ReconstructionEngine
    from streamsplat_ns.live.record import Recording
    from streamsplat_ns.live.session import LiveSession

    folder, ddir = source
    engine = ReconstructionEngine(tiny_model(), disparity=DisparitySource.files(ddir), device="cpu")
    s = LiveSession(
        model_size=engine.size,
        device=torch.device("cpu"),
        window=4,
        serve=False,
        record=tmp_path / "rec",
        source_label="/dev/video9",
    )
    res = s.run(engine.stream(frames_of(folder, fail_after=6)))
    assert not res.ok and "disconnected" in res.message and "the source stopped" in res.message
    assert res.intervals == 5 and "recording: 5 intervals" in res.message
    rec = Recording(tmp_path / "rec")
    assert rec.keys == [0, 1, 2, 3, 4] and rec.info["status"] == "source-error"
    assert "disconnected" in rec.info["message"]
    assert not list((tmp_path / "rec" / "intervals").glob(".*tmp*")), "no half-written files may remain"
    view_main(ViewArgs(tmp_path / "rec", export_frame=4.5, output=tmp_path / "x.ply", device="cpu"))
    from streamsplat_ns.export import read_ply

    assert len(read_ply(tmp_path / "x.ply")["x"]) > 100


def test_live_cli_headless_latency_and_drops(source, tmp_path):
    """streamsplat-live's path end to end (real-time folder source, viewer server, headless render):
    every interval reaches the viewer, latency is measured, drops are counted and reported."""
    from streamsplat_ns.cli.live import LiveArgs, build_engine, open_source
    from streamsplat_ns.live.session import LiveSession
    from streamsplat_ns.live.viewer import ViewerOptions

    folder, ddir = source
    args = LiveArgs(
        source=str(folder),
        checkpoint=Path("unused"),
        depth="file",
        depth_dir=ddir,
        fps=15.0,
        device="cpu",
        exit_when_done=True,
    )
    src = open_source(args)
    engine = build_engine(args, tiny_model(), src)
    s = LiveSession(
        model_size=engine.size,
        device=torch.device("cpu"),
        window=4,
        fps=15.0,
        headless_render=True,
        viewer=ViewerOptions(port=7300, max_resolution=64),
        keep_stats=True,
    )
    try:
        res = s.run(engine.stream(src), source=src)
        end = time.time() + 60  # the CPU renderer is slow on a loaded 2-core machine
        while not s.stats.records and time.time() < end:
            time.sleep(0.1)
        assert res.ok and res.intervals + res.dropped >= 8 - 1
        assert s.viewer.images_sent >= 1 and s.viewer.last_image.shape[1] > s.viewer.last_image.shape[0]
        recs = s.stats.records
        assert recs, "no viewer update was timed"
        lat = [r["viewer_sent"] - r["arrival"] for r in recs]
        assert all(0 < x < 5 for x in lat), lat
        assert all(r["arrival"] <= r["yielded"] <= r["render_done"] <= r["viewer_sent"] for r in recs)
        assert "frames/s" in s.stats.markdown() and f"dropped {res.dropped} frames" in s.stats.markdown()
    finally:
        s.close()


def test_view_opens_reconstruct_output_and_renders(source, tmp_path):
    """A streamsplat-reconstruct folder opens (Gaussians rebuilt once from its manifest, then reused),
    renders, follows the time slider, and renders a camera path to mp4."""
    from streamsplat_ns.api import save_checkpoint
    from streamsplat_ns.cli.reconstruct import ReconstructArgs
    from streamsplat_ns.cli.reconstruct import main as reconstruct
    from streamsplat_ns.cli.view import render_camera_path
    from streamsplat_ns.live.replay import open_output
    from streamsplat_ns.live.viewer import LiveViewer, ViewerOptions

    folder, ddir = source
    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(tiny_model(), ckpt)
    out = tmp_path / "recon"
    reconstruct(
        ReconstructArgs(
            input=str(folder),
            checkpoint=ckpt,
            output=out,
            depth="file",
            depth_dir=ddir,
            device="cpu",
            progress=False,
            interp=1,
        )
    )
    opened = open_output(out, "cpu")
    assert (out / "gaussians" / "session.json").is_file()
    assert opened.window.range() == (0.0, 7.0)
    t_cached = time.perf_counter()
    again = open_output(out, "cpu")  # the saved Gaussians are reused
    assert time.perf_counter() - t_cached < 2.0 and len(again.window.snapshot()) == 7

    v = LiveViewer(
        opened.window,
        model_size=opened.model_size,
        device=torch.device("cpu"),
        fps=opened.fps,
        opts=ViewerOptions(port=7320, max_resolution=64),
        follow_live=False,
        headless=True,
    )
    try:

        def wait_new(n0):
            end = time.time() + 20
            while v.images_sent <= n0 and time.time() < end:
                time.sleep(0.05)
            assert v.images_sent > n0, "no render"
            return v.last_image.astype(np.float32) / 255

        v.set_time(0.0)
        a = wait_new(0)
        v.set_time(7.0)
        b = wait_new(v.images_sent)
        assert a.std() > 0.01 and np.abs(a - b).mean() > 0.005, "the render must follow the time slider"
        p = v.export_ply(tmp_path / "exp")
        assert p.name.endswith("_frame00007.000.ply") and p.is_file()
    finally:
        v.close()
    path = {
        "camera_path": [
            {"camera_to_world": [1, 0, 0, 0, 0, 0, -1, -3, 0, 1, 0, 0, 0, 0, 0, 1], "fov": 50, "render_time": t}
            for t in (0.0, 0.5, 1.0)
        ],
        "render_height": 32,
        "render_width": 64,
        "fps": 3,
    }
    (tmp_path / "p.json").write_text(json.dumps(path))
    assert render_camera_path(opened, tmp_path / "p.json", tmp_path / "p.mp4", torch.device("cpu")) == 3
    import av

    with av.open(str(tmp_path / "p.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 3


@pytest.mark.gpu
def test_live_gpu_fast_path_with_concurrent_viewer_renders(tmp_path, caplog):
    """CUDA: the fastest engine path (bf16, fused kernels, CUDA-graph step captured on the engine thread) while
    the viewer's render thread renders on the same GPU: no capture conflicts, every interval made, images sent."""
    from streamsplat_ns.cli.live import LiveArgs, build_engine, open_source
    from streamsplat_ns.live.session import LiveSession
    from streamsplat_ns.live.viewer import ViewerOptions

    folder, ddir = synthetic_frames(tmp_path / "clip", n=40)
    args = LiveArgs(
        source=str(folder),
        checkpoint=Path("unused"),
        depth="file",
        depth_dir=ddir,
        fps=30.0,
        device="cuda",
        exit_when_done=True,
    )
    src = open_source(args)
    engine = build_engine(args, tiny_model().cuda(), src)
    s = LiveSession(
        model_size=engine.size,
        device=torch.device("cuda"),
        window=8,
        fps=30.0,
        headless_render=True,
        viewer=ViewerOptions(port=7340),
        keep_stats=True,
    )
    try:
        res = s.run(engine.stream(src), source=src)
        end = time.time() + 10
        while s.viewer._headless.busy and time.time() < end:
            time.sleep(0.01)
    finally:
        s.close()
    assert res.ok, res.message
    assert res.intervals + res.dropped >= 39 - 1 and res.intervals >= 20
    assert s.viewer.images_sent >= 5 and s.stats.records
    assert not [r for r in caplog.records if "render failed" in r.getMessage()]
