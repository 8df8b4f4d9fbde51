"""Clip samplers (stage 1 / stage 2), per-dataset ranges and weights, bad-item skipping."""

import numpy as np
import torch

from streamsplat_ns.data import davis, re10k
from streamsplat_ns.data import testing as fx
from streamsplat_ns.data.clips import ClipDataset, sample_offsets

SIZE = (16, 24)


def test_sample_offsets():
    rng = np.random.default_rng(0)
    for _ in range(200):
        o = sample_offsets(rng, 6, 15)
        assert o[0] == 0 and len(set(o.tolist())) == 6 and np.all(np.diff(o) > 0) and o[-1] <= 15
    assert sample_offsets(rng, 6, 5).tolist() == [0, 1, 2, 3, 4, 5]  # R = 5: consecutive
    assert sample_offsets(rng, 6, 15, random=False).tolist() == [0, 3, 6, 9, 12, 15]
    assert sample_offsets(rng, 1, 15).tolist() == [0]


def test_stage1_and_stage2_davis(tmp_path):
    fx.write_davis(tmp_path, {"a": 9, "b": 4, "c": 6}, splits={"train": ["a", "b"], "val": ["c"]})
    seqs = davis.discover(tmp_path, "train")
    s1 = ClipDataset(seqs, 1, augment=False, size=SIZE)
    assert len(s1) == 13
    it = s1[3]
    assert it["rgb"].shape == (1, 3, *SIZE) and it["times"].tolist() == [0.0]
    s2 = ClipDataset(seqs, 6, augment=False, size=SIZE)
    assert len(s2) == 4  # "b" (4 frames) is too short; "a" has anchors 0..3
    for i in range(len(s2)):
        it = s2[i]
        f = it["frame_ids"]
        assert f.tolist() == list(range(f[0], f[0] + 6))  # DAVIS R = 5 -> consecutive window
        assert torch.allclose(it["times"], torch.linspace(0, 1, 6))
        assert it["dataset"] == "davis" and it["disparity"].shape == (6, 1, *SIZE)
    assert torch.equal(s2[2]["rgb"], s2[2]["rgb"])  # deterministic per (seed, epoch, index)


def test_stage2_re10k_offsets_and_times(tmp_path):
    fx.write_re10k_chunks(tmp_path, [{"k" * 16: 40}])
    ds = ClipDataset(re10k.discover(tmp_path, "train"), 6, augment=False, size=SIZE, seed=3)
    spans = []
    for i in range(0, len(ds), 3):
        it = ds[i]
        f = it["frame_ids"].numpy()
        off = f - f[0]
        assert np.all(np.diff(f) > 0) and off[-1] <= 15 and f[-1] < 40
        assert torch.allclose(it["times"], torch.from_numpy(off / off[-1]).float())
        spans.append(off[-1])
    assert max(spans) > 5  # RE10K uses the wider range


def test_weights_balance_datasets(tmp_path):
    fx.write_davis(tmp_path / "d", {"a": 30, "z": 6})
    fx.write_re10k_chunks(tmp_path / "r", [{"q" * 16: 8}])
    seqs = davis.discover(tmp_path / "d", "train") + re10k.discover(tmp_path / "r", "train")
    ds = ClipDataset(seqs, 6, weights={"davis": 1.0, "re10k": 1.0}, augment=False, size=SIZE)
    draws = [ds.datasets[ds._seq[i]] for i in ds.sampler(4000)]
    share = draws.count("re10k") / len(draws)
    assert 0.45 < share < 0.55  # 3 re10k anchors vs 25 davis anchors, balanced by weight
    ds0 = ClipDataset(seqs, 6, weights={"davis": 1.0, "re10k": 0.0}, augment=False, size=SIZE)
    assert all(ds0.datasets[ds0._seq[i]] == "davis" for i in ds0.sampler(300))


def test_bad_clip_is_skipped_and_counted(tmp_path):
    fx.write_davis(tmp_path, {"a": 6, "b": 6, "c": 6}, splits={"train": ["a", "b"], "val": ["c"]})
    (tmp_path / "JPEGImages" / "480p" / "a" / "00003.jpg").write_bytes(b"broken")
    ds = ClipDataset(davis.discover(tmp_path, "train"), 6, augment=False, size=SIZE)
    it = ds[0]  # "a" always contains frame 3 -> skipped, another clip drawn
    assert it["sequence"] == "b" and ds.skipped >= 1
