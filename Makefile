# The front door. `make help` lists every target.
PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
ARTIFACTS   ?= artifacts
PYTEST_ARGS ?=
PROFILE     ?= quick
STACKS      ?= tf_serving,torchserve,flask_torch
STACK       ?= flask_torch
PROTOCOL    ?= rest
USERS       ?= 8
RATE        ?= 0
BATCH       ?= 1
DURATION    ?= 20
RUN         ?=
export TF_CPP_MIN_LOG_LEVEL ?= 2
export DIGITNET_ARTIFACTS := $(ARTIFACTS)

.DEFAULT_GOAL := help
.PHONY: help venv artifacts deploy-local stop status parity bench loadtest report baselines \
	test test-fast lint clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: $(VENV)/.ready ## Create the pinned project venv once (about 1 min, ~3 GB)
$(VENV)/.ready: pyproject.toml requirements.lock scripts/bootstrap_venv.sh
	VENV=$(VENV) PYTHON=$(PYTHON) bash scripts/bootstrap_venv.sh
	@touch $@

# Artifacts are rebuilt when the model, export or handler code changes.
MODEL_SOURCES := $(wildcard digitnet/*.py) services/artifacts.py services/tf_serving/export.py \
	services/torchserve/handler.py services/torchserve/build_mar.py services/torchserve/model-config.yaml

artifacts: $(ARTIFACTS)/metrics.json ## Train on digits, export TorchScript, SavedModel and the .mar
$(ARTIFACTS)/metrics.json: $(VENV)/.ready $(MODEL_SOURCES)
	$(PY) -m services.artifacts --out $(ARTIFACTS) --force

deploy-local: artifacts ## Start every stack this machine can run, wait until ready, predict once each
	$(PY) -m services.deploy_local up --artifacts $(ARTIFACTS)

stop: ## Stop everything deploy-local started
	@if [ -x $(PY) ]; then $(PY) -m services.deploy_local stop; else echo "stop: no venv, nothing started"; fi

status: ## Show what deploy-local started and whether it still runs
	@if [ -x $(PY) ]; then $(PY) -m services.deploy_local status; else echo "status: no venv"; fi

parity: artifacts ## Compare logits of every in-process and served path on the test split
	$(PY) -m services.parity --artifacts $(ARTIFACTS)

bench: artifacts ## Whole comparison: sweep every stack/protocol (PROFILE=quick|full), write results/<run>/REPORT.md
	$(PY) -m loadtests.runner sweep --profile $(PROFILE) --stacks $(STACKS) --artifacts $(ARTIFACTS)

loadtest: artifacts ## One load point: STACK=... PROTOCOL=... USERS=... [RATE=req/s for open loop] [BATCH=] [DURATION=]
	$(PY) -m loadtests.runner point --stack $(STACK) --protocol $(PROTOCOL) --users $(USERS) \
		--rate $(RATE) --batch $(BATCH) --duration $(DURATION) --artifacts $(ARTIFACTS)

report: venv ## Rebuild summary.json, REPORT.md and plots from saved data: RUN=results/<run-id>
	@test -n "$(RUN)" || { echo "usage: make report RUN=results/<run-id>"; exit 2; }
	$(PY) -m loadtests.report $(RUN)

baselines: artifacts ## In-process inference timings only (the floor)
	$(PY) -m loadtests.baselines --artifacts $(ARTIFACTS)

test: venv ## Run the whole test suite (starts real servers on free loopback ports)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: venv ## Tests that start no server
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

lint: venv ## ruff over the code
	$(VENV)/bin/ruff check .

clean: stop ## Remove generated artifacts and run state (keeps the venv)
	rm -rf $(ARTIFACTS) run results/.tmp
