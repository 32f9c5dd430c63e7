"""The tensorflow_model_server command line, written once for local runs, compose and k8s.

Flag names are those of tensorflow_serving/model_servers/main.cc. Thread counts are derived
from the number of cores the server may use, by the one rule of services.cores:

  intra_op  = min(cores, max_intra_op)    threads one op (a conv over a batch) may split into
  inter_op  = cores // intra_op           ops, i.e. batches, that run at the same time
  batches   = inter_op                    num_batch_threads: one running batch per inter-op slot
  so intra_op x inter_op <= cores: the compute threads never oversubscribe the cores
  (split_cores(cores, threads=intra_op): inter-op slots are its "workers").

Batching is on when digitnet.spec.BatchingPolicy says so (--enable_batching); its
parameters file is generated from the same policy (services/tf_serving/launch.py).

The REST and gRPC handler threads parse requests and then block until their batch is done,
so they are sized like TF Serving's own default (4 per core) and do not count against the
compute budget.

Print the flags for a README or a compose file with
`python -m services.tf_serving.server_flags --cores 2 --config-dir /config`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from digitnet.clients import DEFAULT_TIMEOUT_S
from digitnet.env import env_int
from digitnet.spec import BatchingPolicy
from services.cores import split_cores

BINARY = "tensorflow_model_server"
# This folder holds the config files a deployment mounts (compose and k8s use /config).
CONFIG_DIR = Path(__file__).resolve().parent
# The CPU limit of the reference container (compose `cpus`, k8s `limits.cpu`); the static
# batching_parameters.txt is written for it.
REFERENCE_CORES = 2
DEFAULT_GRPC_PORT = 8500
DEFAULT_REST_PORT = 8501
HANDLER_THREADS_PER_CORE = 4
# Fixed by TF Serving (servables/tensorflow/saved_model_warmup_util.h): the warm-up file
# (services/tf_serving/warmup.py) is WarmupConsts::kRequestsFileName in the SavedModel's
# assets.extra folder.
WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"


@dataclass(frozen=True)
class ServerTuning:
    """Server settings that are not derived from the cores; env vars override them."""

    # Splitting one op of this small model over more threads costs more in hand-offs than
    # it saves; extra cores go to running more batches at once instead.
    max_intra_op_threads: int = 2
    # 0 = look for model versions once, at start: the model is fixed for a run, and a
    # polling thread would only add noise to benchmarks. A new version means a restart.
    file_system_poll_wait_s: int = 0
    # The server gives up when our clients do, so it never computes unwanted answers.
    rest_api_timeout_ms: int = int(DEFAULT_TIMEOUT_S * 1000)

    @classmethod
    def from_env(cls) -> ServerTuning:
        """Reads TFS_MAX_INTRA_OP_THREADS, TFS_FILE_SYSTEM_POLL_WAIT_SECONDS and
        TFS_REST_API_TIMEOUT_MS."""
        base = cls()
        return cls(
            max_intra_op_threads=env_int("TFS_MAX_INTRA_OP_THREADS", base.max_intra_op_threads),
            file_system_poll_wait_s=env_int(
                "TFS_FILE_SYSTEM_POLL_WAIT_SECONDS", base.file_system_poll_wait_s
            ),
            rest_api_timeout_ms=env_int("TFS_REST_API_TIMEOUT_MS", base.rest_api_timeout_ms),
        )


@dataclass(frozen=True)
class ServerThreads:
    """Thread counts for a server allowed to use `cores` CPUs."""

    cores: int
    intra_op: int
    inter_op: int
    num_batch_threads: int
    rest_api_threads: int
    grpc_max_threads: int


def derive_threads(
    cores: int, max_intra_op: int = ServerTuning.max_intra_op_threads
) -> ServerThreads:
    """Applies the rule in the module docstring.

    Args:
        cores: number of CPUs the server may use (>= 1).
        max_intra_op: cap on threads per op.
    """
    if cores < 1 or max_intra_op < 1:
        raise ValueError(f"cores and max_intra_op must be >= 1, got {cores}, {max_intra_op}")
    split = split_cores(cores, threads=min(cores, max_intra_op))
    handlers = HANDLER_THREADS_PER_CORE * cores
    return ServerThreads(
        cores=cores,
        intra_op=split.threads,
        inter_op=split.workers,
        num_batch_threads=split.workers,
        rest_api_threads=handlers,
        grpc_max_threads=handlers,
    )


@dataclass(frozen=True)
class ConfigFiles:
    """The three text protos the server reads (paths as the server sees them)."""

    model_config: Path
    batching_parameters: Path
    monitoring_config: Path

    @classmethod
    def in_dir(cls, directory: Path) -> ConfigFiles:
        """This folder's file names, under `directory` (e.g. /config in a container)."""
        return cls(
            directory / "models.config",
            directory / "batching_parameters.txt",
            directory / "monitoring.config",
        )

    def all(self) -> list[Path]:
        return [self.model_config, self.batching_parameters, self.monitoring_config]


