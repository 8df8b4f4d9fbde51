"""Online streaming inference with constant memory.

Each pushed frame is encoded once (encoder tokens, static features and Gaussians, DINO condition); the
previous frame's state is cached, so a new frame costs one encoder pass, one DINO pass and one decoder
pass for the pair (previous, new). The session emits the :class:`DynamicGaussians` of each new interval
(73,728 at 288x512: the previous frame's Gaussians moving forward from t0 = 0 and the new frame's moving
backward from t0 = 1) and renders any time inside it. Only the previous frame's state and the current
interval are alive, so memory does not grow with the stream length.

How it runs is set by :class:`~streamsplat_ns.inference.InferenceOptions` (default: ``fastest()`` on CUDA,
``eager()`` elsewhere): with ``cuda_graph`` the whole per-frame step is captured in one CUDA graph after
the first pair (:mod:`streamsplat_ns.inference.graph`). ``close()`` (or ``with StreamingSession(...)``, or
dropping the session) releases the graph, its memory pool and its buffers.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Optional, Tuple

import torch
from torch import Tensor

from .gaussians import DynamicGaussians
from .inference import InferenceOptions, prepare
from .networks.model import FrameState, StreamSplat


def _batch(x: Tensor, channels: int, what: str) -> Tensor:
    if x.dim() == 3:
        x = x[None]
    if x.dim() == 2 and channels == 1:
        x = x[None, None]
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(
            f"StreamingSession.push: {what} must be [{channels}, H, W] or [B, {channels}, H, W], got {tuple(x.shape)}"
        )
    return x


class StreamingSession:
    """Feed frames one at a time; get the dynamic Gaussians of each new interval.

    >>> with StreamingSession(model) as session:      # or StreamingSession(model, InferenceOptions.eager())
    ...     for rgb, disp in frames:                  # rgb [3,H,W] in [0,1], disp [1,H,W] (any scale)
    ...         g = session.push(rgb, disp)           # None for the first frame
    ...         if g is not None:
    ...             out = session.render(torch.linspace(0, 1, 4))   # times inside the new interval

    ``options`` given: the model is :func:`~streamsplat_ns.inference.prepare`-d with them (in place).
    ``options`` None: the model is used as it is and only the switches default to
    ``InferenceOptions.default_for(device)`` (the CUDA graph on CUDA). ``cuda_graph`` / ``overlap`` override.
    """

    def __init__(
        self,
        model: StreamSplat,
        options: Optional[InferenceOptions] = None,
        *,
        cuda_graph: Optional[bool] = None,
        overlap: Optional[bool] = None,
    ) -> None:
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
        self._graph = None
        self.reset()

    def reset(self) -> None:
        """Start a new stream (frames of another size may follow); releases the CUDA graph."""
        self._close_graph()
        self.prev: Optional[FrameState] = None
        self._prev_raw: Optional[Tuple[Tensor, Tensor]] = None
        self.current: Optional[DynamicGaussians] = None
        self.frames_seen = 0
        self._shape: Optional[Tuple[int, ...]] = None

    def restart(self) -> None:
        """Start a new stream of frames of the same size, keeping the captured CUDA graph (a warmed-up
        session starts at full speed). Without a graph this is :meth:`reset`. The first frame after it only
        refreshes the graph's cached previous frame (its Gaussians are discarded: ``push`` returns None)."""
        if self._graph is None:
            self.reset()
            return
        self.prev = None
        self._prev_raw = None
        self.current = None
        self.frames_seen = 0

    def _close_graph(self) -> None:
        g, self._graph = getattr(self, "_graph", None), None
        if g is not None:
            g.close()

    def close(self) -> None:
        """Release the session's GPU memory (CUDA graph, its pool, static buffers, cached frame state).
        Idempotent; :meth:`push` afterwards starts a new stream."""
        self.reset()

    def __enter__(self) -> "StreamingSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._close_graph()
        except Exception:  # interpreter shutdown: CUDA may already be gone
            pass

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
            raise ValueError(
                f"StreamingSession.push: frame shape changed from {self._shape} to {tuple(rgb.shape)}; "
                "call reset() to start a new stream"
            )
        self._shape = tuple(rgb.shape)
        if m.config.depth_norm == "pair":
            out = self._push_pair_norm(rgb, disparity)
        elif self._graph is not None:
            out = self._graph(rgb, disparity)
            if self.frames_seen == 0:  # first frame after restart(): the pair with the old stream is discarded
                out = None
        else:
            new = m.encode_frame(rgb, m.prepare_disparity(disparity))
            out = None if self.prev is None else m.decode_pair(self.prev, new)
            if self.cuda_graph and self.prev is not None and dev.type == "cuda":
                from .inference.graph import GraphStep

                self._graph = GraphStep(m, new, rgb, disparity, overlap=self.overlap)  # captures from the next frame on
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
        from .rendering import render_canonical

        return render_canonical(self.current, times, height or self.model.height, width or self.model.width, **kw)


def stream(
    model: StreamSplat,
    frames: Iterable[Tuple[Tensor, Tensor]],
    options: Optional[InferenceOptions] = None,
    *,
    cuda_graph: Optional[bool] = None,
    overlap: Optional[bool] = None,
) -> Iterator[Tuple[int, DynamicGaussians]]:
    """Yield ``(k, Gaussians of the interval [k, k + 1])`` for a stream of ``(rgb, disparity)`` frames.
    The session (its CUDA graph and pool) is closed when the frames end or the generator is closed."""
    with StreamingSession(model, options, cuda_graph=cuda_graph, overlap=overlap) as s:
        for rgb, disp in frames:
            g = s.push(rgb, disp)
            if g is not None:
                yield s.frames_seen - 2, g
