# The front door. `make help` lists every target.
PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
ARTIFACTS   ?= artifacts
PYTEST_ARGS ?=
export TF_CPP_MIN_LOG_LEVEL ?= 2
export DIGITNET_ARTIFACTS := $(ARTIFACTS)

.DEFAULT_GOAL := help
.PHONY: help venv artifacts deploy-local stop status parity test test-fast lint clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: $(VENV)/.ready ## Create the pinned project venv once (about 1 min, ~3 GB)
$(VENV)/.ready: pyproject.toml requirements.lock scripts/bootstrap_venv.sh
	VENV=$(VENV) PYTHON=$(PYTHON) bash scripts/bootstrap_venv.sh
	@touch $@

artifacts: venv ## Train on digits, export TorchScript, SavedModel and the .mar
	$(PY) -m services.artifacts --out $(ARTIFACTS)

deploy-local: artifacts ## Start every stack this machine can run, wait until ready, predict once each
	$(PY) -m services.deploy_local up --artifacts $(ARTIFACTS)

stop: ## Stop everything deploy-local started
	@if [ -x $(PY) ]; then $(PY) -m services.deploy_local stop; else echo "stop: no venv, nothing started"; fi

status: ## Show what deploy-local started and whether it still runs
	@if [ -x $(PY) ]; then $(PY) -m services.deploy_local status; else echo "status: no venv"; fi

parity: artifacts ## Compare logits of every in-process and served path on the test split
	$(PY) -m services.parity --artifacts $(ARTIFACTS)

test: venv ## Run the whole test suite (starts real servers on free loopback ports)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: venv ## Tests that start no server
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

lint: venv ## ruff over the code
	$(VENV)/bin/ruff check .

clean: stop ## Remove generated artifacts and run state (keeps the venv)
	rm -rf $(ARTIFACTS) run results/.tmp
