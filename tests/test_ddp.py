"""Multi-process training on CPU: two gloo ranks through our Trainer and Pipeline (the same code path
``--machine.num-devices 2`` takes on GPUs, where nerfstudio spawns NCCL ranks)."""

import os
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, results: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from nsutil import small_config, train

    cfg = small_config(Path(out), steps=3, batch_size=1, steps_per_save=2)
    trainer = train(cfg, local_rank=rank, world_size=world)
    vec = torch.cat([p.detach().flatten() for p in trainer.pipeline.model.net.parameters()])
    it = trainer.pipeline.datamanager._new_train_iter(0)
    first = next(it)
    torch.save(
        {
            "params": vec,
            "first_frames": first["frame_ids"],
            "first_seq": first["sequence"],
            "base_dir": str(trainer.base_dir),
        },
        Path(results) / f"rank{rank}.pt",
    )
    dist.barrier()
    dist.destroy_process_group()


def test_two_gloo_ranks_train_in_sync(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "runs"), str(results)), nprocs=2, join=True)
    r0 = torch.load(results / "rank0.pt", weights_only=True)
    r1 = torch.load(results / "rank1.pt", weights_only=True)
    # each rank draws its own clips ...
    assert (r0["first_seq"], r0["first_frames"].tolist()) != (r1["first_seq"], r1["first_frames"].tolist())
    # ... yet gradients are all-reduced, so the weights stay identical
    torch.testing.assert_close(r0["params"], r1["params"], rtol=0, atol=1e-6)
    base = Path(r0["base_dir"])
    ckpts = sorted(p.name for p in (base / "nerfstudio_models").iterdir())
    assert ckpts == ["step-000000002.ckpt"]  # written once, by rank 0 (save_only_latest keeps the last)
    assert (base / "model.safetensors").is_file()
    assert not list(base.glob(".*.tmp"))