# The copies in this repository, which compose and k8s mount.
REPO_CONFIGS = ConfigFiles.in_dir(CONFIG_DIR)


def server_flags(
    configs: ConfigFiles,
    grpc_port: int,
    rest_port: int,
    cores: int,
    tuning: ServerTuning | None = None,
    batching: BatchingPolicy | None = None,
) -> list[str]:
    """The flags (without the binary) that start TF Serving on `configs`.

    Args:
        configs: model, batching and monitoring config files.
        grpc_port: --port, gRPC PredictionService and ModelService.
        rest_port: --rest_api_port, REST API and Prometheus metrics.
        cores: CPUs the server may use; thread flags are derived from it.
        tuning: settings not derived from the cores; ServerTuning.from_env() if None.
        batching: the batching policy; BatchingPolicy.from_env() if None.

    Returns:
        A plain list such as ["--port=8500", ...], usable as argv or as a compose `command`.
    """
    tuning = tuning or ServerTuning.from_env()
    batching = batching or BatchingPolicy.from_env()
    threads = derive_threads(cores, tuning.max_intra_op_threads)
    return [
        f"--port={grpc_port}",
        f"--rest_api_port={rest_port}",
        f"--model_config_file={configs.model_config}",
        f"--enable_batching={'true' if batching.enabled else 'false'}",
        f"--batching_parameters_file={configs.batching_parameters}",
        f"--monitoring_config_file={configs.monitoring_config}",
        f"--tensorflow_intra_op_parallelism={threads.intra_op}",
        f"--tensorflow_inter_op_parallelism={threads.inter_op}",
        f"--rest_api_num_threads={threads.rest_api_threads}",
        f"--grpc_max_threads={threads.grpc_max_threads}",
        f"--file_system_poll_wait_seconds={tuning.file_system_poll_wait_s}",
        f"--rest_api_timeout_in_ms={tuning.rest_api_timeout_ms}",
    ]


def server_argv(
    configs: ConfigFiles,
    grpc_port: int,
    rest_port: int,
    cores: int,
    tuning: ServerTuning | None = None,
    binary: str = BINARY,
    batching: BatchingPolicy | None = None,
) -> list[str]:
    """`binary` followed by `server_flags(...)`."""
    return [binary, *server_flags(configs, grpc_port, rest_port, cores, tuning, batching)]


def flag_value(flags: list[str], name: str) -> str:
    """The value of `--name=value` in `flags`.

    Raises:
        KeyError: if the flag is absent.
    """
    prefix = f"--{name}="
    for flag in flags:
        if flag.startswith(prefix):
            return flag[len(prefix) :]
    raise KeyError(name)


def main() -> None:
    parser = argparse.ArgumentParser(description="Print tensorflow_model_server's flags.")
    parser.add_argument("--cores", type=int, default=REFERENCE_CORES)
    parser.add_argument("--config-dir", type=Path, default=Path("/config"))
    parser.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT)
    parser.add_argument("--rest-port", type=int, default=DEFAULT_REST_PORT)
    args = parser.parse_args()
    configs = ConfigFiles.in_dir(args.config_dir)
    print(" \\\n  ".join(server_argv(configs, args.grpc_port, args.rest_port, args.cores)))


if __name__ == "__main__":
    main()
