"""The inference package: options presets, prepare() (plain networks for training, fused classes for
inference, eager a no-op), and the on-disk kernel-choice cache (written once, read by a second process
without timing, corrupt or stale files warned about and rewritten)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from streamsplat_ns.inference import InferenceOptions, default_cache_dir, prepare
from streamsplat_ns.networks import ModelConfig, StreamSplat


@pytest.fixture()
def tiny():
    torch.manual_seed(0)
    return StreamSplat.from_config(ModelConfig.tiny()).eval()


def test_option_presets(tmp_path, monkeypatch):
    f = InferenceOptions.fastest()
    assert f.dtype == torch.bfloat16 and f.fused and f.cuda_graph and f.overlap
    assert f.use_fused_silu and f.use_fused_mlp and f.use_fused_heads and not f.is_eager()
    e = InferenceOptions.eager()
    assert e.dtype is None and not e.fused and not e.cuda_graph and e.is_eager()
    assert not (e.use_fused_silu or e.use_fused_mlp or e.use_fused_heads)
    assert InferenceOptions.default_for("cuda") == f and InferenceOptions.default_for(torch.device("cpu")) == e
    assert f.replace(fused_heads=False).use_fused_heads is False and f.replace(fused_heads=False).use_fused_silu
    monkeypatch.setenv("STREAMSPLAT_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c" and e.resolved_cache_dir == tmp_path / "c"
    monkeypatch.delenv("STREAMSPLAT_CACHE_DIR")
    assert default_cache_dir().parts[-2:] == (".cache", "streamsplat")
    with pytest.raises(ValueError, match="dtype"):
        InferenceOptions(dtype=torch.int8).validate()


def test_prepare_eager_is_a_noop_and_networks_stay_plain(tiny):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    classes = {n: type(m) for n, m in tiny.named_modules()}
    assert prepare(tiny, InferenceOptions.eager()) is tiny and prepare(tiny, None) is tiny
    assert {n: type(m) for n, m in tiny.named_modules()} == classes
    assert all(torch.equal(v, tiny.state_dict()[k]) for k, v in before.items())
    assert not any(n.startswith("Fast") or n == "FusedStack" for n in (c.__name__ for c in classes.values()))
    # no inference switch is left on the plain modules
    for m in tiny.modules():
        assert not any(a in vars(m) for a in ("fused", "fused_norm", "_inference")), type(m)


def test_prepare_installs_and_removes_inference_classes(tiny):
    from streamsplat_ns.inference.modules import FastBlock, FastDino, FastDynamicDecoder, FastMLP, FusedStack
    from streamsplat_ns.networks.layers import MLP, Block

    keys = list(tiny.state_dict())
    prepare(tiny, InferenceOptions.fastest())
    assert isinstance(tiny.encoder.blocks, FusedStack) and isinstance(tiny.decoder.blocks, FusedStack)
    assert isinstance(tiny.encoder.blocks[0], FastBlock) and isinstance(tiny.encoder.blocks[0].mlp, FastMLP)
    assert isinstance(tiny.dino.model, FastDino) and isinstance(tiny.decoder, FastDynamicDecoder)
    assert tiny.encoder.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert tiny.encoder.norm_out.weight.dtype == torch.float32  # norms and heads stay fp32
    assert tiny.decoder.heads.velocity[0].weight.dtype == torch.float32
    assert list(tiny.state_dict()) == keys  # checkpoints load / save as before
    prepare(tiny, InferenceOptions.fastest())  # idempotent
    # sub-switches: only fc1 + SiLU
    prepare(tiny, InferenceOptions(dtype=torch.bfloat16, fused_silu=True))
    assert type(tiny.encoder.blocks[0]) is Block and type(tiny.encoder.blocks) is torch.nn.ModuleList
    assert isinstance(tiny.encoder.blocks[0].mlp, FastMLP)
    prepare(tiny, InferenceOptions.eager())
    assert type(tiny.encoder.blocks[0].mlp) is MLP and tiny.encoder.blocks[0].attn.qkv.weight.dtype == torch.float32
    assert not hasattr(tiny, "_inference_options")


def test_prepared_model_trains_on_the_plain_path(tiny, monkeypatch):
    """With grad enabled the fused classes run the plain modules' forward (training never sees them).
    Triton is told CPU tensors are fine but the interpreter is off, so a fused call would fail here."""
    pytest.importorskip("triton")
    from streamsplat_ns.inference import kernels

    g = torch.Generator().manual_seed(1)
    rgb, d = torch.rand(1, 3, 32, 64, generator=g), torch.rand(1, 1, 32, 64, generator=g)
    with torch.no_grad():
        ref = tiny.predict_pair(rgb, d, rgb.flip(-1), d)
    prepare(tiny, InferenceOptions(fused=True, fused_heads=True))  # fp32 weights
    monkeypatch.setattr(kernels, "ALLOW_CPU", True)
    # the frozen DINOv2 always runs without grad (so fused once prepared): keep it plain for this check
    from streamsplat_ns.inference.modules import FastDino
    from streamsplat_ns.networks.dinov2 import DinoVisionTransformer

    monkeypatch.setattr(FastDino, "run_blocks", DinoVisionTransformer.run_blocks)
    with torch.no_grad(), pytest.raises((RuntimeError, ValueError)):  # the (unrunnable) fused path
        tiny.predict_pair(rgb, d, rgb.flip(-1), d)
    out = tiny.predict_pair(rgb, d, rgb.flip(-1), d)  # grad enabled: plain path
    assert torch.equal(out.means, ref.means) and torch.equal(out.motion, ref.motion)
    out.motion.sum().backward()
    assert tiny.decoder.blocks[0].self_attn.qkv.weight.grad is not None


# ----------------------------------------------------------------------------------------------------- cache
_CHOOSER = r"""
import json, sys, warnings
import torch
from streamsplat_ns.inference import choices
calls = []
choices.set_timer(lambda fn: calls.append(1) or {None: 3.0, (1, 2): 1.0, (3, 4): 2.0}[fn.key])
class F:
    def __init__(self, key): self.key = key
    def __call__(self): return None
