"""TF Serving's plugin: the real `tensorflow_model_server` binary as a local process, when
installed (it is skipped with the reason otherwise; compose and k8s run the official image).

The batching parameters are generated from digitnet.spec at start: max_batch_size is
ServingLimits.max_batch (TF Serving counts rows: the largest request must fit one batch),
batch_timeout_micros is BatchingPolicy's delay, --enable_batching its on/off, and
num_batch_threads follows the cores. `make configs` writes the committed copies (this
folder and k8s/base) from the spec's defaults; tests check they are up to date.

Bind address: tensorflow_model_server has no flag to choose one (checked in
tensorflow_serving/model_servers/main.cc and server.cc). gRPC listens on 0.0.0.0:<port> and
REST on [::]:<port>, i.e. on every interface; the only alternative, --grpc_socket_path,
adds a UNIX socket but does not narrow the TCP listener. Local runs therefore choose random
high ports and every caller connects to 127.0.0.1 only; containers confine the ports to
their own network namespace.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import requests

from digitnet.artifacts import ArtifactPaths
from digitnet.clients import (
    TFS_PREDICT_PATH,
    TFS_STATUS_PATH,
    Predictor,
    TfServingGrpcClient,
    tf_serving_rest,
)
from digitnet.noop import NOOP_ENV, NOOP_MODEL_SUFFIX, noop_model_name, noop_requested
from digitnet.spec import BatchingPolicy, ModelSpec, ServingLimits
from services.process import (
    LOOPBACK,
    ServerProcess,
    start_process,
    stop_process_tree,
    usable_cores,
    wait_until,
)
from services.stack import GRPC, REST, ServingStack
from services.tf_serving import metrics
from services.tf_serving.config_protos import config_messages, parse_text_proto, write_text_proto
from services.tf_serving.server_flags import (
    BINARY,
    CONFIG_DIR,
    DEFAULT_GRPC_PORT,
    DEFAULT_REST_PORT,
    REFERENCE_CORES,
    REPO_CONFIGS,
    WARMUP_DIR,
    WARMUP_FILE,
    ConfigFiles,
    ServerTuning,
    derive_threads,
    server_argv,
    server_flags,
)

# The copy k8s mounts (kustomize reads files only inside its own folder tree), and where
# the container sees it.
K8S_CONFIG_DIR = CONFIG_DIR.parents[1] / "k8s" / "base" / "tf-serving-config"
K8S_CONFIG_MOUNT = Path("/config")
# A wrapper field written on one line, as in batching_parameters.txt: `name { value: N }`.
_WRAPPED_FIELD = re.compile(r"^(?P<name>[a-z_]+) \{ value: (?P<value>[^ }]+) \}$", re.MULTILINE)


def batching_values(
    limits: ServingLimits, policy: BatchingPolicy, cores: int
) -> dict[str, int]:
    """BatchingParameters fields generated from the spec, for a server on `cores` CPUs."""
    return {
        "max_batch_size": limits.max_batch,
        "batch_timeout_micros": round(policy.delay_ms * 1000),
        "num_batch_threads": derive_threads(cores).num_batch_threads,
    }


def derive_batching_text(template: str, values: Mapping[str, int]) -> str:
    """The batching parameters text with each field in `values` rewritten in place
    (comments kept).

    Raises:
        KeyError: for a field the template does not set on a line of its own.
    """
    missing = set(values) - {m["name"] for m in _WRAPPED_FIELD.finditer(template)}
    if missing:
        raise KeyError(f"batching template has no line for {sorted(missing)}")

    def replace(match: re.Match) -> str:
        name = match["name"]
        value = values.get(name, match["value"])
        return f"{name} {{ value: {value} }}"

    return _WRAPPED_FIELD.sub(replace, template)


def repo_batching_text() -> str:
    """The committed batching_parameters.txt, generated from the spec's defaults for the
    reference container."""
    values = batching_values(ServingLimits(), BatchingPolicy(), REFERENCE_CORES)
    return derive_batching_text(REPO_CONFIGS.batching_parameters.read_text(), values)

AVAILABLE_STATE = "AVAILABLE"
HOW_TO_GET_IT = (
    "run it in a container with `docker compose up tf-serving` (official tensorflow/serving "
    "image), or on Ubuntu/Debian install the `tensorflow-model-server` apt package from the "
    "TF Serving APT repository (https://storage.googleapis.com/tensorflow-serving-apt, see "
    "https://www.tensorflow.org/tfx/serving/setup)"
)


def noop_savedmodel(paths: ArtifactPaths) -> Path:
    """The no-op twin's version folder (noop_model.py), beside digitnet's SavedModel: TF
    Serving gets its parent as the twin's base path, only when the twin is on."""
    return paths.tf_serving_base / noop_model_name(paths.spec) / str(paths.spec.version)


