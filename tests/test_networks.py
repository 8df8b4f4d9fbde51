"""Networks on tiny configs: head shapes and ranges, determinism, sampling gradients, the numeric facts
the authors' checkpoints depend on (RMSNorm, PE, PixelShuffle order, window rolls, grid maps)."""

import math

import pytest
import torch
import torch.nn.functional as F

from streamsplat_ns.gaussians import DynamicGaussians, Gaussians
from streamsplat_ns.networks import (
    DecoderConfig,
    EncoderConfig,
    ModelConfig,
    StaticEncoder,
    StreamSplat,
    truncated_normal_sample,
)
from streamsplat_ns.networks.heads import grid_maps
from streamsplat_ns.networks.layers import Block, RMSNorm, sinusoidal_pe
from streamsplat_ns.networks.upsampler import pixel_shuffle_tokens


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return StreamSplat.from_config(ModelConfig.tiny()).eval()


def frames(b=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 32, 64, generator=g), torch.rand(b, 1, 32, 64, generator=g)


def test_static_shapes_and_ranges(model):
    rgb, d = frames()
    with torch.no_grad():
        g = model.predict_static(rgb, d)
    n = 16 * 32
    assert isinstance(g, Gaussians) and g.means.shape == (2, n, 3) and g.scales.shape == (2, n, 3)
    assert g.quats.shape == (2, n, 4) and torch.equal(g.quats, torch.tensor([1.0, 0, 0, 0]).expand(2, n, 4))
    assert ((g.opacities >= 0.05) & (g.opacities <= 1)).all()
    assert ((g.colours > 0) & (g.colours < 1)).all()
    assert (g.scales > 0).all() and (g.scales <= 0.1 * F.softplus(torch.tensor(50.0))).all()
    assert torch.allclose(g.scales[..., 1], 0.5 * (g.scales[..., 0] + g.scales[..., 2]))
    x_map, z_map = grid_maps(16, 32)
    assert ((g.means[..., 0] - x_map).abs() <= 1 / 32 + 1e-6).all()  # within half a cell
    assert ((g.means[..., 2] - z_map).abs() <= 1 / 16 + 1e-6).all()
    assert ((g.means[..., 1] > 0) & (g.means[..., 1] < 1)).all()


def test_pair_shapes_ranges_and_anchors(model):
    rgb, d = frames()
    with torch.no_grad():
        g = model.predict_pair(rgb, d, rgb.flip(0), d.flip(0))
        s0 = model.predict_static(rgb, d)
    n = 16 * 32
    assert isinstance(g, DynamicGaussians) and g.means.shape == (2, 2 * n, 3)
    assert g.motion.shape == (2, 2 * n, 1, 3)
    assert torch.equal(g.t0[:, :n], torch.zeros(2, n)) and torch.equal(g.t0[:, n:], torch.ones(2, n))
    bound = torch.tensor([0.5, 0.1, 0.5])
    assert (g.motion.abs() <= bound).all()
    assert (g.gamma0 >= 0).all() and ((g.gamma1 > 0) & (g.gamma1 < 1)).all()
    # frame-0 half equals the static Gaussians of frame 0 (stage 2 keeps the static part frozen)
    assert torch.allclose(g.means[:, :n], s0.means, atol=1e-6)


def test_motion_order_two():
    torch.manual_seed(0)
    m = StreamSplat(EncoderConfig.tiny(), DecoderConfig.tiny(motion_order=2)).eval()
    rgb, d = frames(1)
    with torch.no_grad():
        g = m.predict_pair(rgb, d, rgb, d)
    assert g.motion.shape == (1, 1024, 2, 3)


@pytest.mark.parametrize("order", [1, 2])
def test_gaussians_from_cached_static_terms_match(order):
    """The streaming split of the heads' first layer (static terms cached per frame) is the same maths."""
    torch.manual_seed(0)
    m = StreamSplat(EncoderConfig.tiny(), DecoderConfig.tiny(motion_order=order)).eval()
    dec = m.decoder
    rgb, d = frames(2)
    with torch.no_grad():
        s0, s1 = m.encode_frame(rgb, d), m.encode_frame(rgb.flip(0), d.flip(0))
        dyn = dec.dynamic_features(dec.joint_tokens(s0.tokens, s1.tokens, s0.condition, s1.condition))
        ref = dec.gaussians(dyn, s0.features, s1.features, s0.gaussians, s1.gaussians)
        t0, t1 = dec.static_terms(s0.features), dec.static_terms(s1.features)
        got = dec.gaussians_from_terms(dyn, t0, t1, s0.gaussians, s1.gaussians)
    assert t0.shape == (2, 512, 2 * dec.cfg.head_hidden) and t0.dtype == torch.float32
    assert got.motion.shape == (2, 1024, order, 3) and ref.motion.abs().max() > 1e-3
    for f in ("motion", "gamma0", "gamma1", "t0", "means", "opacities"):
        assert torch.allclose(getattr(got, f), getattr(ref, f), atol=1e-5), f
    dec.heads.train()
    with pytest.raises(RuntimeError, match="inference-only"):
        dec.heads.forward_from_hidden(t0)


