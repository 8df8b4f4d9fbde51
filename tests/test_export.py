"""3DGS .ply export: format, logit/log encodings, time evaluation, canonical -> world mapping."""

import numpy as np
import pytest
import torch

from streamsplat_ns.export import SH_C0, export_ply, read_ply, write_ply
from streamsplat_ns.gaussians import DynamicGaussians, Gaussians


def dyn(n=6):
    g = torch.Generator().manual_seed(0)
    means = torch.stack(
        [
            torch.rand(1, n, generator=g) * 2 - 1,
            torch.rand(1, n, generator=g) * 0.8 + 0.1,
            torch.rand(1, n, generator=g) * 2 - 1,
        ],
        -1,
    )
    quats = torch.zeros(1, n, 4)
    quats[..., 0] = 1
    motion = torch.zeros(1, n, 1, 3)
    motion[0, 0, 0, 1] = 0.1  # Gaussian 0 moves towards the camera in inverse depth
    motion[0, 1, 0, 1] = 5.0  # Gaussian 1 leaves [0, 1] by t = 1: culled
    return DynamicGaussians(
        means=means,
        quats=quats,
        scales=torch.full((1, n, 3), 0.01),
        opacities=torch.full((1, n), 0.8),
        colours=torch.rand(1, n, 3, generator=g),
        motion=motion,
        t0=torch.zeros(1, n),
        gamma0=torch.full((1, n), 4.0),
        gamma1=torch.full((1, n), 0.25),
    )


def test_header_and_values(tmp_path):
    p = tmp_path / "a.ply"
    n = 4
    means = np.random.rand(n, 3)
    rgb = np.random.rand(n, 3)
    write_ply(p, means, np.tile([1.0, 0, 0, 0], (n, 1)), np.full((n, 3), 0.02), np.full(n, 0.25), rgb)
    head = p.read_bytes().split(b"end_header")[0].decode()
    assert "format binary_little_endian 1.0" in head and "element vertex 4" in head
    assert "property float f_rest_44" in head and "property float rot_3" in head
    d = read_ply(p)
    assert np.allclose(d["x"], means[:, 0], atol=1e-6)
    assert np.allclose(d["opacity"], np.log(0.25 / 0.75), atol=1e-6)
    assert np.allclose(d["scale_1"], np.log(0.02), atol=1e-6)
    assert np.allclose(d["f_dc_2"] * SH_C0 + 0.5, rgb[:, 2], atol=1e-6)
    assert np.all(d["f_rest_10"] == 0) and np.all(d["rot_0"] == 1)


def test_dynamic_export_at_time(tmp_path):
    g = dyn()
    p = tmp_path / "t.ply"
    n = export_ply(p, g, time=1.0, frame="world")
    assert n == 5  # Gaussian 1 was culled
    d = read_ply(p)
    y_hat = float(g.means[0, 0, 1] + 0.1)
    assert d["y"][0] == pytest.approx(1 / (0.2 + 9.8 * y_hat + 1e-6), rel=1e-5)  # depth of the moved Gaussian
    life = 1 / (1 + np.exp(4.0 * (1.0 - 0.25))) / (1 / (1 + np.exp(-4.0 * 0.25)))
    a = 0.8 * life
    assert d["opacity"][1] == pytest.approx(np.log(a / (1 - a)), abs=1e-4)
    assert export_ply(tmp_path / "t0.ply", g, time=0.0) == 6
    with pytest.raises(ValueError, match="time"):
        export_ply(p, g)


def test_opencv_frame(tmp_path):
    g = dyn()
    export_ply(tmp_path / "w.ply", g, time=0.0, frame="world")
    export_ply(tmp_path / "c.ply", g, time=0.0)  # the default: the canonical camera's OpenCV frame
    w, c = read_ply(tmp_path / "w.ply"), read_ply(tmp_path / "c.ply")
    assert np.allclose(c["x"], w["x"]) and np.allclose(c["y"], -w["z"]) and np.allclose(c["z"], w["y"])
    s = Gaussians(g.means, g.quats, g.scales, g.opacities, g.colours)
    assert export_ply(tmp_path / "s.ply", s, min_opacity=0.9) == 0
