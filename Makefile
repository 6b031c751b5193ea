# Two commands for a newcomer on Debian 12:
#   make demo   set up, build, analyse the bundled sample video, print the summary
#   make test   set up, build, run the whole test suite (what CI runs)
# Everything fetched or built is cached under ~/.cache/retail-ai (RETAIL_AI_HOME).

RETAIL_AI_HOME ?= $(HOME)/.cache/retail-ai
export CARGO_TARGET_DIR ?= $(RETAIL_AI_HOME)/target
BIN := $(CARGO_TARGET_DIR)/debug/retail-ai
DEMO_OUT ?= results/demo

.PHONY: setup test-services build demo test lint bench accuracy clean

setup:
	@bash scripts/setup.sh

build: setup
	cargo build --workspace --all-targets
	@mkdir -p bin && ln -sfn $(BIN) bin/retail-ai

demo: build
	@mkdir -p $(DEMO_OUT)
	$(BIN) analyze $(RETAIL_AI_HOME)/media/vtest.avi --config tests/fixtures/vtest.toml \
	    --out $(DEMO_OUT) --annotate $(DEMO_OUT)/annotated.mp4 --detections $(DEMO_OUT)/detections.jsonl
	@echo
	@echo "Outputs in $(DEMO_OUT)/: summary.json, events.jsonl, aggregates/*.parquet,"
	@echo "detections.jsonl and annotated.mp4. Your own footage:"
	@echo "  bin/retail-ai analyze STORE.mp4 --config store.toml --out results/"

test-services:
	@bash scripts/setup-test-services.sh

# The kernels crate again with its GPU side (feature `cuda`): NVRTC from the test set-up
# compiles every CUDA kernel to PTX; a missing NVRTC fails rather than skips.
NVRTC_LIB = $$(echo $(RETAIL_AI_HOME)/tools/nvrtc/lib/python3*/site-packages/nvidia/cu13/lib)

test: setup test-services
	cargo test --workspace --no-fail-fast
	LD_LIBRARY_PATH=$(NVRTC_LIB) RETAIL_AI_REQUIRE_NVRTC=1 cargo test -p retail-kernels --features cuda --lib --test gpu
	cargo test -p retail-infer --features tensorrt --lib --test accelerator
	cargo test -p retail-runtime --features tensorrt --lib model::
	cargo test -p retail-runtime --features tensorrt --test nvdec
	cargo test -p retail-ingest --features cuda --lib

lint:
	python3 scripts/check-deploy.py
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p retail-kernels --all-targets --features cuda -- -D warnings
	cargo clippy -p retail-infer -p retail-kernels -p retail-runtime -p retail-ingest -p retail-gst-cuda -p retail-ai --all-targets --features retail-ai/tensorrt -- -D warnings

bench: build test-services
	$(CARGO_TARGET_DIR)/debug/throughput --reps 3
	$(CARGO_TARGET_DIR)/debug/multistream --files 4,8 --reps 1
	$(CARGO_TARGET_DIR)/debug/live --cameras 2,4,6,8 --seconds 20
	$(CARGO_TARGET_DIR)/debug/lake --events 20000 --reps 3
	$(CARGO_TARGET_DIR)/debug/soak --events 1000000
	$(CARGO_TARGET_DIR)/debug/platform --mib 256 --reps 3 --upload-mib 2048

# Count accuracy on the labelled clips (tests/fixtures/truth/): docs/ACCURACY.md and the README.
accuracy: build
	bash scripts/accuracy.sh

clean:
	rm -rf results bin
