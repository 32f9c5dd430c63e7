"""TorchServe 0.12's plugin: the JVM frontend plus Python workers running handler.py.

The committed config.properties is the production config; `start` writes a copy into the
run folder with every address rebound to 127.0.0.1 on the given ports, the local model
store, worker counts derived from the cores, and the serving knobs of digitnet.spec
(max_request_size from ServingLimits, the model's batching from BatchingPolicy, set at
registration through the `models` property rather than frozen in the .mar). Token
authorization stays on: the keys TorchServe writes to `<run_dir>/key_file.json` are read
back by `read_tokens`.

`make configs` regenerates the committed config's serving lines from the spec's defaults
(tests check it is up to date).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from digitnet.artifacts import ArtifactPaths
from digitnet.clients import TORCHSERVE_PREDICT_PATH, Predictor, torchserve_rest
from digitnet.env import env_optional_int
from digitnet.noop import NOOP_ENV, NOOP_MODEL_SUFFIX, noop_model_name, noop_requested
from digitnet.spec import BatchingPolicy, ModelSpec, ServingLimits
from digitnet.wire import BINARY, JSON
from services.cores import CoreSplit, split_cores
from services.process import (
    LOOPBACK,
    ServerProcess,
    alive,
    kill_processes,
    port_is_free,
    start_process,
    stop_process_tree,
    usable_cores,
    wait_until,
)
from services.stack import CPU, CUDA, DEPLOYMENT_GRACE_S, ServingStack, SignalPlan
from services.torchserve import metrics
from services.torchserve.healthcheck import KEY_FILE, model_status, workers_ready

HERE = Path(__file__).resolve().parent
CONFIG_TEMPLATE = HERE / "config.properties"
# Where the image keeps our log4j2.xml (config.properties' vmargs), and the repository's copy
# a local run uses instead.
IMAGE_LOG_CONFIG = "file:///opt/digitnet/log4j2.xml"
LOG_CONFIG = HERE / "log4j2.xml"
# TorchServe writes KEY_FILE to the JVM's working directory; start() runs it in run_dir.
LOG_FILE = "torchserve.log"
CONFIG_FILE = "config.properties"
# handler.THREADS_ENV, written here too: the handler imports torch, and this plugin must
# import without it (the load generator's image has no torch).
THREADS_ENV = "DIGITNET_TORCH_THREADS"
WARMUP_ENV = "DIGITNET_TORCHSERVE_WARMUP_ITERATIONS"  # handler.WARMUP_ENV, likewise
# Overrides the worker count; intra-op threads then get cores // workers each.
WORKERS_ENV = "DIGITNET_TORCHSERVE_WORKERS"
# "true": TorchServe's own default, the worker json-decodes every body before the handler
# (ours hands the handler the bytes: one parse, by the codec). The fair fight's default
# preset sets it; nothing else does.
DECODE_INPUT_ENV = "DIGITNET_TORCHSERVE_DECODE_INPUT"
# "builtin": TorchServe's own log4j2.xml (DEBUG, a line per request), as it runs out of the
# box; anything else: ours (config.properties' vmargs).
LOGGING_ENV = "DIGITNET_TORCHSERVE_LOGGING"
BUILTIN_LOGGING = "builtin"
LOG_CONFIG_ARG = "-Dlog4j.configurationFile="
# Workers listen on <java.io.tmpdir>/.ts.sock.<port>; Linux caps socket paths at 107 bytes.
MAX_UNIX_SOCKET_PATH = 107
WORKER_PORT_MAX = 65535
# After SIGTERM the JVM stops its workers and takes a few seconds to exit.
STOP_GRACE_S = 20.0
# Seconds a batch may take before TorchServe answers with an error and restarts the worker.
RESPONSE_TIMEOUT_S = 30
# The reference container's CPUs (compose `cpus: 2`, k8s limits.cpu 2): the committed
# config's worker count is written for it.
REFERENCE_CORES = 2
WORKER_SCRIPT = "model_service_worker.py"
PORTS_FREE_TIMEOUT_S = 30.0


def plan_for(cores: Sequence[int] | None) -> CoreSplit:
    """Workers x torch threads for `cores` (or all usable ones), by the one rule of
    services.cores, DIGITNET_TORCHSERVE_WORKERS overriding the worker count when set."""
    return split_cores(len(cores or usable_cores()), env_optional_int(WORKERS_ENV))


def model_store(paths: ArtifactPaths) -> Path:
    return paths.stack_dir("torchserve") / "model-store"


def mar_path(paths: ArtifactPaths) -> Path:
    return model_store(paths) / f"{paths.spec.name}.mar"


def noop_mar_path(paths: ArtifactPaths) -> Path:
    """The no-op twin's archive (build_mar.build_noop_mar), beside digitnet.mar."""
    return model_store(paths) / f"{noop_model_name(paths.spec)}.mar"


