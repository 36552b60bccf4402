#!/usr/bin/env bash
# Installs the Debian packages kjit builds against. The CUDA 13 toolkit (nvcc, NVRTC, CCCL
# headers) is expected at /usr/local/cuda or $CUDA_HOME; it is part of the machine image.
set -euo pipefail
pkgs=(cmake ninja-build g++ clang-format libgtest-dev libgmock-dev libbenchmark-dev
      libcli11-dev nlohmann-json3-dev libfmt-dev libxxhash-dev libsqlite3-dev libdlpack-dev
      pkg-config binutils util-linux libopenmpi-dev openmpi-bin python3-venv python3-dev libffi-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
cuda_home="${CUDA_HOME:-${CUDA_PATH:-/usr/local/cuda}}"
if [ ! -f "$cuda_home/include/nvrtc.h" ]; then
  echo "install-deps: no CUDA toolkit at $cuda_home (set CUDA_HOME); kjit needs CUDA >= 12.8 with NVRTC" >&2
  exit 1
fi
