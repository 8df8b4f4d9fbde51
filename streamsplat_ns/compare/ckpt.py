"""Load nerfstudio ``.ckpt`` files with ``torch.load(weights_only=True)`` and an explicit allow-list.

nerfstudio 1.1.5 saves ``{"step", "pipeline", "optimizers", "schedulers", "scalers"}`` with
``torch.save``. Besides tensors and plain containers those hold numpy scalars (learning rates that
nerfstudio's schedulers compute with numpy end up in the optimizer and scheduler states), and
torch >= 2.6 refuses them under its default ``weights_only=True`` (nerfstudio#3683). Rather than
``weights_only=False`` (arbitrary code on unpickling) or ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``, we allow
exactly the numpy reconstructors a numpy scalar needs: the scalar reconstructor and ``numpy.dtype``
with its concrete dtype classes. Anything else is refused, with the file and the global named.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Union

import numpy as np
import torch

PathLike = Union[str, os.PathLike]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded safely; the message names the file and what to do."""

    def __init__(self, path: PathLike, problem: str, fix: str) -> None:
        super().__init__(f"{path}: {problem}; {fix}")
        self.path = Path(path)


#: the two spellings of numpy's scalar reconstructor in pickles (numpy < 2 wrote ``numpy.core``, numpy >= 2
#: writes ``numpy._core``); either must load under either numpy
_SCALAR_NAMES = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")


def _scalar_reconstructor():
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2 (numpy 1.26 has the alias too)
    except ImportError:
        from numpy.core.multiarray import scalar
    return scalar


def safe_globals() -> List[Any]:
    """The allow-list: numpy's scalar reconstructor (under both of its pickle names), ``numpy.dtype`` and
    the concrete dtype classes of numeric and bool scalars (how numpy >= 1.25 pickles a dtype). Nothing
    that can run code."""
    scalar = _scalar_reconstructor()
    allowed: List[Any] = [(scalar, name) for name in _SCALAR_NAMES] + [np.dtype]
    kinds = (
        np.bool_,
        np.float16,
        np.float32,
        np.float64,
        np.longdouble,
        np.int8,
        np.int16,
        np.int32,
        np.int64,
        np.uint8,
        np.uint16,
        np.uint32,
        np.uint64,
        np.complex64,
        np.complex128,
    )
    for k in kinds:
        cls = type(np.dtype(k))
        if cls is not np.dtype and cls not in allowed:
            allowed.append(cls)
    return allowed


def install_safe_globals() -> None:
    """Add the allow-list process-wide, so nerfstudio's own ``torch.load`` calls (``ns-eval``, ``ns-viewer``,
    ``--load-dir``) accept these checkpoints too; still weights-only, no environment variable."""
    torch.serialization.add_safe_globals(safe_globals())


_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Load a nerfstudio checkpoint (or any ``torch.save`` file of tensors, containers and numpy scalars)
    safely. Raises :class:`CheckpointError` naming the file for a missing, empty, truncated, corrupt or
    unsafe file; never falls back to unsafe unpickling."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            path, "no such checkpoint file", "check the path (nerfstudio writes <run>/nerfstudio_models/step-<N>.ckpt)"
        )
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(
            path,
            "the file is empty (0 bytes)",
            "the run that wrote it was interrupted; delete it and use an earlier checkpoint or train again",
        )
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise CheckpointError(
                path, f"corrupt checkpoint archive ({e})", "delete it and use an earlier checkpoint or train again"
            ) from e
        if bad is not None:
            raise CheckpointError(
                path,
                f"corrupt checkpoint: member {bad!r} fails its CRC check",
                "the file was damaged after writing; restore it or train again",
            )
    try:
        with torch.serialization.safe_globals(safe_globals()):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "GLOBAL" in msg or "weights_only" in msg:
            names = sorted(set(_GLOBAL_RE.findall(msg))) or ["an unknown global"]
            raise CheckpointError(
                path,
                f"refused to unpickle {', '.join(names)}: it is not in the safe allow-list "
                "(numpy scalars and dtypes only)",
                "this is not a plain nerfstudio checkpoint; "
                "only load it with weights_only=False if you trust who made it",
            ) from e
        raise CheckpointError(
            path,
            f"corrupt or truncated checkpoint ({msg.splitlines()[0][:200]})",
            "delete it and use an earlier checkpoint or train again",
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise CheckpointError(
            path,
            f"truncated or corrupt checkpoint ({first}, {size} bytes)",
            "delete it and use an earlier checkpoint or train again",
        ) from e
    return obj


def load_nerfstudio_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """:func:`load_checkpoint`, checking nerfstudio's layout (a dict with ``step`` and ``pipeline``)."""
    obj = load_checkpoint(path, map_location)
    if not isinstance(obj, dict) or "pipeline" not in obj or "step" not in obj:
        keys = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            path,
            f"not a nerfstudio checkpoint (top level: {keys})",
            "give a <run>/nerfstudio_models/step-<N>.ckpt file",
        )
    return obj


def latest_checkpoint(run_dir: PathLike) -> Path:
    """The highest-step ``step-*.ckpt`` of a run (``<run>`` or ``<run>/nerfstudio_models``)."""
    run_dir = Path(run_dir)
    d = run_dir / "nerfstudio_models" if (run_dir / "nerfstudio_models").is_dir() else run_dir
    ckpts = sorted(d.glob("step-*.ckpt"), key=lambda p: int(re.sub(r"\D", "", p.stem) or -1))
    if not ckpts:
        raise CheckpointError(d, "no step-*.ckpt checkpoint in this folder", "train first or give the run folder")
    return ckpts[-1]


def eval_setup(config_path: PathLike, device: Union[str, torch.device, None] = None, test_mode: str = "test"):
    """nerfstudio's ``eval_setup`` with the safe loader: (config, pipeline with the latest weights, step).

    The YAML ``config.yml`` is nerfstudio's own Python-object dump of a run this process (or you) made;
    it is read as nerfstudio reads it. Only the checkpoint loading differs.
    """
    import yaml

    config_path = Path(config_path)
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: no such run config (ns-train writes <run>/config.yml)")
    config = yaml.load(config_path.read_text(), Loader=yaml.Loader)
    config.load_dir = config.get_checkpoint_dir()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    pipeline = config.pipeline.setup(device=device, test_mode=test_mode)
    pipeline.eval()
    ckpt = latest_checkpoint(config.load_dir)
    state = load_nerfstudio_checkpoint(ckpt, map_location="cpu")
    pipeline.load_pipeline(state["pipeline"], state["step"])
    return config, pipeline, int(state["step"]), ckpt
