# Set-up is part of every target: a fresh machine needs only python3 (3.10+) and make.
PYTHON ?= python3
VENV ?= .venv
# A CPU build of torch, installed before anything else can pull a multi-GB CUDA build. On a GPU machine,
# use `make TORCH_SPEC=torch ...` (or any torch>=2.4 you already have).
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
# Each engine test module runs in a pytest process of its own. A process that ran a DataLoader with workers
# (tests/data/test_streaming.py), then an OpenVINO bf16 model on this AMX CPU, then started a subprocess, was
# killed by a kernel-sent SIGSEGV (si_code SI_KERNEL: the signal frame could not be written) - reproduced only
# inside pytest, never in a script; so no engine state is carried into another module's tests.
# (pytest's status 5, "no tests collected", is a module whose tests are all deselected.)
ENGINE_TESTS = for module in tests/engines/test_*.py; do \
	$(BIN)/python -m pytest -q $$module $(1) || [ $$? -eq 5 ] || exit 1; done

.PHONY: help quickstart test test-fast test-wheel lint setup clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /  \1\t/'

quickstart: $(VENV)/.installed  ## train + evaluate a small DSNet on the built-in synthetic set (no network, no data)
	$(BIN)/msaf-hf train --config quickstart

test: lint  ## ruff, then the full test suite (first fetches transformers' common test suites into .cache/); what CI runs
	$(BIN)/python scripts/fetch_transformers_test_suites.py
	$(BIN)/python -m pytest -q --ignore=tests/engines
	$(call ENGINE_TESTS)

test-fast: $(VENV)/.installed  ## the quick loop: the tests not marked slow (no training runs, processes, engines)
	$(BIN)/python -m pytest -q -m "not slow" --ignore=tests/engines
	$(call ENGINE_TESTS,-m "not slow")

test-wheel:  ## build the wheel, install it in a fresh environment and run msaf-hf there, outside the checkout
	PYTHON=$(PYTHON) TORCH_SPEC="$(TORCH_SPEC)" .ci/check_wheel

lint: $(VENV)/.installed  ## ruff over the whole repository (configuration in pyproject.toml)
	$(BIN)/ruff check .

setup: $(VENV)/.installed  ## create .venv with the package (editable) and its test extra

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

clean:  ## remove .venv, outputs and the fetched test suites
	rm -rf $(VENV) outputs .cache