def serving_overrides(
    spec: ModelSpec, limits: ServingLimits, policy: BatchingPolicy, workers: int,
    twins: Sequence[str] = (),
) -> dict[str, str]:
    """The config.properties lines generated from digitnet.spec: the body limit, and the
    model's registration (workers, dynamic batching, response timeout) as TorchServe's
    `models` property, which it applies when it loads the archive named by load_models.

    Args:
        twins: more models (the no-op twin) registered with exactly the same workers,
            batching and timeout, from `<name>.mar` in the same store.
    """
    registration = {
        name: {
            str(spec.version): {
                "defaultVersion": True,
                "marName": f"{name}.mar",
                "minWorkers": workers,
                "maxWorkers": workers,
                "batchSize": policy.requests_per_batch,
                "maxBatchDelay": round(policy.delay_ms),
                "responseTimeout": RESPONSE_TIMEOUT_S,
            }
        }
        for name in (spec.name, *twins)
    }
    return {
        "max_request_size": str(limits.max_body_bytes),
        "default_workers_per_model": str(workers),
        "models": json.dumps(registration, separators=(",", ":")),
    }


@dataclass(frozen=True)
class TorchServeTokens:
    """The keys TorchServe generated at start; each API accepts only its own key."""

    inference: str
    management: str
    api: str


def read_tokens(run_dir: Path) -> TorchServeTokens:
    """Reads `run_dir/key_file.json` (written by TorchServe when token auth is on).

    Raises:
        FileNotFoundError: before TorchServe has written it.
        KeyError: if the file does not hold the three keys.
    """
    keys = json.loads((run_dir / KEY_FILE).read_text())
    return TorchServeTokens(
        inference=keys["inference"]["key"],
        management=keys["management"]["key"],
        api=keys["API"]["key"],
    )


def read_properties(text: str) -> dict[str, str]:
    """Parses the subset of Java properties syntax our config uses: `key=value` lines,
    `#`/`!` comments, and backslash escapes of single characters.

    Raises:
        ValueError: on a line continuation or a line without `=`, which this parser (and
            our config) does not use; refusing is safer than misreading a security knob.
    """
    props: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            raise ValueError(f"line {number}: line continuations are not supported")
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"line {number}: expected key=value, got {raw!r}")
        props[key.strip()] = _unescape(value.strip())
    return props


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"t": "\t", "n": "\n"}.get(m[1], m[1]), value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\")


def derive_config(template: str, overrides: Mapping[str, str]) -> str:
    """The template with each overridden key's value replaced in place (comments kept);
    keys the template lacks are appended."""
    pending = dict(overrides)
    lines = []
    for raw in template.splitlines():
        key = raw.split("=", 1)[0].strip()
        if "=" in raw and not raw.lstrip().startswith(("#", "!")) and key in pending:
            lines.append(f"{key}={_escape(pending.pop(key))}")
        else:
            lines.append(raw)
    if pending:
        lines.append("# Added by services/torchserve/launch.py")
        lines.extend(f"{key}={_escape(value)}" for key, value in pending.items())
    return "\n".join(lines) + "\n"


def served_models(paths: ArtifactPaths, noop: bool) -> list[str]:
    """The models a local run loads: digitnet, and its no-op twin when asked for."""
    return [paths.spec.name, *([noop_model_name(paths.spec)] if noop else [])]