def _zero_init_is_plain(plain, variant, proj: str, rgb, d, rgb1, d1):
    """A zero-initialised decoder variant gives the plain decoder's pair; with random weights in its new
    projection ``proj`` the motion changes. Returns (plain pair, variant pair with the random projection)."""
    with torch.no_grad():
        a, b = plain.predict_pair(rgb, d, rgb1, d1), variant.predict_pair(rgb, d, rgb1, d1)
        assert torch.allclose(a.motion, b.motion) and torch.allclose(a.gamma0, b.gamma0)
        getattr(variant.decoder, proj).weight.normal_(0, 0.5)
        c = variant.predict_pair(rgb, d, rgb1, d1)
    assert (c.motion - a.motion).abs().max() > 1e-3
    return a, c


def test_cross_pixel_decoder_variant():
    """DecoderConfig.cross_pixel (a demo-recipe variant, off in the paper config): zero-initialised it is the
    plain decoder; trained, frame 0's heads see frame 1's features and vice versa, and the streaming split
    (cached terms), the inference-prepared model and a checkpoint round trip all give the same Gaussians."""
    from streamsplat_ns.inference import InferenceOptions, prepare

    torch.manual_seed(0)
    plain = StreamSplat(EncoderConfig.tiny(), DecoderConfig.tiny()).eval()
    assert DecoderConfig.paper().cross_pixel is False and plain.decoder.cross_proj is None
    assert not any("cross_proj" in k for k in plain.state_dict())
    cross = StreamSplat(EncoderConfig.tiny(), DecoderConfig.tiny(cross_pixel=True)).eval()
    missing = cross.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing == ["decoder.cross_proj.weight"]
    rgb, d = frames(2)
    rgb1, d1 = rgb.flip(-1), d.flip(-1)
    a, c = _zero_init_is_plain(plain, cross, "cross_proj", rgb, d, rgb1, d1)
    with torch.no_grad():
        # frame 0's heads read frame 1: changing frame 1 changes frame 0's motion even with the transformer's
        # contribution held fixed (same dynamic features)
        dec = cross.decoder
        s0, s1 = cross.encode_frame(rgb, d), cross.encode_frame(rgb1, d1)
        s2 = cross.encode_frame(rgb1.roll(3, -1), d1)
        dyn = dec.dynamic_features(dec.joint_tokens(s0.tokens, s1.tokens, s0.condition, s1.condition))
        ref = dec.gaussians(dyn, s0.features, s1.features, s0.gaussians, s1.gaussians)
        moved = dec.gaussians(dyn, s0.features, s2.features, s0.gaussians, s2.gaussians)
        n = s0.features.shape[1]
        assert (ref.motion[:, :n] - moved.motion[:, :n]).abs().max() > 1e-4
        t0, t1 = dec.static_terms(s0.features), dec.static_terms(s1.features)
        assert t0.shape[-1] == 4 * dec.cfg.head_hidden
        got = dec.gaussians_from_terms(dyn, t0, t1, s0.gaussians, s1.gaussians)
        for f in ("motion", "gamma0", "gamma1"):
            assert torch.allclose(getattr(got, f), getattr(ref, f), atol=1e-5), f
        fast = prepare(cross, InferenceOptions.fastest())
        e = fast.predict_pair(rgb, d, rgb1, d1)
        # bf16 rounding only, and the cross term is in (far closer to c than to the plain decoder's a)
        assert (e.motion - c.motion).abs().max() < 0.1 * (c.motion - a.motion).abs().max()


