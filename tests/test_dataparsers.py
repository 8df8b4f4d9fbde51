"""DataParsers: outputs (ORTHOPHOTO cameras, times, metadata), the leaf entry-point module, defaults."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from nerfstudio.cameras.cameras import CameraType

from streamsplat_ns.data import testing as fx
from streamsplat_ns.dataparsers import specs

SPECS = ["re10k", "co3dv2", "davis", "youtube_vos", "combined", "video"]


def test_specs_is_a_leaf_module():
    code = (
        "import sys; import streamsplat_ns.dataparsers.specs as s; "
        "bad=[m for m in sys.modules if m.startswith('streamsplat_ns') and m not in "
        "('streamsplat_ns','streamsplat_ns.dataparsers','streamsplat_ns.dataparsers.specs')]; "
        "assert not bad, bad; assert 'nerfstudio.data.datamanagers.base_datamanager' not in sys.modules; "
        "assert 'gsplat' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


def test_specs_are_dataparser_specifications():
    from nerfstudio.plugins.registry_dataparser import DataParserSpecification

    for name in SPECS:
        assert isinstance(getattr(specs, name), DataParserSpecification)
    assert set(specs.ENTRY_POINTS) == {
        "re10k-data",
        "co3dv2-data",
        "davis-data",
        "youtube-vos-data",
        "streamsplat-combined-data",
        "video-data",
    }


def test_config_yaml_roundtrip():
    import yaml

    cfg = specs.DavisDataParserConfig(data=Path("/x"))
    back = yaml.load(yaml.dump(cfg), Loader=yaml.Loader)
    assert back._target is specs._DavisTarget and back.data == Path("/x")


def _check(out, n_frames_first):
    cams = out.cameras
    assert int(cams.camera_type[0]) == CameraType.ORTHOPHOTO.value
    assert torch.allclose(cams.fx, cams.width.float() / 2) and torch.allclose(cams.cy, cams.height.float() / 2)
    assert torch.allclose(cams.camera_to_worlds[0, :, :3], torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]))
    t = cams.times[:n_frames_first, 0]
    assert t[0] == 0 and t[-1] == 1 and torch.all(t.diff() > 0)
    if len(cams) > n_frames_first:
        assert cams[n_frames_first : n_frames_first + 1].metadata["clip_id"].item() == 1
    assert cams[n_frames_first - 1 : n_frames_first].metadata["frame_id"].item() == n_frames_first - 1
    assert len(out.image_filenames) == len(cams) and all(Path(p).is_file() for p in out.image_filenames)
    assert out.metadata["sequences"]


def test_davis_parser(tmp_path):
    fx.write_davis(tmp_path / "D", {"a": 6, "b": 7, "c": 6}, splits={"train": ["a", "b"], "val": ["c"]})
    dp = specs.DavisDataParserConfig(data=tmp_path / "D", cache_dir=tmp_path / "cache").setup()
    out = dp.get_dataparser_outputs("train")
    _check(out, 6)
    assert out.mask_filenames is not None and len(out.mask_filenames) == 13
    assert [s.name for s in dp.get_dataparser_outputs("val").metadata["sequences"]] == ["c"]


def test_ytvos_co3d_parsers(tmp_path):
    fx.write_ytvos(tmp_path / "Y", {"0e27472bea": range(5, 35, 5), "a1b2c3d4e5": range(0, 30, 5)})
    _check(specs.YtvosDataParserConfig(data=tmp_path / "Y").setup().get_dataparser_outputs("train"), 6)
    fx.write_co3d(tmp_path / "C", sequences={"1_2_3": 6, "4_5_6": 7, "7_8_9": 5})
    out = specs.Co3dDataParserConfig(data=tmp_path / "C").setup().get_dataparser_outputs("train")
    assert out.cameras.times[5, 0] == 1 and out.metadata["datasets"] == ["co3d"]


def test_re10k_parser_writes_display_frames(tmp_path):
    fx.write_re10k_chunks(tmp_path / "R", [{"a" * 16: 16, "b" * 16: 17}])
    out = (
        specs.Re10kDataParserConfig(data=tmp_path / "R", cache_dir=tmp_path / "cache")
        .setup()
        .get_dataparser_outputs("train")
    )
    _check(out, 16)
    assert str(out.image_filenames[0]).startswith(str(tmp_path / "cache"))


def test_video_parser(tmp_path):
    path = fx.write_video(tmp_path / "v.mp4", n=10)
    out = (
        specs.VideoDataParserConfig(data=path, depth_mode="zeros", cache_dir=tmp_path / "cache")
        .setup()
        .get_dataparser_outputs("train")
    )
    _check(out, 10)
    with pytest.raises(FileNotFoundError, match="streamsplat-depth"):
        specs.VideoDataParserConfig(data=path, cache_dir=tmp_path / "cache").setup().get_dataparser_outputs("train")


def test_defaults_use_the_embedded_sample(tmp_path):
    out = specs.DavisDataParserConfig(cache_dir=tmp_path).setup().get_dataparser_outputs("train")
    assert (tmp_path / "sample" / "JPEGImages").is_dir() and len(out.metadata["sequences"]) == 3
    v = specs.VideoDataParserConfig(cache_dir=tmp_path).setup().get_dataparser_outputs("train")
    assert v.metadata["sequences"][0].dataset == "video"


def test_combined_parser_weights(tmp_path):
    fx.write_davis(tmp_path / "D", {"a": 6, "b": 6})
    fx.write_re10k_chunks(tmp_path / "R", [{"a" * 16: 16}])
    cfg = specs.CombinedDataParserConfig(
        davis=tmp_path / "D", re10k=tmp_path / "R", re10k_weight=2.0, cache_dir=tmp_path / "cache"
    )
    out = cfg.setup().get_dataparser_outputs("train")
    assert out.metadata["weights"] == {"davis": 1.0, "re10k": 2.0}
    assert {s.dataset for s in out.metadata["sequences"]} == {"davis", "re10k"}
