"""Drives a real cluster for the Makefile: build images, apply an overlay, run the
in-cluster load test and bring its results home.

  python -m k8s.cluster images   --registry R --tag T [--variants cpu,cuda] [--dry-run]
  python -m k8s.cluster apply    --overlay gpu [--registry R --tag T]
  python -m k8s.cluster token                   # refresh the torchserve-token Secret
  python -m k8s.cluster loadtest --overlay gpu --profile quick

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
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from k8s.images import (
    DEFAULT_CUDA_FLAVOR,
    PROJECT_IMAGES,
    SUPPORTED_CUDA_FLAVORS,
    TORCH_WHEEL_INDEX,
    UnsupportedCudaFlavor,
    check_cuda_flavor,
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


def job_from_cronjob(cronjob: dict[str, Any], run_id: str, profile: str) -> dict[str, Any]:
    """What `kubectl create job <run> --from=cronjob/loadgen` makes, plus this run's id
    and profile in the Locust container's environment (the CronJob is only a template)."""
    template = json.loads(json.dumps(cronjob["spec"]["jobTemplate"]))
    meta = template.setdefault("metadata", {})
    meta["name"] = run_id
    meta["namespace"] = cronjob["metadata"]["namespace"]
    meta.setdefault("annotations", {})["cronjob.kubernetes.io/instantiate"] = "manual"
    for key in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"):
        meta.pop(key, None)
    containers = template["spec"]["template"]["spec"]["containers"]
    locust = next(c for c in containers if c["name"] == LOADGEN_CONTAINER)
    run_env = {"LOADTEST_RUN_ID": run_id, "LOADTEST_PROFILE": profile}
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


def run_kubectl(*args: str, stdin: str | None = None, namespaced: bool = True) -> str:
    """kubectl with the project's namespace; returns stdout.

    Raises:
        ClusterError: on a non-zero exit, with kubectl's message.
    """
    command = [kubectl(), *(["--namespace", NAMESPACE] if namespaced else []), *args]
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ClusterError(f"{' '.join(command[:6])} ...: {result.stderr.strip()}")
    return result.stdout


def wait_for_servers() -> None:
    for deployment in SERVER_DEPLOYMENTS:
        print(f"k8s: waiting for deployment/{deployment} ...", flush=True)
        run_kubectl("rollout", "status", f"deployment/{deployment}",
                    f"--timeout={ROLLOUT_TIMEOUT}")  # fmt: skip


def apply(overlay: str, registry: str, tag: str, cuda_flavor: str,
          components: tuple[str, ...] = ()) -> None:
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


def loadgen_pod(job: str, timeout_s: float = 900.0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        names = run_kubectl("get", "pods", "-l", f"job-name={job}", "-o", "name").split()
        if names:
            phase = run_kubectl("get", names[0], "-o", "jsonpath={.status.phase}")
            if phase == "Running":
                return names[0].removeprefix("pod/")
            if phase in ("Failed", "Succeeded"):
                raise ClusterError(f"{names[0]} ended ({phase}) before its results were copied")
        if time.monotonic() > deadline:
            raise ClusterError(f"no running pod for job/{job} after {timeout_s:.0f} s (Pending? "
                               "the load generator needs a node without servers)")
        time.sleep(5)


def wait_for_results(pod: str, run_id: str) -> str:
    """Polls the pod for the sweep's marker file, showing its latest log line; returns
    "complete" or "failed"."""
    last = ""
    while True:
        listing = run_kubectl("exec", pod, "-c", LOADGEN_CONTAINER, "--", "ls", LOADGEN_RESULTS)
        names = set(listing.split())
        for state in ("complete", "failed"):
            if f"{run_id}.{state}" in names:
                return state
        line = run_kubectl("logs", pod, "-c", LOADGEN_CONTAINER, "--tail=1").strip()
        if line and line != last:
            print(f"  {line}", flush=True)
            last = line
        time.sleep(POLL_S)


def loadtest(overlay: str, profile: str, results: Path = RESULTS) -> Path:
    """Runs the in-cluster sweep and builds the report under results/<run-id>/."""
    wait_for_servers()
    refresh_token()
    run_id = job_name(overlay, datetime.now(UTC))
    cronjob = json.loads(run_kubectl("get", "cronjob", LOADGEN_CRONJOB, "-o", "json"))
    run_kubectl("create", "-f", "-", stdin=json.dumps(job_from_cronjob(cronjob, run_id, profile)))
    print(f"k8s: job/{run_id} created (profile {profile}); waiting for its pod", flush=True)
    pod = loadgen_pod(run_id)
    state = wait_for_results(pod, run_id)
    run_dir = results / run_id
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    run_kubectl("cp", "-c", LOADGEN_CONTAINER, f"{NAMESPACE}/{pod}:{LOADGEN_RESULTS}/{run_id}",
                str(run_dir))  # fmt: skip
    run_kubectl("exec", pod, "-c", LOADGEN_CONTAINER, "--", "touch",
                f"{LOADGEN_RESULTS}/{run_id}.collected")  # fmt: skip
    print(f"k8s: copied to {run_dir}", flush=True)
    if state == "failed":
        raise ClusterError(f"the sweep failed; partial data in {run_dir}; see "
                           f"`kubectl -n {NAMESPACE} logs job/{run_id}`")  # fmt: skip
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
    sub.add_parser("token", help="refresh the torchserve-token Secret")
    load = sub.add_parser("loadtest", help="run the sweep in the cluster, copy it, report")
    load.add_argument("--overlay", choices=("cpu", "gpu"), required=True)
    load.add_argument("--profile", choices=sorted(PROFILES), default="quick")
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
                  tuple(args.component))
        elif args.command == "token":
            refresh_token()
        else:
            loadtest(args.overlay, args.profile)
    except UnsupportedCudaFlavor as err:
        print(f"k8s: {err}", file=sys.stderr)
        return 2
    except (ClusterError, subprocess.CalledProcessError) as err:
        print(f"k8s: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
