"""The Flask + gunicorn stack's plugin: gunicorn (gevent workers) serving the Flask app
factory on 127.0.0.1.

`FlaskStack` is written for any model behind services/flask_torch/app.py: a stack that
serves another model format through the same app, codec and gunicorn config subclasses it
and names its app factory, model file and floor (services/flask_tf does).
"""

from __future__ import annotations

import importlib.util
import re
import runpy
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import requests

from digitnet.artifacts import ArtifactPaths
from digitnet.clients import FLASK_READY_PATH, Predictor, flask_rest
from digitnet.noop import NOOP_ENV, NOOP_PATH, noop_enabled
from digitnet.spec import ModelSpec
from digitnet.wire import BINARY, JSON
from services.flask_torch.settings import (
    BIND_ENV,
    DEVICE_ENV,
    MODEL_PATH_ENV,
    TORCH_THREADS_ENV,
    WARMUP_ENV,
    WORKERS_ENV,
    parallelism_from_env,
)
from services.guard import GUARD_ENV, OFF
from services.process import (
    LOOPBACK,
    ServerProcess,
    alive,
    port_is_free,
    start_process,
    stop_process_tree,
    usable_cores,
    wait_until,
)
from services.stack import CPU, CUDA, ServingStack, SignalPlan

REPO_ROOT = Path(__file__).resolve().parents[2]
GUNICORN_CONF = REPO_ROOT / "services" / "flask_torch" / "gunicorn.conf.py"
HTTP = "http"
PROBE_TIMEOUT_S = 2.0
PORT_RELEASE_TIMEOUT_S = 15.0


def gunicorn_graceful_timeout() -> float:
    """graceful_timeout from services/flask_torch/gunicorn.conf.py, as gunicorn reads it."""
    return float(runpy.run_path(str(GUNICORN_CONF))["graceful_timeout"])


def _port(server: ServerProcess) -> int:
    port = urlsplit(server.endpoints[HTTP]).port
    if port is None:
        raise ValueError(f"{server.name}: endpoint {server.endpoints[HTTP]} has no port")
    return port


def _is_gunicorn(proc: psutil.Process) -> bool:
    try:
        return "gunicorn" in " ".join(proc.cmdline())
    except psutil.Error:
        return False


