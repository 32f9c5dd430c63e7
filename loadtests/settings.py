"""What one Locust process needs to know, read from the environment.

The runner sets these for local runs; in a cluster a ConfigMap sets them, so the same
locustfile runs unchanged in both places.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class Stack(StrEnum):
    TF_SERVING = "tf_serving"
    TORCHSERVE = "torchserve"
    FLASK_TORCH = "flask_torch"


class Protocol(StrEnum):
    REST = "rest"
    GRPC = "grpc"


class Mode(StrEnum):
    """closed: each user sends its next request when the last one returns.
    open: requests are scheduled at a fixed arrival rate, and latency counts from the
    scheduled start, so a stalled server cannot hide the requests it delayed
    (coordinated omission)."""

    CLOSED = "closed"
    OPEN = "open"


# Which stacks offer which protocols (TorchServe's gRPC stubs are not shipped with it).
PROTOCOLS: dict[Stack, tuple[Protocol, ...]] = {
    Stack.TF_SERVING: (Protocol.REST, Protocol.GRPC),
    Stack.TORCHSERVE: (Protocol.REST,),
    Stack.FLASK_TORCH: (Protocol.REST,),
}


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value in (None, "") else value


@dataclass(frozen=True)
class LoadSettings:
    batch_size: int
    mode: Mode
    # Open loop: requests per second across all users of this process.
    rate: float
    users: int
    reference: Path
    records: Path | None
    torchserve_token: str | None
    grpc_target: str | None

    @classmethod
    def from_env(cls) -> LoadSettings:
        """LOADTEST_BATCH_SIZE (1), LOADTEST_MODE (closed), LOADTEST_RATE (0),
        LOADTEST_USERS (1), LOADTEST_REFERENCE (artifacts/reference_predictions.json),
        LOADTEST_RECORDS (per-request CSV; unset: none), TORCHSERVE_TOKEN,
        TFS_GRPC_TARGET (host:port of TF Serving's gRPC API)."""
        records = os.environ.get("LOADTEST_RECORDS")
        return cls(
            batch_size=int(_env("LOADTEST_BATCH_SIZE", "1")),
            mode=Mode(_env("LOADTEST_MODE", Mode.CLOSED.value)),
            rate=float(_env("LOADTEST_RATE", "0")),
            users=int(_env("LOADTEST_USERS", "1")),
            reference=Path(
                _env("LOADTEST_REFERENCE", "artifacts/reference_predictions.json")
            ),
            records=Path(records) if records else None,
            torchserve_token=os.environ.get("TORCHSERVE_TOKEN") or None,
            grpc_target=os.environ.get("TFS_GRPC_TARGET") or None,
        )
