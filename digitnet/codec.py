"""The one JSON payload schema every REST stack speaks (TF Serving's row format).

Request:  {"instances": [image, ...]}, each image a side x side list of numbers in [0, 1].
Response: {"predictions": [{"logits": [10 floats], "classes": int}, ...]}.
Errors:   {"error": "<what is wrong>", "reason": "<machine-readable code>"} with a 4xx status.

Servers call `decode_request` (validation lives only here) and `encode_predictions`;
clients call `encode_request` and `decode_predictions`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from digitnet.spec import CLASSES_KEY, LOGITS_KEY, ModelSpec, ServingLimits

INSTANCES_KEY = "instances"
PREDICTIONS_KEY = "predictions"
JSON_CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class PayloadError(Exception):
    """A request the server refuses; `status` is the HTTP code to answer with."""

    status: int
    reason: str
    message: str

    def __str__(self) -> str:
        return self.message

    def to_json(self) -> dict[str, str]:
        return {"error": self.message, "reason": self.reason}


def _reject_constant(name: str) -> float:
    raise PayloadError(400, "non_finite", f"non-finite number {name} is not allowed")


def _parse_json(raw: bytes | bytearray | str, limits: ServingLimits) -> Any:
    if len(raw) > limits.max_body_bytes:
        raise PayloadError(
            413, "body_too_large", f"body of {len(raw)} bytes exceeds {limits.max_body_bytes}"
        )
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
        return json.loads(text, parse_constant=_reject_constant)
    except PayloadError:
        raise
    except UnicodeDecodeError as err:
        raise PayloadError(400, "malformed_json", f"body is not UTF-8: {err}") from None
    except RecursionError:
        raise PayloadError(400, "too_deep", "JSON nesting is too deep") from None
    except ValueError as err:
        raise PayloadError(400, "malformed_json", f"malformed JSON: {err}") from None


def _check_image(image: Any, index: int, side: int) -> None:
    """Shape and element types of one instance, checked without numpy's silent coercions
    (numpy would turn "0.5" or true into numbers)."""
    if not isinstance(image, list) or len(image) != side:
        raise PayloadError(
            400,
            "wrong_shape",
            f"instances[{index}] must be a list of {side} rows of {side} numbers "
            f"(shape [{side}, {side}]), got {_describe(image)}",
        )
    for row_index, row in enumerate(image):
        if not isinstance(row, list) or len(row) != side:
            raise PayloadError(
                400,
                "wrong_shape",
                f"instances[{index}][{row_index}] must be a list of {side} numbers, "
                f"got {_describe(row)}",
            )
        for value in row:
            if type(value) is not float and type(value) is not int:
                raise PayloadError(
                    400,
                    "wrong_dtype",
                    f"instances[{index}][{row_index}] holds {_describe(value)}; "
                    "pixels must be numbers",
                )


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return f"a list of length {len(value)}"
    if value is None:
        return "null"
    return f"{type(value).__name__} {json.dumps(value)[:40]}"


def decode_request(
    payload: bytes | bytearray | str | Mapping[str, Any],
    spec: ModelSpec,
    limits: ServingLimits,
) -> np.ndarray:
    """Validates a request and returns its images as float32 [N, side, side].

    Args:
        payload: the raw body, or a body some framework already parsed from JSON.
        spec: gives the expected image side.
        limits: batch and body size limits.

    Raises:
        PayloadError: naming the first problem found.
    """
    if isinstance(payload, (bytes, bytearray, str)):
        body = _parse_json(payload, limits)
    else:
        # A framework parsed the JSON already (TorchServe can): any JSON value may arrive.
        body = payload
    if not isinstance(body, Mapping):
        raise PayloadError(
            400, "wrong_schema", f'body must be a JSON object {{"{INSTANCES_KEY}": [...]}}'
        )
    unknown = sorted(set(body) - {INSTANCES_KEY})
    if unknown or INSTANCES_KEY not in body:
        raise PayloadError(
            400,
            "wrong_schema",
            f'body must have exactly one key "{INSTANCES_KEY}"; got {sorted(body)}',
        )
    instances = body[INSTANCES_KEY]
    if not isinstance(instances, list):
        raise PayloadError(400, "wrong_schema", f'"{INSTANCES_KEY}" must be a list of images')
    if not instances:
        raise PayloadError(400, "empty_batch", "batch is empty: send at least one instance")
    if len(instances) > limits.max_batch:
        raise PayloadError(
            413,
            "batch_too_large",
            f"batch of {len(instances)} instances exceeds the maximum of {limits.max_batch}",
        )
    for index, image in enumerate(instances):
        _check_image(image, index, spec.side)
    try:
        images = np.asarray(instances, dtype=np.float64)
    except OverflowError:
        # An integer literal beyond float64 (a 400-digit one) stays a Python int until here.
        raise PayloadError(
            400, "out_of_range", "pixel values must lie within the float64 range and "
            f"+-{limits.max_abs_value:g} (images are scaled to [0, 1])",
        ) from None
    if not np.all(np.isfinite(images)):
        raise PayloadError(400, "non_finite", "instances hold NaN or infinite values")
    if np.abs(images).max() > limits.max_abs_value:
        raise PayloadError(
            400,
            "out_of_range",
            f"pixel values must lie within +-{limits.max_abs_value:g} "
            "(images are scaled to [0, 1])",
        )
    return images.astype(np.float32)


def encode_request(images: np.ndarray) -> dict[str, Any]:
    """float [N, side, side] -> request body."""
    return {INSTANCES_KEY: np.asarray(images, dtype=np.float32).tolist()}


def encode_predictions(logits: np.ndarray) -> dict[str, Any]:
    """[N, classes] logits -> response body, with the arg-max class per row."""
    logits = np.asarray(logits, dtype=np.float32)
    classes = logits.argmax(axis=1)
    return {
        PREDICTIONS_KEY: [
            {LOGITS_KEY: row.tolist(), CLASSES_KEY: int(cls)}
            for row, cls in zip(logits, classes, strict=True)
        ]
    }


def decode_predictions(
    body: Any, expected_rows: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Response body -> (logits float32 [N, classes], classes int64 [N]).

    Raises:
        ValueError: when the body is not a well-formed answer for `expected_rows` images;
            load tests count that as a failure, not a success.
    """
    if not isinstance(body, Mapping) or PREDICTIONS_KEY not in body:
        raise ValueError(f"response has no {PREDICTIONS_KEY!r}: {str(body)[:200]}")
    rows = body[PREDICTIONS_KEY]
    if not isinstance(rows, list) or len(rows) != expected_rows:
        raise ValueError(f"expected {expected_rows} predictions, got {_describe(rows)}")
    try:
        logits = np.asarray([row[LOGITS_KEY] for row in rows], dtype=np.float32)
        classes = np.asarray([row[CLASSES_KEY] for row in rows], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"malformed prediction row: {err}") from None
    if logits.shape != (expected_rows, num_classes) or not np.all(np.isfinite(logits)):
        raise ValueError(f"logits have shape {logits.shape} or non-finite values")
    if not np.array_equal(classes, logits.argmax(axis=1)):
        raise ValueError("classes disagree with the arg-max of the logits")
    return logits, classes

