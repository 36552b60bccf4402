#!/usr/bin/env bash
# Runs on the GPU machine from binaries built by scripts/gpu-bundle.sh: device facts, the GPU
# test suite, the CPU suite (there too: it checks the no-driver paths on a machine that has one),
# the benchmarks and the example. Full logs go to $OUT (or ./gpu-out); a summary is printed last.
#   scripts/gpu-suite.sh [tests|bench|attention|attention-bench|attention-tune|attention-check|
#                         attention-ab|attention-backward|attention-backward-check|
#                         attention-backward-tune|attention-grouped|attention-grouped-ab|
#                         attention-grouped-ncu|mla|mla-ab|mla-ncu|moe|moe-decode|moe-decode-ab|
#                         moe-bench|moe-ncu|moe-layer-ncu|moe-align-ncu|moe-router|moe-offload|
#                         python|fa4-stage|l2-probe|zigzag|families|dist|all]
#   (default all)
# `families` is the check after a change to the op plumbing (kernel families, dispatch, tuning
# tables): the whole GPU suite, the examples, a sanitizer subset, and the attention and
# merge_states benchmarks with default configs beside torch.
set -uo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
# Logs go to a scratch folder and leave as one archive in $OUT (the device tool brings back a
# few files only), also when a step fails. KJIT_SUITE_BUDGET_S (default 560) bounds the whole
# run: a step that would start past it is skipped and says so.
final_out="${OUT:-$PWD/gpu-out}"
out="$(mktemp -d)/logs"
mkdir -p "$out" "$final_out"
trap 'tar -C "$(dirname "$out")" -czf "$final_out/gpu-logs-$what.tgz" logs' EXIT
budget="${KJIT_SUITE_BUDGET_S:-560}"
bin="$PWD/.gpu-bundle/bin"
export LD_LIBRARY_PATH="$PWD/.gpu-bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export KJIT_CACHE_DIR="$(mktemp -d)/kjit-cache"
export KJIT_TEST_HELPER="$bin/kjit_test_helper" KJIT_CLI="$bin/kjit"
summary=()
sharded_tests() {  # sharded_tests NAME FILTER TIMEOUT [SHARDS]: the GPU tests FILTER picks, as
                   # SHARDS (default 4) processes at once, each over a run of consecutive tests.
  # Consecutive cases share their kernel (a case's name leads with its kernel's), so each process
  # compiles its own share of the kernels; gtest's sharding deals the cases round robin, and then
  # every process compiled nearly all of them (the suites' time is NVRTC's).
  local name="$1" filter="$2" start=$SECONDS shards="${4:-4}" tests
  mapfile -t tests < <("$bin/kjit_gpu_tests" --gtest_list_tests --gtest_filter="$filter" |
                         awk '/^[^ ]/ {suite = $1} /^  / {print suite $1}')
  local per=$(((${#tests[@]} + shards - 1) / shards))
  for ((i = 0; i * per < ${#tests[@]}; ++i)); do
    local part=("${tests[@]:i*per:per}")
    timeout "$3" "$bin/kjit_gpu_tests" --gtest_filter="$(IFS=:; echo "${part[*]}")" \
      >"$out/${name}_shard$i.log" 2>&1 &
  done
  wait
  summary+=("$(printf '%-22s %4ss' "$name" "$((SECONDS - start))")")
  cat "$out/${name}"_shard*.log >"$out/$name.log"
}
tally() {  # tally NAME: the counts of a sharded run and its failures
  echo "== $1: $(grep -c '^\[       OK' "$out/$1.log") ok, $(grep -c '^\[  FAILED  \] [A-Z]' "$out/$1.log") failed, $(grep -c '^\[  SKIPPED \] [A-Z]' "$out/$1.log") skipped"
  grep -E '^\[  FAILED  \] [A-Z]|Failure|Expected|Which is|elements outside|error ' "$out/$1.log" | head -40
}
sanitize() {  # sanitize NAME TOOL TIMEOUT FILTER: compute-sanitizer TOOL over the GPU tests FILTER picks
  step "$1" timeout "$3" compute-sanitizer --tool "$2" --error-exitcode 3 "$bin/kjit_gpu_tests" \
    --gtest_filter="$4"
}
sanitizer_verdicts() {  # sanitizer_verdicts NAME...: each sanitizer step's summary lines
  for log in "$@"; do
    echo "== $log"; grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED' "$out/$log.log" | tail -4
  done
}
ncu_where() {  # ncu_where NAME TOP: of $OUT's NAME.ncu-rep (ncu's full set), the headline figures
               # and the TOP SASS lines with the most stall samples
  ncu --import "$final_out/$1.ncu-rep" --page source --csv --print-source sass \
    >"$out/source_$1.csv" 2>&1
  ncu --import "$final_out/$1.ncu-rep" --print-details all >"$out/details_$1.log" 2>&1
  echo "== $1"
  grep -E "Duration|Elapsed Cycles|Registers|Achieved Active Warps|Issued Warp|Executed Ipc A|Stall [A-Z]|DRAM Throughput|L2 Cache Throughput|Memory Throughput" \
    "$out/details_$1.log" | head -40
  python3 scripts/ncu_top_stalls.py "$out/source_$1.csv" "$2"
}
ab_variants() {  # ab_variants: the template variants an -ab mode compares with main into
                 # $variants (KJIT_AB_VARIANTS, default every folder of .gpu-bundle/variants),
                 # stopping where one, or KJIT_AB_TEST's, has no folder
  variants="${KJIT_AB_VARIANTS:-$(ls .gpu-bundle/variants 2>/dev/null | grep -v '\.bin$')}"
  for v in $variants ${KJIT_AB_TEST:-}; do
    [ -d ".gpu-bundle/variants/$v" ] || { echo "no variant folder .gpu-bundle/variants/$v" >&2; exit 2; }
  done
}
tests_on_candidate() {  # tests_on_candidate: the GPU tests after this run on KJIT_AB_TEST's
                        # templates (the candidate for main) where it names a variant
  if [ -n "${KJIT_AB_TEST:-}" ]; then
    export KJIT_TEST_TEMPLATE_DIR="$PWD/.gpu-bundle/variants/$KJIT_AB_TEST"
    echo "== the tests below ran on variant $KJIT_AB_TEST's templates"
    if [ -x "$KJIT_TEST_TEMPLATE_DIR.bin/kjit_gpu_tests" ]; then
      bin="$KJIT_TEST_TEMPLATE_DIR.bin"  # its own host build (gpu-bundle.sh KJIT_HOST_VARIANTS)
      echo "== and its host build"
    fi
  fi
}
forward_tests() {  # forward_tests [EXCLUDED]: the forward's parametrised cases, determinism and
                   # no-keys tests (less the negative gtest filter EXCLUDED) in eight processes,
                   # tallied, then its scale tests alone (one checks the device's free memory,
                   # which other processes move)
  sharded_tests forward_tests \
    "All/AttentionForward.*:AttentionForwardDeterminism.*:AttentionForwardEmpty.*${1:-}" \
    "${KJIT_FORWARD_TESTS_S:-200}" 8
  tally forward_tests
  step forward_scale_tests timeout 120 "$bin/kjit_gpu_tests" --gtest_filter='AttentionForwardScale.*'
  grep -E '^\[  (PASSED|FAILED) |^\[  FAILED' "$out/forward_scale_tests.log"
}
backward_tests() {  # backward_tests TIMEOUT: the backward's GPU tests in four parallel shards
  sharded_tests backward_tests '*AttentionBackward*' "$1"
}
step() {  # step NAME COMMAND...: run, log to $out/NAME.log, remember the outcome (a step named
          # in KJIT_SKIP_STEPS is skipped and says so)
  local name="$1"; shift
  local start=$SECONDS
  case " ${KJIT_SKIP_STEPS:-} " in *" $name "*)
    summary+=("$(printf '%-22s skipped: KJIT_SKIP_STEPS' "$name")")
    echo "skipped: KJIT_SKIP_STEPS" >"$out/$name.log"
    return 0 ;;
  esac
  if [ "$start" -ge "$budget" ]; then
    summary+=("$(printf '%-22s skipped: past the %ss budget' "$name" "$budget")")
    echo "skipped: past the ${budget}s budget" >"$out/$name.log"
    return 124
  fi
  "$@" >"$out/$name.log" 2>&1
  local rc=$?
  summary+=("$(printf '%-22s rc=%-3s %4ss' "$name" "$rc" "$((SECONDS - start))")")
  return $rc
}

echo "bundle commit $(cat .gpu-bundle/commit 2>/dev/null), $(date -u +%FT%TZ)" | tee "$out/facts.log"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv \
  >>"$out/facts.log" 2>&1
step info "$bin/kjit" info
if [ "$what" = all ] || [ "$what" = tests ]; then
  step gpu_tests "$bin/kjit_gpu_tests" --gtest_output="xml:$out/gpu_tests.xml"
  step unit_tests "$bin/kjit_unit_tests"
  step example "$bin/kjit_example_user_kernel"
  step example_c_api "$bin/kjit_example_c_api"
  # Sanitizers on the kernels (memcheck everywhere but the negative test, whose refused launch
  # counts as an API error, and attention, whose subset runs in the attention mode; racecheck
  # where shared memory is shared).
  step memcheck compute-sanitizer --tool memcheck --error-exitcode 3 "$bin/kjit_gpu_tests" \
    --gtest_filter='-*RepeatedLoads*:*BeyondTheDeviceLimit*:*AttentionForward*'
  step racecheck compute-sanitizer --tool racecheck --error-exitcode 3 "$bin/kjit_gpu_tests" \
    --gtest_filter='*MmaGemm*:*LargeDynamicSharedMemory*:*ClusterLaunch*'
fi
# FlashAttention-4 (CuTe DSL) is 66 MB packed, over one call's carry: scripts/fetch-peers.sh
# splits it into .peers/fa4_a and .peers/fa4_b. `fa4-stage` (carry .peers/fa4_a) leaves part a on
# the machine; a python call right after it on the same warm machine (carry .peers/fa4_b) joins
# the parts and installs FA4 into /tmp/psite.
fa4_parts=/tmp/kjit-fa4-parts
if [ "$what" = fa4-stage ]; then
  mkdir -p "$fa4_parts" && cp .peers/fa4_a/*.part-* "$fa4_parts/" && ls -l "$fa4_parts"
fi
if [ "$what" = python ]; then
  # The Python package (the bundle's wheel) over the bundle's libkjit.so: its pytest suite (the
  # CPU and the GPU tests), the call overhead beside the C++ API's, and a training step beside
  # torch SDPA (and FA4 where installed). pytest from .peers/pytest where carried
  # (scripts/fetch-peers.sh), else the image's. KJIT_PYTHON_STEPS picks some of "tests overhead
  # training" (default all three).
  wants() { case " ${KJIT_PYTHON_STEPS:-tests overhead training} " in *" $1 "*) ;; *) return 1 ;; esac; }
  mkdir -p /tmp/psite
  python3 -m pip install -q --no-index --no-deps --target /tmp/psite .gpu-bundle/python/kjit-*.whl
  if ls .peers/pytest/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/psite .peers/pytest/*.whl
  fi
  if [ -d .peers/fa4_b ]; then
    mkdir -p "$fa4_parts" && cp .peers/fa4_b/* "$fa4_parts/"
    if (cd "$fa4_parts" && cat fa4_bundle.tar.xz.part-* >fa4_bundle.tar.xz &&
        sha256sum --quiet -c fa4_bundle.tar.xz.sha256); then
      tar -xJf "$fa4_parts/fa4_bundle.tar.xz" -C /tmp/psite
    else
      echo "FA4 not installed: run the fa4-stage mode first, on the same warm machine" >&2
    fi
  fi
  # The image's pytest plugins (pytest-timeout) need a newer pytest than the one carried.
  export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1
  # cutlass (FA4's DSL) lives in dsl_packages, which its .pth file adds only in a site directory.
  export PYTHONPATH="/tmp/psite:/tmp/psite/nvidia_cutlass_dsl/dsl_packages:$PWD/bench:${PYTHONPATH:-}"
  export KJIT_LIBRARY="$PWD/.gpu-bundle/lib/libkjit.so.0" PYTHONUNBUFFERED=1
  wants tests && step python_tests timeout 300 python3 -m pytest -p no:cacheprovider -q -rs tests/python
  # With an earlier package in .gpu-bundle/python-old (scripts/gpu-bundle.sh's KJIT_PYTHON_OLD),
  # the overhead bench alternates this package and that one, KJIT_OVERHEAD_ROUNDS (default 1)
  # rounds each, so that both see the same host. KJIT_OVERHEAD_CPUS (a taskset list, "3" or
  # "2,3") adds a round of this package pinned to those cores after each: the C++ side, a
  # subprocess, inherits the pinning, so both sides meet the same host noise.
  if wants overhead; then
    old_site=""
    if ls .gpu-bundle/python-old/kjit-*.whl >/dev/null 2>&1; then
      old_site=/tmp/psite-old
      python3 -m pip install -q --no-index --no-deps --target "$old_site" .gpu-bundle/python-old/kjit-*.whl
    fi
    for round in $(seq "${KJIT_OVERHEAD_ROUNDS:-1}"); do
      step "python_overhead_$round" timeout 120 python3 bench/python_overhead.py "$bin/kjit_bench_op_call_overhead"
      if [ -n "${KJIT_OVERHEAD_CPUS:-}" ]; then
        step "python_overhead_pinned_$round" timeout 120 taskset -c "$KJIT_OVERHEAD_CPUS" \
          python3 bench/python_overhead.py "$bin/kjit_bench_op_call_overhead"
      fi
      if [ -n "$old_site" ]; then
        PYTHONPATH="$old_site:$PYTHONPATH" step "python_overhead_old_$round" timeout 120 \
          python3 bench/python_overhead.py "$bin/kjit_bench_op_call_overhead"
      fi
    done
  fi
  wants training && step python_training timeout 400 python3 bench/python_training_step.py
  grep -sE '^(FAILED|ERROR)|passed|failed' "$out/python_tests.log" | tail -30
  for log in "$out"/python_overhead*.log "$out/python_training.log"; do
    [ -f "$log" ] && echo "== $(basename "$log" .log)" && cat "$log"
  done
fi
if [ "$what" = attention ]; then
  step attention_tests "$bin/kjit_gpu_tests" --gtest_filter='*Attention*'
  # A representative subset under the sanitizers: both main loops, both dtypes, GQA, varlen.
  subset='All/AttentionForward.*bf16_d128*:All/AttentionForward.*fp16_d64_causal*:*CAbi*'
  step attention_memcheck compute-sanitizer --tool memcheck --error-exitcode 3 \
    "$bin/kjit_gpu_tests" --gtest_filter="$subset"
  step attention_racecheck compute-sanitizer --tool racecheck --error-exitcode 3 \
    "$bin/kjit_gpu_tests" --gtest_filter='All/AttentionForward.*bf16_d128_causal_h8x1*'
  # The sm_90a loops' mbarriers and named barriers (the warp-specialised loop is the default; at
  # hd 256 with two-stage rings).
  step attention_synccheck compute-sanitizer --tool synccheck --error-exitcode 3 \
    "$bin/kjit_gpu_tests" --gtest_filter='All/AttentionForward.*bf16_d128_causal_h8x1_*'
  hd256_ws='All/AttentionForward.*bf16_d256_causal_h8x1_*-*_mma_*:*_wgmma_*'
  step attention_racecheck_d256 compute-sanitizer --tool racecheck --error-exitcode 3 \
    "$bin/kjit_gpu_tests" --gtest_filter="$hd256_ws"
  step attention_synccheck_d256 compute-sanitizer --tool synccheck --error-exitcode 3 \
    "$bin/kjit_gpu_tests" --gtest_filter="$hd256_ws"
  grep -E '^\[  (PASSED|FAILED) |^\[  FAILED' "$out/attention_tests.log" | head -30
fi
if [ "$what" = attention-ab ]; then
  # A forward change against template variants (scripts/gpu-bundle.sh with KJIT_VARIANTS, e.g.
  # the mainline's templates beside a branch's bundle): the tile sweep on main and on each
  # variant (all of .gpu-bundle/variants unless KJIT_AB_VARIANTS names some; loop 93's rows side
  # by side), the FA-table rows for main and every variant, alternating, then the bundle's
  # forward tests on the sm_90a loops (the defaults, the warp-specialised loops' forced cases and
  # tiles), the scale tests and a racecheck subset of the persistent loop (blocks of one item and
  # of several). KJIT_AB_TEST=VARIANT runs the tests on that variant's templates (the candidate
  # for main) instead of main's.
  ab_variants
  for v in main $variants; do
    dir="$([ "$v" = main ] || echo "$PWD/.gpu-bundle/variants/$v")"
    KJIT_TEMPLATE_DIR="$dir" step "attention_sweep_$v" "$bin/kjit_bench_attention" --sweep
  done
  step attention_ab scripts/gpu-ab.sh "main $variants" "$bin/kjit_bench_attention"
  for v in $variants; do  # TFLOP/s at each loop-93 row's shape and tile: main's 92 and 93, v's 93
    echo "== sweep TFLOP/s: main 92 / main 93 / $v 93"
    awk -F': +' 'FILENAME == ARGV[1] && /mainloop=9[23] / {split($2, a, " +"); main[$1] = a[3]; next}
                 /mainloop=93 / {split($2, a, " +"); k92 = $1; sub(/mainloop=93/, "mainloop=92", k92)
                                 printf "%s: %s / %s / %s\n", $1, main[k92], main[$1], a[3]}' \
      "$out/attention_sweep_main.log" "$out/attention_sweep_$v.log"
  done
  cat "$out/attention_ab.log"
  tests_on_candidate
  forward_tests '-*_mma_*:*_wgmma_*'
  sanitize forward_racecheck racecheck 90 \
    'All/AttentionForward.*bf16_d128*_h8x[12]_batched_persistent_*:All/AttentionForward.*bf16_d128_causal_h8x1_batched_*-*_mma_*:*_wgmma_*:*_n*:*_ws_*:*_overlap_*'
  sanitizer_verdicts forward_racecheck
fi
if [ "$what" = attention-bench ]; then
  # kjit's defaults beside torch (and FA3), bf16 and fp16 (the tile sweep is attention-ab's), as
  # the FA table (scripts/fa_table.py). KJIT_TUNED=1: kjit tuned, `kjit tune --preset fa-bench`
  # first, in the same call.
  if [ "${KJIT_TUNED:-0}" = 1 ]; then
    export KJIT_TUNING_DB="$out/attention-tuning.sqlite"
    step tune_fa_bench "$bin/kjit" tune --preset fa-bench
    grep -vE 'ETA|^$' "$out/tune_fa_bench.log" | tail -24
  fi
  # FA3 (fa3-fwd) beside torch where its wheel was carried: .peers/fa3.
  if ls .peers/fa3/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/psite .peers/fa3/*.whl
  fi
  export PYTHONPATH="/tmp/psite:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
  # Two rounds, kjit and torch alternating (the card's clocks drift over a call by more than the
  # margins the bar is about); the table takes each column's best round.
  for round in 1 2; do
    for dtype in bf16 fp16; do
      flag="$([ $dtype = fp16 ] && echo --fp16)" suffix="$([ $dtype = fp16 ] && echo _fp16)"
      step "attention_kjit${suffix}_r$round" "$bin/kjit_bench_attention" $flag
      step "attention_torch${suffix}_r$round" python3 bench/attention_torch.py $flag
    done
  done
  for log in "$out"/attention_{kjit,torch}*_r?.log; do
    name="$(basename "$log" .log)"
    echo "== ${name%_r?}"; cat "$log"
  done >"$out/attention_bench.txt"
  head -qn1 "$out"/attention_{kjit,torch}_r1.log
  clock="$(nvidia-smi --query-gpu=clocks.max.sm --format=csv,noheader,nounits | head -n1)"
  python3 scripts/fa_table.py "$out/attention_bench.txt" --clock-ghz "$(awk "BEGIN {print $clock / 1000}")"
fi
if [ "$what" = attention-tune ]; then
  # The tuner over the fa-bench and Llama prefill presets, then the FA table with its picks.
  export KJIT_TUNING_DB="$out/attention-tuning.sqlite"
  step tune_attention "$bin/kjit" tune --preset fa-bench --preset llama3-8b-prefill \
    --preset llama3-70b-prefill
  KJIT_PRINT_CONFIG=1 step attention_kjit_tuned "$bin/kjit_bench_attention"
  echo "== tune_attention"; grep -vE 'ETA|^$' "$out/tune_attention.log" | tail -32
  echo "== attention_kjit_tuned"; cat "$out/attention_kjit_tuned.log"
fi
if [ "$what" = attention-check ]; then
  # After a change to the forward's defaults or to what the attention kernels share (numerics,
  # the op plumbing): every attention suite, eight processes each (each tallied as it ends), then
  # the sanitizers over the sm_90a loops' mbarriers and shared memory (hd 128 full and causal:
  # the default loops 92 and 93, and 91 forced; hd 256 causal, two-stage rings).
  # KJIT_CHECK_FORWARD=0 leaves the forward's suite out (when it has run on the same kernels).
  if [ "${KJIT_CHECK_FORWARD:-1}" = 1 ]; then
    forward_tests
  fi
  for suite in backward:AttentionBackward mla:MlaDecode grouped:AttentionGrouped; do
    sharded_tests "${suite%%:*}_tests" "*${suite#*:}*" 150 8
    tally "${suite%%:*}_tests"
  done
  subset='All/AttentionForward.*bf16_d128*_h8x1_batched_*:All/AttentionForward.*bf16_d128*_h8x2_batched_persistent_*:All/AttentionForward.*bf16_d256_causal_h8x1_batched_*-*_mma_*:*_wgmma_*:*_n*'
  sanitize forward_memcheck memcheck 90 \
    'All/AttentionForward.*bf16_d128_causal_h8x1_varlen_*:All/AttentionForward.*fp16_d64_h32x8_varlen_*-*_mma_*:*_wgmma_*:*_n*'
  sanitize forward_racecheck racecheck 90 "$subset"
  sanitize forward_synccheck synccheck 90 "$subset"
  sanitizer_verdicts forward_memcheck forward_racecheck forward_synccheck
fi
if [ "$what" = families ]; then
  # The parametrised suites are compile-bound: eight processes on the 16 cores. The rest (memory
  # and timing checks among them) runs alone afterwards.
  params='All/*:SearchSpace/*:Shapes/*'
  sharded_tests gpu_tests_params "$params" 900 8
  step gpu_tests_rest "$bin/kjit_gpu_tests" --gtest_filter="-$params"
  step example "$bin/kjit_example_user_kernel"
  step example_c_api "$bin/kjit_example_c_api"
  step attention_kjit "$bin/kjit_bench_attention"
  PYTHONUNBUFFERED=1 step attention_torch python3 bench/attention_torch.py
  KJIT_PRINT_CONFIG=1 step merge_states_default "$bin/kjit_bench_merge_states"
  step choice_cost "$bin/kjit_bench_choice_cost"
  step memcheck compute-sanitizer --tool memcheck --error-exitcode 3 "$bin/kjit_gpu_tests" \
    --gtest_filter='*ToyFamily*:*AttentionForwardEmpty*:*CAbi*:All/AttentionForward.*bf16_d128_causal_h8x1*:All/MergeStatesShipped.*bf16_D512*'
  for log in gpu_tests_params gpu_tests_rest; do tally $log; done
  for log in attention_kjit attention_torch; do echo "== $log"; cat "$out/$log.log"; done
fi
if [ "$what" = attention-backward ]; then
  # A smoke subset first (both main loops, both dtypes, every wgmma head dim, varlen), stopping
  # early if it hangs or crashes; then the backward's tests in four parallel shards, a sanitizer
  # subset, kjit (defaults, then every config of the space) beside torch (SDPA flash = FA2, and
  # cuDNN) on the same rows.
  smoke=$(printf 'All/AttentionBackward.*/%s:' 0 1 4 5 8 9 10 11 12 13)
  step backward_smoke timeout 120 "$bin/kjit_gpu_tests" --gtest_filter="$smoke"
  if [ $? -ge 124 ]; then  # hung or crashed: the rest would too
    grep -E '^\[  FAILED  \] [A-Z]|Failure|error|Expected|Which is|elements outside|^\[ RUN' \
      "$out/backward_smoke.log" | tail -40
    printf '%s\n' "${summary[@]}"
    exit 1
  fi
  backward_tests 300
  subset=$(printf 'All/AttentionBackward.*/%s:' 3 8 11 18)'*DeterministicModeIsBitwise*'
  sanitize backward_memcheck memcheck 200 "$subset"
  sanitize backward_racecheck racecheck 200 'All/AttentionBackward.*/9:All/AttentionBackward.*/18'
  step backward_kjit timeout 300 "$bin/kjit_bench_attention_backward"
  PYTHONUNBUFFERED=1 step backward_torch timeout 300 python3 bench/attention_torch.py --backward
  step backward_sweep timeout 300 "$bin/kjit_bench_attention_backward" --sweep
  tally backward_tests
  sanitizer_verdicts backward_memcheck backward_racecheck
  for log in backward_kjit backward_torch backward_sweep; do echo "== $log"; cat "$out/$log.log"; done
fi
if [ "$what" = attention-backward-check ]; then
  # The short recheck after a kernel change: the backward's tests, a racecheck of both wgmma
  # loops (split keys, split roles), kjit beside torch.
  backward_tests 200
  sanitize backward_racecheck racecheck 60 'All/AttentionBackward.*/9:All/AttentionBackward.*/18'
  step backward_kjit timeout 150 "$bin/kjit_bench_attention_backward"
  PYTHONUNBUFFERED=1 step backward_torch timeout 100 python3 bench/attention_torch.py --backward
  tally backward_tests
  echo "== backward_racecheck"; grep -E 'RACECHECK SUMMARY|PASSED|FAILED' "$out/backward_racecheck.log" | tail -3
  for log in backward_kjit backward_torch; do echo "== $log"; cat "$out/$log.log"; done
fi
if [ "$what" = attention-backward-tune ]; then
  # kjit tune on the fa-bench-bwd preset, then the benchmark with the tuned configs.
  export KJIT_TUNING_DB="$out/backward-tuning.sqlite"
  rm -f "$KJIT_TUNING_DB"
  step tune_backward "$bin/kjit" tune --preset fa-bench-bwd
  KJIT_PRINT_CONFIG=1 step backward_kjit_tuned "$bin/kjit_bench_attention_backward"
  for log in backward_kjit_tuned; do echo "== $log"; cat "$out/$log.log"; done
  echo "== tune_backward"; grep -vE 'ETA|^$' "$out/tune_backward.log" | tail -24
fi
grouped_racecheck='*/zigzag_w4_r1_3:*/four_groups_d256_6:*/d96_21'  # the grouped modes' subset
if [ "$what" = attention-grouped ]; then
  # Grouped attention's tests, then the plain forward's and backward's (the kernels they share
  # changed with it), a sanitizer subset, the zigzag benchmark.
  sharded_tests grouped_tests '*AttentionGrouped*' 300
  sharded_tests plain_tests '*AttentionForward*:*AttentionBackward*:*AttentionScale*' 280
  subset='*/zigzag_w2_r0_0:*/varlen_b3_9:*/four_groups_d256_6:*/d192_22:*/empty_group_and_windows_19'
  sanitize grouped_memcheck memcheck 150 "$subset"
  sanitize grouped_racecheck racecheck 150 "$grouped_racecheck"
  step grouped_bench timeout 240 "$bin/kjit_bench_attention_grouped" \
    --csv "$final_out/attention_grouped.csv"
  tally grouped_tests
  tally plain_tests
  sanitizer_verdicts grouped_memcheck grouped_racecheck
  echo "== grouped_bench"; cat "$out/grouped_bench.log"
fi
if [ "$what" = attention-grouped-ab ]; then
  # A grouped-attention change against template variants (scripts/gpu-bundle.sh with
  # KJIT_VARIANTS): the zigzag benchmark on main and each variant (KJIT_AB_VARIANTS, default all),
  # alternating, on the rows KJIT_GROUPED_ROWS names (its --only flags; default all), then, on
  # the templates of KJIT_AB_TEST (the candidate for main) or main's, the whole benchmark as CSV,
  # the grouped tests, the plain backward's (its kernels are the grouped ones) and the sanitizer
  # subset. A variant whose kernels expect other parameters or another grid than main's launch
  # gives them is a host variant (gpu-bundle.sh's KJIT_HOST_VARIANTS, with kjit_gpu_tests and
  # kjit_bench_attention_grouped in KJIT_HOST_BINS).
  ab_variants
  read -ra rows <<<"${KJIT_GROUPED_ROWS:-}"
  step grouped_ab timeout 300 scripts/gpu-ab.sh "main $variants" \
    "$bin/kjit_bench_attention_grouped" "${rows[@]}"
  tests_on_candidate
  KJIT_TEMPLATE_DIR="${KJIT_TEST_TEMPLATE_DIR:-}" step grouped_bench timeout 200 \
    "$bin/kjit_bench_attention_grouped" --csv "$final_out/attention_grouped.csv"
  sharded_tests grouped_tests '*AttentionGrouped*' 300
  sharded_tests backward_tests '*AttentionBackward*' 200
  sanitize grouped_racecheck racecheck 150 "$grouped_racecheck"
  tally grouped_tests
  tally backward_tests
  sanitizer_verdicts grouped_racecheck
  echo "== grouped_ab"; grep -v "^[^ ]* round [0-9]*: *$" "$out/grouped_ab.log"
  echo "== grouped_bench"; sed -n '/^speedup/,$p' "$out/grouped_bench.log"
fi
if [ "$what" = attention-grouped-ncu ]; then
  # DRAM bytes and L2 hit rate of the grouped kernels and of the separate calls' kernels (the
  # parameter block in the kernel's name tells them apart) on zigzag rows of KJIT_NCU_MODEL
  # (default 8b), rank 0, forward and backward (KJIT_NCU_KERNELS: default all four; the
  # benchmark runs its forward only where they name no backward kernel).
  kernels="${KJIT_NCU_KERNELS:-KjitGroupedFlashTmaParams KjitFlashTmaParams \
           KjitGroupedBackwardParams KjitFlashBackwardParams}"
  for row in ${KJIT_NCU_ROWS:-"S=32768_W=2"}; do
    row="${row//_/ }"
    only=(--only model="${KJIT_NCU_MODEL:-8b}" --only G=2 --only r=0)
    [[ "$kernels" == *Backward* ]] || only+=(--fwd-only)
    for kv in $row; do only+=(--only "$kv"); done
    for params in $kernels; do
      step "ncu_${row// /_}_$params" timeout 120 ncu \
        --metrics dram__bytes_read.sum,gpu__time_duration.sum,lts__t_sector_hit_rate.pct \
        --kernel-name-base demangled --kernel-name regex:"flash_(forward|backward)(_sm90)?(_ws)?<.*$params(, (true|false|\(bool\)[01]))?>" \
        --launch-count 2 "$bin/kjit_bench_attention_grouped" "${only[@]}"
    done
  done
  for log in "$out"/ncu_*.log; do
    echo "== $(basename "$log" .log)"
    grep -E '^  [a-z_:]*flash|dram__bytes_read|gpu__time|lts__t_sector_hit' "$log" | cut -c1-140 | head -16
  done
fi
install_flashmla() {  # install_flashmla: the carried wheel (.peers/flashmla) into /tmp/psite
  python3 -m pip install -q --no-index --no-deps --target /tmp/psite .peers/flashmla/*.whl \
    >"$out/flashmla_install.log" 2>&1
}
mla_peers() {  # mla_peers [ROW FLAGS]: FlashMLA (see bench/mla_decode_peers.py) on
               # kjit_bench_mla_decode's rows, torch SDPA the floor
  install_flashmla
  PYTHONPATH=/tmp/psite PYTHONUNBUFFERED=1 step mla_peers timeout 300 python3 \
    bench/mla_decode_peers.py "$@"
}
mla_racecheck='All/MlaDecodeTest.*/case3_*:All/MlaDecodeTest.*/case10_*:All/MlaDecodeTest.*/case19_*:All/MlaDecodeTest.*/case30_*:All/MlaDecodeTest.*/case35_*'
if [ "$what" = mla ]; then
  # MLA decode: its tests (4 shards), a sanitizer subset (the row halves' exchange through shared
  # memory under racecheck), the benchmark beside the device copy. KJIT_MLA_TUNE="PRESET ...":
  # `kjit tune` on those presets first (glm-4.7-flash-decode, deepseek-v3-decode,
  # deepseek-v3-tp2-decode; 100-250 s each), the benchmark then on the tuned configs.
  sharded_tests mla_tests '*MlaDecode*' 200
  sanitize mla_memcheck memcheck 150 'All/MlaDecodeTest.*/case2_*:All/MlaDecodeTest.*/case11_*:All/MlaDecodeTest.*/case19_*'
  sanitize mla_racecheck racecheck 150 "$mla_racecheck"
  if [ -n "${KJIT_MLA_TUNE:-}" ]; then
    export KJIT_TUNING_DB="$out/mla-tuning.sqlite"
    for preset in $KJIT_MLA_TUNE; do
      step "tune_$preset" "$bin/kjit" tune --preset "$preset"
      grep -vE 'ETA|^$' "$out/tune_$preset.log" | tail -22
    done
  fi
  step mla_bench timeout 240 "$bin/kjit_bench_mla_decode"
  step helix_bench timeout 120 "$bin/kjit_bench_helix_decode"
  mla_peers
  tally mla_tests
  sanitizer_verdicts mla_memcheck mla_racecheck
  for log in mla_bench mla_peers helix_bench; do echo "== $log"; cat "$out/$log.log"; done
fi
if [ "$what" = mla-ab ]; then
  # An MLA decode change against template variants (scripts/gpu-bundle.sh with KJIT_VARIANTS):
  # the benchmark on main and each variant (KJIT_AB_VARIANTS, default all), alternating, on the
  # rows KJIT_MLA_ROWS names (its flags, e.g. "--only-batch 1 --only-batch 8"; default all),
  # FlashMLA on the same rows, then the MLA tests and the racecheck subset on the templates of
  # KJIT_AB_TEST (the candidate for main) or main's.
  ab_variants
  read -ra rows <<<"${KJIT_MLA_ROWS:-}"
  step mla_ab scripts/gpu-ab.sh "main $variants" "$bin/kjit_bench_mla_decode" "${rows[@]}"
  mla_peers "${rows[@]}"
  tests_on_candidate
  sharded_tests mla_tests '*MlaDecode*' 200 8
  sanitize mla_racecheck racecheck 150 "$mla_racecheck"
  tally mla_tests
  sanitizer_verdicts mla_racecheck
  for log in mla_ab mla_peers; do echo "== $log"; cat "$out/$log.log"; done
fi
if [ "$what" = mla-ncu ]; then
  # Where an MLA decode call's time goes, kjit beside FlashMLA: each kernel's duration and DRAM
  # bytes (decode, combine; FlashMLA's metadata too) on the rows of KJIT_NCU_ROWS ("H:B:L ...",
  # caches left warm as in back-to-back calls), then ncu's full set on both decode kernels at
  # the first row, with the SASS lines of most stall samples. Reports left in $OUT.
  install_flashmla
  metrics=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__grid_size,dram__throughput.avg.pct_of_peak_sustained_elapsed
  ncu_common=(--clock-control none --cache-control none --kernel-name-base demangled
              --kernel-name regex:mla --launch-skip 30)
  rows_=(${KJIT_NCU_ROWS:-20:64:1024 20:8:4096 20:1:1024 128:64:4096})
  for row in "${rows_[@]}"; do
    IFS=: read -r h b l <<<"$row"
    only=(--only-heads "$h" --only-batch "$b" --only-length "$l")
    step "ncu_kjit_$h-$b-$l" timeout 120 ncu "${ncu_common[@]}" --launch-count 4 --metrics "$metrics" \
      "$bin/kjit_bench_mla_decode" "${only[@]}"
    PYTHONPATH=/tmp/psite step "ncu_flashmla_$h-$b-$l" timeout 120 ncu "${ncu_common[@]}" \
      --launch-count 4 --metrics "$metrics" python3 bench/mla_decode_peers.py "${only[@]}"
  done
  IFS=: read -r h b l <<<"${rows_[0]}"
  only=(--only-heads "$h" --only-batch "$b" --only-length "$l")
  for peer in kjit flashmla; do
    cmd=("$bin/kjit_bench_mla_decode"); regex=mla_decode_sm90
    [ "$peer" = flashmla ] && cmd=(python3 bench/mla_decode_peers.py) regex=splitkv_mla
    PYTHONPATH=/tmp/psite step "ncu_full_$peer" timeout 200 ncu --set full --import-source no \
      --clock-control none --kernel-name-base demangled --kernel-name regex:"$regex" \
      --launch-skip 30 --launch-count 1 -f -o "$final_out/mla_$peer" "${cmd[@]}" "${only[@]}"
  done
  for log in "$out"/ncu_kjit_*.log "$out"/ncu_flashmla_*.log; do
    echo "== $(basename "$log" .log)"
    grep -E '^  [a-zA-Z_:<> ]*(mla|combine)|gpu__time|dram__|launch__grid' "$log" | cut -c1-150
  done
  for peer in kjit flashmla; do
    ncu_where "mla_$peer" 30
  done
fi
if [ "$what" = moe ]; then
  # The MoE router's, dispatch layout's, permutation's, grouped GEMM's (16-bit and FP4 weights),
  # balance statistics' and FP4 quantizer's tests against the references; a router, a
  # permutation, three GEMM, a balance and two align (cluster of 8) cases under memcheck, two GEMM
  # and an align case (its blocks read each other's shared memory) under racecheck.
  sharded_tests moe_tests '*MoeRouter*:*MoeAlign*:*MoePermute*:*MoeGemm*:*MoeBalance*:*MoeQuantize*:*MoeLayer*:*MoeFp4Accuracy*:*MoeGolden*' 240
  sanitize moe_memcheck memcheck 120 'All/MoeRouterTest.*/deepseek_v3_grouped:All/MoePermuteTest.*/invalid_ids:All/MoeGemmTest.*/skewed_fp16:All/MoeGemmTest.*/nvfp4_forced_64_rows_2_stages:All/MoeGemmTest.*/mxfp4_block256_routing_skewed:All/MoeGemmMaskedTest.*/mxfp4_glm_down_block128:All/MoeBalanceTest.*/deepseek_v3_sequences_bias:All/MoeAlignTest.*/deepseek_t16384_cluster8:All/MoeAlignTest.*/skewed_cluster4'
  sanitize moe_racecheck racecheck 120 'All/MoeGemmTest.*/forced_8_stages:All/MoeGemmTest.*/mxfp4_plain_block128:All/MoeGemmTest.*/nvfp4_block256_k_320_3_stages:All/MoeAlignTest.*/glm_t16384_cluster8'
  tally moe_tests
  sanitizer_verdicts moe_memcheck moe_racecheck
  grep -h -E '^\[ moe (gemm|layer)' "$out/moe_tests.log"
fi
decode_checks() {  # decode_checks: the MoE GEMM, layer and golden tests, then memcheck and
                   # racecheck on decode-kernel cases (config decode 1: NVFP4 SwiGLU, MXFP4 at K 384
                   # with skewed routing, MXFP4 masked, fp16 weights at K 320; decode 2: MXFP4 at
                   # K 384 skewed, fp16 over blocks of 128)
  local cases='All/MoeGemmTest.*/nvfp4_decode_kernel_swiglu:All/MoeGemmTest.*/mxfp4_decode_kernel_skewed_k_384:All/MoeGemmMaskedTest.*/mxfp4_decode_kernel_plain:All/MoeGemmTest.*/fp16_decode_kernel_skewed_k_320:All/MoeGemmTest.*/mxfp4_decode_one_set_skewed_k_384:All/MoeGemmTest.*/fp16_decode_one_set_block128'
  sharded_tests decode_tests '*MoeGemm*:*MoeLayer*:*MoeGolden*' 200
  sanitize decode_memcheck memcheck 120 "$cases"
  sanitize decode_racecheck racecheck 120 "$cases"
}
if [ "$what" = moe-decode ]; then
  # The decode kernel (config decode 1, FP4 and 16-bit weights): its forced GEMM cases
  # (contiguous and masked) beside the GEMM, layer and golden tests, memcheck and racecheck on
  # four of its cases, the decode bench (the kernel beside the pipelines on the same calls), then
  # the tuner on the NVFP4 decode shapes (T 1 and T 64, GLM's gate/up and down) with the
  # layout-shaped workload.
  decode_checks
  step decode_bench timeout 150 "$bin/kjit_bench_moe_gemm" decode
  export KJIT_TUNING_DB="$(mktemp -d)/decode-tuning.sqlite"
  step decode_tune timeout 200 "$bin/kjit" tune --op moe_grouped_gemm \
    --shape E=64,K=2048,N=3072,block_m=64,epilogue=1,masked=0,rows=256,weights=1,decode=1 \
    --shape E=64,K=1536,N=2048,block_m=64,epilogue=2,masked=0,rows=256,weights=1,decode=1 \
    --shape E=64,K=2048,N=3072,block_m=64,epilogue=1,masked=0,rows=4288,weights=1,decode=1 \
    --shape E=64,K=1536,N=2048,block_m=64,epilogue=2,masked=0,rows=4288,weights=1,decode=1
  tally decode_tests
  sanitizer_verdicts decode_memcheck decode_racecheck
  grep -h -E '^\[ moe (gemm|layer)' "$out/decode_tests.log"
  echo "== decode_bench"; cat "$out/decode_bench.log"
  echo "== decode_tune"; grep -vE 'ETA|^$' "$out/decode_tune.log" | tail -40
fi
if [ "$what" = moe-decode-ab ]; then
  # A decode-kernel change against template variants (scripts/gpu-bundle.sh with KJIT_VARIANTS):
  # the decode bench on main and each variant (KJIT_AB_VARIANTS, default all), alternating; then
  # the MoE GEMM, layer and golden tests and the decode cases' memcheck and racecheck on the
  # templates of KJIT_AB_TEST (the candidate for main) or main's.
  ab_variants
  step decode_ab scripts/gpu-ab.sh "main $variants" "$bin/kjit_bench_moe_gemm" decode
  tests_on_candidate
  decode_checks
  tally decode_tests
  sanitizer_verdicts decode_memcheck decode_racecheck
  echo "== decode_ab"; cat "$out/decode_ab.log"
fi
if [ "$what" = moe-bench ]; then
  # The grouped GEMM beside torch._grouped_mm and DeepGEMM (carried wheels, .peers/deepgemm),
  # the layer beside the torch composition.
  step moe_gemm_bench timeout 200 "$bin/kjit_bench_moe_gemm"
  step moe_layer_bench timeout 120 "$bin/kjit_bench_moe_layer"
  PYTHONUNBUFFERED=1 step moe_layer_torch timeout 150 python3 bench/moe_layer_torch.py
  python3 -m pip install -q --no-index --no-deps --target /tmp/psite .peers/deepgemm/*.whl \
    >"$out/deepgemm_install.log" 2>&1
  PYTHONPATH=/tmp/psite PYTHONUNBUFFERED=1 step moe_gemm_peers timeout 300 python3 \
    bench/moe_gemm_peers.py
  for log in moe_gemm_bench moe_gemm_peers moe_layer_bench moe_layer_torch; do
    echo "== $log"; cat "$out/$log.log"
  done
fi
if [ "$what" = moe-ncu ]; then
  # Where a decode call's time goes: the first NVFP4 gate/up launch of the decode kernel (the FP4
  # decode default) and the first bf16 pipeline launch at each T of KJIT_NCU_TOKENS (default
  # "1 16": T k 4 and 64) of kjit_bench_moe_gemm decode, ncu's full set at the card's own clocks;
  # the SASS lines with the most stall samples printed, the reports left in $OUT.
  # KJIT_NCU_KERNELS (default "fp4 bf16") picks the kernels.
  for tokens in ${KJIT_NCU_TOKENS:-1 16}; do
    for kernel in ${KJIT_NCU_KERNELS:-fp4 bf16}; do
      regex="moe_grouped_gemm_decode<__nv_bfloat16, \\(int\\)1,"
      [ "$kernel" = bf16 ] && regex="moe_grouped_gemm<__nv_bfloat16"
      name="moe_decode_${kernel}_t$tokens"
      step "ncu_$name" timeout 240 ncu --set full --import-source no --clock-control none \
        --kernel-name-base demangled --kernel-name regex:"$regex" --launch-count 1 -f \
        -o "$final_out/$name" "$bin/kjit_bench_moe_gemm" decode "$tokens"
      ncu_where "$name" 40
    done
  done
fi
if [ "$what" = moe-layer-ncu ]; then
  # Where the NVFP4 layer's time goes at T KJIT_NCU_T (default 16384): each kernel's time over two
  # layer calls of kjit_bench_moe_layer (past its 4 quantiser launches), then ncu's full set on the
  # layer's first gate/up launch beside the balanced GEMM row's (kjit_bench_moe_gemm prefill 65536
  # layer: glm-gate-up-256, its first FP4 launch over 256 token rows): the rate each holds, its SM
  # clock and stalls.
  t="${KJIT_NCU_T:-16384}"
  step moe_layer_kernels timeout 200 ncu --clock-control none --metrics gpu__time_duration.sum \
    --launch-skip 4 --launch-count 14 --csv "$bin/kjit_bench_moe_layer" nvfp4 "$t"
  python3 -c 'import csv, sys
for row in csv.reader(open(sys.argv[1])):
    if len(row) == 15 and row[12] == "gpu__time_duration.sum":
        print(f"{row[4][:72]:72} {row[14]:>12} {row[13]}")' "$out/moe_layer_kernels.log"
  # NVFP4 (1), 256 token rows, 128 weight rows, any stages, SwiGLU (1); demangled names may cast.
  gate_up='moe_grouped_gemm_fp4<[^,]*1, [^,]*256, [^,]*128, [^,]+, [^,]*1,'
  step ncu_layer_gate_up timeout 200 ncu --set full --import-source no --clock-control none \
    --kernel-name-base demangled --kernel-name regex:"$gate_up" --launch-count 1 -f \
    -o "$final_out/layer_gate_up" "$bin/kjit_bench_moe_layer" nvfp4 "$t"
  ncu_where layer_gate_up 20
  step ncu_balanced_gate_up timeout 200 ncu --set full --import-source no --clock-control none \
    --kernel-name-base demangled --kernel-name regex:"$gate_up" --launch-count 1 -f \
    -o "$final_out/balanced_gate_up" "$bin/kjit_bench_moe_gemm" prefill 65536 layer
  ncu_where balanced_gate_up 20
fi
if [ "$what" = moe-align-ncu ]; then
  # Where align's time goes at few pairs: ncu's full set on one align launch (the fourth, past
  # the warm-up) of kjit_bench_moe_router's rows ROUTER_T in KJIT_NCU_ROWS; the SASS lines with
  # the most stall samples.
  rows="${KJIT_NCU_ROWS:-deepseek-v3_1 deepseek-v3_16 deepseek-v3_256}"
  for row in $rows; do
    step "ncu_align_$row" timeout 120 ncu --set full --warp-sampling-interval 0 --import-source no \
      --kernel-name-base demangled \
      --kernel-name regex:moe_align --launch-skip 3 --launch-count 1 -f -o "$final_out/align_$row" \
      "$bin/kjit_bench_moe_router" ${row/_/ }
    ncu_where "align_$row" 25
  done
fi
if [ "$what" = moe-router ]; then
  # router_topk and align beside the torch composition and sgl-kernel (.peers/sglkernel).
  step moe_router_bench timeout 120 "$bin/kjit_bench_moe_router"
  mkdir -p /tmp/psite && tar -xJf .peers/sglkernel/*.tar.xz -C /tmp/psite \
    >"$out/sglkernel_install.log" 2>&1
  PYTHONPATH=/tmp/psite PYTHONUNBUFFERED=1 step moe_router_peers timeout 200 python3 \
    bench/moe_router_peers.py
  for log in moe_router_bench moe_router_peers; do echo "== $log"; cat "$out/$log.log"; done
fi
if [ "$what" = l2-probe ]; then
  # Which SMs share what the L2 holds (bench/l2_sharing.cpp): the rows' times, then ncu's DRAM
  # bytes and L2 hit rate of one launch a row, in the same order (every size by all, even and
  # lower SMs, then SM 0 with each other SM).
  step l2_times timeout 120 "$bin/kjit_bench_l2_sharing"
  step l2_ncu timeout 300 ncu --metrics dram__bytes_read.sum,lts__t_sector_hit_rate.pct \
    --kernel-name l2_sharing "$bin/kjit_bench_l2_sharing" once
  cat "$out/l2_times.log"
  echo "== l2_ncu (a row a launch: readers, MB, passes, arg; DRAM read, L2 hit rate)"
  # The rows' lines and ncu's reports come apart in the log, each in launch order: the n-th row
  # with the n-th report.
  awk '/^(slices|all|even|lower|pair) / {row[++rows] = $1 " " $2 " " $3 " " $4}
       /dram__bytes_read.sum/ {dram[++drams] = $NF " " $(NF-1)}
       /lts__t_sector_hit_rate.pct/ {hit[++hits] = $NF " " $(NF-1)}
       END {for (i = 1; i <= rows; ++i) print row[i] "  " dram[i] "  " hit[i]}' "$out/l2_ncu.log"
fi
if [ "$what" = moe-offload ]; then
  # The offloaded MoE stack: its GPU tests (bit for bit against every expert resident), a
  # memcheck pass over one of them, then the GLM-4.7-Flash-shaped benchmark.
  step offload_tests timeout 200 "$bin/kjit_gpu_tests" --gtest_filter='*ExpertOffload*'
  sanitize offload_memcheck memcheck 150 '*ExpertOffload*/bf16_t16_topk_slots_passes_prefetch'
  step offload_bench timeout 400 "$bin/kjit_bench_moe_offload"
  grep -E '^\[  (PASSED|FAILED) |^\[  FAILED|Failure|Expected|Which is|input seed' \
    "$out/offload_tests.log" | head -30
  sanitizer_verdicts offload_memcheck
  echo "== offload_bench"; cat "$out/offload_bench.log"
fi
if [ "$what" = zigzag ]; then
  # Zigzag context parallelism: the component kernels bit for bit, the multi-rank suite's zigzag
  # cases through the MPI backend at 1, 2, 4, 8 ranks and NCCL at one (a rank a GPU where there
  # are several), a sanitizer subset of the kernels, the single-GPU benchmark.
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 KJIT_COMM_TIMEOUT_S=120
  export OMPI_MCA_btl_vader_single_copy_mechanism=none NCCL_NVLS_ENABLE=0
  mpirun=(timeout 240 mpirun --oversubscribe --bind-to none)
  sharded_tests zigzag_tests '*Zigzag*' 200
  for n in 1 2 4 8; do
    KJIT_COMM=mpi step "zigzag_mpi_$n" "${mpirun[@]}" -n "$n" "$bin/kjit_dist_tests" \
      --require-gpu --gtest_filter='*Zigzag*'
  done
  KJIT_COMM=nccl step zigzag_nccl_1 "${mpirun[@]}" -n 1 "$bin/kjit_dist_tests" --require-gpu \
    --gtest_filter='*Zigzag*'
  gpus=$(nvidia-smi -L | wc -l)
  for n in 2 4 8; do
    if [ "$gpus" -ge "$n" ]; then
      KJIT_COMM=nccl step "zigzag_nccl_$n" "${mpirun[@]}" -n "$n" "$bin/kjit_dist_tests" \
        --require-gpu --gtest_filter='*Zigzag*'
    fi
  done
  sanitize zigzag_memcheck memcheck 120 'Seed/ZigzagCopyGpu.*/1*:*ZigzagCopyConfigs*:*ZigzagCopyMoves*'
  step zigzag_bench timeout 240 "$bin/kjit_bench_zigzag" --csv "$final_out/zigzag.csv"
  tally zigzag_tests
  for log in zigzag_mpi_1 zigzag_mpi_2 zigzag_mpi_4 zigzag_mpi_8 zigzag_nccl_1 zigzag_nccl_2 \
    zigzag_nccl_4 zigzag_nccl_8; do
    [ -f "$out/$log.log" ] || continue
    echo "== $log"; grep -E '^\[  (PASSED|FAILED) |^\[  FAILED|Failure|Expected|zigzag   \]' \
      "$out/$log.log" | head -60
  done
  sanitizer_verdicts zigzag_memcheck
  echo "== zigzag_bench"; cat "$out/zigzag_bench.log"
fi
if [ "$what" = dist ]; then
  # The multi-rank suites as real processes on the first GPU: the MPI backend at 1, 2, 4 and 8
  # ranks, NCCL at one rank (and at a rank a GPU where there are 2, 4 or 8), a rank that dies
  # mid-collective; then bandwidth (NCCL at one rank beside a device copy, MPI at 2 and 4 ranks,
  # NCCL over the GPUs).
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 KJIT_COMM_TIMEOUT_S=120
  export OMPI_MCA_btl_vader_single_copy_mechanism=none
  mpirun=(timeout 300 mpirun --oversubscribe --bind-to none)
  step comm_unit "$bin/kjit_unit_tests" --gtest_filter='CommChecks.*'
  KJIT_COMM=mpi step comm_setup "${mpirun[@]}" -n 2 "$bin/kjit_dist_tests" \
    --gtest_filter='CommSetup.*:CommChecksOverMpi.*'
  for n in 1 2 4 8; do
    KJIT_COMM=mpi step "dist_mpi_$n" "${mpirun[@]}" -n "$n" "$bin/kjit_dist_tests" --require-gpu
  done
  KJIT_COMM=nccl step dist_nccl_1 "${mpirun[@]}" -n 1 "$bin/kjit_dist_tests" --require-gpu
  # A rank a GPU through NCCL where the machine has several (never NVLink multicast).
  gpus=$(nvidia-smi -L | wc -l)
  export NCCL_NVLS_ENABLE=0
  for n in 2 4 8; do
    if [ "$gpus" -ge "$n" ]; then
      KJIT_COMM=nccl step "dist_nccl_$n" "${mpirun[@]}" -n "$n" "$bin/kjit_dist_tests" --require-gpu
      KJIT_COMM=nccl step "bench_comm_nccl_$n" "${mpirun[@]}" -n "$n" "$bin/kjit_bench_comm"
    fi
  done
  step dist_rank_exit "$bin/rank_exit.sh" mpirun "$bin/kjit_dist_tests"
  KJIT_COMM=nccl step bench_comm_nccl_1 "${mpirun[@]}" -n 1 "$bin/kjit_bench_comm"
  KJIT_COMM=mpi step bench_comm_mpi_2 "${mpirun[@]}" -n 2 "$bin/kjit_bench_comm"
  KJIT_COMM=mpi step bench_comm_mpi_4 "${mpirun[@]}" -n 4 "$bin/kjit_bench_comm"
  for log in comm_unit comm_setup dist_mpi_1 dist_mpi_2 dist_mpi_4 dist_mpi_8 dist_nccl_1 \
    dist_nccl_2 dist_nccl_4 dist_nccl_8; do
    [ -f "$out/$log.log" ] || continue
    echo "== $log: $(grep -E '^world:|tests? ran|PASSED|FAILED' "$out/$log.log" | tr '\n' ' ')"
    grep -E '^\[  FAILED  \] [A-Z]|Failure|rank [0-9]' "$out/$log.log" | head -8
  done
  echo "== dist_rank_exit"; grep -E '^rank-exit|^rank_exit' "$out/dist_rank_exit.log"
  for log in bench_comm_nccl_1 bench_comm_mpi_2 bench_comm_mpi_4 bench_comm_nccl_2 \
    bench_comm_nccl_4 bench_comm_nccl_8; do
    [ -f "$out/$log.log" ] || continue
    echo "== $log"; grep -E '^\||^backend' "$out/$log.log"
  done
fi
if [ "$what" = all ] || [ "$what" = bench ]; then
  step compile_latency "$bin/kjit_bench_compile_latency" 6
  # Default configs first, then tune the preset (timed) and measure again with the tuned ones.
  export KJIT_TUNING_DB="$out/tuning.sqlite"
  rm -f "$KJIT_TUNING_DB"
  KJIT_PRINT_CONFIG=1 step merge_states_default "$bin/kjit_bench_merge_states"
  step tune_merge_states "$bin/kjit" tune --preset merge_states
  "$bin/kjit" cache ls >>"$out/tune_merge_states.log" 2>&1
  KJIT_PRINT_CONFIG=1 step merge_states_tuned "$bin/kjit_bench_merge_states"
  step launch_overhead "$bin/kjit_bench_launch_overhead" --benchmark_repetitions=5 \
    --benchmark_report_aggregates_only=true --benchmark_min_time=0.5
fi
cat "$out/facts.log" "$out/info.log"
for log in gpu_tests unit_tests; do
  [ -f "$out/$log.log" ] && grep -E '^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|tests? ran' "$out/$log.log"
done
for log in memcheck racecheck attention_memcheck attention_racecheck attention_synccheck; do
  [ -f "$out/$log.log" ] && { echo "== $log"; grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED' "$out/$log.log" | tail -4; }
done
for log in compile_latency merge_states_default tune_merge_states merge_states_tuned launch_overhead choice_cost example example_c_api; do
  [ -f "$out/$log.log" ] && { echo "== $log"; grep -vE '^\*\*\*|^$|ETA' "$out/$log.log" | tail -24; }
done
printf '%s\n' "${summary[@]}"
