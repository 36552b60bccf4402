#!/usr/bin/env bash
# The main job: sets up, builds, and shows what kjit does on this machine. With a GPU: device
# facts, attention forward and backward tuned for the Llama 3 8B presets (prefill, training,
# zigzag context parallelism's grouped attention), MLA decode and the MoE router and grouped
# GEMM (bf16 and NVFP4 experts) for GLM-4.7-Flash, the GPU
# suite, the multi-rank suites (mpirun, when OpenMPI is here: collectives, helix MLA decode,
# zigzag context parallelism), the
# benchmarks of every model path and the Python package (tests, call overhead, a training step);
# without: `kjit info` and every shipped specialisation
# compiled for sm_90a with its resource report (a GPU is needed to run them).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset default >/dev/null
cmake --build build/default -j "$(nproc)"
kjit=build/default/tools/kjit
"$kjit" info
echo
if "$kjit" info --json | grep -q '"available": true'; then
  "$kjit" precompile --check
  "$kjit" tune --preset llama3-8b-prefill --preset llama3-8b-train --preset llama3-8b-zigzag \
    --preset glm-4.7-flash-decode --preset glm-4.7-flash-router --preset glm-4.7-flash-moe-gemm \
    --preset glm-4.7-flash-moe-gemm-nvfp4 --preset zigzag_copy-llama3-8b
  build/default/tests/kjit_gpu_tests
  if command -v mpirun >/dev/null && [ -x build/default/tests/kjit_dist_tests ]; then
    (cd build/default && ctest -L dist --output-on-failure)
    KJIT_COMM=mpi OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
      mpirun --oversubscribe -n 2 build/default/bench/kjit_bench_comm 256
  fi
  build/default/examples/kjit_example_c_api
  build/default/bench/kjit_bench_choice_cost
  build/default/bench/kjit_bench_compile_latency
  build/default/bench/kjit_bench_launch_overhead
  build/default/bench/kjit_bench_merge_states
  build/default/bench/kjit_bench_attention
  build/default/bench/kjit_bench_attention_backward
  build/default/bench/kjit_bench_attention_grouped --only model=8b --only S=8192
  build/default/bench/kjit_bench_zigzag
  build/default/bench/kjit_bench_mla_decode --only-heads 20
  build/default/bench/kjit_bench_helix_decode
  build/default/bench/kjit_bench_moe_router
  build/default/bench/kjit_bench_moe_gemm
  build/default/bench/kjit_bench_moe_layer
  # The Python package over this build (torch in build/python-venv): its tests, its call overhead
  # beside the C++ API's, and a Llama layer's training step beside torch SDPA.
  scripts/test-python.sh
  PYTHONPATH=bench KJIT_LIBRARY=build/default/runtime/libkjit.so build/python-venv/bin/python \
    bench/python_overhead.py build/default/bench/kjit_bench_op_call_overhead
  PYTHONPATH=bench KJIT_LIBRARY=build/default/runtime/libkjit.so build/python-venv/bin/python \
    bench/python_training_step.py
else
  "$kjit" precompile --arch sm_90a --check
  echo
  echo "No GPU here: the kernels above were compiled for sm_90a (H100) but need a GPU to run."
  echo "On a GPU machine: scripts/run.sh, or scripts/gpu-bundle.sh here + scripts/gpu-suite.sh there."
fi
