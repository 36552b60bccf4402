#!/usr/bin/env bash
# Fails if any given binary links libcuda (directly or through a dependency).
status=0
for bin in "$@"; do
  if ldd "$bin" | grep -q 'libcuda\.so'; then
    echo "FAIL: $bin links libcuda:"; ldd "$bin" | grep libcuda; status=1
  else
    echo "ok: $bin does not link libcuda"
  fi
done
exit $status
