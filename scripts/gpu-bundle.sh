#!/usr/bin/env bash
# Builds on this (CPU) machine and packs what the GPU machine runs into .gpu-bundle/ (ignored by
# git): stripped test, benchmark, example and CLI binaries, libkjit.so (the C example links it)
# and the one shared library the GPU image lacks (Google Benchmark). Then, with the device tool:
#   run(command="scripts/gpu-suite.sh", carry=[".gpu-bundle"])
# The mla and moe modes also time the peers from wheels in .peers/ (ignored by git; fetch them
# with scripts/fetch-peers.sh): carry the mode's folder too, [".gpu-bundle", ".peers/flashmla"]
# or [".gpu-bundle", ".peers/deepgemm"] for moe-bench (a call carries 64 MiB at most; the
# bundle is ~45).
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-default}"
cmake --preset "$preset" >/dev/null
cmake --build "build/$preset"
# Template variants (.gpu-bundle/variants, for scripts/gpu-ab.sh) are kept; KJIT_VARIANTS="NAME=REV
# ..." (re)writes variant NAME as the whole templates/ tree of git revision REV (a branch that
# changes only templates), e.g. KJIT_VARIANTS="overlap=next/ws-overlap". KJIT_BUNDLE_BINS="kjit
# kjit_gpu_tests .." packs only those binaries (a device call carries 64 MiB; all of them are
# about 64 MB).
rm -rf .gpu-bundle/bin .gpu-bundle/lib && mkdir -p .gpu-bundle/bin .gpu-bundle/lib
for variant in ${KJIT_VARIANTS:-}; do
  name="${variant%%=*}" rev="${variant#*=}"
  rm -rf ".gpu-bundle/variants/$name" && mkdir -p ".gpu-bundle/variants/$name"
  git archive "$rev" templates | tar -x --strip-components=1 -C ".gpu-bundle/variants/$name"
done
build="build/$preset"
bins=(tools/kjit tests/kjit_gpu_tests tests/kjit_unit_tests tests/kjit_test_helper
      bench/kjit_bench_launch_overhead bench/kjit_bench_compile_latency
      bench/kjit_bench_merge_states bench/kjit_bench_attention bench/kjit_bench_choice_cost
      bench/kjit_bench_attention_backward bench/kjit_bench_attention_grouped
      bench/kjit_bench_mla_decode bench/kjit_bench_moe_gemm bench/kjit_bench_helix_decode
      bench/kjit_bench_moe_layer bench/kjit_bench_moe_offload bench/kjit_bench_moe_router
      bench/kjit_bench_op_call_overhead
      bench/kjit_bench_comm bench/kjit_bench_zigzag bench/kjit_bench_l2_sharing tests/kjit_dist_tests
      examples/kjit_example_user_kernel examples/kjit_example_c_api)
pack() {  # pack DIR NAMES: strip the bundle's binaries NAMES names (all when empty) into DIR
  for bin in "${bins[@]}"; do
    name="$(basename "$bin")"
    case " ${2:-$name} " in *" $name "*) strip -o "$1/$name" "$build/$bin" ;; esac
  done
}
pack .gpu-bundle/bin "${KJIT_BUNDLE_BINS:-}"
strip -o .gpu-bundle/lib/libkjit.so.0 "$build/runtime/libkjit.so.0"
cp -L "$(ldd "$build/bench/kjit_bench_launch_overhead" | awk '/libbenchmark/ {print $3}')" .gpu-bundle/lib/
cp tests/dist/rank_exit.sh .gpu-bundle/bin/
# The Python package as a wheel (kjit._native compiled here for CPython >= 3.11, the limited API),
# which scripts/gpu-suite.sh's python mode installs.
rm -rf .gpu-bundle/python .gpu-bundle/python-old
python3 -m pip wheel -q --no-deps -w .gpu-bundle/python ./python
# KJIT_PYTHON_OLD=REV: REV's package too, in .gpu-bundle/python-old, which the python mode's
# overhead step times beside this one in the same call (an A/B of a binding change).
if [ -n "${KJIT_PYTHON_OLD:-}" ]; then
  old_tree="$(mktemp -d)"
  git archive "$KJIT_PYTHON_OLD" python | tar -x -C "$old_tree"
  python3 -m pip wheel -q --no-deps -w .gpu-bundle/python-old "$old_tree/python"
  rm -rf "$old_tree"
fi
# The commit, marked -dirty when the tree differs from it (the bundle is what was built).
echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo -dirty)" > .gpu-bundle/commit
# KJIT_HOST_VARIANTS="NAME=REV ...": a variant that changes host code too (a launch, a config
# field, a header of templates/ the host includes, its tests or bench; REV a branch off HEAD). Its
# templates as KJIT_VARIANTS writes them, and the binaries KJIT_HOST_BINS names (default
# kjit_gpu_tests) built with REV's runtime/, templates/, tests/ and bench/ patched into this tree,
# in .gpu-bundle/variants/NAME.bin/, which scripts/gpu-ab.sh and the -ab modes' tests run for
# NAME. The tree is then unpatched (files the patch added removed) and rebuilt, also on failure.
#   KJIT_HOST_VARIANTS="pdl=next/mla-pdl" KJIT_HOST_BINS="kjit_gpu_tests kjit_bench_mla_decode"
built=(runtime templates tests bench)
for variant in ${KJIT_HOST_VARIANTS:-}; do
  name="${variant%%=*}" rev="${variant#*=}"
  out=".gpu-bundle/variants/$name.bin"
  git diff --quiet HEAD -- "${built[@]}" ||
    { echo "${built[*]} have uncommitted changes" >&2; exit 2; }
  rm -rf ".gpu-bundle/variants/$name" "$out" && mkdir -p ".gpu-bundle/variants/$name" "$out"
  git archive "$rev" templates | tar -x --strip-components=1 -C ".gpu-bundle/variants/$name"
  git diff HEAD "$rev" -- "${built[@]}" >"$out/host.patch"
  git diff --name-only --diff-filter=A HEAD "$rev" -- "${built[@]}" >"$out/added"
  unpatch() { xargs -r rm -f <"$out/added"; git checkout -q HEAD -- "${built[@]}"; }
  trap 'unpatch; cmake --build "$build" >/dev/null' EXIT
  [ -s "$out/host.patch" ] && git apply "$out/host.patch"
  cmake --build "$build"
  pack "$out" "${KJIT_HOST_BINS:-kjit_gpu_tests}"
  unpatch
  trap - EXIT
  cmake --build "$build" >/dev/null
done
du -sh .gpu-bundle