def test_token_correlation_decoder_variant(tmp_path):
    """DecoderConfig.token_correlation (a demo-recipe variant, off in the paper config): the correlation finds
    where a token's content went; zero-initialised the decoder is the plain one; trained, it changes the
    motion, and a checkpoint round trip and the inference-prepared model give the same Gaussians."""
    from streamsplat_ns.inference import InferenceOptions, prepare
    from streamsplat_ns.networks.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    plain = StreamSplat(EncoderConfig.tiny(), DecoderConfig.tiny()).eval()
    assert DecoderConfig.paper().token_correlation == 0 and plain.decoder.corr_proj is None
    corr = StreamSplat(EncoderConfig.tiny(), DecoderConfig.tiny(token_correlation=1)).eval()
    assert corr.load_state_dict(plain.state_dict(), strict=False).missing_keys == ["decoder.corr_proj.weight"]
    with pytest.raises(ValueError, match="token_correlation"):
        DecoderConfig.tiny(token_correlation=-1)

    # frame 1 = frame 0 moved one token to the right: frame 0's content is found at offset (0, +1)
    dec = corr.decoder
    gh, gw = dec.enc_cfg.token_grid
    t0 = torch.randn(1, gh * gw, dec.cfg.width)
    t1 = t0.view(1, gh, gw, -1).roll(1, dims=2).reshape(1, gh * gw, -1)
    c = dec.correlation(t0, t1).view(1, 2, gh, gw, 9)
    inner = (slice(None), slice(1, gw - 1))  # all rows; columns away from the wrap-around
    assert (c[0, 0][inner].argmax(-1) == 5).all()  # (dy, dx) = (0, +1): row-major index 1 * 3 + 2
    assert (c[0, 1][inner].argmax(-1) == 3).all()  # and frame 1's content came from (0, -1)
    assert torch.allclose(c[0, 0][inner][..., 5], torch.ones(gh, gw - 2), atol=1e-5)

    rgb, d = frames(2)
    rgb1, d1 = rgb.roll(2, -1), d.roll(2, -1)
    a, e = _zero_init_is_plain(plain, corr, "corr_proj", rgb, d, rgb1, d1)
    # the streaming session (cached frame state, then the next frame) gives the same pair
    from streamsplat_ns.streaming import StreamingSession

    s = StreamingSession(corr, InferenceOptions.eager())
    assert s.push(rgb[:1], d[:1]) is None
    streamed = s.push(rgb1[:1], d1[:1])
    with torch.no_grad():
        one = corr.predict_pair(rgb[:1], d[:1], rgb1[:1], d1[:1])
    assert torch.allclose(streamed.motion, one.motion, atol=1e-5)
    path = tmp_path / "corr.safetensors"
    save_checkpoint(corr, path)
    back = load_checkpoint(path, "cpu")
    assert back.decoder.cfg.token_correlation == 1
    with torch.no_grad():
        assert torch.equal(back.predict_pair(rgb, d, rgb1, d1).motion, e.motion)
        fast = prepare(corr, InferenceOptions.fastest()).predict_pair(rgb, d, rgb1, d1)
    assert (fast.motion - e.motion).abs().max() < 0.1 * (e.motion - a.motion).abs().max()


def test_options_rotation_and_sh():
    torch.manual_seed(0)
    enc = StaticEncoder(EncoderConfig.tiny(learned_rotation=True, sh_degree=2)).eval()
    rgb, d = frames(1)
    g = enc(rgb, d)
    assert g.sh.shape == (1, 512, 9, 3)
    assert torch.allclose(g.quats.norm(dim=-1), torch.ones(1, 512), atol=1e-5)
    # DC term consistent with the colour
    assert torch.allclose(g.sh[:, :, 0] * 0.28209479177387814 + 0.5, g.colours, atol=1e-5)


