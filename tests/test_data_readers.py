"""Readers of the four datasets + users' videos, on tiny fixtures in the exact formats."""

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from streamsplat_ns.data import co3d, davis, re10k, video, ytvos
from streamsplat_ns.data import testing as fx
from streamsplat_ns.data.depth_io import co3d_depth_path, read_depth_png, read_sidecar, write_depth_png16
from streamsplat_ns.data.errors import DataError, MissingDepthError

SIZE = (16, 24)


def test_depth_png_8_and_16_bit(tmp_path):
    d = np.linspace(0, 1, 12 * 10).reshape(12, 10)
    fx.write_depth(tmp_path / "a_pred.png", d, bits=8)
    write_depth_png16(tmp_path / "b_pred.png", d)
    a, b = read_depth_png(tmp_path / "a_pred.png"), read_depth_png(tmp_path / "b_pred.png")
    assert np.array(Image.open(tmp_path / "b_pred.png")).dtype == np.uint16
    assert np.abs(a - d).max() <= 1 / 255 + 1e-6
    assert np.abs(b - d).max() <= 1 / 65535 + 1e-6  # 16-bit keeps ~256x more precision
    assert read_sidecar(tmp_path)["dtype"] == "uint8"  # no sidecar: legacy defaults


def test_co3d_depth_path_replaces_component_not_substring():
    p = Path("/data/images_all/apple/110_1_2/images/frame000001.jpg")
    assert co3d_depth_path(p) == Path("/data/images_all/apple/110_1_2/predict_depths/frame000001_pred.png")


@pytest.mark.parametrize("res", ["480p", "Full-Resolution"])
def test_davis(tmp_path, res):
    fx.write_davis(tmp_path, {"bear": 7, "car": 6}, res=res, depth_bits=8 if res == "480p" else 16)
    seqs = davis.discover(tmp_path, "train")
    assert [s.name for s in seqs] == ["bear"] and seqs[0].num_frames == 7
    b = seqs[0].load([0, 3, 6], SIZE)
    assert b.rgb.shape == (3, 3, *SIZE) and b.disparity.shape == (3, 1, *SIZE)
    assert 0 <= b.rgb.min() and b.rgb.max() <= 1
    assert torch.allclose(b.disparity.amax(dim=(1, 2, 3)), torch.ones(3))  # min-max per frame
    assert set(b.mask.unique().tolist()) <= {0.0, 1.0, 2.0}  # ids kept, void 255 -> 0
    assert (b.mask == 2).any()
    assert [s.name for s in davis.discover(tmp_path, "val")] == ["car"]


def test_davis_missing_depth_names_path_and_command(tmp_path):
    fx.write_davis(tmp_path, {"bear": 6, "car": 6})
    p = tmp_path / "depthImages" / "480p" / "bear" / "00002_pred.png"
    p.unlink()
    seq = davis.discover(tmp_path, "train")[0]
    with pytest.raises(MissingDepthError) as e:
        seq.load([2], SIZE)
    assert str(p) in str(e.value) and "streamsplat-depth --dataset davis" in str(e.value)
    for f in (tmp_path / "depthImages").rglob("*.png"):
        f.unlink()
    with pytest.raises(MissingDepthError):
        davis.discover(tmp_path, "train")[0].check()
    assert davis.discover(tmp_path, "train", depth_mode="zeros")[0].load([0], SIZE).disparity.abs().sum() == 0


def test_davis_missing_unsupervised_masks_is_clear(tmp_path):
    fx.write_davis(tmp_path, {"bear": 6, "car": 6})
    import shutil

    shutil.rmtree(tmp_path / "Annotations_unsupervised")
    with pytest.raises(DataError, match="Unsupervised"):
        davis.discover(tmp_path, "train")
    assert davis.discover(tmp_path, "train", mask_source="semi")[0].num_frames == 6


def test_corrupt_jpeg_is_a_data_error(tmp_path):
    fx.write_davis(tmp_path, {"bear": 6, "car": 6})
    f = tmp_path / "JPEGImages" / "480p" / "bear" / "00001.jpg"
    f.write_bytes(f.read_bytes()[:40])
    with pytest.raises(DataError, match="00001.jpg"):
        davis.discover(tmp_path, "train")[0].load([1], SIZE)


