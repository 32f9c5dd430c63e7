"""The stack plugin: everything the harness needs to know about one serving stack.

Each `services/<stack>/` folder defines one `ServingStack` subclass and one instance of it
named `STACK`; `services.registry` lists the folders. Nothing outside a stack's folder names
the stack: `make deploy-local`, parity, the load runner, the report, the robustness matrix,
faults, soak and the k8s validation iterate over the registry and ask the plugin.

What a plugin declares, in one object:
  artifacts   build(paths) and artifact_files(paths): what it makes from the shared model
  lifecycle   available(), start(...), wait_ready(...), stop(...), stop_grace_s,
              ready_poll_s
  protocols   locust_users (protocol -> Locust user class), clients(...) for a running
              server, remote_client(...) for one elsewhere (a pod); load targets are
              derived from the clients (path, headers and token as data)
  telemetry   metrics_url(server) and server_timings(before, after) from its own metrics,
              serving_config(server): its configuration as the running server reports it
  processes   workers(server) for the worker-kill fault (and lost_on_worker_death, the
              requests it may never answer then), process_role(proc) for soak,
              signal_plan() for SIGTERM, thread_settings for the run environment
  validation  validates_with_codec, front_answers: how its answers to bad input are judged;
              codecs: the predict body codecs it speaks (digitnet.wire)
  floor       floor_path: the in-process baseline its served latency is compared with;
              noop_env and noop_path(server): its no-op twin on the same server (the
              framework's own floor, digitnet/noop.py), or noop_why
  deployment  compose_service, k8s_deployment, k8s_container, private_ports,
              single_replica_why, k8s_args(cores), generated_files()
  devices     devices: where it can compute (the load runner's cpu/cuda rows), and
              reports_device: whether its replies name the device they ran on
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from digitnet.artifacts import ArtifactPaths
from digitnet.clients import Predictor
from digitnet.spec import ModelSpec
from digitnet.wire import JSON
from services.process import ServerProcess, stop_process_tree

REST = "rest"
GRPC = "grpc"
CPU = "cpu"
CUDA = "cuda"
# Seconds between SIGTERM and SIGKILL that docker-compose.yml (stop_grace_period) and
# k8s/base (terminationGracePeriodSeconds) give every container.
DEPLOYMENT_GRACE_S = 30.0


@dataclass(frozen=True)
class SignalPlan:
    """Who gets SIGTERM, as the stack's container runtime would send it, and the grace."""

    process_group: bool  # True: the whole group (tini -g), False: the main process only
    grace_s: float
    grace_source: str


