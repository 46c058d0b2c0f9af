# lqc — see README.md. Targets fetch what they need themselves: Go modules
# from the proxy, and real llama.cpp (npm node-llama-cpp) into the cache on
# first use.
GO       ?= go
BIN      := bin/lqc
FUZZTIME ?= 10s
SHARED   ?= $(or $(LQC_SHARED),../shared)
export CGO_ENABLED ?= 0

.PHONY: all build test unit arm64 fuzz lint gate interop conformance bench quality finetune-report demo clean ptx ptx-check gpu-prep gpu-check

all: build

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/lqc

# The whole suite, as CI runs it (with LQC_REQUIRE_FIXTURES=1): lint, unit
# and golden tests, the llama.cpp interop acceptance, the accuracy gate,
# and each fuzz target briefly.
test: lint ptx-check unit arm64 gate fuzz

unit:
	$(GO) test -count=1 ./...

# The NEON kernels against their portable twins, on arm64 under qemu-user
# (Debian's qemu-user-static): the whole CPU backend on an emulated CPU
# with the dot-product extension (SDOT), then the kernels again on a
# Cortex-A72, which lacks it (their ARMv8.0 twins). The test binary runs
# in its package's folder, as go test runs it.
QEMU_ARM64 ?= qemu-aarch64-static
arm64:
	@if ! command -v $(QEMU_ARM64) >/dev/null; then \
	  if [ "$$LQC_REQUIRE_FIXTURES" = 1 ]; then echo "arm64: $(QEMU_ARM64) is not installed (apt-get install qemu-user-static)" >&2; exit 1; fi; \
	  echo "arm64: skipped, $(QEMU_ARM64) is not installed (apt-get install qemu-user-static)"; exit 0; fi; \
	GOARCH=arm64 CGO_ENABLED=0 $(GO) test -c -o bin/cpu-arm64.test ./runtime/cpu && \
	cd runtime/cpu && for cpu in max cortex-a72; do \
	  run=.; [ $$cpu = max ] || run='TestKernelsAgree|TestHalfKernels|TestDecodeHalf'; \
	  $(QEMU_ARM64) -cpu $$cpu ../../bin/cpu-arm64.test -test.short -test.run "$$run" -test.v >../../bin/arm64-$$cpu.log 2>&1; rc=$$?; \
	  echo "arm64 ($$cpu): $$(grep -m1 -o 'kernels: .*' ../../bin/arm64-$$cpu.log), $$(grep -c '^--- PASS' ../../bin/arm64-$$cpu.log) tests passed"; \
	  if [ $$rc != 0 ]; then grep -E -B2 -A20 '^(--- FAIL|panic|FAIL)' ../../bin/arm64-$$cpu.log | head -100; exit 1; fi; \
	done

# Go's fuzzing engine now and then ends a healthy run with "context
# deadline exceeded" when a worker is busy at the deadline; each target
# gets one more try. A real crash cannot hide behind it: the failing input
# is saved under testdata/fuzz and the retry runs it first.
FUZZ = $(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME)
fuzz:
	$(FUZZ) ./codegen/gguf || $(FUZZ) ./codegen/gguf
	$(FUZZ) ./frontend/safetensors || $(FUZZ) ./frontend/safetensors
	$(FUZZ) ./quant/imatrix || $(FUZZ) ./quant/imatrix
	$(FUZZ) ./frontend/onnx || $(FUZZ) ./frontend/onnx

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	CGO_ENABLED=0 $(GO) build ./...
	@# arm64 (NEON kernels, dot_arm64.s) must keep building and its
	@# assembly match its Go declarations.
	GOARCH=arm64 CGO_ENABLED=0 $(GO) build ./...
	GOARCH=arm64 $(GO) vet ./runtime/cpu
	@# dot_arm64.s is what its generator writes (no hand edits).
	@mkdir -p bin
	cd runtime/cpu/asm && $(GO) run ./neon -out ../../../bin/dot_arm64.s -stubs ../../../bin/dot_stubs_arm64.go
	@cmp -s bin/dot_arm64.s runtime/cpu/dot_arm64.s && cmp -s bin/dot_stubs_arm64.go runtime/cpu/dot_stubs_arm64.go || \
	  { echo "runtime/cpu/dot_arm64.s is stale: cd runtime/cpu && go generate" >&2; exit 1; }
	@# -tags nocuda: no purego, a fully static binary.
	CGO_ENABLED=0 $(GO) build -tags nocuda -o bin/lqc-static ./cmd/lqc
	@file bin/lqc-static 2>/dev/null | grep -q 'statically linked' || { command -v file >/dev/null || exit 0; echo "bin/lqc-static is not static" >&2; exit 1; }

