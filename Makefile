# The project's verbs. Every target works from a fresh clone: it makes its own virtualenv.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help venv test test-unit lint crds lock clean cluster-build kueue-build cluster-up cluster-down

help:  ## list the verbs
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test,lint,demo,s3,gcs]'
	@touch $@

venv: $(STAMP)  ## create .venv with the package and its test and lint tools

test: $(STAMP)  ## run every test tier (unit, triton, cluster, chart)
	$(BIN)/pytest -ra

test-unit: $(STAMP)  ## run the unit tier only (no cluster, no Triton)
	$(BIN)/pytest -ra tests/unit

lint: $(STAMP)  ## ruff and mypy --strict
	$(BIN)/ruff check operator tests benchmarks demo
	$(BIN)/ruff format --check operator tests benchmarks demo
	$(BIN)/mypy

crds: $(STAMP)  ## regenerate crds/ (and the chart's copy) from the pydantic models
	$(BIN)/python -m batchpredict.api.crd crds
	cp crds/batchpredict.io_*.yaml charts/batchpredict/crds/

.PHONY: chromium dashboard test-dashboard
chromium:  ## install Debian's chromium for the dashboard tier when missing (apt-get, as root)
	@bash hack/chromium/install.sh

dashboard: $(STAMP)  ## the web dashboard on 127.0.0.1:8765 with your kubeconfig (opens a browser)
	$(BIN)/batchpredict-dashboard

test-dashboard: $(STAMP)  ## the dashboard tier: headless chromium against the cluster and Triton
	$(BIN)/pytest -ra tests/dashboard tests/unit/test_dashboard.py

.PHONY: helm chart-test images kind-e2e
helm:  ## build helm from the Go module proxy (cached outside the repo); prints its path
	@bash hack/helm/build.sh

chart-test: $(STAMP)  ## the chart tier: helm lint/template, dry runs, install/upgrade/uninstall
	$(BIN)/pytest -ra tests/chart tests/unit/test_chart_crds.py

images: $(STAMP)  ## build the image without Docker (mmdebstrap + umoci, as root; cached by content)
	@PYTHON=$(abspath $(BIN)/python) bash images/build.sh

kind-e2e: $(STAMP)  ## kind cluster + images + chart, then the cluster and chart tiers (needs Docker)
	@bash hack/kind-e2e.sh

lock: $(STAMP)  ## re-pin constraints.txt from the current virtualenv
	@printf '%s\n' \
	  '# Exact versions for reproducible installs: make installs with `pip install -c constraints.txt`.' \
	  '# Regenerate with `make lock` after changing dependencies in pyproject.toml.' > constraints.txt.new
	$(BIN)/pip freeze --exclude-editable | grep -v -i '^batchpredict' >> constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:  ## remove the virtualenv and caches (not the cluster binary cache)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

.PHONY: bench bench-inputs bench-operator bench-dicom bench-gpu
bench: $(STAMP)  ## worker vs an ideal Triton client, memory vs shard size, then bench-inputs
	$(BIN)/python benchmarks/worker_throughput.py
	$(BIN)/python benchmarks/input_formats.py
	$(BIN)/python benchmarks/dicom_inputs.py

bench-inputs: $(STAMP)  ## items/s by input format (vs Parquet), images/s by cores, plan time 1x-100x
	$(BIN)/python benchmarks/input_formats.py

bench-dicom: $(STAMP)  ## DICOM: header index vs whole files (files/s), volumes/s by cores
	$(BIN)/python benchmarks/dicom_inputs.py

bench-operator: $(STAMP)  ## 100 concurrent runs: Job creation latency, status lag, API writes, RSS
	$(BIN)/python benchmarks/operator_scale.py --runs 100

# The gpu-bench extra (torch: gigabytes) is installed only where a GPU is; without one the
# script says so and exits 0.
bench-gpu: $(STAMP)  ## ResNet-50 through Triton on a GPU: items/s, GPU use, queue vs compute, ratio
	@if $(BIN)/python benchmarks/gpu.py --has-gpu; then \
	  $(BIN)/pip install -q -c constraints.txt -e '.[gpu-bench]'; fi
	$(BIN)/python benchmarks/gpu.py

cluster-build:  ## build etcd and Kubernetes from the Go module proxy (cached outside the repo)
	@bash hack/k8s/build.sh

kueue-build:  ## build Kueue's controller from the Go module proxy (cached outside the repo)
	@bash hack/kueue/build.sh

cluster-up: $(STAMP)  ## start the local control plane + test node agent; prints export KUBECONFIG=...
	@$(BIN)/python -m tests.harness.cluster up

cluster-down: $(STAMP)  ## stop every process the local cluster started
	@$(BIN)/python -m tests.harness.cluster down

.PHONY: demo demo-down
demo: $(STAMP)  ## a real batch prediction end to end: local cluster, operator (Helm), Triton, results
	@$(BIN)/python -m demo up

demo-down: $(STAMP)  ## stop everything `make demo` started (cluster, operator, Triton)
	@$(BIN)/python -m demo down
