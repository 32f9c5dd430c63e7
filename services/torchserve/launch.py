"""Runs TorchServe 0.12 locally as the `torchserve` LocalStack.

The committed config.properties is the production config; `start` writes a copy into the
run folder with every address rebound to 127.0.0.1 on the given ports, the local model
store, and worker counts derived from the cores. Token authorization stays on: the keys
TorchServe writes to `<run_dir>/key_file.json` are read back by `read_tokens`.
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

import psutil

from digitnet.clients import Predictor, torchserve_rest
from services.artifacts import ArtifactPaths
from services.process import (
    LOOPBACK,
    ServerProcess,
    kill_processes,
    port_is_free,
    start_process,
    stop_process_tree,
    usable_cores,
    wait_until,
)
from services.torchserve.handler import THREADS_ENV
from services.torchserve.healthcheck import KEY_FILE, model_status, workers_ready

HERE = Path(__file__).resolve().parent
CONFIG_TEMPLATE = HERE / "config.properties"
# TorchServe writes KEY_FILE to the JVM's working directory; start() runs it in run_dir.
LOG_FILE = "torchserve.log"
CONFIG_FILE = "config.properties"
# Overrides the worker count; intra-op threads then get cores // workers each.
WORKERS_ENV = "DIGITNET_TORCHSERVE_WORKERS"
# Workers listen on <java.io.tmpdir>/.ts.sock.<port>; Linux caps socket paths at 107 bytes.
MAX_UNIX_SOCKET_PATH = 107
WORKER_PORT_MAX = 65535
# After SIGTERM the JVM stops its workers and takes a few seconds to exit.
STOP_GRACE_S = 20.0
PORTS_FREE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ThreadPlan:
    """How the server's cores are split: `workers` processes x `threads` intra-op threads."""

    workers: int
    threads: int