ch = choices.get_choices("cpu", sys.argv[1])
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    got = [ch.choose("norm_mlp", (64, 48, 192, "torch.bfloat16"), F(None), {c: F(c) for c in ((1, 2), (3, 4))}),
           ch.choose("linear_silu", (7, 8, 9), F(None), {(3, 4): F((3, 4))})]
print(json.dumps({"got": got, "timed": ch.timed, "timer_calls": len(calls), "path": str(ch.path),
                  "warnings": [str(x.message) for x in w]}))
"""


def _choose_in_subprocess(cache_dir):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_CHOOSER), str(cache_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_choice_cache_written_once_and_read_by_a_second_process(tmp_path):
    first = _choose_in_subprocess(tmp_path)
    assert first["got"] == [[1, 2], [3, 4]] and first["timed"] == 2 and first["timer_calls"] > 0
    assert not first["warnings"]
    path = first["path"]
    assert os.path.dirname(path) == str(tmp_path) and path.endswith(".json")
    doc = json.loads(open(path).read())
    assert doc["format"] == 1 and doc["env"]["torch"] == torch.__version__ and len(doc["choices"]) == 2
    stat = os.stat(path)
    second = _choose_in_subprocess(tmp_path)
    assert second["got"] == first["got"] and second["timed"] == 0 and second["timer_calls"] == 0
    assert not second["warnings"]
    assert os.stat(path).st_mtime_ns == stat.st_mtime_ns  # read, not rewritten
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]  # atomic writes leave no temporaries


class _Fn:
    def __init__(self, key):
        self.key = key

    def __call__(self):
        return None


def _choose_here(cache_dir):
    """The same two choices as the subprocess, in this process with a fresh (empty) in-memory state."""
    from streamsplat_ns.inference.choices import KernelChoices

    ms = {None: 3.0, (1, 2): 1.0, (3, 4): 2.0}
    ch = KernelChoices(torch.device("cpu"), cache_dir, timer=lambda fn: ms[fn.key])
    got = [
        ch.choose("norm_mlp", (64, 48, 192, "torch.bfloat16"), _Fn(None), {c: _Fn(c) for c in ((1, 2), (3, 4))}),
        ch.choose("linear_silu", (7, 8, 9), _Fn(None), {(3, 4): _Fn((3, 4))}),
    ]
    return ch, got


@pytest.mark.parametrize("damage", ["corrupt", "stale_env", "old_format", "unknown_config"])
def test_choice_cache_damaged_file_is_ignored_with_a_warning(tmp_path, damage):
    ch, _ = _choose_here(tmp_path)
    path = ch.path
    doc = json.loads(path.read_text())
    if damage == "corrupt":
        path.write_text('{"format": 1, "env": {"to')
    elif damage == "stale_env":
        doc["env"]["driver"] = "some other driver"
        path.write_text(json.dumps(doc))
    elif damage == "old_format":
        doc["format"] = 0
        path.write_text(json.dumps(doc))
    else:
        doc["choices"] = {k: [9, 9] for k in doc["choices"]}
        path.write_text(json.dumps(doc))
    with pytest.warns(RuntimeWarning, match=str(path).replace(".", "[.]")):
        again, got = _choose_here(tmp_path)
    assert got == [(1, 2), (3, 4)] and again.timed == 2  # timed again, same decisions
    fixed = json.loads(path.read_text())  # rewritten, valid again
    assert fixed["format"] == 1 and len(fixed["choices"]) == 2 and [9, 9] not in fixed["choices"].values()
    assert _choose_here(tmp_path)[0].timed == 0


def test_packaged_tuned_choices_serve_a_fresh_machine_of_the_same_environment(tmp_path, monkeypatch):
    """A packaged table (a copied cache file) is used by a process with an empty cache only when its
    environment is this one (another driver is fine; another Triton is not); it can be turned off, and a
    damaged table is skipped with a warning."""
    from streamsplat_ns.inference import choices

    ch, _ = _choose_here(tmp_path / "measured")
    doc = json.loads(ch.path.read_text())
    key = next(k for k in doc["choices"] if k.startswith("norm_mlp"))
    doc["choices"][key] = [3, 4]  # not what this timer would pick: proves the table decided
    tuned = tmp_path / "tuned"
    tuned.mkdir()
    (tuned / "h.json").write_text(json.dumps(doc))
    monkeypatch.setattr(choices, "TUNED_DIR", tuned)
    monkeypatch.setattr(choices, "_TUNED", {})
    fresh, got = _choose_here(tmp_path / "fresh")
    assert got == [(3, 4), (3, 4)] and fresh.timed == 0 and fresh.packaged == 2
    monkeypatch.setenv("STREAMSPLAT_TUNED_CHOICES", "0")
    off, got = _choose_here(tmp_path / "off")
    assert got == [(1, 2), (3, 4)] and off.timed == 2
    monkeypatch.delenv("STREAMSPLAT_TUNED_CHOICES")
    doc["env"]["driver"] = "another driver"
    (tuned / "h.json").write_text(json.dumps(doc))
    monkeypatch.setattr(choices, "_TUNED", {})
    driver, got = _choose_here(tmp_path / "driver")
    assert got == [(3, 4), (3, 4)] and driver.timed == 0
    doc["env"]["triton"] = "another triton"
    (tuned / "h.json").write_text(json.dumps(doc))
    (tuned / "bad.json").write_text("{not json")
    monkeypatch.setattr(choices, "_TUNED", {})
    with pytest.warns(UserWarning, match="bad.json"):
        other, got = _choose_here(tmp_path / "other")
    assert got == [(1, 2), (3, 4)] and other.timed == 2


def test_choice_cache_unwritable_folder_still_chooses(tmp_path):
    """A cache folder that cannot be written (here: a file in its place) costs the persistence only."""
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    ch, got = _choose_here(blocker / "sub")
    assert got == [(1, 2), (3, 4)] and ch.timed == 2


_GPU_STREAM = r"""
import json, sys
import torch
from streamsplat_ns.inference import InferenceOptions, choices
from streamsplat_ns.networks import ModelConfig, StreamSplat
from streamsplat_ns.streaming import StreamingSession
torch.manual_seed(0)
m = StreamSplat.from_config(ModelConfig.tiny()).cuda().eval()
g = torch.Generator(device="cuda").manual_seed(0)
with StreamingSession(m, InferenceOptions.fastest().replace(cache_dir=sys.argv[1])) as s:
    outs = [s.push(torch.rand(3, 32, 64, device="cuda", generator=g), torch.rand(1, 32, 64, device="cuda",
                   generator=g) + 1) for _ in range(4)]
