"""A tiny trained StreamSplat run shared by the viewer / render / export tests (imported, not a conftest)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

_RUN: dict = {}


def trained_config(tmp_path_factory) -> Path:
    """config.yml of a 3-step ``streamsplat-encoder-small`` run, trained once per test session (~20 s).

    Three steps give a real checkpoint that nerfstudio's scripts load, not a useful reconstruction."""
    if "config" not in _RUN:
        out = tmp_path_factory.mktemp("ns_run")
        ns_train = shutil.which("ns-train")
        cmd = ([ns_train] if ns_train else [sys.executable, "-m", "nerfstudio.scripts.train"]) + [
            "streamsplat-encoder-small", "--output-dir", str(out), "--experiment-name", "t", "--timestamp", "run",
            "--max-num-iterations", "3", "--vis", "tensorboard", "--pipeline.datamanager.batch-size", "2",
            "--pipeline.datamanager.eval-num-clips", "1"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        cfgs = sorted(out.rglob("config.yml"))
        if res.returncode != 0 or not cfgs or not list(out.rglob("*.ckpt")):
            raise RuntimeError(f"ns-train failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        _RUN["config"] = cfgs[0]
    return _RUN["config"]
