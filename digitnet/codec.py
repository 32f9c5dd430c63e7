"""The one JSON payload schema every REST stack speaks (TF Serving's two predict formats).

Row request:       {"instances": [image, ...]}, each image a side x side list of numbers.
Columnar request:  {"inputs": [image, ...]} or {"inputs": {"images": [image, ...]}}.
Row response:      {"predictions": [{"logits": [10 floats], "classes": int}, ...]}.
Columnar response: {"outputs": {"logits": [[10 floats], ...], "classes": [int, ...]}}.
Errors:   {"error": "<what is wrong>", "reason": "<machine-readable code>"} with a 4xx status.

As in TF Serving (util/json_tensor.cc), the request's format picks the response's format,
and a body with both "instances" and "inputs" is refused. Unlike TF Serving, unknown keys
are refused too: a misspelt key is a client bug we name rather than ignore.

Servers call `decode_request_format` (validation lives only here) and
`encode_predictions_json(logits, fmt)` (the reply's bytes; `encode_predictions` is the same
document as Python lists), and `dumps` for any other JSON they answer; clients call
`encode_request` and `decode_predictions`. `decode_request` is the same validation for
callers that need only the images. The binary tensor body (digitnet.binary_codec) shares
check_body_size, check_batch_size and check_pixel_values, so a limit reads the same in both;
digitnet.wire picks one of the two by Content-Type.

Why orjson: at batch 1 on the default model (a 1330-byte body) the standard library took
20.4 us to parse and Flask's jsonify 18.5 us to encode, in-process on this 2-core box;
orjson parses it in 2.8 us and writes numpy float32 logits directly, each in its shortest
round-trip form ("0.743", not "0.7430000305175781"): the same float32 values after a
client parses them, in half the bytes. Every body orjson refuses is parsed again by the
standard library, which gives the error it always gave (or accepts what orjson's stricter
reading refused, e.g. an escaped lone surrogate in a string), so no answer to any input
changes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import orjson

from digitnet.spec import CLASSES_KEY, INPUT_KEY, LOGITS_KEY, ModelSpec, ServingLimits

INSTANCES_KEY = "instances"
INPUTS_KEY = "inputs"
PREDICTIONS_KEY = "predictions"
OUTPUTS_KEY = "outputs"
JSON_CONTENT_TYPE = "application/json"
# Reply headers our servers add to every answered prediction (TF Serving adds neither):
# the forward pass's own time, and the device it actually ran on ("cpu", "cuda:0"), which
# the load runner reads back for every point so that no CPU figure is labelled a GPU one.
INFERENCE_TIME_HEADER = "X-Inference-Time-Ms"
DEVICE_HEADER = "X-Served-Device"
# How many requests shared the reply's forward pass (the dynamic batch the server formed):
# the load runner turns it into each point's histogram of observed batch sizes.
BATCH_HEADER = "X-Batch-Requests"
# Where our servers spent one request, stage by stage, in the W3C Server-Timing form
# ("decode;dur=0.041, model;dur=0.030", milliseconds), the server's own side of an
# attribution of the served latency. The Flask app sends it; the stage names are STAGES'.
STAGE_HEADER = "Server-Timing"
# decode: parse and validate the body; queue: wait for the worker's turn (admission) or a
# dynamic batch; model: the forward pass alone; convert: to and from the model's tensors;
# encode: the reply's bytes (JSON, or the binary body of digitnet.binary_codec).
STAGES = ("decode", "queue", "convert", "model", "encode")
# In the same header, from servers that time their whole app (our Flask app's WSGI
# wrapper): the app's entry to its reply's headers, every stage included. What it holds
# beyond the stages is the framework's dispatch and our untimed code.
APP_STAGE = "app"
# And from the HTTP server around it, where the Flask stacks' gunicorn worker times itself
# (services/flask_torch/http_timing.py): the kernel's receipt of the request to the app's
# entry, the app's return to the reply's last bytes sent, and the app's own work after it
# handed its reply over (the last two of the previous reply on the same path: known only
# once that reply has left).
HTTP_READ_STAGE = "http-read"
HTTP_WRITE_STAGE = "http-write"
APP_AFTER_STAGE = "app-after"
HTTP_STAGES = (HTTP_READ_STAGE, APP_AFTER_STAGE, HTTP_WRITE_STAGE)


class RequestFormat(Enum):
    """TF Serving's two JSON predict formats; the request's one is the response's one."""

    ROW = "row"  # {"instances": [...]} -> {"predictions": [...]}
    COLUMNAR = "columnar"  # {"inputs": ...} -> {"outputs": {...}}


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


