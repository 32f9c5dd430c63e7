"""Bad requests and the answer each must get, shared by the handler and server tests."""

from __future__ import annotations

import json
from dataclasses import dataclass

from digitnet.codec import JSON_CONTENT_TYPE
from digitnet.spec import ModelSpec, ServingLimits

SPEC = ModelSpec()
LIMITS = ServingLimits()
SIDE = SPEC.side


def image(value: object = 0.5, rows: int = SIDE, cols: int = SIDE) -> list[list[object]]:
    return [[value] * cols for _ in range(rows)]


def body(document: object) -> bytes:
    return json.dumps(document).encode()


@dataclass(frozen=True)
class BadRequest:
    """A request body and the status, codec reason and message fragment it must produce."""

    name: str
    body: bytes
    status: int
    reason: str
    needle: str
    content_type: str | None = JSON_CONTENT_TYPE
    # False when TorchServe's frontend refuses it before any worker sees it.
    reaches_handler: bool = True


BAD_REQUESTS = [
    BadRequest("malformed_json", b'{"instances": [[[0.5,', 400, "malformed_json", "malformed"),
    BadRequest("not_utf8", b'{"instances": "\xff\xfe"}', 400, "malformed_json", "UTF-8"),
    BadRequest("missing_key", body({}), 400, "wrong_schema", "instances"),
    BadRequest(
        "misspelled_key", body({"instance": [image()]}), 400, "wrong_schema", "'instance'"
    ),
    BadRequest(
        "extra_key", body({"instances": [image()], "signature": "x"}), 400, "wrong_schema",
        "'signature'",
    ),
    BadRequest("not_an_object", body([image()]), 400, "wrong_schema", "JSON object"),
    BadRequest("null_body", b"null", 400, "wrong_schema", "JSON object"),
    BadRequest(
        "instances_not_list", body({"instances": "abc"}), 400, "wrong_schema", "list"
    ),
    BadRequest("rank_1_image", body({"instances": [[0.5] * SIDE]}), 400, "wrong_shape",
               "instances[0][0] must be a list"),
    BadRequest("rank_4_batch", body({"instances": [[image()]]}), 400, "wrong_shape",
               "instances[0]"),
    BadRequest("short_rows", body({"instances": [image(rows=SIDE - 1)]}), 400, "wrong_shape",
               f"[{SIDE}, {SIDE}]"),
    BadRequest("short_cols", body({"instances": [image(cols=SIDE - 1)]}), 400, "wrong_shape",
               "instances[0][0]"),
    BadRequest("strings", body({"instances": [image("0.5")]}), 400, "wrong_dtype", "str"),
    BadRequest("nulls", body({"instances": [image(None)]}), 400, "wrong_dtype", "null"),
    BadRequest("bools", body({"instances": [image(True)]}), 400, "wrong_dtype", "bool"),
    BadRequest(
        "nan", b'{"instances": [' + json.dumps(image()).replace("0.5", "NaN", 1).encode()
        + b"]}", 400, "non_finite", "NaN",
    ),
    BadRequest(
        "infinity", b'{"instances": [' + json.dumps(image()).replace("0.5", "-Infinity", 1)
        .encode() + b"]}", 400, "non_finite", "finite",
    ),
    BadRequest("out_of_range", body({"instances": [image(1e9)]}), 400, "out_of_range",
               "pixel values"),
    BadRequest("empty_batch", body({"instances": []}), 400, "empty_batch", "empty"),
    BadRequest(
        "batch_over_max", body({"instances": [image()] * (LIMITS.max_batch + 1)}), 413,
        "batch_too_large", f"{LIMITS.max_batch + 1} instances",
    ),
    BadRequest(
        "body_over_max",
        b'{"instances": [' + json.dumps(image()).encode() + b"]}"
        + b" " * LIMITS.max_body_bytes,
        413, "body_too_large", "exceeds", reaches_handler=False,
    ),
    BadRequest("text_plain", body({"instances": [image()]}), 415, "unsupported_media_type",
               "text/plain", content_type="text/plain"),
    BadRequest("form_urlencoded", b"instances=1", 415, "unsupported_media_type",
               "application/x-www-form-urlencoded",
               content_type="application/x-www-form-urlencoded"),
    BadRequest("no_content_type", body({"instances": [image()]}), 415,
               "unsupported_media_type", "no Content-Type", content_type=None),
]


def good_body(count: int = 2) -> bytes:
    return body({"instances": [image(0.25)] * count})
