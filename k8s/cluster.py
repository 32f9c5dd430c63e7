"""Drives a real cluster for the Makefile: build images, apply an overlay, run the
in-cluster load test and bring its results home.

  python -m k8s.cluster images   --registry R --tag T [--variants cpu,cuda] [--dry-run]
  python -m k8s.cluster apply    --overlay gpu [--registry R --tag T]
  python -m k8s.cluster token                   # refresh the torchserve-token Secret
  python -m k8s.cluster loadtest --overlay gpu --profile quick [--workers N] [--deadline-s S]
  python -m k8s.cluster collect  --run-id loadtest-gpu-...  # resume an interrupted copy
  python -m k8s.cluster check-images [--overlay gpu]        # do the TF Serving tags exist?

Everything talks to the cluster through kubectl (the current context). The pieces that
decide something (which images, the generated overlay, the Job made from the CronJob,
the Secret made from TorchServe's key file, the servers' description in the report) are
pure functions, tested offline in tests/k8s.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from k8s.images import (
    DEFAULT_CUDA_FLAVOR,
    HOW_TO_PICK_TF_SERVING,
    PROJECT_IMAGES,
    SUPPORTED_CUDA_FLAVORS,
    TORCH_WHEEL_INDEX,
    UnsupportedCudaFlavor,
    check_cuda_flavor,
    tf_serving_ref,
)
from k8s.validate import K8S_DIR, NAMESPACE, ROOT, kubectl
from loadtests.profiles import PROFILES
from services.registry import all_stacks

DEFAULT_TAG = "0.1.0"
GENERATED_OVERLAYS = ROOT / "run" / "k8s"
RESULTS = ROOT / "results"
# The servers' Deployments and images, as each stack plugin declares them.
SERVER_DEPLOYMENTS = tuple(s.k8s_deployment for s in all_stacks() if s.k8s_deployment)
ROLLOUT_TIMEOUT = "15m"

LOADGEN_CRONJOB = "loadgen"
# The Locust worker pods of the distributed generator (k8s/base/loadgen-workers.yaml).
LOADGEN_WORKERS = "loadgen-worker"
LOADGEN_CONTAINER = "locust"
LOADGEN_RESULTS = "/results"
TORCHSERVE_LABEL = "app.kubernetes.io/name=torchserve"
TORCHSERVE_CONTAINER = "torchserve"
TORCHSERVE_KEY_FILE = "/home/model-server/key_file.json"
TOKEN_SECRET = "torchserve-token"
TOKEN_SECRET_KEY = "inference-key"
# A key that expires sooner than this is renewed before a run (the `full` profile takes
# hours; config.properties gives keys 24 h).
TOKEN_MIN_VALID = timedelta(hours=12)
SERVER_SELECTOR = "app.kubernetes.io/component=server"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
POLL_S = 15.0
# One kubectl call waits at most this long (a dropped connection must not hang the run).
KUBECTL_TIMEOUT_S = 120.0
# A copy of the results may take longer: several GB of raw CSVs at the end of `full`.
COPY_TIMEOUT_S = 1800.0
# Added to the Job's activeDeadlineSeconds for the collector's own deadline: past it the
# Job is stopped anyway, and this leaves time for the last copy.
COLLECT_GRACE_S = 900.0
# Files whose mtime is within this of the newest one copied are sent again next time (a
# file appended to in the same second as the last copy, clocks' rounding).
MTIME_MARGIN_S = 5
COLLECTION_FILE = "collection.json"


class ClusterError(RuntimeError):
    """A kubectl or engine command failed; the message has its output."""


# --- images -----------------------------------------------------------------------------


def image_ref(name: str, tag: str, registry: str = "") -> str:
    return f"{registry.rstrip('/')}/{name}:{tag}" if registry else f"{name}:{tag}"


def build_commands(
    engine: str,
    registry: str,
    tag: str,
    cuda_flavor: str,
    variants: tuple[str, ...],
    git_commit: str,
) -> list[list[str]]:
    """The build (and, with a registry, push) commands for every project image.

    Args:
        engine: docker or podman.
        registry: e.g. registry.example.com/team; empty to build local images only.
        tag: the CPU images' tag; CUDA variants get <tag>-<cuda_flavor>.
        cuda_flavor: torch's wheel index flavour (cu130 -> download.pytorch.org/whl/cu130),
            one of SUPPORTED_CUDA_FLAVORS.
        variants: "cpu" and/or "cuda".
        git_commit: recorded in the load generator image.

    Raises:
        UnsupportedCudaFlavor: when CUDA variants are asked for with a flavour torch
            publishes no wheels for (the build would fail, or get another torch).
    """
    if "cuda" in variants:
        check_cuda_flavor(cuda_flavor)
    commands = []
    for image in PROJECT_IMAGES:
        builds: list[tuple[str, list[str]]] = []
        if "cpu" in variants or not image.cuda_variant:
            commit = ["--build-arg", f"GIT_COMMIT={git_commit}"]
            builds.append((tag, commit if image.name == "digitnet-locust" else []))
        if "cuda" in variants and image.cuda_variant:
            index = TORCH_WHEEL_INDEX.format(flavor=cuda_flavor)
            builds.append((f"{tag}-{cuda_flavor}", ["--build-arg", f"TORCH_INDEX_URL={index}"]))
        for image_tag, args in builds:
            ref = image_ref(image.name, image_tag, registry)
            commands.append([engine, "build", "-f", image.dockerfile, *args, "-t", ref, "."])
            if registry:
                commands.append([engine, "push", ref])
    return commands


def engine_problem(engine: str) -> str | None:
    """None when the container engine answers, else what to do about it."""
    if shutil.which(engine) is None:
        return (f"images: no container engine: `{engine}` is not on PATH. Install Docker "
                "(BuildKit) or set CONTAINER_ENGINE=podman; images cannot be built here.")
    probe = subprocess.run([engine, "info"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return (f"images: `{engine} info` failed, so no engine answers: "
                f"{(probe.stderr or probe.stdout).strip()[:300]}")
    return None


def git_commit() -> str:
    probe = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True, check=False, cwd=ROOT)  # fmt: skip
    return probe.stdout.strip() or "unknown"


# --- do the official images exist? -----------------------------------------------------

EXISTS, MISSING, UNCHECKED = "ok", "MISSING", "NOT CHECKED"
# Registry answers that mean "no such tag" (docker, buildx, podman, skopeo).
_NO_SUCH_TAG = ("no such manifest", "manifest unknown", "not found", "manifest_unknown")


@dataclass
class ImageCheck:
    ref: str
    state: str
    detail: str

    def line(self) -> str:
        if self.state == EXISTS:
            return f"{EXISTS} {self.ref} exists ({self.detail})"
        if self.state == MISSING:
            return (f"{MISSING} {self.ref}: the registry has no such tag ({self.detail}). TF "
                    f"Serving's images have lagged its releases: {HOW_TO_PICK_TF_SERVING}")
        return (f"{UNCHECKED} {self.ref}: {self.detail}; the cluster will try the pull itself "
                "(an ImagePullBackOff then names the tag)")  # fmt: skip


def overlay_images(overlay: str) -> list[str]:
    """The official images an overlay pulls (the project's own come from `make images`)."""
    return [tf_serving_ref(gpu=overlay == "gpu")]


def inspect_commands(engine: str, ref: str) -> list[list[str]]:
    """Ways to ask the registry for a tag's manifest without pulling it, best first."""
    commands = []
    if shutil.which(engine):
        if os.path.basename(engine) == "podman":
            commands.append([engine, "manifest", "inspect", f"docker://{ref}"])
        else:
            commands += [[engine, "manifest", "inspect", ref],
                         [engine, "buildx", "imagetools", "inspect", ref]]  # fmt: skip
    if shutil.which("skopeo"):
        commands.append(["skopeo", "inspect", "--raw", f"docker://{ref}"])
    return commands


def check_images(refs: list[str], engine: str = "docker",
                 timeout: float = 60.0) -> list[ImageCheck]:
    """Asks the registry whether each tag exists; says NOT CHECKED, never guesses, when
    no tool here can ask or the registry does not answer."""
    checks = []
    for ref in refs:
        commands = inspect_commands(engine, ref)
        if not commands:
            checks.append(ImageCheck(ref, UNCHECKED, f"no `{engine}` or skopeo on this machine "
                                     "to ask the registry with"))  # fmt: skip
            continue
        errors = []
        for command in commands:
            try:
                result = subprocess.run(command, capture_output=True, text=True, check=False,
                                        timeout=timeout)  # fmt: skip
            except subprocess.TimeoutExpired:
                errors.append(f"`{' '.join(command[:3])}` timed out")
                continue
            said = (result.stderr or result.stdout).strip().splitlines()
            if result.returncode == 0:
                checks.append(ImageCheck(ref, EXISTS, " ".join(command[:3])))
                break
            message = said[-1] if said else f"exit {result.returncode}"
            if any(s in message.lower() for s in _NO_SUCH_TAG):
                checks.append(ImageCheck(ref, MISSING, f"{' '.join(command[:3])}: {message}"))
                break
            errors.append(f"`{' '.join(command[:3])}`: {message[:200]}")
        else:
            checks.append(ImageCheck(ref, UNCHECKED, "the registry did not answer: "
                                     + "; ".join(errors)))  # fmt: skip
    return checks


# --- the overlay actually applied -------------------------------------------------------


def overlay_kustomization(
    overlay: str, registry: str, tag: str, cuda_flavor: str, k8s_dir: Path = K8S_DIR,
    out_dir: Path = GENERATED_OVERLAYS, components: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A kustomization on top of k8s/overlays/<overlay> that points the project images at
    `registry` with `tag` (CUDA variants: <tag>-<cuda_flavor> in the GPU overlay); the
    official TF Serving image keeps its pinned tag. `components` (names under
    k8s/components/, e.g. gpu-feature-discovery) are added on top.

    Raises:
        UnsupportedCudaFlavor: for the GPU overlay with a flavour not in
            SUPPORTED_CUDA_FLAVORS (no image of that flavour can exist).
    """
    if overlay == "gpu":
        check_cuda_flavor(cuda_flavor)
    images = []
    for image in PROJECT_IMAGES:
        image_tag = f"{tag}-{cuda_flavor}" if overlay == "gpu" and image.cuda_variant else tag
        entry: dict[str, str] = {"name": image.name, "newTag": image_tag}
        if registry:
            entry["newName"] = f"{registry.rstrip('/')}/{image.name}"
        images.append(entry)
    here = out_dir / overlay
    base = Path(os.path.relpath(k8s_dir / "overlays" / overlay, here))
    doc: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [base.as_posix()],
    }
    if components:
        doc["components"] = [Path(os.path.relpath(k8s_dir / "components" / c, here)).as_posix()
                             for c in components]  # fmt: skip
    doc["images"] = images
    return doc


def write_overlay(
    overlay: str, registry: str, tag: str, cuda_flavor: str, out_dir: Path = GENERATED_OVERLAYS,
    components: tuple[str, ...] = (),
) -> Path:
    """Writes run/k8s/<overlay>/kustomization.yaml (git-ignored); returns its folder."""
    doc = overlay_kustomization(overlay, registry, tag, cuda_flavor, out_dir=out_dir,
                                components=components)  # fmt: skip
    folder = out_dir / overlay
    folder.mkdir(parents=True, exist_ok=True)
    header = "# Generated by `make k8s-apply` (k8s/cluster.py); edit k8s/overlays instead.\n"
    (folder / "kustomization.yaml").write_text(header + yaml.safe_dump(doc, sort_keys=False))
    return folder


# --- the TorchServe token ---------------------------------------------------------------


def inference_key(key_file_text: str, now: datetime, min_valid: timedelta) -> tuple[str, bool]:
    """The inference key from TorchServe's key_file.json, and whether it must be renewed
    (it expires within min_valid).

    Raises:
        ValueError: when the file is not TorchServe's key file.
    """
    try:
        entry = json.loads(key_file_text)["inference"]
        key, expires = entry["key"], entry["expiration time"]
        expiry = datetime.fromisoformat(expires.replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"not a TorchServe key_file.json: {err}") from None
    return key, expiry - now < min_valid


def token_secret(key: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    """The Secret the load generator mounts (k8s/base/loadgen.yaml)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": TOKEN_SECRET,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "torchserve",
                "app.kubernetes.io/part-of": NAMESPACE,
                "app.kubernetes.io/component": "credentials",
            },
        },
        "type": "Opaque",
        "data": {TOKEN_SECRET_KEY: base64.b64encode(key.encode()).decode()},
    }


