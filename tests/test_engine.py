"""The reconstruction engine (CPU, tiny models): pairing rule, frame sources, equality with the plain
streaming session, frame order, damaged inputs and the pacing / dropping live mode needs."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from streamsplat_ns.data.errors import DataError
from streamsplat_ns.engine import DisparitySource, Frame, ReconstructionEngine, key_frames, locate, open_frames
from streamsplat_ns.inference import InferenceOptions
from streamsplat_ns.networks import StreamSplat
from streamsplat_ns.streaming import StreamingSession

FIELDS = ("means", "quats", "scales", "opacities", "colours", "motion", "t0", "gamma0", "gamma1")


def micro_model() -> StreamSplat:
    """One block everywhere (as tests/test_streaming.micro_model): fast on 2 CPU cores, same code paths."""
    from streamsplat_ns.networks import DecoderConfig, DinoConfig, EncoderConfig, UpsamplerConfig

    up = UpsamplerConfig(depth=1, window_size=64, min_width=16, head_dim=16)
    enc = EncoderConfig.tiny(depth=1, upsampler=up)
    dec = DecoderConfig.tiny(depth=1, upsampler=up, dino=DinoConfig(embed_dim=32, depth=1, num_heads=2, img_size=56))
    torch.manual_seed(0)
    return StreamSplat(enc, dec).eval()


@pytest.fixture(scope="module")
def model():
    return micro_model()


def write_clip(folder, n=7, size=(40, 70), seed=0, depth=True):
    """n PNG frames (+ disparity PNGs in the default <parent>/<name>_depth) -> list of RGB arrays."""
    from PIL import Image

    from streamsplat_ns.data.depth_io import write_depth_png16

    folder.mkdir(parents=True, exist_ok=True)
    ddir = folder.parent / f"{folder.name}_depth"
    ddir.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size[0], size[1] * 2, 3), dtype=np.uint8)
    frames = []
    for i in range(n):
        rgb = np.ascontiguousarray(np.roll(base, 3 * i, axis=1)[:, : size[1]])  # a moving scene
        Image.fromarray(rgb).save(folder / f"{i:05d}.png")
        if depth:
            write_depth_png16(ddir / f"{i:05d}_pred.png", rng.random(size).astype(np.float32))
        frames.append(rgb)
    return frames


def test_key_frames_rule():
    assert key_frames(10, 3) == [0, 3, 6, 9]
    assert key_frames(11, 3) == [0, 3, 6, 9, 10]  # the last frame closes a shorter interval
    assert key_frames(5, 1) == [0, 1, 2, 3, 4] and key_frames(1, 4) == [0] and key_frames(0, 2) == []
    with pytest.raises(ValueError, match="gap"):
        key_frames(5, 0)
    assert locate([0, 3, 6, 9, 10], 9.5) == (3, 0.5)
    assert locate([0, 3, 6], 3.0) == (1, 0.0) and locate([0, 3, 6], 6.0) == (1, 1.0)
    assert locate([0, 3, 6], 1.5) == (0, 0.5) and locate([0, 3, 6], 99) == (1, 1.0)


def test_folder_source_follows_the_rule_and_order(tmp_path):
    write_clip(tmp_path / "clip", n=8, depth=False)
    src = open_frames(tmp_path / "clip", frame_step=3)
    assert src.num_frames == 8 and src.size == (40, 70) and src.key_indices == [0, 3, 6, 7]
    got = [(f.index, f.stem, f.rgb.shape, f.rgb.dtype) for f in src]
    assert got == [(i, f"{i:05d}", (40, 70, 3), np.uint8) for i in (0, 3, 6, 7)]
    assert src.error is None
    src = open_frames(tmp_path / "clip", frame_step=3, max_frames=2)
    assert [f.index for f in src] == [0, 3] == src.key_indices


def test_damaged_folders_are_named(tmp_path):
    from PIL import Image

    write_clip(tmp_path / "odd", n=4, depth=False)
    Image.fromarray(np.zeros((40, 72, 3), np.uint8)).save(tmp_path / "odd" / "00002.png")
    with pytest.raises(DataError, match=r"00002\.png: frame size 72x40 differs from 00000\.png \(70x40\)"):
        open_frames(tmp_path / "odd")
    folder = tmp_path / "trunc"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 70, 3), dtype=np.uint8)).save(folder / f"{i:05d}.jpg", quality=95)
    bad = folder / "00002.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) * 2 // 3])  # the header survives, the pixel data does not
    src = open_frames(folder)
    assert [f.index for f in src] == [0, 1]  # stops at the damaged frame, names it
    assert isinstance(src.error, DataError) and "00002.jpg" in str(src.error) and "truncated" in str(src.error)
    bad.write_bytes(data[:40])  # not even a header: refused before any work
    with pytest.raises(DataError, match=r"00002\.jpg: not a readable image"):
        open_frames(folder)


def test_realtime_paces_and_drops_when_the_consumer_lags(tmp_path):
    write_clip(tmp_path / "clip", n=12, size=(8, 8), depth=False)
    t = time.perf_counter()
    assert len(list(open_frames(tmp_path / "clip", realtime=True, fps=100))) == 12
    assert time.perf_counter() - t > 0.1  # 12 frames at 100 frames/s
    src = open_frames(tmp_path / "clip", realtime=True, fps=200, queue_size=1)
    seen = []
    for f in src:
        seen.append(f.index)
        time.sleep(0.03)
    assert seen == sorted(seen) and seen[-1] == 11 and src.dropped > 0 and len(seen) + src.dropped == 12


def _resized(rgb: np.ndarray, size):
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def test_engine_equals_plain_session_and_clip(tmp_path, model):
    """Engine intervals == a plain eager StreamingSession fed the same frames and maps; reconstruct_clip (the
    viewer's / export's path) gives the same Gaussians for the same key frames; frame order kept."""
    rgbs = write_clip(tmp_path / "clip", n=6)
    disp = DisparitySource.files(tmp_path / "clip_depth")
    engine = ReconstructionEngine(model, options=InferenceOptions.eager(), disparity=disp)
    ivs = list(engine.stream(open_frames(tmp_path / "clip", frame_step=2)))
    assert [(iv.k, iv.frames) for iv in ivs] == [(0, (0, 2)), (1, (2, 4)), (2, (4, 5))]
    size = engine.size
    s = StreamingSession(model, InferenceOptions.eager())
    refs, xs, ds = [], [], []
    for i in (0, 2, 4, 5):
        x = _resized(rgbs[i], size)
        d = torch.from_numpy(disp.load(f"{i:05d}", size))[None, None]
        xs.append(x)
        ds.append(d)
        refs.append(s.push(x, d))
    for iv, ref in zip(ivs, refs[1:]):
        for f in FIELDS:
            assert torch.equal(getattr(iv.gaussians, f), getattr(ref, f)), f
    clip = engine.reconstruct_clip(torch.cat(xs), torch.cat(ds), key_gap=1)
    assert [c.frames for c in clip] == [(0, 1), (1, 2), (2, 3)]
    pair = engine.reconstruct_clip(torch.cat(xs[1:3]), torch.cat(ds[1:3]), key_gap=1, frames=[2, 4])
    assert [c.frames for c in pair] == [(2, 4)]
    for a, b in ((clip[2], ivs[2]), (pair[0], ivs[1])):
        for f in FIELDS:
            assert torch.allclose(getattr(a.gaussians, f), getattr(b.gaussians, f), atol=1e-6), f
    r = engine.render(ivs[0], [0.0, 0.5, 1.0])
    assert r.shape == (3, *size, 3) and torch.isfinite(r).all()
    st = engine.stats
    assert st["frames"] == 4 and st["intervals"] == 3 and st["stages_s"]["model"] > 0 and st["stages_s"]["decode"] > 0


def test_engine_rejects_bad_frames(model):
    engine = ReconstructionEngine(
        model, options=InferenceOptions.eager(), disparity=DisparitySource.depth_anything(_tiny_da(), short_side=56)
    )
    good = np.zeros((20, 30, 3), np.uint8)
    frames = [Frame(0, "a", good, 0.0), Frame(1, "b", np.zeros((20, 31, 3), np.uint8), 0.0)]
    with pytest.raises(ValueError, match=r"frame 1 \(b\) is 31x20"):
        list(engine.stream(frames))
    with pytest.raises(ValueError, match="uint8"):
        list(engine.stream([Frame(0, "a", good.astype(np.float32), 0.0)]))


def _tiny_da():
    from streamsplat_ns.depth.depth_anything import DepthAnythingConfig, DepthAnythingV2

    torch.manual_seed(1)
    return DepthAnythingV2(DepthAnythingConfig.of("tiny")).eval()


def test_engine_with_depth_anything(tmp_path, model):
    """Online disparity: the engine's DA-V2 path equals predict_disparity on the uploaded frame."""
    from streamsplat_ns.depth.depth_anything import predict_disparity

    rgbs = write_clip(tmp_path / "clip", n=3, depth=False)
    da = _tiny_da()
    engine = ReconstructionEngine(
        model, options=InferenceOptions.eager(), disparity=DisparitySource.depth_anything(da, short_side=56)
    )
    ivs = list(engine.stream(open_frames(tmp_path / "clip")))
    s = StreamingSession(model, InferenceOptions.eager())
    for i, rgb in enumerate(rgbs):
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
        d = predict_disparity(da, x, short_side=56, out_size=engine.size)[:, None]
        g = s.push(_resized(rgb, engine.size), d)
        if i:
            assert torch.equal(g.means, ivs[i - 1].gaussians.means)
    assert engine.stats["stages_s"]["depth"] > 0


