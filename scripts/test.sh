#!/usr/bin/env bash
# Fresh machine -> test results: creates .venv, installs torch (CPU build) and vidgan[dev], runs pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow" -x
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build on a fresh machine.
"$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==${TORCH_VERSION:-2.13.0}"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -e ".[dev]"
exec "$VENV/bin/python" -m pytest "$@"