# The accuracy gate lqc runs on itself: the real stories260K converted to
# Q8_0 and Q4_0 must stay just within llama.cpp's own figures for the same
# files, text and context (shared/golden/real/quality.json: mean KLD
# 0.00073 and 0.0730, top-1 agreement 98.4% and 87.6%, PPL ratio 1.0019
# and 1.066). A regression in a quantizer or a kernel fails it.
GATE_REF  = $(SHARED)/models/stories260K/hf
GATE_DATA = $(SHARED)/golden/real/eval.txt
gate: build
	@if [ ! -d "$(GATE_REF)" ]; then \
	  if [ "$$LQC_REQUIRE_FIXTURES" = 1 ]; then echo "gate: no fixtures at $(SHARED)" >&2; exit 1; fi; \
	  echo "gate: skipped, no fixtures at $(SHARED) (set LQC_SHARED)"; exit 0; fi
	$(BIN) convert $(GATE_REF) -o bin/gate-q8_0.gguf --quant q8_0 --quiet
	$(BIN) eval bin/gate-q8_0.gguf --ref $(GATE_REF) --data $(GATE_DATA) --ctx 128 \
	  --max-kld 0.0010 --min-top1 0.97 --max-ppl-ratio 1.005
	$(BIN) convert $(GATE_REF) -o bin/gate-q4_0.gguf --quant q4_0 --quiet
	$(BIN) eval bin/gate-q4_0.gguf --ref $(GATE_REF) --data $(GATE_DATA) --ctx 128 \
	  --max-kld 0.085 --min-top1 0.85 --max-ppl-ratio 1.08

# Real llama.cpp (node-llama-cpp) runs the GGUF files lqc writes.
interop:
	$(GO) test -count=1 -v -run 'Interop' ./cmd/lqc

# ONNX's backend node tests (shared/onnx/node, v1.22) through import and
# the runtime, with pass/fail/skip counts per op. ONNX_NODE_TESTS=DIR runs
# another copy, such as Debian's libonnx-testdata
# (/usr/share/libonnx-testdata/data/node, ONNX 1.12).
conformance:
	LQC_ONNX_NODE_TESTS=$(ONNX_NODE_TESTS) $(GO) test -count=1 -v -run 'TestConformance' ./frontend/onnx

# lqc against llama.cpp, measured in the same run on the same files and
# threads: conversion (speed, peak RSS) against llama.cpp's quantizer, and
# pp64/tg32 tokens/s against llama.cpp's runtime; fused against unfused
# attention (time, peak memory); then the quantizer and kernel
# micro-benchmarks.
# Quantization quality of every type and method (bin/quality/quality.md
# and .json): the table in the README comes from here.
quality:
	$(GO) run ./testmodels/cmd/lqcbench quality

# Residual adapters of rank 2, 4, 8 and 16 trained on llama.cpp's Q4_0
# file of stories260K: the share of the quantization gap each recovers,
# loss curves and plots (bin/finetune-report).
finetune-report: build
	$(BIN) finetune $(SHARED)/golden/real/stories260K-Q4_0.gguf --teacher $(SHARED)/models/stories260K/hf \
	  --data $(SHARED)/golden/quant/imatrix-calib.txt --eval-data $(SHARED)/golden/real/eval.txt \
	  --sweep-rank 2,4,8,16 --ctx 128 --batch 4 --steps 300 --lr 2e-3 --eval-every 50 -o bin/finetune-report

bench:
	$(GO) run ./testmodels/cmd/lqcbench convert
	$(GO) run ./testmodels/cmd/lqcbench run
	$(GO) run ./testmodels/cmd/lqcbench attention
	$(GO) run ./testmodels/cmd/lqcbench lora
	$(GO) run ./testmodels/cmd/lqcbench serve
	$(GO) run ./testmodels/cmd/lqcbench finetune --layers 2 --runs 2
	$(GO) run ./testmodels/cmd/lqcbench plan
	$(GO) test -run '^$$' -bench . -benchtime 200x ./quant
	$(GO) test -run '^$$' -bench . -benchtime 20x ./runtime/cpu

