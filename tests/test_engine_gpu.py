"""GPU checks of the engine (run by the lead on the device: ``pytest -q -m gpu tests/test_engine_gpu.py``):
the fastest path equals the eager oracle to bf16 rounding, end to end (depth included); device memory is
flat over a long stream; the steady-state loop never synchronises the host."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_engine import _tiny_da, write_clip  # noqa: E402

from streamsplat_ns.engine import DisparitySource, Frame, HostFrames, ReconstructionEngine, open_frames  # noqa: E402
from streamsplat_ns.inference import InferenceOptions  # noqa: E402
from streamsplat_ns.networks import ModelConfig, StreamSplat  # noqa: E402

pytestmark = pytest.mark.gpu


def tiny_cuda(seed=0):
    torch.manual_seed(seed)
    return StreamSplat.from_config(ModelConfig.tiny()).cuda().eval()


@pytest.mark.parametrize("depth", ["file", "compute"])
def test_gpu_fastest_engine_matches_eager(tmp_path, depth):
    write_clip(tmp_path / "clip", n=10, size=(60, 100))

    def run(options):
        disp = (
            DisparitySource.files(tmp_path / "clip_depth")
            if depth == "file"
            else DisparitySource.depth_anything(_tiny_da().cuda(), short_side=56)
        )
        eng = ReconstructionEngine(tiny_cuda(), options=options, disparity=disp)
        out = []
        for iv in eng.stream(open_frames(tmp_path / "clip")):
            out.append((iv.frames, iv.gaussians, eng.render(iv, [0.0, 0.5, 1.0])))
        return out, eng.stats

    eager, _ = run(InferenceOptions.eager())
    fast, stats = run(InferenceOptions.fastest())
    assert [a[0] for a in eager] == [b[0] for b in fast] == [(i, i + 1) for i in range(9)]
    dm = max(float((a[1].means - b[1].means).abs().max()) for a, b in zip(eager, fast))
    dr = max(float((a[2] - b[2]).abs().max()) for a, b in zip(eager, fast))
    print(f"fastest vs eager ({depth} depth): max |means| diff {dm:.2e}, max |render| diff {dr:.2e}; stats {stats}")
    assert dm < 5e-2 and dr < 0.1, (dm, dr)
    assert stats["stages_s"]["model"] > 0


@pytest.mark.parametrize("variant", ["cross_pixel", "token_correlation"])
def test_gpu_fastest_engine_matches_eager_cross_pixel(tmp_path, variant):
    """The demo recipe's decoder variants through the CUDA-graph step equal the eager oracle: ``cross_pixel``
    (the cached head terms then carry each frame's share in the other frame's heads) and
    ``token_correlation`` (the correlation of the cached and the new frame's tokens inside the graph)."""
    write_clip(tmp_path / "clip", n=8, size=(60, 100))

    def run(options):
        torch.manual_seed(0)
        cfg = ModelConfig.tiny()
        if variant == "cross_pixel":
            cfg.decoder.cross_pixel = True
        else:
            cfg.decoder.token_correlation = 1
        model = StreamSplat.from_config(cfg).cuda().eval()
        with torch.no_grad():  # zero-initialised: make it matter
            (model.decoder.cross_proj if variant == "cross_pixel" else model.decoder.corr_proj).weight.normal_(0, 0.3)
        eng = ReconstructionEngine(model, options=options, disparity=DisparitySource.files(tmp_path / "clip_depth"))
        return [iv.gaussians for iv in eng.stream(open_frames(tmp_path / "clip"))]

    eager, fast = run(InferenceOptions.eager()), run(InferenceOptions.fastest())
    assert len(eager) == len(fast) == 7
    dv = max(float((a.motion - b.motion).abs().max()) for a, b in zip(eager, fast))
    print(f"{variant} fastest vs eager: max |motion| diff {dv:.2e}")
    assert dv < 5e-2, dv


def test_gpu_memory_flat_and_no_host_sync(tmp_path):
    """400 frames through depth (DA-V2 tiny), the graph step, batched renders and the mp4 writer: allocated
    memory after interval 50 equals that after 398. In the steady state depth + step never synchronise the
    host, and each batched render synchronises exactly once (the CUDA rasterizer reads its tile-intersection
    count to size the sort; an H200 run of the first version of this test, which expected none, failed)."""
    model = tiny_cuda()
    eng = ReconstructionEngine(
        model,
        options=InferenceOptions.fastest(),
        disparity=DisparitySource.depth_anything(_tiny_da().cuda(), short_side=56),
    )
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (60, 300, 3), dtype=np.uint8)
    frames = (Frame(i, f"{i:05d}", np.ascontiguousarray(np.roll(base, i, 1)[:, :100]), 0.0) for i in range(400))
    writer = eng.open_video(tmp_path / "v.mp4", 30.0)
    mem = {}
    syncs = {"step": 0, "render": 0}
    where = {"step": set(), "render": set()}  # call sites, for the failure message
    renders = 0

    def count(ws, phase):
        hits = [x for x in ws if "synchroniz" in str(x.message).lower()]
        syncs[phase] += len(hits)
        where[phase].update(f"{x.filename}:{x.lineno}" for x in hits)
        ws.clear()

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for iv in eng.stream(frames):
            if iv.k == 20:
                torch.cuda.set_sync_debug_mode("warn")  # warm-up (graph capture, kernel choice) is over
                w.clear()
            count(w, "step")  # what the stream did to produce this interval
            if iv.k < 20 or iv.k % 2 == 0:  # every other interval is rendered in the steady state
                writer.write(HostFrames(eng.render(iv, [0.0, 0.25, 0.5, 0.75])))
                renders += iv.k >= 20
            count(w, "render")
            if iv.k in (50, 398):
                torch.cuda.set_sync_debug_mode(0)
                torch.cuda.synchronize()
                mem[iv.k] = torch.cuda.memory_allocated()
                torch.cuda.set_sync_debug_mode("warn")
                w.clear()
        torch.cuda.set_sync_debug_mode(0)
    assert writer.close() == (20 + renders) * 4
    assert syncs["step"] == 0, (
        f"{syncs['step']} host synchronisations in depth + step over 378 intervals at {where['step']}"
    )
    assert syncs["render"] == renders, (
        f"{syncs['render']} host synchronisations in {renders} batched renders at {where['render']}"
    )
    assert abs(mem[398] - mem[50]) < 2**20, mem
    print("engine stats:", eng.stats)


