# The project's verbs. Every target works from a fresh clone: it makes its own virtualenv.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help venv test test-unit lint crds lock clean

help:  ## list the verbs
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test,lint]'
	@touch $@

venv: $(STAMP)  ## create .venv with the package and its test and lint tools

test: $(STAMP)  ## run every test tier (unit, triton, cluster, chart)
	$(BIN)/pytest -ra

test-unit: $(STAMP)  ## run the unit tier only (no cluster, no Triton)
	$(BIN)/pytest -ra tests/unit

lint: $(STAMP)  ## ruff and mypy --strict
	$(BIN)/ruff check operator tests benchmarks
	$(BIN)/ruff format --check operator tests benchmarks
	$(BIN)/mypy

crds: $(STAMP)  ## regenerate crds/ from the pydantic models
	$(BIN)/python -m batchpredict.api.crd crds

lock: $(STAMP)  ## re-pin constraints.txt from the current virtualenv
	$(BIN)/pip freeze --exclude-editable | grep -v -i '^batchpredict' > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:  ## remove the virtualenv and caches (not the cluster binary cache)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
