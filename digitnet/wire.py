"""Which codec a predict request's Content-Type selects: the JSON schema (digitnet.codec)
or the binary tensor body (digitnet.binary_codec), each as one object with both halves.

Servers look the request's bare media type up in WIRE_CODECS (415 when it is not there)
and answer in the codec they found: `decode_request` gives the images and the reply's
format, `encode_reply` the reply's bytes, sent with `content_type`. Errors are JSON in
every codec. Clients hold one WireCodec and use `encode_request` and `decode_reply`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from digitnet.binary_codec import (
    BINARY_CONTENT_TYPE,
    decode_binary_predictions,
    decode_binary_request,
    encode_binary_predictions,
    encode_binary_request,
)
from digitnet.codec import (
    JSON_CONTENT_TYPE,
    decode_predictions,
    decode_request_format,
    encode_predictions_json,
    encode_request,
)
from digitnet.spec import ModelSpec, ServingLimits

JSON = "json"
BINARY = "binary"
# What a 415 says the predict routes accept.
ACCEPTED_CONTENT_TYPES = f"{JSON_CONTENT_TYPE} or {BINARY_CONTENT_TYPE}"


@dataclass(frozen=True)
class WireCodec:
    """One request/reply body format, server and client halves together."""

    # What ServingStack.codecs lists and the robustness matrix's cases name.
    name: str
    content_type: str
    # (body, spec, limits) -> (float32 images [N, side, side], the reply's format);
    # raises digitnet.codec.PayloadError.
    decode_request: Callable[..., tuple[np.ndarray, Any]]
    # (logits [N, classes], the request's format) -> the reply's bytes.
    encode_reply: Callable[[np.ndarray, Any], bytes]
    # float32 images [N, side, side] -> the request's bytes.
    encode_request: Callable[[np.ndarray], bytes]
    # (reply bytes, rows, classes) -> (logits float32 [N, C], classes int64 [N]);
    # raises ValueError for a malformed reply.
    decode_reply: Callable[[bytes, int, int], tuple[np.ndarray, np.ndarray]]


def _json_request(images: np.ndarray) -> bytes:
    # The standard library's text, as the REST client has always sent it.
    return json.dumps(encode_request(images)).encode()


def _json_reply(body: bytes, rows: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        document = json.loads(body)
    except ValueError as err:
        raise ValueError(f"reply is not JSON: {err}") from None
    return decode_predictions(document, rows, num_classes)


def _binary_request(body: bytes, spec: ModelSpec,
                    limits: ServingLimits) -> tuple[np.ndarray, None]:  # fmt: skip
    # One reply format only: the binary reply has no row/columnar variants.
    return decode_binary_request(body, spec, limits), None


def _binary_reply(logits: np.ndarray, fmt: None) -> bytes:
    return encode_binary_predictions(logits)


JSON_WIRE = WireCodec(JSON, JSON_CONTENT_TYPE, decode_request_format, encode_predictions_json,
                      _json_request, _json_reply)  # fmt: skip
BINARY_WIRE = WireCodec(BINARY, BINARY_CONTENT_TYPE, _binary_request, _binary_reply,
                        encode_binary_request, decode_binary_predictions)  # fmt: skip
# Bare media type (lower case, no parameters) -> codec: the servers' dispatch.
WIRE_CODECS: dict[str, WireCodec] = {c.content_type: c for c in (JSON_WIRE, BINARY_WIRE)}
CODECS_BY_NAME: dict[str, WireCodec] = {c.name: c for c in (JSON_WIRE, BINARY_WIRE)}


def media_type(content_type: str | None) -> str:
    """The bare media type of a Content-Type header ("application/json; charset=utf-8"
    -> "application/json"), as Flask's request.mimetype gives it."""
    return (content_type or "").split(";", 1)[0].strip().lower()
