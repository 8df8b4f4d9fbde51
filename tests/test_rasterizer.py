"""The PyTorch reference rasterizer against an independent per-pixel loop, gsplat's projection and gradcheck."""

import numpy as np
import pytest
import torch

from streamsplat_ns.rendering import canonical_camera, orbit_viewmat, rasterize
from streamsplat_ns.rendering._torch_impl import project, rasterize_bruteforce


def random_scene(n, seed=0, dtype=torch.float64, spread=1.2, depth=(0.5, 3.0)):
    g = torch.Generator().manual_seed(seed)
    means = torch.stack(
        [
            (torch.rand(n, generator=g) * 2 - 1) * spread,
            torch.rand(n, generator=g) * (depth[1] - depth[0]) + depth[0],
            (torch.rand(n, generator=g) * 2 - 1) * spread,
        ],
        -1,
    )
    quats = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * 0.12 + 0.01
    opac = torch.rand(n, generator=g) * 0.9 + 0.05
    cols = torch.rand(n, 3, generator=g)
    return [t.to(dtype) for t in (means, quats, scales, opac, cols)]


def two_cameras(h, w, dtype=torch.float64):
    vm0, K = canonical_camera(h, w, dtype=dtype)
    vm1 = orbit_viewmat(0.3, -0.2, target_depth=1.5, dtype=dtype)
    return torch.stack([vm0, vm1]), torch.stack([K, K * torch.tensor([[1.3], [1.3], [1.0]], dtype=dtype)])


@pytest.mark.parametrize("alpha_clamp", [0.99, 0.999])
def test_matches_bruteforce_loop(alpha_clamp):
    H, W = 21, 37  # not multiples of the tile size
    means, quats, scales, opac, cols = random_scene(60, seed=1)
    means[:3, 1] = -1.0  # behind the camera
    means[3:6, 0] = 5.0  # off-screen
    opac[6] = 0.0  # invisible
    scales[7] = 0.0  # degenerate: only the 0.3 px^2 low-pass is left
    scales[8] = 3.0  # huge: covers the whole image
    vms, Ks = two_cameras(H, W)
    bg = torch.tensor([[0.1, 0.5, 0.9], [1.0, 0.0, 0.3]], dtype=torch.float64)
    out = rasterize(means, quats, scales, opac, cols, vms, Ks, W, H, bg, alpha_clamp=alpha_clamp)
    assert out.rgb.shape == (2, H, W, 3) and out.depth.shape == (2, H, W, 1) and out.alpha.shape == (2, H, W, 1)
    for c in range(2):
        rgb, depth, alpha = rasterize_bruteforce(
            means, quats, scales, opac, cols, vms[c], Ks[c], W, H, bg[c], alpha_clamp=alpha_clamp
        )
        np.testing.assert_allclose(out.rgb[c].numpy(), rgb, atol=1e-10)
        np.testing.assert_allclose(out.depth[c].numpy(), depth, atol=1e-10)
        np.testing.assert_allclose(out.alpha[c].numpy(), alpha, atol=1e-10)
    assert 0.2 < float(out.alpha.mean()) < 1.0  # the scene actually covers pixels


def test_per_camera_gaussians_equal_separate_calls():
    H, W = 16, 24
    vms, Ks = two_cameras(H, W)
    a = random_scene(30, seed=2)
    b = random_scene(30, seed=3)
    stacked = [torch.stack([x, y]) for x, y in zip(a, b)]
    out = rasterize(*stacked, vms, Ks, W, H)
    out_a = rasterize(*a, vms[:1], Ks[:1], W, H)
    out_b = rasterize(*b, vms[1:], Ks[1:], W, H)
    torch.testing.assert_close(out.rgb[0], out_a.rgb[0])
    torch.testing.assert_close(out.rgb[1], out_b.rgb[0])
    torch.testing.assert_close(out.depth[1], out_b.depth[0])


def test_early_stop_and_alpha_clamp():
    """Opaque stacks: the clamp bounds alpha and the 1e-4 transmittance stop drops later Gaussians."""
    H, W = 8, 8
    n = 6
    means = torch.tensor([[0.0, 1.0 + i, 0.0] for i in range(n)], dtype=torch.float64)
    quats = torch.tensor([[1.0, 0, 0, 0]] * n, dtype=torch.float64)
    scales = torch.full((n, 3), 5.0, dtype=torch.float64)
    opac = torch.ones(n, dtype=torch.float64)
    cols = torch.eye(3, dtype=torch.float64).repeat(2, 1)
    vm, K = canonical_camera(H, W, dtype=torch.float64)
    out = rasterize(means, quats, scales, opac, cols, vm, K, W, H, alpha_clamp=0.99)
    # at 0.99 two Gaussians leave T = (1 - 0.99)^2, a hair above 1e-4 in float; the third would drop
    # T to 1e-6 and stops the pixel, so blue never shows
    assert torch.allclose(out.rgb[0, 4, 4], torch.tensor([0.99, 0.0099, 0.0], dtype=torch.float64))
    assert torch.allclose(out.alpha[0, 4, 4], torch.tensor([0.9999], dtype=torch.float64))
    out = rasterize(means, quats, scales, opac, cols, vm, K, W, H, alpha_clamp=0.999)
    # at 0.999 the second Gaussian would leave T = 1e-6: only the first is composited
    assert torch.allclose(out.rgb[0, 4, 4], torch.tensor([0.999, 0.0, 0.0], dtype=torch.float64))
    assert torch.allclose(out.alpha[0, 4, 4], torch.tensor([0.999], dtype=torch.float64))
    assert torch.allclose(out.depth[0, 4, 4], torch.tensor([0.999 * 1.0], dtype=torch.float64))