def test_eval_deterministic_train_samples(model):
    rgb, d = frames()
    with torch.no_grad():
        a = model.predict_pair(rgb, d, rgb, d)
        b = model.predict_pair(rgb, d, rgb, d)
    for f in ("means", "motion", "gamma0", "opacities"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    enc = StaticEncoder(EncoderConfig.tiny())
    enc.train()
    torch.manual_seed(3)
    g1 = enc(rgb, d)
    g2 = enc(rgb, d)
    assert not torch.equal(g1.means, g2.means)  # truncated-normal sample differs
    enc.eval()
    assert torch.equal(enc(rgb, d).means, enc(rgb, d).means)


def test_truncated_normal_gradients_and_bounds():
    torch.manual_seed(0)
    mu = torch.tensor([0.3, -0.9, 0.0, 0.99], requires_grad=True)
    log_std = torch.tensor([0.0, -1.0, 1.0, -2.0], requires_grad=True)
    x = truncated_normal_sample(mu, log_std, -1 + 1e-3, 1 - 1e-3)
    assert ((x >= -1 + 1e-3) & (x <= 1 - 1e-3)).all()
    x.sum().backward()
    assert torch.isfinite(mu.grad).all() and (mu.grad.abs() > 0).all()
    assert torch.isfinite(log_std.grad).all() and (log_std.grad.abs() > 0).all()
    # deterministic fallback for tiny sigma; the distribution of a centred wide sample covers both halves
    x = truncated_normal_sample(torch.tensor([0.2]), torch.tensor([-6.0]), -1, 1)
    assert x.item() == pytest.approx(0.2)
    many = truncated_normal_sample(torch.zeros(4000), torch.zeros(4000), -1, 1)
    assert abs(many.mean().item()) < 0.05 and many.min() < -0.8 and many.max() > 0.8
    # inverse CDF with a given u reproduces the analytic quantile
    u = torch.tensor([0.5])
    assert truncated_normal_sample(torch.tensor([0.0]), torch.tensor([0.0]), -1, 1, u=u).abs().item() < 1e-6


def test_train_mode_position_and_velocity_gradients():
    torch.manual_seed(0)
    m = StreamSplat.from_config(ModelConfig.tiny(), position_std_head=True)
    m.train()
    rgb, d = frames(1)
    g = m.encoder(rgb, d)
    g.means.sum().backward()
    head = m.encoder.heads.position
    assert head.mean.weight.grad is not None and head.mean.weight.grad.abs().sum() > 0
    assert head.log_std.weight.grad is not None and head.log_std.weight.grad.abs().sum() > 0
    m.zero_grad()
    m.set_grad_checkpointing(True)
    m.freeze_static()
    m.train()
    assert not m.encoder.training
    g = m.predict_pair(rgb, d, rgb, d)
    g.motion.sum().backward()
    vh = m.decoder.heads
    assert vh.velocity[0].weight.grad.abs().sum() > 0 and vh.velocity_log_std.weight.grad.abs().sum() > 0
    assert m.encoder.blocks[0].attn.qkv.weight.grad is None  # frozen


def test_bad_inputs(model):
    rgb, d = frames(1)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model.predict_static(rgb.permute(0, 2, 3, 1), d)
    with pytest.raises(ValueError, match="32x64"):
        model.predict_static(torch.rand(1, 3, 40, 64), torch.rand(1, 1, 40, 64))
    with pytest.raises(RuntimeError, match="no dynamic decoder"):
        StreamSplat(EncoderConfig.tiny()).predict_pair(rgb, d, rgb, d)
    with pytest.raises(ValueError, match="multiple of the patch"):
        EncoderConfig(image_height=30)


# ---------------------------------------------------------------- numeric facts of the official code
def test_rmsnorm_fp32_and_eps():
    n = RMSNorm(8)
    n.weight.data = torch.linspace(0.5, 2, 8)
    x = torch.randn(3, 8).bfloat16()
    y = n(x)
    ref = (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5) * n.weight).bfloat16()
    assert y.dtype == torch.bfloat16 and torch.equal(y, ref)


def test_sinusoidal_pe_recipe():
    pe = sinusoidal_pe(7, 6)
    p, i = 5, 1
    d_i = math.exp(2 * i * (-math.log(10000.0) / 6))
    assert pe[p, 2 * i].item() == pytest.approx(math.sin(p * d_i), abs=1e-6)
    assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(p * d_i), abs=1e-6)


def test_pixel_shuffle_channel_order():
    h, w, c = 3, 4, 5
    y = torch.randn(2, h * w, 4 * c)
    ours = pixel_shuffle_tokens(y, h, w)
    ref = F.pixel_shuffle(y.transpose(1, 2).reshape(2, 4 * c, h, w), 2).flatten(2).transpose(1, 2)
    assert torch.equal(ours, ref)
    # channel 4c + 2i + j lands at sub-pixel (i, j)
    assert ours[0, (2 * 1 + 1) * (2 * w) + 2 * 2 + 0, 3] == y[0, 1 * w + 2, 4 * 3 + 2 * 1 + 0]


def test_window_roll_direction():
    torch.manual_seed(0)
    blk = Block(16, head_dim=8, window=4, shift=True)
    x = torch.randn(1, 8, 16)
    out = blk(x)
    # reference: new[i] = old[i - 2 mod L], windows of 4, attend, roll back
    h = blk.norm1(x)
    idx = (torch.arange(8) - 2) % 8
    hr = h[:, idx]
    o = torch.cat([blk.attn(hr[:, :4]), blk.attn(hr[:, 4:])], dim=1)
    back = torch.empty_like(o)
    back[:, idx] = o
    x2 = x + back
    ref = x2 + blk.mlp(blk.norm2(x2))
    assert torch.allclose(out, ref, atol=1e-5)
    # the first window after the roll joins the sequence's last 2 and first 2 tokens
    assert idx[:4].tolist() == [6, 7, 0, 1]


def test_grid_maps():
    x, z = grid_maps(144, 256)
    g = 256 * 5 + 7
    assert x[g].item() == pytest.approx(-1 + 15 / 256, abs=1e-6)
    assert z[g].item() == pytest.approx(1 - 11 / 144, abs=1e-6)


