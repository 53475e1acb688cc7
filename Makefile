# softedge: every task runs through this Makefile (CI too). `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED ?= 0

MODEL ?= digits_cnn
DATA ?= digits
WEIGHT_BITS ?= 8
ROUNDING ?= soft
SEED ?= 0
RUN ?= runs/$(MODEL)-w$(WEIGHT_BITS)-$(ROUNDING)
OVERWRITE ?=
# Epochs of float training and of QAT (empty: softedge's defaults, 30 and 10); e.g. a quick try:
# make train export FLOAT_EPOCHS=3 QAT_EPOCHS=2
FLOAT_EPOCHS ?=
QAT_EPOCHS ?=

.PHONY: help install arm64 docs train export test test-slow lint bench bench-architectures bench-reference bench-families bench-recipe bench-zoo bench-micro bench-speed bench-streaming bench-qat bench-ptq bench-mixed gradcheck clean test-seeded

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,micro]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install softedge with its dev and micro (TFLite Micro) extras

train: $(STAMP) ## Train MODEL on DATA (quantized, ROUNDING annealed to hard) into RUN (FLOAT_EPOCHS, QAT_EPOCHS; OVERWRITE=1 replaces another run there)
	$(VENV)/bin/softedge train --model $(MODEL) --data $(DATA) --weight-bits $(WEIGHT_BITS) \
		--rounding $(ROUNDING) --seed $(SEED) --run $(RUN) $(if $(OVERWRITE),--overwrite) \
		$(if $(FLOAT_EPOCHS),--float-epochs $(FLOAT_EPOCHS)) $(if $(QAT_EPOCHS),--qat-epochs $(QAT_EPOCHS))

export: $(STAMP) ## Harden, convert to int8 TFLite, validate drift, bundle and device-check RUN
	$(VENV)/bin/softedge export --run $(RUN) --seed $(SEED)

test: $(STAMP) ## Run the fast test suite (under 15 minutes on 2 cores)
	$(PY) -m pytest -m "not slow" tests

test-seeded: $(STAMP) ## The fast tests whose values come from the test seed, with SOFTEDGE_TEST_SEED (default 1)
	SOFTEDGE_TEST_SEED=$${SOFTEDGE_TEST_SEED:-1} $(PY) -m pytest -m "seeded and not slow" tests

test-slow: $(STAMP) ## Run the slower end-to-end checks
	$(PY) -m pytest -m slow tests

lint: $(STAMP) ## ruff check
	$(VENV)/bin/ruff check toolkit models export app tests bench

bench: $(STAMP) ## Run the benchmarks (QUICK=1: one seed, fewer epochs); tables, JSON and plots in bench/results
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench.rounding
	$(PY) -m bench.reference
	$(PY) -m app.arm64
	$(PY) -m bench.families
	$(PY) -m bench.architectures
	$(PY) -m bench.zoo
	$(PY) -m bench.micro
	$(PY) -m bench.speed
	$(PY) -m bench.streaming
	$(PY) -m bench.ptq
	$(PY) -m bench.mixed
	$(PY) -m bench.qat
	$(PY) -m bench.report

bench-architectures: $(STAMP) ## DS-CNN / ResNet block / MobileNet(0.25) shapes: exact weights, reference == runtime, hard vs XNNPACK
	$(PY) -m bench.architectures

bench-zoo: $(STAMP) ## MLPerf Tiny zoo + MobileNetV2-0.35 on synthetic data, W8/W4/W3: accuracy, agreement, exactness, bytes, times (~10 min)
	$(PY) -m bench.zoo

bench-micro: $(STAMP) ## Every zoo model on TFLite Micro, int8 and int4 weights: runs, integers, arena, flash, time (~20 min)
	$(PY) -m bench.micro

bench-speed: $(STAMP) ## Training speed: steps per compiled call, XLA on/off, vs tfmot QAT (digits, MNIST-1D; ~15 min)
	$(PY) -m bench.speed

bench-streaming: $(STAMP) ## Training on .npz shards streamed from disk vs in memory, 1x and 10x the data: peak memory, time per sample (~10 min)
	$(PY) -m bench.streaming

bench-qat: $(STAMP) ## QAT: every rounding, tfmot's QAT and the bridge, MNIST-1D and digits, W8-W2, 3 seeds; then the report (~20 min)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench.qat
	$(PY) -m bench.report

bench-ptq: $(STAMP) ## Post-training quantization (nearest, AdaRound) vs QAT vs ai-edge-quantizer, MNIST-1D and digits, 3 seeds (~20 min)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench.ptq

bench-mixed: $(STAMP) ## Mixed precision: planned vs uniform widths, QAT and PTQ, MNIST-1D, 3 seeds; accuracy vs bytes plot (~25 min)
	$(PY) -m bench.mixed

bench-reference: $(STAMP) ## Integer reference vs LiteRT: mismatches per kernel family and speed, digits and MNIST-1D
	$(PY) -m bench.reference

bench-families: $(STAMP) arm64 ## Every kernel family, every zoo model and width, on x86-64 and each emulated ARM64 CPU (~30 min)
	$(PY) -m bench.families

bench-recipe: $(STAMP) ## The ablations behind the training recipe's defaults (3 seeds, ~20 minutes)
	$(PY) -m bench.recipe

arm64: $(STAMP) ## Build an ARM64 device under QEMU user mode in .arm64/ (once; ~1 minute): softedge device-check BUNDLE --arm64
	$(PY) -m app.arm64

docs: $(STAMP) ## Regenerate docs/zoo.md and the vocabulary tables in docs/ (a test checks they are current)
	$(PY) -m app.docs

gradcheck: $(STAMP) ## Print the gradient-check table of every rounding method
	$(VENV)/bin/softedge gradcheck

clean: ## Remove caches (keeps .venv and runs/)
	rm -rf .pytest_cache .ruff_cache .hypothesis build *.egg-info
