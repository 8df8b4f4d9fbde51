import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run scripts/gpu_check.sh on the device machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# ---------------------------------------------------------------------------------------------- trained model
# The demo weights (streamsplat_ns/assets/demo_weights.safetensors, made by experiments/demo_weights.py) are
# the trained model of the CPU tests: no test trains for minutes. Session-scoped: tests must not modify it.
@pytest.fixture(scope="session")
def demo_weights():
    """Path of the shipped demo weights; the test is skipped (with the reason) when the file is absent."""
    from streamsplat_ns.assets import demo_weights_path

    path = demo_weights_path(check=False)
    if not path.is_file():
        pytest.skip(
            f"no trained demo weights at {path} (made on a GPU by experiments/demo_weights.py; see docs/benchmarks.md)"
        )
    return path


@pytest.fixture(scope="session")
def demo_model(demo_weights):
    """The demo model (stage 1 + stage 2, fp32 on the CPU, eval mode)."""
    from streamsplat_ns.networks.checkpoint import load_checkpoint

    return load_checkpoint(demo_weights, "cpu", allow_random_dino=True)