TORCHSERVE_MANAGEMENT_URL = "http://127.0.0.1:8081"


def renew_key_script(
    key_file: str = TORCHSERVE_KEY_FILE, management_url: str = TORCHSERVE_MANAGEMENT_URL
) -> str:
    """Python run inside the TorchServe container (stdin of `kubectl exec`): asks the
    management API on loopback for a new inference key, with the API key; TorchServe
    rewrites key_file.json with it and a new expiry."""
    return (
        "import json, urllib.request\n"
        f"keys = json.load(open({key_file!r}))\n"
        f"request = urllib.request.Request({management_url + '/token?type=inference'!r}, "
        "method='POST', headers={'Authorization': 'Bearer ' + keys['API']['key']})\n"
        "urllib.request.urlopen(request, timeout=10).read()\n"
    )


# --- the load-test Job ------------------------------------------------------------------


def job_from_cronjob(cronjob: dict[str, Any], run_id: str, profile: str,
                     workers: int = 0) -> dict[str, Any]:
    """What `kubectl create job <run> --from=cronjob/loadgen` makes, plus this run's id,
    profile and number of Locust workers (the worker pods its master waits for) in the
    Locust container's environment (the CronJob is only a template)."""
    template = json.loads(json.dumps(cronjob["spec"]["jobTemplate"]))
    meta = template.setdefault("metadata", {})
    meta["name"] = run_id
    meta["namespace"] = cronjob["metadata"]["namespace"]
    meta.setdefault("annotations", {})["cronjob.kubernetes.io/instantiate"] = "manual"
    for key in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"):
        meta.pop(key, None)
    containers = template["spec"]["template"]["spec"]["containers"]
    locust = next(c for c in containers if c["name"] == LOADGEN_CONTAINER)
    run_env = {"LOADTEST_RUN_ID": run_id, "LOADTEST_PROFILE": profile,
               "LOADTEST_WORKERS": str(workers)}
    env = [e for e in locust.get("env", []) if e["name"] not in run_env]
    locust["env"] = env + [{"name": k, "value": v} for k, v in run_env.items()]
    return {"apiVersion": "batch/v1", "kind": "Job", **template}