def local_vmargs(vmargs: str, builtin_logging: bool = False) -> str:
    """The committed JVM arguments with the image's log4j2.xml replaced by the repository's
    (or dropped, for TorchServe's built-in logging).

    Raises:
        ValueError: when the committed vmargs no longer name the image's log config (a
            local run would then log at TorchServe's DEBUG default, unnoticed).
    """
    if IMAGE_LOG_CONFIG not in vmargs:
        raise ValueError(f"config.properties vmargs must name {IMAGE_LOG_CONFIG}: {vmargs!r}")
    if builtin_logging:
        return " ".join(a for a in vmargs.split() if not a.startswith(LOG_CONFIG_ARG))
    return vmargs.replace(IMAGE_LOG_CONFIG, LOG_CONFIG.resolve().as_uri())


def decode_input_request() -> str:
    """decode_input_request as a local run's derived config gives it (DECODE_INPUT_ENV, else
    the committed config's): what the frontend tells its workers to do with JSON bodies."""
    return (os.environ.get(DECODE_INPUT_ENV)
            or read_properties(CONFIG_TEMPLATE.read_text())["decode_input_request"])  # fmt: skip


def local_overrides(
    paths: ArtifactPaths, ports: Mapping[str, int], plan: CoreSplit, noop: bool = False
) -> dict[str, str]:
    """What a local run changes in the production config: loopback addresses on the given
    ports, this machine's model store, the worker count, and the serving knobs as the
    environment sets them (digitnet.spec); with `noop`, the no-op twin loaded beside the
    model under the same registration (the committed config never loads it)."""
    store = model_store(paths).resolve()
    names = served_models(paths, noop)
    decode_input = os.environ.get(DECODE_INPUT_ENV)
    return {
        **({"decode_input_request": decode_input} if decode_input else {}),
        **serving_overrides(
            paths.spec, ServingLimits.from_env(), BatchingPolicy.from_env(), plan.workers,
            twins=names[1:],
        ),
        "inference_address": f"http://{LOOPBACK}:{ports['inference']}",
        "management_address": f"http://{LOOPBACK}:{ports['management']}",
        "metrics_address": f"http://{LOOPBACK}:{ports['metrics']}",
        "grpc_inference_address": LOOPBACK,
        "grpc_inference_port": str(ports["grpc_inference"]),
        "grpc_management_address": LOOPBACK,
        "grpc_management_port": str(ports["grpc_management"]),
        "model_store": str(store),
        "vmargs": local_vmargs(read_properties(CONFIG_TEMPLATE.read_text())["vmargs"],
                               os.environ.get(LOGGING_ENV) == BUILTIN_LOGGING),
        "load_models": ",".join(f"{name}={name}.mar" for name in names),
        # Only archives directly inside this store; re.escape keeps the path literal.
        "allowed_urls": f"file://{re.escape(str(store))}/[^/]+[.]mar",
    }


