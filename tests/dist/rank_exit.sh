#!/usr/bin/env bash
# A rank that exits mid-collective: the last of 3 ranks leaves without a word; the other two must
# each fail with CommError within the timeout (3 s here), and nothing may hang past it.
#   rank_exit.sh <mpirun> <kjit_dist_tests>     (exit 77: no GPU, skipped)
set -uo pipefail
mpirun="$1" tests="$2"
start=$SECONDS
# --enable-recovery: mpirun must not kill the survivors itself when a rank dies; kjit must.
out="$(KJIT_DIST_RANK_EXIT=1 KJIT_COMM=mpi KJIT_COMM_TIMEOUT_S=3 timeout 60 \
  "$mpirun" --oversubscribe --enable-recovery -n 3 "$tests" --require-gpu \
  --gtest_filter=CommRankExit.* 2>&1)"
rc=$?
echo "$out"
elapsed=$((SECONDS - start))
if echo "$out" | grep -q "^skipped: "; then exit 77; fi
if [ "$rc" = 124 ]; then echo "rank_exit: hung past 60 s"; exit 1; fi
errors="$(echo "$out" | grep -c "^rank-exit: rank [01]: CommError after")"
echo "rank_exit: $errors of 2 surviving ranks failed with CommError; whole run ${elapsed} s"
[ "$errors" = 2 ] && [ "$elapsed" -lt 30 ]