def thread_plan(cores: int, workers: int | None = None) -> ThreadPlan:
    """Splits `cores` between TorchServe workers and torch intra-op threads.

    Rule: by default one worker per core, one thread each. digitnet's forward pass on a
    batch is microseconds of compute, so a request's time goes to JSON parsing and
    validation in Python; separate worker processes run that in parallel, while extra
    intra-op threads would only add synchronisation. When `workers` is given (fewer than
    the cores), the remaining cores go to intra-op threads. workers x threads <= cores.

    Args:
        cores: CPUs the server may use (at least 1).
        workers: requested worker count; clamped to 1..cores.
    """
    cores = max(1, cores)
    chosen = cores if workers is None else min(max(1, workers), cores)
    return ThreadPlan(workers=chosen, threads=max(1, cores // chosen))


def plan_for(cores: Sequence[int] | None) -> ThreadPlan:
    """The plan start() uses: `cores` (or all usable ones), DIGITNET_TORCHSERVE_WORKERS
    overriding the worker count when set."""
    workers = os.environ.get(WORKERS_ENV)
    return thread_plan(len(cores or usable_cores()), int(workers) if workers else None)


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


def local_overrides(
    paths: ArtifactPaths, ports: Mapping[str, int], plan: ThreadPlan
) -> dict[str, str]:
    """What a local run changes in the production config: loopback addresses on the given
    ports, this machine's model store, and the worker count."""
    store = paths.model_store.resolve()
    name = paths.spec.name
    return {
        "inference_address": f"http://{LOOPBACK}:{ports['inference']}",
        "management_address": f"http://{LOOPBACK}:{ports['management']}",
        "metrics_address": f"http://{LOOPBACK}:{ports['metrics']}",
        "grpc_inference_address": LOOPBACK,
        "grpc_inference_port": str(ports["grpc_inference"]),
        "grpc_management_address": LOOPBACK,
        "grpc_management_port": str(ports["grpc_management"]),
        "model_store": str(store),
        "load_models": f"{name}={name}.mar",
        # Only archives directly inside this store; re.escape keeps the path literal.
        "allowed_urls": f"file://{re.escape(str(store))}/[^/]+[.]mar",
        # Worker count: model-config.yaml leaves it out so this setting applies.
        "default_workers_per_model": str(plan.workers),
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


class TorchServeStack:
    """TorchServe frontend (JVM) plus Python workers running services/torchserve/handler.py."""

    name = "torchserve"
    default_ports: Mapping[str, int] = {
        "inference": 8080,
        "management": 8081,
        "metrics": 8082,
        "grpc_inference": 7070,
        "grpc_management": 7071,
    }

    @staticmethod
    def _torchserve_bin() -> Path:
        # The console script next to this interpreter, so workers use the same venv.
        return Path(sys.executable).parent / "torchserve"

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
    ) -> ServerProcess:
        if not paths.mar.exists():
            raise FileNotFoundError(f"{paths.mar} is missing: run `make artifacts` first")
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
            derive_config(CONFIG_TEMPLATE.read_text(), local_overrides(paths, ports, plan))
        )
        name = paths.spec.name
        argv = [
            str(self._torchserve_bin()),
            "--foreground",
            "--ts-config", str(config_path),
            "--model-store", str(paths.model_store.resolve()),
            "--models", f"{name}={name}.mar",
            # No config snapshots: the derived config file is the whole state.
            "--ncs",
        ]
        env = {
            "LOG_LOCATION": str(run_dir / "logs"),
            "METRICS_LOCATION": str(run_dir / "logs"),
            # The launcher's pid file, the JVM's java.io.tmpdir (unpacked archives) and
            # the worker sockets (/tmp/.ts.sock.<port>) all default to /tmp and would
            # clash with any other TorchServe on the machine; each run gets its own.
            "TMPDIR": str(tmp_dir),
            "TEMP": str(tmp_dir),
            THREADS_ENV: str(plan.threads),
            "OMP_NUM_THREADS": str(plan.threads),
        }
        server = start_process(
            self.name, argv, run_dir / LOG_FILE, cwd=run_dir, env=env, cores=cores
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

    def model_ready(self, server: ServerProcess, model_name: str) -> bool:
        """True when the model has its minimum number of workers and all are READY
        (GET /models/<name> with the management key; /ping would say Healthy too early)."""
        token = read_tokens(self.run_dir(server)).management
        status = model_status(server.endpoints["management"], model_name, token)
        return workers_ready(status)

    def wait_ready(self, server: ServerProcess, timeout_s: float) -> float:
        model_name = self._model_name(server)
        try:
            return wait_until(
                lambda: self.model_ready(server, model_name),
                timeout_s,
                f"{self.name} model {model_name}",
                interval_s=0.25,
                alive=server.alive,
            )
        except (TimeoutError, RuntimeError) as err:
            raise type(err)(f"{err}\n--- {server.log_path} ---\n{server.log_tail()}") from None

    def _model_name(self, server: ServerProcess) -> str:
        props = read_properties((self.run_dir(server) / CONFIG_FILE).read_text())
        return props["load_models"].split("=", 1)[0]

    def clients(self, server: ServerProcess, paths: ArtifactPaths) -> list[Predictor]:
        tokens = read_tokens(self.run_dir(server))
        return [torchserve_rest(server.endpoints["inference"], paths.spec, tokens.inference)]

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


STACK = TorchServeStack()


def main() -> None:
    """Prints the derived local config for the default ports (a dry run of start())."""
    from digitnet.spec import ModelSpec
    from services.artifacts import DEFAULT_ARTIFACTS

    paths = ArtifactPaths(DEFAULT_ARTIFACTS, ModelSpec.from_env())
    plan = plan_for(None)
    overrides = local_overrides(paths, TorchServeStack.default_ports, plan)
    print(derive_config(CONFIG_TEMPLATE.read_text(), overrides), end="")
    print(f"# workers={plan.workers} threads/worker={plan.threads}", file=sys.stderr)


if __name__ == "__main__":
    main()
