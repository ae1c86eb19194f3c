import os

import pytest
import torch
from torch import nn

from vidgan_cli.config import ConfigError
from vidgan_cli.train import checkpoint as ck


def test_atomic_save_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "checkpoints" / "last.ckpt"
    ck.atomic_save({"step": 1, "w": torch.ones(2)}, target)
    ck.atomic_save({"step": 2, "w": torch.zeros(2)}, target)
    assert torch.load(target, weights_only=True)["step"] == 2
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_failed_save_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    ck.atomic_save({"step": 1}, target)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ck.atomic_save({"step": 2}, target)
    assert torch.load(target, weights_only=True)["step"] == 1
    assert os.listdir(tmp_path) == ["last.ckpt"]


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        ck.load_checkpoint(tmp_path / "missing.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable vidgan checkpoint"):
        ck.load_checkpoint(junk)
    torch.save({"step": 1}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="missing"):
        ck.load_checkpoint(tmp_path / "other.ckpt")


def test_only_vidgan_classes_are_built():
    with pytest.raises(ConfigError, match="only classes under vidgan_cli"):
        ck.build_module("os.system", {})


def test_load_matching_reports_shape_and_name_differences():
    src = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).state_dict()
    dst = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 5))
    loaded, skipped = ck.load_matching(dst, {**src, "extra": torch.zeros(1)})
    assert loaded == ["0.weight", "0.bias"]
    assert any("1.weight (shape (2, 4) -> (5, 4))" in s for s in skipped)
    assert any(s.startswith("extra (not in this model)") for s in skipped)
    assert torch.equal(dst[0].weight, src["0.weight"])


def test_find_latest_prefers_newest(tmp_path):
    old = tmp_path / "a" / "checkpoints" / "last.ckpt"
    new = tmp_path / "b" / "0" / "checkpoints" / "last.ckpt"
    for i, p in enumerate((old, new)):
        p.parent.mkdir(parents=True)
        p.write_bytes(b"x")
        os.utime(p, (1000 + i, 1000 + i))
    assert ck.find_latest(tmp_path) == new
    assert ck.find_latest(tmp_path / "nothing") is None


def test_unwrap_strips_compile_wrapper():
    lin = nn.Linear(2, 2)
    assert ck.unwrap(torch.compile(lin)) is lin
    assert list(ck.unwrap(torch.compile(lin)).state_dict()) == ["weight", "bias"]
