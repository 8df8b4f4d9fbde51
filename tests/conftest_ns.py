"""A tiny trained StreamSplat run shared by the viewer / render / export tests (imported, not a conftest)."""

from __future__ import annotations

from pathlib import Path

_RUN: dict = {}


def trained_config(tmp_path_factory) -> Path:
    """config.yml of a 3-step ``streamsplat-encoder-small`` run, trained in-process once per session (~10 s).

    Three steps give a real checkpoint and config that nerfstudio's scripts load, not a useful model."""
    if "config" not in _RUN:
        from nsutil import run_dir, small_config, train

        cfg = small_config(tmp_path_factory.mktemp("ns_run"), steps=3, batch_size=2)
        train(cfg)
        path = run_dir(cfg) / "config.yml"
        if not path.exists() or not list(run_dir(cfg).rglob("*.ckpt")):
            raise RuntimeError(f"training the test run left no config/checkpoint in {run_dir(cfg)}")
        _RUN["config"] = path
    return _RUN["config"]
