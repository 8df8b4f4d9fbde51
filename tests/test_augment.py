"""Augmentation: one parameter draw per clip, same geometry for frames, depth and masks."""

import numpy as np
import torch

from streamsplat_ns.data.augment import AugmentConfig, apply_params, augment_clip, sample_params


def _clip(v=4, h=20, w=32):
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(1, 3, h, w, generator=g).expand(v, 3, h, w).clone()
    ids = torch.zeros(1, 1, h, w)
    ids[..., 5:12, 6:20] = 1
    ids[..., 14:, 24:] = 2
    return rgb, torch.rand(1, 1, h, w, generator=g).expand(v, 1, h, w).clone(), ids.expand(v, 1, h, w).clone()


def test_same_parameters_across_the_clip():
    rgb, disp, mask = _clip()
    for seed in range(20):
        r, d, m, p = augment_clip(rgb, disp, mask, np.random.default_rng(seed), AugmentConfig(p=1.0))
        assert p.has_geom or p.has_colour
        for t in range(1, 4):  # identical input frames -> identical outputs
            assert torch.equal(r[t], r[0]) and torch.equal(d[t], d[0]) and torch.equal(m[t], m[0])
        assert set(m.unique().tolist()) <= {0.0, 1.0, 2.0}  # nearest: no new ids
        assert 0 <= r.min() and r.max() <= 1


def test_geometry_shared_by_rgb_depth_mask_colour_only_rgb():
    rgb, disp, mask = _clip(v=2)
    rgb = mask.expand(-1, 3, -1, -1) / 2  # rgb encodes the mask
    cfg = AugmentConfig(p=1.0, brightness=0, contrast=0, hue=0, saturation=0)
    r, d, m, p = augment_clip(rgb, mask.clone(), mask, np.random.default_rng(5), cfg)
    assert p.has_geom and not p.has_colour
    agree = ((r[:, :1] * 2).round() == m).float().mean()
    assert agree > 0.97  # same warp (bilinear vs nearest differ only at edges)
    cfg_c = AugmentConfig(p=1.0, xflip=0, yflip=0, scale=0, rotate=0, aniso=0, xfrac=0)
    r2, d2, m2, p2 = augment_clip(*_clip(v=2), np.random.default_rng(1), cfg_c)
    rgb0, disp0, mask0 = _clip(v=2)
    assert p2.has_colour and not p2.has_geom
    assert torch.equal(d2, disp0) and torch.equal(m2, mask0) and not torch.equal(r2, rgb0)


def test_xflip_is_exact_and_p0_is_identity():
    rgb, disp, mask = _clip(v=1)
    p = sample_params(np.random.default_rng(0), 20, 32, AugmentConfig(p=0.0))
    assert not p.has_geom and not p.has_colour
    p.geom, p.has_geom = np.diag([-1.0, 1.0, 1.0]), True
    r, d, m = apply_params(rgb, disp, mask, p)
    assert torch.allclose(r, rgb.flip(-1), atol=1e-5) and torch.equal(m, mask.flip(-1))


def test_default_probability_is_low():
    rgb, disp, mask = _clip(v=1, h=8, w=8)
    hits = sum(sample_params(np.random.default_rng(s), 8, 8, AugmentConfig()).has_geom for s in range(400))
    assert 40 < hits < 220  # p = 0.12 per op, several geometric ops
