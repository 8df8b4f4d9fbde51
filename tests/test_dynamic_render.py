"""Batched dynamic rendering: motion, opacity life-cycle, inverse depth and gradients."""

import torch

from streamsplat_ns.gaussians import DynamicGaussians, Gaussians
from streamsplat_ns.rendering import canonical_camera, rasterize, render_dynamic, render_static
from streamsplat_ns.rendering.dynamic import canonical_to_world, lifecycle, opacities_at, positions_at


def random_dynamic(B=2, N=40, K=2, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(*s, generator=g, dtype=dtype)  # noqa: E731
    means = torch.stack([r(B, N) * 1.6 - 0.8, r(B, N) * 0.6 + 0.2, r(B, N) * 1.6 - 0.8], -1)
    quats = torch.zeros(B, N, 4, dtype=dtype)
    quats[..., 0] = 1
    return DynamicGaussians(
        means=means,
        quats=quats,
        scales=r(B, N, 3) * 0.05 + 0.02,
        opacities=r(B, N) * 0.9 + 0.05,
        colours=r(B, N, 3),
        motion=(r(B, N, K, 3) - 0.5) * 0.4,
        t0=torch.cat([torch.zeros(B, N // 2, dtype=dtype), torch.ones(B, N - N // 2, dtype=dtype)], 1),
        gamma0=r(B, N) * 4,
        gamma1=r(B, N),
    )


def test_lifecycle_properties():
    g0, g1 = torch.rand(100) * 5, torch.rand(100)
    assert torch.allclose(lifecycle(g0, g1, torch.zeros(100)), torch.ones(100))  # exactly 1 at the anchor
    assert torch.allclose(lifecycle(torch.zeros(100), g1, torch.rand(100)), torch.ones(100))  # gamma0=0: constant
    far, near = lifecycle(g0, g1, torch.ones(100)), lifecycle(g0, g1, torch.full((100,), 0.5))
    assert (far <= near + 1e-7).all()  # fades monotonically away from t0


def test_positions_polynomial_and_bidirectional():
    g = random_dynamic(B=1, N=4, K=2)
    t = torch.tensor([[0.0, 0.3, 1.0]], dtype=torch.float64)
    pos = positions_at(g, t)
    for n in range(4):
        for j, tj in enumerate(t[0]):
            dt = tj - g.t0[0, n]
            want = g.means[0, n] + g.motion[0, n, 0] * dt + g.motion[0, n, 1] * dt**2
            torch.testing.assert_close(pos[0, j, n], want)
    # frame-0 Gaussians sit still at t=0, frame-1 Gaussians at t=1
    torch.testing.assert_close(pos[0, 0, :2], g.means[0, :2])
    torch.testing.assert_close(pos[0, 2, 2:], g.means[0, 2:])


def test_render_dynamic_equals_per_time_static_renders():
    H, W = 18, 30
    g = random_dynamic()
    times = torch.tensor([[0.0, 0.4, 1.0], [0.1, 0.5, 0.9]], dtype=torch.float64)
    bg = torch.tensor([[0.5, 0.5, 0.5], [0.0, 0.2, 1.0]], dtype=torch.float64)
    out = render_dynamic(g, times, H, W, backgrounds=bg)
    assert out.rgb.shape == (2, 3, H, W, 3) and out.depth.shape == (2, 3, H, W, 1)
    vm, K = canonical_camera(H, W, dtype=torch.float64)
    pos, opac = positions_at(g, times), opacities_at(g, times)
    for b in range(2):
        for j in range(3):
            world, valid = canonical_to_world(pos[b, j])
            ref = rasterize(world, g.quats[b], g.scales[b], opac[b, j] * valid, g.colours[b], vm, K, W, H, bg[b])
            torch.testing.assert_close(out.rgb[b, j], ref.rgb[0])
            torch.testing.assert_close(out.depth[b, j], ref.depth[0])
    # depth is metric: 1/(0.2 + 9.8 y_hat) lies in [0.1, 5]
    ed = out.expected_depth()[out.alpha > 0.5]
    assert ed.min() >= 0.1 - 1e-6 and ed.max() <= 5.0 + 1e-6


def test_static_render_matches_dynamic_at_anchor_without_motion():
    H, W = 16, 16
    g = random_dynamic(B=1, N=20, K=1)
    g.motion.zero_()
    g.t0.zero_()
    s = render_static(Gaussians(g.means, g.quats, g.scales, g.opacities, g.colours), H, W)
    d = render_dynamic(g, torch.zeros(1, 1, dtype=torch.float64), H, W)
    torch.testing.assert_close(s.rgb[0], d.rgb[0, 0])


def test_out_of_range_inverse_depth_is_culled():
    H, W = 8, 8
    g = random_dynamic(B=1, N=2, K=1)
    g.means[0, :, 0] = 0.0
    g.means[0, :, 2] = 0.0
    g.scales.fill_(0.5)
    g.motion.zero_()
    g.t0.zero_()
    g.gamma0.zero_()  # constant opacity: only the culling can make them vanish
    g.motion[0, :, 0, 1] = 2.0  # y_hat grows by 2 per unit time: leaves [0, 1] before t = 1
    out = render_dynamic(g, torch.tensor([[0.0, 1.0]], dtype=torch.float64), H, W)
    assert out.alpha[0, 0].max() > 0.1
    assert out.alpha[0, 1].max() == 0.0


def test_gradients_flow_to_every_dynamic_input():
    H, W = 16, 20
    g = random_dynamic(N=30, dtype=torch.float32)
    names = ("means", "motion", "gamma0", "gamma1", "opacities", "colours", "scales", "quats")
    for n in names:
        getattr(g, n).requires_grad_(True)
    times = torch.tensor([[0.0, 0.3, 0.7, 1.0]] * 2)
    out = render_dynamic(g, times, H, W, backgrounds=torch.rand(2, 4, 3))
    (out.rgb.square().sum() + out.depth.sum()).backward()
    for n in names:
        grad = getattr(g, n).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, n


def test_sh_colours_in_dynamic_render():
    """Degree-0 SH reproduce plain colours; higher degrees follow each camera's view direction."""
    from streamsplat_ns.rendering import orbit_viewmat

    H, W = 12, 16
    g = random_dynamic(B=1, N=20, K=1, dtype=torch.float32)
    sh = torch.zeros(1, 20, 4, 3)
    sh[:, :, 0] = (g.colours - 0.5) / 0.28209479177387814
    gs = DynamicGaussians(**{**g.__dict__, "sh": sh})
    times = torch.tensor([[0.0, 0.5]])
    torch.testing.assert_close(
        render_dynamic(gs, times, H, W).rgb, render_dynamic(g, times, H, W).rgb, atol=1e-5, rtol=1e-5
    )
    vm0, K = canonical_camera(H, W)
    vms = torch.stack([vm0, orbit_viewmat(0.0, 0.6, target_depth=1.0)])[None]  # second time: tilted camera
    plain = render_dynamic(gs, times, H, W, viewmats=vms, Ks=K)
    sh[:, :, 2] = 0.8  # degree-1 term along world z: invisible along the canonical +y view, seen when tilted
    tinted = render_dynamic(gs, times, H, W, viewmats=vms, Ks=K)
    torch.testing.assert_close(tinted.rgb[0, 0], plain.rgb[0, 0])
    assert (tinted.rgb[0, 1] - plain.rgb[0, 1]).abs().max() > 1e-2


def test_canonical_camera_is_built_once_per_size(monkeypatch):
    """Default cameras come from a cache (per device, dtype and size): building them from Python numbers is
    a blocking host-to-device copy, i.e. a host synchronisation per render on CUDA."""
    from streamsplat_ns.rendering import dynamic
    from streamsplat_ns.rendering.camera import canonical_camera

    made = []
    monkeypatch.setattr(dynamic, "canonical_camera", lambda *a, **k: made.append(a) or canonical_camera(*a, **k))
    monkeypatch.setattr(dynamic, "_CANONICAL", dynamic.collections.OrderedDict())
    ref = torch.zeros(1)
    v1, k1 = dynamic._cameras(4, 30, 40, None, None, ref)
    v2, k2 = dynamic._cameras(6, 30, 40, None, None, ref)
    assert len(made) == 1 and v1.shape == (4, 4, 4) and v2.shape == (6, 4, 4)
    assert dynamic._CANONICAL[(ref.device, ref.dtype, 30, 40)][0].data_ptr() not in (v1.data_ptr(), v2.data_ptr())
    vm, K = canonical_camera(30, 40)
    assert torch.equal(v2[0], vm) and torch.equal(k2[0], K)
    dynamic._cameras(1, 31, 40, None, None, ref)
    assert len(made) == 2  # another size, another camera
