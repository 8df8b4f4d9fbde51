"""CUDA-only logic of the inference fast path, checked on CPU with torch.cuda's streams, events and graphs
replaced by recording fakes: what a captured step keeps alive, what close() may do during another capture,
when cuBLAS workspaces may be cleared, per-thread streams, and a model prepared again under a live graph."""

import contextlib
import threading

import pytest
import torch

from streamsplat_ns.inference import InferenceOptions, prepare
from streamsplat_ns.inference import graph as G
from streamsplat_ns.networks import ModelConfig, StreamSplat


class _Stream:
    def __init__(self, *a, **k):
        self.synced = 0

    def wait_stream(self, other):
        pass

    def wait_event(self, e):
        pass

    def synchronize(self):
        self.synced += 1


class _Event:
    def __init__(self, *a, **k):
        self.recorded = self.synced = 0

    def record(self, stream=None):
        self.recorded += 1

    def synchronize(self):
        self.synced += 1


class _Graph:
    def __init__(self):
        self.replays = self.resets = 0

    def replay(self):
        self.replays += 1

    def reset(self):
        self.resets += 1


@pytest.fixture()
def fake_cuda(monkeypatch):
    """torch.cuda's stream / event / graph API as recording fakes (the captured body runs eagerly on CPU)."""
    state = {"capturing": False, "cleared": 0, "current": _Stream()}
    monkeypatch.setattr(torch.cuda, "Stream", _Stream)
    monkeypatch.setattr(torch.cuda, "Event", _Event)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", _Graph)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "graph", lambda g, **kw: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a: state["current"])
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: state["capturing"])
    monkeypatch.setattr(
        torch._C, "_cuda_clearCublasWorkspaces", lambda: state.update(cleared=state["cleared"] + 1), raising=False
    )
    monkeypatch.setattr(G, "_STREAMS", {})
    monkeypatch.setattr(G, "_LIVE_GRAPHS", 0, raising=False)
    return state


@pytest.fixture()
def tiny():
    torch.manual_seed(0)
    return StreamSplat.from_config(ModelConfig.tiny()).eval()


