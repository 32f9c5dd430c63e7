"""One variable changes every stack: each serving knob of digitnet.spec is set in the
environment, then every server config generated from it is read back.

Nothing is started: the generators are the same functions the launchers call at start.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from digitnet.artifacts import ArtifactPaths
from digitnet.codec import PayloadError, decode_request
from digitnet.spec import BatchingPolicy, ModelSpec, ServingLimits
from services.cores import CoreSplit
from services.flask_torch.settings import Settings
from services.tf_serving.config_protos import config_messages, parse_text_proto
from services.tf_serving.launch import write_run_configs
from services.tf_serving.server_flags import ConfigFiles, ServerTuning, flag_value, server_flags
from services.torchserve.launch import CONFIG_TEMPLATE, derive_config, local_overrides
from services.torchserve.launch import read_properties as read_java_properties
from tools.configs import stale_files

PORTS = {"inference": 1, "management": 2, "metrics": 3, "grpc_inference": 4,
         "grpc_management": 5}  # fmt: skip


def tf_serving_batching(paths: ArtifactPaths, run_dir: Path):
    files = write_run_configs(paths, run_dir, cores=2)
    batching = parse_text_proto(files.batching_parameters, config_messages().batching_parameters)
    flags = server_flags(files, 8500, 8501, 2, ServerTuning())
    return batching, flags


def torchserve_config(paths: ArtifactPaths) -> dict[str, str]:
    text = derive_config(CONFIG_TEMPLATE.read_text(),
                         local_overrides(paths, PORTS, CoreSplit(2, 1)))  # fmt: skip
    return read_java_properties(text)


def registration(props: dict[str, str]) -> dict:
    (versions,) = json.loads(props["models"]).values()
    (entry,) = versions.values()
    return entry


@pytest.fixture
def paths(tmp_path: Path) -> ArtifactPaths:
    return ArtifactPaths(tmp_path / "artifacts", ModelSpec())


def test_max_batch_reaches_every_stack(monkeypatch, paths, tmp_path) -> None:
    monkeypatch.setenv("DIGITNET_MAX_BATCH", "16")
    batching, _ = tf_serving_batching(paths, tmp_path)
    assert batching.max_batch_size.value == 16
    assert Settings.from_env().limits.max_batch == 16
    with pytest.raises(PayloadError) as refused:
        decode_request(json.dumps({"instances": [[[0.0] * 8] * 8] * 17}),
                       ModelSpec(), ServingLimits.from_env())  # fmt: skip
    assert refused.value.reason == "batch_too_large"


def test_body_limit_reaches_every_stack(monkeypatch, paths) -> None:
    monkeypatch.setenv("DIGITNET_MAX_BODY_BYTES", "123456")
    assert torchserve_config(paths)["max_request_size"] == "123456"
    assert Settings.from_env().limits.max_body_bytes == 123456


def test_json_depth_limit_is_enforced(monkeypatch) -> None:
    body = json.dumps({"instances": [[[0.5] * 8] * 8]})  # 4 levels deep
    assert decode_request(body, ModelSpec(), ServingLimits.from_env()).shape == (1, 8, 8)
    monkeypatch.setenv("DIGITNET_MAX_JSON_DEPTH", "3")
    with pytest.raises(PayloadError) as refused:
        decode_request(body, ModelSpec(), ServingLimits.from_env())
    assert refused.value.reason == "too_deep" and "at most 3" in refused.value.message


def test_batching_policy_reaches_every_batching_stack(monkeypatch, paths, tmp_path) -> None:
    monkeypatch.setenv("DIGITNET_BATCH_SIZE", "4")
    monkeypatch.setenv("DIGITNET_BATCH_DELAY_MS", "7")
    batching, flags = tf_serving_batching(paths, tmp_path)
    assert batching.batch_timeout_micros.value == 7000
    assert flag_value(flags, "enable_batching") == "true"
    entry = registration(torchserve_config(paths))
    assert (entry["batchSize"], entry["maxBatchDelay"]) == (4, 7)


def test_batching_off_reaches_every_batching_stack(monkeypatch, paths, tmp_path) -> None:
    monkeypatch.setenv("DIGITNET_BATCHING", "off")
    _, flags = tf_serving_batching(paths, tmp_path)
    assert flag_value(flags, "enable_batching") == "false"
    entry = registration(torchserve_config(paths))
    assert (entry["batchSize"], entry["maxBatchDelay"]) == (1, 0)


def test_a_batching_preset_reaches_every_batching_stack(monkeypatch, paths, tmp_path) -> None:
    monkeypatch.setenv("DIGITNET_BATCHING_PRESET", "throughput")
    batching, flags = tf_serving_batching(paths, tmp_path)
    assert batching.batch_timeout_micros.value == 5000
    entry = registration(torchserve_config(paths))
    assert (entry["batchSize"], entry["maxBatchDelay"]) == (16, 5)
    monkeypatch.setenv("DIGITNET_BATCHING_PRESET", "latency")
    _, flags = tf_serving_batching(paths, tmp_path / "latency")
    assert flag_value(flags, "enable_batching") == "false"
    entry = registration(torchserve_config(paths))
    assert (entry["batchSize"], entry["maxBatchDelay"]) == (1, 0)


def test_committed_configs_are_generated_from_the_spec_defaults(monkeypatch) -> None:
    for name in ("DIGITNET_MAX_BATCH", "DIGITNET_MAX_BODY_BYTES", "DIGITNET_BATCHING",
                 "DIGITNET_BATCH_SIZE", "DIGITNET_BATCH_DELAY_MS", "DIGITNET_BATCHING_PRESET"):
        monkeypatch.delenv(name, raising=False)
    assert stale_files() == {}, "run `make configs`"


def test_k8s_args_use_the_default_policy_whatever_the_environment(monkeypatch) -> None:
    from services.tf_serving.launch import STACK

    monkeypatch.setenv("DIGITNET_BATCHING", "off")
    args = STACK.k8s_args(2)
    assert flag_value(args, "enable_batching") == "true"
    assert args == server_flags(ConfigFiles.in_dir(Path("/config")), 8500, 8501, 2,
                                ServerTuning(), BatchingPolicy())  # fmt: skip


@pytest.mark.parametrize(("raw", "value"), [("on", True), ("0", False), ("", True)])
def test_the_batching_switch_reads_words(monkeypatch, raw, value) -> None:
    monkeypatch.setenv("DIGITNET_BATCHING", raw)
    assert BatchingPolicy.from_env().enabled is value


def test_a_bad_switch_names_the_variable(monkeypatch) -> None:
    monkeypatch.setenv("DIGITNET_BATCHING", "maybe")
    with pytest.raises(ValueError, match="DIGITNET_BATCHING"):
        BatchingPolicy.from_env()