class ServingStack:
    """Base class of every stack plugin; subclasses override what differs.

    The defaults describe a stack with one REST protocol, no metrics, no separate worker
    processes, that validates requests with the shared codec and runs on the CPU.
    """

    name: str = ""
    # Port names and the defaults `make deploy-local` uses; tests and runs pass free ports.
    default_ports: Mapping[str, int] = {}
    # Protocol -> the Locust user class (in loadtests/locustfile.py) that speaks it; the
    # keys are the protocols the stack offers, in the order its clients() returns them.
    locust_users: Mapping[str, str] = {REST: "RestPredictUser"}
    # Protocol -> the name in default_ports it is served on (compose publishes the
    # defaults on 127.0.0.1, so `make deploy-local` in compose mode reaches them there).
    protocol_ports: Mapping[str, str] = {}
    # How long stop() waits after SIGTERM before it kills what is left.
    stop_grace_s: float = 15.0
    # How often wait_ready asks whether the model can answer, unless the caller says (each
    # ask is a request the starting server answers; the cold start asks more often, for
    # its time to ready is only as fine as this).
    ready_poll_s: float = 0.1
    # True: the stack validates with digitnet.codec, so the robustness matrix judges its
    # answers against the codec's; False: they are recorded as they are (TF Serving).
    validates_with_codec: bool = True
    # Robustness-matrix case name -> why the stack's front end (before our code runs)
    # answers it without the codec's JSON error; the status must still match.
    front_answers: Mapping[str, str] = {}
    # The predict body codecs it accepts and answers in (digitnet.wire names: "json",
    # "binary"); the robustness matrix skips, with the reason, cases of any other codec.
    codecs: tuple[str, ...] = (JSON,)
    # The in-process baseline (loadtests.baselines path label) behind this stack.
    floor_path: str = "TorchScript"
    # Environment for start() that turns on its no-op twin (digitnet/noop.py): the same
    # server answering a fixed reply on noop_path. None when it has none, and why. Off by
    # default, so every other run (and every image) serves exactly the production set-up.
    noop_env: Mapping[str, str] | None = None
    noop_why: str = "no no-op twin is implemented for this stack"
    # The framework it runs the model with, and whether the server is the framework's own
    # dedicated server or our Flask app: the report's framework x server table.
    framework: str = "pytorch"
    server_kind: str = "dedicated server"
    devices: tuple[str, ...] = (CPU,)
    # Environment (set where the stack starts) that runs it as its documentation gives it
    # without tuning, for the fair fight (loadtests/fair.py): None when ours is that
    # already, and default_preset_why says so.
    default_preset: Mapping[str, str] | None = None
    default_preset_why: str = "its configuration here is the out-of-the-box one"
    # What our configuration can and cannot change about its capacity: the fair fight's
    # report gives it where ours misses the goal against the default.
    tuning_limit: str = ""
    # Whether it merges concurrent requests into one forward pass under
    # digitnet.spec.BatchingPolicy (read from DIGITNET_BATCH* where it starts): the
    # batching-policy sweep (loadtests/batching.py) runs these.
    server_batching: bool = False
    # Whether every answered prediction names the device it ran on (digitnet.codec's
    # DEVICE_HEADER), which the load runner reads back before each point; if not, why.
    reports_device: bool = True
    unreported_device_why: str = ""
    # Environment that turns its model warm-up off (the cold-start runs measure the first
    # request with and without it); None when it cannot be turned off, and why.
    warmup_off_env: Mapping[str, str] | None = None
    warmup_fixed_why: str = "the stack offers no switch for its warm-up"
    # Environment variables that set its workers and threads; read back from the running
    # processes for the run's environment block.
    thread_settings: tuple[str, ...] = ()
    # How loadtests.own_code calls this stack's own code in process, without its server:
    # "wsgi" (a Flask app factory) or "torchserve" (the .mar in TorchServe's own Python
    # worker code); None where it runs only inside its server. app_env gives that code
    # the environment its server would.
    in_process: str | None = None
    # docker-compose.yml service and k8s Deployment (None: not deployed that way, and why).
    compose_service: str | None = None
    k8s_deployment: str | None = None
    not_deployed_why: str = ""

    def app_env(self, paths: ArtifactPaths, cores: Sequence[int] | None = None,
                env: Mapping[str, str] | None = None) -> dict[str, str]:  # fmt: skip
        """What the stack's own code reads from its environment where its server starts
        (the model's spec and file, its thread count for `cores`), `env` over it: for
        loadtests.own_code, where `in_process` is set."""
        raise NotImplementedError(f"{self.name} declares no in-process code (in_process)")

    # --- artifacts -------------------------------------------------------------------
    def build(self, paths: ArtifactPaths) -> None:
        """Builds this stack's own artifacts from the shared model files (default: none)."""

    def artifact_files(self, paths: ArtifactPaths) -> list[Path]:
        """Files build() writes; `make artifacts` rebuilds when one is missing."""
        return []

    # --- lifecycle -------------------------------------------------------------------
    def available(self) -> tuple[bool, str]:
        """Whether this machine can run the stack, and if not, why and how to get it."""
        return True, ""

    def start(
        self,
        paths: ArtifactPaths,
        run_dir: Path,
        ports: Mapping[str, int],
        cores: Sequence[int] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ServerProcess:
        """Starts the server bound to 127.0.0.1 and returns at once (not yet ready).

        Args:
            paths: the artifacts to serve.
            run_dir: a writable folder for this stack's generated config, logs and keys.
            ports: one port per name in `default_ports`.
            cores: CPUs the server may use; thread counts are derived from their number.
            env: extra environment for the server (e.g. device_env(...)).
        """
        raise NotImplementedError

    def wait_ready(self, server: ServerProcess, timeout_s: float,
                   poll_s: float | None = None) -> float:  # fmt: skip
        """Blocks until the model can answer (not merely until the port is open), asking
        every `poll_s` (None: ready_poll_s); returns the seconds waited."""
        raise NotImplementedError

    def poll_interval(self, poll_s: float | None) -> float:
        """The interval wait_ready asks at: the caller's, else the stack's own."""
        return self.ready_poll_s if poll_s is None else poll_s

    def stop(self, server: ServerProcess) -> None:
        """Stops the server and every process it started."""
        stop_process_tree(server.pid, grace_s=self.stop_grace_s)
        if server.popen is not None:
            server.popen.wait(timeout=self.stop_grace_s)

    def device_env(self, device: str) -> dict[str, str]:
        """Environment that puts the server on `device` (only devices in `devices`)."""
        if device == CPU:
            # Hide every GPU: a server must never pick one up by itself on a CPU row.
            return {"CUDA_VISIBLE_DEVICES": ""}
        raise ValueError(f"{self.name} runs on {', '.join(self.devices)}, not {device}")

    # --- protocols -------------------------------------------------------------------
    def clients(self, server: ServerProcess, paths: ArtifactPaths) -> list[Predictor]:
        """One client per protocol the running server offers, in `protocols` order."""
        raise NotImplementedError

    def remote_client(
        self, protocol: str, url: str, spec: ModelSpec, secret: str | None = None
    ) -> Predictor:
        """A client for this stack running elsewhere (a pod behind `url`).

        Args:
            secret: the credential the stack's clients need (TorchServe's inference key).
        """
        raise NotImplementedError

    def compose_secret(self, read_file: Callable[[str], str]) -> str | None:
        """The credential remote_client needs, read from its running compose container
        with `read_file(path)` (None: it needs none)."""
        return None

    # --- telemetry -------------------------------------------------------------------
    def metrics_url(self, server: ServerProcess) -> str | None:
        """Where the server's own Prometheus metrics are, or None."""
        return None

    def server_timings(self, before: Mapping[str, Any], after: Mapping[str, Any]) -> dict:
        """The server's own timings over a point, from two metric scrapes ({} if none)."""
        return {}

    def serving_config(self, server: ServerProcess) -> dict[str, Any]:
        """The serving configuration the running server reports of itself (workers,
        batching, worker class...), read back from it, not what it was asked to run: the
        configuration tables of the sweeps show this. {} when it cannot say."""
        return {}

    # --- framework floor ---------------------------------------------------------------
    def noop_path(self, server: ServerProcess) -> str | None:
        """The REST path on this running server (same port, headers and token as its REST
        client) where the no-op twin answers a fixed reply the size of a batch-1
        prediction, without decoding the body or running the model; None when the stack
        has no twin (noop_why) or this server was started without noop_env."""
        return None

    # --- processes -------------------------------------------------------------------
    def workers(self, server: ServerProcess) -> list[psutil.Process]:
        """The worker processes a worker-kill fault may SIGKILL ([] when there are none)."""
        return []

    workers_not_applicable: str = "one process with no separate workers to kill"
    # Why a request in flight when a worker dies may never be answered (its client waits
    # until its own timeout), or "" when the stack answers every one of them.
    lost_on_worker_death: str = ""

    def process_role(self, proc: psutil.Process) -> str | None:
        """A short name for one of its processes (soak groups memory by it), or None to
        use the process name."""
        return None

    def fds_per_request(self, server: ServerProcess) -> int:
        """File descriptors the running server's process tree holds for one client
        connection whose request is in flight (floods bounds its fds by it): 1 where the
        process that accepts it also serves it; a proxy in the tree adds its own
        upstream socket and the upstream's accepted one."""
        return 1

    def signal_plan(self) -> SignalPlan:
        """How its container runtime delivers SIGTERM, and the grace it gives."""
        return SignalPlan(False, DEPLOYMENT_GRACE_S, "container stop grace")

    # --- deployment ------------------------------------------------------------------
    # The image the project builds for it (`make images`: name, Dockerfile), or None when
    # it runs an official image; a stack with CUDA in `devices` gets a CUDA variant too.
    image: tuple[str, str] | None = None
    # Its container in the k8s Deployment, and ports of it that must never be reachable
    # (not in a Service, a containerPort or a NetworkPolicy rule): number -> what it is.
    k8s_container: str | None = None
    private_ports: Mapping[int, str] = {}
    # Why the k8s Deployment must keep one replica ("" when it may scale).
    single_replica_why: str = ""

    def k8s_args(self, cores: int) -> list[str] | None:
        """The exact container args its k8s Deployment must run for `cores` CPUs (None:
        not checked)."""
        return None

    # Where k8s_args expects its config files mounted in the container.
    k8s_config_mount: str | None = None

    def generated_files(self) -> dict[Path, str]:
        """Committed config files (absolute paths: its own folder's, compose's and k8s's
        copies) generated from digitnet.spec's defaults, with the text each must hold.
        `make configs` writes them; tests and k8s.validate check they are up to date."""
        return {}

    @property
    def protocols(self) -> tuple[str, ...]:
        return tuple(self.locust_users)

    def __repr__(self) -> str:
        return f"<stack {self.name}>"