torch.cuda.synchronize()
print(json.dumps({"timed": sum(c.timed for c in choices._REGISTRY.values()),
                  "means": outs[-1].means.flatten()[:64].tolist()}))
"""


@pytest.mark.gpu
def test_gpu_second_process_reads_the_kernel_choices(tmp_path):
    """On CUDA, the fastest options time kernel choices in the first process only: a second process
    streaming the same shapes reads them from the cache folder and gives the same Gaussians."""
    env = dict(os.environ, PYTHONPATH=os.getcwd())

    def run():
        r = subprocess.run(
            [sys.executable, "-c", _GPU_STREAM, str(tmp_path)], env=env, capture_output=True, text=True, timeout=600
        )
        assert r.returncode == 0, r.stderr[-3000:]
        return json.loads(r.stdout.strip().splitlines()[-1])

    first, second = run(), run()
    assert first["timed"] > 0 and second["timed"] == 0, (first["timed"], second["timed"])
    assert len(list(tmp_path.glob("kernel_choices-*.json"))) == 1
    assert max(abs(a - b) for a, b in zip(first["means"], second["means"])) < 1e-5


def test_nested_choice_while_timing_does_not_deadlock(tmp_path):
    """Timing the norm + MLP candidates runs the plain MLP, whose fc1 + SiLU is itself a choice: the
    nested choose() on the same thread must not wait on the outer one (this hung the fast path on the GPU)."""
    import threading

    from streamsplat_ns.inference.choices import KernelChoices

    ch = KernelChoices(torch.device("cpu"), tmp_path, timer=lambda fn: fn() or 1.0)
    inner = []

    def outer_eager():  # like add_norm_mlp's eager candidate calling the MLP module
        inner.append(ch.choose("linear_silu", (5, 6, 7), lambda: None, {(1, 1): lambda: None}))

    result = {}
    t = threading.Thread(
        target=lambda: result.setdefault("v", ch.choose("norm_mlp", (1, 2, 3), outer_eager, {(2, 2): lambda: None})),
        daemon=True,
    )
    t.start()
    t.join(timeout=20)
    assert not t.is_alive(), "nested kernel choice deadlocked"
    assert "v" in result and inner, "the nested choice was never made"


def test_choice_seconds_count_nested_choices_once(tmp_path):
    """``KernelChoices.seconds`` (reported in the engine's stats as a fresh machine's warm-up cost) is the
    wall clock of the outermost timings: a choice made while timing another is inside its parent's time."""
    import time as _time

    from streamsplat_ns.inference.choices import KernelChoices

    def slow():
        _time.sleep(0.05)

    ch = KernelChoices(torch.device("cpu"), tmp_path, timer=lambda fn: fn() or 1.0)

    def outer_eager():
        ch.choose("linear_silu", (5, 6, 7), slow, {(1, 1): slow})

    t = _time.perf_counter()
    ch.choose("norm_mlp", (1, 2, 3), outer_eager, {(2, 2): slow})
    wall = _time.perf_counter() - t
    assert ch.timed == 2
    assert 0.05 < ch.seconds <= wall + 1e-3  # the nested choice's sleeps are not counted twice
    again = KernelChoices(torch.device("cpu"), tmp_path)
    assert again.choose("norm_mlp", (1, 2, 3), slow, {(2, 2): slow}) is None
    assert again.timed == 0 and again.seconds == 0.0  # read from the file: nothing timed
