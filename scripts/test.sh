#!/usr/bin/env bash
# The test command: installs dependencies if missing, builds the default preset and runs the CPU
# suite (ctest label "unit"), then the Python package's tests (scripts/test-python.sh). GPU
# suites: see scripts/gpu-suite.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset default
cmake --build build/default -j "$(nproc)"
ctest --preset unit --output-on-failure
scripts/test-python.sh
