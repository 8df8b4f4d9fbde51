"""Depth Anything V2: official key layout, strict local loading, the streamsplat-depth CLI."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from streamsplat_ns.depth.depth_anything import (
    DepthAnythingConfig,
    DepthAnythingV2,
    load_depth_anything,
    predict_disparity,
    target_size,
)

LAYOUT = Path("/work/shared/reference/official_layout")


@pytest.mark.parametrize("enc", ["vits", "vitb", "vitl"])
def test_state_dict_matches_official_layout(enc):
    tsv = LAYOUT / f"depth_anything_v2_{enc}.tsv"
    if not tsv.is_file():
        pytest.skip("official layout files not available")
    ref = {ln.split("\t")[0]: ln.split("\t")[1] for ln in tsv.read_text().splitlines()}
    with torch.device("meta"):
        sd = DepthAnythingV2(DepthAnythingConfig.of(enc)).state_dict()
    assert set(sd) == set(ref)
    assert all(str(list(sd[k].shape)) == ref[k] for k in ref)


def test_strict_load_and_clear_errors(tmp_path):
    torch.manual_seed(0)
    m = DepthAnythingV2(DepthAnythingConfig.of("tiny"))
    p = tmp_path / "depth_anything_v2_tiny.pth"
    torch.save(m.state_dict(), p)
    m2 = load_depth_anything(p, "tiny")
    x = torch.rand(2, 3, 42, 70)
    assert torch.allclose(m.eval()(x), m2(x))
    sd = m.state_dict()
    sd.pop("depth_head.scratch.output_conv2.2.bias")
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="output_conv2.2.bias"):
        load_depth_anything(tmp_path / "bad.pth", "tiny")
    with pytest.raises(FileNotFoundError, match="never|Nothing is downloaded"):
        load_depth_anything(tmp_path / "missing_vitl.pth")


def test_predict_disparity_shapes():
    assert target_size(480, 854) == (518, 924) and target_size(288, 512) == (518, 924)
    m = DepthAnythingV2(DepthAnythingConfig.of("tiny")).eval()
    for mode in ("streamsplat", "official"):
        d = predict_disparity(m, torch.rand(1, 3, 20, 36), mode, short_side=28)
        assert d.shape == (1, 20, 36) and (d >= 0).all()


def test_depth_cli_davis_resumable(tmp_path):
    from streamsplat_ns.cli.depth import DepthArgs, main
    from streamsplat_ns.data import davis
    from streamsplat_ns.data import testing as fx
    from streamsplat_ns.data.depth_io import read_sidecar

    root = fx.write_davis(tmp_path / "D", {"a": 3, "b": 2})
    for f in (root / "depthImages").rglob("*.png"):
        f.unlink()
    ck = tmp_path / "depth_anything_v2_tiny.pth"
    torch.save(DepthAnythingV2(DepthAnythingConfig.of("tiny")).state_dict(), ck)
    args = DepthArgs(dataset="davis", data=root, checkpoint=ck, short_side=28, batch_size=2, device="cpu", workers=1)
    assert main(args) == 5
    p = root / "depthImages" / "480p" / "a" / "00001_pred.png"
    assert np.array(Image.open(p)).dtype == np.uint16
    meta = read_sidecar(root / "depthImages")
    assert meta["encoder"] == "tiny" and meta["dtype"] == "uint16" and len(meta["checkpoint_sha256"]) == 64
    assert main(args) == 0  # resumable: everything is done
    p.unlink()
    assert main(args) == 1
    assert davis.discover(root, "train")[0].load([0, 1], (8, 12)).disparity.shape == (2, 1, 8, 12)


def test_depth_cli_video_and_re10k(tmp_path):
    from streamsplat_ns.cli.depth import DepthArgs, main
    from streamsplat_ns.data import re10k, video
    from streamsplat_ns.data import testing as fx

    ck = tmp_path / "depth_anything_v2_tiny.pth"
    torch.save(DepthAnythingV2(DepthAnythingConfig.of("tiny")).state_dict(), ck)
    vid = fx.write_video(tmp_path / "v.mp4", n=6)
    common = dict(checkpoint=ck, short_side=28, device="cpu", workers=1)
    assert main(DepthArgs(dataset="video", data=vid, **common)) == 6
    video.discover(vid)[0].check()  # depth now found at the default <parent>/<name>_depth
    fx.write_re10k_chunks(tmp_path / "R", [{"a" * 16: 3, "b" * 16: 2}], depth=None)
    assert main(DepthArgs(dataset="re10k", data=tmp_path / "R", split=("train",), **common)) == 5
    s = re10k.discover(tmp_path / "R", "train")[1]
    assert s.load_depth_stack().dtype == np.uint16 and s.load([1], (8, 8)).disparity.shape == (1, 1, 8, 8)
    assert main(DepthArgs(dataset="re10k", data=tmp_path / "R", split=("train",), **common)) == 0


# ------------------------------------------------------------------ the fast path (streamsplat_ns.inference.depth)
def _varied(enc, seed=0):
    """Random official-layout DA-V2 whose output varies with the input (random heads give ~constant maps)."""
    torch.manual_seed(seed)
    m = DepthAnythingV2(DepthAnythingConfig.of(enc)).eval()
    if enc == "tiny":
        for p in m.parameters():
            p.data.add_(torch.randn_like(p) * 0.05)
    last = m.depth_head.scratch.output_conv2[2]
    last.weight.data.mul_(100)
    last.bias.data.fill_(1.0)
    return m


def _rel(a, ref):
    """(max |a - ref| / range of ref, std(a - ref) / std(ref))"""
    return ((a - ref).abs().max() / (ref.max() - ref.min())).item(), ((a - ref).std() / ref.std()).item()


def test_fast_depth_eager_is_predict_disparity():
    from streamsplat_ns.inference.depth import DepthInference

    m = _varied("tiny")
    u8 = torch.randint(0, 256, (2, 30, 40, 3), dtype=torch.uint8).permute(0, 3, 1, 2)  # HWC frames, as decoded
    for mode in ("streamsplat", "official"):
        ref = predict_disparity(m, u8.float() / 255, mode, short_side=28, out_size=(16, 20))
        e = DepthInference(m, dtype=None, cuda_graph=False, preprocess=mode, short_side=28, out_size=(16, 20))
        assert e.dtype == torch.float32 and not e.cuda_graph
        assert torch.equal(e(u8)[:, 0], ref) and torch.equal(e(u8.float() / 255)[:, 0], ref)
        own = DepthInference(m, dtype=None, preprocess=mode, short_side=28)(u8)  # default: the network's size
        assert own.shape == (2, 1, *target_size(30, 40, 28)) == (2, 1, 28, 42)
    buf = torch.empty(2, 1, 16, 20)
    assert e(u8, out=buf) is buf and torch.equal(buf[:, 0], ref)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\].*permute"):
        e(u8[0].permute(1, 2, 0))
    with pytest.raises(ValueError, match="uint8.*float"):
        e(u8.int())
    with pytest.raises(ValueError, match="meta.*to\\('cpu'\\)"):
        e(torch.empty(1, 3, 30, 40, device="meta"))


def test_fast_depth_bf16_sdpa_matches_fp32_on_cpu():
    import copy

    from streamsplat_ns.inference import depth as fast

    m = _varied("tiny")
    x = torch.randint(0, 256, (2, 3, 30, 40), dtype=torch.uint8)
    ref = predict_disparity(m, x, short_side=28, out_size=(16, 20))
    opts = type("Opts", (), {"dtype": torch.bfloat16, "cuda_graph": True})()  # InferenceOptions.fastest() fields
    f = fast.DepthInference.from_options(copy.deepcopy(m), opts, short_side=28, out_size=(16, 20))
    assert f.dtype == torch.bfloat16 and not f.cuda_graph  # no graph on CPU
    y = f(x)[:, 0]
    assert y.dtype == torch.float32 and next(m.parameters()).dtype == torch.float32  # the copy was cast
    worst, spread = _rel(y, ref)
    assert worst < 0.03 and spread < 0.03, (worst, spread)
    assert _rel(f(x.flip(-1))[:, 0], ref)[0] > 0.1  # the comparison can tell a different input apart


def test_fast_depth_fused_dino_blocks_interpreted():
    """The fused DINOv2 path of the fast depth (Triton, run on CPU by TRITON_INTERPRET=1) against the
    unfused bf16 path and the fp32 oracle; the fused kernels must actually run."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton")
    code = r"""
import copy, torch
from test_depth import _varied, _rel
from streamsplat_ns.depth.depth_anything import predict_disparity
from streamsplat_ns.inference import kernels as K
from streamsplat_ns.inference.depth import DepthInference
m = _varied("tiny")
x = torch.randint(0, 256, (1, 3, 30, 40), dtype=torch.uint8)
ref = predict_disparity(m, x, short_side=28, out_size=(16, 20))
plain = DepthInference(copy.deepcopy(m), fused=False, short_side=28, out_size=(16, 20))(x)[:, 0]
f = DepthInference(copy.deepcopy(m), fused=True, short_side=28, out_size=(16, 20))
calls = []
orig = K.add_layernorm
K.add_layernorm = lambda *a, **k: calls.append(1) or orig(*a, **k)
fused = f(x)[:, 0]
assert len(calls) == 2 * 4 + 4, len(calls)  # 2 per block + 1 per wanted layer (tiny: 4 blocks, 4 layers)
worst, spread = _rel(fused, plain)
assert worst < 0.03 and spread < 0.03, ("vs plain bf16", worst, spread)
worst, spread = _rel(fused, ref)
assert worst < 0.03 and spread < 0.03, ("vs fp32", worst, spread)
print("OK")
"""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.getcwd()]))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]


