"""Request payloads built from real held-out digits, and the answer key to check replies.

Every user of every stack draws from the same batches, encoded once up front so the
load generator spends its CPU on sending, not on JSON encoding.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitnet.codec import decode_predictions, encode_request
from digitnet.data import load_split
from digitnet.spec import ModelSpec

# Served logits may differ from the reference in the last float32 bits; anything larger
# is a wrong answer, not noise.
LOGITS_ATOL = 1e-4


@dataclass(frozen=True)
class Batch:
    images: np.ndarray
    body: bytes
    expected_classes: np.ndarray
    expected_logits: np.ndarray


class PayloadSet:
    """Batches of `batch_size` consecutive test images, cycled forever (only the first
    `limit` batches when given)."""

    def __init__(
        self, spec: ModelSpec, batch_size: int, reference: Path, limit: int | None = None
    ) -> None:
        key = json.loads(reference.read_text())
        images = load_split(spec).test_images
        logits = np.asarray(key["logits"], dtype=np.float32)
        classes = np.asarray(key["classes"], dtype=np.int64)
        if len(logits) != len(images):
            raise ValueError(f"{reference} holds {len(logits)} answers for {len(images)} images")
        self.spec = spec
        self.batch_size = batch_size
        self.batches = [
            Batch(
                images=images[i : i + batch_size],
                body=json.dumps(encode_request(images[i : i + batch_size])).encode(),
                expected_classes=classes[i : i + batch_size],
                expected_logits=logits[i : i + batch_size],
            )
            for i in range(0, len(images) - batch_size + 1, batch_size)
        ][:limit]
        self._cycle = itertools.cycle(self.batches)

    def next(self) -> Batch:
        return next(self._cycle)


def check_answer(batch: Batch, logits: np.ndarray, classes: np.ndarray) -> str | None:
    """None when the reply is right for `batch`, else what is wrong with it."""
    if not np.array_equal(classes, batch.expected_classes):
        return f"wrong classes {classes.tolist()} (expected {batch.expected_classes.tolist()})"
    worst = float(np.abs(logits - batch.expected_logits).max())
    if worst > LOGITS_ATOL:
        return f"logits off by {worst:.2e}"
    return None


def check_json_reply(batch: Batch, body: object, num_classes: int) -> str | None:
    """Validates a REST reply body; None when right."""
    try:
        logits, classes = decode_predictions(body, len(batch.images), num_classes)
    except ValueError as err:
        return f"malformed reply: {err}"
    return check_answer(batch, logits, classes)


def check_prediction(client, payloads: PayloadSet) -> str | None:
    """None when `client` (a digitnet.clients Predictor) gets the right answer for the next
    good batch, else what went wrong (the exception or the wrong classes/logits)."""
    batch = payloads.next()
    try:
        logits, classes = client.predict(batch.images)
    except Exception as err:  # noqa: BLE001 - any failure is the finding, reported
        return f"{type(err).__name__}: {str(err)[:200]}"
    return check_answer(batch, np.asarray(logits), np.asarray(classes))
