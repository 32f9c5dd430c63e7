"""What one Locust process needs to know, read from the environment.

The runner sets these for local runs from the stack plugin's clients (route, headers and
token as data); in a cluster the Job's arguments set them, so the same locustfile runs
unchanged in both places and knows no stack by name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from digitnet.env import env_bool, env_float, env_int, env_str


class Mode(StrEnum):
    """closed: each user sends its next request when the last one returns.
    open: requests are scheduled at a fixed arrival rate, and latency counts from the
    scheduled start, so a stalled server cannot hide the requests it delayed
    (coordinated omission)."""

    CLOSED = "closed"
    OPEN = "open"


@dataclass(frozen=True)
class LoadSettings:
    batch_size: int
    mode: Mode
    # Open loop: requests per second across all users of this process.
    rate: float
    users: int
    reference: Path
    records: Path | None
    # The request name in Locust's stats: "<stack>/<protocol>".
    target: str = "target"
    # REST: the predict route and the headers the stack's client sends (auth included).
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    # gRPC: host:port of a TF Serving-protocol PredictionService.
    grpc_target: str | None = None
    # Open loop: the arrival process, its seed, how long its schedule runs, and how many
    # generator processes share the rate.
    arrivals: str = "poisson"
    seed: int = 0
    schedule_s: float = 3600.0
    processes: int = 1
    # Send only the first batch (the generator-floor runs: the null server's fixed reply
    # is the right answer for that batch alone).
    single_batch: bool = False
    # Locust's distributed mode across machines (worker pods in a cluster): the workers
    # share no disk with the master, so their per-request records travel to it as
    # messages (loadtests/distributed.py) instead of being written where they run.
    distributed: bool = False

    @classmethod
    def from_env(cls) -> LoadSettings:
        """LOADTEST_BATCH_SIZE (1), LOADTEST_MODE (closed), LOADTEST_RATE (0),
        LOADTEST_USERS (1), LOADTEST_REFERENCE (artifacts/reference_predictions.json),
        LOADTEST_RECORDS (per-request CSV; unset: none), LOADTEST_TARGET (stack/protocol),
        LOADTEST_PATH, LOADTEST_HEADERS (a JSON object), LOADTEST_GRPC_TARGET,
        LOADTEST_ARRIVALS (poisson|constant), LOADTEST_SEED (0), LOADTEST_SCHEDULE_S,
        LOADTEST_PROCESSES (1), LOADTEST_SINGLE_BATCH (off), LOADTEST_DISTRIBUTED (off)."""
        records = env_str("LOADTEST_RECORDS", "")
        headers = json.loads(env_str("LOADTEST_HEADERS", "{}"))
        if not isinstance(headers, dict):
            raise ValueError("LOADTEST_HEADERS must be a JSON object")
        return cls(
            batch_size=env_int("LOADTEST_BATCH_SIZE", 1),
            mode=Mode(env_str("LOADTEST_MODE", Mode.CLOSED.value)),
            rate=env_float("LOADTEST_RATE", 0.0),
            users=env_int("LOADTEST_USERS", 1),
            reference=Path(env_str("LOADTEST_REFERENCE", "artifacts/reference_predictions.json")),
            records=Path(records) if records else None,
            target=env_str("LOADTEST_TARGET", "target"),
            path=env_str("LOADTEST_PATH", ""),
            headers={str(k): str(v) for k, v in headers.items()},
            grpc_target=env_str("LOADTEST_GRPC_TARGET", "") or None,
            arrivals=env_str("LOADTEST_ARRIVALS", "poisson"),
            seed=env_int("LOADTEST_SEED", 0),
            schedule_s=env_float("LOADTEST_SCHEDULE_S", 3600.0),
            processes=env_int("LOADTEST_PROCESSES", 1),
            single_batch=env_bool("LOADTEST_SINGLE_BATCH", False),
            distributed=env_bool("LOADTEST_DISTRIBUTED", False),
        )
