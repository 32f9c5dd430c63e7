"""The model's contract: name, input geometry, tensor names and serving limits.

Everything a caller needs to build or check a request lives here, read once from the
environment so that one variable changes every stack at the same time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from digitnet.env import env_int

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


def _env_channels(name: str, default: tuple[int, int]) -> tuple[int, int]:
    raw = os.environ.get(name)
    if not raw:
        return default
    first, second = (int(part) for part in raw.split(","))
    return first, second


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
            channels=_env_channels("DIGITNET_CHANNELS", base.channels),
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

    @classmethod
    def from_env(cls) -> ServingLimits:
        """Reads DIGITNET_MAX_BATCH and DIGITNET_MAX_BODY_BYTES."""
        base = cls()
        return cls(
            max_batch=env_int("DIGITNET_MAX_BATCH", base.max_batch),
            max_body_bytes=env_int("DIGITNET_MAX_BODY_BYTES", base.max_body_bytes),
        )
