"""Fault injection: kill -9 of real ``ns-train streamsplat-encoder-small`` runs at >= 20 random moments
(half of them inside a checkpoint write), each followed by a ``--load-dir`` resume that must continue from
the last complete checkpoint; a full disk (RLIMIT_FSIZE: writes fail with EFBIG) while training writes a
checkpoint and while ``streamsplat-export`` writes a PLY; a truncated ``.ckpt`` given to ``--load-dir``,
``ns-eval`` and ``streamsplat-export``.

The processes are forked from one pre-imported server (tests/fault_zygote.py) so that ~25 training
processes fit CI's budget on 2 cores; each child runs the console script's own entry point.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
PAUSE_ENV = "STREAMSPLAT_FAULT_PAUSE_IN_SAVE"  # = streamsplat_ns.nerfstudio.trainer.FAULT_PAUSE_ENV
ROUNDS_IN_SAVE, ROUNDS_RANDOM = 10, 11


class Zygote:
    def __init__(self) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        self.p = subprocess.Popen(
            [sys.executable, str(HERE / "fault_zygote.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(HERE.parent),
        )
        ready = self._read()
        assert ready.get("ready"), ready

    def _read(self) -> dict:
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"fault zygote died (exit {self.p.poll()})")
        return json.loads(line)

    def _ask(self, **req) -> dict:
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        return self._read()

    def spawn(
        self, entry: str, argv: List[str], log: Path, env: Optional[Dict[str, str]] = None, fsize: Optional[int] = None
    ) -> int:
        return self._ask(
            cmd="spawn", entry=entry, argv=[str(a) for a in argv], log=str(log), env=env or {}, fsize=fsize
        )["pid"]

    def wait(self, pid: int) -> dict:
        return self._ask(cmd="wait", pid=pid)

    def close(self) -> None:
        try:
            self.p.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.p.stdin.flush()
            self.p.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.p.kill()


@pytest.fixture(scope="module")
def zygote():
    z = Zygote()
    yield z
    z.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    base = root / "out" / "faults" / "streamsplat-encoder-small" / "run"
    return {"root": root, "base": base, "ckpts": base / "nerfstudio_models", "logs": root / "logs"}


def train_argv(run, load: bool, iterations: int = 100_000) -> List[str]:
    argv = [
        "streamsplat-encoder-small",
        "--output-dir",
        run["root"] / "out",
        "--experiment-name",
        "faults",
        "--timestamp",
        "run",
        "--vis",
        "tensorboard",
        "--logging.local-writer.enable",
        "False",
        "--max-num-iterations",
        iterations,
        "--steps-per-save",
        "1",
        "--steps-per-eval-batch",
        "1000000",
        "--steps-per-eval-image",
        "1000000",
        "--steps-per-eval-all-images",
        "1000000",
        "--pipeline.datamanager.batch-size",
        "1",
        "--pipeline.datamanager.eval-num-clips",
        "1",
        "--pipeline.datamanager.num-workers",
        "0",
    ]
    if load:
        argv += ["--load-dir", run["ckpts"]]
    return argv


def complete_steps(run) -> List[int]:
    from streamsplat_ns.nerfstudio.trainer import step_checkpoints

    return [s for s, _ in step_checkpoints(run["ckpts"])] if run["ckpts"].is_dir() else []


def temps_of(run, pid: int) -> List[Path]:
    folders = [run["base"], run["ckpts"]]
    return [p for f in folders if f.is_dir() for p in f.iterdir() if f".{pid}." in p.name and ".tmp" in p.name]


def wait_for(cond, timeout: float, what: str, pid: int, log: Path) -> None:
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"timed out waiting for {what}; log:\n{read(log)[-3000:]}")
        time.sleep(0.02)


def read(log: Path) -> str:
    return log.read_text() if log.exists() else ""


def loaded_line(log: Path) -> Optional[int]:
    m = re.search(r"Done loading Nerfstudio checkpoint from \S+step-(\d+)\.ckpt \(step (\d+)\)", read(log))
    return int(m[2]) if m else None


def check_all_checkpoints_load(run) -> None:
    from streamsplat_ns.nerfstudio.trainer import read_training_checkpoint, step_checkpoints

    for step, path in step_checkpoints(run["ckpts"]):
        assert int(read_training_checkpoint(path)["step"]) == step  # never a partial file under a final name


def test_kill9_at_random_moments_then_resume(zygote, run):
    from streamsplat_ns.api import load_checkpoint

    rng = random.Random(15)
    run["logs"].mkdir(parents=True, exist_ok=True)
    modes = ["save"] * ROUNDS_IN_SAVE + ["random"] * ROUNDS_RANDOM
    rng.shuffle(modes)
    modes[0] = "random"  # the first run starts from scratch; kill it once it has a checkpoint
    stale: List[int] = []
    progress = []
    for i, mode in enumerate(modes):
        before = complete_steps(run)
        log = run["logs"] / f"round{i:02d}_{mode}.log"
        env = {PAUSE_ENV: "2.0"} if mode == "save" else {}
        pid = zygote.spawn("ns-train", train_argv(run, load=bool(before)), log, env)
        early = mode == "random" and before and rng.random() < 0.3  # during start-up: imports done, set-up not
        if early:
            time.sleep(rng.uniform(0.0, 1.0))
        elif before:  # every resume starts from the newest complete checkpoint
            wait_for(lambda: loaded_line(log) is not None, 120, "the resume", pid, log)
            assert loaded_line(log) == before[-1], (i, before, read(log)[-2000:])
            for old in stale:  # the killed writers' temporary files were cleaned up at this start
                assert not temps_of(run, old), (old, temps_of(run, old))
            stale.clear()
        if early:
            pass
        elif mode == "save":
            wait_for(
                lambda: any(p.stat().st_size > 0 for p in temps_of(run, pid) if p.exists()),
                120,
                "a checkpoint write",
                pid,
                log,
            )
        elif not before:
            wait_for(lambda: bool(complete_steps(run)), 180, "the first checkpoint", pid, log)
        else:
            time.sleep(rng.uniform(0.0, 2.5))
        os.kill(pid, signal.SIGKILL)
        st = zygote.wait(pid)
        assert st["signal"] == signal.SIGKILL, (st, read(log)[-2000:])
        if early and loaded_line(log) is not None:
            assert loaded_line(log) == before[-1]
        after = complete_steps(run)
        assert after, f"round {i}: no complete checkpoint left"
        assert not before or after[-1] >= before[-1]
        check_all_checkpoints_load(run)
        if mode == "save":
            assert temps_of(run, pid), "the kill did not land inside the checkpoint write"
            stale.append(pid)
        elif temps_of(run, pid):
            stale.append(pid)
        progress.append(after[-1])
    assert len(modes) >= 20 and progress[-1] > progress[0]  # training really continued across the kills
    assert load_checkpoint(run["base"] / "model.safetensors").decoder is None  # our weights file loads too
    # a last resume runs to its end: continues from the newest checkpoint and exits cleanly
    last = complete_steps(run)[-1]
    log = run["logs"] / "final.log"
    pid = zygote.spawn("ns-train", train_argv(run, load=True, iterations=2), log)
    st = zygote.wait(pid)
    assert st["exitcode"] == 0, read(log)[-3000:]
    assert loaded_line(log) == last and complete_steps(run)[-1] == last + 2
    assert not [p for p in run["base"].iterdir() if ".tmp" in p.name]  # nothing stale remains


def test_disk_full_while_training_and_exporting(zygote, run):
    from streamsplat_ns.nerfstudio.trainer import read_training_checkpoint

    if not complete_steps(run):
        pytest.skip("needs the run of test_kill9_at_random_moments_then_resume")
    prev = complete_steps(run)[-1]
    log = run["logs"] / "diskfull_train.log"
    pid = zygote.spawn("ns-train", train_argv(run, load=True), log, fsize=1 << 20)
    st = zygote.wait(pid)
    text = read(log)
    assert st["exitcode"] not in (0, None), text[-2000:]
    want = run["ckpts"] / f"step-{prev + 1:09d}.ckpt"
    assert f"{want}: no space left on the device while writing it" in text.replace("\n", ""), text[-3000:]
    assert complete_steps(run) == [prev]  # the previous checkpoint is intact and still the newest
    read_training_checkpoint(run["ckpts"] / f"step-{prev:09d}.ckpt")
    assert not temps_of(run, pid)
    # export to a disk that fills: a clear error naming the PLY, no partial PLY left behind
    out = run["root"] / "ply"
    log = run["logs"] / "diskfull_export.log"
    pid = zygote.spawn(
        "streamsplat-export",
        ["--load-config", run["base"] / "config.yml", "--output-dir", out, "--times", "0.0"],
        log,
        fsize=16 << 10,
    )
    st = zygote.wait(pid)
    text = read(log).replace("\n", "")
    assert st["exitcode"] not in (0, None), text[-2000:]
    assert re.search(r"\S+\.ply: no space left on the device while writing it", text), text[-3000:]
    assert not list(out.glob("*.ply")) and not [p for p in out.iterdir() if ".tmp" in p.name]


def test_truncated_ckpt_for_resume_eval_and_export(zygote, run):
    if not complete_steps(run):
        pytest.skip("needs the run of test_kill9_at_random_moments_then_resume")
    step = complete_steps(run)[-1]
    ckpt = run["ckpts"] / f"step-{step:09d}.ckpt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    jobs = {
        "ns-train": train_argv(run, load=True),
        "ns-eval": ["--load-config", run["base"] / "config.yml", "--output-path", run["root"] / "eval.json"],
        "streamsplat-export": ["--load-config", run["base"] / "config.yml", "--output-dir", run["root"] / "ply2"],
    }
    pids = {name: zygote.spawn(name, argv, run["logs"] / f"truncated_{name}.log") for name, argv in jobs.items()}
    for name, pid in pids.items():
        st = zygote.wait(pid)
        text = (run["logs"] / f"truncated_{name}.log").read_text().replace("\n", "")
        assert st["exitcode"] not in (0, None), (name, text[-2000:])
        assert f"{ckpt}: truncated" in text, (name, text[-3000:])