_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_STEPS = np.zeros(256, dtype=np.int8)
_STEPS[[ord("["), ord("{")]] = 1
_STEPS[[ord("]"), ord("}")]] = -1
# Below this many brackets a Python loop is cheaper than numpy's call overhead.
_LOOP_MAX_BRACKETS = 256
_OPEN_CODES = (ord("["), ord("{"))


def _nesting_depth(raw: bytes | bytearray | str) -> int:
    """The deepest bracket nesting in the text, counted before any parser recurses into it.

    Brackets inside strings count too: they only make the figure larger, and the schema
    has no string that holds one, so a valid request is never refused by it.
    """
    data = raw.encode("utf-8", "replace") if isinstance(raw, str) else bytes(raw)
    brackets = data.translate(None, _NOT_BRACKETS)
    if len(brackets) > _LOOP_MAX_BRACKETS:
        steps = _STEPS[np.frombuffer(brackets, dtype=np.uint8)]
        return int(np.cumsum(steps, dtype=np.int64).max(initial=0))
    depth = deepest = 0
    for char in brackets:
        depth += 1 if char in _OPEN_CODES else -1
        deepest = max(deepest, depth)
    return deepest


# The reason of the 503 every bound of ours answers (the Flask app's gate, the nginx front,
# Ray Serve's HAProxy) when it refuses a request for overload.
OVERLOADED_REASON = "overloaded"


def too_large_document(max_body_bytes: int) -> dict[str, str]:
    """The 413 for a body over the limit, one text wherever it is answered: the Flask app,
    the Ray deployment, and the fronts that answer for them (nginx, HAProxy)."""
    return {"error": f"request body exceeds the maximum of {max_body_bytes} bytes",
            "reason": "body_too_large"}


def check_body_size(size: int, limits: ServingLimits) -> None:
    """Refuses a body over limits.max_body_bytes (every codec's first check).

    Raises:
        PayloadError: 413 "body_too_large".
    """
    if size > limits.max_body_bytes:
        raise PayloadError(
            413, "body_too_large", f"body of {size} bytes exceeds {limits.max_body_bytes}"
        )


_LONG_DIGITS = re.compile(rb"[0-9]{19}")
_LONG_DIGITS_TEXT = re.compile(r"[0-9]{19}")


def _parse_json(raw: bytes | bytearray | str, limits: ServingLimits, exact: bool = False) -> Any:
    """The body's JSON document; `exact` reads it with the standard library alone."""
    check_body_size(len(raw), limits)
    depth = _nesting_depth(raw)
    if depth > limits.max_json_depth:
        raise PayloadError(
            400,
            "too_deep",
            f"JSON nesting is too deep: {depth} levels, at most {limits.max_json_depth}",
        )
    if not exact:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            # The slow path names the problem exactly as before (see the module docstring).
            pass
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


def _may_read_differently(payload: Any) -> bool:
    """Whether orjson may have read the body otherwise than the standard library.

    orjson reads an integer beyond 64 bits as a float where the standard library keeps it
    an int (and names it so in its errors). Any such integer has 19 digits in a row, and
    lies beyond every pixel limit, so a body holding one is always refused: only then is
    it worth looking for (the scan took a decode of a 1271-byte batch-1 body from 14.8 to
    43.1 us, timeit: a cost the accepted path need not pay).
    """
    if isinstance(payload, str):
        return _LONG_DIGITS_TEXT.search(payload) is not None
    if isinstance(payload, (bytes, bytearray)):
        return _LONG_DIGITS.search(payload) is not None
    return False