def write_run_configs(paths: ArtifactPaths, run_dir: Path, cores: int,
                      noop: bool = False) -> ConfigFiles:  # fmt: skip
    """Copies of the repository configs for a local run.

    The model config points at this machine's artifacts (absolute, as TF Serving resolves
    paths from its own working directory) and the batch thread count fits `cores`. With
    `noop`, the no-op twin (noop_model.py) is a second entry, its version policy copied
    from the first: the same server, flags and batching serve both.
    """
    messages = config_messages()
    generated = "Generated by services/tf_serving/launch.py from the file of the same name."
    files = ConfigFiles.in_dir(run_dir)

    model_config = parse_text_proto(REPO_CONFIGS.model_config, messages.model_server_config)
    (entry,) = model_config.model_config_list.config
    entry.name = paths.spec.name
    entry.base_path = str((paths.tf_serving_base / paths.spec.name).resolve())
    if noop:
        twin = model_config.model_config_list.config.add()
        twin.CopyFrom(entry)
        twin.name = noop_model_name(paths.spec)
        twin.base_path = str(noop_savedmodel(paths).parent.resolve())
    write_text_proto(model_config, files.model_config, generated)

    values = batching_values(ServingLimits.from_env(), BatchingPolicy.from_env(), cores)
    text = derive_batching_text(REPO_CONFIGS.batching_parameters.read_text(), values)
    files.batching_parameters.write_text(f"# {generated}\n{text}")
    # Parsed back with the server's own message definition: a bad value fails here, not
    # in the server's log.
    parse_text_proto(files.batching_parameters, messages.batching_parameters)

    shutil.copyfile(REPO_CONFIGS.monitoring_config, files.monitoring_config)
    return files


