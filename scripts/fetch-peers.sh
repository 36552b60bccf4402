#!/usr/bin/env bash
# Downloads the peer packages the GPU suite times kjit beside (../shared/peers-kit/README.md) into
# .peers/ (ignored by git): FlashAttention-3's forward (fa3-fwd) for the attention-bench mode,
# FlashMLA for the mla mode, DeepGEMM (with its two binding packages) for the moe-bench mode,
# sgl-kernel (its router and align kernels) for the moe-router mode: its 377 MB wheel repacked
# without the parts no mode loads (FlashAttention, sm100, infllm's extension), 11 MB; pytest for
# the python mode (the GPU image's python may lack it). Wheels only, for the GPU machine's python
# 3.12; the suite installs them there into /tmp/psite with pip --no-index.
set -euo pipefail
cd "$(dirname "$0")/.."
get() {  # get FOLDER PACKAGE==VERSION...
  local folder=".peers/$1"; shift
  mkdir -p "$folder"
  pip download -q --no-deps --python-version 3.12 --only-binary=:all: -d "$folder" "$@"
}
get fa3 fa3-fwd==0.0.3
get flashmla sgl-flash-mla==1.0.0
get deepgemm sgl-deep-gemm==0.1.4.post1 apache-tvm-ffi==0.1.15.post2 torch-c-dlpack-ext==0.1.5
get pytest pytest==8.3.5 pluggy==1.5.0 iniconfig==2.0.0 packaging==24.2
if [ ! -f .peers/sglkernel/sglang_kernel-0.4.6-slim.tar.xz ]; then
  wheel_dir="$(mktemp -d)"
  pip download -q --no-deps --python-version 3.12 --only-binary=:all: -d "$wheel_dir" \
    sglang-kernel==0.4.6
  (cd "$wheel_dir" && python3 -m zipfile -e sglang_kernel-*.whl unpacked &&
    rm -rf unpacked/sgl_kernel/flash_ops.abi3.so unpacked/sgl_kernel/sm100 \
      unpacked/sgl_kernel/infllm_ops*)
  mkdir -p .peers/sglkernel
  tar -C "$wheel_dir/unpacked" -cJf .peers/sglkernel/sglang_kernel-0.4.6-slim.tar.xz .
  rm -rf "$wheel_dir"
fi
du -sh .peers/*
