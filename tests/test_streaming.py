"""Streaming: equals pairwise batch inference, renders inside the interval, constant memory."""

import gc

import pytest
import torch

from streamsplat_ns.inference import InferenceOptions, prepare
from streamsplat_ns.networks import ModelConfig, StreamSplat
from streamsplat_ns.streaming import StreamingSession, stream


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return StreamSplat.from_config(ModelConfig.tiny()).eval()


def clip(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(3, 32, 64, generator=g), torch.rand(1, 32, 64, generator=g) * 7 + 1) for _ in range(n)]


def test_streaming_equals_pairwise(model):
    frames = clip(5)
    s = StreamingSession(model)
    assert s.push(*frames[0]) is None
    outs = [s.push(*f) for f in frames[1:]]
    assert s.interval == (3, 4)
    with torch.no_grad():
        for k, g in enumerate(outs):
            (r0, d0), (r1, d1) = frames[k], frames[k + 1]
            ref = model.predict_pair(r0[None], d0[None], r1[None], d1[None])
            for f in ("means", "scales", "opacities", "colours", "motion", "t0", "gamma0", "gamma1"):
                assert torch.allclose(getattr(g, f), getattr(ref, f), atol=1e-6), f
    assert [k for k, _ in stream(model, frames)] == [0, 1, 2, 3]


def test_pair_depth_norm_streaming_equals_pairwise():
    torch.manual_seed(0)
    m = StreamSplat.from_config(ModelConfig.tiny(depth_norm="pair")).eval()
    frames = clip(3, seed=1)
    frames[2] = (frames[2][0], frames[2][1] * 3)  # a different disparity range than frame 1
    s = StreamingSession(m)
    s.push(*frames[0])
    s.push(*frames[1])
    g = s.push(*frames[2])
    with torch.no_grad():
        ref = m.predict_pair(frames[1][0][None], frames[1][1][None], frames[2][0][None], frames[2][1][None])
        per_frame = StreamSplat.from_config(ModelConfig.tiny(depth_norm="frame"))
        per_frame.load_state_dict(m.state_dict())
        (r1, d1), (r2, d2) = frames[1], frames[2]
        other = per_frame.eval().predict_pair(r1[None], d1[None], r2[None], d2[None])
    assert torch.allclose(g.means, ref.means, atol=1e-6) and torch.allclose(g.motion, ref.motion, atol=1e-6)
    assert (g.means - other.means).abs().max() > 1e-4  # the joint range really differs from per-frame


def test_render_inside_interval(model):
    s = StreamingSession(model)
    with pytest.raises(RuntimeError, match="two frames"):
        s.render(torch.tensor([0.5]))
    for f in clip(2):
        s.push(*f)
    out = s.render(torch.linspace(0, 1, 3))
    assert out.rgb.shape == (1, 3, 32, 64, 3) and torch.isfinite(out.rgb).all()


def test_bad_frame_shape(model):
    s = StreamingSession(model)
    with pytest.raises(ValueError, match="rgb must be"):
        s.push(torch.rand(32, 64, 3), torch.rand(1, 32, 64))
    s.push(torch.rand(3, 32, 64), torch.rand(1, 32, 64))
    with pytest.raises(ValueError, match="shape changed"):
        s.push(torch.rand(2, 3, 32, 64), torch.rand(2, 1, 32, 64))


def micro_model():
    """Smallest sensible config (1 block everywhere) so that 200 frames stay fast on 2 CPU cores."""
    from streamsplat_ns.networks import DecoderConfig, DinoConfig, EncoderConfig, UpsamplerConfig

    up = UpsamplerConfig(depth=1, window_size=64, min_width=16, head_dim=16)
    enc = EncoderConfig.tiny(depth=1, upsampler=up)
    dec = DecoderConfig.tiny(depth=1, upsampler=up, dino=DinoConfig(embed_dim=32, depth=1, num_heads=2, img_size=56))
    torch.manual_seed(0)
    return StreamSplat(enc, dec).eval()


