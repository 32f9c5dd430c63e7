"""The model's contract: name, input geometry, tensor names, serving limits and batching.

Everything a caller needs to build or check a request lives here, read once from the
environment so that one variable changes every stack at the same time: each stack's
launcher generates its server's own config from ServingLimits and BatchingPolicy at start
(TF Serving's batching parameters, TorchServe's config.properties and per-model batching,
Flask's limits), and the committed copies for compose and k8s are generated from the
defaults (tests/digitnet/test_knobs.py sets each variable and reads every config back).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from digitnet.env import env_bool, env_float, env_int, env_int_pair

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
    # round trip, long enough to merge requests that arrive together under load.
    max_delay_ms: float = 5.0

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

    @classmethod
    def from_env(cls) -> BatchingPolicy:
        """Reads DIGITNET_BATCHING (on/off), DIGITNET_BATCH_SIZE, DIGITNET_BATCH_DELAY_MS."""
        base = cls()
        return cls(
            enabled=env_bool("DIGITNET_BATCHING", base.enabled),
            max_batch_size=env_int("DIGITNET_BATCH_SIZE", base.max_batch_size),
            max_delay_ms=env_float("DIGITNET_BATCH_DELAY_MS", base.max_delay_ms),
        )