def _check_image(image: Any, index: int, side: int, where: str = INSTANCES_KEY) -> None:
    """Shape and element types of one instance, checked without numpy's silent coercions
    (numpy would turn "0.5" or true into numbers). `where` names the batch in messages."""
    if not isinstance(image, list) or len(image) != side:
        raise PayloadError(
            400,
            "wrong_shape",
            f"{where}[{index}] must be a list of {side} rows of {side} numbers "
            f"(shape [{side}, {side}]), got {_describe(image)}",
        )
    for row_index, row in enumerate(image):
        if not isinstance(row, list) or len(row) != side:
            raise PayloadError(
                400,
                "wrong_shape",
                f"{where}[{index}][{row_index}] must be a list of {side} numbers, "
                f"got {_describe(row)}",
            )
        for value in row:
            if type(value) is not float and type(value) is not int:
                raise PayloadError(
                    400,
                    "wrong_dtype",
                    f"{where}[{index}][{row_index}] holds {_describe(value)}; "
                    "pixels must be numbers",
                )


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return f"a list of length {len(value)}"
    if value is None:
        return "null"
    return f"{type(value).__name__} {json.dumps(value)[:40]}"


def _parse_body(
    payload: bytes | bytearray | str | Mapping[str, Any], limits: ServingLimits, exact: bool
) -> Mapping[str, Any]:
    if isinstance(payload, (bytes, bytearray, str)):
        body = _parse_json(payload, limits, exact)
    else:
        # A framework parsed the JSON already (TorchServe can): any JSON value may arrive.
        body = payload
    if not isinstance(body, Mapping):
        raise PayloadError(
            400, "wrong_schema", f'body must be a JSON object {{"{INSTANCES_KEY}": [...]}}'
        )
    return body


def _select_batch(body: Mapping[str, Any]) -> tuple[Any, RequestFormat, str]:
    """The batch a body carries, its format, and how messages name it.

    The row-format messages are the ones clients already match on; they stay as they were.
    """
    if INSTANCES_KEY in body and INPUTS_KEY in body:
        # TF Serving: "Not formatted correctly expecting only one of 'inputs' or
        # 'instances' keys to exist" (INVALID_ARGUMENT, HTTP 400).
        raise PayloadError(
            400,
            "wrong_schema",
            f'body must have only one of "{INSTANCES_KEY}" (row format) or "{INPUTS_KEY}" '
            f"(columnar format); got {sorted(body)}",
        )
    if INPUTS_KEY not in body:
        unknown = sorted(set(body) - {INSTANCES_KEY})
        if unknown or INSTANCES_KEY not in body:
            raise PayloadError(
                400,
                "wrong_schema",
                f'body must have exactly one key "{INSTANCES_KEY}"; got {sorted(body)}',
            )
        return body[INSTANCES_KEY], RequestFormat.ROW, INSTANCES_KEY
    unknown = sorted(set(body) - {INPUTS_KEY})
    if unknown:
        raise PayloadError(
            400,
            "wrong_schema",
            f'body must have exactly one key "{INPUTS_KEY}"; got {sorted(body)}',
        )
    inputs = body[INPUTS_KEY]
    if not isinstance(inputs, Mapping):
        # One input, so TF Serving takes the value itself as that input's whole tensor.
        return inputs, RequestFormat.COLUMNAR, INPUTS_KEY
    if sorted(inputs) != [INPUT_KEY]:
        raise PayloadError(
            400,
            "wrong_schema",
            f'"{INPUTS_KEY}" must name exactly the input "{INPUT_KEY}"; got {sorted(inputs)}',
        )
    return inputs[INPUT_KEY], RequestFormat.COLUMNAR, f"{INPUTS_KEY}.{INPUT_KEY}"


def check_batch_size(count: int, limits: ServingLimits) -> None:
    """Refuses an empty batch and one over limits.max_batch, whatever codec carried it.

    Raises:
        PayloadError: 400 "empty_batch" or 413 "batch_too_large".
    """
    if not count:
        raise PayloadError(400, "empty_batch", "batch is empty: send at least one instance")
    if count > limits.max_batch:
        raise PayloadError(
            413,
            "batch_too_large",
            f"batch of {count} instances exceeds the maximum of {limits.max_batch}",
        )


