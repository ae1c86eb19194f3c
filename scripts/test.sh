#!/usr/bin/env bash
# Fresh machine -> test results: creates .venv, installs torch (CPU build) and vidgan[dev], runs pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow" -x
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_venv.sh dev
exec "$VENV/bin/python" -m pytest "$@"
