"""``streamsplat-reconstruct`` over the engine (CPU, micro model): outputs, the one PLY convention, the
manifest, and clean non-zero stops on damaged input and a full disk with the finished outputs kept."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_engine import micro_model, write_clip  # noqa: E402

from streamsplat_ns.cli.reconstruct import ReconstructArgs, main  # noqa: E402
from streamsplat_ns.engine import DisparitySource, ReconstructionEngine, read_manifest  # noqa: E402
from streamsplat_ns.export import export_ply, read_ply  # noqa: E402
from streamsplat_ns.inference import InferenceOptions  # noqa: E402

av = pytest.importorskip("av")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from streamsplat_ns.api import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "micro.safetensors"
    save_checkpoint(micro_model(), path)
    return path


def count_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def make_mp4(path: Path, n: int, size=(40, 70), faststart=True) -> None:
    c = av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {})
    s = c.add_stream("libx264", rate=Fraction(30))
    s.width, s.height, s.pix_fmt = size[1], size[0], "yuv420p"
    rng = np.random.default_rng(0)
    for _ in range(n):
        for p in s.encode(av.VideoFrame.from_ndarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8), format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()


def test_cli_folder_end_to_end(tmp_path, ckpt):
    """Key frames every 2nd frame + the last; one render batch per interval; PLYs in the one convention equal
    the engine's clip reconstruction (the viewer's / export's path) for the same frames; manifest."""
    write_clip(tmp_path / "clip", n=8)
    out = tmp_path / "out"
    res = main(
        ReconstructArgs(
            input=str(tmp_path / "clip"),
            checkpoint=ckpt,
            output=out,
            frame_step=2,
            interp=2,
            ply_frames=(3.0, 6.5),
            device="cpu",
            progress=False,
            save_gaussians=True,
        )
    )
    assert res["key_frame_indices"] == [0, 2, 4, 6, 7]
    assert (res["reconstruction_frames"], res["interpolated_frames"]) == (5, 8)  # one per source frame
    assert count_frames(out / "reconstruction.mp4") == 5 and count_frames(out / "interpolated_2x.mp4") == 8
    assert sorted(p.name for p in (out / "ply").iterdir()) == ["clip_frame00003.000.ply", "clip_frame00006.500.ply"]
    m = read_manifest(out)
    assert m["status"] == "complete" and m["key_frames"] == [0, 2, 4, 6, 7] and m["num_source_frames"] == 8
    assert m["model"]["height"] == 32 and m["outputs"]["ply"][0]["frame"] == 3.0
    assert m["options"]["cuda_graph"] is False and m["disparity"]["mode"] == "file"
    assert m["gaussians"] == "gaussians" and len(list((out / "gaussians" / "intervals").iterdir())) == 4
    assert set(res["stats"]["stages_s"]) >= {"decode", "depth", "model", "render", "encode"}
    assert res["stats"]["stages_s"]["encode"] > 0 and res["stats"]["stages_s"]["render"] > 0
    # the same Gaussians through reconstruct_clip (pair of key frames 2 and 4, frame 3 = local time 0.5)
    from test_engine import _resized

    model = micro_model()
    disp = DisparitySource.files(tmp_path / "clip_depth")
    eng = ReconstructionEngine(model, options=InferenceOptions.eager())
    from PIL import Image

    rgb = torch.cat([_resized(np.array(Image.open(tmp_path / "clip" / f"{i:05d}.png")), eng.size) for i in (2, 4)])
    d = torch.stack([torch.from_numpy(disp.load(f"{i:05d}", eng.size))[None] for i in (2, 4)])
    iv = eng.reconstruct_clip(rgb, d, key_gap=2, frames=[2, 4])[0]
    export_ply(tmp_path / "ref.ply", iv.gaussians, time=iv.local_time(3.0))
    a, b = read_ply(out / "ply" / "clip_frame00003.000.ply"), read_ply(tmp_path / "ref.ply")
    assert len(a["x"]) == len(b["x"]) > 100
    for k in ("x", "y", "z", "opacity", "scale_0", "f_dc_0", "rot_1"):
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="ply-frames"):
        main(
            ReconstructArgs(
                input=str(tmp_path / "clip"),
                checkpoint=ckpt,
                output=out,
                ply_frames=(7.5,),
                device="cpu",
                progress=False,
            )
        )


