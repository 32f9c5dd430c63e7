"""The config files a deployment mounts, parsed into TF Serving's own messages, and the
command line built from them."""

from __future__ import annotations

import re

import pytest
from google.protobuf import text_format

from digitnet.clients import TFS_METRICS_PATH
from digitnet.spec import ModelSpec, ServingLimits
from services.tf_serving.config_protos import ConfigMessages, config_messages, parse_text_proto
from services.tf_serving.server_flags import (
    REFERENCE_CORES,
    REPO_CONFIGS,
    ConfigFiles,
    ServerTuning,
    derive_threads,
    flag_value,
    server_argv,
    server_flags,
)

# Every flag of tensorflow_model_server we may use, as spelled in
# tensorflow_serving/model_servers/main.cc; the binary rejects any other.
KNOWN_FLAGS = {
    "port",
    "rest_api_port",
    "model_config_file",
    "enable_batching",
    "batching_parameters_file",
    "monitoring_config_file",
    "tensorflow_intra_op_parallelism",
    "tensorflow_inter_op_parallelism",
    "rest_api_num_threads",
    "grpc_max_threads",
    "file_system_poll_wait_seconds",
    "rest_api_timeout_in_ms",
}


@pytest.fixture(scope="module")
def messages() -> ConfigMessages:
    return config_messages()


def test_messages_are_tf_serving_types(messages: ConfigMessages) -> None:
    assert (
        messages.model_server_config.DESCRIPTOR.full_name == "tensorflow.serving.ModelServerConfig"
    )
    assert (
        messages.batching_parameters.DESCRIPTOR.full_name == "tensorflow.serving.BatchingParameters"
    )
    assert messages.monitoring_config.DESCRIPTOR.full_name == "tensorflow.serving.MonitoringConfig"


def test_models_config(messages: ConfigMessages, spec: ModelSpec) -> None:
    config = parse_text_proto(REPO_CONFIGS.model_config, messages.model_server_config)
    (entry,) = config.model_config_list.config
    assert entry.name == spec.name
    assert entry.base_path == f"/models/{spec.name}"
    assert entry.model_platform == "tensorflow"
    assert entry.model_version_policy.WhichOneof("policy_choice") == "latest"
    assert entry.model_version_policy.latest.num_versions == 1


def test_batching_parameters(messages: ConfigMessages, limits: ServingLimits) -> None:
    batching = parse_text_proto(REPO_CONFIGS.batching_parameters, messages.batching_parameters)
    # Documented in the file: the largest request we accept fits in one batch.
    assert batching.max_batch_size.value == limits.max_batch
    assert batching.batch_timeout_micros.value > 0
    assert batching.max_enqueued_batches.value >= 1
    assert batching.num_batch_threads.value == derive_threads(REFERENCE_CORES).num_batch_threads
    assert batching.pad_variable_length_inputs is False
    sizes = list(batching.allowed_batch_sizes)
    if sizes:  # TF Serving's rule: increasing, and the last one equals max_batch_size
        assert sizes == sorted(set(sizes))
        assert sizes[-1] == batching.max_batch_size.value


def test_monitoring_config(messages: ConfigMessages) -> None:
    monitoring = parse_text_proto(REPO_CONFIGS.monitoring_config, messages.monitoring_config)
    assert monitoring.prometheus_config.enable is True
    assert monitoring.prometheus_config.path == TFS_METRICS_PATH


@pytest.mark.parametrize(
    ("path", "message_attr", "field", "typo"),
    [
        (REPO_CONFIGS.model_config, "model_server_config", "base_path", "base_pth"),
        (
            REPO_CONFIGS.batching_parameters,
            "batching_parameters",
            "max_batch_size",
            "max_batch_sise",
        ),
        (REPO_CONFIGS.monitoring_config, "monitoring_config", "enable", "enabled"),
    ],
)
def test_misspelled_field_is_rejected(
    messages: ConfigMessages, path, message_attr: str, field: str, typo: str
) -> None:
    # Only the field itself, never a mention in a comment.
    field_line = re.compile(rf"^(\s*){field}(?=\s*[:{{])", re.MULTILINE)
    text = path.read_text()
    misspelled, count = field_line.subn(rf"\g<1>{typo}", text, count=1)
    assert count == 1, f"{field} not set in {path.name}"
    message_class = getattr(messages, message_attr)
    text_format.Parse(text, message_class())
    with pytest.raises(text_format.ParseError, match=typo):
        text_format.Parse(misspelled, message_class())


