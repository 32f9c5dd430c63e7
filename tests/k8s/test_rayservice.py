"""The optional KubeRay RayService (k8s/components/rayservice), checked offline: kustomize
builds it on top of the CPU overlay, and its structure says what the README promises (no
KubeRay CRD schema here, so the fields that matter are read off the object)."""

from __future__ import annotations

import importlib
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from k8s import validate
from k8s.images import PROJECT_IMAGES
from services.cores import CoreSplit
from services.ray_serve.launch import STACK
from services.ray_serve.settings import ServeSettings, deployment_options

COMPONENT = "rayservice"
NAME = "ray-serve-kuberay"
SECURE_CONTAINER = {
    "runAsNonRoot": True, "allowPrivilegeEscalation": False, "privileged": False,
    "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
}  # fmt: skip


def render_with_component(k8s_dir: Path, overlay: str = "cpu") -> list[dict]:
    """`kubectl kustomize` of a kustomization holding the overlay and the component, as a
    user's own (or k8s/cluster.py apply's) would."""
    here = k8s_dir / "run-rayservice"
    here.mkdir()
    doc = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(k8s_dir / "overlays" / overlay, here)],
        "components": [os.path.relpath(k8s_dir / "components" / COMPONENT, here)],
    }
    (here / "kustomization.yaml").write_text(yaml.safe_dump(doc))
    return validate.load_objects(validate.render(here))


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The CPU overlay with the component, rendered from a scratch copy of k8s/ (the
    kustomization that combines them is written next to its overlays)."""
    if shutil.which("kubectl") is None:
        pytest.skip(validate.KUBECTL_HELP)
    copy = tmp_path_factory.mktemp("rayservice") / "k8s"
    shutil.copytree(validate.K8S_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return render_with_component(copy)


@pytest.fixture(scope="module")
def rayservice(objects: list[dict]) -> dict:
    (found,) = [o for o in objects if o["kind"] == "RayService"]
    return found


@pytest.fixture(scope="module")
def serve_config(rayservice: dict) -> dict:
    return yaml.safe_load(rayservice["spec"]["serveConfigV2"])


def groups(rayservice: dict) -> dict[str, dict]:
    """The head ("head") and each worker group's name -> its group spec."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    return {"head": cluster["headGroupSpec"],
            **{g["groupName"]: g for g in cluster["workerGroupSpecs"]}}  # fmt: skip


def test_it_is_a_kuberay_rayservice_in_the_namespace(rayservice):
    assert rayservice["apiVersion"] == "ray.io/v1"
    assert rayservice["metadata"]["namespace"] == validate.NAMESPACE
    assert rayservice["metadata"]["labels"][validate.PART_OF_LABEL] == validate.NAMESPACE
    cluster = rayservice["spec"]["rayClusterConfig"]
    # The Ray in the image: the pin of pyproject.toml and requirements.lock.
    lock = (validate.ROOT / "requirements.lock").read_text()
    assert f"ray=={cluster['rayVersion']}\n" in lock
    assert cluster["enableInTreeAutoscaling"] is False
    (worker,) = cluster["workerGroupSpecs"]
    assert worker["replicas"] >= 1


def test_the_import_path_is_the_stacks_application_builder(serve_config):
    (app,) = serve_config["applications"]
    module_name, _, attribute = app["import_path"].partition(":")
    pytest.importorskip("ray")
    module = importlib.import_module(module_name)
    builder = getattr(module, attribute)
    assert callable(builder)
    assert module_name == "services.ray_serve.deployment"
    # The model file the image serves, where the Dockerfile puts it.
    dockerfile = (validate.ROOT / STACK.image[1]).read_text()
    assert f"DIGITNET_RAY_MODEL_PATH={app['args']['model_path']}" in dockerfile


def test_it_runs_the_deployments_settings_on_the_inference_port(serve_config, objects):
    (app,) = serve_config["applications"]
    settings = ServeSettings.from_args(app["args"])
    # The same split as the plain Deployment's env, so the same Serve options.
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"
                     and o["metadata"]["name"] == STACK.k8s_deployment]  # fmt: skip
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    split = CoreSplit(int(env["DIGITNET_RAY_REPLICAS"]), int(env["DIGITNET_RAY_THREADS"]))
    assert settings.split == split and settings.device == env["DIGITNET_RAY_DEVICE"]
    options = deployment_options(settings)
    assert options["ray_actor_options"] == {"num_cpus": split.threads}
    # No deployment override in the config: the builder's options are the ones that run.
    assert "deployments" not in app
    assert serve_config["http_options"] == {"host": "0.0.0.0",
                                            "port": STACK.default_ports["http"]}  # fmt: skip
    assert app["route_prefix"] == "/"