def test_paper_config_sizes():
    cfg = ModelConfig.paper()
    assert cfg.encoder.num_tokens == 2304 and cfg.encoder.gaussians_per_frame == 36864
    assert cfg.encoder.feature_width == 192 and cfg.decoder.resolved_dino_grid(cfg.encoder) == (18, 32)
    with torch.device("meta"):
        m = StreamSplat.from_config(cfg, position_std_head=True)
    n_enc = sum(p.numel() for p in m.encoder.parameters())
    assert n_enc == 76_933_068  # the official stage-1 parameter count
    n_dec = sum(p.numel() for p in m.decoder.parameters())
    assert n_dec == 98_588_928 + 5_907_648 + 224_069 + 36_864
    assert sum(p.numel() for p in m.dino.parameters()) == 86_582_784 + 768  # + mask_token


def _run_interpreted(code: str) -> None:
    """Run ``code`` in a fresh interpreter with Triton's CPU interpreter on; it must print OK."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.getcwd())
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]


def test_fused_add_rmsnorm_kernel_matches_eager():
    """The Triton fused path (run on CPU through TRITON_INTERPRET=1) equals the eager bf16 path."""
    _run_interpreted(r"""
import torch
from streamsplat_ns.networks import ModelConfig, StreamSplat
from streamsplat_ns.inference import kernels as fused
x = torch.randn(5, 48)
y = torch.randn(5, 48).bfloat16()
w = torch.rand(48) + 0.5
s, h = fused.add_rmsnorm(x, y, w, 1e-5, torch.bfloat16)
ref = x + y.float()
assert torch.equal(s, ref)
href = torch.nn.functional.rms_norm(ref, (48,), w, 1e-5).bfloat16()
assert (h.float() - href.float()).abs().max() <= 1e-2 * href.float().abs().max(), "norm"
from streamsplat_ns.inference import InferenceOptions, prepare
torch.manual_seed(0)
m = prepare(StreamSplat.from_config(ModelConfig.tiny()).eval(), InferenceOptions(dtype=torch.bfloat16))
g = torch.Generator().manual_seed(1)
rgb, d = torch.rand(1, 3, 32, 64, generator=g), torch.rand(1, 1, 32, 64, generator=g)
with torch.no_grad():
    a = m.predict_pair(rgb, d, rgb.flip(-1), d)
    prepare(m, InferenceOptions(dtype=torch.bfloat16, fused=True))
    calls = []
    orig = fused.add_rmsnorm
    fused.add_rmsnorm = lambda *a, **k: calls.append(1) or orig(*a, **k)
    b = m.predict_pair(rgb, d, rgb.flip(-1), d)
    assert len(calls) > 20, len(calls)
for f in ("means", "motion", "gamma0", "gamma1", "opacities"):
    diff = (getattr(a, f) - getattr(b, f)).abs().max().item()
    assert diff < 2e-2, (f, diff)
print("OK")
""")


def test_fused_shifted_window_indexing():
    """The fused kernel's rolled read / write equal torch.roll (Triton interpreter, CPU)."""
    _run_interpreted(r"""
import torch
from streamsplat_ns.inference import kernels as fused
x = torch.randn(2, 8, 16); y = torch.randn(2, 8, 16); w = torch.rand(16) + 0.5
s, h = fused.add_rmsnorm(x, y, w, 1e-5, torch.float32, y_shift=3, h_shift=2)
ref = x + torch.roll(y, -3, dims=1)
assert torch.allclose(s, ref)
href = torch.roll(torch.nn.functional.rms_norm(ref, (16,), w, 1e-5), 2, dims=1)
assert torch.allclose(h, href, atol=1e-5)
print("OK")
""")


def test_fused_linear_silu_kernel_matches_eager():
    """The fc1 + SiLU Triton GEMM (interpreter, CPU) equals silu(x @ w.T) for ragged M, N and K. fp16 and
    fp32 here: the interpreter mis-evaluates bf16 dots; bf16 is checked on the GPU (test below)."""
    _run_interpreted(r"""
import torch
from streamsplat_ns.inference import kernels as fused
g = torch.Generator().manual_seed(0)
for (m, n, k), dt in (((37, 48, 80), torch.float16), ((64, 32, 64), torch.float32)):
    x = torch.randn(m, k, generator=g).to(dt)
    w = (torch.randn(n, k, generator=g) / k ** 0.5).to(dt)
    ref = torch.nn.functional.silu(x.float() @ w.float().T)
    for cfg in ((32, 32, 32, 4, 1), (16, 64, 32, 4, 1)):
        out = fused.linear_silu_triton(x.view(1, m, k), w, cfg)
        assert out.shape == (1, m, n) and out.dtype == dt
        err = (out.float()[0] - ref).abs().max().item()
        assert err <= 1e-2 * ref.abs().max().item(), (m, n, k, cfg, err)
# CPU tensors always take the eager path (the timing choice is CUDA-only)
x = torch.randn(3, 16).bfloat16(); w = torch.randn(8, 16).bfloat16()
from streamsplat_ns.inference.choices import get_choices
assert torch.equal(fused.linear_silu(x, w, get_choices("cpu", None)),
                   torch.nn.functional.silu(torch.nn.functional.linear(x, w)))
print("OK")
""")


