# The front door. `make help` lists every target.
PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
ARTIFACTS   ?= artifacts
PYTEST_ARGS ?=
PROFILE     ?= quick
# Every registered stack (services/registry.py) unless narrowed, e.g. STACKS=flask_torch.
STACKS      ?= all
STACK       ?= flask_torch
PROTOCOL    ?= rest
USERS       ?= 8
RATE        ?= 0
BATCH       ?= 1
DURATION    ?= 20
RUN         ?=
SOAK_DURATION ?= 600
SOAK_RATE   ?= 100
COLDSTART_REPEATS ?= 5
# The model-size sweep's artifacts, one folder per variant (loadtests/sizes.py).
SIZES_ROOT  ?= artifacts-sizes
# `make bench PROFILE=<split>` runs one part of the fair fight alone (its own target below);
# with RUN=results/<run-id> each split writes into that run and `make report` includes it.
SPLIT_PROFILES := fair batching sizes codecs
# make gpu-bench (README.md, "A GPU reference run"): CPU cores per GPU server (empty: every
# server core), and the torch stacks it runs on CUDA.
GPU_SERVER_CPUS ?=
GPU_STACKS  ?= flask_torch,torchserve,ray_serve
# Kubernetes (k8s/README.md): images, overlay, registry, tools.
REGISTRY    ?=
TAG         ?= 0.1.0
CUDA_FLAVOR ?= cu130
VARIANTS    ?= cpu,cuda
OVERLAY     ?= cpu
# Optional k8s/components/ folders for make k8s-apply, space-separated (nginx-front,
# gpu-feature-discovery).
COMPONENTS  ?=
CONTAINER_ENGINE ?= docker
# kubectl on PATH, else the pinned one `make k8s-kubectl` installs into the venv.
KUBECTL     ?= $(or $(shell command -v kubectl 2>/dev/null),$(VENV)/bin/kubectl)
# Empty: the collector's deadline is the Job's activeDeadlineSeconds plus 15 min.
K8S_DEADLINE_S ?=
# Locust worker pods for `make k8s-loadtest` (one process on one CPU each); empty: the
# scale of deployment/loadgen-worker as applied (2).
LOADGEN_WORKERS ?=
RUN_ID      ?=
K8S_DIR     ?= k8s
K8S_LINT_VENV ?= $(VENV)/k8s-lint
# A named batching policy for every stack started from here (BATCHING_PRESETS in
# digitnet/spec.py: default, latency, throughput); empty: the default, 8 x 2 ms.
BATCHING    ?=
ifneq ($(strip $(BATCHING)),)
export DIGITNET_BATCHING_PRESET := $(BATCHING)
endif
export TF_CPP_MIN_LOG_LEVEL ?= 2
export DIGITNET_ARTIFACTS := $(ARTIFACTS)

.DEFAULT_GOAL := help
.PHONY: help venv tools artifacts configs deploy-local stop status parity bench coldstart floors loadtest \
	report baselines codecs sizes batching fair test test-fast lint clean
.PHONY: robustness faults soak overload floods audit
.PHONY: gpu-check gpu-bench device-bundle

.PHONY: k8s-validate images k8s-apply k8s-loadtest k8s-delete k8s-lint-venv k8s-engine \
	k8s-kubectl k8s-check-images k8s-collect

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: $(VENV)/.ready ## Create the pinned project venv once (about 1 min, ~3 GB)
$(VENV)/.ready: pyproject.toml requirements.lock scripts/bootstrap_venv.sh
	VENV=$(VENV) PYTHON=$(PYTHON) bash scripts/bootstrap_venv.sh
	@touch $@

tools: ## Install wrk, nginx-light and h2load (the measurement tools) where the machine allows
	@bash scripts/install_tools.sh

