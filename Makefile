# Set-up is part of every target: a fresh machine needs only python3 (3.10+) and make.
PYTHON ?= python3
VENV ?= .venv
# A CPU build of torch, installed before anything else can pull a multi-GB CUDA build. On a GPU machine,
# use `make TORCH_SPEC=torch ...` (or any torch>=2.4 you already have).
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: help quickstart test lint setup clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z]+):.*## /  \1\t/'

quickstart: $(VENV)/.installed  ## train + evaluate a small DSNet on the built-in synthetic set (no network, no data)
	$(BIN)/python scripts/train.py --config configuration/quickstart.yaml

test: lint  ## ruff, then the test suite (first fetches transformers' common test suites into .cache/)
	$(BIN)/python scripts/fetch_transformers_test_suites.py
	$(BIN)/python -m pytest -q

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
