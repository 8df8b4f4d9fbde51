"""The streaming step captured as one CUDA graph (inference only).

After the first pair, the whole per-frame step (encode the new frame, decode the pair) is captured once
and replayed; the emitted Gaussians are copies of the graph's static outputs. With ``overlap`` the graph
has two branches: DINO runs beside the encoder and the new frame's static upsampler beside the decoder,
because DINO's ~580 tokens and the upsampler's tails leave much of the GPU idle. Same kernels, same
results; only their order changes. The side and warm-up streams are shared per device, so sessions do not
each leave cuBLAS workspaces behind.
"""

from __future__ import annotations

import threading
from typing import Dict, Tuple

import torch
from torch import Tensor, nn

from ..gaussians import DynamicGaussians, Gaussians
from ..networks.model import FrameState, StreamSplat
from .prepare import weights_generation

_STREAMS: Dict[Tuple[str, int, int], torch.cuda.Stream] = {}
_LOCK = threading.Lock()
_LIVE_GRAPHS = 0  # graphs captured here or in .depth and not yet closed (see release_graph)


def _stream(device: torch.device, slot: int) -> torch.cuda.Stream:
    """One stream per (device, slot, thread): a stream shared across threads would let another thread's
    eager kernels land inside this thread's capture (capture is a property of the stream, not the thread)."""
    idx = device.index if device.index is not None else torch.cuda.current_device()
    key = (f"cuda:{idx}", slot, threading.get_ident())
    with _LOCK:
        if key not in _STREAMS:
            _STREAMS[key] = torch.cuda.Stream(device=idx)
        return _STREAMS[key]


STEP, DEPTH = 2, 3  # capture-stream slots


def capture_stream(device: torch.device, slot: int = STEP) -> torch.cuda.Stream:
    """The stream this thread captures graphs of one kind on (``STEP`` or ``DEPTH``).

    torch.cuda.graph's default capture stream is one per process: two threads capturing at once would
    record into the same stream. And cuBLAS picks its workspace by (handle, stream) at capture time, so
    graphs captured on one stream share one workspace: the engine replays the depth graph on its side
    stream while the step graph runs on the main one, and their GEMMs would race on that memory. Each
    kind gets its own stream (graphs of one kind replay one after another)."""
    return _stream(device, slot)


def graph_inputs_to_keep(model: nn.Module) -> Tuple[Tensor, ...]:
    """Cached tensors a captured graph reads but the model may replace later: DINOv2's one-entry
    pos-embed cache (replaced by a call at another size or dtype) and the fused DINOv2 blocks' folded
    projections. A graph holds these so their memory is never reused while it can replay."""
    keep = []
    for m in model.modules():
        keep.extend(getattr(m, "_pe_cache", {}).values())
        keep.extend(getattr(m, "_fold", ()) or ())
    return tuple(t for t in keep if isinstance(t, Tensor))


def register_graph() -> None:
    """Count a captured graph as live (every graph of this package that may use cuBLAS)."""
    global _LIVE_GRAPHS
    with _LOCK:
        _LIVE_GRAPHS += 1


def release_graph() -> bool:
    """Count a graph as closed; True when no captured graph is live any more."""
    global _LIVE_GRAPHS
    with _LOCK:
        _LIVE_GRAPHS = max(0, _LIVE_GRAPHS - 1)
        return _LIVE_GRAPHS == 0


def clear_cublas_workspaces() -> None:
    """Drop cuBLAS's per-(handle, stream) workspaces. Captures on torch's shared capture stream reuse the
    workspace the first capture allocated inside its private pool, so this may only run when no captured
    graph is live (another graph's kernels would write into freed memory) and never during a capture."""
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is not None:
        clear()


def _side_stream(device: torch.device) -> torch.cuda.Stream:
    return _stream(device, 0)


def _warmup_stream(device: torch.device) -> torch.cuda.Stream:
    return _stream(device, 1)


def _tensors(g: Gaussians):
    return [t for t in (g.means, g.quats, g.scales, g.opacities, g.colours, g.sh) if t is not None]


