"""Runs the Flask + gunicorn stack as local processes (the LocalStack for "flask_torch")."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import requests

from digitnet.clients import FLASK_READY_PATH, Predictor, flask_rest
from services.artifacts import ArtifactPaths
from services.flask_torch.settings import (
    BIND_ENV,
    MODEL_PATH_ENV,
    TORCH_THREADS_ENV,
    WORKERS_ENV,
    parallelism_from_env,
)
from services.process import (
    LOOPBACK,
    ServerProcess,
    port_is_free,
    start_process,
    stop_process_tree,
    usable_cores,
    wait_until,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
GUNICORN_CONF = REPO_ROOT / "services" / "flask_torch" / "gunicorn.conf.py"
APP_FACTORY = "services.flask_torch.app:create_app()"
HTTP = "http"
PROBE_TIMEOUT_S = 2.0
PORT_RELEASE_TIMEOUT_S = 15.0


def _spec_env(paths: ArtifactPaths) -> dict[str, str]:
    """The DIGITNET_* variables that make the server's ModelSpec equal `paths.spec`."""
    spec = paths.spec
    return {
        "DIGITNET_NAME": spec.name,
        "DIGITNET_SIDE": str(spec.side),
        "DIGITNET_CHANNELS": ",".join(str(c) for c in spec.channels),
        "DIGITNET_VERSION": str(spec.version),
    }


def _port(server: ServerProcess) -> int:
    port = urlsplit(server.endpoints[HTTP]).port
    if port is None:
        raise ValueError(f"{server.name}: endpoint {server.endpoints[HTTP]} has no port")
    return port


class FlaskTorchStack:
    """gunicorn (gevent workers) serving services.flask_torch.app on 127.0.0.1."""

    name = "flask_torch"
    default_ports: Mapping[str, int] = {HTTP: 8000}

    def available(self) -> tuple[bool, str]:
        missing = [m for m in ("flask", "gunicorn", "torch") if importlib.util.find_spec(m) is None]
        if missing:
            return False, f"missing Python packages {missing}: run scripts/bootstrap_venv.sh"
        return True, ""

    def start(
        self,
        paths: ArtifactPaths,
        run_dir: Path,
        ports: Mapping[str, int],
        cores: Sequence[int] | None = None,
    ) -> ServerProcess:
        if not paths.torchscript.is_file():
            raise FileNotFoundError(f"{paths.torchscript} missing: run `make artifacts`")
        port = ports[HTTP]
        # FLASK_TORCH_WORKERS / FLASK_TORCH_THREADS still override, checked against the cores.
        split = parallelism_from_env(len(cores) if cores else len(usable_cores()))
        env = {
            **_spec_env(paths),
            MODEL_PATH_ENV: str(paths.torchscript.resolve()),
            BIND_ENV: f"{LOOPBACK}:{port}",
            WORKERS_ENV: str(split.workers),
            TORCH_THREADS_ENV: str(split.torch_threads),
        }
        # `python -m gunicorn` with this interpreter: the venv's gunicorn, whatever PATH says.
        argv = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), APP_FACTORY]
        server = start_process(
            self.name, argv, run_dir / f"{self.name}.log", cwd=REPO_ROOT, env=env, cores=cores
        )
        server.endpoints = {HTTP: f"http://{LOOPBACK}:{port}"}
        return server

    def wait_ready(self, server: ServerProcess, timeout_s: float) -> float:
        url = server.endpoints[HTTP] + FLASK_READY_PATH
        failure: list[str] = []

        def ready_or_failed() -> bool:
            response = requests.get(url, timeout=PROBE_TIMEOUT_S)
            if response.status_code == 503 and response.json().get("reason") == "load_failed":
                failure.append(response.json()["error"])
                return True
            return response.status_code == 200

        try:
            waited = wait_until(ready_or_failed, timeout_s, self.name, alive=server.alive)
        except (TimeoutError, RuntimeError) as err:
            raise type(err)(f"{err}\n--- {server.log_path} ---\n{server.log_tail()}") from None
        if failure:
            raise RuntimeError(f"{self.name}: {failure[0]}\n{server.log_tail()}")
        return waited

    def clients(self, server: ServerProcess, paths: ArtifactPaths) -> list[Predictor]:
        return [flask_rest(server.endpoints[HTTP], paths.spec)]

    def stop(self, server: ServerProcess) -> None:
        stop_process_tree(server.pid)
        if server.popen is not None:
            server.popen.wait(timeout=PORT_RELEASE_TIMEOUT_S)
        port = _port(server)
        wait_until(lambda: port_is_free(port), PORT_RELEASE_TIMEOUT_S, f"{self.name} port {port}")


STACK = FlaskTorchStack()