def test_cli_truncated_video_finalises_and_exits_nonzero(tmp_path, ckpt, monkeypatch, caplog):
    """An mp4 cut in the middle (index at the start): the run stops where the data ends, finalises playable
    videos of the frames done, says how far it got, and the command exits non-zero."""
    from streamsplat_ns.cli import reconstruct as rc
    from streamsplat_ns.data.depth_io import write_depth_png16

    video = tmp_path / "v.mp4"
    make_mp4(video, 12)
    data = video.read_bytes()
    video.write_bytes(data[: len(data) * 6 // 10])
    (tmp_path / "v_depth").mkdir()
    rng = np.random.default_rng(1)
    for i in range(12):
        write_depth_png16(tmp_path / "v_depth" / f"{i:05d}_pred.png", rng.random((40, 70)).astype(np.float32))
    out = tmp_path / "out"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "streamsplat-reconstruct",
            str(video),
            "--checkpoint",
            str(ckpt),
            "--output",
            str(out),
            "--device",
            "cpu",
            "--no-progress",
            "--interp",
            "1",
        ],
    )
    with pytest.raises(SystemExit) as ex:
        rc.entrypoint()
    assert ex.value.code == 1
    assert "of the 12 frames the container announces" in caplog.text and "stopped early" in caplog.text
    m = read_manifest(out)
    done = m["outputs"]["reconstruction_frames"]
    assert m["status"] == "stopped" and len(m["key_frames"]) == done and "truncated" in m["error"]
    assert 2 <= done < 12 and count_frames(out / "reconstruction.mp4") == done
    assert count_frames(out / "interpolated_1x.mp4") == done
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


DISK_FULL = r"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # writes past the limit fail with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
sys.argv = ["streamsplat-reconstruct", sys.argv[1], "--checkpoint", sys.argv[2], "--output", sys.argv[3],
            "--device", "cpu", "--no-progress", "--interp", "1", "--ply-frames", "1", "--ply-frames", "2"]
from streamsplat_ns.cli.reconstruct import entrypoint
entrypoint()
"""


def test_cli_disk_full_names_the_file_and_keeps_finished_outputs(tmp_path, ckpt):
    """A file-size limit (EFBIG, as a full disk) hit by the first PLY: the error names that file, no partial
    file is left, and the videos of the frames done are finalised and playable."""
    write_clip(tmp_path / "clip", n=4)
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-c", DISK_FULL, str(tmp_path / "clip"), str(ckpt), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 1, r.stderr[-3000:]
    import re

    hit = re.search(r"ply/(clip_frame0000[12]\.000\.ply): no space left", r.stderr)
    assert hit, r.stderr[-3000:]
    assert not (out / "ply" / hit.group(1)).exists()  # no partial file under the final name ...
    for p in (out / "ply").iterdir():  # ... nor under a temporary one; a PLY finished before is whole
        assert ".tmp" not in p.name and len(read_ply(p)["x"]) > 0
    assert count_frames(out / "reconstruction.mp4") >= 1
    m = json.loads((out / "reconstruction.json").read_text())
    assert m["status"] == "stopped" and "no space left" in m["error"]


def test_reconstruct_and_live_parse_the_shared_model_arguments_alike():
    """One ModelArgs (cli/common.py) for both commands: the positional input stays first and the model/depth
    flags parse to the same values."""
    import tyro

    from streamsplat_ns.cli.common import ModelArgs
    from streamsplat_ns.cli.live import LiveArgs
    from streamsplat_ns.cli.reconstruct import ReconstructArgs

    flags = [
        "--checkpoint",
        "m.safetensors",
        "--depth",
        "compute",
        "--depth-short-side",
        "266",
        "--depth-checkpoint",
        "da.pth",
    ]
    r = tyro.cli(ReconstructArgs, args=["clip.mp4", *flags])
    live = tyro.cli(LiveArgs, args=["/dev/video0", *flags])
    assert (r.input, live.source) == ("clip.mp4", "/dev/video0")
    for name in ModelArgs.__dataclass_fields__:
        assert getattr(r, name) == getattr(live, name), name
    assert (r.checkpoint, r.depth, r.depth_short_side) == (Path("m.safetensors"), "compute", 266)


def test_cli_render_thread_writes_the_same_videos(tmp_path, ckpt, monkeypatch):
    """``--render-thread`` hands the writers pending renders (``render_async``): the same frames in the same
    order reach both videos (compared before encoding: x264 output is not bit-stable from run to run)."""
    import streamsplat_ns.engine.outputs as outputs

    write_clip(tmp_path / "clip", n=5)
    seen = {}
    write = outputs.VideoWriter.write

    def capture(self, frames, indices=None):
        seen[self.path.parent.name].append((self.path.name, frames.numpy().copy(), indices and list(indices)))
        return write(self, frames, indices)

    monkeypatch.setattr(outputs.VideoWriter, "write", capture)
    for threaded in (False, True):
        out = tmp_path / f"out_{threaded}"
        seen[out.name] = []
        res = main(
            ReconstructArgs(
                input=str(tmp_path / "clip"), checkpoint=ckpt, output=out, interp=3, device="cpu", progress=False,
                render_thread=threaded,
            )
        )  # fmt: skip
        assert (res["reconstruction_frames"], res["interpolated_frames"]) == (5, 13)
        assert count_frames(out / "interpolated_3x.mp4") == 13
    plain, threaded = seen["out_False"], seen["out_True"]
    assert len(plain) == len(threaded) == 2 * 5
    for (na, a, ia), (nb, b, ib) in zip(plain, threaded):
        assert (na, ia) == (nb, ib)
        np.testing.assert_array_equal(a, b)
