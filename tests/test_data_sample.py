"""The embedded synthetic sample: deterministic, exact depth/masks, DAVIS layout, fast."""

import hashlib
import time

import numpy as np
import pytest
from PIL import Image

from streamsplat_ns.data import davis
from streamsplat_ns.data.depth_io import read_sidecar
from streamsplat_ns.data.sample import SampleConfig, ensure_sample, is_sample, make_sample

SMALL = SampleConfig(num_sequences=2, num_frames=8, height=72, width=128)


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "README.txt":
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_deterministic_and_layout(tmp_path):
    a, b = make_sample(tmp_path / "a", SMALL), make_sample(tmp_path / "b", SMALL)
    assert _digest(a) == _digest(b)
    assert _digest(make_sample(tmp_path / "c", SampleConfig(**{**SMALL.__dict__, "seed": 1}))) != _digest(a)
    m = Image.open(a / "Annotations_unsupervised" / "480p" / "synth-00" / "00000.png")
    assert m.mode == "P" and m.getpalette()[3:6] == [128, 0, 0]
    d = Image.open(a / "depthImages" / "480p" / "synth-00" / "00000_pred.png")
    assert np.array(d).dtype == np.uint16
    assert read_sidecar(a / "depthImages")["dtype"] == "uint16"
    assert (a / "ImageSets" / "2017" / "train.txt").read_text().split() == ["synth-00"]


def test_objects_are_nearer_and_move(tmp_path):
    root = make_sample(tmp_path, SMALL)
    seq = davis.discover(root, "train")[0]
    b = seq.load(range(8), (72, 128))
    fg = b.mask > 0
    assert fg.any() and (~fg).any()
    assert b.disparity[fg].mean() > b.disparity[~fg].mean() + 0.2  # objects in front of the background
    assert (b.mask[0] != b.mask[-1]).float().mean() > 0.01  # objects move
    assert (b.rgb[0] - b.rgb[-1]).abs().mean() > 0.02  # and the camera pans


def test_default_size_is_fast(tmp_path):
    t = time.perf_counter()
    root = ensure_sample(tmp_path / "s")
    dt = time.perf_counter() - t
    assert is_sample(root) and dt < 15
    assert ensure_sample(root) == root  # cached: no regeneration
    assert len(list((root / "JPEGImages" / "480p").iterdir())) == 4


def test_a_sample_of_another_configuration_is_never_overwritten(tmp_path):
    """ensure_sample(root) on a folder holding a current sample of other settings (a generated training set)
    raises naming the folder, instead of replacing it with the default sample."""
    cfg = SampleConfig(num_sequences=1, num_frames=3, height=32, width=48, seed=7, num_val=0)
    root = make_sample(tmp_path / "train", cfg)
    before = sorted(p.name for p in (root / "JPEGImages" / "480p" / "synth-00").iterdir())
    with pytest.raises(FileExistsError, match="another configuration"):
        ensure_sample(root)
    assert is_sample(root, cfg) and ensure_sample(root, cfg) == root
    assert sorted(p.name for p in (root / "JPEGImages" / "480p" / "synth-00").iterdir()) == before