class GraphStep:
    """One captured CUDA graph of ``(prev state, new frame) -> (interval Gaussians, new state)``."""

    def __init__(
        self, model: StreamSplat, prev: FrameState, rgb: Tensor, disp: Tensor, warmup: int = 2, overlap: bool = True
    ) -> None:
        self.model = model
        self.overlap = overlap and model.config.depth_norm != "pair"
        # with the one-kernel dynamic heads the static features go straight into the kernel (no terms)
        self.terms = self.overlap and not getattr(model.decoder, "fused_heads", False)
        self.side = _side_stream(rgb.device)
        self.rgb, self.disp = rgb.clone(), disp.clone()
        terms = None
        if self.terms:  # the overlapped body reads the previous frame's head terms from the cache
            terms = model.decoder.static_terms(prev.features) if prev.head_terms is None else prev.head_terms.clone()
        self.prev = FrameState(
            prev.tokens.clone(), prev.features.clone(), prev.gaussians.map(torch.clone), prev.condition.clone(), terms
        )
        s = _warmup_stream(rgb.device)
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(warmup):
                self._body()
        torch.cuda.current_stream().wait_stream(s)
        self.graph = torch.cuda.CUDAGraph()
        self._weights = weights_generation(model)
        with torch.cuda.graph(self.graph, stream=capture_stream(rgb.device, STEP), capture_error_mode="thread_local"):
            self.out, self.new = self._body()
            # the new frame becomes the cached previous frame, inside the graph
            self.prev.tokens.copy_(self.new.tokens)
            self.prev.features.copy_(self.new.features)
            self.prev.condition.copy_(self.new.condition)
            if self.prev.head_terms is not None:
                self.prev.head_terms.copy_(self.new.head_terms)
            for a, b in zip(_tensors(self.prev.gaussians), _tensors(self.new.gaussians)):
                a.copy_(b)
        self.keep = graph_inputs_to_keep(model)  # the cache entries the capture read (warm-up filled them)
        self.done = torch.cuda.Event()  # recorded after each replay: close() waits for it on any stream
        register_graph()

    def _body(self) -> Tuple[DynamicGaussians, FrameState]:
        if self.overlap:
            return self._body_overlap()
        new = self.model.encode_frame(self.rgb, self.model.prepare_disparity(self.disp))
        return self.model.decode_pair(self.prev, new), new

    def _body_overlap(self) -> Tuple[DynamicGaussians, FrameState]:
        """``encode_frame`` + ``decode_pair`` on two streams: main = encoder tokens -> decoder -> dynamic
        upsampler -> heads; side = DINO + condition, then the new frame's static upsampler, heads and its
        share of the dynamic heads' first layer (:meth:`DynamicDecoder.static_terms`, cached for the next
        pair), so that main only runs the dynamic columns of that layer."""
        m, enc, dec = self.model, self.model.encoder, self.model.decoder
        main, side = torch.cuda.current_stream(), self.side
        side.wait_stream(main)  # the new frame's inputs are in place
        with torch.cuda.stream(side):
            cond = dec.condition(m.dino(self.rgb))
            cond_ready = torch.cuda.Event()
            cond_ready.record(side)
        dn = m.prepare_disparity(self.disp)
        tokens = enc.encode_tokens(self.rgb, dn)
        side.wait_stream(main)  # tokens ready
        with torch.cuda.stream(side):
            if getattr(enc, "pixel_skip", None) is None:
                feats = enc.upsample(tokens)
            else:  # a pixel-skip encoder (EncoderConfig.pixel_skip) also reads the frame itself
                feats = enc.upsample(tokens, self.rgb, dn)
            g = enc.heads(feats)
            terms = dec.static_terms(feats) if self.terms else None
        main.wait_event(cond_ready)
        p = self.prev
        dyn = dec.dynamic_features(dec.joint_tokens(p.tokens, tokens, p.condition, cond))
        main.wait_stream(side)  # static features, Gaussians and head terms of the new frame
        if self.terms:
            out = dec.gaussians_from_terms(dyn, p.head_terms, terms, p.gaussians, g)
        else:
            out = dec.gaussians(dyn, p.features, feats, p.gaussians, g)
        return out, FrameState(tokens, feats, g, cond, terms)

    def __call__(self, rgb: Tensor, disp: Tensor) -> DynamicGaussians:
        if self.graph is None:
            raise RuntimeError("this CUDA-graph step was closed")
        if weights_generation(self.model) != self._weights:
            raise RuntimeError(
                "StreamingSession: prepare() cast the model's weights to another dtype after this CUDA graph "
                "was captured (the graph still reads the old weight tensors); call session.reset() after prepare()"
            )
        # the previous replay (and the copies of its outputs) may have been queued on another stream: the
        # static inputs / outputs are not overwritten before it is done (a no-op wait on the same stream)
        torch.cuda.current_stream().wait_event(self.done)
        self.rgb.copy_(rgb)
        self.disp.copy_(disp)
        self.graph.replay()
        out = self.out.map(torch.clone)
        self.done.record()
        return out

    def close(self) -> None:
        """Release the graph, its private memory pool and every static buffer."""
        if self.graph is None:
            return
        # during another capture on this thread (a session dropped by the garbage collector there) a sync
        # would break that capture; none is needed: torch.cuda.graph synchronised the device before it began
        capturing = torch.cuda.is_current_stream_capturing()
        if not capturing:
            self.done.synchronize()  # the last replay, on whichever stream (thread) ran it
        self.graph.reset()
        self.graph = None
        self.out = self.new = self.prev = self.rgb = self.disp = None
        self.keep = ()
        # cuBLAS keeps one workspace per (handle, stream); those first used during capture were allocated in
        # the graph's private pool and would keep it alive (66-169 MiB per session); later calls reallocate
        if release_graph() and not capturing:
            clear_cublas_workspaces()
