#!/usr/bin/env bash
# make gpu-check: on a machine with an NVIDIA GPU and nothing installed but
# the driver, CUDA and PyTorch. It runs what `make gpu-prep` built on a
# machine with Go (bin/gpu: the test binaries of the CUDA backend and of
# training, lqcbench, and the fixtures the tests read): first the CUDA
# backend's whole test suite on the real driver (every kernel against the
# CPU backend, stories260K and gpt2-tiny against PyTorch's logits,
# llama.cpp's Q8_0/Q4_0 files against the CPU), then training's losses and
# gradients against PyTorch's, then the speed table on the TinyLlama-1.1B shape beside PyTorch
# eager bf16. About 5 minutes on an H100.
set -euo pipefail
cd "$(dirname "$0")/../.."
G="$PWD/bin/gpu"
for b in cuda.test train.test lqcbench; do
  [ -f "$G/$b.gz" ] && gunzip -f "$G/$b.gz"
  [ -x "$G/$b" ] || { echo "gpu-check: no $G/$b: run make gpu-prep first (on a machine with Go)" >&2; exit 1; }
done
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader || true
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' || true

echo "== the CUDA test suite on the real GPU"
# Fixtures left out of bin/gpu (to fit the 64 MiB a device run carries) skip.
(cd runtime/cuda && LQC_SHARED="$G/shared" LQC_REQUIRE_FIXTURES=0 LQC_CUDA_TEST=cuda \
  timeout 240 "$G/cuda.test" -test.v -test.count=1) 2>&1 | grep -E '^(=== RUN|\s*--- |PASS|FAIL|ok)|_test.go' | grep -v '=== RUN'

echo "== training on the GPU: stories260K's losses and gradients against PyTorch's"
(cd train && LQC_SHARED="$G/shared" LQC_REQUIRE_FIXTURES=0 LQC_CUDA_TEST=cuda \
  timeout 90 "$G/train.test" -test.v -test.count=1 -test.run 'TestReferenceOnCUDA|TestCUDAMatchesCPUOnGPT2') 2>&1 | grep -E '^(\s*--- |PASS|FAIL|ok)|_test.go'

echo "== speed: TinyLlama-1.1B shape, pp512 / tg128"
timeout 420 "$G/lqcbench" gpu --device cuda --layers 22 --runs 3 --pp 512 --tg 128 --work "${TMPDIR:-/tmp}/lqc-gpu-bench"
