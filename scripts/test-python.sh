#!/usr/bin/env bash
# The Python package's tests (tests/python, pytest): installs python/ (the `kjit` package) into a
# virtual environment under build/ that has torch (KJIT_TORCH_VERSION, default the GPU machine's
# 2.11) and runs them against build/default's libkjit.so. Without a CUDA device the GPU tests
# skip, saying why. scripts/test.sh runs this after the C++ suite.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=build/python-venv
[ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
# Quick when all is there already (no download); setuptools >= 70.1 builds wheels on its own.
"$venv/bin/pip" install -q "torch==${KJIT_TORCH_VERSION:-2.11.*}" numpy pytest "setuptools>=70.1"
# A real install (not the source folder on sys.path): the tests import what pip installed.
"$venv/bin/pip" install -q --no-deps --no-build-isolation ./python
export KJIT_LIBRARY="${KJIT_LIBRARY:-$PWD/build/default/runtime/libkjit.so}"
"$venv/bin/python" -m pytest -p no:cacheprovider -q -rs tests/python "$@"
