"""CUDA rasterizer against the exact PyTorch reference (and gsplat's ortho mode); GPU only.

Every test is marked ``gpu``: conftest skips them on CPU-only machines, scripts/gpu_check.sh runs them
on the device. Tolerance is a norm-wise relative error of 1e-4 in float32 (docs/rasterizer.md).
"""

from __future__ import annotations

import pytest
import torch

from streamsplat_ns.rendering import _torch_impl, canonical_camera, orbit_viewmat
from streamsplat_ns.rendering.dynamic import canonical_to_world, opacities_at, positions_at

pytestmark = pytest.mark.gpu
TOL = 1e-4
DEV = "cuda"


def _ext():
    from streamsplat_ns.rendering import _cuda

    if not _cuda.is_available():
        pytest.fail(f"CUDA backend unavailable on a GPU machine: {_cuda.unavailable_reason()}")
    _cuda.load_extension()
    return _cuda


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    assert torch.isfinite(a).all(), "non-finite values in the CUDA result"
    den = b.norm().item()
    return (a - b).norm().item() / max(den, 1e-12)


def scene(n, seed, lead=(), spread=1.25, depth=(-0.3, 4.0), opac=(0.05, 1.0)):
    """Random Gaussians: some off-screen (|x|,|z| > 1) and some behind the camera (depth < near)."""
    g = torch.Generator().manual_seed(seed)
    shp = (*lead, n)
    means = torch.stack(
        [
            (torch.rand(shp, generator=g) * 2 - 1) * spread,
            torch.rand(shp, generator=g) * (depth[1] - depth[0]) + depth[0],
            (torch.rand(shp, generator=g) * 2 - 1) * spread,
        ],
        -1,
    )
    quats = torch.randn(*shp, 4, generator=g)
    scales = torch.exp(torch.rand(*shp, 3, generator=g) * 2.5 - 4.5)  # 0.011 .. 0.14 world units
    opacities = torch.rand(shp, generator=g) * (opac[1] - opac[0]) + opac[0]
    colours = torch.rand(*shp, 3, generator=g)
    return [t.to(DEV) for t in (means, quats, scales, opacities, colours)]


def cameras(n, h, w):
    vms, Ks = [], []
    for c in range(n):
        vm0, K = canonical_camera(h, w)
        vm = vm0 if c == 0 else orbit_viewmat(0.25 * c, -0.15 * c, target_depth=1.5)
        vms.append(vm)
        Ks.append(K * torch.tensor([[1.0 + 0.2 * c], [1.0 + 0.2 * c], [1.0]]))
    return torch.stack(vms).to(DEV), torch.stack(Ks).to(DEV)


def _render_and_grads(fn, inputs, upstream):
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    rgb, depth, alpha = fn(*leaves)
    loss = (rgb * upstream[0]).sum() + (depth * upstream[1]).sum() + (alpha * upstream[2]).sum()
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return (rgb.detach(), depth.detach(), alpha.detach()), grads


def _compare_static(inputs, vms, Ks, W, H, alpha_clamp, tile_size=16, near=0.1, far=100.0, min_cover=0.2):
    cu = _ext()
    I = vms.shape[0]
    gen = torch.Generator(device=DEV).manual_seed(7)
    up = (
        torch.randn(I, H, W, 3, device=DEV, generator=gen),
        torch.randn(I, H, W, 1, device=DEV, generator=gen),
        torch.randn(I, H, W, 1, device=DEV, generator=gen),
    )

    def run(impl):
        def f(m, q, s, o, c, bg):
            return impl.rasterize_images(m, q, s, o, c, vms, Ks, W, H, bg, alpha_clamp, near, far, tile_size)

        return f

    bg = torch.rand(I, 3, device=DEV, generator=gen)
    (o_cu, g_cu) = _render_and_grads(run(cu), [*inputs, bg], up)
    (o_th, g_th) = _render_and_grads(run(_torch_impl), [*inputs, bg], up)
    for name, a, b in zip(("rgb", "depth", "alpha"), o_cu, o_th):
        assert a.shape == b.shape, name
        e = rel_err(a, b)
        assert e < TOL, f"forward {name}: relative error {e:.3g}"
    assert float(o_th[2].mean()) > min_cover, "scene covers too little of the image to test anything"
    for name, a, b in zip(("means", "quats", "scales", "opacities", "colours", "backgrounds"), g_cu, g_th):
        if b is None:
            b = torch.zeros_like(a)
        e = rel_err(a, b)
        assert e < TOL, f"gradient {name}: relative error {e:.3g}"
        assert b.abs().sum() > 0, f"reference gradient of {name} is zero: the test would prove nothing"


