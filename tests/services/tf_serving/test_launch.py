"""The local TF Serving stack's pieces that run without the binary."""

from __future__ import annotations

from pathlib import Path

from digitnet.artifacts import ArtifactPaths
from digitnet.noop import NOOP_ENV
from digitnet.spec import ModelSpec
from services.process import ServerProcess
from services.tf_serving.config_protos import config_messages, parse_text_proto
from services.tf_serving.launch import STACK, TfServingStack, noop_savedmodel, write_run_configs
from services.tf_serving.server_flags import REPO_CONFIGS, ConfigFiles, derive_threads


def test_stack_identity() -> None:
    assert STACK.name == "tf_serving"
    assert dict(STACK.default_ports) == {"rest": 8501, "grpc": 8500}


def test_missing_binary_explains_how_to_get_it() -> None:
    ok, reason = TfServingStack(binary="tensorflow_model_server_not_here").available()
    assert ok is False
    assert "tensorflow_model_server_not_here" in reason
    assert "docker compose up tf-serving" in reason
    assert "tensorflow-model-server" in reason


def test_present_binary_is_available() -> None:
    ok, reason = TfServingStack(binary="python3").available()
    assert ok is True and "python3" in reason


def test_run_configs_point_at_local_artifacts(tmp_path: Path) -> None:
    spec = ModelSpec(name="digits_b")
    paths = ArtifactPaths(tmp_path / "relative" / ".." / "art", spec)
    run_dir = tmp_path / "run"
    files = write_run_configs(paths, run_dir, cores=4)
    assert files == ConfigFiles.in_dir(run_dir)
    messages = config_messages()

    model_config = parse_text_proto(files.model_config, messages.model_server_config)
    (entry,) = model_config.model_config_list.config
    assert entry.name == "digits_b"
    assert Path(entry.base_path).is_absolute()
    assert Path(entry.base_path) == (tmp_path / "art" / "tf_serving" / "digits_b").resolve()
    assert entry.model_version_policy.latest.num_versions == 1

    batching = parse_text_proto(files.batching_parameters, messages.batching_parameters)
    repo_batching = parse_text_proto(REPO_CONFIGS.batching_parameters, messages.batching_parameters)
    assert batching.num_batch_threads.value == derive_threads(4).num_batch_threads
    assert batching.max_batch_size == repo_batching.max_batch_size

    assert files.monitoring_config.read_text() == REPO_CONFIGS.monitoring_config.read_text()


def _started_in(run_dir: Path) -> ServerProcess:
    # What start() records: the log in the folder it wrote the run's configs to.
    return ServerProcess(name="tf_serving", pid=0, log_path=run_dir / "tf_serving.log")


def test_run_configs_serve_the_twin_beside_the_model_only_when_asked(tmp_path: Path) -> None:
    spec = ModelSpec()
    paths = ArtifactPaths(tmp_path / "art", spec)
    messages = config_messages()

    def models(files: ConfigFiles) -> list:
        config = parse_text_proto(files.model_config, messages.model_server_config)
        return list(config.model_config_list.config)

    (only,) = models(write_run_configs(paths, tmp_path / "plain", cores=2))
    assert only.name == spec.name
    assert STACK.noop_path(_started_in(tmp_path / "plain")) is None

    entry, twin = models(write_run_configs(paths, tmp_path / "twin", cores=2, noop=True))
    assert (entry.name, twin.name) == (spec.name, f"{spec.name}_noop")
    assert Path(twin.base_path) == noop_savedmodel(paths).parent.resolve()
    assert Path(twin.base_path).parent == Path(entry.base_path).parent
    # The same version policy and platform: only the name and the folder differ.
    assert twin.model_version_policy == entry.model_version_policy
    assert twin.model_platform == entry.model_platform
    # Read back from the config the server starts with, as the floor phase asks for it.
    assert STACK.noop_path(_started_in(tmp_path / "twin")) == f"/v1/models/{spec.name}_noop:predict"


def test_the_twin_is_turned_on_by_the_shared_switch() -> None:
    assert dict(STACK.noop_env) == {NOOP_ENV: "1"}
