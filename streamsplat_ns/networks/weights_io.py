"""Reading and validating weight files, below every loader: one strict state-dict check, one finiteness
check, safe ``torch.load`` and safetensors reading with errors that name the file and the fix.

Imports nothing of the networks, so any module (DINOv2, the official-layout converter, Depth Anything V2,
the nerfstudio trainer) can use it; :mod:`streamsplat_ns.networks.checkpoint` builds the model loaders on it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

PathLike = Union[str, os.PathLike]

TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


class CheckpointError(ValueError):
    """A weights file that cannot be used; the message names the file, the problem and the fix."""

    def __init__(self, path: PathLike, problem: str, fix: str = "") -> None:
        self.path = Path(path)
        super().__init__(f"{path}: {problem}" + (f"; {fix}" if fix else ""))


# ------------------------------------------------------------------------------------------------ reading
def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    if head[:2] == b"PK" or head[:1] == b"\x80":  # zip (torch.save) or a legacy pickle
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\r\n\t" for c in text)


def _sniff(path: Path, what: str, fix: str) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path} ({fix})")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(path, f"the {what} is empty (0 bytes)", "the write was interrupted: " + fix)
    with open(path, "rb") as f:
        head = f.read(512)
    if _looks_like_text(head):
        kind = "a YAML config (config.yml)" if path.suffix in (".yml", ".yaml") or b":" in head else "a text file"
        raise CheckpointError(path, f"is {kind}, not a {what}", fix)
    return head


def _check_safetensors_header(path: Path) -> Dict[str, Any]:
    """Validate the header and that the data section is complete (catches truncated copies up front)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(
                path,
                f"truncated safetensors file ({size} bytes, no header)",
                "copy the file again or use an earlier checkpoint",
            )
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8:
            raise CheckpointError(
                path,
                f"truncated or not a safetensors file (header of {n} bytes, file of {size})",
                "copy the file again or use an earlier checkpoint",
            )
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(path, f"damaged safetensors header ({e})", "copy the file again") from e
    if not isinstance(header, dict):
        raise CheckpointError(path, "damaged safetensors header (not a JSON object)", "copy the file again")
    end = max(
        (
            int(v["data_offsets"][1])
            for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v
        ),
        default=0,
    )
    have = size - 8 - n
    if have < end:
        raise CheckpointError(
            path,
            f"truncated safetensors file: its header describes {end + 8 + n} bytes but the file has {size}",
            "copy the file again or use an earlier checkpoint",
        )
    return header


def torch_load(
    path: PathLike, *, what: str = "checkpoint", fix: str = "use another copy or an earlier checkpoint"
) -> Any:
    """``torch.load(weights_only=True)`` with errors that name the file: truncated archives, text files,
    and pickles that hold more than weights (never unpickled)."""
    path = Path(path)
    head = _sniff(path, what, fix)
    if head[:2] == b"PK" and not zipfile.is_zipfile(path):
        raise CheckpointError(
            path,
            f"truncated {what} (the zip archive has no central directory: the write was "
            f"interrupted or the copy is incomplete)",
            fix,
        )
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if "WeightsUnpickler" in ln] or [str(e).splitlines()[0]]
        raise CheckpointError(
            path,
            f"is not a weights-only {what} (it holds Python objects that are not loaded for safety: {lines[0][:200]})",
            fix,
        ) from e
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, struct.error, ValueError, KeyError) as e:
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        trunc = any(s in msg for s in ("central directory", "zip archive", "Ran out of input", "EOF", "truncated"))
        problem = (
            f"truncated or damaged {what} ({msg})"
            if trunc or isinstance(e, EOFError)
            else f"unreadable {what} ({type(e).__name__}: {msg})"
        )
        raise CheckpointError(path, problem, fix) from e