@pytest.mark.gpu
@pytest.mark.parametrize("enc", ["vits", "vitl"])
def test_fast_depth_graph_matches_eager_gpu(enc):
    """bf16 + SDPA + CUDA graph on a 480x640 uint8 frame (network 518x686) against the fp32 eager oracle."""
    import copy
    import time

    from streamsplat_ns.inference.depth import DepthInference

    m = _varied(enc).cuda()
    frames = [
        torch.randint(0, 256, (1, 480, 640, 3), dtype=torch.uint8, device="cuda").permute(0, 3, 1, 2) for _ in range(2)
    ]
    timings = {}
    for fused in (True, False):
        f = DepthInference(copy.deepcopy(m), out_size=(288, 512), fused=fused)
        assert f.cuda_graph and f.dtype == torch.bfloat16
        for x in frames + frames[::-1]:  # replays see the new input each time
            ref = predict_disparity(m, x, out_size=(288, 512))
            worst, spread = _rel(f(x)[:, 0], ref)
            assert worst < 0.08 and spread < 0.08, (enc, fused, worst, spread)
        assert len(f._graphs) == 1
        buf = torch.empty(1, 1, 288, 512, device="cuda")
        f(frames[0], out=buf)
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        t = time.perf_counter()
        for _ in range(20):
            f(frames[1], out=buf)
        torch.cuda.synchronize()
        timings[fused] = (time.perf_counter() - t) / 20 * 1e3
        assert torch.cuda.memory_allocated() == before  # replays allocate nothing
        f.close()
        assert not f._graphs
        del f
    print(
        f"DA-V2 {enc} bf16 graph, 480x640 -> 518x686 -> 288x512: {timings[True]:.2f} ms/frame fused DINOv2 "
        f"blocks, {timings[False]:.2f} ms/frame unfused"
    )