def test_the_workers_have_the_cpus_the_replicas_ask_for(rayservice, serve_config):
    (app,) = serve_config["applications"]
    settings = ServeSettings.from_args(app["args"])
    found = groups(rayservice)
    # No replica on the head: it keeps Ray's control plane and a proxy.
    assert found["head"]["rayStartParams"]["num-cpus"] == "0"
    worker_cpus = 0
    for name, group in found.items():
        if name == "head":
            continue
        (container,) = group["template"]["spec"]["containers"]
        cpus = int(group["rayStartParams"]["num-cpus"])
        assert cpus == int(container["resources"]["limits"]["cpu"]), name
        worker_cpus += cpus * group["replicas"]
    assert settings.split.workers * settings.split.threads <= worker_cpus


def test_its_images_are_the_ones_we_build(rayservice):
    ours = {image.name for image in PROJECT_IMAGES}
    for name, group in groups(rayservice).items():
        for container in group["template"]["spec"]["containers"]:
            image = container["image"]
            assert validate.image_name_and_tag(image)[0] == STACK.image[0] in ours, name
            assert validate.image_is_pinned(image), name


def test_its_service_exposes_the_inference_port_only(rayservice):
    service = rayservice["spec"]["serveService"]
    assert service["spec"]["type"] == "ClusterIP"
    assert [p["port"] for p in service["spec"]["ports"]] == [STACK.default_ports["http"]]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [STACK.default_ports["http"]]
    # Workers publish nothing else; the head adds only what KubeRay needs of it (the GCS
    # for the workers, the dashboard for the operator), admitted by the NetworkPolicy
    # below to those alone.
    for name, group in groups(rayservice).items():
        (container,) = group["template"]["spec"]["containers"]
        ports = {p["containerPort"] for p in container["ports"]}
        extra = {6379, 8265} if name == "head" else set()
        assert ports == {STACK.default_ports["http"], *extra}, name


def test_its_pods_are_hardened_and_probed_off_the_load(rayservice):
    for name, group in groups(rayservice).items():
        spec = group["template"]["spec"]
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] > 0, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        labels = group["template"]["metadata"]["labels"]
        assert labels[validate.NAME_LABEL] == NAME and labels[validate.PART_OF_LABEL], name
        for container in spec["containers"]:
            assert {k: container["securityContext"][k] for k in SECURE_CONTAINER} == (
                SECURE_CONTAINER
            ), name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), name
            # The liveness rule of k8s/validate.py: never an HTTP probe on the serve port.
            assert set(container["livenessProbe"]) & {"httpGet", "grpc", "exec"} == set(), name
            assert "preStop" in container["lifecycle"], name
    (worker,) = groups(rayservice)["cpu"]["template"]["spec"]["containers"]
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_network_policies_admit_the_load_generator_on_the_inference_port_only(objects):
    policies = {o["metadata"]["name"]: o for o in objects if o["kind"] == "NetworkPolicy"}
    rules = policies[NAME]["spec"]["ingress"]
    by_source = {yaml.safe_dump(rule["from"]): rule.get("ports") for rule in rules}
    # The load generator's pod and its Locust workers.
    loadgen = [{"podSelector": {"matchLabels": {validate.NAME_LABEL: "locust"}}}]
    assert by_source[yaml.safe_dump(loadgen)] == [
        {"port": STACK.default_ports["http"], "protocol": "TCP"}]
    # Without ports only among the Ray pods themselves.
    for rule in rules:
        if "ports" not in rule:
            assert rule["from"] == [{"podSelector": {"matchLabels": {
                validate.NAME_LABEL: NAME}}}]  # fmt: skip
    (egress,) = policies[f"loadgen-egress-{NAME}"]["spec"]["egress"]
    assert egress["ports"] == [{"port": STACK.default_ports["http"], "protocol": "TCP"}]


def test_the_component_adds_nothing_the_overlays_invariants_refuse(objects):
    """Every object the overlay's checks understand still passes them with the component."""
    known = [o for o in objects if o["kind"] != "RayService"]
    assert validate.invariant_problems(known, expect_gpu=False, components=(COMPONENT,)) == []
    assert validate.schema_problems(known, versions=validate.K8S_VERSIONS[-1:]) == []


def test_the_readme_says_what_to_apply_and_that_it_needs_kuberay():
    readme = (validate.K8S_DIR / "README.md").read_text()
    section = readme[readme.index("RayService"):]
    assert "components/rayservice" in section and "KubeRay" in section
    assert re.search(r"offline", section)