@pytest.mark.gpu
def test_gpu_fused_linear_silu_bf16(tmp_path):
    """On CUDA, bf16: every Triton config and the per-shape choice agree with cuBLAS + SiLU."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from streamsplat_ns.inference import kernels as fused
    from streamsplat_ns.inference.choices import get_choices

    g = torch.Generator(device="cuda").manual_seed(0)
    for m, n, k in ((4608, 3072, 768), (1000, 768, 192)):
        x = torch.randn(m, k, device="cuda", generator=g).bfloat16()
        w = (torch.randn(n, k, device="cuda", generator=g) / k**0.5).bfloat16()
        ref = torch.nn.functional.silu(x.float() @ w.float().T)
        tol = 2e-2 * ref.abs().max().item()
        for cfg in fused.LINEAR_SILU_CONFIGS:
            assert (fused.linear_silu_triton(x, w, cfg).float() - ref).abs().max().item() <= tol, cfg
        got = fused.linear_silu(x, w, get_choices(x.device, tmp_path))
        assert (got.float() - ref).abs().max().item() <= tol


def test_fused_norm_mlp_kernel_matches_eager():
    """The one-kernel add + RMSNorm + MLP + add (interpreter, CPU) equals the eager maths, shifted windows and
    ragged row counts included; widths split into two power-of-two parts and not."""
    _run_interpreted(r"""
import torch
from streamsplat_ns.inference import kernels as fused
g = torch.Generator().manual_seed(0)
for d, dt, shift in ((48, torch.float16, 3), (96, torch.float32, 0), (64, torch.float16, 5)):
    hid = 4 * d
    x = torch.randn(2, 40, d, generator=g)
    y = torch.randn(2, 40, d, generator=g).to(dt)
    nw = torch.rand(d, generator=g) + 0.5
    w1 = (torch.randn(hid, d, generator=g) / d ** 0.5).to(dt)
    w2 = (torch.randn(d, hid, generator=g) / hid ** 0.5).to(dt)
    s = x + torch.roll(y.float(), -shift, dims=1)
    ref = s + torch.nn.functional.silu(torch.nn.functional.rms_norm(s, (d,), nw, 1e-5) @ w1.float().T) @ w2.float().T
    for cfg in ((16, 32, 4, 1), (32, 64, 4, 1)):
        out = fused.norm_mlp_triton(x, y, nw, 1e-5, w1, w2, shift, cfg)
        assert out.shape == x.shape and out.dtype == torch.float32
        err = (out - ref).abs().max().item()
        assert err < (1e-5 if dt == torch.float32 else 2e-3) * ref.abs().max().item(), (d, dt, cfg, err)
        fw = torch.rand(d, generator=g) + 0.5  # with the stack's final norm folded in
        out = fused.norm_mlp_triton(x, y, nw, 1e-5, w1, w2, shift, cfg, final=(fw, 1e-6))
        fin = torch.nn.functional.rms_norm(ref, (d,), fw, 1e-6)
        assert (out - fin).abs().max().item() < (1e-5 if dt == torch.float32 else 2e-3) * fin.abs().max().item()
