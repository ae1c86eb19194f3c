#!/usr/bin/env bash
# Sourced by test.sh and quickstart.sh: create .venv (or $VENV) and install vidgan with the extras
# given as $1. torch is installed first and pinned: an unpinned torch would pull a multi-GB CUDA
# build on a fresh machine (set TORCH_VERSION to choose another).
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==${TORCH_VERSION:-2.13.0}"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -e ".[$1]"