def test_empty_and_single():
    H, W = 8, 12
    vm, K = canonical_camera(H, W)
    bg = torch.tensor([0.25, 0.5, 0.75])
    e = torch.zeros(0, 3)
    out = rasterize(e, torch.zeros(0, 4), e, torch.zeros(0), e, vm, K, W, H, bg)
    assert torch.allclose(out.rgb, bg.expand(1, H, W, 3)) and out.alpha.abs().max() == 0
    one = [t.float() for t in random_scene(1, seed=4, spread=0.0, depth=(1.0, 1.0))]
    out = rasterize(*one, vm, K, W, H, bg)
    assert out.alpha.max() > 0.04
    assert out.alpha[0, 0, 0, 0] < out.alpha[0, H // 2, W // 2, 0]


def test_nan_input_is_a_clear_error():
    H, W = 8, 8
    vm, K = canonical_camera(H, W)
    means, quats, scales, opac, cols = [t.float() for t in random_scene(4)]
    means[1, 0] = float("nan")
    with pytest.raises(ValueError, match="means"):
        rasterize(means, quats, scales, opac, cols, vm, K, W, H)
    with pytest.raises(ValueError, match="scales"):
        rasterize(means.nan_to_num(), quats, scales[:, :2], opac, cols, vm, K, W, H)


def test_projection_matches_gsplat_torch_reference():
    """gsplat's own (pure-torch, CPU) ortho projection: means2d, conics, depths and radii agree."""
    gs = pytest.importorskip("gsplat.cuda._torch_impl")  # importing the torch reference never builds CUDA
    H, W = 40, 64
    means, quats, scales, opac, cols = random_scene(200, seed=5)
    vms, Ks = two_cameras(H, W)
    from streamsplat_ns.rendering._torch_impl import quat_to_rotmat

    M = quat_to_rotmat(quats) * scales[:, None, :]
    covars = M @ M.transpose(-1, -2)
    radii, means2d, depths, conics, _ = gs._fully_fused_projection(
        means, covars, vms, Ks, W, H, eps2d=0.3, near_plane=1e-4, far_plane=1e4, camera_model="ortho"
    )
    ours = project(means[None], quats[None], scales[None], vms, Ks, W, H, 1e-4, 1e4)
    live = radii > 0
    assert live.sum() > 100
    assert torch.equal(ours.radii, radii)
    torch.testing.assert_close(ours.means2d[live], means2d[live])
    torch.testing.assert_close(ours.depths, depths)
    torch.testing.assert_close(ours.conics[live], conics[live])


def test_gradcheck_float64():
    H, W = 6, 7
    means, quats, scales, opac, cols = random_scene(5, seed=6, spread=0.8, depth=(1.0, 2.0))
    scales = scales + 0.15
    vm, K = canonical_camera(H, W, dtype=torch.float64)
    vm = orbit_viewmat(0.2, 0.1, target_depth=1.5, dtype=torch.float64)  # a rotated view mixes all axes
    bg = torch.tensor([0.3, 0.6, 0.2], dtype=torch.float64)

    def f(m, q, s, o, c):
        out = rasterize(m, q, s, o, c, vm, K, W, H, bg)
        return out.rgb, out.depth, out.alpha

    inputs = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, cols)]
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradients_reach_every_input():
    H, W = 16, 16
    vm, K = canonical_camera(H, W)
    inputs = [t.float().requires_grad_(True) for t in random_scene(20, seed=7, spread=0.8)]
    out = rasterize(*inputs, vm, K, W, H)
    (out.rgb.square().sum() + out.depth.sum() + out.alpha.sum()).backward()
    for name, t in zip(("means", "quats", "scales", "opacities", "colours"), inputs):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0, name


def test_sh_degree0_equals_colours_and_view_dependence():
    H, W = 12, 12
    vms, Ks = two_cameras(H, W, dtype=torch.float32)
    means, quats, scales, opac, cols = [t.float() for t in random_scene(15, seed=8)]
    c0 = 0.28209479177387814
    sh = torch.zeros(15, 16, 3)
    sh[:, 0] = (cols - 0.5) / c0
    a = rasterize(means, quats, scales, opac, cols, vms, Ks, W, H)
    b = rasterize(means, quats, scales, opac, None, vms, Ks, W, H, sh=sh)
    torch.testing.assert_close(a.rgb, b.rgb, atol=1e-5, rtol=1e-5)
    sh[:, 2] = 0.5  # a degree-1 term along z: changes with the view direction
    c = rasterize(means, quats, scales, opac, None, vms, Ks, W, H, sh=sh)
    assert (c.rgb[1] - b.rgb[1]).abs().max() > 1e-3