def test_late_decoding_failure_stops_the_source_and_names_it(tmp_path):
    """A decoder error after some frames (a corrupt packet late in a file): iteration ends cleanly with the
    frames before it, and .error names the input and how far decoding got."""
    from streamsplat_ns.engine.frames import FrameSource

    class Late(FrameSource):
        def _items(self):
            for i in range(6):
                if i == 3:
                    raise RuntimeError("Invalid data found when processing input")
                yield i, f"{i:05d}", (lambda: np.zeros((4, 4, 3), np.uint8))

    src = Late(tmp_path / "clip.mp4")
    assert [f.index for f in src] == [0, 1, 2]
    assert isinstance(src.error, DataError)
    assert "clip.mp4: decoding stopped after 3 frames" in str(src.error) and "Invalid data" in str(src.error)


@pytest.mark.parametrize("depth", ["file", "compute"])
def test_warm_up_then_stream_equals_a_cold_stream(tmp_path, model, depth):
    """``warm_up`` (what streamsplat-live runs before its source starts) leaves no trace in the results or the
    statistics: the stream that follows gives the Gaussians of a fresh engine's stream, and the warm
    session is handed to that stream (and closed with it)."""
    write_clip(tmp_path / "clip", n=4, size=(40, 70))

    def engine():
        disp = (
            DisparitySource.files(tmp_path / "clip_depth")
            if depth == "file"
            else DisparitySource.depth_anything(_tiny_da(), short_side=56)
        )
        return ReconstructionEngine(model, options=InferenceOptions.eager(), disparity=disp)

    cold = [iv.gaussians for iv in engine().stream(open_frames(tmp_path / "clip"))]
    warm_engine = engine()
    assert warm_engine.warm_up(40, 70, frames=3, times=[0.0, 0.5]) > 0
    warm_session = warm_engine._warm
    assert warm_session is not None and warm_session.frames_seen == 0
    ivs = list(warm_engine.stream(open_frames(tmp_path / "clip")))
    assert warm_engine._warm is None and warm_session.current is None  # used by the stream, then closed
    assert [iv.frames for iv in ivs] == [(0, 1), (1, 2), (2, 3)]
    for a, b in zip(cold, ivs):
        for f in FIELDS:
            assert torch.equal(getattr(a, f), getattr(b.gaussians, f)), f
    st = warm_engine.stats
    assert st["frames"] == 4 and st["intervals"] == 3