# Artifacts are rebuilt when the model, a stack's build code or its packed files change.
MODEL_SOURCES := $(wildcard digitnet/*.py) harness/artifacts.py tools/artifacts.py \
	$(wildcard services/*/export.py services/*/build_mar.py) services/torchserve/handler.py \
	services/torchserve/noop_handler.py \
	services/torchserve/model-config.yaml \
	services/tf_serving/warmup.py services/tf_serving/noop_model.py

artifacts: $(ARTIFACTS)/metrics.json ## Train on digits, export TorchScript and SavedModel, build each stack's own
$(ARTIFACTS)/metrics.json: $(VENV)/.ready $(MODEL_SOURCES)
	$(PY) -m tools.artifacts --out $(ARTIFACTS) --force

configs: venv ## Regenerate the committed configs each stack generates from digitnet/spec.py's defaults
	$(PY) -m tools.configs

deploy-local: artifacts ## Start every stack this machine can run, wait until ready, predict once each [BATCHING=latency|throughput]
	$(PY) -m tools.deploy_local up --artifacts $(ARTIFACTS)

stop: ## Stop everything deploy-local started
	@if [ -x $(PY) ]; then $(PY) -m tools.deploy_local stop; else echo "stop: no venv, nothing started"; fi

status: ## Show what deploy-local started and whether it still runs
	@if [ -x $(PY) ]; then $(PY) -m tools.deploy_local status; else echo "status: no venv"; fi

parity: artifacts ## Compare logits of every in-process and served path on the test split
	$(PY) -m tools.parity --artifacts $(ARTIFACTS)

STACKS_ARG = $(if $(filter all,$(STACKS)),,--stacks $(STACKS))

bench: artifacts tools ## Whole comparison: sweep every stack/protocol (PROFILE=quick|full), write results/<run>/REPORT.md; PROFILE=fair|batching|sizes|codecs runs that split alone; BATCHING=latency|throughput
ifneq ($(filter $(PROFILE),$(SPLIT_PROFILES)),)
	$(MAKE) --no-print-directory $(PROFILE)
else
	$(PY) -m loadtests.runner sweep --profile $(PROFILE) $(STACKS_ARG) --artifacts $(ARTIFACTS)
endif

# The check runs first, so a machine without a CUDA GPU is refused before anything is built.
gpu-check: venv ## Can this machine run gpu-bench? CUDA torch that sees a GPU, and NVML (starts nothing)
	$(PY) -m loadtests.gpu_bench --check --stacks $(GPU_STACKS)

gpu-bench: gpu-check artifacts tools ## Torch stacks on CUDA (~8 min, profile gpu), GPU telemetry, card-labelled report [GPU_SERVER_CPUS=]
	$(PY) -m loadtests.gpu_bench --stacks $(GPU_STACKS) --artifacts $(ARTIFACTS) \
		$(if $(GPU_SERVER_CPUS),--server-cpus $(GPU_SERVER_CPUS))

device-bundle: venv artifacts ## Wheels, a Java runtime and the artifacts to carry to the lent GPU machine (.device/, sizes per device call)
	$(PY) -m tools.device_bundle --artifacts $(ARTIFACTS)

sizes: venv tools ## Model-size sweep (4 sizes, 35 us to ~5 ms in-process): served p50, capacity, overhead share per stack; ~12 min [RUN=]
	$(PY) -m loadtests.sizes --root $(SIZES_ROOT) $(if $(RUN),--out $(RUN)) $(STACKS_ARG)

batching: artifacts tools ## [RUN=] Batching-policy sweep (off, 4x1 .. 16x10 ms) of every stack that batches: p50 at 1 connection vs capacity, Pareto front, picks, the passes each level formed; ~10 min
	$(PY) -m loadtests.batching --artifacts $(ARTIFACTS) $(if $(RUN),--out $(RUN)) $(STACKS_ARG)

fair: artifacts tools ## [RUN=] The fair fight: each stack out of the box vs ours (configs read back from the servers), capacity gain; ~5 min
	$(PY) -m loadtests.fair --artifacts $(ARTIFACTS) $(if $(RUN),--out $(RUN)) $(STACKS_ARG)

floors: artifacts tools ## [RUN=] Each framework's floor (no-op twin), our overhead and the served p50 attributed stage by stage, at one connection and near capacity, each batching stack again under BATCHING=latency, then our code in process (alone vs in the app's flow), as make bench's phase 6; ~8 min
	$(PY) -m loadtests.framework_floor --artifacts $(ARTIFACTS) $(if $(RUN),--into-run $(RUN)) $(STACKS_ARG)

coldstart: artifacts ## Each stack started from nothing COLDSTART_REPEATS times (default 5), with and without warm-up [RUN=results/<run-id>]
	$(PY) -m loadtests.coldstart $(STACKS_ARG) --repeats $(COLDSTART_REPEATS) --artifacts $(ARTIFACTS) \
		$(if $(RUN),--into-run $(RUN))

loadtest: artifacts ## One load point: STACK=... PROTOCOL=... USERS=... [RATE=req/s for open loop] [BATCH=] [DURATION=]
	$(PY) -m loadtests.runner point --stack $(STACK) --protocol $(PROTOCOL) --users $(USERS) \
		--rate $(RATE) --batch $(BATCH) --duration $(DURATION) --artifacts $(ARTIFACTS)

report: venv ## Rebuild summary.json, REPORT.md and plots from saved data: RUN=results/<run-id>
	@test -n "$(RUN)" || { echo "usage: make report RUN=results/<run-id>"; exit 2; }
	$(PY) -m tools.report $(RUN)

baselines: artifacts ## In-process inference timings only (the floor)
	$(PY) -m loadtests.baselines --artifacts $(ARTIFACTS)

codecs: artifacts tools ## [RUN=] Bytes and server decode/encode us per body codec (JSON rows/columnar, binary, gRPC), batch 1 and 64; then each codec served (~3 min)
	$(PY) -m loadtests.codecs --artifacts $(ARTIFACTS) $(if $(RUN),--out $(RUN)/codecs.json)
	$(PY) -m loadtests.codecs_served --artifacts $(ARTIFACTS) $(if $(RUN),--out $(RUN)) $(STACKS_ARG)

# Reliability (reliability/README.md). With RUN=results/<run-id> the JSON is also copied
# into that load-test run, and `make report RUN=...` includes it.
robustness: artifacts ## Every hostile/broken request on every stack: prints the input x stack matrix
	$(PY) -m reliability matrix $(STACKS_ARG) --artifacts $(ARTIFACTS) $(if $(RUN),--into-run $(RUN))

faults: artifacts ## Kill a worker and SIGTERM under load, slow clients: failures and recovery times
	$(PY) -m reliability faults $(STACKS_ARG) --artifacts $(ARTIFACTS) $(if $(RUN),--into-run $(RUN))

soak: artifacts ## SOAK_RATE req/s for SOAK_DURATION s per stack (default 100, 600): errors and RSS slope
	$(PY) -m reliability soak $(STACKS_ARG) --rate $(SOAK_RATE) --duration $(SOAK_DURATION) \
		--artifacts $(ARTIFACTS) $(if $(RUN),--into-run $(RUN))

overload: artifacts tools ## 1.5x, 2x, 5x each stack's capacity (RUN's capacity.jsonl, else measured), then 50%: goodput, refusals, recovery, by the Python generator and the C client; ~2.7 min per stack
	$(PY) -m reliability overload $(STACKS_ARG) --artifacts $(ARTIFACTS) $(if $(RUN),--into-run $(RUN))

floods: artifacts tools ## 1000 idle keep-alive and 200 slow connections, then big bodies, each held while normal clients run: their p99, fds, RSS, workers (~2 min per stack)
	$(PY) -m reliability floods $(STACKS_ARG) --artifacts $(ARTIFACTS) $(if $(RUN),--into-run $(RUN))

audit: venv ## pip-audit of requirements.lock; says NOT AUDITED when its database is unreachable
	$(PY) -m reliability audit --requirements requirements.lock

test: venv tools ## Run the whole test suite (starts real servers on free loopback ports)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: venv ## Tests that start no server
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

lint: venv ## ruff over the code
	$(VENV)/bin/ruff check .

clean: stop ## Remove generated artifacts and run state (keeps the venv)
	rm -rf $(ARTIFACTS) $(SIZES_ROOT) run results/.tmp

# --- Kubernetes (k8s/README.md) ---------------------------------------------------------
# kubectl renders the overlays offline (`kubectl kustomize`); apply, load test and delete
# act on the cluster of the current kubectl context.
KUBECTL_MISSING := $(KUBECTL) not found: 'make k8s-kubectl' installs the pinned kubectl into \
	$(VENV)/bin (scripts/install_kubectl.sh; Debian has no kubectl package), or set KUBECTL=/path/to/kubectl

k8s-kubectl: ## kubectl on PATH, else install the pinned one (dl.k8s.io, sha256-checked) into the venv, no root
	@command -v $(KUBECTL) >/dev/null || bash scripts/install_kubectl.sh $(VENV)/bin
	@command -v $(KUBECTL) >/dev/null || { echo "$(KUBECTL_MISSING)"; exit 2; }

k8s-lint-venv: $(VENV)/.ready
	@PYTHON=$(PYTHON) bash k8s/bootstrap_lint_venv.sh $(K8S_LINT_VENV)

k8s-validate: k8s-kubectl k8s-lint-venv ## Render both overlays; schemas, invariants, checkov, yamllint, hadolint (offline)
	KUBECTL=$(KUBECTL) K8S_LINT_VENV=$(K8S_LINT_VENV) $(PY) -m k8s.validate --k8s-dir $(K8S_DIR)

k8s-engine:
	@command -v $(CONTAINER_ENGINE) >/dev/null && $(CONTAINER_ENGINE) info >/dev/null 2>&1 || { \
		echo "images: no container engine answers ('$(CONTAINER_ENGINE) info' failed): install"; \
		echo "  Docker (BuildKit) or set CONTAINER_ENGINE=podman. Nothing was built."; exit 2; }

images: k8s-engine artifacts ## Build the cluster's images (VARIANTS=cpu,cuda); with REGISTRY=... [TAG=] also push
	$(PY) -m k8s.cluster images --engine $(CONTAINER_ENGINE) --registry "$(REGISTRY)" \
		--tag $(TAG) --cuda-flavor $(CUDA_FLAVOR) --variants $(VARIANTS)

k8s-apply: k8s-kubectl $(VENV)/.ready ## Apply OVERLAY=cpu|gpu [REGISTRY=... TAG=... COMPONENTS="nginx-front ..."] to the cluster, wait for the servers
	KUBECTL=$(KUBECTL) $(PY) -m k8s.cluster apply --overlay $(OVERLAY) --registry "$(REGISTRY)" \
		--tag $(TAG) --cuda-flavor $(CUDA_FLAVOR) --engine $(CONTAINER_ENGINE) \
		$(foreach c,$(COMPONENTS),--component $(c))

k8s-check-images: $(VENV)/.ready ## Ask the registry whether TF Serving's tags (k8s/images.py) exist; says NOT CHECKED when it cannot
	$(PY) -m k8s.cluster check-images --engine $(CONTAINER_ENGINE)

k8s-loadtest: k8s-kubectl $(VENV)/.ready ## Sweep in the cluster (OVERLAY=, PROFILE=, LOADGEN_WORKERS=), copy it to results/<run>/, REPORT.md
	KUBECTL=$(KUBECTL) $(PY) -m k8s.cluster loadtest --overlay $(OVERLAY) --profile $(PROFILE) \
		$(if $(LOADGEN_WORKERS),--workers $(LOADGEN_WORKERS)) \
		$(if $(K8S_DEADLINE_S),--deadline-s $(K8S_DEADLINE_S))

k8s-collect: k8s-kubectl $(VENV)/.ready ## Resume copying an interrupted in-cluster run home, then report: RUN_ID=loadtest-...
	@test -n "$(RUN_ID)" || { echo "usage: make k8s-collect RUN_ID=loadtest-<overlay>-<time>"; exit 2; }
	KUBECTL=$(KUBECTL) $(PY) -m k8s.cluster collect --run-id $(RUN_ID) \
		$(if $(K8S_DEADLINE_S),--deadline-s $(K8S_DEADLINE_S))

k8s-delete: k8s-kubectl ## Delete the comparison from the cluster, namespace and all (OVERLAY=cpu|gpu)
	$(KUBECTL) delete -k $(K8S_DIR)/overlays/$(OVERLAY) --ignore-not-found