@pytest.mark.parametrize("alpha_clamp", [0.99, 0.999])
@pytest.mark.parametrize("shared", [True, False])
def test_matches_torch_reference(alpha_clamp, shared):
    H, W = 45, 70  # not multiples of 16: partial tiles
    I = 3
    vms, Ks = cameras(I, H, W)
    inputs = scene(400, seed=1 if shared else 2, lead=() if shared else (I,))
    if shared:
        inputs = [t[None] for t in inputs]
    # a few explicit edge cases: behind the camera, far off-screen, nearly opaque (hits the clamp)
    inputs[0][..., :5, 1] = -1.0
    inputs[0][..., 5:10, 0] = 4.0
    inputs[3][..., 10:40] = 1.0
    _compare_static(inputs, vms, Ks, W, H, alpha_clamp)


def test_tile_size_8_and_depth_ties():
    """Equal depths must composite in ascending Gaussian index (stable sort), at another tile size."""
    H, W = 40, 24
    vms, Ks = cameras(2, H, W)
    inputs = [t[None] for t in scene(300, seed=3)]
    inputs[0][..., 1] = torch.round(inputs[0][..., 1].clamp(0.2, 3.0) * 2) / 2  # 6 depth levels -> many ties
    _compare_static(inputs, vms, Ks, W, H, 0.99, tile_size=8)


@pytest.mark.parametrize("n", [0, 1])
def test_zero_and_one_gaussian(n):
    cu = _ext()
    H, W = 20, 33
    vms, Ks = cameras(2, H, W)
    inputs = [t[None] for t in scene(n, seed=4, depth=(1.0, 2.0), spread=0.3)]
    if n == 1:
        # one big anisotropic Gaussian in the middle (isotropic would leave the quats gradient pure round-off)
        inputs[2].copy_(torch.tensor([[[0.5, 0.2, 0.35]]], device=DEV))
        inputs[3].fill_(0.8)
        _compare_static(inputs, vms, Ks, W, H, 0.99, min_cover=0.05)
    bg = torch.rand(2, 3, device=DEV)
    rgb, depth, alpha = cu.rasterize_images(*inputs, vms, Ks, W, H, bg, 0.99, 0.1, 100.0, 16)
    assert rgb.shape == (2, H, W, 3) and depth.shape == (2, H, W, 1) and alpha.shape == (2, H, W, 1)
    if n == 0:
        assert torch.equal(rgb, bg[:, None, None, :].expand(2, H, W, 3))
        assert torch.count_nonzero(alpha) == 0 and torch.count_nonzero(depth) == 0
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        out = cu.rasterize_images(*leaves, vms, Ks, W, H, bg, 0.99, 0.1, 100.0, 16)
        sum(o.sum() for o in out).backward()
        assert all(t.grad is not None and t.grad.shape == t.shape for t in leaves)


