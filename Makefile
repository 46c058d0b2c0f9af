# lqc — see README.md. Targets fetch what they need themselves: Go modules
# from the proxy, and real llama.cpp (npm node-llama-cpp) into the cache on
# first use.
GO       ?= go
BIN      := bin/lqc
FUZZTIME ?= 10s
export CGO_ENABLED ?= 0

.PHONY: all build test unit fuzz lint interop bench demo clean

all: build

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/lqc

# The whole suite, as CI runs it (with LQC_REQUIRE_FIXTURES=1): lint, unit
# and golden tests, the llama.cpp interop acceptance, and each fuzz target
# briefly.
test: lint unit fuzz

unit:
	$(GO) test -count=1 ./...

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./codegen/gguf
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./frontend/safetensors

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	CGO_ENABLED=0 $(GO) build ./...

# Real llama.cpp (node-llama-cpp) runs the GGUF files lqc writes.
interop:
	$(GO) test -count=1 -v -run 'Interop' ./cmd/lqc

# Conversion speed and memory against llama.cpp's own quantizer, measured
# in the same run, and the quantizers' micro-benchmarks.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 200x ./quant
	$(GO) run ./testmodels/cmd/lqcbench convert

# Convert the bundled stories260K to Q4_0 GGUF and inspect it.
demo: build
	$(BIN) convert testmodels/testdata/stories260K/stories260K.bin -o stories260K-q4_0.gguf --quant q4_0
	$(BIN) inspect stories260K-q4_0.gguf

clean:
	rm -rf bin stories260K-q4_0.gguf
