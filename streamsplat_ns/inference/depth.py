"""Depth Anything V2 in the fast path: bf16 weights, SDPA attention, one CUDA graph per input shape.

The frame arrives already on the GPU (uint8 or float ``[B, 3, H, W]``, any strides); the conversion to float,
the resize to the network's multiple-of-14 size (and the ImageNet normalisation for ``preprocess="official"``),
the network and the resize of its output to the size the caller wants are all captured in one graph, so a
frame costs one host-side copy call and one replay, with no host synchronisation. ``dtype=None,
cuda_graph=False`` is the eager fp32 path: bit-identical to :func:`~streamsplat_ns.depth.depth_anything.
predict_disparity`, the oracle the fast path is tested against; on CPU only that path (or bf16 without a
graph) runs.

    >>> depth = DepthInference(load_depth_anything(ckpt, device="cuda"), out_size=(288, 512))
    >>> disp = depth(frame_u8)          # [1, 3, 480, 640] uint8 on CUDA -> [1, 1, 288, 512] fp32
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from streamsplat_ns.depth.depth_anything import DepthAnythingV2, preprocess, resize_disparity, target_size

__all__ = ["DepthInference"]
log = logging.getLogger(__name__)


@dataclass
class _Graph:
    graph: "torch.cuda.CUDAGraph"
    static_in: Tensor
    static_out: Tensor
    keep: Tuple[Tensor, ...]  # tensors the graph reads that nothing else may keep alive (cached pos-embeds)
    done: Any = None  # CUDA event recorded after the last replay's output was copied (or None: never replayed)


class DepthInference:
    """Callable Depth Anything V2: RGB ``[B, 3, H, W]`` -> fp32 disparity ``[B, 1, h, w]``.

    ``dtype``: weight dtype for inference (``None`` or fp32 keeps the model as it is; bf16 casts it in place
    via :meth:`DepthAnythingV2.cast_for_inference`: pass a copy if you still need the fp32 model).
    ``cuda_graph``: capture each new input shape once (CUDA only; ignored elsewhere); at most ``max_graphs``
    shapes are kept (least recently used dropped), so memory stays bounded when sizes vary.
    ``out_size``: size of the returned map (default: the network's own input size, ``target_size(H, W)``).
    ``preprocess`` and ``short_side``: as :func:`~streamsplat_ns.depth.depth_anything.predict_disparity`.
    ``fused`` (with a reduced ``dtype``, where Triton runs): DINOv2 through the fused inference blocks of
    :func:`streamsplat_ns.inference.prepare` (same maths, fewer kernels).
    """

    def __init__(
        self,
        model: DepthAnythingV2,
        *,
        dtype: Optional[torch.dtype] = torch.bfloat16,
        cuda_graph: bool = True,
        preprocess: str = "streamsplat",
        short_side: int = 518,
        out_size: Optional[Tuple[int, int]] = None,
        fused: bool = True,
        channels_last: bool = True,
        max_graphs: int = 4,
        warmup: int = 2,
    ) -> None:
        if not isinstance(model, DepthAnythingV2):
            raise TypeError(
                f"DepthInference: model must be a DepthAnythingV2 (load_depth_anything(path)), "
                f"got {type(model).__name__}"
            )
        if preprocess not in ("streamsplat", "official"):
            raise ValueError(f"DepthInference: preprocess must be 'streamsplat' or 'official', got {preprocess!r}")
        if short_side < 14:
            raise ValueError(f"DepthInference: short_side must be >= 14 (518 as trained), got {short_side}")
        self.device = next(model.parameters()).device
        if dtype is not None and dtype != torch.float32 and next(model.parameters()).dtype != dtype:
            model.cast_for_inference(dtype, channels_last=channels_last and self.device.type == "cuda")
        self.fused = bool(fused) and dtype is not None and dtype != torch.float32
        if self.fused:  # DINOv2 blocks gain their fused forward (LayerScale folded, add + LayerNorm in one kernel)
            from . import InferenceOptions, prepare

            prepare(model, InferenceOptions(dtype=dtype, fused=True))
            self.fused = all(hasattr(b, "forward_fused") for b in model.pretrained.blocks)
        self.model = model.eval()
        self.dtype = next(model.parameters()).dtype
        if (dtype is None or dtype == torch.float32) and self.dtype != torch.float32:
            log.warning(
                "DepthInference: fp32 (eager) requested but the Depth Anything V2 weights are already %s "
                "(cast by an earlier fast-path use); load the checkpoint again for the fp32 oracle",
                self.dtype,
            )
        self.cuda_graph = bool(cuda_graph) and self.device.type == "cuda"
        self.preprocess, self.short_side = preprocess, short_side
        self.out_size = None if out_size is None else (int(out_size[0]), int(out_size[1]))
        self.max_graphs, self.warmup = max(1, int(max_graphs)), max(1, int(warmup))
        self._graphs: "OrderedDict[tuple, _Graph]" = OrderedDict()

    @classmethod
    def from_options(cls, model: DepthAnythingV2, options: Any, **kw) -> "DepthInference":
        """Take ``dtype`` and ``cuda_graph`` from an :class:`~streamsplat_ns.inference.InferenceOptions`
        (``eager()`` -> the fp32 oracle path, ``fastest()`` -> bf16 + graph); ``kw`` as the constructor."""
        kw.setdefault("fused", bool(getattr(options, "fused", False)))
        return cls(
            model, dtype=getattr(options, "dtype", None), cuda_graph=bool(getattr(options, "cuda_graph", False)), **kw
        )

    # ------------------------------------------------------------------ sizes
    def network_size(self, height: int, width: int) -> Tuple[int, int]:
        """The DA-V2 input size for an ``height x width`` frame (shorter side ``short_side``, multiples of 14)."""
        return target_size(height, width, self.short_side)

    def output_size(self, height: int, width: int) -> Tuple[int, int]:
        return self.out_size or self.network_size(height, width)

    # ------------------------------------------------------------------ run
    def _forward(self, rgb: Tensor) -> Tensor:
        h, w = rgb.shape[-2:]
        x = preprocess(rgb, self.network_size(h, w), self.preprocess)
        from . import kernels as K

        if self.fused and K.available(x):
            d = self.model.decode(self._features_fused(x), (x.shape[-2], x.shape[-1]))
        else:
            d = self.model(x)
        return resize_disparity(d, self.output_size(h, w))

    def _features_fused(self, x: Tensor):
        """``get_intermediate_layers(x, cfg.layers, return_class_token=True)`` through the fused DINOv2
        blocks: each block hands its MLP output on unadded; where a block's output is wanted, one kernel
        adds it and applies the final norm."""
        from . import kernels as K

        vit = self.model.pretrained
        wanted = set(self.model.cfg.layers)
        t, pending, outs = vit.prepare_tokens(x), None, []
        for i, blk in enumerate(vit.blocks[: max(wanted) + 1]):
            t, pending = blk.forward_fused(t, pending)
            if i in wanted:
                t, normed = K.add_layernorm(t, pending, vit.norm.weight, vit.norm.bias, vit.norm.eps)
                pending = None
                outs.append(normed)
        r = 1 + vit.num_register_tokens
        return [(o[:, r:], o[:, 0]) for o in outs]

    def _check(self, rgb: Tensor) -> None:
        """Metadata only (no device synchronisation)."""
        if not isinstance(rgb, Tensor) or rgb.dim() != 4 or rgb.shape[1] != 3:
            got = tuple(rgb.shape) if isinstance(rgb, Tensor) else type(rgb).__name__
            raise ValueError(
                f"DepthInference: rgb must be a [B, 3, H, W] tensor, got {got} "
                f"(for an [H, W, 3] frame pass frame.permute(2, 0, 1)[None])"
            )
        if rgb.dtype != torch.uint8 and not rgb.is_floating_point():
            raise ValueError(f"DepthInference: rgb must be uint8 (0-255) or float (0-1), got {rgb.dtype}")
        if rgb.device != self.device:
            raise ValueError(
                f"DepthInference: rgb is on {rgb.device} but the depth model is on {self.device}; "
                f"move the frame with .to({str(self.device)!r}) first"
            )
        if min(rgb.shape) == 0:
            raise ValueError(f"DepthInference: empty rgb tensor {tuple(rgb.shape)}")

    @torch.no_grad()
    def __call__(self, rgb: Tensor, out: Optional[Tensor] = None) -> Float[Tensor, "B 1 h w"]:
        """Disparity (relative inverse depth, larger = nearer, >= 0) of ``rgb``. With a CUDA graph the
        work is queued on the current stream; the result is a fresh tensor, or ``out`` filled in place."""
        self._check(rgb)
        if not self.cuda_graph:
            y = self._forward(rgb)
            return y if out is None else out.copy_(y)
        g = self._graph_for(rgb)
        stream = torch.cuda.current_stream(self.device)
        if g.done is None:
            g.done = torch.cuda.Event()
        else:  # the last replay may have been queued on another stream: do not overwrite its buffers early
            stream.wait_event(g.done)
        g.static_in.copy_(rgb)
        g.graph.replay()
        y = g.static_out.clone() if out is None else out.copy_(g.static_out)
        g.done.record(stream)
        return y

    def _graph_for(self, rgb: Tensor) -> _Graph:
        key = (tuple(rgb.shape), rgb.dtype)
        g = self._graphs.get(key)
        if g is not None:
            self._graphs.move_to_end(key)
            return g
        while len(self._graphs) >= self.max_graphs:
            self._drop(self._graphs.popitem(last=False)[1])
        g = self._capture(rgb)
        self._graphs[key] = g
        return g

    def _capture(self, rgb: Tensor) -> _Graph:
        static_in = torch.empty(rgb.shape, dtype=rgb.dtype, device=self.device)
        static_in.copy_(rgb)
        # warm-up off the default stream (lazy cuBLAS/cuDNN/SDPA initialisation must not happen in capture)
        from .graph import DEPTH, _stream, capture_stream, graph_inputs_to_keep, register_graph

        side = _stream(self.device, 4)  # per thread: a fresh pooled stream per capture could be another's
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self._forward(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        keep: Tuple[Tensor, ...] = ()
        vit = self.model.pretrained
        if hasattr(vit, "interpolate_pos_encoding"):  # the graph reads the cached pos-embed: hold it
            h, w = self.network_size(*rgb.shape[-2:])
            keep = (vit.interpolate_pos_encoding(h // vit.patch_size, w // vit.patch_size, self.dtype),)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the engine's decode / prefetch (pinned memory) / encode threads keep running meanwhile;
        # this thread's own capture stream: another thread may be capturing the StreamSplat step right now
        with torch.cuda.graph(graph, stream=capture_stream(self.device, DEPTH), capture_error_mode="thread_local"):
            static_out = self._forward(static_in)

        register_graph()  # a live graph: StreamingSession.close() must not clear the cuBLAS workspaces now
        return _Graph(graph, static_in, static_out, keep + graph_inputs_to_keep(self.model))

    @staticmethod
    def _drop(g: _Graph) -> None:
        from .graph import release_graph

        g.graph.reset()
        release_graph()

    def close(self) -> None:
        """Drop the captured graphs and their memory pools."""
        graphs = getattr(self, "_graphs", {})
        while graphs:
            self._drop(graphs.popitem()[1])

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: CUDA may already be gone
            pass

    def __enter__(self) -> "DepthInference":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