def test_wrapper_fields_need_value_blocks(messages: ConfigMessages) -> None:
    # Int64Value fields: "max_batch_size: 64" is a common mistake the server would refuse.
    with pytest.raises(text_format.ParseError):
        text_format.Parse("max_batch_size: 64", messages.batching_parameters())


@pytest.mark.parametrize("cores", range(1, 17))
def test_threads_never_oversubscribe(cores: int) -> None:
    plan = derive_threads(cores)
    assert plan.intra_op >= 1 and plan.inter_op >= 1
    assert plan.intra_op * plan.inter_op <= cores
    assert plan.num_batch_threads == plan.inter_op
    assert plan.rest_api_threads >= 1 and plan.grpc_max_threads >= 1


@pytest.mark.parametrize(
    ("cores", "intra", "inter"), [(1, 1, 1), (2, 2, 1), (3, 2, 1), (4, 2, 2), (8, 2, 4)]
)
def test_thread_rule_values(cores: int, intra: int, inter: int) -> None:
    plan = derive_threads(cores, max_intra_op=2)
    assert (plan.intra_op, plan.inter_op) == (intra, inter)


def test_thread_rule_rejects_zero_cores() -> None:
    with pytest.raises(ValueError):
        derive_threads(0)


def test_flags_are_known_and_unique() -> None:
    flags = server_flags(REPO_CONFIGS, 8500, 8501, REFERENCE_CORES, ServerTuning())
    names = [flag.removeprefix("--").split("=", 1)[0] for flag in flags]
    assert all(flag.startswith("--") and "=" in flag for flag in flags)
    assert len(names) == len(set(names))
    assert set(names) == KNOWN_FLAGS


def test_config_flags_point_at_existing_files() -> None:
    flags = server_flags(REPO_CONFIGS, 8500, 8501, REFERENCE_CORES, ServerTuning())
    file_flags = [f for f in flags if f.split("=", 1)[0].endswith("_file")]
    assert len(file_flags) == 3
    for flag in file_flags:
        path = flag.split("=", 1)[1]
        assert path in {str(p) for p in REPO_CONFIGS.all()}
    for path in REPO_CONFIGS.all():
        assert path.is_file(), path


def test_flag_values_follow_inputs(tmp_path) -> None:
    configs = ConfigFiles.in_dir(tmp_path)
    tuning = ServerTuning(max_intra_op_threads=1, file_system_poll_wait_s=5, rest_api_timeout_ms=7)
    argv = server_argv(configs, 1234, 5678, 4, tuning, binary="/opt/tfs")
    assert argv[0] == "/opt/tfs"
    flags = argv[1:]
    assert flag_value(flags, "port") == "1234"
    assert flag_value(flags, "rest_api_port") == "5678"
    assert flag_value(flags, "model_config_file") == str(tmp_path / "models.config")
    assert flag_value(flags, "tensorflow_intra_op_parallelism") == "1"
    assert flag_value(flags, "tensorflow_inter_op_parallelism") == "4"
    assert flag_value(flags, "file_system_poll_wait_seconds") == "5"
    assert flag_value(flags, "rest_api_timeout_in_ms") == "7"
    assert flag_value(flags, "enable_batching") == "true"
    with pytest.raises(KeyError):
        flag_value(flags, "model_base_path")


def test_tuning_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TFS_MAX_INTRA_OP_THREADS", "3")
    monkeypatch.setenv("TFS_FILE_SYSTEM_POLL_WAIT_SECONDS", "30")
    monkeypatch.setenv("TFS_REST_API_TIMEOUT_MS", "2500")
    assert ServerTuning.from_env() == ServerTuning(3, 30, 2500)
    monkeypatch.delenv("TFS_MAX_INTRA_OP_THREADS")
    assert ServerTuning.from_env().max_intra_op_threads == ServerTuning().max_intra_op_threads
