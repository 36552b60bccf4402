#!/usr/bin/env bash
# Downloads the peer packages the GPU suite times kjit beside (../shared/peers-kit/README.md) into
# .peers/ (ignored by git): FlashMLA for the mla mode, DeepGEMM (with its two binding packages) for
# the moe mode. Wheels only, for the GPU machine's python 3.12; the suite installs them there into
# /tmp/psite with pip --no-index.
set -euo pipefail
cd "$(dirname "$0")/.."
get() {  # get FOLDER PACKAGE==VERSION...
  local folder=".peers/$1"; shift
  mkdir -p "$folder"
  pip download -q --no-deps --python-version 3.12 --only-binary=:all: -d "$folder" "$@"
}
get flashmla sgl-flash-mla==1.0.0
get deepgemm sgl-deep-gemm==0.1.4.post1 apache-tvm-ffi==0.1.15.post2 torch-c-dlpack-ext==0.1.5
du -sh .peers/*
