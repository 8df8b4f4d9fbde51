"""The embedded sample: a small deterministic synthetic dynamic dataset in DAVIS 2017 layout.

Each sequence is a textured background panning under a moving camera (a tilted plane: disparity
grows towards the bottom) with 2-3 textured objects that translate, rotate and move in depth (their
apparent size follows their disparity). Occlusion is resolved per pixel with the exact disparity,
so the depth maps and object masks are exact. numpy only; a few seconds on 2 cores.

Layout (what :mod:`streamsplat_ns.data.davis` reads)::

    <out>/JPEGImages/480p/<seq>/00000.jpg ...
    <out>/Annotations_unsupervised/480p/<seq>/00000.png     palette PNG, ids 1..K
    <out>/Annotations/480p/<seq>/00000.png                  same masks (semi-supervised folder)
    <out>/depthImages/480p/<seq>/00000_pred.png             16-bit, min-max per frame, bright = near
    <out>/depthImages/depth_meta.json                       sidecar
    <out>/ImageSets/2017/{train,val}.txt
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np

SAMPLE_VERSION = 1
RESOLUTION = "480p"  # folder name only; frames are `height` x `width`
MARKER = ".streamsplat_sample.json"


@dataclass
class SampleConfig:
    num_sequences: int = 4
    num_frames: int = 24
    height: int = 288
    width: int = 512
    seed: int = 0
    num_val: int = 1
    jpeg_quality: int = 95


def voc_palette() -> List[int]:
    """The 256-entry PASCAL VOC palette DAVIS masks use (0 black, 1 (128,0,0), 2 (0,128,0), ...)."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def _upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsample of [gh, gw, C] to [h, w, C] (separable, vectorised)."""
    gh, gw = grid.shape[:2]
    ys = np.linspace(0, gh - 1, h)
    xs = np.linspace(0, gw - 1, w)
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, gh - 1), np.minimum(x0 + 1, gw - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x1] * fx
    bot = grid[y1][:, x0] * (1 - fx) + grid[y1][:, x1] * fx
    return top * (1 - fy) + bot * fy


