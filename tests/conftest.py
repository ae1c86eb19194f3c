"""Shared fixtures: compose real configs and shrink them to CPU-sized runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from vidgan_cli.config import register_configs

REPO = Path(__file__).resolve().parents[1]

# A run that takes seconds on a CPU: every model supports 8 frames at 16x16 in its tiny widths.
TINY = [
    "dataset.frames=8", "dataset.resolution=16", "dataset.num_classes=2", "dataset.length=64",
    "trainer.batch_size=4", "trainer.max_steps=2", "trainer.device=cpu", "trainer.log_every=1",
    "trainer.sample_every=0", "trainer.save_every=0", "trainer.sample_columns=2",
    "model.generator.base_channels=8", "model.discriminator.base_channels=8",
    "trainer.precision=fp32",  # exact comparisons; the default (auto) is bf16 on some CPUs only
]


def compose_config(name: str, overrides: list[str] = ()):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_module("vidgan_cli.conf", version_base="1.3"):
        return compose(name, overrides=list(overrides))


@pytest.fixture
def compose_train():
    def make(*overrides: str, tiny: bool = True):
        return compose_config("train", (TINY if tiny else []) + list(overrides))
    return make


def run_cli(*args: str, cwd: Path, timeout: int = 300, env: dict | None = None):
    """``python -m vidgan_cli ARGS`` in a subprocess; returns the CompletedProcess."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "vidgan_cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
