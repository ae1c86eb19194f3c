"""End-to-end through the console entry point, in subprocesses (what a user types)."""

import csv
import json

import pytest
from conftest import TINY, run_cli

pytestmark = pytest.mark.slow


def test_train_generate_resume_and_refuse_overwrite(tmp_path):
    run = tmp_path / "run"
    result = run_cli("train", *TINY, "trainer.save_every=2", f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "train.log").is_file()
    assert (run / ".hydra" / "config.yaml").is_file()

    again = run_cli("train", *TINY, f"hydra.run.dir={run}", cwd=tmp_path)
    assert again.returncode == 2 and "already holds a run" in again.stderr

    resumed = run_cli("train", *TINY, "trainer.max_steps=3", "resume=auto", f"hydra.run.dir={run}",
                      cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]

    out = tmp_path / "gen"
    gen = run_cli("generate", f"ckpt={run}/checkpoints/last.ckpt", "condition=circle",
                  "num_videos=2", "fps=4", f"out_dir={out}", cwd=tmp_path)
    assert gen.returncode == 0, gen.stderr[-3000:]
    assert sorted(p.name for p in out.glob("*.mp4")) == ["circle_000.mp4", "circle_001.mp4",
                                                         "grid.mp4"]


def test_resume_auto_from_a_new_folder_links_both_folders(tmp_path):
    first, second = tmp_path / "outputs" / "a", tmp_path / "outputs" / "b"
    done = run_cli("train", *TINY, f"hydra.run.dir={first}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = run_cli("train", *TINY, "trainer.max_steps=3", "resume=auto", f"hydra.run.dir={second}",
                      cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # the run went on in its own folder; the new one keeps this invocation's config and log
    assert [json.loads(x)["step"] for x in (first / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert not (second / "checkpoints").exists() and (second / ".hydra" / "overrides.yaml").is_file()
    assert str(first) in (second / "RESUMED_RUN.txt").read_text()
    (line,) = (first / "resumes.log").read_text().splitlines()
    assert "resumed from last.ckpt" in line and str(second) in line
    assert "resuming" in (second / "train.log").read_text()


def test_bad_input_exits_2_with_specific_messages(tmp_path):
    bad_frames = run_cli("train", *TINY, "dataset.frames=12", cwd=tmp_path)
    assert bad_frames.returncode == 2 and "dataset.frames" in bad_frames.stderr
    missing = run_cli("generate", cwd=tmp_path)
    assert missing.returncode == 2 and "generate needs ckpt=PATH" in missing.stderr
    wrong = run_cli("generate", f"ckpt={tmp_path}/none.ckpt", cwd=tmp_path)
    assert wrong.returncode == 2 and "checkpoint not found" in wrong.stderr


def test_multirun_summarises_every_job_and_survives_a_failing_one(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("train", "-m", *TINY, "loss=hinge,lsgan", "optimizer.lr=1e-4,-1",
                     f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert len(rows) == 4
    status = {row["overrides"]: row["status"] for row in rows}
    assert sum(s == "completed" for s in status.values()) == 2
    assert all(s == "failed" for o, s in status.items() if "optimizer.lr=-1" in o)
    assert all(row["g_loss"] for row in rows if row["status"] == "completed")