def test_memory_constant_over_200_frames():
    """Live tensors (and their bytes) after frame 20 and after frame 200 are the same."""
    s = StreamingSession(micro_model())
    g = torch.Generator().manual_seed(5)
    rgb, disp = torch.rand(3, 32, 64, generator=g), torch.rand(1, 32, 64, generator=g)

    def live():
        gc.collect()
        ts = [o for o in gc.get_objects() if isinstance(o, torch.Tensor)]
        return len(ts), sum(t.numel() * t.element_size() for t in ts)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny GEMMs: one thread avoids contention on a shared 2-core machine
    try:
        for i in range(200):
            s.push(rgb + 0.001 * i, disp)
            if i == 19:
                at20 = live()
    finally:
        torch.set_num_threads(threads)
    assert live() == at20
    assert s.frames_seen == 200


def test_session_options_and_close(model):
    """Options pick the switches (eager on CPU by default), explicit ones are applied to the model, and a
    closed session (context manager) drops its cached state and starts a new stream on the next push."""
    assert StreamingSession(model).cuda_graph is False  # default_for(cpu) = eager
    s = StreamingSession(model, InferenceOptions.eager(), cuda_graph=True, overlap=False)
    assert s.cuda_graph is True and s.overlap is False  # the keywords override the options
    frames = clip(3, seed=4)
    with StreamingSession(model, InferenceOptions.eager()) as s:
        s.push(*frames[0])
        assert s.push(*frames[1]) is not None and s.prev is not None
    assert s.prev is None and s.current is None and s.frames_seen == 0
    assert s.push(*frames[2]) is None  # a new stream
    s.close()
    s.close()  # idempotent


@pytest.mark.gpu
def test_gpu_cuda_graph_and_fused_match_eager():
    """On CUDA: the CUDA-graph session and the fused Triton path give the eager session's Gaussians."""
    torch.manual_seed(0)
    m = StreamSplat.from_config(ModelConfig.tiny()).cuda().eval()
    frames = [(r.cuda(), d.cuda()) for r, d in clip(5, seed=3)]

    def run(cuda_graph, overlap=True):
        with StreamingSession(m, cuda_graph=cuda_graph, overlap=overlap) as s:
            return [s.push(*f) for f in frames][1:]

    eager, graph, one_stream = run(False), run(True), run(True, overlap=False)
    for a, b, c in zip(eager, graph, one_stream):
        assert torch.allclose(a.means, b.means, atol=1e-5) and torch.allclose(a.motion, b.motion, atol=1e-5)
        assert torch.allclose(a.gamma0, b.gamma0, atol=1e-5) and torch.allclose(a.colours, b.colours, atol=1e-5)
        # two streams run the same kernels as one: the results agree to rounding
        assert torch.allclose(b.means, c.means, atol=1e-6) and torch.allclose(b.motion, c.motion, atol=1e-6)
    prepare(m, InferenceOptions(dtype=torch.bfloat16))
    plain = run(False)
    prepare(m, InferenceOptions.fastest())
    fused = run(True)
    for a, b in zip(plain, fused):
        assert (a.means - b.means).abs().max() < 2e-2 and (a.motion - b.motion).abs().max() < 2e-2
    prepare(m, InferenceOptions.eager())  # plain fp32 modules again: eager results up to the bf16-rounded weights
    for a, b in zip(eager, run(False)):
        assert (a.means - b.means).abs().max() < 2e-2


