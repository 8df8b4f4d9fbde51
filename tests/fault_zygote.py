"""Fork server for the fault-injection tests (tests/test_faults.py), not a test itself.

Importing nerfstudio and torch takes 10-40 s on 2 cores; the fault suite starts ~25 training processes, so
this process imports everything once and forks one child per run. A child is a real ``ns-train`` /
``ns-eval`` / ``streamsplat-export`` process: it runs that console script's entry point with the given
arguments (``sys.argv``), its output goes to a log file, and the test kills it with SIGKILL at will.
Forking is safe here because this process never runs a multi-threaded torch op (OMP_NUM_THREADS=1).

Protocol: one JSON object per line on stdin, one reply per line on stdout.
  {"cmd": "spawn", "entry": "ns-train"|"ns-eval"|"streamsplat-export", "argv": [...], "log": path,
   "env": {...}, "fsize": bytes|null}          -> {"pid": pid}
  {"cmd": "wait", "pid": pid}                 -> {"exitcode": int|null, "signal": int|null}
  {"cmd": "quit"}
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import traceback


def _entry(name: str):
    if name == "ns-train":
        from nerfstudio.scripts.train import entrypoint
    elif name == "ns-eval":
        from nerfstudio.scripts.eval import entrypoint
    elif name == "streamsplat-export":
        from streamsplat_ns.cli.export import entrypoint
    else:
        raise ValueError(f"unknown entry point {name!r}")
    return entrypoint


def _child(req: dict) -> int:
    fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # line-buffered: a SIGKILL loses no finished line
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    os.environ.update(req.get("env") or {})
    if req.get("fsize"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(req["fsize"]), int(req["fsize"])))
    sys.argv = [req["entry"], *req["argv"]]
    try:
        _entry(req["entry"])()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        return 1
    return 0


def main() -> None:
    import torch

    torch.set_num_threads(1)
    for name in ("ns-train", "ns-eval", "streamsplat-export"):
        _entry(name)
    from nerfstudio.configs.method_configs import all_methods  # noqa: F401  (plugin discovery, once)

    import streamsplat_ns.method_configs.methods  # noqa: F401
    import streamsplat_ns.nerfstudio.pipeline  # noqa: F401

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "quit":
            break
        if req["cmd"] == "spawn":
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    code = _child(req)
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            print(json.dumps({"pid": pid}), flush=True)
        elif req["cmd"] == "wait":
            _, status = os.waitpid(int(req["pid"]), 0)
            print(
                json.dumps(
                    {
                        "exitcode": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
