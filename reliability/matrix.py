"""The shared matrix of hostile and broken requests, as data.

Every REST case goes unchanged to every stack's predict URL (the stacks share one payload
schema, digitnet.codec), every gRPC case to every gRPC endpoint; a case of the binary body
(digitnet.binary_codec) goes to every stack whose plugin lists that codec (`codecs`), and
shows as skipped, with the reason, for the others. A case says what a stack
that validates with the codec must answer: the status, the codec's `reason` and a fragment
of the message that names the problem. TF Serving validates with its own code, so its
answers are recorded as they are, not judged against these expectations.

The TorchServe handler tests (tests/services/torchserve/) import the REST cases from here
too, so a case added here is tried in-process on the worker and over HTTP on every stack.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from digitnet.binary_codec import BINARY_CONTENT_TYPE, FP32, HEADER, MAGIC
from digitnet.codec import JSON_CONTENT_TYPE
from digitnet.spec import ModelSpec, ServingLimits
from digitnet.wire import BINARY, JSON

# The limits the stacks run with (the same variables reach every server).
SPEC = ModelSpec.from_env()
LIMITS = ServingLimits.from_env()
SIDE = SPEC.side
# Nesting far beyond Python's recursion limit (1000): a recursive parser must refuse it.
DEEP_NESTING = 50_000
# An integer literal too large for float64 (max ~1.8e308) yet within Python's 4300-digit
# limit for int parsing, so it reaches the numeric conversion.
HUGE_INTEGER = "1" + "0" * 400


def image(value: object = 0.5, rows: int = SIDE, cols: int = SIDE) -> list[list[object]]:
    return [[value] * cols for _ in range(rows)]


def body(document: object) -> bytes:
    return json.dumps(document).encode()


def with_literal(literal: str) -> bytes:
    """A one-image body whose first pixel is `literal`, written as-is into the JSON text
    (NaN, Infinity and out-of-range numbers cannot come from json.dumps of a float)."""
    text = json.dumps({"instances": [image()]})
    return text.replace("0.5", literal, 1).encode()


def good_body(count: int = 2) -> bytes:
    return body({"instances": [image(0.25)] * count})


def tensor_body(shape: tuple[int, ...], dtype: str = FP32, fill: float = 0.5) -> bytes:
    """A binary request body written field by field (digitnet.binary_codec's layout), so
    that a case can break one field; "FP64" writes float64 data."""
    values = np.full(shape, fill, dtype="<f8" if dtype == "FP64" else "<f4")
    dims = struct.pack(f"<{len(shape)}I", *shape)
    return HEADER.pack(MAGIC, dtype.encode("ascii"), len(shape)) + dims + values.tobytes()


@dataclass(frozen=True)
class BadRequest:
    """A request body and the status, codec reason and message fragment it must produce."""

    name: str
    body: bytes
    status: int
    reason: str
    needle: str
    content_type: str | None = JSON_CONTENT_TYPE
    # The body codec it is written in (digitnet.wire); only stacks that speak it get it.
    codec: str = JSON
    # False when a server's front (TorchServe's Netty frontend) refuses it before the
    # request reaches the code that validates with the codec.
    reaches_handler: bool = True
    # What the case is about, for the printed matrix.
    about: str = ""


BAD_REQUESTS = [
    BadRequest("malformed_json", b'{"instances": [[[0.5,', 400, "malformed_json", "malformed",
               about="JSON that stops mid-number"),
    BadRequest("truncated_json", good_body(1)[:-9], 400, "malformed_json", "malformed",
               about="a valid body cut short"),
    BadRequest("not_utf8", b'{"instances": "\xff\xfe"}', 400, "malformed_json", "UTF-8",
               about="bytes that are not UTF-8"),
    BadRequest("deeply_nested", b"[" * DEEP_NESTING + b"]" * DEEP_NESTING, 400, "too_deep",
               "too deep", about=f"{DEEP_NESTING} nested arrays"),
    BadRequest("missing_key", body({}), 400, "wrong_schema", "instances",
               about="{} without instances"),
    BadRequest("misspelled_key", body({"instance": [image()]}), 400, "wrong_schema",
               "'instance'", about='"instance" for "instances"'),
    BadRequest("extra_key", body({"instances": [image()], "signature": "x"}), 400,
               "wrong_schema", "'signature'", about="an unknown key next to instances"),
    BadRequest("not_an_object", body([image()]), 400, "wrong_schema", "JSON object",
               about="a bare list"),
    BadRequest("null_body", b"null", 400, "wrong_schema", "JSON object", about="JSON null"),
    BadRequest("instances_not_list", body({"instances": "abc"}), 400, "wrong_schema", "list",
               about="instances is a string"),
    BadRequest("rank_1_image", body({"instances": [[0.5] * SIDE]}), 400, "wrong_shape",
               "instances[0][0] must be a list", about="an image without its rows"),
    BadRequest("rank_4_batch", body({"instances": [[image()]]}), 400, "wrong_shape",
               "instances[0]", about="one axis too many"),
    BadRequest("short_rows", body({"instances": [image(rows=SIDE - 1)]}), 400, "wrong_shape",
               f"[{SIDE}, {SIDE}]", about=f"{SIDE - 1} rows"),
    BadRequest("short_cols", body({"instances": [image(cols=SIDE - 1)]}), 400, "wrong_shape",
               "instances[0][0]", about=f"{SIDE - 1} columns"),
    BadRequest("strings", body({"instances": [image("0.5")]}), 400, "wrong_dtype", "str",
               about='"0.5" strings as pixels'),
    BadRequest("nulls", body({"instances": [image(None)]}), 400, "wrong_dtype", "null",
               about="null pixels"),
    BadRequest("bools", body({"instances": [image(True)]}), 400, "wrong_dtype", "bool",
               about="true as pixels"),
    BadRequest("nan", with_literal("NaN"), 400, "non_finite", "NaN", about="a NaN literal"),
    BadRequest("infinity", with_literal("-Infinity"), 400, "non_finite", "finite",
               about="a -Infinity literal"),
    BadRequest("overflowing_float", with_literal("1e309"), 400, "non_finite", "infinite",
               about="1e309, parsed to inf"),
    BadRequest("out_of_range", body({"instances": [image(1e9)]}), 400, "out_of_range",
               "pixel values", about="1e9 pixels"),
    BadRequest("huge_float", body({"instances": [image(1e308)]}), 400, "out_of_range",
               "pixel values", about="1e308, the edge of float64"),
    BadRequest("huge_integer", with_literal(HUGE_INTEGER), 400, "out_of_range",
               "pixel values", about="a 401-digit integer"),
    BadRequest("empty_batch", body({"instances": []}), 400, "empty_batch", "empty",
               about="instances: []"),
    BadRequest("batch_over_max", body({"instances": [image()] * (LIMITS.max_batch + 1)}), 413,
               "batch_too_large", f"{LIMITS.max_batch + 1} instances",
               about=f"{LIMITS.max_batch + 1} images (max {LIMITS.max_batch})"),
    BadRequest("body_over_max", good_body(1) + b" " * LIMITS.max_body_bytes, 413,
               "body_too_large", "exceeds", reaches_handler=False,
               about=f"a body over {LIMITS.max_body_bytes} bytes"),
    BadRequest("text_plain", body({"instances": [image()]}), 415, "unsupported_media_type",
               "text/plain", content_type="text/plain", about="Content-Type: text/plain"),
    BadRequest("form_urlencoded", b"instances=1", 415, "unsupported_media_type",
               "application/x-www-form-urlencoded",
               content_type="application/x-www-form-urlencoded", about="a form post"),
    BadRequest("no_content_type", body({"instances": [image()]}), 415,
               "unsupported_media_type", "Content-Type must be application/json", content_type=None,
               about="no Content-Type header"),
]  # fmt: skip


def _binary(name: str, raw: bytes, status: int, reason: str, needle: str,
            about: str) -> BadRequest:  # fmt: skip
    return BadRequest(name, raw, status, reason, needle, BINARY_CONTENT_TYPE, codec=BINARY,
                      about=f"binary: {about}")  # fmt: skip


ONE = (1, SIDE, SIDE)
# Errors stay JSON for binary requests too, so each is judged like a JSON case.
BAD_REQUESTS += [
    _binary("binary_truncated_header", tensor_body(ONE)[:10], 400, "truncated", "cut short",
            "the first 10 header bytes"),
    _binary("binary_wrong_magic", good_body(1), 400, "wrong_magic", "DNT1",
            "a JSON body labelled binary"),
    _binary("binary_wrong_dtype", tensor_body(ONE, "FP64"), 400, "wrong_dtype", "'FP64'",
            "float64 data tagged FP64"),
    _binary("binary_wrong_shape", tensor_body((1, SIDE - 1, SIDE)), 400, "wrong_shape",
            f"[N, {SIDE}, {SIDE}]", f"[1, {SIDE - 1}, {SIDE}]"),
    _binary("binary_wrong_length", tensor_body(ONE)[:-4], 400, "wrong_length",
            f"needs {SIDE * SIDE * 4} data bytes", "one float short of its shape"),
    _binary("binary_nan", tensor_body(ONE, fill=float("nan")), 400, "non_finite", "NaN",
            "NaN pixels"),
    _binary("binary_out_of_range", tensor_body(ONE, fill=1e9), 400, "out_of_range",
            "pixel values", "1e9 pixels"),
    _binary("binary_batch_over_max", tensor_body((LIMITS.max_batch + 1, SIDE, SIDE)), 413,
            "batch_too_large", f"{LIMITS.max_batch + 1} instances",
            f"{LIMITS.max_batch + 1} images (max {LIMITS.max_batch})"),
]  # fmt: skip

# Which stacks' answers are judged against these expectations (validates_with_codec), and
# which answers come from a server's own front end (front_answers), is each stack
# plugin's declaration (services/<stack>/).


# --- gRPC (TF Serving's PredictionService) ----------------------------------------------


@dataclass(frozen=True)
class GrpcCase:
    """A PredictRequest built by `build(spec)`, and the gRPC status code TF Serving is
    expected to answer with (None: no expectation, e.g. it may simply compute an answer).
    Informative only: TF Serving's answers are recorded as they are."""

    name: str
    about: str
    build: Callable[[ModelSpec], Any] = field(repr=False)
    expected_code: str | None


def _predict_request(spec: ModelSpec, tensor: Any | None = None, input_key: str | None = None,
                     model: str | None = None, signature: str | None = None) -> Any:
    # Imported here: TensorFlow takes seconds to import and only gRPC callers need it.
    from tensorflow_serving.apis import predict_pb2

    from digitnet.spec import INPUT_KEY, SIGNATURE_NAME

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model or spec.name
    request.model_spec.signature_name = signature or SIGNATURE_NAME
    if tensor is not None:
        request.inputs[input_key or INPUT_KEY].CopyFrom(tensor)
    return request


def _tensor(values: Any, dtype: str) -> Any:
    import numpy as np
    import tensorflow as tf

    return tf.make_tensor_proto(np.asarray(values, dtype=dtype))


def _images(count: int, side: int, fill: float = 0.5) -> list:
    return [[[fill] * side for _ in range(side)] for _ in range(count)]


def _string_tensor(spec: ModelSpec) -> Any:
    import tensorflow as tf

    return tf.make_tensor_proto([[["x"] * spec.side] * spec.side])


GRPC_CASES = [
    GrpcCase("float64_tensor", "images as DT_DOUBLE",
             lambda s: _predict_request(s, _tensor(_images(1, s.side), "float64")),
             "INVALID_ARGUMENT"),
    GrpcCase("int32_tensor", "images as DT_INT32",
             lambda s: _predict_request(s, _tensor(_images(1, s.side, 0), "int32")),
             "INVALID_ARGUMENT"),
    GrpcCase("string_tensor", "images as DT_STRING",
             lambda s: _predict_request(s, _string_tensor(s)), "INVALID_ARGUMENT"),
    GrpcCase("rank_2_tensor", "one image without the batch axis",
             lambda s: _predict_request(s, _tensor(_images(1, s.side)[0], "float32")),
             "INVALID_ARGUMENT"),
    GrpcCase("rank_4_tensor", "[1, side, side, 1]",
             lambda s: _predict_request(s, _tensor([[[[0.5]] * s.side] * s.side], "float32")),
             "INVALID_ARGUMENT"),
    GrpcCase("wrong_side_tensor", "[1, side - 1, side]",
             lambda s: _predict_request(
                 s, _tensor([[[0.5] * s.side] * (s.side - 1)], "float32")),
             "INVALID_ARGUMENT"),
    GrpcCase("empty_batch_tensor", "[0, side, side]",
             lambda s: _predict_request(s, _tensor(_images(0, s.side), "float32")), None),
    GrpcCase("nan_tensor", "NaN pixels (no JSON in the way)",
             lambda s: _predict_request(s, _tensor(_images(1, s.side, float("nan")), "float32")),
             None),
    GrpcCase("batch_over_max_tensor", f"{LIMITS.max_batch + 1} images",
             lambda s: _predict_request(s, _tensor(_images(LIMITS.max_batch + 1, s.side),
                                                   "float32")),
             # max_batch_size in batching_parameters.txt, no large-batch splitting.
             "INVALID_ARGUMENT"),
    GrpcCase("missing_input", "no input tensor", lambda s: _predict_request(s),
             "INVALID_ARGUMENT"),
    GrpcCase("unknown_input_key", 'input named "pixels"',
             lambda s: _predict_request(s, _tensor(_images(1, s.side), "float32"), "pixels"),
             "INVALID_ARGUMENT"),
    GrpcCase("unknown_model", 'model "resnet"',
             lambda s: _predict_request(s, _tensor(_images(1, s.side), "float32"),
                                        model="resnet"), "NOT_FOUND"),
    GrpcCase("unknown_signature", 'signature "train"',
             lambda s: _predict_request(s, _tensor(_images(1, s.side), "float32"),
                                        signature="train"), "FAILED_PRECONDITION"),
]  # fmt: skip
