"""Our DINOv2 module: official hub / Depth-Anything-V2 key layouts, strict local loading, pos-embed
interpolation variants, token order, intermediate layers."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from streamsplat_ns.networks import DinoConfig, DinoVisionTransformer

LAYOUT = Path(__file__).resolve().parents[1] / "shared" / "reference" / "official_layout"
if not LAYOUT.is_dir():
    LAYOUT = Path("/work/shared/reference/official_layout")


def tsv(name):
    rows = [l.split("\t") for l in (LAYOUT / name).read_text().splitlines() if l.strip()]
    return {r[0]: tuple(int(s) for s in r[1].strip("[]").split(",") if s.strip()) for r in rows}


def meta_shapes(cfg):
    with torch.device("meta"):
        m = DinoVisionTransformer(cfg)
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


@pytest.mark.skipif(not LAYOUT.is_dir(), reason="official layout files not available")
def test_official_hub_layout_vitb14_reg():
    ours = meta_shapes(DinoConfig.vit("b", registers=4))
    ref = tsv("dinov2_vitb14_reg.tsv")
    ours.pop("mask_token")  # the hub file has it; StreamSplat's copy drops it before loading
    assert ours == ref


@pytest.mark.skipif(not LAYOUT.is_dir(), reason="official layout files not available")
@pytest.mark.parametrize("size", ["s", "b", "l"])
def test_depth_anything_backbone_layout(size):
    ref = {
        k[len("pretrained.") :]: v
        for k, v in tsv(f"depth_anything_v2_vit{size}.tsv").items()
        if k.startswith("pretrained.")
    }
    assert meta_shapes(DinoConfig.vit(size, registers=0, interpolate_offset=0.1, interpolate_antialias=False)) == ref


def tiny(**kw):
    torch.manual_seed(0)
    m = DinoVisionTransformer(
        DinoConfig(**{**dict(embed_dim=32, depth=3, num_heads=2, img_size=56, num_register_tokens=4), **kw})
    )
    for p in m.parameters():  # non-trivial values everywhere (cls / registers start near zero)
        p.data.normal_(0, 0.2)
    return m.eval()


def test_load_pretrained_strict(tmp_path):
    m = tiny()
    sd = m.state_dict()
    p = tmp_path / "hub.pth"
    torch.save(sd, p)
    m2 = tiny(layerscale_init=0.5)
    m2.load_pretrained(p)
    x = torch.rand(1, 3, 28, 56)
    assert torch.equal(m(x), m2(x))
    # without mask_token (StreamSplat's stored copy) is fine
    sd2 = {k: v for k, v in sd.items() if k != "mask_token"}
    torch.save(sd2, p)
    m2.load_pretrained(p)
    # a wrong layout names the keys
    torch.save({**sd2, "extra.weight": torch.zeros(1)}, p)
    with pytest.raises(ValueError, match="extra.weight"):
        m2.load_pretrained(p)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        m2.load_pretrained(tmp_path / "nowhere.pth")
    # Depth Anything's "pretrained." prefix
    torch.save({"pretrained." + k: v for k, v in sd.items()} | {"depth_head.x": torch.zeros(1)}, p)
    m2.load_pretrained(p, prefix="pretrained.")


def test_token_order_and_registers():
    m = tiny()
    x = torch.rand(2, 3, 28, 56)
    f = m.forward_features(x)
    assert f["x_norm_clstoken"].shape == (2, 32) and f["x_norm_regtokens"].shape == (2, 4, 32)
    assert f["x_norm_patchtokens"].shape == (2, 8, 32)
    t = m.prepare_tokens(x)
    assert t.shape == (2, 1 + 4 + 8, 32)
    # registers are inserted after the position embedding: they equal the raw register tokens
    assert torch.equal(t[0, 1:5], m.register_tokens[0])
    pe = m.interpolate_pos_encoding(2, 4, torch.float32)
    assert torch.allclose(t[0, 0], m.cls_token[0, 0] + pe[0, 0])


def test_pos_embed_interpolation_variants():
    m = tiny()
    grid = m.pos_embed[:, 1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
    # offset 0 + antialias: same as size=(h, w)
    pe = m.interpolate_pos_encoding(2, 3, torch.float32)
    ref = F.interpolate(grid, size=(2, 3), mode="bicubic", antialias=True)
    assert torch.allclose(pe[0, 1:], ref.permute(0, 2, 3, 1).reshape(6, 32), atol=1e-6)
    # Depth Anything: offset 0.1, no antialias -> scale_factor of (h + 0.1) / M
    m2 = tiny(interpolate_offset=0.1, interpolate_antialias=False)
    pe2 = m2.interpolate_pos_encoding(2, 3, torch.float32)
    ref2 = F.interpolate(
        m2.pos_embed[:, 1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2), mode="bicubic", scale_factor=(2.1 / 4, 3.1 / 4)
    )
    assert torch.allclose(pe2[0, 1:], ref2.permute(0, 2, 3, 1).reshape(6, 32), atol=1e-6)
    assert not torch.allclose(pe2[0, 1:], pe[0, 1:])
    # the native grid is used unchanged
    assert torch.equal(m2.interpolate_pos_encoding(4, 4, torch.float32), m2.pos_embed)


def test_block_matches_reference_math():
    m = tiny(num_register_tokens=0)
    blk = m.blocks[0]
    x = torch.randn(1, 5, 32)
    h = F.layer_norm(x, (32,), blk.norm1.weight, blk.norm1.bias, 1e-6)
    q, k, v = (h @ blk.attn.qkv.weight.T + blk.attn.qkv.bias).split(32, -1)
    q, k, v = (t.view(1, 5, 2, 16).transpose(1, 2) for t in (q, k, v))
    a = torch.softmax(q @ k.transpose(-1, -2) * 16**-0.5, -1) @ v
    x1 = x + blk.ls1.gamma * (a.transpose(1, 2).reshape(1, 5, 32) @ blk.attn.proj.weight.T + blk.attn.proj.bias)
    h2 = F.layer_norm(x1, (32,), blk.norm2.weight, blk.norm2.bias, 1e-6)
    mlp = F.gelu(h2 @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias) @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias
    assert torch.allclose(blk(x), x1 + blk.ls2.gamma * mlp, atol=1e-5)


def test_get_intermediate_layers():
    m = tiny(num_register_tokens=0)
    x = torch.rand(2, 3, 28, 42)
    outs = m.get_intermediate_layers(x, [0, 2], return_class_token=True)
    assert len(outs) == 2 and outs[0][0].shape == (2, 6, 32) and outs[0][1].shape == (2, 32)
    last = m.get_intermediate_layers(x, 1)[0]
    assert torch.allclose(last, m.forward_features(x)["x_norm_patchtokens"], atol=1e-6)
    r = m.get_intermediate_layers(x, 2, reshape=True)
    assert r[0].shape == (2, 32, 2, 3)
    with pytest.raises(ValueError):
        m.get_intermediate_layers(x, [5])