def _step(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    rgb, disp = torch.rand(1, 3, 32, 64, generator=g), torch.rand(1, 1, 32, 64, generator=g) * 7 + 1
    with torch.no_grad():
        prev = model.encode_frame(rgb, model.prepare_disparity(disp))
        return G.GraphStep(model, prev, rgb, disp, warmup=1, overlap=False), rgb, disp


def test_step_keeps_the_cached_pos_embed_it_captured(fake_cuda, tiny):
    """DINOv2 caches ONE pos-embed; a call at another size replaces it and frees the old tensor, whose
    memory the captured graph would still read (silently wrong conditions on CUDA). The step holds it."""
    step, _, _ = _step(tiny)
    dinos = [m for m in tiny.modules() if isinstance(getattr(m, "_pe_cache", None), dict) and m._pe_cache]
    assert dinos, "the tiny model's DINOv2 filled no pos-embed cache"
    captured = [t for m in dinos for t in m._pe_cache.values()]
    with torch.no_grad():  # another size: the one-entry cache now holds a different tensor
        for m in dinos:
            p = m.patch_size
            m.prepare_tokens(torch.rand(1, 3, 3 * p, 5 * p))
    assert all(all(t is not c for t in m._pe_cache.values()) for m in dinos for c in captured)
    assert all(any(k is c for k in step.keep) for c in captured)
    step.close()
    assert step.keep == ()


def test_close_during_another_capture_neither_syncs_nor_clears(fake_cuda, tiny):
    """A session dropped (garbage-collected) while this thread captures another graph: a stream sync or a
    cuBLAS workspace clear there would break that capture. torch.cuda.graph synced the device already."""
    step, rgb, disp = _step(tiny)
    step(rgb, disp)
    graph = step.graph
    fake_cuda["capturing"] = True
    step.close()
    assert graph.resets == 1 and step.graph is None
    assert fake_cuda["current"].synced == 0 and step.done.synced == 0
    assert fake_cuda["cleared"] == 0


def test_close_waits_for_the_last_replay_and_clears_workspaces_only_when_no_graph_is_live(fake_cuda, tiny):
    """close() waits on an event recorded after the replay (it may have run on another thread's stream),
    and clears cuBLAS workspaces only once no captured graph (another session, DepthInference) is live:
    later captures on torch's shared capture stream reuse the workspace allocated in an earlier graph's pool."""
    a, rgb, disp = _step(tiny, seed=1)
    b, _, _ = _step(tiny, seed=2)
    a(rgb, disp)
    assert a.done.recorded == 1
    a.close()
    assert a.done.synced == 1
    assert fake_cuda["cleared"] == 0  # b still replays with those workspaces
    b.close()
    assert fake_cuda["cleared"] == 1
    b.close()  # idempotent: no second release
    assert G._LIVE_GRAPHS == 0 and fake_cuda["cleared"] == 1


def test_depth_graphs_count_as_live(fake_cuda, tiny):
    """DepthInference's graphs are counted too: a session closed while depth graphs live keeps the workspaces."""
    from streamsplat_ns.inference.depth import DepthInference
    from streamsplat_ns.inference.depth import _Graph as DepthGraph

    d = object.__new__(DepthInference)
    d._graphs = {}
    for k in range(2):
        G.register_graph()
        d._graphs[k] = DepthGraph(torch.cuda.CUDAGraph(), None, None, ())
    step, _, _ = _step(tiny)
    step.close()
    assert fake_cuda["cleared"] == 0
    graphs = [g.graph for g in d._graphs.values()]
    d.close()
    assert all(g.resets == 1 for g in graphs) and G._LIVE_GRAPHS == 0


def test_streams_are_per_thread(fake_cuda):
    """The warm-up / side streams are per thread: work another thread queued on a shared stream while this
    thread captures would land inside this thread's graph."""
    dev = torch.device("cuda", 0)
    mine = G._side_stream(dev)
    assert G._side_stream(dev) is mine and G._warmup_stream(dev) is not mine
    other = {}
    t = threading.Thread(target=lambda: other.setdefault("s", G._side_stream(dev)))
    t.start()
    t.join()
    assert other["s"] is not mine


def test_step_refuses_to_replay_after_prepare(fake_cuda, tiny):
    """prepare() with other options re-casts the weights the captured graph reads: replaying would use freed
    or stale weights, so the step says to reset the session instead."""
    step, rgb, disp = _step(tiny)
    step(rgb, disp)
    prepare(tiny, InferenceOptions(dtype=torch.bfloat16))
    with pytest.raises(RuntimeError, match="reset"):
        step(rgb, disp)
    step.close()


def test_capture_runs_on_this_threads_own_stream(fake_cuda, tiny, monkeypatch):
    """torch.cuda.graph's default capture stream is shared by the whole process: the step (and Depth
    Anything V2) capture on a per-thread stream so two threads can capture at the same time."""
    seen = []
    monkeypatch.setattr(torch.cuda, "graph", lambda g, **kw: seen.append(kw) or contextlib.nullcontext())
    step, _, _ = _step(tiny)
    dev = torch.device("cuda", 0)
    assert seen and seen[0].get("stream") is G.capture_stream(dev)
    assert seen[0].get("capture_error_mode") == "thread_local"
    other = {}
    t = threading.Thread(target=lambda: other.setdefault("s", G.capture_stream(dev)))
    t.start()
    t.join()
    assert other["s"] is not G.capture_stream(dev)
    step.close()


def test_gpu_timer_syncs_only_its_stream(fake_cuda, monkeypatch):
    """Kernel-choice timing may run while another thread captures a graph: no device-wide synchronise."""
    from streamsplat_ns.inference.choices import gpu_time_ms

    def no_device_sync(*a, **k):
        raise AssertionError("torch.cuda.synchronize() during kernel timing")

    monkeypatch.setattr(torch.cuda, "synchronize", no_device_sync)
    monkeypatch.setattr(_Event, "elapsed_time", lambda self, other: 8.0, raising=False)
    calls = []
    assert gpu_time_ms(lambda: calls.append(1), iters=4, warmup=1) == 2.0
    assert len(calls) == 5 and fake_cuda["current"].synced == 1


def test_replay_waits_for_the_previous_replay_on_any_stream(fake_cuda, tiny, monkeypatch):
    """Each replay first waits on the event recorded after the previous replay's output copies, so a push
    from another stream does not overwrite the static input / output buffers while they are still read."""
    waits = []
    monkeypatch.setattr(_Stream, "wait_event", lambda self, e: waits.append(e), raising=False)
    step, rgb, disp = _step(tiny)
    waits.clear()
    step(rgb, disp)
    step(rgb, disp)
    assert waits.count(step.done) == 2 and step.done.recorded == 2
    step.close()


def test_prepare_back_to_fp32_warns_that_bf16_rounding_stays(tiny):
    prepare(tiny, InferenceOptions(dtype=torch.bfloat16))
    with pytest.warns(RuntimeWarning, match="load the checkpoint again"):
        prepare(tiny, InferenceOptions.eager())


def test_stream_generator_closes_its_session(tiny, monkeypatch):
    """streaming.stream() releases its session (CUDA graph, pool) when closed early, not at garbage collection."""
    from streamsplat_ns import streaming

    closed = []
    monkeypatch.setattr(streaming.StreamingSession, "close", lambda self: closed.append(self))
    g = torch.Generator().manual_seed(0)
    frames = [(torch.rand(3, 32, 64, generator=g), torch.rand(1, 32, 64, generator=g) + 1) for _ in range(3)]
    gen = streaming.stream(tiny, frames)
    assert next(gen)[0] == 0
    keep_alive = gen.gi_frame.f_locals["s"]  # the session itself stays referenced: only close() may release it
    gen.close()
    assert closed == [keep_alive]


def test_prepare_with_other_switches_but_same_dtype_keeps_the_graph(fake_cuda, tiny):
    """Options that keep the weight tensors (e.g. cuda_graph / overlap off for another caller) must not
    stop a live session's graph: only a cast replaces the tensors the graph reads."""
    prepare(tiny, InferenceOptions.fastest())
    step, rgb, disp = _step(tiny)
    prepare(tiny, InferenceOptions.fastest().replace(cuda_graph=False, overlap=False))
    step(rgb, disp)
    step.close()


def test_depth_and_step_capture_on_different_streams(fake_cuda, monkeypatch):
    """cuBLAS takes its workspace by (handle, stream) at capture: the depth graph (replayed on the engine's
    side stream) and the step graph (main stream) must not be captured on one stream, or they share it."""
    from streamsplat_ns.inference.depth import DepthInference

    seen = []
    monkeypatch.setattr(torch.cuda, "graph", lambda g, **kw: seen.append(kw) or contextlib.nullcontext())
    d = object.__new__(DepthInference)
    d.device, d.warmup, d._graphs = torch.device("cpu"), 1, {}  # (the fake streams key it as cuda:0)
    d.model = torch.nn.Module()
    d.model.pretrained = torch.nn.Identity()
    d._forward = lambda x: x * 2
    g = d._capture(torch.zeros(1, 3, 4, 4))
    dev = torch.device("cuda", 0)
    assert seen[0]["stream"] is G.capture_stream(dev, G.DEPTH)
    assert G.capture_stream(dev, G.DEPTH) is not G.capture_stream(dev, G.STEP)
    assert G._LIVE_GRAPHS == 1
    d._graphs[0] = g
    d.close()
    assert G._LIVE_GRAPHS == 0
