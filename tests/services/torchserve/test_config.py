"""Security and limit invariants of the committed TorchServe configuration."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from digitnet.spec import ModelSpec, ServingLimits
from services.torchserve.launch import CONFIG_TEMPLATE, read_properties

HERE = Path(CONFIG_TEMPLATE).parent
MODEL_CONFIG = HERE / "model-config.yaml"
DOCKERFILE = HERE / "Dockerfile"


@pytest.fixture(scope="module")
def props() -> dict[str, str]:
    return read_properties(CONFIG_TEMPLATE.read_text())


def allowed_patterns(props: dict[str, str]) -> list[re.Pattern[str]]:
    # TorchServe splits on commas and compiles each case-insensitively (ArchiveUtils).
    return [re.compile(p, re.IGNORECASE) for p in props["allowed_urls"].split(",")]


def test_token_authorization_is_on_with_a_long_enough_expiry(props) -> None:
    assert props["disable_token_authorization"] == "false"
    # Keys expire (60 min by default); a load run must not outlive them.
    assert float(props["token_expiration_min"]) >= 12 * 60


def test_model_registration_is_disabled(props) -> None:
    assert props["enable_model_api"] == "false"
    assert props["install_py_dep_per_model"] == "false"


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/digitnet.mar",
        "https://example.com/digitnet.mar",
        "HTTPS://example.com/model-store/digitnet.mar",
        "file:///etc/passwd",
        "file:///opt/digitnet/model-store/../../../etc/x.mar",
        "file:///opt/digitnet/model-store/sub/digitnet.mar",
        "s3://bucket/digitnet.mar",
    ],
)
def test_allowed_urls_refuse_remote_and_outside_archives(props, url) -> None:
    assert not any(pattern.fullmatch(url) for pattern in allowed_patterns(props))


def test_allowed_urls_admit_archives_in_the_model_store(props) -> None:
    url = f"file://{props['model_store']}/digitnet.mar"
    assert any(pattern.fullmatch(url) for pattern in allowed_patterns(props))
    assert "http" not in props["allowed_urls"].lower()


def test_only_inference_listens_beyond_loopback(props) -> None:
    assert urlsplit(props["inference_address"]).hostname == "0.0.0.0"
    assert urlsplit(props["inference_address"]).port == 8080
    for key, port in (("management_address", 8081), ("metrics_address", 8082)):
        assert urlsplit(props[key]).hostname == "127.0.0.1", key
        assert urlsplit(props[key]).port == port, key
    assert props["grpc_management_address"] == "127.0.0.1"
    assert props["grpc_inference_address"] == "127.0.0.1"
    assert (props["grpc_inference_port"], props["grpc_management_port"]) == ("7070", "7071")


def test_size_limits_match_serving_limits(props) -> None:
    limits = ServingLimits()
    assert int(props["max_request_size"]) == limits.max_body_bytes == 4194304
    assert int(props["max_response_size"]) == limits.max_body_bytes


def test_model_is_loaded_from_the_store_with_raw_bodies(props) -> None:
    name = ModelSpec().name
    assert props["load_models"] == f"{name}={name}.mar"
    assert props["model_store"] == "/opt/digitnet/model-store"
    assert int(props["default_workers_per_model"]) >= 1
    # The handler's codec is the only JSON parser (NaN literals, depth, body size).
    assert props["decode_input_request"] == "false"


def test_prometheus_metrics_with_system_metrics(props) -> None:
    assert props["metrics_mode"] == "prometheus"
    assert props["disable_system_metrics"] == "false"


def test_dockerfile_serves_the_same_store_and_config(props) -> None:
    dockerfile = DOCKERFILE.read_text()
    assert props["model_store"] in dockerfile
    assert "services/torchserve/config.properties" in dockerfile
    assert "--disable-token-auth" not in dockerfile and "--dt" not in dockerfile.split()
    assert re.search(r"^USER\s+(?!(root|0)\b)\S+", dockerfile, re.MULTILINE)
    # The base image is an ARG whose default names an exact patch release.
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}$", dockerfile, re.MULTILINE)
    assert re.search(
        r"^ARG PYTHON_IMAGE=python:\d+\.\d+\.\d+-slim-\w+$", dockerfile, re.MULTILINE
    )
    assert ":latest" not in dockerfile
    pip_installs = re.findall(r"pip install[^\n]*", dockerfile)
    assert pip_installs and all("--no-cache-dir" in line for line in pip_installs)


def test_the_archive_leaves_workers_and_batching_to_registration() -> None:
    config = yaml.safe_load(MODEL_CONFIG.read_text())
    assert config["responseTimeout"] > 0
    # A value in the archive would override config.properties (0.12) and freeze it at
    # build time: workers and batching are set when the model is registered.
    assert not {"minWorkers", "maxWorkers", "batchSize", "maxBatchDelay"} & set(config)


def test_the_committed_registration_is_the_spec_default_batching() -> None:
    from digitnet.spec import BatchingPolicy

    props = read_properties(CONFIG_TEMPLATE.read_text())
    (versions,) = json.loads(props["models"]).values()
    (registration,) = versions.values()
    policy = BatchingPolicy()
    assert registration["batchSize"] == policy.max_batch_size
    assert registration["maxBatchDelay"] == policy.max_delay_ms
    assert registration["minWorkers"] == registration["maxWorkers"] == int(
        props["default_workers_per_model"])


def test_the_jvm_logs_warnings_from_our_log4j2_in_the_image_and_locally(props) -> None:
    """TorchServe's built-in log4j2.xml logs at DEBUG, twice, plus a line per request;
    ours (measured: +26-53% goodput under overload on one core) must be what runs."""
    import xml.etree.ElementTree as ElementTree

    from services.torchserve.launch import IMAGE_LOG_CONFIG, LOG_CONFIG, local_vmargs

    assert f"-Dlog4j.configurationFile={IMAGE_LOG_CONFIG}" in props["vmargs"].split()
    assert IMAGE_LOG_CONFIG.removeprefix("file://") == "/opt/digitnet/log4j2.xml"
    assert "services/torchserve/log4j2.xml" in DOCKERFILE.read_text()
    local = local_vmargs(props["vmargs"])
    assert f"-Dlog4j.configurationFile={LOG_CONFIG.resolve().as_uri()}" in local.split()
    assert local.replace(LOG_CONFIG.resolve().as_uri(), IMAGE_LOG_CONFIG) == props["vmargs"]
    with pytest.raises(ValueError, match="log4j2"):
        local_vmargs("-XX:+UseContainerSupport")
    # Out of the box (make fair's default preset): TorchServe's own, the rest unchanged.
    builtin = local_vmargs(props["vmargs"], builtin_logging=True)
    assert "log4j" not in builtin and "-XX:+ExitOnOutOfMemoryError" in builtin.split()
    loggers = ElementTree.parse(LOG_CONFIG).getroot().find("Loggers")
    levels = {logger.get("name", "root"): logger.get("level") for logger in loggers}
    # Nothing per request or per batch: warnings and errors only, or nothing.
    assert set(levels.values()) <= {"warn", "error", "off"}, levels
    assert {"org.pytorch.serve", "ACCESS_LOG", "MODEL_LOG", "root"} <= set(levels)