def _check_batch(batch: Any, where: str, spec: ModelSpec, limits: ServingLimits) -> None:
    if not isinstance(batch, list):
        raise PayloadError(400, "wrong_schema", f'"{where}" must be a list of images')
    check_batch_size(len(batch), limits)
    for index, image in enumerate(batch):
        _check_image(image, index, spec.side, where)


def _to_images(batch: list, where: str, limits: ServingLimits) -> np.ndarray:
    try:
        images = np.asarray(batch, dtype=np.float64)
    except OverflowError:
        # An integer literal beyond float64 (a 400-digit one) stays a Python int until here.
        raise PayloadError(
            400,
            "out_of_range",
            "pixel values must lie within the float64 range and "
            f"+-{limits.max_abs_value:g} (images are scaled to [0, 1])",
        ) from None
    check_pixel_values(images, where, limits)
    return images.astype(np.float32)


def check_pixel_values(images: np.ndarray, where: str, limits: ServingLimits) -> None:
    """Refuses NaN, infinities and pixels beyond +-limits.max_abs_value, in any codec.

    Args:
        images: a non-empty float array (float64 from JSON, float32 from the binary codec).
        where: how the messages name the values ("instances", "inputs", ...).
        limits: gives max_abs_value.

    Raises:
        PayloadError: 400 "non_finite" or "out_of_range".
    """
    # One pass: the largest magnitude is NaN or infinite exactly when some value is (max
    # propagates NaN), which halves the cost of two numpy calls at batch 1.
    peak = float(np.abs(images).max())
    if peak <= limits.max_abs_value and math.isfinite(peak):
        return
    if not math.isfinite(peak):
        raise PayloadError(400, "non_finite", f"{where} hold NaN or infinite values")
    raise PayloadError(
        400,
        "out_of_range",
        f"pixel values must lie within +-{limits.max_abs_value:g} (images are scaled to [0, 1])",
    )


def decode_request_format(
    payload: bytes | bytearray | str | Mapping[str, Any],
    spec: ModelSpec,
    limits: ServingLimits,
) -> tuple[np.ndarray, RequestFormat]:
    """Validates a row or columnar request; servers answer in the format it returns.

    Args:
        payload: the raw body, or a body some framework already parsed from JSON.
        spec: gives the expected image side.
        limits: batch and body size limits.

    Returns:
        The images as float32 [N, side, side], and the request's format.

    Raises:
        PayloadError: naming the first problem found.
    """
    try:
        return _decode_body(_parse_body(payload, limits, exact=False), spec, limits)
    except PayloadError:
        if not _may_read_differently(payload):
            raise
    # Refused after orjson's reading of a long integer: the standard library's reading
    # gives the refusal it always gave.
    return _decode_body(_parse_body(payload, limits, exact=True), spec, limits)


def _decode_body(
    body: Mapping[str, Any], spec: ModelSpec, limits: ServingLimits
) -> tuple[np.ndarray, RequestFormat]:
    batch, fmt, where = _select_batch(body)
    _check_batch(batch, where, spec, limits)
    return _to_images(batch, where, limits), fmt


def decode_request(
    payload: bytes | bytearray | str | Mapping[str, Any],
    spec: ModelSpec,
    limits: ServingLimits,
) -> np.ndarray:
    """Validates a request and returns its images as float32 [N, side, side].

    The same validation as `decode_request_format`, for callers that answer in one format.

    Raises:
        PayloadError: naming the first problem found.
    """
    return decode_request_format(payload, spec, limits)[0]


def encode_request(images: np.ndarray) -> dict[str, Any]:
    """float [N, side, side] -> request body."""
    return {INSTANCES_KEY: np.asarray(images, dtype=np.float32).tolist()}


def server_timing(stages: Mapping[str, float]) -> str:
    """STAGE_HEADER's value for stage -> seconds."""
    return ", ".join(f"{name};dur={seconds * 1000:.3f}" for name, seconds in stages.items())


def parse_server_timing(value: str | None) -> dict[str, float]:
    """STAGE_HEADER's value -> stage -> milliseconds; entries without a duration, or with
    one that is not a number, are left out (another server's header may carry them)."""
    stages: dict[str, float] = {}
    for entry in (value or "").split(","):
        name, *params = (part.strip() for part in entry.split(";"))
        for param in params:
            key, _, number = param.partition("=")
            if key.strip() == "dur" and name:
                try:
                    stages[name] = float(number)
                except ValueError:
                    pass
    return stages


