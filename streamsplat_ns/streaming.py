"""Online streaming inference with constant memory.

Each pushed frame is encoded once (encoder tokens, static features and Gaussians, DINO condition); the
previous frame's state is cached, so a new frame costs one encoder pass, one DINO pass and one decoder
pass for the pair (previous, new). The session emits the :class:`DynamicGaussians` of each new interval
(73,728 at 288x512: the previous frame's Gaussians moving forward from t0 = 0 and the new frame's moving
backward from t0 = 1) and renders any time inside it. Only the previous frame's state and the current
interval are alive, so memory does not grow with the stream length.

``cuda_graph=True`` captures the whole per-frame step (encode + decode) in one CUDA graph after the first
pair; the emitted Gaussians are then copies of the graph's static outputs. With ``overlap`` (the default)
the graph has two branches: DINO runs beside the encoder and the new frame's static upsampler beside the
decoder, because DINO's ~580 tokens and the upsampler's tails leave much of the GPU idle. Same kernels,
same results; only their order changes.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Optional, Tuple

import torch
from torch import Tensor

from .gaussians import DynamicGaussians, Gaussians
from .inference import InferenceOptions, prepare
from .networks.model import FrameState, StreamSplat


def _batch(x: Tensor, channels: int, what: str) -> Tensor:
    if x.dim() == 3:
        x = x[None]
    if x.dim() == 2 and channels == 1:
        x = x[None, None]
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"StreamingSession.push: {what} must be [{channels}, H, W] or [B, {channels}, H, W], "
                         f"got {tuple(x.shape)}")
    return x


class _GraphStep:
    """One captured CUDA graph of ``(prev state, new frame) -> (interval Gaussians, new state)``."""

    def __init__(self, model: StreamSplat, prev: FrameState, rgb: Tensor, disp: Tensor, warmup: int = 2,
                 overlap: bool = True) -> None:
        self.model = model
        self.overlap = overlap and model.config.depth_norm != "pair"
        # with the one-kernel dynamic heads the static features go straight into the kernel (no terms)
        self.terms = self.overlap and not model.decoder.heads.fused
        self.side = torch.cuda.Stream()
        self.rgb, self.disp = rgb.clone(), disp.clone()
        terms = None
        if self.terms:  # the overlapped body reads the previous frame's head terms from the cache
            terms = (model.decoder.static_terms(prev.features) if prev.head_terms is None
                     else prev.head_terms.clone())
        self.prev = FrameState(prev.tokens.clone(), prev.features.clone(), prev.gaussians.map(torch.clone),
                               prev.condition.clone(), terms)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(warmup):
                self._body()
        torch.cuda.current_stream().wait_stream(s)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out, self.new = self._body()
            # the new frame becomes the cached previous frame, inside the graph
            self.prev.tokens.copy_(self.new.tokens)
            self.prev.features.copy_(self.new.features)
            self.prev.condition.copy_(self.new.condition)
            if self.prev.head_terms is not None:
                self.prev.head_terms.copy_(self.new.head_terms)
            for a, b in zip(_tensors(self.prev.gaussians), _tensors(self.new.gaussians)):
                a.copy_(b)

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
        tokens = enc.encode_tokens(self.rgb, m.prepare_disparity(self.disp))
        side.wait_stream(main)  # tokens ready
        with torch.cuda.stream(side):
            feats = enc.upsample(tokens)
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
        self.rgb.copy_(rgb)
        self.disp.copy_(disp)
        self.graph.replay()
        return self.out.map(torch.clone)


def _tensors(g: Gaussians):
    return [t for t in (g.means, g.quats, g.scales, g.opacities, g.colours, g.sh) if t is not None]


class StreamingSession:
    """Feed frames one at a time; get the dynamic Gaussians of each new interval.

    >>> session = StreamingSession(model)
    >>> for rgb, disp in frames:                      # rgb [3,H,W] in [0,1], disp [1,H,W] (any scale)
    ...     g = session.push(rgb, disp)               # None for the first frame
    ...     if g is not None:
    ...         out = session.render(torch.linspace(0, 1, 4))   # times inside the new interval
    """

    def __init__(self, model: StreamSplat, options: Optional[InferenceOptions] = None, *,
                 cuda_graph: Optional[bool] = None, overlap: Optional[bool] = None) -> None:
        model._require_decoder()
        self.model = model
        dev = next(model.parameters()).device
        if options is not None:  # explicit options: the model gets them too (idempotent)
            prepare(model, options)
        opts = options if options is not None else InferenceOptions.default_for(dev)
        self.options = opts
        self.cuda_graph = bool(opts.cuda_graph if cuda_graph is None else cuda_graph)
        # CUDA graph only: DINO beside the encoder, static upsampler beside the decoder
        self.overlap = bool(opts.overlap if overlap is None else overlap)
        self._graph: Optional[_GraphStep] = None
        self.reset()

    def reset(self) -> None:
        self.prev: Optional[FrameState] = None
        self._prev_raw: Optional[Tuple[Tensor, Tensor]] = None
        self.current: Optional[DynamicGaussians] = None
        self.frames_seen = 0
        self._graph = None
        self._shape: Optional[Tuple[int, ...]] = None

    @property
    def interval(self) -> Optional[Tuple[int, int]]:
        """Frame indices (previous, newest) spanned by :attr:`current` (times 0 and 1)."""
        return None if self.current is None else (self.frames_seen - 2, self.frames_seen - 1)

    @torch.no_grad()
    def push(self, rgb: Tensor, disparity: Tensor) -> Optional[DynamicGaussians]:
        m = self.model
        dev = next(m.parameters()).device
        rgb = _batch(rgb, 3, "rgb").to(dev, torch.float32)
        disparity = _batch(disparity, 1, "disparity").to(dev, torch.float32)
        if self._shape is not None and tuple(rgb.shape) != self._shape:
            raise ValueError(f"StreamingSession.push: frame shape changed from {self._shape} to {tuple(rgb.shape)}; "
                             "call reset() to start a new stream")
        self._shape = tuple(rgb.shape)
        if m.config.depth_norm == "pair":
            out = self._push_pair_norm(rgb, disparity)
        elif self._graph is not None:
            out = self._graph(rgb, disparity)
        else:
            new = m.encode_frame(rgb, m.prepare_disparity(disparity))
            out = None if self.prev is None else m.decode_pair(self.prev, new)
            if self.cuda_graph and self.prev is not None and dev.type == "cuda":
                self._graph = _GraphStep(m, new, rgb, disparity, overlap=self.overlap)  # captures from the next frame on
            self.prev = new
        self.frames_seen += 1
        self.current = out
        return out

    def _push_pair_norm(self, rgb: Tensor, disp: Tensor) -> Optional[DynamicGaussians]:
        """Joint (pair) depth normalisation: the previous frame is re-encoded with the pair's range;
        its DINO condition does not depend on depth and is reused."""
        m = self.model
        cond = m.decoder.condition(m.dino(rgb))
        out = None
        if self._prev_raw is not None:
            prgb, pdisp, pcond = self._prev_raw
            s0 = m.encode_frame(prgb, m.prepare_disparity(pdisp, disp), with_condition=False)
            s1 = m.encode_frame(rgb, m.prepare_disparity(disp, pdisp), with_condition=False)
            s0.condition, s1.condition = pcond, cond
            out = m.decode_pair(s0, s1)
        self._prev_raw = (rgb, disp, cond)
        return out

    @torch.no_grad()
    def render(self, times, height: Optional[int] = None, width: Optional[int] = None, **kw):
        """Render the current interval at normalised times in [0, 1] (0 = previous frame, 1 = newest)."""
        if self.current is None:
            raise RuntimeError("StreamingSession.render: push at least two frames first")
        from .api import render

        return render(self.current, times, height or self.model.height, width or self.model.width, **kw)


def stream(model: StreamSplat, frames: Iterable[Tuple[Tensor, Tensor]], options: Optional[InferenceOptions] = None,
           *, cuda_graph: Optional[bool] = None, overlap: Optional[bool] = None
           ) -> Iterator[Tuple[int, DynamicGaussians]]:
    """Yield ``(k, Gaussians of the interval [k, k + 1])`` for a stream of ``(rgb, disparity)`` frames."""
    s = StreamingSession(model, options, cuda_graph=cuda_graph, overlap=overlap)
    for rgb, disp in frames:
        g = s.push(rgb, disp)
        if g is not None:
            yield s.frames_seen - 2, g
