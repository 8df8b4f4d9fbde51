"""Live mode latency (issue 12 target): frame arrival -> image handed to the viewer, and dropped frames.

    python -m benchmarks.bench_live --json live.json             # one GPU: paper config, DA-V2 ViT-S, 30 fps
    python -m benchmarks.bench_live --encoder vitl               # the same with ViT-L depth
    python -m benchmarks.bench_live --tiny                       # CPU smoke run (tiny model, 10 fps, few frames)

What it runs is ``streamsplat-live``'s own path (``cli.live.open_source`` / ``build_engine`` and
``live.session.LiveSession`` with the viser server up), headless: no browser is needed, because the
timing stops where the image is handed to viser. The viewer's render thread renders the canonical view
(as a browser client's thread would) at the default size (720 pixels long side on CUDA) and sends it.

* source: ``.whl/clips/bikes.mp4`` letterboxed to 640x480 (``benchmarks.common.build_video``), played in
  real time at ``--fps`` (30) by the frame source's own pacing, dropping the oldest frame when the engine
  lags (exactly as a camera);
* weights: random, in the formats users have (``benchmarks.common.build_weights``): paper-config model
  (our safetensors), DINOv2 ViT-B/14-reg ``.pth``, Depth Anything V2 ``.pth`` (official key layout);
* the engine warms up as ``streamsplat-live`` does (``cli.live.warm_up``: synthetic frames of the source's
  size before the source starts); ``--warmup-frames N`` first streams N real frames through a throw-away
  engine (a second session in the same process);
* timestamps per interval (``time.perf_counter``): arrival of the newer frame, depth done and model done
  (the engine's ``sync_timings``), interval handed to the session, render done, image sent to viser.

Reports the distribution of arrival -> viewer latency (p50 / p90 / p99 / max; target <= 100 ms), the
mean time of each stage, how many intervals the viewer showed (it shows the newest; a busy renderer skips
older ones) and the dropped source frames (target: none at >= 30 frames/s). ``--json`` writes everything;
the markdown rows (lines starting with ``|``) come last.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

from .common import DEFAULT_CLIP, build_video, build_weights


def _pct(xs: List[float], q: float) -> float:
    if not xs:
        return math.nan
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(math.ceil(q / 100 * len(s))) - 1))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


STAGES = [
    ("arrival", "depth_done", "decode->depth done"),
    ("depth_done", "model_done", "model"),
    ("model_done", "render_done", "hand-over + render"),
    ("render_done", "viewer_sent", "jpeg + send"),
    ("arrival", "viewer_sent", "total"),
]


def summarise(
    records: List[Dict[str, float]], intervals: int, dropped: int, emitted: int, wall: float, skip: int
) -> dict:
    recs = [r for r in records if r.get("k", 0) >= skip]
    total = [1e3 * (r["viewer_sent"] - r["arrival"]) for r in recs]
    stages = {}
    for a, b, name in STAGES:
        xs = [1e3 * (r[b] - r[a]) for r in recs if a in r and b in r and not math.isnan(r[b] - r[a])]
        stages[name] = {
            "mean_ms": sum(xs) / len(xs) if xs else math.nan,
            "p50_ms": _pct(xs, 50),
            "max_ms": max(xs) if xs else math.nan,
        }
    return {
        "latency_ms": {
            "p50": _pct(total, 50),
            "p90": _pct(total, 90),
            "p99": _pct(total, 99),
            "max": max(total) if total else math.nan,
            "n": len(total),
        },
        "stages": stages,
        "intervals": intervals,
        "viewer_updates": len(records),
        "dropped": dropped,
        "source_frames": emitted,
        "wall_s": wall,
        "intervals_per_s": intervals / wall if wall > 0 else math.nan,
    }


def run(a) -> dict:
    import torch

    from streamsplat_ns.api import load_checkpoint
    from streamsplat_ns.cli.live import LiveArgs, build_engine, open_source, warm_up
    from streamsplat_ns.live.session import LiveSession
    from streamsplat_ns.live.viewer import ViewerOptions

    dev = torch.device("cpu" if a.tiny else a.device)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    enc = "tiny" if a.tiny else a.encoder
    weights = build_weights(work, [enc], a.tiny)
    # the same letterboxed clip bench_reconstruct makes (shared --work: built once)
    video = work / ("clip_640x480_all.mp4" if a.frames is None else f"clip_640x480_{a.frames}.mp4")
    info = {"path": str(video)}
    if not video.is_file():
        info = build_video(Path(a.clip), video, 640, 480, max_frames=a.frames)
    model = load_checkpoint(weights["checkpoint"], device=dev, dino_weights=weights["dino"])
    common = dict(
        checkpoint=Path(weights["checkpoint"]),
        depth="compute",
        depth_checkpoint=Path(weights[enc]),
        device=str(dev),
        fps=a.fps,
        window=a.window,
        exit_when_done=True,
        depth_short_side=56 if a.tiny else 518,
    )

    # the measured engine warms up as streamsplat-live does (synthetic frames of the source's size, before the
    # source starts); --warmup-frames > 0 first streams that many real frames through a throw-away engine
    # (per-process costs: Triton compilation, kernel choices), as a second live session in one process would
    t0 = time.perf_counter()
    if a.warmup_frames > 0:
        wargs = LiveArgs(source=str(video), max_frames=a.warmup_frames, as_fast_as_possible=True, **common)
        wsrc = open_source(wargs)
        weng = build_engine(wargs, model, wsrc)
        for _ in weng.stream(wsrc):
            pass
        weng.close()
    args = LiveArgs(source=str(video), **common)
    src = open_source(args)
    engine = build_engine(args, model, src, sync_timings=True)
    engine_warm_s = warm_up(engine, src)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    warm_s = time.perf_counter() - t0
    session = LiveSession(
        model_size=engine.size,
        device=dev,
        window=a.window,
        fps=a.fps,
        headless_render=True,
        viewer=ViewerOptions(port=_free_port(), max_resolution=a.max_resolution),
        keep_stats=True,
        source_label=str(video),
    )
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t1 = time.perf_counter()
    try:
        res = session.run(engine.stream(src), source=src)
        wall = time.perf_counter() - t1
        end = time.time() + 5
        while time.time() < end and session.viewer._headless.busy:
            time.sleep(0.01)
    finally:
        session.close()
    recs = list(session.stats.records)
    out = {
        "config": {
            "device": str(dev),
            "model": "tiny" if a.tiny else "paper",
            "depth": enc,
            "fps": a.fps,
            "frames": a.frames,
            "window": a.window,
            "source": info,
            "render_long_side": session.viewer.renderer.max_resolution,
            "options": engine.stats["options"],
            "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None,
        },
        "warmup_s": warm_s,
        "engine_warm_up_s": engine_warm_s,
        "message": res.message,
        "ok": res.ok,
        "all": summarise(recs, res.intervals, res.dropped, res.frames_used, wall, 0),
        "steady": summarise(recs, res.intervals, res.dropped, res.frames_used, wall, a.skip),
        "engine_stats": engine.stats,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None,
        "records": recs,
    }
    return out


def table(r: dict) -> str:
    s, c = r["all"], r["config"]
    lat = s["latency_ms"]
    rows = [
        "| live (bench_live.py) | value |",
        "|---|---|",
        f"| device / model / depth | {c['gpu'] or c['device']} / {c['model']} / DA-V2 {c['depth']} |",
        f"| source | 640x480 real time at {c['fps']:g} frames/s, {s['source_frames']} frames |",
        f"| intervals / viewer updates | {s['intervals']} / {s['viewer_updates']} ({s['intervals_per_s']:.1f} "
        f"intervals/s) |",
        f"| dropped source frames | {s['dropped']} |",
        f"| arrival -> viewer latency p50 / p90 / p99 / max | {lat['p50']:.1f} / {lat['p90']:.1f} / "
        f"{lat['p99']:.1f} / {lat['max']:.1f} ms |",
    ]
    st = r["steady"]["latency_ms"]
    rows.append(
        f"| same, after the first {r.get('skip', 0)} intervals | {st['p50']:.1f} / {st['p90']:.1f} / "
        f"{st['p99']:.1f} / {st['max']:.1f} ms |"
    )
    for name, v in s["stages"].items():
        rows.append(f"| stage {name} (mean / max) | {v['mean_ms']:.1f} / {v['max_ms']:.1f} ms |")
    rows.append(f"| render size (long side) | {c['render_long_side']} px |")
    return "\n".join(rows)


def _on_term(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip", default=str(DEFAULT_CLIP))
    ap.add_argument(
        "--work",
        default=os.environ.get("STREAMSPLAT_BENCH_WORK", "/tmp/bench_recon"),
        help="folder for the video and weights (shared with bench_reconstruct.py: reused)",
    )
    ap.add_argument("--encoder", default="vits", choices=["vits", "vitb", "vitl"])
    ap.add_argument("--fps", type=float, default=30.0, help="real-time playback rate of the source")
    ap.add_argument("--frames", type=int, default=None, help="source frames (default: the whole clip, 250)")
    ap.add_argument("--warmup-frames", type=int, default=0)
    ap.add_argument("--skip", type=int, default=30, help="intervals left out of the 'steady' figures")
    ap.add_argument("--window", type=int, default=30)
    ap.add_argument("--max-resolution", type=int, default=None, help="viewer render long side (default 720 on CUDA)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny model and DA-V2, 10 frames/s")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.tiny:
        a.fps = 10.0 if a.fps == 30.0 else a.fps
        a.frames = min(a.frames or 24, 24)
        a.warmup_frames = min(a.warmup_frames, 4)
        a.skip = min(a.skip, 3)
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    # SIGTERM (the stage's time limit in scripts/gpu_all.sh) ends the live session like Ctrl-C: the
    # intervals measured so far are still summarised and printed
    old = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGTERM, _on_term)
    try:
        r = run(a)
    except KeyboardInterrupt:
        print("bench_live: stopped before the measured run (during set-up or warm-up): no results", flush=True)
        raise SystemExit(1) from None
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    r["skip"] = a.skip
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(r, indent=1, default=str))
    print(r["message"])
    print(table(r))
    return r


if __name__ == "__main__":
    main()
