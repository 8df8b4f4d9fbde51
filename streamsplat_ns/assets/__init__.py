"""Package data: the demo weights (``streamsplat-demo``'s model and the CPU tests' trained model).

``demo_weights.safetensors`` is made by ``experiments/demo_weights.py`` (this project's own recipe: a small
stage-1 + stage-2 model trained on procedurally generated scenes, the embedded sample's seed held out);
``demo_weights.json`` beside it records the command, seeds, steps, device, training curve and held-out scores.
"""

from __future__ import annotations

from pathlib import Path

DEMO_WEIGHTS = "demo_weights.safetensors"
DEMO_RECORD = "demo_weights.json"
RECIPE = "experiments/demo_weights.py"


def assets_dir() -> Path:
    return Path(__file__).resolve().parent


def demo_weights_path(check: bool = True) -> Path:
    """Where the demo weights live in the package; with ``check`` a missing file is a clear error."""
    path = assets_dir() / DEMO_WEIGHTS
    if check and not path.is_file():
        raise FileNotFoundError(
            f"demo weights not found: {path}\n  This copy of streamsplat_ns ships without trained demo weights. "
            f"Make them with {RECIPE} (two GPU commands of < 9 minutes; see docs/benchmarks.md) and copy the "
            f"file there, or pass --weights FILE (any stage-2 checkpoint of ours), or train a small model on "
            f"this machine with `streamsplat-demo --train`."
        )
    return path
