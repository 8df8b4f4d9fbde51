"""Losses and metrics: SSI depth, robust weighting, mask loss, SSIM (vs scikit-image), local-only LPIPS."""

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from streamsplat_ns.losses import masked_mse, psnr, ssi_depth_loss, ssim
from streamsplat_ns.lpips import LPIPSVGG, load_lpips, lpips_256


def test_ssi_depth_loss_is_scale_shift_invariant():
    g = torch.Generator().manual_seed(0)
    disp = torch.rand(2, 500, generator=g) + 0.1
    depth_same = 1.0 / (3.0 * disp + 0.5)  # disparity 3*d + 0.5: same up to scale and shift
    assert ssi_depth_loss(depth_same, disp) < 1e-4
    depth_other = 1.0 / (torch.rand(2, 500, generator=g) + 0.1)
    assert ssi_depth_loss(depth_other, disp) > 0.3


def test_robust_weighting_downweights_outliers():
    g = torch.Generator().manual_seed(1)
    disp = torch.rand(1, 1000, generator=g) + 0.1
    pred = disp.clone()
    pred[0, :20] += 50.0  # a few wild pixels
    plain = ssi_depth_loss(1.0 / pred, disp)
    robust = ssi_depth_loss(1.0 / pred, disp, robust_threshold=0.3)
    assert robust < plain
    pred.requires_grad_(True)
    ssi_depth_loss(1.0 / pred, disp, robust_threshold=0.3).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_masked_mse_only_counts_foreground():
    pred, target = torch.zeros(1, 2, 4, 4, 3), torch.ones(1, 2, 4, 4, 3)
    mask = torch.zeros(1, 2, 4, 4, 1)
    assert masked_mse(pred, target, mask) == 0  # no foreground: no loss
    mask[0, 0, :2] = 2.0  # object id 2
    fg = masked_mse(pred, target, mask)
    assert fg > 0
    target2 = target.clone()
    target2[0, 1] = 0.0  # changes only in the background: same loss
    assert torch.isclose(masked_mse(pred, target2, mask), fg)


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    g = np.random.default_rng(0)
    a = g.random((40, 48, 3)).astype(np.float32)
    b = np.clip(a + 0.1 * g.standard_normal(a.shape).astype(np.float32), 0, 1)
    ref = metrics.structural_similarity(a, b, win_size=11, gaussian_weights=True, channel_axis=2, data_range=1.0)
    ours = float(ssim(torch.from_numpy(b)[None], torch.from_numpy(a)[None]))
    assert abs(ours - ref) < 1e-4
    assert float(psnr(torch.from_numpy(a), torch.from_numpy(a))) > 90


def _write_lpips_files(tmp_path):
    m = LPIPSVGG()
    torch.manual_seed(0)
    feats = {f"features.{k}": torch.randn_like(v) * 0.05 for k, v in m.features.state_dict().items()}
    torch.save(feats, tmp_path / "vgg16.pth")
    torch.save(
        {f"lin{i}.model.1.weight": torch.rand_like(l.weight) for i, l in enumerate(m.lins)}, tmp_path / "vgg_lin.pth"
    )
    return tmp_path / "vgg16.pth", tmp_path / "vgg_lin.pth"


def test_lpips_from_local_files(tmp_path):
    vgg, lin = _write_lpips_files(tmp_path)
    net = load_lpips(vgg, lin)
    x = torch.rand(2, 32, 32, 3)
    y = torch.rand(2, 32, 32, 3)
    assert float(lpips_256(net, x, x)) < 1e-6
    assert float(lpips_256(net, x, y)) > 0
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, tmp_path / "bad.pth")
    with pytest.raises(KeyError, match="lin1"):
        LPIPSVGG.from_files(vgg, tmp_path / "bad.pth")


def test_lpips_absent_is_one_clear_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert load_lpips(tmp_path / "missing.pth", None, "the LPIPS loss") is None
    assert "skipped" in caplog.text and "nothing is downloaded" in caplog.text


def _bump_row(centre: torch.Tensor, width: int = 64, height: int = 16) -> torch.Tensor:
    """[1, H, W, 3] image of a vertical bright line (Gaussian profile, sigma 1 px) at column ``centre``."""
    x = torch.arange(width, dtype=torch.float32)
    row = torch.exp(-0.5 * (x - centre) ** 2)
    return row.view(1, 1, width, 1).expand(1, height, width, 3)


def test_coarse_mse_level_one_is_mse_and_rejects_bad_factors():
    from streamsplat_ns.losses import coarse_mse

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 20, 24, 3, generator=g), torch.rand(2, 3, 20, 24, 3, generator=g)
    assert torch.allclose(coarse_mse(a, b, (1,)), F.mse_loss(a, b))
    assert float(coarse_mse(a, a, (4, 16))) == 0.0
    with pytest.raises(ValueError, match="powers of two"):
        coarse_mse(a, b, (3,))
    with pytest.raises(ValueError, match="empty"):
        coarse_mse(a, b, ())


def test_coarse_mse_has_a_gradient_where_full_resolution_mse_is_flat():
    """A line 8 px from its target: the full-resolution MSE gives almost no pull on its position, the
    pyramid levels pull it the right way (towards the target)."""
    from streamsplat_ns.losses import coarse_mse

    target = _bump_row(torch.tensor(30.0))
    grads = {}
    for name, loss in (("full", lambda p: F.mse_loss(p, target)), ("coarse", lambda p: coarse_mse(p, target))):
        c = torch.tensor(22.0, requires_grad=True)
        loss(_bump_row(c)).backward()
        grads[name] = float(c.grad)
    assert grads["coarse"] < 0  # descent moves the line from 22 towards 30
    assert abs(grads["full"]) < 0.01 * abs(grads["coarse"])
