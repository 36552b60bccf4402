#!/usr/bin/env bash
# Times template variants side by side in one device call (on the GPU machine, from a bundle of
# scripts/gpu-bundle.sh): a variant is a folder shaped like templates/ that holds only the files it
# changes, e.g. .gpu-bundle/variants/fill/moe/align.cuh, and reaches the runtime through
# KJIT_TEMPLATE_DIR (no rebuild); `main` is the library's own templates. The variants alternate
# for ROUNDS rounds (default 2), so that drift between runs shows beside the differences.
#   scripts/gpu-ab.sh "main fill" .gpu-bundle/bin/kjit_bench_moe_router deepseek-v3
# Each output line is prefixed with its variant. A variant's tests (their fixture resets
# KJIT_TEMPLATE_DIR) take it through KJIT_TEST_TEMPLATE_DIR:
#   KJIT_TEST_TEMPLATE_DIR=$PWD/.gpu-bundle/variants/fill .gpu-bundle/bin/kjit_gpu_tests ..
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 'VARIANT...' COMMAND [ARGS...]" >&2; exit 2; }
variants="$1"; shift
export LD_LIBRARY_PATH="$PWD/.gpu-bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export KJIT_CACHE_DIR="$(mktemp -d)/kjit-cache"
for round in $(seq "${ROUNDS:-2}"); do
  for v in $variants; do
    dir=""
    if [ "$v" != main ]; then
      dir="$PWD/.gpu-bundle/variants/$v"
      [ -d "$dir" ] || { echo "no variant folder $dir" >&2; exit 2; }
    fi
    # A variant built with its own host code (gpu-bundle.sh's KJIT_HOST_VARIANTS) runs its build.
    cmd=("$@")
    if [ -n "$dir" ] && [ -d "$dir.bin" ]; then
      [ -x "$dir.bin/$(basename "$1")" ] ||
        { echo "variant $v has its own host build but no $(basename "$1") (KJIT_HOST_BINS)" >&2; exit 2; }
      cmd[0]="$dir.bin/$(basename "$1")"
    fi
    KJIT_TEMPLATE_DIR="$dir" "${cmd[@]}" 2>&1 | sed "s/^/$v round $round: /"
  done
done