def dynamic_scene(B, N, K, seed):
    g = torch.Generator().manual_seed(seed)
    means = torch.stack(
        [
            (torch.rand(B, N, generator=g) * 2 - 1) * 1.1,
            torch.rand(B, N, generator=g) * 1.1 - 0.05,
            (torch.rand(B, N, generator=g) * 2 - 1) * 1.1,
        ],
        -1,
    )  # some y_hat outside [0, 1]
    motion = torch.randn(B, N, K, 3, generator=g) * 0.08
    t0 = (torch.arange(N) >= N // 2).float().expand(B, N).clone()
    gamma0 = torch.rand(B, N, generator=g) * 6.0
    gamma1 = torch.rand(B, N, generator=g) * 0.8 + 0.1
    quats = torch.randn(B, N, 4, generator=g)
    scales = torch.exp(torch.rand(B, N, 3, generator=g) * 2.0 - 4.5)
    opac = torch.rand(B, N, generator=g) * 0.95 + 0.05
    cols = torch.rand(B, N, 3, generator=g)
    return [t.to(DEV) for t in (means, motion, t0, gamma0, gamma1, quats, scales, opac, cols)]


def _torch_dynamic(means, motion, t0, gamma0, gamma1, quats, scales, opac, cols, times, vms, Ks, W, H, bg, clamp):
    """What the torch backend does: evaluate motion / life-cycle in PyTorch, then render B*T images."""
    from streamsplat_ns.gaussians import DynamicGaussians

    B, N = means.shape[:2]
    T = times.shape[1]
    gs = DynamicGaussians(
        means=means,
        quats=quats,
        scales=scales,
        opacities=opac,
        colours=cols,
        motion=motion,
        t0=t0,
        gamma0=gamma0,
        gamma1=gamma1,
    )
    world, valid = canonical_to_world(positions_at(gs, times))
    op = opacities_at(gs, times) * valid.to(world.dtype)

    def per_image(x):
        return x[:, None].expand(B, T, *x.shape[1:]).reshape(B * T, *x.shape[1:])

    return _torch_impl.rasterize_images(
        world.reshape(B * T, N, 3),
        per_image(quats),
        per_image(scales),
        op.reshape(B * T, N),
        per_image(cols),
        vms,
        Ks,
        W,
        H,
        bg,
        clamp,
        1e-4,
        1e4,
    )


@pytest.mark.parametrize("K", [1, 2])
def test_dynamic_fused_matches_torch_evaluated(K):
    cu = _ext()
    B, T, N, H, W = 2, 3, 800, 36, 52
    dyn = dynamic_scene(B, N, K, seed=10 + K)
    times = torch.tensor([[0.0, 0.4, 1.0], [0.25, 0.5, 0.9]], device=DEV)
    vm, Kc = canonical_camera(H, W, device=DEV)
    vms, Ks = vm.expand(B * T, 4, 4).contiguous(), Kc.expand(B * T, 3, 3).contiguous()
    gen = torch.Generator(device=DEV).manual_seed(3)
    bg = torch.rand(B * T, 3, device=DEV, generator=gen)
    up = (
        torch.randn(B * T, H, W, 3, device=DEV, generator=gen),
        torch.randn(B * T, H, W, 1, device=DEV, generator=gen),
        torch.randn(B * T, H, W, 1, device=DEV, generator=gen),
    )

    def fused(means, motion, g0, g1, quats, scales, opac, cols, bgs):
        return cu.rasterize_dynamic(
            means, motion, dyn[2], g0, g1, times, quats, scales, opac, cols, vms, Ks, W, H, bgs, 0.99, 1e-4, 1e4
        )

    def ref(means, motion, g0, g1, quats, scales, opac, cols, bgs):
        return _torch_dynamic(means, motion, dyn[2], g0, g1, quats, scales, opac, cols, times, vms, Ks, W, H, bgs, 0.99)

    leaves = [dyn[0], dyn[1], dyn[3], dyn[4], dyn[5], dyn[6], dyn[7], dyn[8], bg]
    o_cu, g_cu = _render_and_grads(fused, leaves, up)
    o_th, g_th = _render_and_grads(ref, leaves, up)
    for name, a, b in zip(("rgb", "depth", "alpha"), o_cu, o_th):
        e = rel_err(a, b)
        assert e < TOL, f"dynamic forward {name}: relative error {e:.3g}"
    assert float(o_th[2].mean()) > 0.2
    names = ("means", "motion", "gamma0", "gamma1", "quats", "scales", "opacities", "colours", "backgrounds")
    for name, a, b in zip(names, g_cu, g_th):
        e = rel_err(a, b)
        assert e < TOL, f"dynamic gradient {name}: relative error {e:.3g}"
        assert b.abs().sum() > 0, f"reference gradient of {name} is zero"


def test_public_render_dynamic_backends_agree():
    from streamsplat_ns.gaussians import DynamicGaussians
    from streamsplat_ns.rendering import render_dynamic

    _ext()
    B, N, H, W = 2, 300, 32, 48
    m, mo, t0, g0, g1, q, s, o, c = dynamic_scene(B, N, 1, seed=5)
    gs = DynamicGaussians(means=m, quats=q, scales=s, opacities=o, colours=c, motion=mo, t0=t0, gamma0=g0, gamma1=g1)
    times = torch.tensor([[0.0, 0.5], [0.3, 1.0]], device=DEV)
    a = render_dynamic(gs, times, H, W, backend="cuda")
    b = render_dynamic(gs, times, H, W, backend="torch")
    assert a.rgb.shape == (B, 2, H, W, 3)
    for x, y in ((a.rgb, b.rgb), (a.depth, b.depth), (a.alpha, b.alpha)):
        assert rel_err(x, y) < TOL


def test_nan_input_is_named():
    cu = _ext()
    H, W = 16, 16
    vms, Ks = cameras(1, H, W)
    inputs = [t[None] for t in scene(20, seed=6)]
    inputs[2][0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="scales"):
        cu.rasterize_images(*inputs, vms, Ks, W, H, torch.zeros(1, 3, device=DEV), 0.99, 0.1, 100.0, 16)
    with pytest.raises(ValueError, match="CUDA device"):
        cu.rasterize_images(*[t.cpu() for t in inputs], vms, Ks, W, H, None, 0.99, 0.1, 100.0, 16)


def test_matches_gsplat_ortho():
    """Peer check: gsplat's ortho mode (RGB+D, eps2d 0.3, classic) with alpha_clamp 0.999.

    Opacities stay below 0.33 so that the 3-sigma box of every contributing pixel is the same for
    gsplat 1.4 (eigenvalue radius, like ours) and 1.5 (opacity-aware per-axis extent <= 3.33 sigma).
    """
    try:
        import gsplat
        from gsplat import rasterization
    except Exception as e:  # noqa: BLE001 - any import/build failure means "no peer here"
        pytest.skip(f"gsplat cannot be imported/built here: {e!r}")
    cu = _ext()
    H, W, C = 64, 96, 2
    vms, Ks = cameras(C, H, W)
    means, quats, scales, opac, cols = scene(3000, seed=8, depth=(0.3, 4.0), opac=(0.05, 0.33))
    bg = torch.rand(C, 3, device=DEV)
    gen = torch.Generator(device=DEV).manual_seed(1)
    up_rgb = torch.randn(C, H, W, 3, device=DEV, generator=gen)
    up_d = torch.randn(C, H, W, 1, device=DEV, generator=gen)

    def ours(m, q, s, o, c):
        rgb, depth, alpha = cu.rasterize_images(
            m[None], q[None], s[None], o[None], c[None], vms, Ks, W, H, bg, 0.999, 0.1, 100.0, 16
        )
        return rgb, depth, alpha

    def theirs(m, q, s, o, c):
        out, alpha, _ = rasterization(
            m,
            q,
            s,
            o,
            c,
            vms,
            Ks,
            W,
            H,
            near_plane=0.1,
            far_plane=100.0,
            eps2d=0.3,
            sh_degree=None,
            packed=False,
            backgrounds=bg,
            render_mode="RGB+D",
            camera_model="ortho",
            rasterize_mode="classic",
        )
        return out[..., :3], out[..., 3:4], alpha

    res = []
    for fn in (ours, theirs):
        leaves = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, cols)]
        rgb, depth, alpha = fn(*leaves)
        ((rgb * up_rgb).sum() + (depth * up_d).sum() + alpha.sum()).backward()
        res.append(((rgb.detach(), depth.detach(), alpha.detach()), [t.grad for t in leaves]))
    (o_a, g_a), (o_b, g_b) = res
    assert float(o_b[2].mean()) > 0.3
    for name, a, b in zip(("rgb", "depth", "alpha"), o_a, o_b):
        e = rel_err(a, b)
        assert e < 5e-4, f"vs gsplat {gsplat.__version__} forward {name}: relative error {e:.3g}"
    for name, a, b in zip(("means", "quats", "scales", "opacities", "colours"), g_a, g_b):
        e = rel_err(a, b)
        assert e < 2e-3, f"vs gsplat {gsplat.__version__} gradient {name}: relative error {e:.3g}"
