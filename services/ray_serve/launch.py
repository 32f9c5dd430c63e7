"""Ray Serve's plugin: one server process (server.py) that starts a private local Ray
instance and Serve in it, on 127.0.0.1.

Processes, all started by the server process and all ended by stop():
    server.py (the Ray driver) -> gcs_server, raylet -> Ray workers: the Serve controller,
    the ingress and one replica per worker of the core split
    (ray::ServeReplica:digitnet:DigitNet), plus Ray's per-node agents. The ingress
    (settings.INGRESSES) is ours by default, Ray's high-throughput mode: HAProxy on the
    inference port (the haproxy process, run by the ray::HAProxyManager actor) sending
    each request to a replica's own HTTP port, with Serve's Python proxy as its fallback
    on a port of its own; or Serve's default, the Python proxy (ray::ProxyActor) on the
    inference port.
Ready means the application is RUNNING with every replica RUNNING (the status file the
server keeps, from serve.status()) and a replica answers /readyz through the ingress;
replicas load and warm their model before they take a request.

Nothing but the inference port is meant to be reached: the dashboard is off, Ray's node
address is 127.0.0.1 (GCS, raylet, agents, workers and the replicas' own HTTP ports bind
there), the metrics export port and HAProxy's stats and exporter are on 127.0.0.1, and
the gRPC proxy is not started.

Deployed the same way (services/ray_serve/Dockerfile runs server.py): the compose service
ray-serve and the k8s Deployment ray-serve (k8s/base/ray-serve.yaml), a single-node Ray
per pod whose ingress alone binds 0.0.0.0 (DIGITNET_RAY_HTTP_HOST); on clusters with
KubeRay, the optional RayService of k8s/components/rayservice runs the same deployment
(deployment.app_builder) on a head and a worker group, behind Serve's Python proxy (its
pods' environment would need the ingress's variables, which server.py sets here).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import requests

from digitnet.artifacts import ArtifactPaths
from digitnet.clients import FLASK_READY_PATH, TFS_PREDICT_PATH, Predictor, RestClient
from digitnet.noop import NOOP_ENV, noop_requested
from digitnet.spec import BatchingPolicy, ModelSpec, ServingLimits
from digitnet.wire import BINARY, JSON
from services.process import (
    LOOPBACK,
    ServerProcess,
    alive,
    kill_processes,
    port_is_free,
    start_process,
    usable_cores,
    wait_until,
)
from services.ray_serve.settings import (
    DEPLOYMENT_NAME,
    DEVICE_CPU,
    DEVICE_ENV,
    INGRESS_ENV,
    LAUNCHER_PID_ENV,
    METRICS_ENV,
    RAY_METRICS_ENV,
    REPLICAS_ENV,
    SERVE_PROXY,
    THREADS_ENV,
    WARMUP_ENV,
    ServeSettings,
    all_replicas_running,
    ingress_from_env,
    parallelism_from_env,
    ray_metrics_from_env,
)
from services.stack import CPU, CUDA, DEPLOYMENT_GRACE_S, REST, ServingStack, SignalPlan

REPO_ROOT = Path(__file__).resolve().parents[2]
HTTP = "http"
METRICS = "metrics"
LOG_FILE = "ray_serve.log"
STATUS_FILE = "serve_status.json"
# Holds the path of the run's Ray temp dir, so stop() can remove it (also after a
# restart of the harness, from ServerProcess.from_json).
TEMP_DIR_FILE = "ray_temp_dir"
# Where Ray's session logs are copied before the temp dir is removed.
LOGS_COPY = "ray-logs"
# Parent of the Ray temp dirs: short, since Ray puts Unix sockets under them (Linux caps
# socket paths at 107 bytes; pytest's tmp paths alone come close).
TEMP_ROOT = Path("/tmp")
MAX_TEMP_DIR_CHARS = 40
# SIGTERM -> serve.shutdown() (replicas drain 5 s at most) -> ray.shutdown(): measured
# well under this; what is still running after it is killed.
STOP_GRACE_S = 25.0
PROBE_TIMEOUT_S = 2.0
PORTS_FREE_TIMEOUT_S = 15.0
# Process titles Ray gives its workers (setproctitle), as psutil reads them.
REPLICA_TITLE = "ray::ServeReplica"
ROLE_TITLES = (
    (REPLICA_TITLE, "serve replica"),
    ("ray::ProxyActor", "serve proxy"),
    ("ray::HAProxyManager", "haproxy manager"),
    ("ray::ServeController", "serve controller"),
    ("ray::IDLE", "idle ray worker"),
)
HAPROXY_ROLE = "haproxy"
ROLE_NAMES = {"gcs_server": "gcs", "raylet": "raylet", "haproxy": HAPROXY_ROLE}
ROLE_SCRIPTS = (
    ("services.ray_serve.server", "server (ray driver)"),
    ("dashboard/agent.py", "dashboard agent"),
    ("runtime_env/agent/main.py", "runtime env agent"),
    ("log_monitor.py", "log monitor"),
)


def run_dir_of(server: ServerProcess) -> Path:
    """The folder start() ran the server in (its log, status file and temp dir record)."""
    return server.log_path.parent


def read_status(server: ServerProcess) -> dict[str, Any]:
    """The status file the server keeps: the application's state from serve.status(), the
    settings it runs with and the batching read back from a replica ({} before the
    server wrote it)."""
    try:
        return json.loads((run_dir_of(server) / STATUS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def application_running(status: Mapping[str, Any]) -> bool:
    """RUNNING, with as many RUNNING replicas as the settings ask for."""
    return all_replicas_running(status.get("application", {}),
                                status.get("settings", {}).get("replicas", 1))  # fmt: skip


def run_processes(launcher_pid: int) -> list[psutil.Process]:
    """Every live process of one run: the server and whatever Ray started, found by the
    marker the server put in their environment, or by the session start_process gave it
    (whichever a process still has), however far they were re-parented."""
    found = []
    marker = str(launcher_pid)
    for proc in psutil.process_iter():
        try:
            if proc.pid == launcher_pid or os.getsid(proc.pid) == launcher_pid:
                found.append(proc)
            elif proc.environ().get(LAUNCHER_PID_ENV) == marker:
                found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return [proc for proc in found if alive(proc)]


class RayServeStack(ServingStack):
    """A Ray Serve application serving the TorchScript model with @serve.batch."""

    name = "ray_serve"
    # Beside flask_torch's 8000 and flask_tf's 8001, so `make deploy-local` runs all.
    default_ports: Mapping[str, int] = {HTTP: 8002, METRICS: 8003}
    protocol_ports = {REST: HTTP}
    locust_users = {REST: "RestPredictUser"}
    stop_grace_s = STOP_GRACE_S
    # Each ask reads the status file and, once RUNNING, asks a replica through the proxy.
    ready_poll_s = 0.25
    floor_path = "TorchScript"
    framework = "pytorch"
    server_kind = "Ray Serve"
    # On CUDA Ray schedules one GPU and the replicas share it (settings.deployment_options).
    devices = (CPU, CUDA)
    server_batching = True
    # @serve.batch is opt-in: a deployment without it serves one request per call; the
    # high-throughput ingress too: Serve's Python proxy is what serve.start gives; Ray's
    # metrics pipeline is on unless turned off.
    default_preset = {"DIGITNET_BATCHING": "off", INGRESS_ENV: SERVE_PROXY,
                      METRICS_ENV: "on"}  # fmt: skip
    tuning_limit = (
        "on one server core HAProxy, Serve's controller and the replica share it; where "
        "no requests wait together for a batch to form, batching only adds its wait"
    )
    thread_settings = (REPLICAS_ENV, THREADS_ENV, "OMP_NUM_THREADS")
    warmup_off_env = {WARMUP_ENV: "0"}
    # A second route of the same deployment, behind the same proxy (deployment.py).
    noop_env = {NOOP_ENV: "1"}
    # deployment.py dispatches on Content-Type, as the Flask app does.
    codecs = (JSON, BINARY)
    workers_not_applicable = "Serve always has replica processes"
    compose_service = "ray-serve"
    image = ("digitnet-ray-serve", "services/ray_serve/Dockerfile")
    k8s_deployment = "ray-serve"
    k8s_container = "ray-serve"
    # Ray's own ports (its defaults; server.py binds every one of them to 127.0.0.1 in the
    # pod, and the dashboard and Ray client are not even started): never in a Service, a
    # containerPort or a NetworkPolicy rule of the Deployment.
    private_ports = {
        8003: "metrics export", 6379: "gcs", 8265: "dashboard", 10001: "ray client",
        52365: "dashboard agent",
    }

    def available(self) -> tuple[bool, str]:
        missing = [m for m in ("ray", "starlette", "torch")
                   if importlib.util.find_spec(m) is None]  # fmt: skip
        if missing:
            return False, (f"missing Python packages {missing}: install ray[serve]==2.60.0 "
                           "(scripts/bootstrap_venv.sh)")  # fmt: skip
        return True, ""

    def settings_for(
        self,
        paths: ArtifactPaths,
        run_dir: Path,
        ports: Mapping[str, int],
        cores: Sequence[int] | None,
        temp_dir: Path,
        noop: bool = False,
    ) -> ServeSettings:
        """What the server will run with: replicas x threads from the cores by the one
        rule (services.cores), limits and batching from digitnet.spec's variables, and the
        no-op twin when `noop`."""
        return ServeSettings(
            model_path=paths.torchscript.resolve(),
            http_port=ports[HTTP],
            metrics_port=ports[METRICS],
            temp_dir=temp_dir,
            status_file=(run_dir / STATUS_FILE).resolve(),
            split=parallelism_from_env(len(cores) if cores else len(usable_cores())),
            spec=paths.spec,
            limits=ServingLimits.from_env(),
            policy=BatchingPolicy.from_env(),
            noop=noop,
            ingress=ingress_from_env(),
            ray_metrics=ray_metrics_from_env(),
        )

    def start(
        self,
        paths: ArtifactPaths,
        run_dir: Path,
        ports: Mapping[str, int],
        cores: Sequence[int] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ServerProcess:
        if not paths.torchscript.exists():
            raise FileNotFoundError(f"{paths.torchscript} missing: run `make artifacts`")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / STATUS_FILE).unlink(missing_ok=True)
        temp_dir = Path(tempfile.mkdtemp(prefix="dn-ray-", dir=TEMP_ROOT))
        if len(str(temp_dir)) > MAX_TEMP_DIR_CHARS:
            raise ValueError(f"Ray temp dir {temp_dir} is too long for Ray's socket paths")
        (run_dir / TEMP_DIR_FILE).write_text(str(temp_dir))
        noop = noop_requested(env)
        settings = self.settings_for(paths, run_dir, ports, cores, temp_dir, noop)
        server_env = {
            **settings.to_env(),
            # Every temp file of Ray's under the run's own dir, none in /tmp/ray.
            "RAY_TMPDIR": str(temp_dir),
            "RAY_USAGE_STATS_ENABLED": "0",
            # Ray workers import the deployment from the repository.
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
            **(env or {}),
        }
        argv = [sys.executable, "-m", "services.ray_serve.server"]
        server = start_process(self.name, argv, run_dir / LOG_FILE, cwd=REPO_ROOT,
                               env=server_env, cores=cores)  # fmt: skip
        server.endpoints = {
            HTTP: f"http://{LOOPBACK}:{ports[HTTP]}",
            METRICS: f"http://{LOOPBACK}:{ports[METRICS]}",
        }
        return server

    def serve_status(self, server: ServerProcess) -> dict[str, Any]:
        """The server's status file (see read_status)."""
        return read_status(server)

    def serving_config(self, server: ServerProcess) -> dict[str, Any]:
        # What the server read back once it ran (server.py): one replica's @serve.batch
        # and torch threads, asked through a DeploymentHandle, and the replicas Serve
        # reports RUNNING; not the settings it was asked to run with.
        status = read_status(server)
        batching = status.get("batching") or {}
        if not batching:
            return {}
        wait_s = batching.get("batch_wait_timeout_s")
        deployment = status.get("application", {}).get("deployments", {}).get(
            DEPLOYMENT_NAME, {})
        return {
            "ingress": self.ingress(server),
            "ray_metrics": self.ray_metrics(server),
            "max_batch_size": batching.get("max_batch_size"),
            "batch_wait_ms": None if wait_s is None else round(wait_s * 1000.0, 3),
            "max_concurrent_batches": batching.get("max_concurrent_batches"),
            "torch_threads": batching.get("torch_threads"),
            "replicas": deployment.get("replica_states", {}).get("RUNNING"),
        }

    def ingress(self, server: ServerProcess) -> str:
        """What holds the inference port, read from the run's processes: "haproxy" where
        an HAProxy process of this run holds it, else Serve's Python proxy."""
        port = urlsplit(server.endpoints[HTTP]).port
        for proc in run_processes(server.pid):
            try:
                if self.process_role(proc) != HAPROXY_ROLE:
                    continue
                if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
                       for c in proc.net_connections(kind="inet")):  # fmt: skip
                    return "haproxy"
            except psutil.Error:
                continue
        return "serve proxy"

    def fds_per_request(self, server: ServerProcess) -> int:
        # Behind HAProxy a request in flight holds the client's socket and HAProxy's to a
        # replica in HAProxy, and the replica's accepted one; Serve's proxy hands it to
        # the replica by an actor call over a channel it keeps anyway.
        return 3 if self.ingress(server) == "haproxy" else 1

    def ray_metrics(self, server: ServerProcess) -> str | None:
        """Whether Ray's metrics pipeline runs, read from a replica process's environment
        (Ray reads RAY_enable_metrics_collection there when the process starts; unset, it
        is on): "on", "off", or None without a replica to read."""
        for proc in self.workers(server):
            try:
                value = proc.environ().get(RAY_METRICS_ENV, "1")
            except psutil.Error:
                continue
            return "off" if value.strip().lower() in ("0", "false") else "on"
        return None

    def noop_path(self, server: ServerProcess) -> str | None:
        # Read back from the status file: the settings the server process runs with.
        return read_status(server).get("settings", {}).get("noop_path")

    def model_ready(self, server: ServerProcess) -> bool:
        """The application RUNNING with all replicas, and a replica answering /readyz."""
        status = read_status(server)
        if status.get("application", {}).get("status") == "FAILED":
            raise _Failed(status.get("error", "failed"))
        if not application_running(status):
            return False
        response = requests.get(server.endpoints[HTTP] + FLASK_READY_PATH,
                                timeout=PROBE_TIMEOUT_S)  # fmt: skip
        return response.status_code == 200 and response.json().get("status") == "ready"

    def wait_ready(self, server: ServerProcess, timeout_s: float,
                   poll_s: float | None = None) -> float:  # fmt: skip
        failure: list[str] = []

        def ready_or_failed() -> bool:
            try:
                return self.model_ready(server)
            except _Failed as err:
                failure.append(str(err))
                return True

        try:
            waited = wait_until(ready_or_failed, timeout_s, self.name,
                                interval_s=self.poll_interval(poll_s),
                                alive=server.alive)  # fmt: skip
        except (TimeoutError, RuntimeError) as err:
            raise type(err)(f"{err}\n--- {server.log_path} ---\n{server.log_tail()}") from None
        if failure:
            raise RuntimeError(f"{self.name}: {failure[0]}\n{server.log_tail()}")
        return waited

    def device_env(self, device: str) -> dict[str, str]:
        if device == CUDA:
            return {DEVICE_ENV: CUDA}
        return {**super().device_env(device), DEVICE_ENV: DEVICE_CPU}

    def k8s_args(self, cores: int) -> list[str] | None:
        # The image's CMD runs server.py, which takes no arguments: the core split reaches
        # it as DIGITNET_RAY_REPLICAS / DIGITNET_RAY_THREADS in the container's env
        # (tests/k8s check those against the CPU limit), so there are no args to compare.
        return None

    def clients(self, server: ServerProcess, paths: ArtifactPaths) -> list[Predictor]:
        return [self.remote_client(REST, server.endpoints[HTTP], paths.spec)]

    def remote_client(
        self, protocol: str, url: str, spec: ModelSpec, secret: str | None = None
    ) -> Predictor:
        return RestClient(f"{self.name}/{REST}", url, TFS_PREDICT_PATH.format(name=spec.name),
                          spec)  # fmt: skip

    def stop(self, server: ServerProcess) -> None:
        """SIGTERM to the server (it shuts Serve and Ray down), then SIGKILL for anything
        of the run still alive after the grace, then the ports and the temp dir."""
        try:
            root = psutil.Process(server.pid)
            root.terminate()
            if server.popen is not None:
                server.popen.wait(timeout=STOP_GRACE_S)
            else:
                root.wait(timeout=STOP_GRACE_S)
        except (psutil.NoSuchProcess, psutil.TimeoutExpired, subprocess.TimeoutExpired):
            pass  # gone already, or killed below with the rest
        # Whatever Ray left (a worker mid-start, or everything after a SIGKILLed server).
        kill_processes(run_processes(server.pid))
        if server.popen is not None:
            server.popen.wait(timeout=5)
        ports = [urlsplit(url).port for url in server.endpoints.values()]
        wait_until(lambda: all(port_is_free(p) for p in ports if p), PORTS_FREE_TIMEOUT_S,
                   f"{self.name} ports {ports} released")  # fmt: skip
        self._remove_temp_dir(run_dir_of(server))

    @staticmethod
    def _remove_temp_dir(run_dir: Path) -> None:
        record = run_dir / TEMP_DIR_FILE
        if not record.exists():
            return
        temp_dir = Path(record.read_text().strip())
        logs = temp_dir / "session_latest" / "logs"
        if logs.is_dir() and not (run_dir / LOGS_COPY).exists():
            shutil.copytree(logs, run_dir / LOGS_COPY, symlinks=True,
                            ignore_dangling_symlinks=True, dirs_exist_ok=True)  # fmt: skip
        shutil.rmtree(temp_dir, ignore_errors=True)
        record.unlink()

    def workers(self, server: ServerProcess) -> list[psutil.Process]:
        # The replicas (server -> raylet -> worker): Serve's controller replaces a killed
        # one by itself.
        try:
            tree = psutil.Process(server.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [p for p in tree if alive(p) and self.process_role(p) == "serve replica"]

    def process_role(self, proc: psutil.Process) -> str | None:
        try:
            cmdline = " ".join(proc.cmdline())
            name = proc.name()
        except psutil.Error:
            return None
        for title, role in ROLE_TITLES:
            if cmdline.startswith(title):
                return role
        if name in ROLE_NAMES:
            return ROLE_NAMES[name]
        for script, role in ROLE_SCRIPTS:
            if script in cmdline:
                return role
        return None

    def signal_plan(self) -> SignalPlan:
        # The image runs `tini -- python -m services.ray_serve.server`: tini (no -g) hands
        # SIGTERM to the server alone, which shuts Serve and then Ray down (STOP_GRACE_S
        # at most, inside the container's grace); Ray's processes get no signal of their
        # own that would race that shutdown.
        return SignalPlan(False, DEPLOYMENT_GRACE_S,
                          "container stop grace (docker-compose.yml, k8s/base)")


class _Failed(Exception):
    """The server reported that the application failed to start."""


STACK = RayServeStack()