def test_ytvos(tmp_path):
    fx.write_ytvos(tmp_path, {"0e27472bea": range(5, 45, 5), "a1b2c3d4e5": range(0, 30, 5)})
    seqs = ytvos.discover(tmp_path, "train")
    assert [s.name for s in seqs] == ["0e27472bea", "a1b2c3d4e5"]
    assert seqs[0].images[0].name == "00005.jpg" and seqs[0].images[1].name == "00010.jpg"
    assert seqs[0].num_frames == 8 and seqs[0].depths[0].name == "00005_pred.png"
    assert (seqs[0].load([0, 1], SIZE).mask > 0).any()
    fx.write_ytvos(tmp_path, {"ffffffffff": range(0, 25, 5)}, split="valid")
    v = ytvos.discover(tmp_path, "valid")[0].load([0, 3], SIZE)
    assert torch.all(v.mask == 1)  # valid: all-ones masks (official)
    (tmp_path / "train" / "meta.json").write_text("[]")
    with pytest.raises(DataError, match="meta.json"):
        ytvos.discover(tmp_path, "train")


def test_co3d_set_lists_and_frame_numbers(tmp_path):
    fx.write_co3d(tmp_path, frame_number_offset=100)
    train = co3d.discover(tmp_path, "train")
    assert [s.name for s in train] == ["apple/110_13051_23361"]
    assert train[0].num_frames == 8  # train + val lists of manyview_dev
    assert train[0].images[0].name == "frame000001.jpg"
    test = co3d.discover(tmp_path, "test")
    assert [s.name for s in test] == ["apple/12_34_56"] and test[0].num_frames == 5  # train list only
    b = train[0].load([0, 5], SIZE)
    assert b.mask.abs().sum() == 0 and b.disparity.max() == 1
    # no set lists: fall back to frame_annotations.jgz
    for f in (tmp_path / "apple" / "set_lists").iterdir():
        f.unlink()
    assert sorted(s.num_frames for s in co3d.discover(tmp_path, "train")) == [7, 8]
    (tmp_path / "apple" / "frame_annotations.jgz").write_bytes(b"\x1f\x8bgarbage")
    with pytest.raises(DataError, match="frame_annotations.jgz"):
        co3d.discover(tmp_path, "train")


def test_re10k_chunks_lazy_with_pickle_and_torch_depth(tmp_path):
    fx.write_re10k_chunks(tmp_path, [{"53857414accb7b44": 20, "aaaaaaaaaaaaaaaa": 17}, {"bbbbbbbbbbbbbbbb": 16}])
    seqs = re10k.discover(tmp_path, "train")
    assert {s.name: s.num_frames for s in seqs} == {
        "53857414accb7b44": 20,
        "aaaaaaaaaaaaaaaa": 17,
        "bbbbbbbbbbbbbbbb": 16,
    }
    s = seqs[1]
    b = s.load([0, 7, 15], SIZE)
    assert b.rgb.shape == (3, 3, *SIZE) and torch.allclose(b.disparity.amax(dim=(1, 2, 3)), torch.ones(3))
    assert s.nearby_range == 15
    # torch.save'd companion (zip) loads too
    fx.write_re10k_chunks(tmp_path / "t", [{"cccccccccccccccc": 16}], depth="torch")
    b2 = re10k.discover(tmp_path / "t", "train")[0].load([1], SIZE)
    assert b2.disparity.max() == 1


def test_re10k_chunk_reads_only_what_it_needs(tmp_path, monkeypatch):
    fx.write_re10k_chunks(tmp_path, [{"dddddddddddddddd": 16}], depth=None)
    read = []
    orig = zipfile.ZipFile.read
    monkeypatch.setattr(zipfile.ZipFile, "read", lambda self, name, *a: (read.append(name), orig(self, name, *a))[1])
    seq = re10k.discover(tmp_path, "train", depth_mode="zeros")[0]
    seq.load([3], SIZE)
    assert len([n for n in read if "/data/" in n and not n.endswith(".pkl")]) == 1  # one JPEG storage