def job_name(overlay: str, now: datetime) -> str:
    """A unique, DNS-safe Job name that is also the run id (results/<run-id>)."""
    return f"loadtest-{overlay}-{now.strftime('%Y%m%d-%H%M%S')}"


# --- describing the servers in the report -----------------------------------------------


def describe_servers(pods: dict[str, Any], nodes: dict[str, Any]) -> dict[str, Any]:
    """Per serving pod: image, node, resources and GPU model, for environment.json.

    Args:
        pods: `kubectl get pods -l app.kubernetes.io/component=server -o json`.
        nodes: `kubectl get nodes -o json`.
    """
    node_labels = {n["metadata"]["name"]: n["metadata"].get("labels", {})
                   for n in nodes.get("items", [])}  # fmt: skip
    servers: dict[str, Any] = {}
    for pod in pods.get("items", []):
        name = pod["metadata"].get("labels", {}).get("app.kubernetes.io/name", "?")
        container = pod["spec"]["containers"][0]
        node = pod["spec"].get("nodeName")
        labels = node_labels.get(node, {})
        servers[f"{name} (k8s)"] = {
            "pod": pod["metadata"]["name"],
            "image": container.get("image"),
            "node": node,
            "instance_type": labels.get("node.kubernetes.io/instance-type"),
            "gpu": labels.get(GPU_PRODUCT_LABEL),
            "resources": container.get("resources", {}),
        }
    return servers


