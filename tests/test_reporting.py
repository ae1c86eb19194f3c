"""What a run shows and writes besides checkpoints: header, progress lines, warnings, TensorBoard."""

import json
import sys

import pytest

from vidgan_cli.config import ConfigError
from vidgan_cli.train.trainer import Trainer


def test_header_progress_lines_and_config_tree(compose_train, tmp_path, caplog):
    caplog.set_level("INFO")
    Trainer(compose_train("trainer.max_steps=2"), tmp_path).fit()
    text = caplog.text
    assert "generator" in text and "M parameters" in text and str(tmp_path) in text
    assert "step 1/2" in text and "step 2/2" in text, "plain progress lines without a TTY"
    assert "run summary" in text and "completed" in text
    tree = (tmp_path / "config_tree.txt").read_text()
    assert "model" in tree and "max_steps: 2" in tree and "_target_" in tree


def test_warnings_are_repeated_at_the_end(compose_train, tmp_path, caplog):
    caplog.set_level("INFO")
    trainer = Trainer(compose_train("trainer.max_steps=2", "trainer.nan_policy=skip"), tmp_path)
    trainer.loss.g_loss = lambda fake, real: sum(x.sum() for x in fake) * float("nan")
    trainer.fit()
    assert "2 warning(s) during the run" in caplog.text
    assert caplog.text.count("non-finite loss or gradient, update skipped") == 4  # 2 as they happen, 2 repeated


def test_tensorboard_scalars_and_sample_grid(compose_train, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    Trainer(compose_train("logger=tensorboard", "trainer.max_steps=2", "trainer.sample_every=2"),
            tmp_path).fit()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [e.step for e in events.Scalars("d_loss")] == [1, 2]
    assert "clips_per_s" in events.Tags()["scalars"]
    (image,) = events.Images("samples")
    assert image.step == 2 and image.encoded_image_string[:3] == b"GIF"


def test_tensorboard_missing_gives_the_install_command(compose_train, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    trainer = Trainer(compose_train("logger=tensorboard"), tmp_path)
    with pytest.raises(ConfigError, match=r'pip install "vidgan\[tensorboard\]"'):
        trainer.fit()


def test_metrics_jsonl_has_one_line_per_tick(compose_train, tmp_path):
    Trainer(compose_train("trainer.max_steps=4", "trainer.log_every=2"), tmp_path).fit()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4]
    assert {"d_loss", "g_loss", "clips_per_s", "sec_per_step", "data_wait", "lr_G"} <= lines[0].keys()
    assert 0 <= lines[0]["data_wait"] <= 1


def test_class_losses_and_penalty_are_logged_when_the_run_has_them(compose_train, tmp_path):
    # rpgan: R1/R2 on every 2nd D step; log every step, so ticks alternate with and without it
    Trainer(compose_train("loss=rpgan", "loss.reg_every=2", "loss.class_weight=1.0", "trainer.max_steps=4",
                          "trainer.log_every=1"), tmp_path / "on").fit()
    lines = [json.loads(x) for x in (tmp_path / "on" / "metrics.jsonl").read_text().splitlines()]
    assert ["penalty" in x for x in lines] == [True, False, True, False]
    assert all({"d_class", "g_class"} <= x.keys() for x in lines)
    assert all(x["penalty"] > 0 for x in lines if "penalty" in x)
    # cross-entropy over 2 classes starts near log 2
    assert all(0.1 < x["d_class"] < 3 and 0.1 < x["g_class"] < 3 for x in lines)
    assert list(lines[0])[:6] == ["step", "d_loss", "g_loss", "d_class", "g_class", "penalty"]
    Trainer(compose_train("loss=hinge", "trainer.max_steps=2"), tmp_path / "off").fit()
    lines = [json.loads(x) for x in (tmp_path / "off" / "metrics.jsonl").read_text().splitlines()]
    assert not any({"d_class", "g_class", "penalty"} & x.keys() for x in lines)


def test_sample_grids_are_fixed_and_leave_the_training_rng_alone(compose_train, tmp_path, monkeypatch):
    import torch
    trainer = Trainer(compose_train("model=mocogan", "trainer.max_steps=1"), tmp_path)
    trainer.fit()  # sets up the reporter
    grids = []
    monkeypatch.setattr("vidgan_cli.generate.save_grid",
                        lambda videos, stem, **kw: grids.append(videos) or [stem.with_suffix(".mp4")])
    state = torch.get_rng_state()
    trainer.reporter.samples()
    assert torch.equal(torch.get_rng_state(), state)  # training draws what it would have drawn
    torch.manual_seed(999)  # whatever the training stream is at the next tick
    trainer.reporter.samples()
    assert torch.equal(grids[0], grids[1])  # mocogan's motion noise included
