"""The wheel ships every YAML of conf/ (as vidgan_cli.conf) and every subpackage."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from conftest import REPO


def test_package_list_matches_folders():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "vidgan_cli").rglob("__init__.py")}
    found.add("vidgan_cli.conf")
    assert listed == found


@pytest.mark.slow
def test_wheel_contains_every_yaml(tmp_path):
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path),
                    str(REPO)], check=True, capture_output=True)
    wheel = next(Path(tmp_path).glob("vidgan-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    yamls = {"vidgan_cli/conf/" + str(p.relative_to(REPO / "conf")) for p in (REPO / "conf").rglob("*.yaml")}
    assert yamls and yamls <= names, sorted(yamls - names)
    assert "vidgan_cli/cli.py" in names and "vidgan_cli/conf/__init__.py" in names