class FlaskStack(ServingStack):
    """gunicorn serving `app_factory`; subclasses set the name, factory and model file."""

    default_ports: Mapping[str, int] = {HTTP: 8000}
    protocol_ports = {"rest": HTTP}
    app_factory = "services.flask_torch.app:create_app()"
    # Python packages the workers import; available() names the missing ones.
    required_modules: tuple[str, ...] = ("flask", "gunicorn")
    thread_settings = (WORKERS_ENV, TORCH_THREADS_ENV, "OMP_NUM_THREADS")
    stop_grace_s = PORT_RELEASE_TIMEOUT_S
    server_kind = "Flask + gunicorn"
    warmup_off_env = {WARMUP_ENV: "0"}
    # The app registers its no-op route (same gunicorn config, workers and port) only with
    # this in its environment.
    noop_env = {NOOP_ENV: "1"}
    # gunicorn's default worker class (sync); workers and threads follow the same core rule
    # either way (gunicorn's default of one worker is what one core gets).
    default_preset = {"GUNICORN_CMD_ARGS": "--worker-class sync"}
    tuning_limit = (
        "a worker per core runs one request at a time, so its throughput is its CPU cost "
        "per request, which no worker class multiplies; ours buys the tail (arrival order) "
        "and immunity to slow clients (gevent), not capacity"
    )
    # The app dispatches on Content-Type (services/flask_torch/app.py), whatever the model.
    codecs = (JSON, BINARY)
    # loadtests.own_code calls the app factory's WSGI app in process.
    in_process = "wsgi"

    def model_file(self, paths: ArtifactPaths) -> Path:
        raise NotImplementedError

    def app_env(self, paths: ArtifactPaths, cores: Sequence[int] | None = None,
                env: Mapping[str, str] | None = None) -> dict[str, str]:  # fmt: skip
        """What the app factory reads (the model's spec and file, the worker and thread
        split for `cores`), `env` over it: gunicorn's and loadtests.own_code's."""
        model = self.model_file(paths)
        if not model.exists():
            raise FileNotFoundError(f"{model} missing: run `make artifacts`")
        # FLASK_TORCH_WORKERS / FLASK_TORCH_THREADS still override, checked against the cores.
        split = parallelism_from_env(len(cores) if cores else len(usable_cores()))
        return {
            **paths.spec.env(),
            MODEL_PATH_ENV: str(model.resolve()),
            WORKERS_ENV: str(split.workers),
            TORCH_THREADS_ENV: str(split.threads),
            **(env or {}),
        }

    def available(self) -> tuple[bool, str]:
        missing = [m for m in self.required_modules if importlib.util.find_spec(m) is None]
        if missing:
            return False, f"missing Python packages {missing}: run scripts/bootstrap_venv.sh"
        return True, ""

    def start(
        self,
        paths: ArtifactPaths,
        run_dir: Path,
        ports: Mapping[str, int],
        cores: Sequence[int] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ServerProcess:
        port = ports[HTTP]
        server_env = self.app_env(paths, cores, {BIND_ENV: f"{LOOPBACK}:{port}", **(env or {})})
        # `python -m gunicorn` with this interpreter: the venv's gunicorn, whatever PATH says.
        argv = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), self.app_factory]
        server = start_process(
            self.name, argv, run_dir / f"{self.name}.log", cwd=REPO_ROOT, env=server_env,
            cores=cores,
        )
        server.endpoints = {HTTP: f"http://{LOOPBACK}:{port}"}
        return server

    def wait_ready(self, server: ServerProcess, timeout_s: float,
                   poll_s: float | None = None) -> float:  # fmt: skip
        url = server.endpoints[HTTP] + FLASK_READY_PATH
        failure: list[str] = []

        def ready_or_failed() -> bool:
            response = requests.get(url, timeout=PROBE_TIMEOUT_S)
            if response.status_code == 503 and response.json().get("reason") == "load_failed":
                failure.append(response.json()["error"])
                return True
            return response.status_code == 200

        try:
            waited = wait_until(ready_or_failed, timeout_s, self.name,
                                interval_s=self.poll_interval(poll_s), alive=server.alive)
        except (TimeoutError, RuntimeError) as err:
            raise type(err)(f"{err}\n--- {server.log_path} ---\n{server.log_tail()}") from None
        if failure:
            raise RuntimeError(f"{self.name}: {failure[0]}\n{server.log_tail()}")
        return waited

    def clients(self, server: ServerProcess, paths: ArtifactPaths) -> list[Predictor]:
        return [self.remote_client("rest", server.endpoints[HTTP], paths.spec)]

    def remote_client(
        self, protocol: str, url: str, spec: ModelSpec, secret: str | None = None
    ) -> Predictor:
        client = flask_rest(url, spec)
        client.label = f"{self.name}/rest"
        return client

    def noop_path(self, server: ServerProcess) -> str | None:
        # Read back from the master's environment (the workers inherit it): what runs,
        # not what was meant to run. ModelSpec.env() always names the model there.
        try:
            environ = psutil.Process(server.pid).environ()
        except psutil.Error:
            return None
        if not noop_enabled(environ.get(NOOP_ENV)):
            return None
        return NOOP_PATH.format(name=environ["DIGITNET_NAME"])

    def stop(self, server: ServerProcess) -> None:
        stop_process_tree(server.pid)
        if server.popen is not None:
            server.popen.wait(timeout=PORT_RELEASE_TIMEOUT_S)
        port = _port(server)
        wait_until(lambda: port_is_free(port), PORT_RELEASE_TIMEOUT_S, f"{self.name} port {port}")

    def workers(self, server: ServerProcess) -> list[psutil.Process]:
        # gunicorn forks its workers straight from the master; the nginx front
        # (services/guard.py) is the master's child too, and no worker.
        return [p for p in psutil.Process(server.pid).children() if alive(p) and _is_gunicorn(p)]

    workers_not_applicable = "gunicorn always has worker processes"

    def serving_config(self, server: ServerProcess) -> dict[str, Any]:
        # gunicorn names its worker class in its log; the workers' environment holds the
        # thread count and admission switch each worker read at start.
        found = re.search(r"Using worker: (\S+)", server.log_tail(400))
        workers = self.workers(server)
        try:
            environ = workers[0].environ() if workers else {}
        except psutil.Error:
            environ = {}
        return {
            "worker_class": found.group(1) if found else None,
            "workers": len(workers),
            "torch_threads": environ.get(TORCH_THREADS_ENV),
            "admission": environ.get("DIGITNET_ADMISSION", "off"),
            "arrival_order": environ.get("DIGITNET_ADMIT_ORDER", "on"),
            "front": environ.get(GUARD_ENV, OFF),
        }

    def process_role(self, proc: psutil.Process) -> str | None:
        try:
            if not _is_gunicorn(proc):
                return "nginx front"
            parent = proc.parent()
            is_worker = parent is not None and _is_gunicorn(parent)
            return "gunicorn worker" if is_worker else "gunicorn master"
        except psutil.Error:
            return None

    def signal_plan(self) -> SignalPlan:
        # The image runs gunicorn as PID 1 (exec-form CMD): `docker stop` signals the master,
        # which stops accepting and gives its workers graceful_timeout to finish.
        return SignalPlan(False, gunicorn_graceful_timeout(),
                          "gunicorn graceful_timeout (services/flask_torch/gunicorn.conf.py)")


class FlaskTorchStack(FlaskStack):
    """The TorchScript model behind the Flask app."""

    name = "flask_torch"
    required_modules = ("flask", "gunicorn", "torch")
    devices = (CPU, CUDA)
    floor_path = "TorchScript"
    compose_service = "flask-torch"
    image = ("digitnet-flask-torch", "services/flask_torch/Dockerfile")
    k8s_deployment = "flask-torch"

    def model_file(self, paths: ArtifactPaths) -> Path:
        return paths.torchscript

    def device_env(self, device: str) -> dict[str, str]:
        if device == CUDA:
            return {DEVICE_ENV: CUDA}
        return {**super().device_env(device), DEVICE_ENV: CPU}


STACK = FlaskTorchStack()
