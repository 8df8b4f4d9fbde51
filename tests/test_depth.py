"""Depth Anything V2: official key layout, strict local loading, the streamsplat-depth CLI."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from streamsplat_ns.depth.depth_anything import (DepthAnythingConfig, DepthAnythingV2, load_depth_anything,
                                                 predict_disparity, target_size)

LAYOUT = Path("/work/shared/reference/official_layout")


@pytest.mark.parametrize("enc", ["vits", "vitb", "vitl"])
def test_state_dict_matches_official_layout(enc):
    tsv = LAYOUT / f"depth_anything_v2_{enc}.tsv"
    if not tsv.is_file():
        pytest.skip("official layout files not available")
    ref = {ln.split("\t")[0]: ln.split("\t")[1] for ln in tsv.read_text().splitlines()}
    with torch.device("meta"):
        sd = DepthAnythingV2(DepthAnythingConfig.of(enc)).state_dict()
    assert set(sd) == set(ref)
    assert all(str(list(sd[k].shape)) == ref[k] for k in ref)


def test_strict_load_and_clear_errors(tmp_path):
    torch.manual_seed(0)
    m = DepthAnythingV2(DepthAnythingConfig.of("tiny"))
    p = tmp_path / "depth_anything_v2_tiny.pth"
    torch.save(m.state_dict(), p)
    m2 = load_depth_anything(p, "tiny")
    x = torch.rand(2, 3, 42, 70)
    assert torch.allclose(m.eval()(x), m2(x))
    sd = m.state_dict()
    sd.pop("depth_head.scratch.output_conv2.2.bias")
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="output_conv2.2.bias"):
        load_depth_anything(tmp_path / "bad.pth", "tiny")
    with pytest.raises(FileNotFoundError, match="never|Nothing is downloaded"):
        load_depth_anything(tmp_path / "missing_vitl.pth")


def test_predict_disparity_shapes():
    assert target_size(480, 854) == (518, 924) and target_size(288, 512) == (518, 924)
    m = DepthAnythingV2(DepthAnythingConfig.of("tiny")).eval()
    for mode in ("streamsplat", "official"):
        d = predict_disparity(m, torch.rand(1, 3, 20, 36), mode, short_side=28)
        assert d.shape == (1, 20, 36) and (d >= 0).all()


def test_depth_cli_davis_resumable(tmp_path):
    from streamsplat_ns.cli.depth import DepthArgs, main
    from streamsplat_ns.data import davis
    from streamsplat_ns.data import testing as fx
    from streamsplat_ns.data.depth_io import read_sidecar

    root = fx.write_davis(tmp_path / "D", {"a": 3, "b": 2})
    for f in (root / "depthImages").rglob("*.png"):
        f.unlink()
    ck = tmp_path / "depth_anything_v2_tiny.pth"
    torch.save(DepthAnythingV2(DepthAnythingConfig.of("tiny")).state_dict(), ck)
    args = DepthArgs(dataset="davis", data=root, checkpoint=ck, short_side=28, batch_size=2, device="cpu", workers=1)
    assert main(args) == 5
    p = root / "depthImages" / "480p" / "a" / "00001_pred.png"
    assert np.array(Image.open(p)).dtype == np.uint16
    meta = read_sidecar(root / "depthImages")
    assert meta["encoder"] == "tiny" and meta["dtype"] == "uint16" and len(meta["checkpoint_sha256"]) == 64
    assert main(args) == 0  # resumable: everything is done
    p.unlink()
    assert main(args) == 1
    assert davis.discover(root, "train")[0].load([0, 1], (8, 12)).disparity.shape == (2, 1, 8, 12)


def test_depth_cli_video_and_re10k(tmp_path):
    from streamsplat_ns.cli.depth import DepthArgs, main
    from streamsplat_ns.data import re10k, video
    from streamsplat_ns.data import testing as fx

    ck = tmp_path / "depth_anything_v2_tiny.pth"
    torch.save(DepthAnythingV2(DepthAnythingConfig.of("tiny")).state_dict(), ck)
    vid = fx.write_video(tmp_path / "v.mp4", n=6)
    common = dict(checkpoint=ck, short_side=28, device="cpu", workers=1)
    assert main(DepthArgs(dataset="video", data=vid, **common)) == 6
    video.discover(vid)[0].check()  # depth now found at the default <parent>/<name>_depth
    fx.write_re10k_chunks(tmp_path / "R", [{"a" * 16: 3, "b" * 16: 2}], depth=None)
    assert main(DepthArgs(dataset="re10k", data=tmp_path / "R", split=("train",), **common)) == 5
    s = re10k.discover(tmp_path / "R", "train")[1]
    assert s.load_depth_stack().dtype == np.uint16 and s.load([1], (8, 8)).disparity.shape == (1, 1, 8, 8)
    assert main(DepthArgs(dataset="re10k", data=tmp_path / "R", split=("train",), **common)) == 0
