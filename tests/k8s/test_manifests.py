"""The rendered overlays, checked offline: Kubernetes schemas (strict), the invariants of
k8s/validate.py, and the facts behind them read straight off the objects."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

from digitnet.spec import ModelSpec
from k8s import cluster, validate
from loadtests.runner import target_for
from services.cores import CoreSplit, split_cores
from services.registry import all_stacks, load_stack
from services.stack import CPU, REST
from services.tf_serving.server_flags import REPO_CONFIGS, ConfigFiles, ServerTuning, server_flags

ROOT = validate.ROOT
SERVERS = {"tf-serving", "torchserve", "flask-torch", "ray-serve"}


def workloads(objects: list[dict]) -> list[validate.PodTemplate]:
    return list(validate.pod_templates(objects))


def servers(objects: list[dict]) -> dict[str, validate.PodTemplate]:
    found = {p.owner["metadata"]["name"]: p for p in workloads(objects) if p.is_server}
    assert set(found) == SERVERS
    return found


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


@pytest.mark.parametrize("overlay", sorted(validate.OVERLAYS))
def test_every_object_matches_the_kubernetes_schemas_strictly(rendered, overlay):
    assert validate.schema_problems(rendered[overlay]) == []


@pytest.mark.parametrize("overlay", sorted(validate.OVERLAYS))
def test_every_invariant_holds(rendered, overlay):
    assert validate.invariant_problems(rendered[overlay], validate.OVERLAYS[overlay]) == []


def test_the_generated_k8s_configs_are_up_to_date():
    assert validate.generated_config_problems() == []


def test_gpu_overlay_gives_each_server_one_gpu_on_a_gpu_node(rendered):
    for name, pod in servers(rendered["gpu"]).items():
        (container,) = pod.containers(init=False)
        assert container["resources"]["limits"][validate.GPU_RESOURCE] == "1", name
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
            pod.spec["tolerations"]
        ), name
        # The limit schedules; no node label only an add-on sets is required
        # (k8s/components/gpu-feature-discovery adds GFD's).
        assert "nodeSelector" not in pod.spec and "affinity" not in pod.spec, name
    for pod in workloads(rendered["gpu"]):
        if not pod.is_server:
            assert "tolerations" not in pod.spec, pod.name


def test_cpu_overlay_asks_for_no_gpu_anywhere(rendered):
    for pod in workloads(rendered["cpu"]):
        assert "tolerations" not in pod.spec and "nodeSelector" not in pod.spec, pod.name
        for container in pod.containers():
            assert validate.GPU_RESOURCE not in str(container.get("resources")), pod.name


def test_each_overlay_runs_its_own_builds_of_the_images(rendered):
    def images(overlay: str) -> dict[str, str]:
        return {c["name"]: c["image"] for p in workloads(rendered[overlay]) for c in p.containers()}

    cpu, gpu = images("cpu"), images("gpu")
    assert cpu["tf-serving"] == "tensorflow/serving:2.21.0"
    assert gpu["tf-serving"] == "tensorflow/serving:2.21.0-gpu"
    for name in ("torchserve", "flask-torch", "ray-serve"):
        assert cpu[name] == f"digitnet-{name}:0.1.0"
        assert gpu[name] == f"digitnet-{name}:0.1.0-{cluster.DEFAULT_CUDA_FLAVOR}"
    assert cpu["copy-model"] == gpu["copy-model"] == "digitnet-model:0.1.0"
    assert cpu["locust"] == gpu["locust"] == "digitnet-locust:0.1.0"


def test_tf_serving_image_matches_the_serving_api_our_clients_use(rendered):
    api = importlib.metadata.version("tensorflow-serving-api")
    for overlay in validate.OVERLAYS:
        (container,) = servers(rendered[overlay])["tf-serving"].containers(init=False)
        assert container["image"].split(":")[1].removesuffix("-gpu") == api


@pytest.mark.parametrize("overlay", sorted(validate.OVERLAYS))
def test_tf_serving_runs_the_flags_written_by_server_flags(rendered, overlay):
    (container,) = servers(rendered[overlay])["tf-serving"].containers(init=False)
    assert container["resources"]["limits"]["cpu"] == "2"
    expected = server_flags(ConfigFiles.in_dir(Path("/config")), 8500, 8501, 2, ServerTuning())
    assert container["command"] == ["tensorflow_model_server"]
    assert container["args"] == expected


def test_tf_serving_reads_its_configs_and_model_from_the_pod(rendered):
    objects = rendered["gpu"]
    pod = servers(objects)["tf-serving"]
    (server,) = pod.containers(init=False)
    (init,) = pod.spec["initContainers"]
    volumes = {v["name"]: v for v in pod.spec["volumes"]}
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    # The ConfigMap holds exactly the files local runs and compose use.
    config_name = volumes[mounts["/config"]["name"]]["configMap"]["name"]
    config_map = by_kind(objects, "ConfigMap")[config_name]
    for path in REPO_CONFIGS.all():
        assert config_map["data"][path.name] == path.read_text(), path.name
    # The model: copied by the init container from the model image into an emptyDir that
    # the server mounts read-only where models.config's base_path points.
    assert init["image"].startswith("digitnet-model:")
    assert init["command"] == ["cp", "-R", "/model/.", "/models/"]
    assert {m["mountPath"]: m["name"] for m in init["volumeMounts"]} == {"/models": "models"}
    assert "emptyDir" in volumes["models"] and mounts["/models"]["readOnly"] is True
    models_config = config_map["data"]["models.config"]
    assert 'base_path: "/models/digitnet"' in models_config
    dockerfile = (ROOT / "k8s/model-image/Dockerfile").read_text()
    assert "COPY artifacts/tf_serving/ /model/" in dockerfile


def test_torchserve_probes_run_the_image_healthcheck_with_its_key_file(rendered):
    pod = servers(rendered["cpu"])["torchserve"]
    (container,) = pod.containers(init=False)
    command = ["python", "/opt/digitnet/healthcheck.py", "--key-file",
               "/home/model-server/key_file.json"]  # fmt: skip
    assert container["startupProbe"]["exec"]["command"] == command
    assert container["readinessProbe"]["exec"]["command"] == command
    assert container["livenessProbe"]["tcpSocket"] == {"port": "http"}
    dockerfile = (ROOT / "services/torchserve/Dockerfile").read_text()
    assert "services/torchserve/healthcheck.py /opt/digitnet/" in dockerfile
    assert "WORKDIR /home/model-server" in dockerfile
    # key_file.json is written to the working directory: a writable emptyDir there.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod.spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/home/model-server"]]
    assert pod.owner["spec"]["replicas"] == 1


def test_thread_splits_fit_the_cpu_limits(rendered):
    pods = servers(rendered["cpu"])
    flask = pods["flask-torch"].containers(init=False)[0]
    env = {e["name"]: e["value"] for e in flask["env"]}
    cpus = int(flask["resources"]["limits"]["cpu"])
    assert int(env["FLASK_TORCH_WORKERS"]) * int(env["FLASK_TORCH_THREADS"]) == cpus
    torchserve = pods["torchserve"].containers(init=False)[0]
    env = {e["name"]: e["value"] for e in torchserve["env"]}
    properties = (ROOT / "services/torchserve/config.properties").read_text()
    workers = int(re.search(r"^default_workers_per_model=(\d+)$", properties, re.M).group(1))
    assert workers * int(env["DIGITNET_TORCH_THREADS"]) == int(
        torchserve["resources"]["limits"]["cpu"]
    )
    # Ray Serve's split travels in its env (the image's server.py takes no args): the one
    # core rule's split for the CPU limit, which Ray then schedules exactly.
    ray = pods["ray-serve"].containers(init=False)[0]
    env = {e["name"]: e["value"] for e in ray["env"]}
    cpus = int(ray["resources"]["limits"]["cpu"])
    assert CoreSplit(int(env["DIGITNET_RAY_REPLICAS"]), int(env["DIGITNET_RAY_THREADS"])) == (
        split_cores(cpus)
    )


def test_no_service_exposes_a_management_port(rendered):
    for overlay in validate.OVERLAYS:
        services = by_kind(rendered[overlay], "Service")
        # The Locust master's port for its workers (loadgen-workers.yaml), and the servers'.
        master = services.pop("loadgen-master")
        assert [p["port"] for p in master["spec"]["ports"]] == [5557]
        assert master["spec"]["selector"][validate.COMPONENT_LABEL] == "loadgen"
        assert set(services) == SERVERS
        ports = {n: sorted(p["port"] for p in s["spec"]["ports"]) for n, s in services.items()}
        assert ports == {"tf-serving": [8500, 8501], "torchserve": [8080], "flask-torch": [8000],
                         "ray-serve": [8002]}
        for service in services.values():
            assert service["spec"]["type"] == "ClusterIP"


def test_pods_are_hardened(rendered):
    for overlay in validate.OVERLAYS:
        for pod in workloads(rendered[overlay]):
            context = pod.spec["securityContext"]
            assert context["runAsNonRoot"] is True and context["runAsUser"] > 0, pod.name
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, pod.name
            assert pod.spec["automountServiceAccountToken"] is False, pod.name
            for container in pod.containers():
                ctx = container["securityContext"]
                assert ctx["allowPrivilegeEscalation"] is False, pod.name
                assert ctx["capabilities"] == {"drop": ["ALL"]}, pod.name
                assert ctx["readOnlyRootFilesystem"] is True, pod.name
                assert container["resources"]["requests"] and container["resources"]["limits"]


def test_the_namespace_enforces_the_restricted_pod_security_profile(rendered):
    (namespace,) = by_kind(rendered["gpu"], "Namespace").values()
    assert namespace["metadata"]["name"] == validate.NAMESPACE
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_network_policies_admit_only_the_load_generator_on_inference_ports(rendered):
    policies = by_kind(rendered["cpu"], "NetworkPolicy")
    deny_all = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    assert policies["default-deny"]["spec"] == deny_all
    expected = {"tf-serving": {8500, 8501}, "torchserve": {8080}, "flask-torch": {8000},
                "ray-serve": {8002}}
    for name, ports in expected.items():
        (rule,) = policies[f"{name}-inference"]["spec"]["ingress"]
        assert {p["port"] for p in rule["ports"]} == ports
        # The load generator's pod and its Locust workers, both app.kubernetes.io/name=locust.
        assert rule["from"] == [{"podSelector": {"matchLabels": {
            "app.kubernetes.io/name": "locust"}}}]  # fmt: skip
    # Only the workers reach the master, only on its port.
    (rule,) = policies["loadgen-master"]["spec"]["ingress"]
    assert rule == {"from": [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/component": "loadgen-worker"}}}],
        "ports": [{"port": 5557, "protocol": "TCP"}]}  # fmt: skip


def test_load_generator_stays_off_the_servers_nodes_and_targets_their_services(rendered):
    objects = rendered["gpu"]
    (cronjob,) = by_kind(objects, "CronJob").values()
    assert cronjob["spec"]["suspend"] is True
    pod = next(p for p in workloads(objects) if p.is_batch)
    anti = pod.spec["affinity"]["podAntiAffinity"]
    (term,) = anti["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    for server in servers(objects).values():
        assert validate.selects(term["labelSelector"], server.labels)
    (locust,) = pod.containers()
    services = by_kind(objects, "Service")
    targets = [a.removeprefix("--target=").split("=", 1)[1] for a in locust["args"]
               if a.startswith("--target=")]  # fmt: skip
    # One per protocol of every stack deployed in the cluster.
    assert len(targets) == sum(len(s.protocols) for s in all_stacks() if s.k8s_deployment)
    for url in targets:
        host, port = url.split("://")[-1].split(":")
        assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}, url
    env = {e["name"]: e for e in locust["env"]}
    # The token is a mounted Secret, not in the pod spec's env (see the next test for
    # where it does go).
    assert "TORCHSERVE_TOKEN" not in env
    assert not [e for e in locust["env"] if "secretKeyRef" in str(e.get("valueFrom"))]
    assert {"name": "torchserve-token", "secret": {"secretName": "torchserve-token",
            "defaultMode": 0o440}} in pod.spec["volumes"]  # fmt: skip


def test_the_token_reaches_locust_in_its_environment_as_the_manifest_says(rendered):
    """The key is mounted as a file, but loadtests.cluster reads it and each Locust process
    gets it in LOADTEST_HEADERS: the manifest's comment must say so, not deny it."""
    stack = load_stack("torchserve")
    client = stack.remote_client(REST, "http://torchserve:8080", ModelSpec.from_env(),
                                 "s3cret-key")  # fmt: skip
    target = target_for(stack, client, CPU)
    assert "s3cret-key" in target.env["LOADTEST_HEADERS"]
    comment = (validate.K8S_DIR / "base" / "loadgen.yaml").read_text()
    assert "shows in no process environment" not in comment
    assert "LOADTEST_HEADERS" in comment and "/proc/<pid>/environ" in comment


def test_validate_cli_passes_on_the_repository():
    result = subprocess.run([sys.executable, "-m", "k8s.validate", "--no-lint"],
                            capture_output=True, text=True, cwd=ROOT, check=False)  # fmt: skip
    if "kubectl not found" in result.stderr:
        pytest.skip(validate.KUBECTL_HELP)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all checks passed" in result.stdout


def test_validate_cli_says_how_to_get_kubectl_when_it_is_missing(monkeypatch):
    monkeypatch.setenv("KUBECTL", "/nonexistent/kubectl")
    result = subprocess.run([sys.executable, "-m", "k8s.validate", "--no-lint"],
                            capture_output=True, text=True, cwd=ROOT, check=False)  # fmt: skip
    assert result.returncode == 2
    assert "make k8s-kubectl" in result.stderr and "scripts/install_kubectl.sh" in result.stderr
    assert "apt-get install kubectl" not in result.stderr  # no such Debian package