def test_re10k_bad_inputs(tmp_path):
    fx.write_re10k_chunks(tmp_path, [{"eeeeeeeeeeeeeeee": 16}, {"ffffffffffffffff": 16}])
    stage = tmp_path / "train"
    idx = json.loads((stage / "index.json").read_text())
    (stage / "index.json").write_text(json.dumps({**idx, "eeeeeeeeeeeeeeee": "000001.torch"}))
    with pytest.raises(DataError, match="index.json is wrong"):
        re10k.discover(tmp_path, "train")
    (stage / "index.json").write_text(json.dumps({**idx, "zz": "000009.torch"}))
    with pytest.raises(DataError, match="does not exist"):
        re10k.discover(tmp_path, "train")
    (stage / "index.json").write_text(json.dumps(idx))
    # depth companion with the wrong frame count
    with open(stage / "depth_000001.pt", "wb") as f:
        pickle.dump({"key": ["ffffffffffffffff"], "predicted_depth_norm": [np.zeros((3, 4, 4), np.uint8)]}, f)
    seqs = re10k.discover(tmp_path, "train")
    with pytest.raises(DataError, match="3 frames|16 frames"):
        seqs[1].load([0], SIZE)
    # truncated chunk
    data = (stage / "000000.torch").read_bytes()
    (stage / "000000.torch").write_bytes(data[: len(data) // 2])
    re10k._CHUNKS.d.clear()
    with pytest.raises(DataError, match="000000.torch"):
        re10k.discover(tmp_path, "train")


def test_re10k_txt(tmp_path):
    fx.write_re10k_txt(tmp_path, {"53857414accb7b44": 17, "0123456789abcdef": 16})
    fx.write_re10k_txt(tmp_path, {"nofframesnofram0": 16}, with_frames=False)
    seqs = re10k.discover(tmp_path, "train")
    assert sorted(s.name for s in seqs) == ["0123456789abcdef", "53857414accb7b44"]
    _, ts, cams = re10k.parse_camera_txt(tmp_path / "train" / "53857414accb7b44.txt")
    assert ts[1] - ts[0] == 33366 and cams.shape == (17, 18)
    assert seqs[0].load([0, 15], SIZE).rgb.shape[0] == 2
    (tmp_path / "train" / "bad.txt").write_text("url\n1 2 3\n")
    with pytest.raises(DataError, match="19 numbers"):
        re10k.discover(tmp_path, "train")


def test_video_file_and_folder(tmp_path):
    path = fx.write_video(tmp_path / "clip.mp4", n=12)
    seq = video.discover(path, depth_mode="zeros")[0]
    assert seq.num_frames == 12 and seq.native_size() == (32, 48)
    frames = seq.decode([7, 2, 9])
    for t, f in zip([7, 2, 9], frames):  # the bright bar sits at column 2t: frames come back in order
        assert int(np.argmax(f.mean(axis=(0, 2)))) in (2 * t, 2 * t + 1)
    with pytest.raises(MissingDepthError, match="clip_depth"):
        video.discover(path)[0].check()
    # frame folder + depth by stem
    folder = tmp_path / "frames"
    for i, f in enumerate(seq.decode(range(12))):
        fx.write_jpeg(folder / f"{i:03d}.jpg", f)
        fx.write_depth(tmp_path / "frames_depth" / f"{i:03d}_pred.png", np.random.rand(32, 48))
    fs = video.discover(folder)[0]
    assert fs.num_frames == 12 and fs.load([0, 11], SIZE).disparity.max() == 1


def test_video_bad_input(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(DataError, match="empty.mp4"):
        video.discover(tmp_path / "empty.mp4")
    (tmp_path / "junk.webm").write_bytes(b"not a video at all" * 10)
    with pytest.raises(DataError, match="junk.webm"):
        video.discover(tmp_path / "junk.webm")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="no frames"):
        video.discover(tmp_path / "nothing")
