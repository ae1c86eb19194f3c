"""Faults a cluster run meets: SIGTERM (preemption), kill -9, a full disk."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from conftest import TINY

from vidgan_cli.train.checkpoint import load_checkpoint
from vidgan_cli.train.trainer import CheckpointWriteError, Trainer

FAST = TINY + ["trainer.log_every=1", "trainer.sample_every=0"]


def start_training(run, *overrides):
    cmd = [sys.executable, "-m", "vidgan_cli", "train", *FAST, f"hydra.run.dir={run}", *overrides]
    return subprocess.Popen(cmd, cwd=run.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError("condition not reached")


def logged_steps(run):
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.endswith("}")]


@pytest.mark.slow
def test_sigterm_finishes_the_step_saves_and_exits_cleanly(tmp_path):
    run = tmp_path / "run"
    proc = start_training(run, "trainer.max_steps=100000", "trainer.save_every=100000")
    wait_for(lambda: len(logged_steps(run)) >= 3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["step"] == logged_steps(run)[-1] >= 3
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["step"] == ckpt["step"]
    assert "SIGTERM" in err


@pytest.mark.slow
def test_kill_9_at_random_points_never_leaves_a_broken_checkpoint(tmp_path):
    run = tmp_path / "run"
    rng = random.Random(0)
    for _ in range(3):
        proc = start_training(run, "trainer.max_steps=100000", "trainer.save_every=1",
                              "resume=auto")
        wait_for(lambda: (run / "checkpoints" / "last.ckpt").exists() and len(logged_steps(run)) >= 1)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.kill()
        proc.wait()
        step = load_checkpoint(run / "checkpoints" / "last.ckpt")["step"]  # loads, weights_only
        assert step >= 1
    final_step = step + 2
    proc = start_training(run, f"trainer.max_steps={final_step}", "trainer.save_every=1",
                          "resume=auto")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["step"] == final_step
    steps = logged_steps(run)
    assert steps == list(range(1, final_step + 1)), "metrics.jsonl reads as one uninterrupted run"
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["last.ckpt"]


def test_full_disk_gives_a_clear_error_and_keeps_the_previous_checkpoint(compose_train, tmp_path,
                                                                       monkeypatch):
    trainer = Trainer(compose_train("trainer.max_steps=3", "trainer.save_every=1"), tmp_path)
    import torch
    real_save = torch.save

    def save_then_fail(obj, f):
        if obj["step"] >= 2:
            raise OSError(28, "No space left on device")
        real_save(obj, f)
    monkeypatch.setattr(torch, "save", save_then_fail)
    with pytest.raises(CheckpointWriteError, match=r"last.ckpt at step 2: No space left on device"):
        trainer.fit()
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["step"] == 1