def test_gpu_warm_up_hands_a_captured_graph_to_the_stream(tmp_path):
    """warm_up (streamsplat-live's start) captures the step's CUDA graph on synthetic frames; the stream that
    follows replays it from its first pair and gives the eager path's Gaussians."""
    write_clip(tmp_path / "clip", n=6, size=(60, 100))

    def engine(options):
        disp = DisparitySource.depth_anything(_tiny_da().cuda(), short_side=56)
        return ReconstructionEngine(tiny_cuda(), options=options, disparity=disp)

    eager = [iv.gaussians for iv in engine(InferenceOptions.eager()).stream(open_frames(tmp_path / "clip"))]
    eng = engine(InferenceOptions.fastest())
    eng.warm_up(60, 100, times=[0.5])
    assert eng._warm is not None and eng._warm._graph is not None
    fast = [iv.gaussians for iv in eng.stream(open_frames(tmp_path / "clip"))]
    assert len(fast) == len(eager) == 5
    dm = max(float((a.means - b.means).abs().max()) for a, b in zip(eager, fast))
    assert dm < 5e-2, dm


def test_gpu_render_async_equals_render(tmp_path):
    """``render_async`` (the render thread and stream of ``--render-thread``) gives ``render``'s frames while
    the fastest path keeps stepping on the main stream; frames come back in order."""
    write_clip(tmp_path / "clip", n=12, size=(60, 100))
    eng = ReconstructionEngine(
        tiny_cuda(), options=InferenceOptions.fastest(), disparity=DisparitySource.files(tmp_path / "clip_depth")
    )
    pending, refs = [], []
    for iv in eng.stream(open_frames(tmp_path / "clip")):
        pending.append(eng.render_async(iv, [0.0, 0.5, 1.0]))
        refs.append(HostFrames(eng.render(iv, [0.0, 0.5, 1.0])))
    assert len(pending) == 11
    for p, r in zip(pending, refs):
        np.testing.assert_array_equal(p.numpy(), r.numpy())
    eng.close()
