"""streamsplat-demo, the demo-weights recipe (experiments/demo_weights.py) and EncoderConfig.pixel_skip."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from streamsplat_ns.networks.checkpoint import load_checkpoint, read_tensors, save_checkpoint
from streamsplat_ns.networks.config import DecoderConfig, EncoderConfig, UpsamplerConfig
from streamsplat_ns.networks.model import StreamSplat

ROOT = Path(__file__).resolve().parents[1]


def _recipe():
    spec = importlib.util.spec_from_file_location("demo_weights", ROOT / "experiments" / "demo_weights.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["demo_weights"] = mod  # its process-pool workers are pickled by module name
    spec.loader.exec_module(mod)
    return mod


def _tiny_pixel_skip_model(seed: int = 0) -> StreamSplat:
    torch.manual_seed(seed)
    up = UpsamplerConfig(stages=3, window_size=64, min_width=16, head_dim=16)
    return StreamSplat(EncoderConfig.tiny(pixel_skip=8, upsampler=up), DecoderConfig.tiny(upsampler=up)).eval()


def _frames(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, 32, 64, generator=g), torch.rand(1, 1, 32, 64, generator=g)


def test_pixel_skip_is_off_by_default_starts_as_identity_and_is_wired():
    assert EncoderConfig().pixel_skip == 0  # paper config (the authors' checkpoints) unchanged
    plain = StreamSplat(EncoderConfig.tiny(), None)
    assert not any("pixel_skip" in k for k in plain.state_dict())
    m = _tiny_pixel_skip_model()
    enc = m.encoder
    rgb, disp = _frames()
    tokens = enc.encode_tokens(rgb, disp)
    # zero-initialised projection: at initialisation the encoder equals its token path
    torch.testing.assert_close(enc.upsample(tokens, rgb, disp), enc.upsampler(tokens))
    with pytest.raises(ValueError, match="pixel_skip"):
        enc.upsample(tokens)
    # once trained (non-zero projection) per-pixel detail reaches the features, and gradients reach the convs
    torch.nn.init.normal_(enc.pixel_skip.proj.weight, std=0.1)
    feats = enc.upsample(tokens, rgb, disp)
    assert feats.shape[1] == 32 * 64  # one Gaussian per pixel
    assert (feats - enc.upsampler(tokens)).abs().max() > 1e-3
    feats.square().mean().backward()
    assert enc.pixel_skip.conv1.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="whole number of pixels per Gaussian"):
        EncoderConfig.tiny(pixel_skip=8, upsampler=UpsamplerConfig(stages=4, window_size=64, min_width=16, head_dim=16))


def test_fp16_export_loads_and_computes_in_fp32(tmp_path):
    m = _tiny_pixel_skip_model()
    fp32 = tmp_path / "m32.safetensors"
    save_checkpoint(m, fp32)
    size = _recipe().export_fp16(fp32, tmp_path / "m16.safetensors", {"streamsplat_ns.demo.summary": "test"})
    tensors, meta = read_tensors(tmp_path / "m16.safetensors")
    assert {v.dtype for v in tensors.values() if v.is_floating_point()} == {torch.float16}
    assert meta["streamsplat_ns.demo.summary"] == "test" and size < fp32.stat().st_size * 0.6
    m16 = load_checkpoint(tmp_path / "m16.safetensors", "cpu", allow_random_dino=True)
    assert {p.dtype for p in m16.parameters()} == {torch.float32}
    rgb, disp = _frames()
    with torch.no_grad():
        a, b = m.predict_pair(rgb, disp, rgb.flip(-1), disp), m16.predict_pair(rgb, disp, rgb.flip(-1), disp)
    torch.testing.assert_close(b.means, a.means, atol=2e-3, rtol=0)
    torch.testing.assert_close(b.colours, a.colours, atol=2e-3, rtol=0)
    torch.testing.assert_close(b.motion, a.motion, atol=2e-3, rtol=0)


def test_recipe_holds_out_the_embedded_sample(tmp_path):
    from streamsplat_ns.data.sample import ensure_sample

    rec = _recipe()
    recipe = rec.make_data(tmp_path / "data", 4, 2)
    assert rec.HELD_OUT_SEED not in recipe["train_seeds"]
    sets = tmp_path / "data" / "ImageSets" / "2017"
    train, val = sets.joinpath("train.txt").read_text().split(), sets.joinpath("val.txt").read_text().split()
    assert len(train) == 4 and not set(train) & set(val) and all(n.startswith("heldout") for n in val)
    # the held-out split is exactly the embedded sample (what the demo reconstructs), never a training sequence
    sample = ensure_sample(tmp_path / "sample")
    ours = (tmp_path / "data" / "JPEGImages" / "480p" / val[0] / "00007.jpg").read_bytes()
    assert ours == (sample / "JPEGImages" / "480p" / "synth-00" / "00007.jpg").read_bytes()
    assert all(ours != (tmp_path / "data" / "JPEGImages" / "480p" / n / "00007.jpg").read_bytes() for n in train)


def test_score_and_baselines():
    from streamsplat_ns.cli.demo import score

    gt = torch.rand(6, 8, 8, 3)
    perfect = score(gt.clone(), gt, [0, 5])
    assert perfect["psnr_key"] == perfect["psnr_middle"] == pytest.approx(100.0)
    blend = torch.stack([(1 - t / 5) * gt[0] + t / 5 * gt[5] for t in range(6)])
    s = score(blend, gt, [0, 5])
    assert s["psnr_middle"] == pytest.approx(s["psnr_middle_blend"], abs=1e-4)
    assert s["key_frames"] == 2 and s["middle_frames"] == 4


def test_demo_without_weights_says_how_to_get_them(tmp_path, monkeypatch):
    import streamsplat_ns.assets as assets
    from streamsplat_ns.cli.demo import DemoConfig, main

    monkeypatch.setattr(assets, "assets_dir", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match="experiments/demo_weights.py"):
        main(DemoConfig(output=tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="--weights"):
        main(DemoConfig(output=tmp_path / "out", weights=tmp_path / "missing.safetensors"))
    assert not (tmp_path / "out").exists()  # failed before any work


def test_demo_end_to_end_on_tiny_weights(tmp_path, capsys):
    """The whole demo on a tiny (untrained) model: outputs exist and are consistent; the numbers are not judged."""
    from PIL import Image

    from streamsplat_ns.cli.demo import DemoConfig, main
    from streamsplat_ns.live.record import is_recording

    fp32 = tmp_path / "m32.safetensors"
    save_checkpoint(_tiny_pixel_skip_model(), fp32)
    weights = tmp_path / "tiny.safetensors"
    _recipe().export_fp16(fp32, weights, {})
    out = tmp_path / "out"
    res = main(DemoConfig(output=out, weights=weights))
    text = capsys.readouterr().out
    m = res["mean"]
    assert m["key_frames"] == 6 and m["middle_frames"] == 18  # 24 frames, key frames 0 5 10 15 20 23
    for k in ("psnr_key", "psnr_middle", "psnr_middle_nearest", "psnr_middle_blend"):
        assert 5 < m[k] < 100
    assert json.loads((out / "metrics.json").read_text())["mean"] == m
    w, h = Image.open(out / "reconstruction.png").size
    assert (w, h) == (6 * 64 + 5 * 2, 3 * 32 + 2 * 2)  # 3 rows x the first interval's 6 frames
    assert (out / "interpolated.mp4").stat().st_size > 1000
    assert is_recording(out / "gaussians")
    assert f"streamsplat-view {out / 'gaussians'} --host 127.0.0.1" in text and "baseline: linear blend" in text


@pytest.mark.slow
def test_demo_weights_reconstruct_the_held_out_sample(demo_model):
    """The shipped weights on the first interval of the held-out sequence, as a regression guard of the file
    and the engine: key frames >= 33 dB and in-between frames better than repeating the nearest key frame
    (measured 35.01 / 24.18 / 23.21 with the session-6 weights). Issue 13's middle-frame target (>= blend +
    1 dB; blend 24.99 here) is not met by this file (docs/benchmarks.md); raise the bounds with the next weights."""
    from streamsplat_ns.cli.demo import evaluate_sample

    s = evaluate_sample(demo_model, "cpu", ["synth-03"], max_frames=6)["mean"]
    assert s["psnr_key"] >= 33.0, s
    assert s["psnr_middle"] > s["psnr_middle_nearest"] + 0.5, s
