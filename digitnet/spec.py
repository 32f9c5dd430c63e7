"""The model's contract: name, input geometry, tensor names, serving limits, admission and
batching.

Everything a caller needs to build or check a request lives here, read once from the
environment so that one variable changes every stack at the same time: each stack's
launcher generates its server's own config from ServingLimits and BatchingPolicy at start
(TF Serving's batching parameters, TorchServe's config.properties and per-model batching,
Flask's limits), and the committed copies for compose and k8s are generated from the
defaults (tests/digitnet/test_knobs.py sets each variable and reads every config back).
AdmissionPolicy applies where we own the server (the Flask app) or configure its front
(Ray Serve: its HAProxy and max_queued_requests, services/ray_serve/settings.py); TorchServe
and TF Serving bound their queues their own way.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from digitnet.env import env_bool, env_float, env_int, env_int_pair, env_str

# Tensor and payload keys: the SavedModel signature, the JSON schema and the gRPC
# request all use these names, so a rename happens in exactly one place.
INPUT_KEY = "images"
LOGITS_KEY = "logits"
CLASSES_KEY = "classes"
SIGNATURE_NAME = "serving_default"

# scikit-learn's digits: 8x8 grey images, pixel values 0..16.
DIGITS_SIDE = 8
DIGITS_MAX_PIXEL = 16.0
NUM_CLASSES = 10


@dataclass(frozen=True)
class ModelSpec:
    """Size and identity of the model; the default is small and fast.

    A heavier variant for GPU or throughput work only changes `side` (digits are
    upsampled to it) and `channels`; no code changes.
    """

    name: str = "digitnet"
    side: int = DIGITS_SIDE
    channels: tuple[int, int] = (16, 32)
    num_classes: int = NUM_CLASSES
    version: int = 1

    def __post_init__(self) -> None:
        if self.side < 2 or self.side % 2:
            raise ValueError(f"side must be an even number >= 2, got {self.side}")
        if self.side % DIGITS_SIDE:
            raise ValueError(f"side must be a multiple of {DIGITS_SIDE}, got {self.side}")

    @property
    def input_shape(self) -> tuple[int, int]:
        """Shape of one instance in a request: a single-channel side x side image."""
        return (self.side, self.side)

    @property
    def pooled_side(self) -> int:
        return self.side // 2

    @property
    def head_features(self) -> int:
        return self.channels[1] * self.pooled_side * self.pooled_side

    def env(self) -> dict[str, str]:
        """The DIGITNET_* variables that make a server process's from_env() equal this spec
        (every server is started with them: a variant is served by its own size)."""
        return {
            "DIGITNET_NAME": self.name,
            "DIGITNET_SIDE": str(self.side),
            "DIGITNET_CHANNELS": ",".join(str(c) for c in self.channels),
            "DIGITNET_VERSION": str(self.version),
        }

    @classmethod
    def from_env(cls) -> ModelSpec:
        """Reads DIGITNET_NAME, DIGITNET_SIDE, DIGITNET_CHANNELS ("16,32"), DIGITNET_VERSION."""
        base = cls()
        return cls(
            name=os.environ.get("DIGITNET_NAME", base.name),
            side=env_int("DIGITNET_SIDE", base.side),
            channels=env_int_pair("DIGITNET_CHANNELS", base.channels),
            version=env_int("DIGITNET_VERSION", base.version),
        )


@dataclass(frozen=True)
class ServingLimits:
    """Request limits that every stack enforces the same way."""

    max_batch: int = 64
    max_body_bytes: int = 4 * 1024 * 1024
    # Pixel values are scaled to [0, 1]; anything far outside is a client bug, not an image.
    max_abs_value: float = 1e3
    max_json_depth: int = 8

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_body_bytes", "max_json_depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_env(cls) -> ServingLimits:
        """Reads DIGITNET_MAX_BATCH, DIGITNET_MAX_BODY_BYTES and DIGITNET_MAX_JSON_DEPTH."""
        base = cls()
        return cls(
            max_batch=env_int("DIGITNET_MAX_BATCH", base.max_batch),
            max_body_bytes=env_int("DIGITNET_MAX_BODY_BYTES", base.max_body_bytes),
            max_json_depth=env_int("DIGITNET_MAX_JSON_DEPTH", base.max_json_depth),
        )


@dataclass(frozen=True)
class AdmissionPolicy:
    """How many predict requests one worker of a server we own (the Flask app) holds at
    once, computing and queued; beyond it a request is refused at once with 503 and
    Retry-After instead of waiting past the objective.

    The bound is derived, not guessed: a worker runs one request at a time, so the last of
    `limit` admitted requests waits for the `limit - 1` ahead of it and then runs itself,
    about limit x service time in all. Giving the queue `queue_share` of the p99 objective:

        limit = floor(objective_ms x queue_share / service_ms)   (at least min_limit)

    The other part of the objective is left for the tail of one request's own service
    time (a GC pause, a slow forward pass), the wait in the kernel before the worker reads
    the request, and the client and network. `service_ms` is measured by each worker
    while it serves (a running average of what one request costs it), starting from the
    configured value (services/flask_torch/app.py AdmissionGate: under backlog, the time
    from one turn's start to the next); `limit` > 0 fixes the bound instead (tests use a
    tiny one).
    """

    # Off by default (DIGITNET_ADMISSION=on turns it on; `make overload` does): measured on
    # the 2-core box, the refusal itself costs about half a served request in this Python
    # stack, so under 2x overload goodput still fell to 0 with it on, and at 16 closed-loop
    # users on one worker the derived bound (~15) refuses requests at a load that meets the
    # objective (p99 35 ms in the reference run). It keeps the accepted tail within the
    # objective under saturation (wrk, 8 connections: p99 31-41 ms on, 260-356 ms off).
    enabled: bool = False
    # Whether the worker takes admitted requests one at a time in arrival order even when
    # nothing is refused (enabled off): the gate without its bound. On by default: under
    # gevent, without it a worker runs whichever greenlet wakes next, and on one core the
    # p99 of flask_torch at 4 closed-loop connections was 67-109 ms against 3.6-4.0 ms in
    # order (wrk, `make fair`'s levels; at 32: 156-388 ms against 24-30 ms), for 5-8% less
    # peak throughput. An idle worker alone with its request's connection skips the
    # handoff on the next loop turn (services/flask_torch/app.py), which cost a lone
    # client ~40 us.
    order: bool = True
    # The p99 latency objective of the load tests (loadtests/profiles.py slo_p99_ms; a test
    # checks they agree). services must not import loadtests, so the number lives here.
    objective_ms: float = 50.0
    queue_share: float = 0.5
    # A request's compute time in one worker before any is measured (flask_torch, batch 1,
    # on the 2-core build machine: ~0.5 ms; flask_tf is slower): the first requests of a
    # worker get a bound from it, later ones from the measured average.
    service_ms: float = 1.0
    measure: bool = True
    min_limit: int = 2
    # > 0: exactly this many requests per worker, whatever the objective and service time.
    limit: int = 0
    # Seconds a refused client should wait before it retries (the Retry-After header).
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        for name in ("objective_ms", "service_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.queue_share <= 1:
            raise ValueError(f"queue_share must be in (0, 1], got {self.queue_share}")
        if self.min_limit < 1 or self.limit < 0 or self.retry_after_s < 0:
            raise ValueError(f"min_limit must be >= 1, limit and retry_after_s >= 0; got "
                             f"{self.min_limit}, {self.limit}, {self.retry_after_s}")

    def bound(self, service_ms: float | None = None) -> int:
        """Requests one worker may hold for a service time of `service_ms` (default: the
        configured one); `limit` when it is set."""
        if self.limit:
            return self.limit
        service = service_ms if service_ms and service_ms > 0 else self.service_ms
        return max(self.min_limit, math.floor(self.objective_ms * self.queue_share / service))

    @classmethod
    def from_env(cls) -> AdmissionPolicy:
        """Reads DIGITNET_ADMISSION (on/off), DIGITNET_ADMIT_ORDER (on/off),
        DIGITNET_ADMIT_OBJECTIVE_MS,
        DIGITNET_ADMIT_QUEUE_SHARE, DIGITNET_ADMIT_SERVICE_MS, DIGITNET_ADMIT_MEASURE (on/off),
        DIGITNET_ADMIT_MIN_LIMIT, DIGITNET_ADMIT_LIMIT and DIGITNET_ADMIT_RETRY_AFTER_S."""
        base = cls()
        return cls(
            enabled=env_bool("DIGITNET_ADMISSION", base.enabled),
            order=env_bool("DIGITNET_ADMIT_ORDER", base.order),
            objective_ms=env_float("DIGITNET_ADMIT_OBJECTIVE_MS", base.objective_ms),
            queue_share=env_float("DIGITNET_ADMIT_QUEUE_SHARE", base.queue_share),
            service_ms=env_float("DIGITNET_ADMIT_SERVICE_MS", base.service_ms),
            measure=env_bool("DIGITNET_ADMIT_MEASURE", base.measure),
            min_limit=env_int("DIGITNET_ADMIT_MIN_LIMIT", base.min_limit),
            limit=env_int("DIGITNET_ADMIT_LIMIT", base.limit),
            retry_after_s=env_int("DIGITNET_ADMIT_RETRY_AFTER_S", base.retry_after_s),
        )


@dataclass(frozen=True)
class BatchingPolicy:
    """Server-side dynamic batching: concurrent requests merged into one model call.

    Stacks that batch (TF Serving, TorchServe) generate their own settings from this;
    a stack that does not batch (Flask runs one request per forward pass) says so in the
    report. `max_batch_size` counts requests (TorchServe's batchSize); TF Serving counts
    rows, so it gets ServingLimits.max_batch as its row cap (the largest request must fit
    one batch) and this policy's delay.
    """

    enabled: bool = True
    max_batch_size: int = 8
    # How long the first request of a batch waits for company: short against a network
    # round trip, long enough to merge requests that arrive together under load. At low
    # load the whole delay is paid (the batch never fills): 2 ms, not the 5 it was, from
    # the batching sweep (see BATCHING_PRESETS).
    max_delay_ms: float = 2.0

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_delay_ms < 0:
            raise ValueError(f"max_delay_ms must be >= 0, got {self.max_delay_ms}")

    @property
    def requests_per_batch(self) -> int:
        """What a server that counts requests per batch should use (1 = no batching)."""
        return self.max_batch_size if self.enabled else 1

    @property
    def delay_ms(self) -> float:
        return self.max_delay_ms if self.enabled else 0.0

    def env(self) -> dict[str, str]:
        """The DIGITNET_* variables that make from_env() equal this policy."""
        return {
            "DIGITNET_BATCHING": "on" if self.enabled else "off",
            "DIGITNET_BATCH_SIZE": str(self.max_batch_size),
            "DIGITNET_BATCH_DELAY_MS": repr(self.max_delay_ms),
        }

    @property
    def label(self) -> str:
        return (f"{self.max_batch_size} x {self.max_delay_ms:g} ms" if self.enabled
                else "off")  # fmt: skip

    @classmethod
    def from_env(cls) -> BatchingPolicy:
        """Reads DIGITNET_BATCHING_PRESET (a name of BATCHING_PRESETS, the base), then
        DIGITNET_BATCHING (on/off), DIGITNET_BATCH_SIZE, DIGITNET_BATCH_DELAY_MS, each
        overriding the base's value when set.

        Raises:
            ValueError: for a preset name not in BATCHING_PRESETS.
        """
        base = batching_preset(env_str(BATCHING_PRESET_ENV, DEFAULT_BATCHING_PRESET))
        return cls(
            enabled=env_bool("DIGITNET_BATCHING", base.enabled),
            max_batch_size=env_int("DIGITNET_BATCH_SIZE", base.max_batch_size),
            max_delay_ms=env_float("DIGITNET_BATCH_DELAY_MS", base.max_delay_ms),
        )


BATCHING_PRESET_ENV = "DIGITNET_BATCHING_PRESET"
DEFAULT_BATCHING_PRESET = "default"
# The preset that batches nothing: the lowest latency at low load.
LATENCY_PRESET = "latency"
# Named policies, one variable away (DIGITNET_BATCHING_PRESET, `make ... BATCHING=`), from
# the batching sweep's Pareto front of p99 at one connection against capacity on a 2-core
# box (loadtests/batching.py; TorchServe, two sweeps: results 20261205-093608 and ff-1).
# Off answered at one connection in 1.2-1.3 ms, where 8 x 5 ms (the default until then)
# took 7.4-8.7 ms waiting for a batch that never fills at low load; 8 x 2 ms answered in
# 3.5-4.1 ms with at least 8 x 5 ms's capacity (4528 and 4206 against 4317 and 4110
# req/s), so it became the default; 16 x 5 ms took the most requests under the objective
# (6318 and 5685 req/s) at 8 x 5 ms's p50.
BATCHING_PRESETS: dict[str, BatchingPolicy] = {
    DEFAULT_BATCHING_PRESET: BatchingPolicy(),  # 8 x 2 ms
    LATENCY_PRESET: BatchingPolicy(enabled=False),
    "throughput": BatchingPolicy(max_batch_size=16, max_delay_ms=5.0),
}


def batching_preset(name: str) -> BatchingPolicy:
    """The policy named `name` in BATCHING_PRESETS.

    Raises:
        ValueError: naming the presets, for any other name.
    """
    try:
        return BATCHING_PRESETS[name]
    except KeyError:
        raise ValueError(f"{BATCHING_PRESET_ENV}={name!r} is not a batching preset; "
                         f"use one of {sorted(BATCHING_PRESETS)}") from None


def preset_of(policy: BatchingPolicy) -> str | None:
    """The name of the preset that is exactly `policy`, or None (off counts as off,
    whatever its unused size and delay)."""
    for name, preset in BATCHING_PRESETS.items():
        same = (preset.requests_per_batch, preset.delay_ms) == (
            policy.requests_per_batch, policy.delay_ms)
        if same:
            return name
    return None
