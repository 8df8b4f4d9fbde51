"""One pairing rule, one reconstruction: the viewer / ns-render path (``clip_gaussians``), ``streamsplat-export``
and the streaming engine (``streamsplat-reconstruct``) give the same Gaussians for the same frames."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_engine import micro_model, write_clip  # noqa: E402

from streamsplat_ns.engine import DisparitySource, Frame, ReconstructionEngine  # noqa: E402
from streamsplat_ns.export import export_ply, ply_name, read_ply  # noqa: E402
from streamsplat_ns.inference import InferenceOptions  # noqa: E402

FIELDS = ("means", "scales", "opacities", "colours", "motion", "t0", "gamma0", "gamma1")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from nerfstudio.data.scene_box import SceneBox

    from streamsplat_ns.nerfstudio.model import StreamSplatModelConfig

    tmp = tmp_path_factory.mktemp("viewer")
    net = micro_model()
    H, W = net.height, net.width
    write_clip(tmp / "clip", n=8, size=(H, W))  # at the model size: no resize anywhere, exact comparison
    disp_src = DisparitySource.files(tmp / "clip_depth")
    from PIL import Image

    u8 = [np.array(Image.open(tmp / "clip" / f"{i:05d}.png")) for i in range(8)]
    rgb = torch.stack([torch.from_numpy(a).permute(2, 0, 1).float() / 255.0 for a in u8])
    disp = torch.stack([torch.from_numpy(disp_src.load(f"{i:05d}", (H, W)))[None] for i in range(8)])
    cfg = StreamSplatModelConfig(
        stage="decoder",
        encoder=net.config.encoder,
        decoder=net.config.decoder,
        allow_random_dino=True,
        lambda_lpips=0.0,
        viewer_key_gap=3,
    )
    model = cfg.setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.0, -1, -1], [1, 1, 1]])), num_train_data=1, metadata={}, device="cpu"
    ).eval()
    model.net.load_state_dict(net.state_dict())
    model.clip_provider = lambda clip, idx: (None if idx is None else rgb[idx], None if idx is None else disp[idx], 8)
    model.clip_names = ["clip"]
    return tmp, net, model, u8, disp_src


def test_viewer_export_and_engine_agree(setup, tmp_path, monkeypatch):
    tmp, net, model, u8, disp_src = setup
    engine = ReconstructionEngine(net, options=InferenceOptions.eager(), disparity=disp_src)
    # what streamsplat-reconstruct --frame-step 3 streams: key frames 0, 3, 6, 7 (the last closes the clip)
    ivs = list(engine.stream(Frame(i, f"{i:05d}", u8[i], 0.0) for i in (0, 3, 6, 7)))
    assert [iv.frames for iv in ivs] == [(0, 3), (3, 6), (6, 7)]
    for f, (j, local) in ((4.0, (1, 1 / 3)), (6.5, (2, 0.5)), (1.5, (0, 0.5))):
        g, t = model.clip_gaussians(0, f / 7)
        assert t == pytest.approx(local)
        for name in FIELDS:
            assert torch.allclose(getattr(g, name), getattr(ivs[j].gaussians, name), atol=1e-5), (f, name)
    assert {k[2:4] for k in model._cache if k[0] == "pair"} == {(3, 6), (6, 7), (0, 3)}

    from streamsplat_ns.cli import export as ex

    class Pipe:
        pass

    pipe = Pipe()
    pipe.model = model
    # a stand-in eval_utils module: the real one imports every nerfstudio method config (minutes on 2 cores)
    import types

    fake = types.ModuleType("nerfstudio.utils.eval_utils")
    fake.eval_setup = lambda *a, **k: (None, pipe, None, 0)
    monkeypatch.setitem(sys.modules, "nerfstudio.utils.eval_utils", fake)
    cfg_file = tmp_path / "config.yml"
    cfg_file.write_text("unused: the pipeline is patched in\n")
    paths = ex.main(ex.Export(load_config=cfg_file, frames=[4.0, 6.5], output_dir=tmp_path / "ply"))
    assert (
        [p.name for p in paths]
        == [ply_name("clip", 4.0), ply_name("clip", 6.5)]
        == ["clip_frame00004.000.ply", "clip_frame00006.500.ply"]
    )
    for p, f, j in zip(paths, (4.0, 6.5), (1, 2)):
        export_ply(tmp_path / "ref.ply", ivs[j].gaussians, time=ivs[j].local_time(f))  # the CLI's --ply-frames call
        a, b = read_ply(p), read_ply(tmp_path / "ref.ply")
        assert len(a["x"]) == len(b["x"]) > 100
        for k in ("x", "y", "z", "opacity", "scale_2", "f_dc_1", "rot_0"):
            np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"outside \[0, 7\]"):
        ex.main(ex.Export(load_config=cfg_file, frames=[7.5], output_dir=tmp_path / "ply"))