assert fused.width_split(192) == (128, 64) and fused.width_split(384) == (256, 128)
assert fused.width_split(64) == (64, 0) and fused.width_split(100) is None
print("OK")
""")


@pytest.mark.gpu
def test_gpu_fused_norm_mlp_bf16(tmp_path):
    """On CUDA, bf16, at the upsampler's widths: every config of the one-kernel MLP and the per-shape choice
    agree with the eager add + norm + MLP."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from streamsplat_ns.inference import kernels as fused
    from streamsplat_ns.inference.choices import get_choices
    from streamsplat_ns.networks.layers import MLP

    g = torch.Generator(device="cuda").manual_seed(0)
    for d, shift in ((192, 7), (384, 0)):
        mlp = MLP(d, 4 * d).cuda().bfloat16()
        x = torch.randn(2, 1000, d, device="cuda", generator=g)
        y = torch.randn(2, 1000, d, device="cuda", generator=g).bfloat16()
        nw = torch.rand(d, device="cuda", generator=g) + 0.5
        s = x + torch.roll(y.float(), -shift, dims=1)
        w1, w2 = mlp.fc1.weight.float(), mlp.fc2.weight.float()
        ref = s + torch.nn.functional.silu(torch.nn.functional.rms_norm(s, (d,), nw, 1e-5) @ w1.T) @ w2.T
        tol = 1e-2 * ref.abs().max().item()
        ran = 0
        for cfg in fused.NORM_MLP_CONFIGS:
            try:
                out = fused.norm_mlp_triton(x, y, nw, 1e-5, mlp.fc1.weight, mlp.fc2.weight, shift, cfg)
            except Exception as e:  # a config too big for this GPU's shared memory is skipped by the choice too
                assert "OutOfResources" in type(e).__name__, e
                continue
            ran += 1
            assert (out - ref).abs().max().item() <= tol, (d, cfg)
        assert ran >= 2, d
        ch = get_choices(x.device, tmp_path)
        res, pending, normed = fused.add_norm_mlp(x, y, nw, 1e-5, mlp, ch, y_shift=shift)
        got = res if pending is None else res + pending.float()
        assert not normed and (got - ref).abs().max().item() <= tol
        fw = torch.rand(d, device="cuda", generator=g) + 0.5
        res, pending, normed = fused.add_norm_mlp(x, y, nw, 1e-5, mlp, ch, y_shift=shift, final=(fw, 1e-5))
        if not normed:
            res = fused.add_rmsnorm(res, pending, fw, 1e-5, torch.float32)[1]
        fin = torch.nn.functional.rms_norm(ref, (d,), fw, 1e-5)
        assert (res - fin).abs().max().item() <= 1e-2 * fin.abs().max().item()


def test_fused_dynamic_heads_kernel_matches_eager():
    """The one-kernel dynamic heads (interpreter, CPU, exact fp32 products) equal the eager heads on
    ``cat(static_proj(feats), dyn)``: ragged widths (padding masks), both frames' rows, order 1 and 2."""
    _run_interpreted(r"""
import torch
from streamsplat_ns.inference import heads_kernel as fused_heads
from streamsplat_ns.networks.heads import DynamicHeads
g = torch.Generator().manual_seed(0)
for (b, n, cs, cd, h, order) in ((2, 40, 24, 20, 48, 1), (1, 33, 16, 16, 32, 2)):
    torch.manual_seed(order)
    heads = DynamicHeads(cs + cd, h, order).eval()
    for p in heads.parameters():  # non-zero biases everywhere
        p.data += 0.1 * torch.randn(p.shape, generator=g)
    spw = torch.randn(cs, cs, generator=g) / cs ** 0.5
    feats0, feats1 = torch.randn(b, n, cs, generator=g), torch.randn(b, n, cs, generator=g)
    dyn = torch.randn(2 * b, n, cd, generator=g)
    stat = torch.stack([feats0, feats1], dim=1).view(2 * b, n, cs)
    with torch.no_grad():
        ref = heads(torch.cat([stat @ spw.T, dyn], dim=-1))
        for cfg in ((32, 16, 16, 4, 1), (64, 32, 32, 4, 1)):
            got = fused_heads.dynamic_heads_triton(heads, spw, dyn, feats0, feats1, cfg, "ieee")
            for r, o in zip(ref, got):
                assert r.shape == o.shape, (r.shape, o.shape)
                assert (r - o).abs().max().item() < 1e-5 * max(1.0, r.abs().max().item()), (cfg, order)
print("OK")
""")


@pytest.mark.gpu
def test_gpu_fused_dynamic_heads_paper_shapes():
    """On CUDA at the paper's head shapes (192-wide features, 192 hidden): every config of the one-kernel
    heads, with TF32 products, agrees with the eager heads (TF32 too) to TF32 rounding."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from streamsplat_ns.inference import heads_kernel as fused_heads
    from streamsplat_ns.networks.heads import DynamicHeads

    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        torch.manual_seed(0)
        heads = DynamicHeads(384, 192, 1).cuda().eval()
        g = torch.Generator(device="cuda").manual_seed(0)
        spw = torch.randn(192, 192, device="cuda", generator=g) / 192**0.5
        feats0, feats1 = (torch.randn(1, 36864, 192, device="cuda", generator=g) for _ in range(2))
        dyn = torch.randn(2, 36864, 192, device="cuda", generator=g)
        stat = torch.stack([feats0, feats1], dim=1).view(2, 36864, 192)
        with torch.no_grad():
            ref = heads(torch.cat([stat @ spw.T, dyn], dim=-1))
            for cfg in fused_heads.HEADS_CONFIGS:
                got = fused_heads.dynamic_heads_triton(heads, spw, dyn, feats0, feats1, cfg)
                for r, o in zip(ref, got):
                    assert (r - o).abs().max().item() < 5e-3 * max(1.0, r.abs().max().item()), cfg
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def test_fused_dinov2_matches_eager():
    """DINOv2's inference path (LayerScale folded into the projections, add + LayerNorm in one kernel; run
    through the Triton interpreter on CPU) gives the eager patch features; the parameters are untouched."""
    _run_interpreted(r"""