class TfServingStack(ServingStack):
    """The real TF Serving model server."""

    name = "tf_serving"
    default_ports: Mapping[str, int] = {"rest": DEFAULT_REST_PORT, "grpc": DEFAULT_GRPC_PORT}
    protocol_ports = {REST: "rest", GRPC: "grpc"}
    locust_users = {REST: "RestPredictUser", GRPC: "TfServingGrpcUser"}
    # Each ask is a model-status call per model the server loads.
    ready_poll_s = 0.25
    # TF Serving validates with its own code: its answers to bad input are recorded.
    validates_with_codec = False
    floor_path = "SavedModel signature"
    server_batching = True
    # --enable_batching is off unless given.
    default_preset = {"DIGITNET_BATCHING": "off"}
    # The no-op twin is a second, trivial SavedModel in the same server (noop_model.py).
    noop_env = {NOOP_ENV: "1"}
    framework = "tensorflow"
    reports_device = False
    unreported_device_why = (
        "TF Serving's replies carry no header of ours, and it places the graph on a GPU "
        "by itself when its -gpu image finds one; only its log (`Created device ... GPU`) "
        "says which"
    )
    warmup_fixed_why = (
        "its warm-up records are part of the SavedModel (assets.extra), replayed before it "
        "reports AVAILABLE"
    )
    compose_service = "tf-serving"
    k8s_deployment = "tf-serving"
    workers_not_applicable = (
        "one process (tensorflow_model_server) with no separate workers to kill"
    )

    def __init__(self, binary: str = BINARY) -> None:
        self.binary = binary

    def build(self, paths: ArtifactPaths) -> None:
        # The warm-up records TF Serving replays before it reports AVAILABLE, and the twin.
        from services.tf_serving.noop_model import export_noop_savedmodel
        from services.tf_serving.warmup import write_warmup_requests

        limits = ServingLimits.from_env()
        write_warmup_requests(paths.savedmodel, paths.spec, limits)
        # The twin replays the same records (the warm-up runs them on the version being
        # loaded, by signature; the model name in them is not looked at).
        twin = export_noop_savedmodel(noop_savedmodel(paths), paths.spec)
        write_warmup_requests(twin, paths.spec, limits)

    def artifact_files(self, paths: ArtifactPaths) -> list[Path]:
        return [paths.savedmodel / WARMUP_DIR / WARMUP_FILE,
                noop_savedmodel(paths) / "saved_model.pb"]  # fmt: skip

    def available(self) -> tuple[bool, str]:
        path = shutil.which(self.binary)
        if path is None:
            return False, f"`{self.binary}` is not on PATH; {HOW_TO_GET_IT}"
        return True, f"found {path}"

    def start(
        self,
        paths: ArtifactPaths,
        run_dir: Path,
        ports: Mapping[str, int],
        cores: Sequence[int] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ServerProcess:
        if not paths.savedmodel.is_dir():
            raise FileNotFoundError(f"no SavedModel at {paths.savedmodel}; run `make artifacts`")
        core_count = len(cores) if cores else len(usable_cores())
        noop = noop_requested(env)
        configs = write_run_configs(paths, run_dir, core_count, noop)
        argv = server_argv(configs, ports["grpc"], ports["rest"], core_count, binary=self.binary)
        server = start_process(
            self.name, argv, run_dir / "tf_serving.log", cwd=run_dir, env=env, cores=cores
        )
        rest = f"http://{LOOPBACK}:{ports['rest']}"
        server.endpoints = {
            "rest": rest,
            "grpc": f"{LOOPBACK}:{ports['grpc']}",
            "status": rest + TFS_STATUS_PATH.format(name=paths.spec.name),
            "metrics": rest + _metrics_path(configs),
        }
        return server

    def wait_ready(self, server: ServerProcess, timeout_s: float,
                   poll_s: float | None = None) -> float:  # fmt: skip
        # Ready means a loaded version of every model it serves (the twin too, when on),
        # not an open port: TF Serving listens before loading.
        rest = server.endpoints["rest"]
        status_urls = [rest + TFS_STATUS_PATH.format(name=n) for n in _model_names(server)]
        return wait_until(
            lambda: all(model_is_available(url) for url in status_urls),
            timeout_s,
            f"{self.name} at {', '.join(status_urls)}",
            interval_s=self.poll_interval(poll_s),
            alive=server.alive,
        )

    def clients(self, server: ServerProcess, paths: ArtifactPaths) -> list[Predictor]:
        return [
            self.remote_client(REST, server.endpoints["rest"], paths.spec),
            self.remote_client(GRPC, server.endpoints["grpc"], paths.spec),
        ]

    def remote_client(
        self, protocol: str, url: str, spec: ModelSpec, secret: str | None = None
    ) -> Predictor:
        if protocol == GRPC:
            return TfServingGrpcClient(url.split("://", 1)[-1].rstrip("/"), spec)
        return tf_serving_rest(url, spec)

    def stop(self, server: ServerProcess) -> None:
        stop_process_tree(server.pid)
        if server.popen is not None:
            server.popen.wait(timeout=5)

    def metrics_url(self, server: ServerProcess) -> str | None:
        return server.endpoints.get("metrics")

    def server_timings(self, before: Mapping, after: Mapping) -> dict:
        return metrics.breakdown(before, after) or {}

    def noop_path(self, server: ServerProcess) -> str | None:
        # Read back from the models.config the server was started with: the twin is the
        # model listed after the served one, on the same REST port.
        twins = [n for n in _model_names(server)[1:] if n.endswith(NOOP_MODEL_SUFFIX)]
        return TFS_PREDICT_PATH.format(name=twins[0]) if twins else None

    k8s_container = "tf-serving"
    k8s_config_mount = str(K8S_CONFIG_MOUNT)

    def k8s_args(self, cores: int) -> list[str] | None:
        # The ports and the spec's defaults: what the committed ConfigMap was made for.
        return server_flags(ConfigFiles.in_dir(K8S_CONFIG_MOUNT), DEFAULT_GRPC_PORT,
                            DEFAULT_REST_PORT, cores, ServerTuning(), BatchingPolicy())

    def generated_files(self) -> dict[Path, str]:
        batching = repo_batching_text()
        files = {
            REPO_CONFIGS.batching_parameters: batching,
            K8S_CONFIG_DIR / REPO_CONFIGS.batching_parameters.name: batching,
        }
        for source in (REPO_CONFIGS.model_config, REPO_CONFIGS.monitoring_config):
            files[K8S_CONFIG_DIR / source.name] = source.read_text()
        return files


def model_is_available(status_url: str) -> bool:
    """Whether GET /v1/models/<name> lists a version in state AVAILABLE."""
    response = requests.get(status_url, timeout=2.0)
    if response.status_code != 200:
        return False
    versions = response.json().get("model_version_status", [])
    return any(v.get("state") == AVAILABLE_STATE for v in versions)


def _model_names(server: ServerProcess) -> list[str]:
    """The models the server's run config lists, the served one first (start() runs it in
    the folder of its log, where write_run_configs wrote the config)."""
    configs = ConfigFiles.in_dir(server.log_path.parent)
    model_config = parse_text_proto(configs.model_config, config_messages().model_server_config)
    return [entry.name for entry in model_config.model_config_list.config]


def _metrics_path(configs: ConfigFiles) -> str:
    monitoring = parse_text_proto(configs.monitoring_config, config_messages().monitoring_config)
    return monitoring.prometheus_config.path


STACK = TfServingStack()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(
        description="Print the batching parameters generated from digitnet.spec's defaults "
        "(`make configs` writes the committed copies)."
    )
    parser.parse_args()
    print(repo_batching_text(), end="")


if __name__ == "__main__":
    main()