def read_tensors(
    path: PathLike, *, fix: str = "copy the file again or use an earlier checkpoint"
) -> Tuple[Dict[str, Tensor], Dict[str, str]]:
    """``(tensors, metadata)`` of a ``.safetensors`` file or a torch state dict (``state_dict``/``model``
    sub-dicts unwrapped). Bad files raise :class:`CheckpointError` naming them."""
    path = Path(path)
    head = _sniff(path, "checkpoint", fix)
    is_st = path.suffix == ".safetensors" or (path.suffix not in TORCH_SUFFIXES and head[8:9] == b"{")
    if is_st:
        from safetensors import SafetensorError, safe_open

        _check_safetensors_header(path)
        try:
            tensors, meta = {}, {}
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = dict(f.metadata() or {})
                for k in f.keys():
                    tensors[k] = f.get_tensor(k)
        except (SafetensorError, OSError, RuntimeError) as e:
            raise CheckpointError(path, f"damaged safetensors file ({e})", fix) from e
        return tensors, meta
    obj = torch_load(path, fix=fix)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(
            path,
            "expected a flat dict of tensors (a state dict)",
            "pass a weights file (.safetensors or a state-dict .pth)",
        )
    return obj, {}


# --------------------------------------------------------------------------------------------- validation
def _fmt(xs: List, limit: int = 20) -> str:
    if not xs:
        return "(none)"
    return "\n    ".join(map(str, xs[:limit])) + (f"\n    ... ({len(xs)} in all)" if len(xs) > limit else "")


def check_state_dict(
    expected: Mapping[str, Any],
    got: Mapping[str, Tensor],
    *,
    source: PathLike,
    what: str = "this model",
    optional: Callable[[str], bool] = lambda k: False,
    ignore: Iterable[str] = (),
    fix: str = "",
) -> None:
    """THE strict state-dict check: every expected key present (unless ``optional(key)``), no key of ``got``
    unused (unless in ``ignore``), shapes equal. ``expected`` maps keys to tensors or shapes."""
    ignore = set(ignore)

    def shape(v) -> Tuple[int, ...]:
        return tuple(v.shape) if hasattr(v, "shape") else tuple(v)

    missing = sorted(k for k in expected if k not in got and not optional(k))
    unexpected = sorted(k for k in got if k not in expected and k not in ignore)
    wrong = sorted(
        (k, shape(got[k]), shape(expected[k])) for k in expected if k in got and shape(got[k]) != shape(expected[k])
    )
    if missing or unexpected or wrong:
        raise CheckpointError(
            source,
            f"does not match {what}\n  missing keys:\n    {_fmt(missing)}\n  unexpected keys:\n    "
            f"{_fmt(unexpected)}\n  shape mismatches (key, file, expected):\n    {_fmt(wrong)}\n",
            fix or "pass the checkpoint that belongs to this model / config",
        )


def first_nonfinite(tensors: Mapping[str, Tensor]) -> Optional[str]:
    """The first key (in order) whose floating-point values hold NaN/Inf; one host sync for all."""
    keys = [k for k, v in tensors.items() if v.is_floating_point() and v.device.type != "meta" and v.numel()]
    if not keys:
        return None
    ok = torch.stack([torch.isfinite(tensors[k]).all().to("cpu") for k in keys])
    if bool(ok.all()):
        return None
    return keys[int((~ok).nonzero()[0, 0])]


def check_finite(tensors: Mapping[str, Tensor], *, source: PathLike, fix: str = "") -> None:
    bad = first_nonfinite(tensors)
    if bad is not None:
        t = tensors[bad]
        n = int((~torch.isfinite(t)).sum())
        raise CheckpointError(
            source,
            f"weights hold NaN/Inf values (first bad key {bad!r}: {n} of {t.numel()} values)",
            fix or "the training run diverged or the file is damaged: use an earlier checkpoint",
        )


@contextlib.contextmanager
def building_on(device: Union[str, torch.device]):
    """Build modules whose weights a file is about to overwrite directly on ``device`` when it is a CUDA
    device: their random initialisation then takes milliseconds there instead of seconds of CPU time (on 2
    CPU cores the paper model takes 10.5 s and Depth Anything V2 ViT-L 7.6 s, all of it overwritten)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        yield
        return
    with dev:
        yield
