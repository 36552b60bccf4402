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
# FlashAttention-4 (CuTe DSL; its kernels compile in the process, from Python): flash-attn-4 with
# quack and the DSL, whose Python sources are in libs-core and compiler in libs-cu13 (the image has
# cuda-bindings, protobuf and einops). Installed for python 3.12 here, pruned (the aarch64 stubs, a
# static library), packed with xz (66 MB) and split in two, each under a call's carry (64 MiB
# with the bundle): gpu-suite's fa4-stage mode takes part a, its python mode part b.
if [ ! -f .peers/fa4_b/fa4_bundle.tar.xz.sha256 ]; then
  work="$(mktemp -d)"
  pip download -q --no-deps --python-version 3.12 --platform manylinux_2_28_x86_64 \
    --only-binary=:all: -d "$work/wheels" flash-attn-4==4.0.0b36 quack-kernels==0.6.5 \
    nvidia-cutlass-dsl==4.8.1 nvidia-cutlass-dsl-libs-base==4.8.1 \
    nvidia-cutlass-dsl-libs-core==4.8.1 nvidia-cutlass-dsl-libs-cu13==4.8.1 \
    apache-tvm-ffi==0.1.15.post2 torch-c-dlpack-ext==0.1.5
  pip install -q --no-index --no-deps --no-compile --python-version 3.12 \
    --platform manylinux_2_28_x86_64 --only-binary=:all: --target "$work/site" "$work"/wheels/*.whl
  rm -rf "$work/site/bin" "$work/site/nvidia_cutlass_dsl/cu13/lib/stubs" \
    "$work"/site/nvidia_cutlass_dsl/cu13/lib/*.a
  tar -C "$work/site" -cf - . | xz -T0 -9 >"$work/fa4_bundle.tar.xz"
  (cd "$work" && split -b 40M -d -a 1 fa4_bundle.tar.xz fa4_bundle.tar.xz.part- &&
    sha256sum fa4_bundle.tar.xz >fa4_bundle.tar.xz.sha256)
  mkdir -p .peers/fa4_a .peers/fa4_b
  mv "$work/fa4_bundle.tar.xz.part-0" .peers/fa4_a/
  mv "$work/fa4_bundle.tar.xz.part-1" "$work/fa4_bundle.tar.xz.sha256" .peers/fa4_b/
  rm -rf "$work"
fi
du -sh .peers/*
