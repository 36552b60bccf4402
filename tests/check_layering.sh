#!/usr/bin/env bash
# The dependency rules of docs/design.md ("Layout"), checked on the includes:
#   cache/store and cache/tuning share nothing and include neither the JIT nor the ops;
#   the JIT (runtime/src/jit, nvrtc, driver) includes no op and no tuning code;
#   kernel families learn the arch from driver/arch.hpp, not from the JIT's compile plan;
#   only tools/ holds command-line code (CLI11);
#   the communicator uses the driver and util only, and kjit_mpi libkjit's public API.
#   check_layering.sh <source dir>
set -uo pipefail
cd "$1"
failed=0
forbid() {  # forbid "what" <grep -E pattern> <paths...>
  local what="$1" pattern="$2"; shift 2
  local hits
  hits="$(grep -rnE "$pattern" "$@" 2>/dev/null)"
  if [ -n "$hits" ]; then
    echo "layering: $what"; echo "$hits"; failed=1
  fi
}
forbid "cache/ includes the JIT or the ops" '#include "(jit|ops|samples)/' cache
forbid "the kernel store includes the tuning room" '#include "cache/tuning/' cache/store
forbid "the tuning room includes the kernel store" '#include "cache/store/' cache/tuning
forbid "the JIT includes ops or tuning code" '#include "(ops/|cache/tuning/|autotune/)' \
  runtime/src/jit runtime/src/nvrtc runtime/src/driver
forbid "an op includes the JIT's compile plan" '#include "jit/compile_plan.hpp"' runtime/src/ops
forbid "command-line code outside tools/" '#include <CLI/' runtime cache autotune
forbid "the communicator includes the JIT, ops or the caches" \
  '#include "(jit|nvrtc|ops|cache|autotune)/' runtime/src/comm
forbid "kjit_mpi reaches into libkjit's internals" '#include "(driver|util/(log|environment))' \
  runtime/src/comm/from_mpi.cpp runtime/src/comm/mpi_communicator.cpp
[ "$failed" = 0 ] && echo "layering: ok"
exit "$failed"