# The CUDA kernels, compiled ahead to PTX (ISA 7.8 for sm_75, which the
# driver JIT-compiles for every GPU from Turing on) and committed: needs
# nvcc and g++-11 (Debian's nvidia-cuda-toolkit, non-free).
PTX_SRC = runtime/cuda/kernels/kernels.cu
PTX     = runtime/cuda/kernels/kernels.ptx
ptx:
	PATH="$$PATH:/usr/lib/nvidia-cuda-toolkit/bin" nvcc -ccbin g++-11 -ptx -arch=compute_75 -O3 -o $(PTX) $(PTX_SRC)

# ptxas (the same package; .ci/run fetches it) accepts the committed PTX
# for Ampere and Hopper.
PTXAS ?= ptxas
ptx-check:
	@if ! command -v $(PTXAS) >/dev/null; then \
	  if [ "$$LQC_REQUIRE_FIXTURES" = 1 ]; then echo "ptx-check: no ptxas (set PTXAS; .ci/run shows how to get it)" >&2; exit 1; fi; \
	  echo "ptx-check: skipped, no ptxas (set PTXAS)"; exit 0; fi; \
	for arch in sm_80 sm_90; do $(PTXAS) -arch=$$arch $(PTX) -o /dev/null || exit 1; echo "ptx-check: $(PTX) assembles for $$arch"; done

# On a real GPU. gpu-prep (here, with Go) builds what gpu-check runs on a
# machine with only the driver, CUDA and PyTorch: the test binaries of the
# CUDA backend and of training, lqcbench (gzipped), and the fixtures the
# tests read (under 64 MiB in all, so
# of llama.cpp's golden files only the K-quant mixes go; the tests skip the
# others there).
GPU_FIXTURES = models/stories260K/hf models/stories260K/reference/prompt64.json \
  models/stories260K/reference/prompt64_logits.f32.bin models/stories260K/reference/expected_greedy_ids.txt \
  models/gpt2-tiny/hf models/gpt2-tiny/reference/prompt32.json models/gpt2-tiny/reference/prompt32_logits.f32.bin \
  models/stories260K/reference/finetune \
  golden/real/stories260K-Q8_0.gguf golden/real/stories260K-Q4_0.gguf \
  $(foreach q,Q6_K Q5_K_M Q4_K_M IQ4_XS Q3_K_M Q2_K,golden/quant/$(q).gguf) \
  $(foreach f,mistral llama3 gemma gemma2 gemma3 phi3 qwen2 opt opt-proj,models/$(f)-tiny/hf \
    models/$(f)-tiny/reference/prompt32.json models/$(f)-tiny/reference/prompt32_logits.f32.bin)
gpu-prep:
	rm -rf bin/gpu && mkdir -p bin/gpu/shared
	$(GO) test -c -trimpath -ldflags='-s -w' -o bin/gpu/cuda.test ./runtime/cuda
	$(GO) test -c -trimpath -ldflags='-s -w' -o bin/gpu/train.test ./train
	$(GO) build -trimpath -ldflags='-s -w' -o bin/gpu/lqcbench ./testmodels/cmd/lqcbench
	cd $(SHARED) && cp -r --parents $(GPU_FIXTURES) $(CURDIR)/bin/gpu/shared/
	gzip -9 bin/gpu/cuda.test bin/gpu/train.test bin/gpu/lqcbench # gpu-check unpacks them
	@du -sh bin/gpu

gpu-check:
	testmodels/torch/check.sh

# Convert the bundled stories260K to Q4_0 GGUF, inspect it and run it.
demo: build
	$(BIN) convert testmodels/testdata/stories260K/stories260K.bin -o stories260K-q4_0.gguf --quant q4_0
	$(BIN) inspect stories260K-q4_0.gguf
	$(BIN) run stories260K-q4_0.gguf -p "Once upon a time" -n 64 --seed 1
	# The bundled LoRA adapter, merged into a Q4_K_M model, then applied unmerged.
	$(BIN) convert testmodels/testdata/stories260K/stories260K.bin -o stories260K-lora-q4.gguf --quant q4 --fuse-lora testmodels/testdata/stories260K-lora
	$(BIN) run stories260K-lora-q4.gguf -p "Once upon a time" -n 64 --seed 1
	$(BIN) run stories260K-q4_0.gguf --lora testmodels/testdata/stories260K-lora -p "Once upon a time" -n 64 --seed 1

clean:
	rm -rf bin stories260K-q4_0.gguf stories260K-lora-q4.gguf
