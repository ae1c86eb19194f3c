"""Composing every config group option, and the checks that run before anything is allocated."""

from pathlib import Path

import pytest
from conftest import REPO, compose_config
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from vidgan_cli.config import ConfigError, check_trusted_targets, validate_train


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["model", "loss", "optimizer", "dataset", "augment", "trainer",
                                   "logger", "experiment"])
def test_every_option_of_every_group_composes_and_validates(group, compose_train):
    assert options(group), f"conf/{group}/ has no options"
    for option in options(group):
        if group == "dataset" and option != "shapes":
            # Their required paths (root=, path=...) are checked when the dataset is built.
            cfg = compose_train(f"dataset={option}", "dataset.num_classes=0", tiny=False)
            assert cfg.model.generator.frames == cfg.dataset.frames
            continue
        cfg = compose_train(f"{group}={option}", tiny=group != "experiment")
        validate_train(cfg)


def test_model_follows_dataset_sizes(compose_train):
    cfg = compose_train("dataset.frames=16", "dataset.resolution=32", "dataset.num_classes=3")
    g = cfg.model.generator
    assert (g.frames, g.resolution, g.num_classes) == (16, 32, 3)


def test_unknown_key_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException, match="max_stpes"):
        compose_config("train", ["trainer.max_stpes=3"])


def test_wrong_type_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException, match="batch_size"):
        compose_config("train", ["trainer.batch_size=many"])


@pytest.mark.parametrize("override, message", [
    ("dataset.frames=12", r"frames"),
    ("dataset.resolution=48", r"resolution"),
    ("optimizer.lr=-1", r"optimizer.lr must be > 0"),
    ("trainer.batch_size=0", r"trainer.batch_size must be > 0"),
    ("trainer.precision=fp8", r"trainer.precision='fp8' is not one of auto, fp32, bf16, fp16"),
    ("trainer.device=tpu", r"trainer.device='tpu'"),
    ("optimizer.decay=step", r"optimizer.decay='step' is not one of constant, linear, cosine"),
    ("trainer.best_metric=shapes/fd", r"needs trainer.eval_every > 0"),
    ("+model.generator.widht=3", r"unknown key\(s\) \['widht'\]"),
])
def test_cross_field_checks_name_the_key(override, message, compose_train):
    cfg = compose_train(override)
    with pytest.raises(ConfigError, match=message):
        validate_train(cfg)


def test_bad_size_message_lists_allowed_values(compose_train):
    cfg = compose_train("dataset.frames=12")
    with pytest.raises(ConfigError) as err:
        validate_train(cfg)
    assert "16" in str(err.value) and "12" in str(err.value)


def test_resume_and_init_from_are_exclusive(compose_train, tmp_path):
    cfg = compose_train(f"resume={tmp_path}/a.ckpt", f"init_from={tmp_path}/b.ckpt")
    with pytest.raises(ConfigError, match="give only one"):
        validate_train(cfg)


def test_checkpoint_configs_may_only_name_trusted_targets():
    ok = OmegaConf.create({"a": {"_target_": "vidgan_cli.models.cgan3d.Generator"},
                           "b": [{"_target_": "torch.optim.Adam"}]})
    check_trusted_targets(ok)
    bad = OmegaConf.create({"a": {"b": {"_target_": "os.system"}}})
    with pytest.raises(ConfigError, match=r"config.a.b._target_='os.system' is not allowed"):
        check_trusted_targets(bad)


def test_quickstart_experiment_overrides_only_what_differs():
    cfg = compose_config("train", ["experiment=quickstart"])
    assert cfg.dataset.resolution == 32 and cfg.model.generator.resolution == 32
    assert cfg.model.discriminator._target_ == "vidgan_cli.models.dual.DualDiscriminator"
    assert cfg.loss.class_weight == 1.0 and cfg.model.generator.base_channels == 32
    assert Path(REPO / "conf" / "experiment" / "quickstart.yaml").read_text().startswith(
        "# @package _global_")