def test_warm_session_not_streamed_is_closed_with_the_engine(model):
    eng = ReconstructionEngine(
        model, options=InferenceOptions.eager(), disparity=DisparitySource.depth_anything(_tiny_da(), short_side=56)
    )
    eng.warm_up(30, 40, frames=3)
    s = eng._warm
    assert s is not None and s.prev is None
    eng.close()
    assert eng._warm is None


class _FakeStream:
    def __init__(self, *a, **k):
        self.waited = []

    def wait_event(self, e):
        self.waited.append(e)


class _FakeEvent:
    def __init__(self, *a, **k):
        self.recorded = 0

    def record(self, stream=None):
        self.recorded += 1


def test_render_async_keeps_order_bounds_flight_and_marks_the_stream(model, monkeypatch):
    """The CUDA logic of ``render_async`` with torch.cuda's streams and events faked on CPU: results equal
    ``render`` and come back in order, at most two renders are in flight, the render stream waits for the
    caller's event and every Gaussian tensor is marked as used on it; a failing render reaches the writer."""
    import contextlib
    import threading

    from streamsplat_ns.engine import HostFrames

    monkeypatch.setattr(torch.cuda, "Stream", _FakeStream)
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    marked = []
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, s: marked.append(s), raising=False)
    eng = ReconstructionEngine(
        model, options=InferenceOptions.eager(), disparity=DisparitySource.depth_anything(_tiny_da(), short_side=56)
    )
    frames = [Frame(i, f"{i:05d}", np.roll(np.arange(40 * 70 * 3, dtype=np.uint8).reshape(40, 70, 3), 5 * i, 1), 0.0)
              for i in range(5)]  # fmt: skip
    ivs = list(eng.stream(frames))
    refs = [eng.render(iv, [0.0, 0.5]) for iv in ivs]
    eng.cuda = True  # from here on, the CUDA branch (with the fakes above)
    monkeypatch.setattr(eng, "_times_tensor", lambda times: torch.tensor(times, dtype=torch.float32))
    inflight, peak, lock = [0], [0], threading.Lock()
    real_render = eng.render

    def slow_render(g, times):
        with lock:
            inflight[0] += 1
            peak[0] = max(peak[0], inflight[0])
        time.sleep(0.05)
        with lock:
            inflight[0] -= 1
        return real_render(g, times)

    monkeypatch.setattr(eng, "render", slow_render)
    pend = [eng.render_async(iv, [0.0, 0.5]) for iv in ivs]
    outs = [p.result() for p in pend]
    for o, r in zip(outs, refs):
        assert isinstance(o, HostFrames)
        np.testing.assert_array_equal(o.numpy(), HostFrames(r).numpy())
    assert peak[0] == 1  # one render thread, FIFO
    assert eng._render_slots._value == 2  # every slot given back
    rs = eng._render_stream
    assert len(rs.waited) == len(ivs) and all(e.recorded == 1 for e in rs.waited)
    n_tensors = sum(isinstance(getattr(ivs[0].gaussians, f), torch.Tensor) for f in FIELDS)
    assert marked.count(rs) >= n_tensors * len(ivs)

    gate = threading.Event()

    def gated(g, times):
        gate.wait(10)
        return real_render(g, times)

    monkeypatch.setattr(eng, "render", gated)
    first_two = [eng.render_async(iv, [0.0, 0.5]) for iv in ivs[:2]]  # one rendering, one queued
    third = []
    caller = threading.Thread(target=lambda: third.append(eng.render_async(ivs[2], [0.0, 0.5])), daemon=True)
    caller.start()
    caller.join(0.3)
    assert caller.is_alive() and not third  # a third render waits: at most two in flight
    gate.set()
    caller.join(10)
    assert third and all(p.result() is not None for p in first_two + third)

    def broken(g, times):
        raise RuntimeError("render failed")

    monkeypatch.setattr(eng, "render", broken)
    with pytest.raises(RuntimeError, match="render failed"):
        eng.render_async(ivs[0], [0.0, 0.5]).numpy()
    assert eng._render_slots._value == 2
    eng.close()
    assert eng._render_pool is None


def test_times_cache_is_per_stream(model, monkeypatch):
    """A cached times tensor is only read by the CUDA stream that queued its copy (the render thread's
    stream and the caller's each get their own), so no stream can read it before the copy lands."""
    eng = ReconstructionEngine(model, options=InferenceOptions.eager())
    eng.cuda = True
    current = {"s": 1}

    class _S:
        def __init__(self, n):
            self.cuda_stream = n

    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a: _S(current["s"]))
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: self)
    monkeypatch.setattr(eng, "device", torch.device("cpu"))
    a = eng._times_tensor([0.0, 0.5])
    assert eng._times_tensor([0.0, 0.5]) is a
    current["s"] = 2
    b = eng._times_tensor([0.0, 0.5])
    assert b is not a and torch.equal(a, b)
    for i in range(40):
        eng._times_tensor([float(i)])
    assert len(eng._times) == 32  # bounded
