"""DDP on the CPU with gloo: two processes stay in sync and match one process with the global batch."""

import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from conftest import TINY, compose_config

pytestmark = pytest.mark.slow
STEPS = 3
LOCAL = 8  # clips per process
OVERRIDES = TINY + [f"trainer.max_steps={STEPS}", "trainer.log_every=1", "dataset.length=64"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, overrides: list[str]) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from vidgan_cli.train.trainer import Trainer
    trainer = Trainer(compose_config("train", overrides), os.path.join(out, "run"))
    batchnorm_uses_running_stats(trainer.G)
    trainer.fit()
    # Parameters, not buffers: BatchNorm running statistics are local to each process by design.
    torch.save({"G": dict(trainer.G.named_parameters()), "D": dict(trainer.D.named_parameters())},
               os.path.join(out, f"rank{rank}.pt"))


def test_two_ranks_stay_identical_and_match_single_process(tmp_path):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path), OVERRIDES + [f"trainer.batch_size={LOCAL}"]),
             nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for net in ("G", "D"):
        for key in r0[net]:
            assert torch.equal(r0[net][key], r1[net][key]), f"{net}.{key} differs between ranks"
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()

    from vidgan_cli.train.trainer import Trainer
    torch.set_num_threads(1)
    single = Trainer(compose_config("train", OVERRIDES + [f"trainer.batch_size={2 * LOCAL}"]), tmp_path / "one")
    batchnorm_uses_running_stats(single.G)
    init = {net: dict(getattr(single, net).named_parameters()) for net in ("G", "D")}
    init = {net: {k: v.detach().clone() for k, v in params.items()} for net, params in init.items()}
    single.fit()
    # Same data, same latents and same initial weights as the two ranks together, so the same
    # parameters up to float reduction order (2 x 4 clips averaged by DDP vs 8 in one mean).
    for net in ("G", "D"):
        trained = dict(getattr(single, net).named_parameters())
        assert any(not torch.equal(trained[k], init[net][k]) for k in trained), f"{net} did not train"
        for key, value in trained.items():
            torch.testing.assert_close(r0[net][key], value, rtol=1e-4, atol=1e-6, msg=key)


def batchnorm_uses_running_stats(module: torch.nn.Module) -> None:
    """BN over each process's own clips differs from BN over the global batch on the CPU
    (SyncBatchNorm is CUDA-only); with running statistics the comparison isolates DDP itself."""
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def test_torchrun_entry_point_writes_one_run_folder(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "vidgan_cli", "train", *OVERRIDES, f"hydra.run.dir={run}"]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "train.log").is_file()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == STEPS, "only rank 0 writes metrics"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "no stray folders of rank 1"


def test_teardown_waits_for_every_rank_before_leaving_the_group(monkeypatch):
    """A rank that left the group while another still used it sometimes died at exit (SIGABRT)."""
    from vidgan_cli.train import distributed
    calls = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: calls.append("destroy"))
    distributed.teardown()
    assert calls == ["barrier", "destroy"]
