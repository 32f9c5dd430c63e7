"""k8s/cluster.py's decisions, offline: the images `make images` builds are the ones the
overlays deploy, the generated overlay points them at a registry, the load-test Job made
from the CronJob is valid, and the TorchServe key file becomes the Secret."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import kubernetes_validate
import pytest
import yaml

from k8s import cluster, validate

REGISTRY = "registry.example.com/ml"


def project_images(objects: list[dict]) -> set[str]:
    return {
        container["image"]
        for pod in validate.pod_templates(objects)
        for container in pod.containers()
        if not container["image"].startswith("tensorflow/serving")
    }


def built_refs(commands: list[list[str]]) -> set[str]:
    return {c[c.index("-t") + 1] for c in commands if c[1] == "build"}


def test_make_images_builds_exactly_what_the_overlays_deploy(rendered):
    commands = cluster.build_commands("docker", "", cluster.DEFAULT_TAG,
                                      cluster.DEFAULT_CUDA_FLAVOR, ("cpu", "cuda"), "abc123")
    deployed = project_images(rendered["cpu"]) | project_images(rendered["gpu"])
    assert built_refs(commands) == deployed
    assert not [c for c in commands if c[1] == "push"]  # no registry: nothing is pushed


def test_with_a_registry_every_build_is_pushed_under_it():
    commands = cluster.build_commands("podman", REGISTRY, "1.2.3", "cu126", ("cpu", "cuda"), "x")
    refs = built_refs(commands)
    assert all(ref.startswith(REGISTRY + "/digitnet-") for ref in refs)
    assert f"{REGISTRY}/digitnet-torchserve:1.2.3-cu126" in refs
    pushed = {c[2] for c in commands if c[1] == "push"}
    assert pushed == refs
    cuda = next(c for c in commands if c[-2].endswith("flask-torch:1.2.3-cu126"))
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126" in cuda
    assert all(c[0] == "podman" for c in commands)


def test_cpu_only_builds_skip_the_cuda_variants():
    refs = built_refs(cluster.build_commands("docker", "", "0.1.0", "cu130", ("cpu",), "x"))
    assert refs == {"digitnet-model:0.1.0", "digitnet-torchserve:0.1.0",
                    "digitnet-flask-torch:0.1.0", "digitnet-ray-serve:0.1.0",
                    "digitnet-locust:0.1.0"}  # fmt: skip


def test_images_without_an_engine_fail_clearly():
    problem = cluster.engine_problem("definitely-not-an-engine")
    assert "no container engine" in problem and "CONTAINER_ENGINE=podman" in problem
    result = subprocess.run(
        [sys.executable, "-m", "k8s.cluster", "images", "--engine", "definitely-not-an-engine"],
        capture_output=True, text=True, cwd=validate.ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "no container engine" in result.stderr
    make = subprocess.run(
        ["make", "-s", "images", "CONTAINER_ENGINE=definitely-not-an-engine"],
        capture_output=True, text=True, cwd=validate.ROOT, check=False,
    )  # fmt: skip
    assert make.returncode != 0 and "no container engine answers" in make.stdout


@pytest.mark.parametrize("overlay", sorted(validate.OVERLAYS))
def test_the_applied_overlay_points_project_images_at_the_registry(rendered, tmp_path, overlay):
    folder = cluster.write_overlay(overlay, REGISTRY, "2.0.0", "cu126", out_dir=tmp_path)
    objects = validate.load_objects(validate.render(folder))
    suffix = "-cu126" if overlay == "gpu" else ""
    images = project_images(objects)
    assert images == {
        f"{REGISTRY}/digitnet-model:2.0.0",
        f"{REGISTRY}/digitnet-torchserve:2.0.0{suffix}",
        f"{REGISTRY}/digitnet-flask-torch:2.0.0{suffix}",
        f"{REGISTRY}/digitnet-ray-serve:2.0.0{suffix}",
        f"{REGISTRY}/digitnet-locust:2.0.0",
    }
    # Everything else is the overlay as committed, and still passes every check.
    assert len(objects) == len(rendered[overlay])
    assert validate.invariant_problems(objects, validate.OVERLAYS[overlay]) == []


def test_the_load_test_job_is_the_cronjob_template_with_this_runs_settings(rendered):
    (cronjob,) = [o for o in rendered["gpu"] if o["kind"] == "CronJob"]
    job = cluster.job_from_cronjob(cronjob, "loadtest-gpu-20260101-120000", "full")
    for version in validate.K8S_VERSIONS:
        kubernetes_validate.validate(job, version, strict=True)
    assert job["metadata"]["name"] == "loadtest-gpu-20260101-120000"
    assert job["metadata"]["namespace"] == validate.NAMESPACE
    assert job["spec"]["template"] == {
        **cronjob["spec"]["jobTemplate"]["spec"]["template"],
        "spec": job["spec"]["template"]["spec"],
    }
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LOADTEST_RUN_ID"] == "loadtest-gpu-20260101-120000"
    assert env["LOADTEST_PROFILE"] == "full"
    # Same placement, hardening, deadline and resources as the template.
    for check in (validate.security_problems, validate.probe_and_resource_problems,
                  validate.image_problems, validate.metadata_problems):
        assert check([job]) == [], check.__name__
    assert validate.gpu_problems([job], expect_gpu=True) == []
    template_pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert job["spec"]["template"]["spec"]["affinity"] == template_pod["affinity"]
    assert cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"] != (
        container["env"]
    ), "the template itself must stay untouched"


def test_job_names_are_valid_dns_labels_and_name_the_run():
    name = cluster.job_name("gpu", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert name == "loadtest-gpu-20260102-030405"
    assert len(name) <= 63 and name.replace("-", "").isalnum() and name.islower()


def key_file(expires: datetime) -> str:
    """The layout TorchServe 0.12 writes (TokenAuthorization.generateKeyFile)."""
    stamp = expires.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.dumps({
        "management": {"key": "mgmt", "expiration time": stamp},
        "inference": {"key": "infer-key", "expiration time": stamp},
        "API": {"key": "api"},
    }, indent=2)  # fmt: skip


def test_the_inference_key_is_read_and_renewed_when_it_would_expire_during_a_run():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    fresh = key_file(now + timedelta(hours=23))
    assert cluster.inference_key(fresh, now, cluster.TOKEN_MIN_VALID) == ("infer-key", False)
    stale = key_file(now + timedelta(hours=2))
    assert cluster.inference_key(stale, now, cluster.TOKEN_MIN_VALID) == ("infer-key", True)
    for broken in ("", "{}", '{"inference": {"key": "k"}}', "[1]"):
        with pytest.raises(ValueError, match="key_file.json"):
            cluster.inference_key(broken, now, cluster.TOKEN_MIN_VALID)


def test_the_token_secret_is_what_the_load_generator_mounts(rendered):
    secret = cluster.token_secret("s3cret-key")
    for version in validate.K8S_VERSIONS:
        kubernetes_validate.validate(secret, version, strict=True)
    assert base64.b64decode(secret["data"][cluster.TOKEN_SECRET_KEY]) == b"s3cret-key"
    assert "s3cret-key" not in yaml.safe_dump(secret)
    (cronjob,) = [o for o in rendered["cpu"] if o["kind"] == "CronJob"]
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if "secret" in v)
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    (container,) = pod["containers"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    token_arg = f"--secret-file=torchserve={mount['mountPath']}/{cluster.TOKEN_SECRET_KEY}"
    assert token_arg in container["args"]


def test_servers_are_described_in_the_report_environment():
    def pod(name: str, node: str, image: str) -> dict:
        return {"metadata": {"name": f"{name}-abc", "labels": {"app.kubernetes.io/name": name}},
                "spec": {"nodeName": node, "containers": [
                    {"image": image, "resources": {"limits": {"cpu": "2"}}}]}}  # fmt: skip

    pods = {"items": [pod("tf-serving", "gpu-1", "tensorflow/serving:2.21.0-gpu"),
                      pod("flask-torch", "gpu-2", "r/digitnet-flask-torch:1-cu130")]}
    nodes = {"items": [
        {"metadata": {"name": "gpu-1", "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                                                  "node.kubernetes.io/instance-type": "a3"}}},
        {"metadata": {"name": "gpu-2", "labels": {"nvidia.com/gpu.product": "NVIDIA-L4"}}},
    ]}  # fmt: skip
    servers = cluster.describe_servers(pods, nodes)
    assert servers["tf-serving (k8s)"]["gpu"] == "NVIDIA-H100-80GB-HBM3"
    assert servers["tf-serving (k8s)"]["instance_type"] == "a3"
    env = cluster.merge_environment({"gpu": None, "versions": {"tensorflow_model_server": "?"}},
                                    servers)  # fmt: skip
    assert env["gpu"] == "NVIDIA-H100-80GB-HBM3, NVIDIA-L4"
    assert env["versions"]["tensorflow_model_server"] == "tensorflow/serving:2.21.0-gpu"
    assert set(env["servers"]) == {"tf-serving (k8s)", "flask-torch (k8s)"}


def test_the_default_cuda_flavour_is_one_torch_publishes():
    assert cluster.DEFAULT_CUDA_FLAVOR == "cu130"
    assert set(cluster.SUPPORTED_CUDA_FLAVORS) == {"cu130", "cu126"}
    makefile = (validate.ROOT / "Makefile").read_text()
    assert f"\nCUDA_FLAVOR ?= {cluster.DEFAULT_CUDA_FLAVOR}\n" in makefile


@pytest.mark.parametrize("flavor", ["cu128", "cu124", "cpu", ""])
def test_an_unsupported_cuda_flavour_is_refused_before_any_build(flavor):
    with pytest.raises(cluster.UnsupportedCudaFlavor, match="publishes CUDA wheels for cu130, "
                       "cu126 only"):  # fmt: skip
        cluster.build_commands("docker", "", "0.1.0", flavor, ("cpu", "cuda"), "x")
    with pytest.raises(cluster.UnsupportedCudaFlavor):
        cluster.overlay_kustomization("gpu", "", "0.1.0", flavor)
    # CPU-only builds and the CPU overlay never use the flavour.
    assert cluster.build_commands("docker", "", "0.1.0", flavor, ("cpu",), "x")
    assert cluster.overlay_kustomization("cpu", "", "0.1.0", flavor)["images"]


def test_the_cli_refuses_an_unsupported_cuda_flavour_clearly():
    result = subprocess.run(
        [sys.executable, "-m", "k8s.cluster", "images", "--dry-run", "--cuda-flavor", "cu128"],
        capture_output=True, text=True, cwd=validate.ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "CUDA flavour 'cu128'" in result.stderr and "cu130, cu126" in result.stderr
    assert "+ docker build" not in result.stdout


def test_the_applied_overlay_can_add_the_gpu_feature_discovery_component(rendered, tmp_path):
    folder = cluster.write_overlay("gpu", REGISTRY, "2.0.0", "cu130", out_dir=tmp_path,
                                   components=("gpu-feature-discovery",))  # fmt: skip
    objects = validate.load_objects(validate.render(folder))
    for name, pod in validate_servers(objects).items():
        assert pod.spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}, name
    assert validate.invariant_problems(objects, True, ("gpu-feature-discovery",)) == []
    # Without saying a component is on top, the label is what the overlay must not require.
    assert any("requires node label nvidia.com/gpu.present" in p
               for p in validate.invariant_problems(objects, True))  # fmt: skip


def validate_servers(objects: list[dict]) -> dict[str, validate.PodTemplate]:
    return {p.owner["metadata"]["name"]: p for p in validate.pod_templates(objects)
            if p.is_server}  # fmt: skip


class FakeWorkers:
    """kubectl for the worker Deployment: scale sets the replicas, get reports them."""

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, *args: str, **_kwargs) -> str:
        self.calls.append(args)
        if args[0] == "scale":
            self.replicas = int(args[2].removeprefix("--replicas="))
        if args[0] == "get":
            return json.dumps({"spec": {"replicas": self.replicas}})
        return ""


def test_the_run_scales_the_locust_workers_and_its_job_expects_them(monkeypatch, rendered):
    fake = FakeWorkers(2)
    monkeypatch.setattr(cluster, "run_kubectl", fake)
    assert cluster.locust_workers(None) == 2  # as applied
    assert [c[0] for c in fake.calls] == ["get", "rollout"]
    assert cluster.locust_workers(5) == 5
    assert ("scale", "deployment/loadgen-worker", "--replicas=5") in fake.calls
    assert fake.calls[-1][:3] == ("rollout", "status", "deployment/loadgen-worker")
    with pytest.raises(cluster.ClusterError, match="at least one worker"):
        cluster.locust_workers(0)
    monkeypatch.setattr(cluster, "run_kubectl", FakeWorkers(0))
    with pytest.raises(cluster.ClusterError, match="scaled to 0"):
        cluster.locust_workers(None)
    (cronjob,) = [o for o in rendered["cpu"] if o["kind"] == "CronJob"]
    job = cluster.job_from_cronjob(cronjob, "loadtest-cpu-20260101-120000", "quick", 5)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert {"name": "LOADTEST_WORKERS", "value": "5"} in container["env"]
    # The Deployment the run scales is the one the manifests declare.
    (workers,) = [o for o in rendered["cpu"] if o["kind"] == "Deployment"
                  and o["metadata"]["name"] == cluster.LOADGEN_WORKERS]  # fmt: skip
    assert workers["spec"]["template"]["metadata"]["labels"][validate.COMPONENT_LABEL] == (
        validate.WORKER_COMPONENT)
