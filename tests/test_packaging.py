"""A non-editable install ships the CUDA kernels: the wheel holds csrc/, and an installed copy's loader finds
them and says why it cannot build (no GPU here), never that they are missing.

The wheel is built from a copy of the package (so the repo gets no build/ folder), installed into a fresh
venv, and exercised from a directory outside the repo so the source tree cannot be imported instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CSRC = ("projection.cu", "forward.cu", "backward.cu", "bindings.cpp", "common.cuh", "rasterizer.h")


def _run(cmd, cwd, env=None, timeout=120):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    src.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    shutil.copytree(
        ROOT / "streamsplat_ns", src / "streamsplat_ns", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so")
    )
    out = tmp / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", str(out)], cwd=src
    )
    (whl,) = out.glob("streamsplat_ns-*.whl")
    return whl


def test_wheel_contains_kernel_sources(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in CSRC:
        assert f"streamsplat_ns/rendering/csrc/{f}" in names, f"{f} missing from {wheel.name}"
    # the packaged kernel-choice tables (a fresh GPU machine of a known environment skips the timing)
    tuned = {p.name for p in (ROOT / "streamsplat_ns" / "inference" / "tuned").glob("*.json")}
    assert tuned and all(f"streamsplat_ns/inference/tuned/{t}" in names for t in tuned), tuned
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "streamsplat-build-cuda = streamsplat_ns.cli.build_cuda:entrypoint" in entry_points


def test_installed_wheel_finds_sources_and_says_why_it_cannot_build(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], cwd=tmp_path)
    py = venv / "bin" / "python"
    # the system pip installs into the venv's interpreter (faster than bootstrapping pip into the venv)
    _run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-compile", "-q", str(wheel)],
        cwd=tmp_path,
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CUDA_VISIBLE_DEVICES")}
    env.update(CUDA_VISIBLE_DEVICES="", STREAMSPLAT_CACHE_DIR=str(tmp_path / "cache"))
    code = (
        "import json, streamsplat_ns\n"
        "from streamsplat_ns.rendering import _cuda\n"
        "print(json.dumps({'pkg': streamsplat_ns.__file__, 'status': _cuda.status(),"
        " 'reason': _cuda.unavailable_reason(), 'build_reason': _cuda.build_reason()}))\n"
    )
    info = json.loads(_run([str(py), "-c", code], cwd=tmp_path, env=env).strip().splitlines()[-1])
    site = venv.resolve()
    assert Path(info["pkg"]).resolve().is_relative_to(site), f"imported {info['pkg']}, not the installed copy"
    assert Path(info["status"]["sources"]).resolve().is_relative_to(site)
    assert info["status"]["missing_sources"] == []
    for reason in (info["reason"], info["build_reason"]):
        assert "no CUDA device" in reason and "missing" not in reason, reason
    # the console script is installed and reports the same
    out = _run([str(venv / "bin" / "streamsplat-build-cuda"), "--check"], cwd=tmp_path, env=env)
    check = json.loads(out[out.index("{") :])
    assert check["missing_sources"] == [] and "no CUDA device" in check["build_reason"]


@pytest.mark.gpu
def test_installed_wheel_builds_and_renders_on_gpu(wheel, tmp_path):
    """On a GPU machine: streamsplat-build-cuda from the installed wheel compiles the packaged sources into a
    fresh cache, and a render through the installed copy matches the PyTorch reference."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], cwd=tmp_path)
    py = venv / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-compile", "-q", str(wheel)],
        cwd=tmp_path,
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # dependency folders on PYTHONPATH stay (the GPU machine carries its wheels that way); the repo does not
    deps = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != ROOT]
    if deps:
        env["PYTHONPATH"] = os.pathsep.join(deps)
    env["STREAMSPLAT_CACHE_DIR"] = str(tmp_path / "cache")
    out = _run([str(venv / "bin" / "streamsplat-build-cuda")], cwd=tmp_path, env=env, timeout=600)
    assert "built streamsplat_ns_raster_sm" in out
    code = (
        "import torch, streamsplat_ns\n"
        "from streamsplat_ns.rendering import _cuda, _torch_impl, rasterize, canonical_camera\n"
        "assert _cuda.is_available(), _cuda.unavailable_reason()\n"
        "g = torch.Generator().manual_seed(0); N = 500\n"
        "means = torch.stack([torch.rand(N, generator=g) * 2 - 1, torch.rand(N, generator=g) * 3 + 0.5,"
        " torch.rand(N, generator=g) * 2 - 1], -1)\n"
        "quats = torch.randn(N, 4, generator=g); scales = torch.rand(N, 3, generator=g) * 0.05 + 0.01\n"
        "opac = torch.rand(N, generator=g); col = torch.rand(N, 3, generator=g)\n"
        "vm, K = canonical_camera(48, 64)\n"
        "args = [t.cuda() for t in (means, quats, scales, opac, col, vm[None], K[None])]\n"
        "a = rasterize(*args, 64, 48, backend='cuda').rgb\n"
        "b = rasterize(*args, 64, 48, backend='torch').rgb\n"
        "err = float((a - b).norm() / b.norm()); assert err < 1e-4, err\n"
        "ext = _cuda.load_extension(); assert str(_cuda.cache_dir()) in ext.__file__, ext.__file__\n"
        "assert streamsplat_ns.__file__.startswith(%r), streamsplat_ns.__file__\n"
        "print('ok', err)\n" % str(venv.resolve())
    )
    assert _run([str(py), "-c", code], cwd=tmp_path, env=env).strip().splitlines()[-1].startswith("ok")