import torch
from streamsplat_ns.inference import kernels as fused
from streamsplat_ns.inference import InferenceOptions, prepare
from streamsplat_ns.networks.config import DinoConfig
from streamsplat_ns.networks.dinov2 import DinoVisionTransformer
g = torch.Generator().manual_seed(0)
x = torch.randn(3, 5, 40, generator=g); y = torch.randn(3, 5, 40, generator=g)
w, b = torch.rand(40, generator=g) + 0.5, torch.randn(40, generator=g)
s, h = fused.add_layernorm(x, y, w, b, 1e-6)
assert torch.allclose(s, x + y)
assert torch.allclose(h, torch.nn.functional.layer_norm(x + y, (40,), w, b, 1e-6), atol=1e-5)
torch.manual_seed(0)
m = DinoVisionTransformer(DinoConfig.tiny()).eval()
for p in m.parameters():
    p.data += 0.2 * torch.randn(p.shape, generator=g)
before = {k: v.clone() for k, v in m.state_dict().items()}
img = torch.rand(2, 3, 56, 42, generator=g)
with torch.no_grad():
    ref = m.forward_features(img)["x_norm_patchtokens"]
    prepare(m, InferenceOptions(fused=True))  # fp32 weights: only the fused path differs
    assert type(m).__name__ == "FastDino"
    got = m.forward_features(img)["x_norm_patchtokens"]
assert (got - ref).abs().max().item() < 1e-4 * ref.abs().max().item(), (got - ref).abs().max()
assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())
print("OK")
""")


def test_compile_blocks_no_recompile_fallback():
    """The trainer's ``compile_blocks`` (stage 2: frozen encoder, gradient checkpointing, train + eval steps)
    compiles each distinct block once and never hits dynamo's recompile limit (which silently ran eager).
    Dynamo's guards, and so its recompiles, do not depend on the backend: ``eager`` keeps this fast on CPU."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    cfg = ModelConfig.tiny()
    net = StreamSplat(cfg.encoder, cfg.decoder)
    net.freeze_static()
    net.set_grad_checkpointing(True)
    assert net.compile_blocks(backend="eager") == cfg.decoder.depth + 2 * cfg.decoder.upsampler.depth
    h, w = cfg.encoder.image_height, cfg.encoder.image_width
    g = torch.Generator().manual_seed(0)
    rgb, d = torch.rand(2, 3, h, w, generator=g), torch.rand(2, 1, h, w, generator=g)
    for _ in range(2):
        net.train()
        out = net.predict_pair(rgb, d, rgb.flip(0), d)
        (out.means.sum() + out.motion.sum()).backward()
        net.eval()
        with torch.no_grad():
            net.predict_pair(rgb, d, rgb, d)
    frames = dict(counters["frames"])
    assert not any("recompile" in k.lower() for k in counters["unimplemented"]), dict(counters["unimplemented"])
    # one graph per distinct block (two cross blocks share one; four upsampler blocks: 2 widths x shifted or not)
    assert frames.get("ok") == frames.get("total") == 5, frames
    torch._dynamo.reset()


def test_velocity_log_std_offset_starts_training_near_the_mean():
    """DecoderConfig.velocity_log_std_offset (a recipe variant; 0 in the paper config): the freshly built head
    samples velocities as wide as the bound in training; with the offset the training sample is the mean
    (what inference uses), while the eval output does not depend on it."""
    from streamsplat_ns.networks.heads import DynamicHeads

    assert DecoderConfig.paper().velocity_log_std_offset == 0.0
    torch.manual_seed(0)
    f = torch.randn(1, 500, 48)
    plain = DynamicHeads(48, 32, 1)
    offset = DynamicHeads(48, 32, 1, log_std_offset=-6.0)
    offset.load_state_dict(plain.state_dict())
    with torch.no_grad():
        mean = plain.eval()(f)[0]
        assert torch.equal(offset.eval()(f)[0], mean)
        wide = plain.train()(f)[0]
        near = offset.train()(f)[0]
    assert (wide - mean).abs().mean() > 0.05  # log-std ~0: samples spread over the bound
    assert torch.allclose(near, mean)
    model = StreamSplat(EncoderConfig.tiny(), DecoderConfig.tiny(velocity_log_std_offset=-6.0))
    assert model.decoder.heads.log_std_offset == -6.0