def texture(rng: np.random.Generator, h: int, w: int, base: Optional[np.ndarray] = None) -> np.ndarray:
    """Multi-octave colour noise plus stripes and a checker: high-frequency detail to learn from."""
    base = rng.uniform(0.2, 0.8, 3) if base is None else base
    img = np.zeros((h, w, 3)) + base
    for cells, amp in ((3, 0.25), (8, 0.15), (24, 0.08)):
        img += amp * (_upsample(rng.uniform(-1, 1, (cells, max(2, cells * w // h), 3)), h, w))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    ang, freq = rng.uniform(0, np.pi), rng.uniform(0.05, 0.15)
    stripes = np.sin((xx * np.cos(ang) + yy * np.sin(ang)) * freq * 2 * np.pi)
    img += 0.12 * stripes[..., None] * rng.uniform(-1, 1, 3)
    cell = int(rng.integers(12, 28))
    checker = ((xx // cell + yy // cell) % 2) * 2 - 1
    img += 0.06 * checker[..., None]
    return np.clip(img, 0, 1)


@dataclass
class _Object:
    tex: np.ndarray
    shape: str  # "ellipse" | "box"
    radius: float  # pixels at disparity d_ref
    aspect: float
    p0: Tuple[float, float]
    vel: Tuple[float, float]
    wobble: float
    d0: float
    vd: float
    rot0: float
    vrot: float


def _render_sequence(rng: np.random.Generator, cfg: SampleConfig):
    H, W, T = cfg.height, cfg.width, cfg.num_frames
    pan = rng.uniform(-3.0, 3.0, 2) * np.array([1.0, 0.3])  # px per frame
    bh = H + int(abs(pan[1]) * T) + 4
    bw = W + int(abs(pan[0]) * T) + 4
    bg = texture(rng, bh, bw)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    tilt = rng.uniform(-0.05, 0.05)
    bg_disp = 0.08 + 0.27 * (yy / H) + tilt * (xx / W - 0.5)  # ground plane: near at the bottom
    objs = []
    for k in range(int(rng.integers(2, 4))):
        objs.append(
            _Object(
                tex=texture(rng, 64, 64, base=rng.uniform(0.05, 0.95, 3)),
                shape=("ellipse", "box")[k % 2],
                radius=rng.uniform(0.10, 0.18) * H,
                aspect=rng.uniform(0.6, 1.5),
                p0=(rng.uniform(0.2, 0.8) * W, rng.uniform(0.3, 0.7) * H),
                vel=(rng.uniform(-6, 6), rng.uniform(-2.5, 2.5)),
                wobble=rng.uniform(0, 6),
                d0=rng.uniform(0.45, 0.8),
                vd=rng.uniform(-0.012, 0.012),
                rot0=rng.uniform(0, np.pi),
                vrot=rng.uniform(-0.06, 0.06),
            )
        )
    frames, disps, masks = [], [], []
    for t in range(T):
        ox = int(round(2 + (pan[0] * t if pan[0] >= 0 else abs(pan[0]) * (T - t))))
        oy = int(round(2 + (pan[1] * t if pan[1] >= 0 else abs(pan[1]) * (T - t))))
        rgb = bg[oy : oy + H, ox : ox + W].copy()
        disp = bg_disp.copy()
        ids = np.zeros((H, W), np.uint8)
        for k, o in enumerate(objs):
            d = float(np.clip(o.d0 + o.vd * t, 0.4, 0.97))
            s = o.radius * d / 0.6  # nearer objects look bigger
            cx = o.p0[0] + o.vel[0] * t
            cy = o.p0[1] + o.vel[1] * t + o.wobble * np.sin(0.4 * t + k)
            cx = (cx - W * 0.1) % (W * 0.8) + W * 0.1  # wrap so objects stay in view
            th = o.rot0 + o.vrot * t
            rx, ry = s * o.aspect, s / o.aspect
            r = int(np.ceil(max(rx, ry) * 1.5)) + 1
            y0, y1 = max(0, int(cy) - r), min(H, int(cy) + r + 1)
            x0, x1 = max(0, int(cx) - r), min(W, int(cx) + r + 1)
            if y0 >= y1 or x0 >= x1:
                continue
            dx, dy = xx[y0:y1, x0:x1] - cx, yy[y0:y1, x0:x1] - cy
            u = (dx * np.cos(th) + dy * np.sin(th)) / rx
            v = (-dx * np.sin(th) + dy * np.cos(th)) / ry
            if o.shape == "ellipse":
                rho2 = u * u + v * v
                inside = rho2 <= 1
                bulge = 0.06 * np.sqrt(np.clip(1 - rho2, 0, 1))  # sphere-like relief
            else:
                inside = (np.abs(u) <= 1) & (np.abs(v) <= 1)
                bulge = 0.03 * (1 - np.maximum(np.abs(u), np.abs(v)))  # pyramid relief
            od = d + bulge
            win = inside & (od > disp[y0:y1, x0:x1])
            tu = np.clip(((u + 1) * 0.5 * 63).astype(int), 0, 63)
            tv = np.clip(((v + 1) * 0.5 * 63).astype(int), 0, 63)
            shade = (0.75 + 0.25 * (bulge / max(bulge.max(), 1e-6)))[..., None]
            col = o.tex[tv, tu] * shade
            rgb[y0:y1, x0:x1][win] = col[win]
            disp[y0:y1, x0:x1][win] = od[win]
            ids[y0:y1, x0:x1][win] = k + 1
        frames.append((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8))
        disps.append(disp)
        masks.append(ids)
    return frames, disps, masks


def make_sample(out_dir: Union[str, Path], cfg: Optional[SampleConfig] = None, progress: bool = False) -> Path:
    """Write the sample dataset to ``out_dir`` (a DAVIS root) and return it. Deterministic in ``cfg``."""
    from PIL import Image

    from streamsplat_ns.data.depth_io import davis_depth_path, encode_png16, quantize16, write_sidecar

    cfg = cfg or SampleConfig()
    out = Path(out_dir)
    names = [f"synth-{i:02d}" for i in range(cfg.num_sequences)]
    pal = voc_palette()
    it = list(enumerate(names))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="generating sample", unit="seq")
    for i, name in it:
        rng = np.random.default_rng([cfg.seed, i])
        frames, disps, masks = _render_sequence(rng, cfg)
        for sub in ("JPEGImages", "Annotations_unsupervised", "Annotations"):
            (out / sub / RESOLUTION / name).mkdir(parents=True, exist_ok=True)
        for t, (rgb, disp, ids) in enumerate(zip(frames, disps, masks)):
            stem = f"{t:05d}"
            Image.fromarray(rgb).save(out / "JPEGImages" / RESOLUTION / name / f"{stem}.jpg", quality=cfg.jpeg_quality)
            m = Image.frombytes("P", (ids.shape[1], ids.shape[0]), ids.tobytes())
            m.putpalette(pal)
            buf = io.BytesIO()
            m.save(buf, format="PNG")
            for sub in ("Annotations_unsupervised", "Annotations"):
                (out / sub / RESOLUTION / name / f"{stem}.png").write_bytes(buf.getvalue())
            dp = davis_depth_path(out, RESOLUTION, name, stem)
            dp.parent.mkdir(parents=True, exist_ok=True)
            dp.write_bytes(encode_png16(quantize16(disp)))
    write_sidecar(
        out / "depthImages",
        {
            "model": "synthetic-exact",
            "encoder": None,
            "checkpoint_sha256": None,
            "preprocess": "exact",
            "input_short_side": None,
            "multiple_of": None,
            "dtype": "uint16",
            "generator": "streamsplat_ns.data.sample",
            "version": SAMPLE_VERSION,
        },
    )
    sets = out / "ImageSets" / "2017"
    sets.mkdir(parents=True, exist_ok=True)
    n_val = min(cfg.num_val, max(0, cfg.num_sequences - 1))
    (sets / "train.txt").write_text("\n".join(names[: len(names) - n_val]) + "\n")
    (sets / "val.txt").write_text("\n".join(names[len(names) - n_val :] or names[-1:]) + "\n")
    (out / "README.txt").write_text(
        "StreamSplat embedded sample: synthetic, procedurally generated (streamsplat_ns.data.sample).\n"
        "DAVIS-2017 layout; depthImages hold exact disparity (16-bit PNG, min-max per frame, bright = near).\n"
    )
    (out / MARKER).write_text(json.dumps({"version": SAMPLE_VERSION, **asdict(cfg)}, indent=2))
    return out


def default_sample_dir() -> Path:
    env = os.environ.get("STREAMSPLAT_SAMPLE_DIR")
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "streamsplat_ns" / "sample"


def is_sample(root: Union[str, Path], cfg: Optional[SampleConfig] = None) -> bool:
    p = Path(root) / MARKER
    if not p.is_file():
        return False
    try:
        meta = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return meta == {"version": SAMPLE_VERSION, **asdict(cfg or SampleConfig())}


def ensure_sample(root: Optional[Union[str, Path]] = None, cfg: Optional[SampleConfig] = None) -> Path:
    """Return the sample at ``root`` (default cache dir), generating it first if needed.

    Generation goes to a temp dir that is renamed into place, so concurrent processes (DDP ranks)
    never see a half-written sample.
    """
    root = Path(root) if root else default_sample_dir()
    if is_sample(root, cfg):
        return root
    try:
        held = json.loads((root / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        held = None
    if isinstance(held, dict) and held.get("version") == SAMPLE_VERSION:
        # a current sample of another configuration (e.g. a generated training set): never overwrite it
        want = asdict(cfg or SampleConfig())
        diff = {k: (held.get(k), v) for k, v in want.items() if held.get(k) != v}
        raise FileExistsError(
            f"{root} holds a sample of another configuration (held, wanted: {diff}); pass another directory, "
            f"or delete {root} to regenerate it"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".sample-", dir=root.parent))
    try:
        make_sample(tmp, cfg)
        if root.exists() and not is_sample(root, cfg):
            if (root / MARKER).is_file():  # an older sample version: replace it
                shutil.rmtree(root)
            elif any(root.iterdir()):
                raise FileExistsError(f"{root} exists and is not a StreamSplat sample; pick another directory")
            else:
                root.rmdir()
        if not root.exists():
            os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root
