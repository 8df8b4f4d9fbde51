"""Checkpoints: our round trip, and the authors' stage-1 / stage-2 / inference layouts (strict), checked
against an independent re-implementation of the authors' forward written directly on their key names."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from streamsplat_ns.api import load_checkpoint, save_checkpoint
from streamsplat_ns.networks import EncoderConfig, ModelConfig, StreamSplat, official

LAYOUT = Path(__file__).resolve().parents[1] / "shared" / "reference" / "official_layout"
if not LAYOUT.is_dir():
    LAYOUT = Path("/work/shared/reference/official_layout")


def frames(b=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 32, 64, generator=g), torch.rand(b, 1, 32, 64, generator=g)


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    m = StreamSplat.from_config(ModelConfig.tiny(**kw))
    for p in m.parameters():  # break the symmetric inits (norm weights = 1, zero biases)
        p.data.add_(torch.randn_like(p) * 0.05)
    return m.eval()


def test_round_trip(tmp_path):
    m = tiny_model()
    p = tmp_path / "ours.safetensors"
    save_checkpoint(m, p)
    m2 = load_checkpoint(p)
    rgb, d = frames()
    with torch.no_grad():
        a, b = m.predict_pair(rgb, d, rgb.flip(-1), d.flip(-1)), m2.predict_pair(rgb, d, rgb.flip(-1), d.flip(-1))
    for f in ("means", "scales", "opacities", "colours", "motion", "gamma0", "gamma1"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    assert m2.config == m.config
    # without DINO inside, it must be provided (no silent random DINO)
    p2 = tmp_path / "nodino.safetensors"
    save_checkpoint(m, p2, include_dino=False)
    with pytest.raises(FileNotFoundError, match="DINOv2"):
        load_checkpoint(p2)
    dp = tmp_path / "dino.pth"
    torch.save(m.dino.model.state_dict(), dp)
    m3 = load_checkpoint(p2, dino_weights=dp)
    with torch.no_grad():
        assert torch.equal(m3.predict_pair(rgb, d, rgb, d).motion, m.predict_pair(rgb, d, rgb, d).motion)


def test_missing_and_unknown(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_checkpoint(tmp_path / "nope.safetensors")
    p = tmp_path / "weird.safetensors"
    save_file({"foo.bar": torch.zeros(2)}, str(p))
    with pytest.raises(ValueError, match="unknown checkpoint layout.*foo.bar"):
        load_checkpoint(p)


# ------------------------------------------------------------------ reference forward on official names
def rms(x, w):
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w


def attn(x, sd, p, heads, ctx=None):
    d = x.shape[-1]
    W, b = sd[p + "packed_proj.weight"], sd[p + "packed_proj.bias"]
    c = x if ctx is None else ctx
    q = x @ W[:d].T + b[:d]
    k = c @ W[d : 2 * d].T + b[d : 2 * d]
    v = c @ W[2 * d :].T + b[2 * d :]
    sp = lambda t: t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)
    q, k, v = sp(q), sp(k), sp(v)
    a = torch.softmax(q @ k.transpose(-1, -2) / (d // heads) ** 0.5, -1) @ v
    return a.transpose(1, 2).reshape(x.shape) @ sd[p + "out_proj.weight"].T + sd[p + "out_proj.bias"]


def mlp(x, sd, p):
    return F.silu(x @ sd[p + "c_fc.weight"].T) @ sd[p + "c_proj.weight"].T


def block(x, sd, p, heads, window=None, shift=False):
    h = rms(x, sd[p + "layernorm1.weight"])
    L = h.shape[1]
    if window is None:
        o = attn(h, sd, p + "attn.", heads)
    else:
        idx = (torch.arange(L) - window // 2) % L if shift else torch.arange(L)
        hh = h[:, idx]
        o_r = torch.cat([attn(hh[:, i : i + window], sd, p + "attn.", heads) for i in range(0, L, window)], 1)
        o = torch.empty_like(o_r)
        o[:, idx] = o_r
    x = x + o
    return x + mlp(rms(x, sd[p + "layernorm2.weight"]), sd, p + "mlp.")


def upsampler(x, sd, p, grid, heads_of, window):
    h, w = grid
    s = 0
    while f"{p}upsampler_{s}.residual_fc.weight" in sd:
        y = x @ sd[f"{p}upsampler_{s}.residual_fc.weight"].T + sd[f"{p}upsampler_{s}.residual_fc.bias"]
        y = F.pixel_shuffle(y.transpose(1, 2).reshape(y.shape[0], -1, h, w), 2)
        h, w = 2 * h, 2 * w
        x = y.flatten(2).transpose(1, 2)
        i = 0
        while f"{p}attention_{s}.resblocks.{i}.layernorm1.weight" in sd:
            x = block(x, sd, f"{p}attention_{s}.resblocks.{i}.", heads_of(x.shape[-1]), window, shift=(i % 2 == 1))
            i += 1
        s += 1
    return rms(x, sd[p + "layernorm2.weight"])


def ref_static(sd, e, rgb, disp, heads_of, window, stage1):
    te = e + "encoder.transformer_encoder."
    x = F.conv2d(torch.cat([rgb, disp], 1), sd[te + "conv.weight"], stride=8)
    gh, gw = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2) + sd[te + "positional_encoding.pe"]
    x = rms(x, sd[te + "layernorm1.weight"])
    i = 0
    while f"{te}transformer.resblocks.{i}.layernorm1.weight" in sd:
        x = block(x, sd, f"{te}transformer.resblocks.{i}.", heads_of(x.shape[-1]))
        i += 1
    tokens = rms(x, sd[te + "layernorm2.weight"])
    f = upsampler(tokens, sd, e + "gaussian_upsampler.", (gh, gw), heads_of, window)
    pr = e + "predictor."
    lin = lambda n: f @ sd[pr + n + ".weight"].T + sd[pr + n + ".bias"]
    t = torch.tanh(lin("mix_layer.xyz_static_mean")) * (1 - 1e-3) if stage1 else torch.tanh(lin("gs_layer.xyz_static"))
    Hg, Wg = 4 * gh, 4 * gw
    xyz = torch.stack([sd[pr + "x_map"] + t[..., 0] / Wg, 0.5 + 0.5 * t[..., 1], sd[pr + "z_map"] + t[..., 2] / Hg], -1)
    s = 0.1 * F.softplus(lin("gs_layer.scale"))
    return dict(
        tokens=tokens,
        feats=f,
        rgb=torch.sigmoid(lin("gs_layer.rgb")),
        opacity=0.05 + 0.95 * torch.sigmoid(lin("gs_layer.opacity"))[..., 0],
        scale=torch.stack([s[..., 0], (s[..., 0] + s[..., 1]) / 2, s[..., 1]], -1),
        xyz=xyz,
    )


def ref_pair(sd, rgb0, d0, rgb1, d1, dino0, dino1, heads_of, window):
    e = "model.gs_predictor."
    s0 = ref_static(sd, e, rgb0, d0, heads_of, window, False)
    s1 = ref_static(sd, e, rgb1, d1, heads_of, window, False)
    p = "model.decoder.transformer_decoder."
    L = s0["tokens"].shape[1]
    x = torch.cat([s0["tokens"], s1["tokens"]], 1) + sd[p + "positional_embedding"]
    x = x + torch.cat(
        [sd[p + "cls_embedding"][:, :1].expand(1, L, -1), sd[p + "cls_embedding"][:, 1:].expand(1, L, -1)], 1
    )
    x = rms(x, sd[p + "layernorm1.weight"])
    cond = lambda dn: rms(
        dn @ sd[p + "condition_proj.weight"].T + sd[p + "positional_encoding.pe"], sd[p + "condition_ln.weight"]
    )
    c = torch.cat([cond(dino1), cond(dino0)], 0)  # [D1; D0], paired with the halves
    i = 0
    while f"{p}transformer.resblocks.{i}.self_attn_ln.weight" in sd:
        q = f"{p}transformer.resblocks.{i}."
        hd = heads_of(x.shape[-1])
        x = x + attn(rms(x, sd[q + "self_attn_ln.weight"]), sd, q + "self_attn.", hd)
        h = rms(x, sd[q + "cross_attn_ln.weight"])
        halves = torch.cat([h[:, :L], h[:, L:]], 0)
        o = attn(halves, sd, q + "cross_attn.", hd, ctx=c)
        x = x + torch.cat([o[:1], o[1:]], 1)
        x = x + mlp(rms(x, sd[q + "mlp_ln.weight"]), sd, q + "mlp.")
        i += 1
    x = rms(x, sd[p + "layernorm2.weight"])
    grid = (rgb0.shape[2] // 8, rgb0.shape[3] // 8)
    out = {}
    for k, (half, s) in enumerate([(x[:, :L], s0), (x[:, L:], s1)]):
        u = upsampler(half, sd, "model.gaussian_upsampler.", grid, heads_of, window)
        f = torch.cat([s["feats"] @ sd["model.encoder_proj.weight"].T, u], -1)
        g = "model.gs_dynamic_predictor.gs_layer."

        def m3(name):
            h = f
            for j, act in ((1, True), (4, True), (7, False)):
                h = h @ sd[f"{g}{name}.layers.{j}.weight"].T + sd[f"{g}{name}.layers.{j}.bias"]
                h = F.silu(h) if act else h
            return h

        v = torch.tanh(m3("xyz_dynamic")) * (1 - 1e-3)
        v = v.view(1, -1, 1, 3) * sd["model.gs_dynamic_predictor.dynamic_scalar"]
        o = m3("opacity_dynamic")
        out[k] = dict(s, motion=v, g0=F.relu(o[..., 0]), g1=torch.sigmoid(o[..., 1]))
    return out


def _official_file(tmp_path, m, layout, prefix=""):
    sd = official.to_official(m.state_dict(), layout)
    if prefix == "module":
        sd = {"module." + k: v for k, v in sd.items()}
    elif prefix == "compiled":
        sd = {k.replace("model.", "model._orig_mod.", 1): v for k, v in sd.items()}
    p = tmp_path / f"{layout}.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(p))
    return p, official.normalize_keys(sd)


def heads_of_tiny(width):
    return max(width // 16, 1)


@pytest.mark.parametrize("prefix", ["", "module", "compiled"])
def test_official_stage1_matches_reference(tmp_path, prefix):
    m = StreamSplat.from_config(ModelConfig(EncoderConfig.tiny(), None), position_std_head=True)
    for p in m.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    path, sd = _official_file(tmp_path, m, "stage1", prefix)
    loaded = load_checkpoint(path, config=ModelConfig(EncoderConfig.tiny(), None))
    rgb, d = frames()
    with torch.no_grad():
        g = loaded.encoder(rgb, d)
        ref = ref_static(sd, "model.", rgb, d, heads_of_tiny, 64, True)
    assert torch.allclose(g.means, ref["xyz"], atol=1e-5)
    assert torch.allclose(g.scales, ref["scale"], atol=1e-6)
    assert torch.allclose(g.opacities, ref["opacity"], atol=1e-6)
    assert torch.allclose(g.colours, ref["rgb"], atol=1e-6)


@pytest.mark.parametrize("layout", ["stage2", "inference"])
def test_official_pair_matches_reference(tmp_path, layout):
    m = tiny_model(seed=2)
    path, sd = _official_file(tmp_path, m, layout, "compiled" if layout == "inference" else "")
    cfg = ModelConfig.tiny()
    loaded = load_checkpoint(path, config=cfg, allow_random_dino=True)
    assert loaded.encoder.heads.position.mean_scale == 1.0 and loaded.encoder.heads.position.log_std is None
    loaded.dino.load_state_dict(m.dino.state_dict())
    rgb0, d0 = frames(seed=3)
    rgb1, d1 = frames(seed=4)
    with torch.no_grad():
        g = loaded.predict_pair(rgb0, d0, rgb1, d1)
        n0, n1 = loaded.prepare_disparity(d0), loaded.prepare_disparity(d1)
        ref = ref_pair(sd, rgb0, n0, rgb1, n1, loaded.dino(rgb0), loaded.dino(rgb1), heads_of_tiny, 64)
    n = ref[0]["xyz"].shape[1]
    for k in (0, 1):
        sl = slice(k * n, (k + 1) * n)
        assert torch.allclose(g.means[:, sl], ref[k]["xyz"], atol=1e-5)
        assert torch.allclose(g.motion[:, sl], ref[k]["motion"], atol=1e-5)
        assert torch.allclose(g.gamma0[:, sl], ref[k]["g0"], atol=1e-5)
        assert torch.allclose(g.gamma1[:, sl], ref[k]["g1"], atol=1e-5)
        assert torch.allclose(g.opacities[:, sl], ref[k]["opacity"], atol=1e-6)


def test_official_mismatch_lists_keys(tmp_path):
    m = tiny_model()
    sd = official.to_official(m.state_dict(), "inference")
    sd.pop("model.encoder_proj.weight")
    sd["model.something_else"] = torch.zeros(1)
    p = tmp_path / "bad.safetensors"
    save_file(sd, str(p))
    with pytest.raises(
        ValueError, match=r"(?s)missing keys:.*model\.encoder_proj\.weight.*unexpected keys:.*something_else"
    ):
        load_checkpoint(p, config=ModelConfig.tiny(), allow_random_dino=True)


# ------------------------------------------------------------------ full-size layouts from the .tsv files
def tsv(name):
    rows = [l.split("\t") for l in (LAYOUT / name).read_text().splitlines() if l.strip()]
    return {r[0]: tuple(int(s) for s in r[1].strip("[]").split(",") if s.strip()) for r in rows}


def random_sd(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.empty(s).uniform_(-0.01, 0.01, generator=g)
        if len(s) and s[0] < 4000 and len(s) < 3
        else torch.zeros(s) + 0.001 * (i + 1)
        for i, (k, s) in enumerate(shapes.items())
    }


@pytest.mark.skipif(not LAYOUT.is_dir(), reason="official layout files not available")
@pytest.mark.parametrize(
    "name,layout", [("encoder_stage1.tsv", "stage1"), ("decoder_stage2.tsv", "stage2"), ("inference.tsv", "inference")]
)
def test_official_tsv_layouts_map_strictly(name, layout):
    shapes = tsv(name)
    sd = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    assert official.detect_layout(sd) == layout
    cfg = official.infer_config(sd, layout)
    assert cfg.encoder.image_height == 288 and cfg.encoder.image_width == 512 and cfg.encoder.depth == 10
    with torch.device("meta"):
        m = StreamSplat.from_config(cfg, position_std_head=(layout == "stage1"))
    ours = official.from_official(sd, m.state_dict(), layout)
    needed = {k for k in m.state_dict() if not k.startswith("dino.")}
    assert set(ours) == needed  # every parameter/buffer we need comes from the file
    consumed = {official.official_key(k, layout) for k in ours}
    assert consumed | set(official.UNUSED_STAGE2_KEYS if layout == "stage2" else ()) == set(shapes)


@pytest.mark.skipif(not LAYOUT.is_dir(), reason="official layout files not available")
def test_official_stage1_tsv_file_loads(tmp_path):
    """A random-weight file in the exact stage-1 layout (with DDP prefix) loads strictly via the API."""
    shapes = tsv("encoder_stage1.tsv")
    sd = random_sd(shapes)
    p = tmp_path / "model.safetensors"
    save_file({"module." + k: v for k, v in sd.items()}, str(p))
    m = load_checkpoint(p)
    assert m.decoder is None and m.height == 288
    w = m.encoder.blocks[3].attn.qkv.weight
    assert torch.equal(w, sd["model.encoder.transformer_encoder.transformer.resblocks.3.attn.packed_proj.weight"])
    assert torch.equal(m.encoder.heads.position.log_std.bias, sd["model.predictor.mix_layer.xyz_static_scale.bias"])


def test_models_build_on_a_device_context():
    """Loaders build CUDA models directly on the GPU (``building_on``: no seconds of CPU random init that the
    file overwrites). That needs constructors that only use factory defaults: checked here with the meta
    device, which fails on the same mixed-device operations and on host reads."""
    from streamsplat_ns.depth.depth_anything import DepthAnythingConfig, DepthAnythingV2
    from streamsplat_ns.networks import ModelConfig, StreamSplat
    from streamsplat_ns.networks.checkpoint import building_on

    with torch.device("meta"):
        models = [StreamSplat.from_config(c) for c in (ModelConfig.tiny(), ModelConfig.paper())]
        models += [DepthAnythingV2(DepthAnythingConfig.of(e)) for e in ("tiny", "vits", "vitl")]
    for m in models:
        assert all(p.is_meta for p in m.parameters()), type(m).__name__
    with building_on("cpu"):  # a no-op off CUDA
        assert torch.empty(1).device.type == "cpu"