def session_processes(session_id: int) -> list[psutil.Process]:
    """Processes in the session start_process created for the server (its sid is the
    launcher's pid), found even after they were re-parented away from it."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == session_id:
                found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


class TorchServeStack(ServingStack):
    """TorchServe frontend (JVM) plus Python workers running services/torchserve/handler.py."""

    name = "torchserve"
    default_ports: Mapping[str, int] = {
        "inference": 8080,
        "management": 8081,
        "metrics": 8082,
        "grpc_inference": 7070,
        "grpc_management": 7071,
    }
    protocol_ports = {"rest": "inference"}
    stop_grace_s = STOP_GRACE_S
    # Each ask is a management API call per model the server loads.
    ready_poll_s = 0.25
    devices = (CPU, CUDA)
    server_batching = True
    floor_path = "TorchScript"
    thread_settings = (THREADS_ENV, WORKERS_ENV, "OMP_NUM_THREADS")
    warmup_off_env = {WARMUP_ENV: "0"}
    front_answers = {
        "body_over_max": (
            "TorchServe's Netty frontend refuses bodies over max_request_size itself, with an "
            "empty 413, before any worker sees them"
        ),
    }
    # handler.py picks each request's codec from its Content-Type, within a batch too.
    codecs = (JSON, BINARY)
    lost_on_worker_death = (
        "TorchServe 0.12 loses the requests its batch aggregator collects for a worker that "
        "has just died, until the worker's thread notices (it waits up to maxBatchDelay for "
        "a batch to fill): WorkerThread.run then has no request in hand to answer "
        "\"Worker died\" for, and nothing else answers them (no frontend timeout), so "
        "their clients wait for their own timeout. Measured: 5 of 32 kills under 4 clients "
        "lost 1 to 4 requests, all sent after the kill; the other kills answered 507"
    )
    # The no-op twin is a second model in the same TorchServe (noop_handler.py).
    noop_env = {NOOP_ENV: "1"}
    # TorchServe's out-of-the-box serving: batchSize 1 (its default) and the worker
    # decoding JSON bodies itself (decode_input_request's default).
    default_preset = {"DIGITNET_BATCHING": "off", DECODE_INPUT_ENV: "true",
                      LOGGING_ENV: BUILTIN_LOGGING}
    # loadtests.own_code loads the .mar into TorchServe's own Python worker code.
    in_process = "torchserve"
    compose_service = "torchserve"
    image = ("digitnet-torchserve", "services/torchserve/Dockerfile")
    k8s_deployment = "torchserve"

    def app_env(self, paths: ArtifactPaths, cores: Sequence[int] | None = None,
                env: Mapping[str, str] | None = None) -> dict[str, str]:  # fmt: skip
        plan = plan_for(cores)
        return {
            THREADS_ENV: str(plan.threads),
            "OMP_NUM_THREADS": str(plan.threads),
            # The handler reads the model's size from these (ModelSpec.from_env): without
            # them a heavier variant's workers warm up with the default's shape and die.
            **paths.spec.env(),
            **(env or {}),
        }

    @staticmethod
    def _torchserve_bin() -> Path:
        # The console script next to this interpreter, so workers use the same venv.
        return Path(sys.executable).parent / "torchserve"

    def build(self, paths: ArtifactPaths) -> None:
        from services.torchserve.build_mar import build_mar, build_noop_mar

        build_mar(paths.torchscript, model_store(paths), paths.spec)
        build_noop_mar(model_store(paths), paths.spec)

    def artifact_files(self, paths: ArtifactPaths) -> list[Path]:
        return [mar_path(paths), noop_mar_path(paths)]

    def available(self) -> tuple[bool, str]:
        if shutil.which("java") is None:
            return False, "java is not on PATH: install a JRE 17 (apt-get install openjdk-17-jre)"
        for module, package in (("ts", "torchserve==0.12.0"), ("yaml", "PyYAML")):
            if importlib.util.find_spec(module) is None:
                return False, f"{package} is not installed: run scripts/bootstrap_venv.sh"
        if not self._torchserve_bin().exists():
            return False, f"no torchserve script at {self._torchserve_bin()}"
        return True, "java and torchserve found"

    def start(
        self,
        paths: ArtifactPaths,
        run_dir: Path,
        ports: Mapping[str, int],
        cores: Sequence[int] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ServerProcess:
        noop = noop_requested(env)
        for mar in [mar_path(paths), *([noop_mar_path(paths)] if noop else [])]:
            if not mar.exists():
                raise FileNotFoundError(f"{mar} is missing: run `make artifacts` first")
        run_dir = run_dir.resolve()
        tmp_dir = run_dir / "tmp"
        socket_path = tmp_dir / f".ts.sock.{WORKER_PORT_MAX}"
        if len(str(socket_path)) > MAX_UNIX_SOCKET_PATH:
            raise ValueError(
                f"run_dir {run_dir} is too deep: worker socket {socket_path} would exceed "
                f"the {MAX_UNIX_SOCKET_PATH}-byte limit of Unix socket paths"
            )
        tmp_dir.mkdir(parents=True, exist_ok=True)
        # A stale key file from an earlier run would hand out keys this server rejects.
        (run_dir / KEY_FILE).unlink(missing_ok=True)
        plan = plan_for(cores)
        config_path = run_dir / CONFIG_FILE
        config_path.write_text(
            derive_config(CONFIG_TEMPLATE.read_text(),
                          local_overrides(paths, ports, plan, noop))  # fmt: skip
        )
        argv = [
            str(self._torchserve_bin()),
            "--foreground",
            "--ts-config", str(config_path),
            "--model-store", str(model_store(paths).resolve()),
            "--models", *(f"{name}={name}.mar" for name in served_models(paths, noop)),
            # No config snapshots: the derived config file is the whole state.
            "--ncs",
        ]  # fmt: skip
        server_env = {
            "LOG_LOCATION": str(run_dir / "logs"),
            "METRICS_LOCATION": str(run_dir / "logs"),
            # The launcher's pid file, the JVM's java.io.tmpdir (unpacked archives) and
            # the worker sockets (/tmp/.ts.sock.<port>) all default to /tmp and would
            # clash with any other TorchServe on the machine; each run gets its own.
            "TMPDIR": str(tmp_dir),
            "TEMP": str(tmp_dir),
            **self.app_env(paths, cores, env),
        }
        server = start_process(
            self.name, argv, run_dir / LOG_FILE, cwd=run_dir, env=server_env, cores=cores
        )
        server.endpoints = {
            "inference": f"http://{LOOPBACK}:{ports['inference']}",
            "management": f"http://{LOOPBACK}:{ports['management']}",
            "metrics": f"http://{LOOPBACK}:{ports['metrics']}",
            "grpc_inference": f"{LOOPBACK}:{ports['grpc_inference']}",
            "grpc_management": f"{LOOPBACK}:{ports['grpc_management']}",
        }
        return server

    @staticmethod
    def run_dir(server: ServerProcess) -> Path:
        """The folder start() ran the server in (it holds the log, config and keys)."""
        return server.log_path.parent

    def model_status(self, server: ServerProcess) -> dict:
        """GET /models/<name> with the management key: workers, batch size, delay."""
        token = read_tokens(self.run_dir(server)).management
        return model_status(server.endpoints["management"], self._model_name(server), token)

    def serving_config(self, server: ServerProcess) -> dict[str, Any]:
        # The management API's description of the served model, as the frontend runs it.
        status = self.model_status(server)
        return {
            "batch_size": status.get("batchSize"),
            "max_batch_delay_ms": status.get("maxBatchDelay"),
            "workers": len(status.get("workers", [])),
            "min_workers": status.get("minWorkers"),
            "max_workers": status.get("maxWorkers"),
            "response_timeout_s": status.get("responseTimeout"),
            "logging": self._logging(server),
        }

    @staticmethod
    def _logging(server: ServerProcess) -> str | None:
        """Which log4j2 config the frontend's JVM runs with, from its command line."""
        try:
            procs = session_processes(server.pid)
            for proc in procs:
                args = proc.cmdline()
                if args and Path(args[0]).name == "java":
                    named = [a for a in args if a.startswith(LOG_CONFIG_ARG)]
                    return (Path(named[0].removeprefix(LOG_CONFIG_ARG)).name if named
                            else "TorchServe's built-in (DEBUG, a line per request)")
        except psutil.Error:
            return None
        return None

    def model_ready(self, server: ServerProcess, model_name: str) -> bool:
        """True when the model has its minimum number of workers and all are READY
        (GET /models/<name> with the management key; /ping would say Healthy too early)."""
        token = read_tokens(self.run_dir(server)).management
        status = model_status(server.endpoints["management"], model_name, token)
        return workers_ready(status)

    def wait_ready(self, server: ServerProcess, timeout_s: float,
                   poll_s: float | None = None) -> float:  # fmt: skip
        # Every model it loads (the no-op twin too, when on): a twin still starting its
        # workers would otherwise compete for the cores with the first measurements.
        names = self._model_names(server)
        try:
            return wait_until(
                lambda: all(self.model_ready(server, name) for name in names),
                timeout_s,
                f"{self.name} model {', '.join(names)}",
                interval_s=self.poll_interval(poll_s),
                alive=server.alive,
            )
        except (TimeoutError, RuntimeError) as err:
            raise type(err)(f"{err}\n--- {server.log_path} ---\n{server.log_tail()}") from None

    def _model_names(self, server: ServerProcess) -> list[str]:
        """The models its derived config loads, the served one first."""
        props = read_properties((self.run_dir(server) / CONFIG_FILE).read_text())
        return [entry.split("=", 1)[0] for entry in props["load_models"].split(",")]

    def _model_name(self, server: ServerProcess) -> str:
        return self._model_names(server)[0]

    def noop_path(self, server: ServerProcess) -> str | None:
        # Read back from the config the server was started with: the twin is the model
        # loaded after the served one (load_models), on the same inference port and token.
        twins = [n for n in self._model_names(server)[1:] if n.endswith(NOOP_MODEL_SUFFIX)]
        return TORCHSERVE_PREDICT_PATH.format(name=twins[0]) if twins else None

    def clients(self, server: ServerProcess, paths: ArtifactPaths) -> list[Predictor]:
        tokens = read_tokens(self.run_dir(server))
        return [self.remote_client("rest", server.endpoints["inference"], paths.spec,
                                   tokens.inference)]  # fmt: skip

    def remote_client(
        self, protocol: str, url: str, spec: ModelSpec, secret: str | None = None
    ) -> Predictor:
        if not secret:
            raise ValueError("torchserve needs its inference key (token authorization is on)")
        return torchserve_rest(url, spec, secret)

    single_replica_why = "its token is per process (k8s/README.md)"
    # Management, metrics and gRPC ports (config.properties): loopback-only in the pod.
    private_ports = {
        8081: "management", 8082: "metrics", 7070: "grpc inference", 7071: "grpc management",
    }
    k8s_container = "torchserve"

    def generated_files(self) -> dict[Path, str]:
        return {CONFIG_TEMPLATE: repo_config_text(CONFIG_TEMPLATE.read_text())}

    def compose_secret(self, read_file) -> str | None:
        # The image runs TorchServe in /home/model-server, where it writes its keys.
        return json.loads(read_file(f"/home/model-server/{KEY_FILE}"))["inference"]["key"]

    def stop(self, server: ServerProcess) -> None:
        stop_process_tree(server.pid, grace_s=STOP_GRACE_S)
        # Anything of ours that escaped the tree walk (e.g. a worker respawned meanwhile).
        kill_processes(session_processes(server.pid))
        if server.popen is not None:
            server.popen.wait(timeout=5)
        ports = [int(url.rsplit(":", 1)[1]) for url in server.endpoints.values()]
        wait_until(
            lambda: all(port_is_free(port) for port in ports),
            PORTS_FREE_TIMEOUT_S,
            f"{self.name} ports {ports} released",
            interval_s=0.2,
        )

    def device_env(self, device: str) -> dict[str, str]:
        if device == CUDA:
            return {}
        return super().device_env(device)

    def metrics_url(self, server: ServerProcess) -> str | None:
        return server.endpoints["metrics"] + metrics.METRICS_PATH

    def server_timings(self, before: Mapping, after: Mapping) -> dict:
        return metrics.breakdown(before, after) or {}

    def workers(self, server: ServerProcess) -> list[psutil.Process]:
        # launcher (python) -> java frontend -> one python model_service_worker.py per worker.
        found = []
        for proc in psutil.Process(server.pid).children(recursive=True):
            try:
                if any(WORKER_SCRIPT in part for part in proc.cmdline()) and alive(proc):
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    def process_role(self, proc: psutil.Process) -> str | None:
        try:
            if proc.name() == "java":
                return "jvm"
            if any(WORKER_SCRIPT in part for part in proc.cmdline()):
                return "model worker"
        except psutil.Error:
            return None
        return None

    def signal_plan(self) -> SignalPlan:
        # The image runs `tini -g -- torchserve --foreground`: tini forwards SIGTERM to the
        # whole process group (launcher, JVM and workers).
        return SignalPlan(True, DEPLOYMENT_GRACE_S,
                          "container stop grace (docker-compose.yml, k8s/base)")


STACK = TorchServeStack()


def repo_config_text(template: str) -> str:
    """The committed config.properties with its serving lines generated from the spec's
    defaults for the reference container."""
    plan = split_cores(REFERENCE_CORES)
    overrides = serving_overrides(ModelSpec(), ServingLimits(), BatchingPolicy(), plan.workers)
    return derive_config(template, overrides)


def main() -> None:
    """Prints the derived local config for the default ports (a dry run of start())."""
    from digitnet.artifacts import DEFAULT_ARTIFACTS

    paths = ArtifactPaths(DEFAULT_ARTIFACTS, ModelSpec.from_env())
    plan = plan_for(None)
    overrides = local_overrides(paths, TorchServeStack.default_ports, plan)
    print(derive_config(CONFIG_TEMPLATE.read_text(), overrides), end="")
    print(f"# workers={plan.workers} threads/worker={plan.threads}", file=sys.stderr)


if __name__ == "__main__":
    main()
