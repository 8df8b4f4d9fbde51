"""Tiny fixtures in the exact on-disk formats of the four datasets (for tests and bug reports).

Everything is synthetic (the real datasets cannot be redistributed). Frames are small random-ish
images; depth maps are written at the official paths in 8-bit (authors' script) or 16-bit (ours).
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from streamsplat_ns.data.depth_io import co3d_depth_path, davis_depth_path, ytvos_depth_path
from streamsplat_ns.data.sample import voc_palette


def _frame(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = rng.integers(0, 255, (max(2, h // 8), max(2, w // 8), 3)).astype(np.uint8)
    return np.kron(base, np.ones((8, 8, 1), np.uint8))[:h, :w]


def jpeg_bytes(rgb: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    b = io.BytesIO()
    Image.fromarray(rgb).save(b, format="JPEG", quality=quality)
    return b.getvalue()


def write_jpeg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(rgb))


def write_palette_png(path: Path, ids: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.frombytes("P", (ids.shape[1], ids.shape[0]), ids.astype(np.uint8).tobytes())
    im.putpalette(voc_palette())
    im.save(path)


def write_depth(path: Path, disp01: np.ndarray, bits: int = 16) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if bits == 8:
        Image.fromarray((np.clip(disp01, 0, 1) * 255).astype(np.uint8)).save(path)
    else:
        from streamsplat_ns.data.depth_io import encode_png16, quantize16

        path.write_bytes(encode_png16(quantize16(disp01, normalize=False)))


def _ramp(h: int, w: int, t: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy + xx + t) % (h + w)) / (h + w)


def _ids(h: int, w: int, t: int) -> np.ndarray:
    ids = np.zeros((h, w), np.uint8)
    ids[h // 4 : h // 2, (t % (w // 2)) : (t % (w // 2)) + w // 4] = 1
    ids[-h // 4 :, -w // 4 :] = 2
    ids[0, 0] = 255  # void pixel
    return ids


def write_davis(
    root: Path,
    seqs: Dict[str, int],
    res: str = "480p",
    h: int = 24,
    w: int = 40,
    depth_bits: int = 16,
    splits: Optional[Dict[str, List[str]]] = None,
    seed: int = 0,
) -> Path:
    rng = np.random.default_rng(seed)
    for name, n in seqs.items():
        for t in range(n):
            stem = f"{t:05d}"
            write_jpeg(root / "JPEGImages" / res / name / f"{stem}.jpg", _frame(rng, h, w))
            for sub in ("Annotations", "Annotations_unsupervised"):
                write_palette_png(root / sub / res / name / f"{stem}.png", _ids(h, w, t))
            write_depth(davis_depth_path(root, res, name, stem), _ramp(h, w, t), depth_bits)
    splits = splits or {"train": list(seqs)[:-1] or list(seqs), "val": list(seqs)[-1:]}
    for s, names in splits.items():
        p = root / "ImageSets" / "2017" / f"{s}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("\n".join(names) + "\n")
    return root


def write_ytvos(
    root: Path, videos: Dict[str, Sequence[int]], split: str = "train", h: int = 24, w: int = 40, seed: int = 0
) -> Path:
    """``videos``: id -> source frame indices (e.g. range(5, 60, 5): stems step by 5, start != 0)."""
    rng = np.random.default_rng(seed)
    meta = {"videos": {}}
    for vid, frames in videos.items():
        stems = [f"{i:05d}" for i in frames]
        for k, stem in enumerate(stems):
            write_jpeg(root / split / "JPEGImages" / vid / f"{stem}.jpg", _frame(rng, h, w))
            if split == "train" or k == 0:
                write_palette_png(root / split / "Annotations" / vid / f"{stem}.png", _ids(h, w, k))
            write_depth(ytvos_depth_path(root, split, vid, stem), _ramp(h, w, k), 8)
        objs = {"1": {"frames": stems}, "2": {"frames": stems}}
        if split == "train":
            objs["1"]["category"], objs["2"]["category"] = "person", "dog"
        meta["videos"][vid] = {"objects": objs}
    (root / split / "meta.json").write_text(json.dumps(meta))
    return root


def write_co3d(
    root: Path,
    category: str = "apple",
    sequences: Optional[Dict[str, int]] = None,
    h: int = 24,
    w: int = 32,
    seed: int = 0,
    frame_number_offset: int = 0,
) -> Path:
    """One category; ``frame_number_offset`` makes frame_number differ from the file-name digits."""
    rng = np.random.default_rng(seed)
    sequences = sequences or {"110_13051_23361": 8, "12_34_56": 7}
    frame_ann, seq_ann, dev, test = [], [], {"train": [], "val": [], "test": []}, {"train": [], "test": []}
    cat = root / category
    for si, (seq, n) in enumerate(sequences.items()):
        for t in range(n):
            fname = f"frame{t + 1:06d}"
            rel = f"{category}/{seq}/images/{fname}.jpg"
            write_jpeg(root / rel, _frame(rng, h, w))
            from PIL import Image

            (cat / seq / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray((np.ones((h, w)) * 200).astype(np.uint8)).save(cat / seq / "masks" / f"{fname}.png")
            dep16 = np.full((h, w), 1.5, np.float16).view(np.uint16)
            (cat / seq / "depths").mkdir(parents=True, exist_ok=True)
            Image.fromarray(dep16).save(cat / seq / "depths" / f"{fname}.jpg.geometric.png")
            (cat / seq / "depth_masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ones((h, w), bool)).save(cat / seq / "depth_masks" / f"{fname}.png")
            write_depth(co3d_depth_path(root / rel), _ramp(h, w, t), 8)
            fn = t + frame_number_offset
            fmt = "ndc_isotropic" if si % 2 == 0 else "ndc_norm_image_bounds"
            frame_ann.append(
                {
                    "sequence_name": seq,
                    "frame_number": fn,
                    "frame_timestamp": t / 30.0,
                    "image": {"path": rel, "size": [h, w]},
                    "depth": {
                        "path": f"{category}/{seq}/depths/{fname}.jpg.geometric.png",
                        "scale_adjustment": 1.0,
                        "mask_path": f"{category}/{seq}/depth_masks/{fname}.png",
                    },
                    "mask": {"path": f"{category}/{seq}/masks/{fname}.png", "mass": 100.0},
                    "viewpoint": {
                        "R": np.eye(3).tolist(),
                        "T": [0, 0, 3],
                        "focal_length": [2.0, 2.0],
                        "principal_point": [0.0, 0.0],
                        "intrinsics_format": fmt,
                    },
                    "meta": {"frame_type": "train_known"},
                    "camera_name": "cam0",
                }
            )
            target = dev if si == 0 else test
            lst = "val" if (si == 0 and t % 4 == 3) else ("test" if si == 1 and t % 3 == 2 else "train")
            target[lst].append([seq, fn, rel])
        seq_ann.append(
            {
                "sequence_name": seq,
                "category": category,
                "video": {"path": f"{category}/{seq}.mp4", "length": n},
                "point_cloud": {"path": f"{category}/{seq}/pointcloud.ply", "quality_score": 1.0, "n_points": 0},
                "viewpoint_quality_score": 1.0,
            }
        )
    cat.mkdir(parents=True, exist_ok=True)
    for name, data in (("frame_annotations.jgz", frame_ann), ("sequence_annotations.jgz", seq_ann)):
        with gzip.open(cat / name, "wt", encoding="utf8") as f:
            json.dump(data, f)
    (cat / "set_lists").mkdir(exist_ok=True)
    (cat / "set_lists" / "set_lists_manyview_dev_0.json").write_text(json.dumps(dev))
    (cat / "set_lists" / "set_lists_manyview_test_0.json").write_text(json.dumps(test))
    return root


def re10k_cameras(n: int) -> np.ndarray:
    cams = np.zeros((n, 18), np.float32)
    cams[:, :4] = (0.5, 0.89, 0.5, 0.5)
    pose = np.concatenate([np.eye(3), np.zeros((3, 1))], 1)
    cams[:, 6:] = pose.reshape(-1)
    cams[:, 6 + 3] = np.arange(n) * 0.1
    return cams


def write_re10k_chunks(
    root: Path,
    clips_per_chunk: Sequence[Dict[str, int]],
    split: str = "train",
    h: int = 18,
    w: int = 32,
    depth: Optional[str] = "pickle",
    seed: int = 0,
) -> Path:
    """pixelSplat chunks ``<root>/<split>/%06d.torch`` + index.json + ``depth_%06d.pt``.

    ``clips_per_chunk``: one ``{key: num_frames}`` per chunk; ``depth``: 'pickle' (official), 'torch'
    (torch.save zip) or None.
    """
    import torch

    rng = np.random.default_rng(seed)
    stage = root / split
    stage.mkdir(parents=True, exist_ok=True)
    index = {}
    for ci, clips in enumerate(clips_per_chunk):
        name = f"{ci:06d}"
        examples, keys, stacks = [], [], []
        for key, n in clips.items():
            imgs = [torch.frombuffer(bytearray(jpeg_bytes(_frame(rng, h, w))), dtype=torch.uint8) for _ in range(n)]
            examples.append(
                {
                    "url": f"https://www.youtube.com/watch?v={key[:11]}",
                    "timestamps": torch.arange(n, dtype=torch.int64) * 33366,
                    "cameras": torch.from_numpy(re10k_cameras(n)),
                    "images": imgs,
                    "key": key,
                }
            )
            keys.append(key)
            stacks.append((np.stack([_ramp(h, w, t) for t in range(n)]) * 255).astype(np.uint8))
            index[key] = f"{name}.torch"
        torch.save(examples, stage / f"{name}.torch")
        if depth == "pickle":
            with open(stage / f"depth_{name}.pt", "wb") as f:
                pickle.dump({"key": keys, "predicted_depth_norm": stacks}, f)
        elif depth == "torch":
            torch.save(
                {"key": keys, "predicted_depth_norm": [torch.from_numpy(s) for s in stacks]}, stage / f"depth_{name}.pt"
            )
    (stage / "index.json").write_text(json.dumps(index))
    return root


def write_re10k_txt(
    root: Path,
    clips: Dict[str, int],
    split: str = "train",
    h: int = 18,
    w: int = 32,
    with_frames: bool = True,
    seed: int = 0,
) -> Path:
    rng = np.random.default_rng(seed)
    for clip, n in clips.items():
        cams = re10k_cameras(n)
        lines = [f"https://www.youtube.com/watch?v={clip[:11]}"]
        for t in range(n):
            ts = 81372956 + t * 33366
            lines.append(" ".join([str(ts)] + [f"{v:.6f}" for v in cams[t]]))
            if with_frames:
                write_jpeg(root / "frames" / split / clip / f"{ts}.jpg", _frame(rng, h, w))
                write_depth(root / "depths" / split / clip / f"{ts}_pred.png", _ramp(h, w, t), 16)
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / split / f"{clip}.txt").write_text("\n".join(lines) + "\n")
    return root


def write_video(
    path: Path, n: int = 12, h: int = 32, w: int = 48, fps: int = 10, codec: str = "mpeg4", seed: int = 0
) -> Path:
    """A tiny video with PyAV (frame t has a bright bar at column 2t, to check frame order)."""
    import av

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for t in range(n):
            img = (rng.integers(0, 60, (h, w, 3))).astype(np.uint8)
            img[:, (2 * t) % w : (2 * t) % w + 2] = 255
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path
