#!/usr/bin/env bash
# SASS of one kernel template instance without a GPU: nvcc compiles it for sm_90a (or $ARCH) to a
# cubin and nvdisasm (NVIDIA's wheel, fetched once into .cache/nvdisasm: the toolkit here ships
# no disassembler) prints it. An instruction count per opcode follows, for comparing a change.
#   scripts/sass.sh moe/grouped_gemm_fp4.cuh \
#     'kjit::moe::moe_grouped_gemm_fp4<1, 64, 64, 6, 1, false>' 'const __grid_constant__ KjitMoeGemmParams'
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 3 ] || { echo "usage: $0 TEMPLATE NAME_EXPRESSION PARAMETER_DECLARATION" >&2; exit 2; }
arch="${ARCH:-sm_90a}"
tool=.cache/nvdisasm/nvidia/cu13/bin/nvdisasm
if [ ! -x "$tool" ]; then
  mkdir -p .cache/nvdisasm
  pip download -q --no-deps -d .cache/nvdisasm "nvidia-cuda-nvdisasm==13.2.51"
  (cd .cache/nvdisasm && python3 -m zipfile -e nvidia_cuda_nvdisasm-*.whl . && chmod +x "${tool#.cache/nvdisasm/}")
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
printf '#include "%s"\ntemplate __global__ void %s(%s);\n' "$1" "$2" "$3" >"$work/k.cu"
nvcc -std=c++17 -Itemplates -gencode "arch=compute_${arch#sm_},code=$arch" -cubin \
  -o "$work/k.cubin" "$work/k.cu"
"$tool" -c "$work/k.cubin" | tee "$work/k.sass"
echo "== instructions per opcode"
grep -oE '^\s+/\*[0-9a-f]+\*/\s+(@!?U?P[0-9T] )?[A-Z0-9_.]+' "$work/k.sass" | awk '{print $NF}' |
  sed 's/\..*//' | sort | uniq -c | sort -rn
