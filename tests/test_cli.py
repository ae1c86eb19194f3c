import pytest
from conftest import REPO, run_cli

from vidgan_cli import cli


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in cli.SUBCOMMANDS:
        assert f"  {name} " in out


def test_unknown_subcommand_exits_2_with_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["trian"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown subcommand 'trian'" in err and "train" in err


def test_no_arguments_prints_usage_and_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2
    assert "usage: vidgan SUBCOMMAND" in capsys.readouterr().out


@pytest.mark.slow
def test_train_help_shows_config_groups(tmp_path):
    result = run_cli("train", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for group in ("model:", "loss:", "optimizer:", "dataset:", "trainer:", "experiment:"):
        assert group in result.stdout
    assert "cgan3d" in result.stdout and "quickstart" in result.stdout


@pytest.mark.slow
def test_cfg_job_prints_composed_config_with_overrides(tmp_path):
    result = run_cli("train", "--cfg", "job", "loss=lsgan", "trainer.max_steps=7", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "max_steps: 7" in result.stdout and "kind: lsgan" in result.stdout
    assert not (tmp_path / "outputs").exists(), "--cfg must not start a run"


@pytest.mark.slow
def test_unknown_key_fails_at_compose_time(tmp_path):
    result = run_cli("train", "trainer.max_stpes=3", cwd=tmp_path)
    assert result.returncode != 0
    assert "max_stpes" in result.stderr


def test_repo_root_has_conf():
    assert (REPO / "conf" / "train.yaml").is_file()
