"""``streamsplat-depth``: precompute Depth Anything V2 disparity for a dataset or a video.

Writes the official path conventions (so maps made by the authors' script and ours are
interchangeable), 16-bit PNGs of per-frame min-max-normalised relative inverse depth, and a
``depth_meta.json`` sidecar per depth tree. Resumable: finished files are skipped, every file is
written atomically. Frames are decoded by a thread pool and batched on the GPU.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Literal, Optional, Tuple

import numpy as np
import torch
import tyro

from streamsplat_ns.data.depth_io import atomic_write_bytes, encode_png16, quantize16, re10k_depth_path, write_sidecar
from streamsplat_ns.data.errors import DataError

log = logging.getLogger(__name__)
DEFAULT_SPLITS = {
    "davis": ("all",),
    "ytvos": ("train", "valid"),
    "co3d": ("train", "test"),
    "re10k": ("train", "test"),
    "video": ("",),
}
#: levels above a depth file where its tree's sidecar goes
SIDECAR_LEVELS = {"davis": 2, "ytvos": 1, "co3d": 0, "video": 0, "re10k": 1}


@dataclass
class DepthArgs:
    dataset: Literal["davis", "ytvos", "co3d", "re10k", "video"]
    """dataset layout of --data ('video': a video file or a folder of frames)"""
    data: Path
    """dataset root, video file or frame folder"""
    checkpoint: Optional[Path] = None
    """local depth_anything_v2_<enc>.pth (default: $STREAMSPLAT_DA2_CKPT)"""
    encoder: Optional[Literal["vits", "vitb", "vitl", "tiny"]] = None
    """default: from the checkpoint file name"""
    split: Tuple[str, ...] = ()
    """splits to process (default: all of the dataset's splits)"""
    resolution: Literal["auto", "480p", "Full-Resolution"] = "auto"
    """DAVIS frame resolution"""
    re10k_format: Literal["auto", "chunks", "txt"] = "auto"
    output: Optional[Path] = None
    """video / frame folder: depth folder (default <parent>/<name>_depth)"""
    preprocess: Literal["streamsplat", "official"] = "streamsplat"
    """'streamsplat': the authors' preprocessing (no ImageNet norm, bilinear); 'official': DA-V2 infer_image"""
    short_side: int = 518
    batch_size: int = 8
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    overwrite: bool = False
    workers: int = 4
    """threads decoding frames and encoding PNGs"""


@dataclass
class _Job:
    load: Callable[[], np.ndarray]  # RGB uint8 [H, W, 3] at native resolution
    target: Path


def _frame_jobs(args: DepthArgs) -> Tuple[List[_Job], List[Path], int]:
    """(jobs still to do, sidecar roots, frames already done) for file-based layouts."""
    from streamsplat_ns.data import co3d, davis, re10k, video, ytvos
    from streamsplat_ns.data.sequences import FrameListSequence

    splits = args.split or DEFAULT_SPLITS[args.dataset]
    seqs = []
    for s in splits:
        if args.dataset == "davis":
            seqs += davis.discover(args.data, s, args.resolution, "none", "zeros")
        elif args.dataset == "ytvos":
            if (Path(args.data) / s).is_dir():
                seqs += ytvos.discover(args.data, s, "zeros")
        elif args.dataset == "co3d":
            seqs += co3d.discover(args.data, s, "zeros")
        elif args.dataset == "re10k":
            seqs += re10k.discover_txt(args.data, s, depth_mode="zeros")
        elif args.dataset == "video":
            seqs += video.discover(args.data, args.output, "zeros")
    jobs, roots, done = [], set(), 0
    for seq in seqs:
        if isinstance(seq, FrameListSequence):
            for img, tgt in zip(seq.images, seq.depths):
                roots.add(tgt.parents[SIDECAR_LEVELS[args.dataset]])
                if tgt.is_file() and not args.overwrite:
                    done += 1
                    continue
                jobs.append(_Job(load=(lambda p=img: _read_native(p)), target=tgt))
        else:  # a video file: handled by _video_jobs
            raise AssertionError
    return jobs, sorted(roots), done


def _read_native(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: unreadable image ({e})") from e


class _Runner:
    def __init__(self, args: DepthArgs):
        from streamsplat_ns.depth.depth_anything import load_depth_anything, sha256_file

        env_ckpt = os.environ.get("STREAMSPLAT_DA2_CKPT")
        ckpt = args.checkpoint or (Path(env_ckpt) if env_ckpt else None)
        if ckpt is None:
            raise SystemExit(
                "streamsplat-depth: pass --checkpoint /path/to/depth_anything_v2_vitl.pth "
                "(or set STREAMSPLAT_DA2_CKPT); weights are never downloaded"
            )
        self.args, self.device = args, torch.device(args.device)
        self.model = load_depth_anything(ckpt, args.encoder, self.device)
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.precision]
        self.meta = {
            "model": "depth_anything_v2",
            "encoder": self.model.cfg.encoder,
            "checkpoint": Path(ckpt).name,
            "checkpoint_sha256": sha256_file(ckpt),
            "preprocess": args.preprocess,
            "input_short_side": args.short_side,
            "multiple_of": 14,
            "quantity": "relative_inverse_depth",
            "normalization": "minmax_per_frame",
            "dtype": "uint16",
            "precision": args.precision,
            "resolution": "source",
        }

    def infer(self, frames: List[np.ndarray]) -> List[np.ndarray]:
        """Raw disparity at native size for a list of same-size frames."""
        from streamsplat_ns.depth.depth_anything import predict_disparity

        x = torch.from_numpy(np.stack(frames)).to(self.device).permute(0, 3, 1, 2).float().div_(255)
        d = predict_disparity(self.model, x, self.args.preprocess, self.args.short_side, dtype=self.dtype)
        return list(d.cpu().numpy())

    def run_stream(self, items: Iterable[Tuple[np.ndarray, Callable[[np.ndarray], None]]], total: int) -> int:
        """Batch consecutive same-size frames; ``items`` yield (rgb, sink(disparity))."""
        from tqdm import tqdm

        bar = tqdm(total=total, desc="depth", unit="frame")
        batch: List[Tuple[np.ndarray, Callable]] = []
        n = 0
        with ThreadPoolExecutor(max(1, self.args.workers)) as writers:
            pending = []

            def flush():
                nonlocal batch, n
                if not batch:
                    return
                outs = self.infer([b[0] for b in batch])
                for (_, sink), d in zip(batch, outs):
                    pending.append(writers.submit(sink, d))
                n += len(batch)
                bar.update(len(batch))
                batch = []

            for rgb, sink in items:
                if batch and (batch[0][0].shape != rgb.shape or len(batch) >= self.args.batch_size):
                    flush()
                batch.append((rgb, sink))
            flush()
            for f in pending:
                f.result()
        bar.close()
        return n


def _png_sink(target: Path) -> Callable[[np.ndarray], None]:
    return lambda d: atomic_write_bytes(target, encode_png16(quantize16(d)))


def run_frames(args: DepthArgs, runner: _Runner) -> int:
    jobs, roots, done = _frame_jobs(args)
    print(f"{len(jobs)} depth maps to compute ({done} already done, skipped)")

    def items() -> Iterator:
        with ThreadPoolExecutor(max(1, args.workers)) as pool:
            for job, rgb in zip(jobs, pool.map(lambda j: j.load(), jobs)):
                yield rgb, _png_sink(job.target)

    n = runner.run_stream(items(), len(jobs)) if jobs else 0
    for r in roots:
        write_sidecar(r, runner.meta)
    return n


def run_video_file(args: DepthArgs, runner: _Runner) -> int:
    from streamsplat_ns.data.video import VideoFileSequence

    vid = VideoFileSequence(args.data, args.output, "zeros")
    todo = [i for i in range(vid.num_frames) if args.overwrite or not vid.depth_path(i).is_file()]
    print(f"{vid.path}: {vid.num_frames} frames, {len(todo)} to compute -> {vid.depth_dir}")
    want = set(todo)
    items = ((rgb, _png_sink(vid.depth_path(i))) for i, rgb in vid.iter_frames() if i in want)
    n = runner.run_stream(items, len(todo)) if todo else 0
    write_sidecar(vid.depth_dir, runner.meta)
    return n


def run_re10k_chunks(args: DepthArgs, runner: _Runner) -> int:
    """One ``depth_<chunk>.pt`` (plain pickle, uint16 stacks) per chunk; finished chunks are skipped."""
    from streamsplat_ns.data.re10k import _load_chunk_examples, load_depth_companion, read_index
    from streamsplat_ns.data.safe_pickle import to_bytes

    n = 0
    for split in args.split or DEFAULT_SPLITS["re10k"]:
        stage = Path(args.data) / split
        if not stage.is_dir():
            continue
        chunks = sorted({stage / f for f in read_index(stage).values()})
        for chunk in chunks:
            out = re10k_depth_path(chunk)
            examples = _load_chunk_examples(chunk)
            keys = [str(e["key"]) for e in examples]
            if out.is_file() and not args.overwrite:
                try:
                    load_depth_companion(out, keys)
                    print(f"{out.name}: done, skipped")
                    continue
                except DataError as e:
                    print(f"{out.name}: redoing ({e})")
            stacks = []
            for ex in examples:
                frames = []
                for t in ex["images"]:
                    import io

                    from PIL import Image

                    with Image.open(io.BytesIO(to_bytes(t))) as im:
                        frames.append(np.asarray(im.convert("RGB")))
                maps: List[Optional[np.ndarray]] = [None] * len(frames)

                def sink_for(i):
                    def sink(d):
                        maps[i] = quantize16(d)

                    return sink

                n += runner.run_stream(((f, sink_for(i)) for i, f in enumerate(frames)), len(frames))
                stacks.append(np.stack(maps) if maps else np.zeros((0, 1, 1), np.uint16))
            atomic_write_bytes(out, pickle.dumps({"key": keys, "predicted_depth_norm": stacks}, protocol=4))
        write_sidecar(stage, runner.meta)
    return n


def main(args: DepthArgs) -> int:
    t0 = time.perf_counter()
    runner = _Runner(args)
    if args.dataset == "video" and Path(args.data).is_file():
        n = run_video_file(args, runner)
    elif args.dataset == "re10k" and (
        args.re10k_format == "chunks"
        or (
            args.re10k_format == "auto"
            and any((Path(args.data) / s / "index.json").is_file() for s in (args.split or DEFAULT_SPLITS["re10k"]))
        )
    ):
        n = run_re10k_chunks(args, runner)
    else:
        n = run_frames(args, runner)
    dt = time.perf_counter() - t0
    print(f"computed {n} depth maps in {dt:.1f}s ({n / max(dt, 1e-9):.1f} frames/s)")
    return n


def entrypoint() -> None:
    logging.basicConfig(level=logging.INFO)
    main(tyro.cli(DepthArgs))


if __name__ == "__main__":
    entrypoint()
