"""Disparity of each frame: precomputed maps (``<name>_depth/<stem>_pred.png``) or Depth Anything V2.

The file path's work (PNG decoding, resize, min-max normalisation, a finiteness check) is CPU work and
runs in the engine's prefetch thread (:meth:`DisparitySource.load`); Depth Anything V2 runs on the device
on the uploaded frame (:meth:`DisparitySource.compute`), resized there to its input size.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal, Optional, Tuple, Union

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..data.errors import DataError, MissingDepthError

log = logging.getLogger(__name__)
DA2_ENV = "STREAMSPLAT_DA2_CKPT"


class DisparitySource:
    """Where disparity comes from. Build with :meth:`files`, :meth:`depth_anything` or :meth:`resolve`."""

    def __init__(
        self,
        mode: Literal["file", "compute"],
        *,
        depth_dir: Optional[Path] = None,
        model: Optional[torch.nn.Module] = None,
        preprocess: str = "streamsplat",
        command: Optional[str] = None,
        checkpoint: Optional[Path] = None,
        short_side: int = 518,
    ) -> None:
        if mode not in ("file", "compute"):
            raise ValueError(f"DisparitySource: mode must be 'file' or 'compute', got {mode!r}")
        if mode == "file" and depth_dir is None:
            raise ValueError("DisparitySource('file') needs depth_dir")
        if mode == "compute" and model is None:
            raise ValueError("DisparitySource('compute') needs a Depth Anything V2 model")
        self.mode, self.depth_dir, self.model = mode, depth_dir, model
        self.preprocess, self.command, self.checkpoint = preprocess, command, checkpoint
        self.short_side = short_side  # DA-V2's input: shorter side (multiple of 14; 518 as trained)
        self._bound: Tuple = (None, None)  # (engine options, model size) the fast path is built for
        self._infer = None

    # ------------------------------------------------------------------ constructors
    @classmethod
    def files(cls, depth_dir: Union[str, Path], command: Optional[str] = None) -> "DisparitySource":
        return cls("file", depth_dir=Path(depth_dir), command=command)

    @classmethod
    def depth_anything(
        cls,
        checkpoint_or_model: Union[str, Path, torch.nn.Module],
        device="cpu",
        preprocess: str = "streamsplat",
        short_side: int = 518,
    ) -> "DisparitySource":
        """Depth Anything V2 from an official ``depth_anything_v2_<enc>.pth`` (or an already built model); its
        precision and CUDA graph follow the engine's options (:meth:`bind`)."""
        ckpt = None
        if isinstance(checkpoint_or_model, torch.nn.Module):
            model = checkpoint_or_model
        else:
            from ..depth.depth_anything import load_depth_anything

            ckpt = Path(checkpoint_or_model)
            model = load_depth_anything(ckpt, device=device)
        return cls("compute", model=model.eval(), preprocess=preprocess, checkpoint=ckpt, short_side=short_side)

    @classmethod
    def resolve(
        cls,
        input: Union[str, Path],
        first_stem: Optional[str],
        mode: Literal["auto", "file", "compute"],
        depth_dir: Optional[Path] = None,
        checkpoint: Optional[Path] = None,
        device="cpu",
        preprocess: str = "streamsplat",
        short_side: int = 518,
    ) -> "DisparitySource":
        """The CLI rule: 'file' reads maps, 'compute' runs DA-V2, 'auto' reads maps if the first frame has one."""
        from ..data.depth_io import default_depth_dir, depth_command, folder_depth_path

        ddir = Path(depth_dir) if depth_dir else default_depth_dir(Path(str(input)))
        cmd = depth_command("video", input, None, f"--output {ddir}")
        if mode == "auto":
            has = first_stem is not None and folder_depth_path(ddir, first_stem).is_file()
            mode = "file" if has else "compute"
        if mode == "file":
            if first_stem is not None and not folder_depth_path(ddir, first_stem).is_file():
                raise MissingDepthError(folder_depth_path(ddir, first_stem), cmd)
            log.info("disparity: files in %s", ddir)
            return cls.files(ddir, cmd)
        ckpt = checkpoint or os.environ.get(DA2_ENV)
        if not ckpt:
            where = folder_depth_path(ddir, first_stem) if first_stem else ddir
            raise FileNotFoundError(
                f"no disparity maps at {where} and no Depth Anything V2 checkpoint: pass --depth-checkpoint "
                f"depth_anything_v2_vits.pth (or _vitl; or set {DA2_ENV}), or precompute maps with: {cmd}"
            )
        log.info("disparity: Depth Anything V2 (%s) on the device", ckpt)
        return cls.depth_anything(ckpt, device=device, preprocess=preprocess, short_side=short_side)

    # ------------------------------------------------------------------ per frame
    def path_of(self, stem: str) -> Path:
        from ..data.depth_io import folder_depth_path

        assert self.depth_dir is not None
        return folder_depth_path(self.depth_dir, stem)

    def load(self, stem: str, size: Tuple[int, int]) -> Optional[Float[np.ndarray, "H W"]]:
        """CPU part (prefetch thread): the map of ``stem`` at the model's ``size``, min-max normalised, checked
        finite here so the device never has to synchronise to check it. None in 'compute' mode."""
        if self.mode != "file":
            return None
        from ..data.depth_io import read_depth_png
        from ..data.sequences import depth_to_disparity

        p = self.path_of(stem)
        if not p.is_file():
            raise MissingDepthError(p, self.command)
        try:
            d = depth_to_disparity(read_depth_png(p), size)
        except MissingDepthError:
            raise
        except Exception as e:  # noqa: BLE001
            raise DataError(
                f"{p}: cannot read the disparity map ({type(e).__name__}: {e}); the file is damaged: "
                f"re-create it with: {self.command}"
            ) from e
        if not np.isfinite(d).all():
            raise DataError(f"{p}: the disparity map holds NaN/Inf; re-create it with: {self.command}")
        return np.ascontiguousarray(d, dtype=np.float32)

    def bind(self, options, size: Tuple[int, int]) -> None:
        """Run Depth Anything V2 with the engine's ``options`` (eager: the fp32 oracle; fastest: bf16 + CUDA
        graph) at the model's ``size``; the fast path is built lazily on the first frame."""
        if (options, size) != self._bound:
            self._bound = (options, size)
            self._infer = None

    @torch.no_grad()
    def compute(self, rgb: Tensor, size: Tuple[int, int]) -> Float[Tensor, "1 1 h w"]:
        """Device part: Depth Anything V2 on the uploaded frame (uint8 0-255 or float 0-1, [1, 3, H, W]) ->
        raw disparity at ``size``, queued on the current stream (no host synchronisation)."""
        from ..inference.depth import DepthInference

        options, bound_size = self._bound
        if self._infer is None or bound_size != size:
            from ..inference import InferenceOptions

            self._bound = (options, size)
            self._infer = DepthInference.from_options(
                self.model,
                options or InferenceOptions.eager(),
                out_size=size,
                preprocess=self.preprocess,
                short_side=self.short_side,
            )
        return self._infer(rgb)

    def close(self) -> None:
        if self._infer is not None:
            self._infer.close()
        self._infer = None

    def describe(self) -> dict:
        if self.mode == "file":
            return {"mode": "file", "depth_dir": str(Path(self.depth_dir).resolve())}
        return {
            "mode": "compute",
            "model": "depth_anything_v2",
            "checkpoint": None if self.checkpoint is None else str(Path(self.checkpoint).resolve()),
            "preprocess": self.preprocess,
            "short_side": self.short_side,
        }