@pytest.mark.gpu
def test_gpu_session_close_returns_memory():
    """A CUDA-graph session's graph, pool and static buffers are returned by close(), by the context
    manager and by deleting the session (issue 15: 66-169 MiB stayed allocated per session)."""
    torch.manual_seed(0)
    m = prepare(StreamSplat.from_config(ModelConfig.tiny()).cuda().eval(), InferenceOptions.fastest())
    frames = [(r.cuda(), d.cuda()) for r, d in clip(4, seed=5)]

    def run_session(how):
        s = StreamingSession(m)  # the default on CUDA: the CUDA graph
        assert s.cuda_graph
        for f in frames:
            s.push(*f)
        assert s._graph is not None
        if how == "close":
            s.close()
        elif how == "with":
            with s:
                pass
        del s

    run_session("close")  # warm-up: kernel choices, Triton compilation, cuBLAS handles
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    for how in ("close", "with", "del", "close", "del"):
        run_session(how)
        torch.cuda.synchronize()
        now = torch.cuda.memory_allocated()
        assert now <= base + (1 << 20), (how, (now - base) / 2**20)


class _EagerGraph:
    """Stands in for inference.graph.GraphStep on CPU: the same contract (static previous frame, replaced by
    the new one on each call), computed eagerly, so a session's graph bookkeeping can be checked here."""

    def __init__(self, model, prev, rgb, disp, overlap=True):
        self.model, self.prev, self.closed = model, prev, False

    def __call__(self, rgb, disp):
        new = self.model.encode_frame(rgb, self.model.prepare_disparity(disp))
        out, self.prev = self.model.decode_pair(self.prev, new), new
        return out

    def close(self):
        self.closed = True


def test_restart_keeps_the_graph_and_starts_a_new_stream(model):
    """restart() (the engine's warm-up hands over a warmed session with it): the graph is kept, the first
    frame after it yields nothing, and the pairs that follow equal a fresh session's."""
    warm, new = clip(3, seed=1), clip(4, seed=2)
    s = StreamingSession(model, cuda_graph=False)
    with torch.no_grad():
        s.push(*warm[0])
        s.push(*warm[1])
        s._graph = _EagerGraph(model, s.prev, *warm[1])  # what a CUDA session captures after its second frame
        s.push(*warm[2])
    g = s._graph
    assert isinstance(g, _EagerGraph)
    s.restart()
    assert s._graph is g and s.current is None and s.frames_seen == 0 and s.interval is None
    with torch.no_grad():
        outs = [s.push(*f) for f in new]
        fresh = StreamingSession(model, cuda_graph=False)
        refs = [fresh.push(*f) for f in new]
    assert outs[0] is None and refs[0] is None and s.interval == (2, 3)
    for a, b in zip(outs[1:], refs[1:]):
        for f in ("means", "scales", "opacities", "colours", "motion", "gamma0", "gamma1"):
            assert torch.allclose(getattr(a, f), getattr(b, f), atol=1e-6), f
    s.close()
    assert g.closed and s._graph is None


def test_restart_without_a_graph_is_reset(model):
    s = StreamingSession(model, cuda_graph=False)
    for f in clip(2):
        s.push(*f)
    s.restart()
    assert s.prev is None and s.current is None and s.frames_seen == 0 and s._shape is None


@pytest.mark.gpu
def test_gpu_restart_keeps_the_captured_graph():
    """On CUDA: after restart() the captured graph serves a new stream; its pairs equal a fresh session's."""
    torch.manual_seed(0)
    m = prepare(StreamSplat.from_config(ModelConfig.tiny()).cuda().eval(), InferenceOptions.fastest())
    warm = [(r.cuda(), d.cuda()) for r, d in clip(4, seed=6)]
    new = [(r.cuda(), d.cuda()) for r, d in clip(4, seed=7)]
    with StreamingSession(m) as s, StreamingSession(m) as fresh:
        for f in warm:
            s.push(*f)
        g = s._graph
        assert g is not None
        s.restart()
        outs = [s.push(*f) for f in new]
        refs = [fresh.push(*f) for f in new]
        assert s._graph is g and outs[0] is None
        for a, b in zip(outs[1:], refs[1:]):
            assert (a.means - b.means).abs().max() < 1e-2 and (a.motion - b.motion).abs().max() < 1e-2
