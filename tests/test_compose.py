"""docker-compose.yml, checked offline (no docker engine here): schema, TF Serving flags
written once, loopback-only ports, health checks, pinned images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from services.tf_serving.server_flags import ConfigFiles, ServerTuning, server_flags

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
GPU_COMPOSE = ROOT / "docker-compose.gpu.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def validate(path: Path) -> subprocess.CompletedProcess:
    checker = Path(sys.executable).parent / "check-jsonschema"
    return subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("path", [COMPOSE, GPU_COMPOSE], ids=lambda p: p.name)
def test_compose_file_matches_the_compose_spec(path):
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_catches_a_misspelled_key(tmp_path):
    planted = tmp_path / "docker-compose.yml"
    planted.write_text(COMPOSE.read_text().replace("healthcheck:", "healthchek:", 1))
    assert validate(planted).returncode != 0


def test_tf_serving_runs_the_flags_written_by_server_flags(compose):
    expected = server_flags(ConfigFiles.in_dir(Path("/config")), 8500, 8501, 2, ServerTuning())
    assert compose["services"]["tf-serving"]["command"] == expected


def test_tf_serving_mounts_the_model_where_models_config_points(compose):
    mounts = compose["services"]["tf-serving"]["volumes"]
    assert "./artifacts/tf_serving:/models:ro" in mounts
    models_config = (ROOT / "services/tf_serving/models.config").read_text()
    assert 'base_path: "/models/digitnet"' in models_config


def test_ports_are_published_on_loopback_only_and_never_management(compose):
    published = [p for s in compose["services"].values() for p in s.get("ports", [])]
    assert published
    for mapping in published:
        host, host_port, _container = mapping.split(":")
        assert host == "127.0.0.1", mapping
        assert host_port not in {"8081", "8082", "7071"}, mapping


def test_every_service_is_health_checked_hardened_and_pinned(compose):
    for name, service in compose["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), name
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        if "build" in service:
            dockerfile = (ROOT / service["build"]["dockerfile"]).read_text()
            assert "HEALTHCHECK" in dockerfile and "\nUSER " in dockerfile, name
        else:
            assert service["healthcheck"]["test"], name


def test_every_stack_that_declares_a_compose_service_has_it(compose):
    """The plugins name their compose services; one that declares none says why."""
    from services.registry import all_stacks

    for stack in all_stacks():
        if stack.compose_service is None:
            assert stack.not_deployed_why, stack.name
            continue
        service = compose["services"][stack.compose_service]
        published = {int(p.split(":")[1]) for p in service.get("ports", [])}
        # Compose publishes each protocol's default port: deploy-local's compose clients
        # reach the stack there.
        for protocol in stack.protocols:
            assert stack.default_ports[stack.protocol_ports[protocol]] in published, stack.name


def test_no_private_port_of_any_stack_is_published(compose):
    """What the plugins declare private (TorchServe's management, Ray's metrics export,
    GCS, dashboard, ...) is never published, on any host address."""
    from services.registry import all_stacks

    private = {port: f"{s.name} {what}" for s in all_stacks()
               for port, what in s.private_ports.items()}  # fmt: skip
    for name, service in compose["services"].items():
        for mapping in service.get("ports", []):
            _host, host_port, container_port = mapping.split(":")
            for port in (int(host_port), int(container_port)):
                assert port not in private, (name, mapping, private.get(port))


def merged(base: dict, override: dict) -> dict:
    """Compose's merge of an override file, for what these files use: mappings merge key by
    key, everything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        out[key] = (merged(base[key], value) if isinstance(value, dict)
                    and isinstance(base.get(key), dict) else value)
    return out


def test_the_gpu_override_puts_every_gpu_stack_on_a_reserved_gpu(compose):
    """docker-compose.gpu.yml: the -gpu TF Serving image at the pinned version, torch from
    the default CUDA flavour's index with the flavour in the tag, the device asked for, and
    one NVIDIA GPU reserved per server."""
    from k8s.images import DEFAULT_CUDA_FLAVOR, TORCH_WHEEL_INDEX, tf_serving_ref
    from services.registry import all_stacks
    from services.stack import CUDA

    override = yaml.safe_load(GPU_COMPOSE.read_text())
    assert set(override["services"]) <= set(compose["services"])  # no new service by a typo
    whole = merged(compose, override)
    gpu_services = {s.compose_service: s for s in all_stacks()
                    if s.compose_service and CUDA in s.devices}
    assert set(override["services"]) == set(gpu_services) | {"tf-serving"}
    for name in override["services"]:
        service = whole["services"][name]
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}, name
        if "build" in service:
            index = TORCH_WHEEL_INDEX.format(flavor=DEFAULT_CUDA_FLAVOR)
            assert service["build"]["args"]["TORCH_INDEX_URL"] == index, name
            assert service["build"]["dockerfile"] == compose["services"][name]["build"][
                "dockerfile"], name
            assert service["image"].endswith(f"-{DEFAULT_CUDA_FLAVOR}"), name
    assert whole["services"]["tf-serving"]["image"] == tf_serving_ref(gpu=True)
    assert whole["services"]["flask-torch"]["environment"]["FLASK_TORCH_DEVICE"] == "cuda"
    assert whole["services"]["ray-serve"]["environment"]["DIGITNET_RAY_DEVICE"] == "cuda"
    # The base file's own settings survive the merge (hardening, the CPU split, ports).
    assert whole["services"]["flask-torch"]["environment"]["FLASK_TORCH_WORKERS"] == "2"
    assert whole["services"]["flask-torch"]["read_only"] is True