def dumps(document: Any) -> bytes:
    """Compact JSON bytes, numpy arrays and scalars written natively (float32 in its
    shortest round-trip form): every server's replies and errors go through here."""
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def _prediction_document(logits: np.ndarray, fmt: RequestFormat, rows: Any) -> dict[str, Any]:
    classes = logits.argmax(axis=1)
    if fmt is RequestFormat.COLUMNAR:
        return {OUTPUTS_KEY: {LOGITS_KEY: rows(logits), CLASSES_KEY: classes.tolist()}}
    return {
        PREDICTIONS_KEY: [
            {LOGITS_KEY: rows(row), CLASSES_KEY: int(cls)}
            for row, cls in zip(logits, classes, strict=True)
        ]
    }


def encode_predictions_json(logits: np.ndarray, fmt: RequestFormat = RequestFormat.ROW) -> bytes:
    """`encode_predictions`'s document as the bytes a server sends, without turning the
    logits into Python floats first."""
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    return dumps(_prediction_document(logits, fmt, lambda array: array))


def encode_predictions(
    logits: np.ndarray, fmt: RequestFormat = RequestFormat.ROW
) -> dict[str, Any]:
    """[N, classes] logits -> response body, with the arg-max class per row.

    Args:
        logits: the model's output for one request.
        fmt: the request's format; TF Serving answers a columnar request with one list per
            output under "outputs", a row request with one object per image.
    """
    logits = np.asarray(logits, dtype=np.float32)
    return _prediction_document(logits, fmt, lambda array: array.tolist())


def _columns(body: Mapping[str, Any], expected_rows: int) -> tuple[Any, Any]:
    """(logits rows, classes) from either response format, not yet converted."""
    if PREDICTIONS_KEY in body:
        rows = body[PREDICTIONS_KEY]
        if not isinstance(rows, list) or len(rows) != expected_rows:
            raise ValueError(f"expected {expected_rows} predictions, got {_describe(rows)}")
        try:
            return [row[LOGITS_KEY] for row in rows], [row[CLASSES_KEY] for row in rows]
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed prediction row: {err}") from None
    outputs = body[OUTPUTS_KEY]
    if not isinstance(outputs, Mapping) or {LOGITS_KEY, CLASSES_KEY} - set(outputs):
        raise ValueError(f"{OUTPUTS_KEY!r} must map {LOGITS_KEY!r} and {CLASSES_KEY!r}")
    logits, classes = outputs[LOGITS_KEY], outputs[CLASSES_KEY]
    for name, column in ((LOGITS_KEY, logits), (CLASSES_KEY, classes)):
        if not isinstance(column, list) or len(column) != expected_rows:
            raise ValueError(f"expected {expected_rows} {name}, got {_describe(column)}")
    return logits, classes


def decode_predictions(
    body: Any, expected_rows: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Response body, row or columnar -> (logits float32 [N, classes], classes int64 [N]).

    Raises:
        ValueError: when the body is not a well-formed answer for `expected_rows` images;
            load tests count that as a failure, not a success.
    """
    if not isinstance(body, Mapping) or not ({PREDICTIONS_KEY, OUTPUTS_KEY} & set(body)):
        raise ValueError(
            f"response has no {PREDICTIONS_KEY!r} or {OUTPUTS_KEY!r}: {str(body)[:200]}"
        )
    raw_logits, raw_classes = _columns(body, expected_rows)
    try:
        logits = np.asarray(raw_logits, dtype=np.float32)
        classes = np.asarray(raw_classes, dtype=np.int64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"malformed prediction row: {err}") from None
    if logits.shape != (expected_rows, num_classes) or not np.all(np.isfinite(logits)):
        raise ValueError(f"logits have shape {logits.shape} or non-finite values")
    if classes.shape != (expected_rows,) or not np.array_equal(classes, logits.argmax(axis=1)):
        raise ValueError("classes disagree with the arg-max of the logits")
    return logits, classes