def merge_environment(env: dict[str, Any], servers: dict[str, Any]) -> dict[str, Any]:
    merged = {**env, "servers": {**env.get("servers", {}), **servers}}
    gpus = sorted({s["gpu"] for s in servers.values() if s.get("gpu")})
    if gpus:
        merged["gpu"] = ", ".join(gpus)
    tfs = next((s["image"] for k, s in servers.items() if k.startswith("tf-serving")), None)
    if tfs:
        merged.setdefault("versions", {})["tensorflow_model_server"] = tfs
    return merged


# --- kubectl ----------------------------------------------------------------------------


def run_kubectl(*args: str, stdin: str | None = None, namespaced: bool = True,
                timeout: float | None = None) -> str:
    """kubectl with the project's namespace; returns stdout.

    Raises:
        ClusterError: on a non-zero exit, with kubectl's message, or when it takes longer
            than `timeout` seconds (it is killed).
    """
    command = [kubectl(), *(["--namespace", NAMESPACE] if namespaced else []), *args]
    try:
        result = subprocess.run(command, input=stdin, capture_output=True, text=True,
                                check=False, timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise ClusterError(f"{' '.join(command[:6])} ...: no answer within {timeout:.0f} s"
                           ) from None  # fmt: skip
    if result.returncode != 0:
        raise ClusterError(f"{' '.join(command[:6])} ...: {result.stderr.strip()}")
    return result.stdout


def kubectl_to_file(args: list[str], dest: Path, timeout: float) -> None:
    """kubectl with the project's namespace, its stdout (binary) written to `dest`.

    Raises:
        ClusterError: on a non-zero exit or past `timeout` seconds.
    """
    command = [kubectl(), "--namespace", NAMESPACE, *args]
    with dest.open("wb") as out:
        try:
            result = subprocess.run(command, stdout=out, stderr=subprocess.PIPE, check=False,
                                    timeout=timeout)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise ClusterError(f"{' '.join(command[:6])} ...: no answer within "
                               f"{timeout:.0f} s") from None  # fmt: skip
    if result.returncode != 0:
        raise ClusterError(f"{' '.join(command[:6])} ...: "
                           f"{result.stderr.decode(errors='replace').strip()}")  # fmt: skip


PULL_FAILURES = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName"}


def pull_problems(pods: dict[str, Any]) -> list[str]:
    """Containers waiting on an image pull, named with the image and kubelet's message
    (`kubectl get pods -o json`); TF Serving's get the way to pick another version."""
    problems = []
    for pod in pods.get("items", []):
        status = pod.get("status", {})
        for container in (status.get("initContainerStatuses", [])
                          + status.get("containerStatuses", [])):  # fmt: skip
            waiting = container.get("state", {}).get("waiting", {})
            if waiting.get("reason") not in PULL_FAILURES:
                continue
            image = container.get("image", "?")
            problem = (f"{pod['metadata']['name']}: cannot pull {image} ({waiting['reason']}: "
                       f"{waiting.get('message', '').strip()[:300]})")
            if image.split("@")[0].rsplit(":", 1)[0].endswith("tensorflow/serving"):
                problem += (". TF Serving's images have lagged its releases: "
                            f"{HOW_TO_PICK_TF_SERVING}")
            else:
                problem += (". Was it built and pushed (`make images REGISTRY=... TAG=...`), "
                            "and can the cluster pull from that registry?")
            problems.append(problem)
    return problems


def wait_for_servers() -> None:
    for deployment in SERVER_DEPLOYMENTS:
        print(f"k8s: waiting for deployment/{deployment} ...", flush=True)
        try:
            run_kubectl("rollout", "status", f"deployment/{deployment}",
                        f"--timeout={ROLLOUT_TIMEOUT}")  # fmt: skip
        except ClusterError as err:
            pods = json.loads(run_kubectl("get", "pods", "-l", SERVER_SELECTOR, "-o", "json"))
            missing = pull_problems(pods)
            if missing:
                raise ClusterError("; ".join(missing)) from err
            raise


def apply(overlay: str, registry: str, tag: str, cuda_flavor: str,
          components: tuple[str, ...] = (), engine: str = "docker") -> None:
    checks = check_images(overlay_images(overlay), engine)
    for check in checks:
        print(f"k8s: {check.line()}", flush=True)
    missing = [c for c in checks if c.state == MISSING]
    if missing:
        raise ClusterError(f"{', '.join(c.ref for c in missing)} not in the registry; "
                           f"nothing applied. {HOW_TO_PICK_TF_SERVING}")  # fmt: skip
    folder = write_overlay(overlay, registry, tag, cuda_flavor, components=components)
    if not registry:
        print("k8s: no REGISTRY given: images keep their bare names (fine for kind/minikube "
              "with `kind load docker-image`; a real cluster needs REGISTRY=...)", flush=True)
    print(run_kubectl("apply", "-k", str(folder), namespaced=False), end="", flush=True)
    wait_for_servers()
    print(f"k8s: overlay {overlay} applied and every server is ready", flush=True)


def torchserve_pod() -> str:
    names = run_kubectl("get", "pods", "-l", TORCHSERVE_LABEL, "--field-selector",
                        "status.phase=Running", "-o", "name").split()  # fmt: skip
    if len(names) != 1:
        raise ClusterError(f"expected one running TorchServe pod, found {names or 'none'} "
                           "(its token is per process: keep replicas at 1)")  # fmt: skip
    return names[0]


def refresh_token() -> None:
    """Copies the running TorchServe pod's inference key into the torchserve-token
    Secret, renewing the key first when it would expire during a long run. The key goes
    through pipes only, never a command line."""
    pod = torchserve_pod()
    read = ("exec", pod, "-c", TORCHSERVE_CONTAINER, "--", "cat", TORCHSERVE_KEY_FILE)
    key, stale = inference_key(run_kubectl(*read), datetime.now(UTC), TOKEN_MIN_VALID)
    if stale:
        print("k8s: TorchServe's inference key expires soon: renewing it", flush=True)
        run_kubectl("exec", "-i", pod, "-c", TORCHSERVE_CONTAINER, "--", "python", "-",
                    stdin=renew_key_script())  # fmt: skip
        key, _ = inference_key(run_kubectl(*read), datetime.now(UTC), timedelta(0))
    run_kubectl("apply", "-f", "-", stdin=json.dumps(token_secret(key)))
    print(f"k8s: secret/{TOKEN_SECRET} holds the inference key of {pod}", flush=True)


class KeyWatch:
    """Called by collect() on every round: when the TorchServe pod restarted (a new pod, or
    its container's restart count went up), its new inference key goes into the Secret
    (refresh_token). TorchServe writes a new key file at every start, so without this
    every request after a restart is refused; the kubelet brings the Secret's change to the
    load generator's mounted file within its sync period, and loadtests.cluster re-reads
    it before each window (a window that met the change says so: `key_rejected`)."""

    def __init__(self) -> None:
        self.seen = self.identity()

    @staticmethod
    def identity() -> str | None:
        """The running TorchServe pods and their restart counts; None when kubectl cannot
        say (the next round tries again)."""
        try:
            pods = json.loads(run_kubectl("get", "pods", "-l", TORCHSERVE_LABEL, "-o", "json",
                                          timeout=KUBECTL_TIMEOUT_S))
        except (ClusterError, ValueError):
            return None
        seen = []
        for item in pods.get("items", []):
            restarts = sum(s.get("restartCount", 0) for s in
                           item.get("status", {}).get("containerStatuses", []))
            seen.append(f"{item['metadata']['name']}:{restarts}")
        return ",".join(sorted(seen))

    def __call__(self) -> None:
        now = self.identity()
        if now is None or now == self.seen:
            return
        print(f"k8s: TorchServe restarted ({self.seen or 'none'} -> {now or 'none'}): copying "
              "its new inference key into the Secret", flush=True)
        if not now:
            return  # no TorchServe running yet: the next round looks again
        refresh_token()  # a ClusterError (not ready yet) leaves `seen`: retried next round
        self.seen = now


def loadgen_pod(job: str, timeout_s: float = 900.0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        names = run_kubectl("get", "pods", "-l", f"job-name={job}", "-o", "name",
                            timeout=KUBECTL_TIMEOUT_S).split()  # fmt: skip
        if names:
            phase = run_kubectl("get", names[0], "-o", "jsonpath={.status.phase}",
                                timeout=KUBECTL_TIMEOUT_S)  # fmt: skip
            if phase == "Running":
                return names[0].removeprefix("pod/")
            if phase in ("Failed", "Succeeded"):
                raise ClusterError(f"{names[0]} ended ({phase}) before its results were copied")
        if time.monotonic() > deadline:
            raise ClusterError(f"no running pod for job/{job} after {timeout_s:.0f} s (Pending? "
                               "the load generator needs a node without servers)")
        time.sleep(5)


# --- bringing the results home ----------------------------------------------------------

# How a collection ended.
COMPLETE, SWEEP_FAILED, POD_FAILED, DEADLINE = "complete", "sweep-failed", "pod-failed", "deadline"


@dataclass
class Collection:
    """What `collect` brought home, and why it stopped."""

    state: str
    points: int
    message: str


def pod_failure(pod: str, timeout: float) -> str | None:
    """None while the pod runs; else what ended it (evicted, OOM-killed, deleted, ...).

    Raises:
        ClusterError: when the cluster does not answer (the pod's fate is unknown).
    """
    try:
        doc = json.loads(run_kubectl("get", "pod", pod, "-o", "json", timeout=timeout))
    except ClusterError as err:
        if "NotFound" in str(err) or "not found" in str(err):
            return "the pod was deleted (evicted, preempted, or its node removed)"
        raise
    status = doc.get("status", {})
    if status.get("phase") == "Running":
        return None
    if status.get("phase") == "Unknown":
        # Its node stopped reporting: the pod (and its results) may come back.
        raise ClusterError(f"pod {pod} is in phase Unknown (its node does not report)")
    why = [f"phase {status.get('phase')}"]
    why += [f"{k} {status[k]}" for k in ("reason", "message") if status.get(k)]
    for container in status.get("containerStatuses", []):
        ended = container.get("state", {}).get("terminated")
        if ended:
            why.append(f"container {container.get('name')} {ended.get('reason', 'ended')} "
                       f"(exit {ended.get('exitCode')})")  # fmt: skip
    return ", ".join(why)


def count_points(run_dir: Path) -> int:
    points = run_dir / "points.jsonl"
    if not points.exists():
        return 0
    return sum(1 for line in points.read_text().splitlines() if line.strip())


def copy_results(pod: str, run_id: str, run_dir: Path, since: int | None,
                 timeout: float) -> int | None:
    """Streams the pod's results/<run-id> (the files changed since `since`, epoch s of
    the pod's clock; all with None) as a compressed tar through `kubectl exec` and merges
    it into run_dir. The archive is read whole into a scratch folder first: a stream cut
    off by a dying pod or a dropped connection changes nothing already copied.

    Returns:
        The newest file mtime in the archive (epoch s), None when it held no file.

    Raises:
        ClusterError: when kubectl fails or the archive is incomplete.
    """
    tar = ["tar", "czf", "-", "-C", f"{LOADGEN_RESULTS}/{run_id}",
           *([f"--newer-mtime=@{since}"] if since is not None else []), "."]  # fmt: skip
    # GNU tar exits 1 when a file changed while it was read (a point being appended): the
    # archive is still whole, and the next copy sends that file again.
    shell = ["sh", "-c", 'tar "$@"; s=$?; [ "$s" -le 1 ]', "tar", *tar[1:]]
    run_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{run_id}-", dir=run_dir.parent) as tmp:
        archive, staging = Path(tmp) / "results.tar.gz", Path(tmp) / "files"
        kubectl_to_file(["exec", pod, "-c", LOADGEN_CONTAINER, "--", *shell], archive, timeout)
        newest = None
        try:
            with tarfile.open(archive, "r:gz") as bundle:
                members = bundle.getmembers()
                bundle.extractall(staging, filter="data")
        except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
            raise ClusterError(f"incomplete results stream from {pod}: {err}") from None
        for member in members:
            if not member.isfile():
                continue
            newest = max(newest or 0, int(member.mtime))
            target = run_dir / member.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / member.name, target)
    return newest


def collect(
    pod: str, run_id: str, run_dir: Path, deadline_s: float, poll_s: float = POLL_S,
    sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
    each_round: Callable[[], None] | None = None,
) -> Collection:
    """Brings the run home while the pod measures: after each new point (and once more
    when the sweep ends) the changed files are streamed out (copy_results), so a pod that
    fails, is evicted or deleted, or a collector that loses the cluster, keeps every point
    copied so far. Ends at the sweep's marker (then tells the pod it may exit), at the
    pod's failure, or at the deadline; never waits longer, whatever kubectl does.

    Args:
        pod: the load generator's pod.
        run_id: the run (results/<run-id> in the pod and here).
        run_dir: where the run is kept here (merged into, so a second collect resumes).
        deadline_s: the longest the whole collection may take.
        poll_s: between looks at the pod.
        sleep, clock: time.sleep and time.monotonic (tests pass their own).
        each_round: called every round while the sweep runs (KeyWatch); a ClusterError it
            raises is retried like kubectl's own.
    """
    deadline = clock() + deadline_s
    copied, newest, last_line, unreachable = count_points(run_dir), None, "", ""

    def left(cap: float) -> float:
        return max(1.0, min(cap, deadline - clock()))

    def stop(state: str, message: str) -> Collection:
        points = count_points(run_dir)
        kept = (f"{points} point(s) kept in {run_dir}" if points
                else f"no point had been copied to {run_dir}")  # fmt: skip
        return Collection(state, points, f"{message}; {kept}")

    while True:
        if clock() >= deadline:
            why = f" (last kubectl error: {unreachable})" if unreachable else ""
            return stop(DEADLINE, f"collection deadline of {deadline_s:.0f} s passed before "
                                  f"the sweep in {pod} finished{why}; the pod keeps its "
                                  "results until its own deadline: `make k8s-collect "
                                  f"RUN_ID={run_id}` resumes")  # fmt: skip
        try:
            failure = pod_failure(pod, left(KUBECTL_TIMEOUT_S))
            if failure:
                return stop(POD_FAILED, f"the load generator pod {pod} ended before its "
                                        f"results were all copied: {failure}")  # fmt: skip
            probe = run_kubectl(
                "exec", pod, "-c", LOADGEN_CONTAINER, "--", "sh", "-c",
                'ls -1 "$1"; echo "points $(cat "$1/$2/points.jsonl" 2>/dev/null | wc -l)"',
                "sh", LOADGEN_RESULTS, run_id, timeout=left(KUBECTL_TIMEOUT_S),
            )  # fmt: skip
            lines = probe.split()
            state = next((s for s in ("complete", "failed") if f"{run_id}.{s}" in lines), None)
            points = int(lines[-1]) if lines and lines[-1].isdigit() else 0
            if state or points > copied:
                since = None if newest is None else newest - MTIME_MARGIN_S
                got = copy_results(pod, run_id, run_dir, since, left(COPY_TIMEOUT_S))
                newest = max(newest or 0, got or 0) or None
                copied = count_points(run_dir)
                print(f"k8s: {copied} point(s) copied to {run_dir}", flush=True)
            if state:
                # Everything copied after the marker: let the pod exit.
                run_kubectl("exec", pod, "-c", LOADGEN_CONTAINER, "--", "touch",
                            f"{LOADGEN_RESULTS}/{run_id}.collected",
                            timeout=left(KUBECTL_TIMEOUT_S))  # fmt: skip
                if state == "failed":
                    return stop(SWEEP_FAILED, f"the sweep failed in {pod} (see `kubectl -n "
                                              f"{NAMESPACE} logs job/{run_id}`)")  # fmt: skip
                return stop(COMPLETE, "the sweep finished and every file was copied")
            if each_round is not None:
                each_round()
            line = run_kubectl("logs", pod, "-c", LOADGEN_CONTAINER, "--tail=1",
                               timeout=left(KUBECTL_TIMEOUT_S)).strip()  # fmt: skip
            if line and line != last_line:
                print(f"  {line}", flush=True)
                last_line = line
            unreachable = ""
        except ClusterError as err:
            # A dropped connection, a hung exec or a cut stream: what was copied stays;
            # the next round (or the pod's failure, or the deadline) decides.
            if str(err) != unreachable:
                print(f"k8s: {err} (retrying until the deadline)", flush=True)
            unreachable = str(err)
        sleep(min(poll_s, max(0.0, deadline - clock())))


def record_collection(run_dir: Path, pod: str, collection: Collection) -> None:
    """results/<run-id>/collection.json: how the run came home (read it before trusting a
    partial run)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / COLLECTION_FILE).write_text(json.dumps({
        "pod": pod, "state": collection.state, "points": collection.points,
        "message": collection.message, "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }, indent=2) + "\n")  # fmt: skip


def job_deadline_s(job: dict[str, Any]) -> float:
    """The collector's deadline for a Job: its activeDeadlineSeconds plus COLLECT_GRACE_S."""
    return float(job["spec"].get("activeDeadlineSeconds", 36000)) + COLLECT_GRACE_S


def locust_workers(count: int | None) -> int:
    """Scales the Locust worker Deployment to `count` (None: as applied), waits until
    every worker runs, and returns how many there are.

    Raises:
        ClusterError: for no workers, or workers that never became ready.
    """
    target = f"deployment/{LOADGEN_WORKERS}"
    if count is not None:
        if count < 1:
            raise ClusterError(f"LOADGEN_WORKERS={count}: the sweep needs at least one worker")
        run_kubectl("scale", target, f"--replicas={count}")
    replicas = int(json.loads(run_kubectl("get", target, "-o", "json"))["spec"]["replicas"])
    if replicas < 1:
        raise ClusterError(f"{target} is scaled to {replicas}: give the run workers "
                           "(make k8s-loadtest LOADGEN_WORKERS=N)")
    print(f"k8s: waiting for {replicas} Locust worker(s) ({target}) ...", flush=True)
    run_kubectl("rollout", "status", target, f"--timeout={ROLLOUT_TIMEOUT}")
    return replicas


def loadtest(overlay: str, profile: str, results: Path = RESULTS,
             deadline_s: float | None = None, workers: int | None = None) -> Path:
    """Runs the in-cluster sweep and builds the report under results/<run-id>/."""
    wait_for_servers()
    count = locust_workers(workers)
    refresh_token()
    run_id = job_name(overlay, datetime.now(UTC))
    cronjob = json.loads(run_kubectl("get", "cronjob", LOADGEN_CRONJOB, "-o", "json"))
    job = job_from_cronjob(cronjob, run_id, profile, count)
    run_kubectl("create", "-f", "-", stdin=json.dumps(job))
    print(f"k8s: job/{run_id} created (profile {profile}, {count} Locust workers); waiting "
          "for its pod", flush=True)  # fmt: skip
    return collect_run(run_id, job_deadline_s(job) if deadline_s is None else deadline_s,
                       results)  # fmt: skip


def collect_run(run_id: str, deadline_s: float, results: Path = RESULTS) -> Path:
    """Collects a run (a fresh one, or one whose collector was interrupted) and builds its
    report.

    Raises:
        ClusterError: when the run did not come home whole; what did is kept, and
            collection.json says why.
    """
    start = time.monotonic()
    pod = loadgen_pod(run_id, min(900.0, deadline_s))
    run_dir = results / run_id
    collection = collect(pod, run_id, run_dir, deadline_s - (time.monotonic() - start),
                         each_round=KeyWatch())
    record_collection(run_dir, pod, collection)
    print(f"k8s: {collection.message}", flush=True)
    if collection.state != COMPLETE:
        raise ClusterError(f"{collection.message}. No report was built (environment.json is "
                           "written when the sweep ends); the points are in points.jsonl and "
                           f"raw/, and {COLLECTION_FILE} records what happened")  # fmt: skip
    pods = json.loads(run_kubectl("get", "pods", "-l", SERVER_SELECTOR, "-o", "json"))
    nodes = json.loads(run_kubectl("get", "nodes", "-o", "json", namespaced=False))
    env_file = run_dir / "environment.json"
    env = merge_environment(json.loads(env_file.read_text()), describe_servers(pods, nodes))
    env_file.write_text(json.dumps(env, indent=2) + "\n")
    from tools.report import build as write_report

    report = write_report(run_dir)
    print(f"k8s: report {report}", flush=True)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    images = sub.add_parser("images", help="build (and with --registry push) every image")
    images.add_argument("--engine", default="docker")
    images.add_argument("--variants", default="cpu,cuda")
    images.add_argument("--dry-run", action="store_true", help="print the commands only")
    apply_cmd = sub.add_parser("apply", help="apply an overlay and wait for the servers")
    for cmd in (images, apply_cmd):
        cmd.add_argument("--registry", default="")
        cmd.add_argument("--tag", default=DEFAULT_TAG)
        cmd.add_argument("--cuda-flavor", default=DEFAULT_CUDA_FLAVOR,
                         help=f"torch CUDA build: {', '.join(SUPPORTED_CUDA_FLAVORS)}")
    apply_cmd.add_argument("--overlay", choices=("cpu", "gpu"), required=True)
    apply_cmd.add_argument("--component", action="append", default=[],
                           help="a k8s/components/ folder to add (e.g. gpu-feature-discovery)")
    apply_cmd.add_argument("--engine", default="docker",
                           help="asks the registry whether TF Serving's tag exists")
    check = sub.add_parser("check-images", help="ask the registry whether TF Serving's tags exist")
    check.add_argument("--overlay", choices=("cpu", "gpu", "all"), default="all")
    check.add_argument("--engine", default="docker")
    sub.add_parser("token", help="refresh the torchserve-token Secret")
    load = sub.add_parser("loadtest", help="run the sweep in the cluster, copy it, report")
    load.add_argument("--overlay", choices=("cpu", "gpu"), required=True)
    load.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    load.add_argument("--workers", type=int, default=None,
                      help="Locust worker pods to scale to (default: as applied)")
    collect_cmd = sub.add_parser("collect", help="resume bringing a run home, then report")
    collect_cmd.add_argument("--run-id", required=True, help="the Job's name (loadtest-...)")
    for cmd in (load, collect_cmd):
        cmd.add_argument("--deadline-s", type=float, default=None,
                         help="the longest the collection may take (default: the Job's "
                         f"activeDeadlineSeconds + {COLLECT_GRACE_S:.0f} s)")
    args = parser.parse_args()
    try:
        if args.command == "images":
            variants = tuple(v for v in args.variants.split(",") if v)
            commands = build_commands(args.engine, args.registry, args.tag, args.cuda_flavor,
                                      variants, git_commit())  # fmt: skip
            if not args.dry_run:
                problem = engine_problem(args.engine)
                if problem:
                    print(problem, file=sys.stderr)
                    return 2
            for command in commands:
                print("+ " + " ".join(command), flush=True)
                if not args.dry_run:
                    subprocess.run(command, check=True, cwd=ROOT,
                                   env={**os.environ, "DOCKER_BUILDKIT": "1"})  # fmt: skip
        elif args.command == "apply":
            apply(args.overlay, args.registry, args.tag, args.cuda_flavor,
                  tuple(args.component), args.engine)
        elif args.command == "check-images":
            overlays = ("cpu", "gpu") if args.overlay == "all" else (args.overlay,)
            checks = check_images([r for o in overlays for r in overlay_images(o)], args.engine)
            for check in checks:
                print(check.line(), flush=True)
            if any(c.state == MISSING for c in checks):
                return 1
            return 3 if any(c.state == UNCHECKED for c in checks) else 0
        elif args.command == "token":
            refresh_token()
        elif args.command == "collect":
            deadline = 3600.0 + COLLECT_GRACE_S if args.deadline_s is None else args.deadline_s
            collect_run(args.run_id, deadline)
        else:
            loadtest(args.overlay, args.profile, deadline_s=args.deadline_s,
                     workers=args.workers)
    except UnsupportedCudaFlavor as err:
        print(f"k8s: {err}", file=sys.stderr)
        return 2
    except (ClusterError, subprocess.CalledProcessError) as err:
        print(f"k8s: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
