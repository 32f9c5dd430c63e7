"""The binary tensor body: round trips, and the 4xx it names for what it refuses, with the
JSON codec's limits and messages where the two share a check."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from digitnet.binary_codec import (
    BINARY_CONTENT_TYPE,
    HEADER,
    MAGIC,
    decode_binary_predictions,
    decode_binary_request,
    encode_binary_predictions,
    encode_binary_request,
)
from digitnet.codec import PayloadError, decode_request, encode_request
from digitnet.spec import ModelSpec, ServingLimits
from digitnet.wire import BINARY_WIRE, JSON_WIRE, WIRE_CODECS, media_type

SPEC = ModelSpec()
LIMITS = ServingLimits(max_batch=64, max_body_bytes=20_000)
SIDE = SPEC.side


def images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, SIDE, SIDE), dtype=np.float32)


def record(shape: tuple[int, ...], dtype: bytes = b"FP32", data: bytes | None = None,
           magic: bytes = MAGIC) -> bytes:  # fmt: skip
    """A record written field by field, independently of the encoder under test."""
    if data is None:
        data = np.full(shape, 0.5, dtype="<f4").tobytes()
    dims = struct.pack(f"<{len(shape)}I", *shape)
    return HEADER.pack(magic, dtype, len(shape)) + dims + data


def refusal(body: bytes, limits: ServingLimits = LIMITS) -> PayloadError:
    with pytest.raises(PayloadError) as caught:
        decode_binary_request(body, SPEC, limits)
    return caught.value


@pytest.mark.parametrize("count", [1, 64])
def test_round_trip_of_a_request_is_exact(count: int) -> None:
    sent = images(count)
    body = encode_binary_request(sent)

    assert len(body) == 28 + count * SIDE * SIDE * 4
    decoded = decode_binary_request(body, SPEC, LIMITS)
    assert decoded.dtype == np.float32 and decoded.shape == (count, SIDE, SIDE)
    np.testing.assert_array_equal(decoded, sent)
    # A writable copy, not a read-only view of the body (torch warns on those).
    assert decoded.flags.writeable


def test_the_layout_is_the_documented_one() -> None:
    body = encode_binary_request(np.full((2, SIDE, SIDE), 0.25, dtype=np.float32))
    assert body == record((2, SIDE, SIDE), data=np.full((2, SIDE, SIDE), 0.25, "<f4").tobytes())
    assert body[:4] == b"DNT1" and body[4:12] == b"FP32\0\0\0\0"
    assert struct.unpack_from("<4I", body, 12) == (3, 2, SIDE, SIDE)


def test_binary_and_json_requests_decode_to_the_same_images() -> None:
    sent = images(5)
    from_json = decode_request(json.dumps(encode_request(sent)), SPEC, LIMITS)
    np.testing.assert_array_equal(decode_binary_request(encode_binary_request(sent), SPEC,
                                                        LIMITS), from_json)  # fmt: skip


def test_a_memoryview_or_bytearray_body_is_read_as_well() -> None:
    body = encode_binary_request(images(2))
    for view in (bytearray(body), memoryview(body)):
        np.testing.assert_array_equal(decode_binary_request(view, SPEC, LIMITS),
                                      decode_binary_request(body, SPEC, LIMITS))  # fmt: skip


ONE = (1, SIDE, SIDE)


@pytest.mark.parametrize(
    ("body", "status", "reason", "words"),
    [
        (b"", 400, "truncated", ["cut short", "0 bytes"]),
        (MAGIC + b"FP3", 400, "truncated", ["cut short"]),
        (record(ONE)[:20], 400, "truncated", ["rank 3", "28"]),
        (b'{"instances": []}', 400, "wrong_magic", ["DNT1", '{"in']),
        (record(ONE, magic=b"DNT2"), 400, "wrong_magic", ["DNT2"]),
        (record(ONE, b"FP64", np.full(ONE, 0.5, "<f8").tobytes()), 400, "wrong_dtype",
         ["FP32", "'FP64'"]),
        (record(ONE, b"INT32"), 400, "wrong_dtype", ["'INT32'"]),
        (record((SIDE, SIDE)), 400, "wrong_shape", [f"[N, {SIDE}, {SIDE}]", f"[{SIDE}, {SIDE}]"]),
        (record((1, 1, SIDE, SIDE)), 400, "wrong_shape", ["[1, 1, 8, 8]"]),
        (record((1, SIDE - 1, SIDE)), 400, "wrong_shape", ["[1, 7, 8]"]),
        (HEADER.pack(MAGIC, b"FP32", 2**32 - 1), 400, "wrong_shape", ["rank 4294967295"]),
        (record((0, SIDE, SIDE), data=b""), 400, "empty_batch", ["empty"]),
        (record((65, SIDE, SIDE), data=b""), 413, "batch_too_large",
         ["batch of 65 instances exceeds the maximum of 64"]),
        (record((2**32 - 1, SIDE, SIDE), data=b""), 413, "batch_too_large", ["4294967295"]),
        (record(ONE)[:-4], 400, "wrong_length", ["needs 256 data bytes", "has 252"]),
        (record(ONE) + b"\0" * 4, 400, "wrong_length", ["has 260"]),
        (record((2, SIDE, SIDE), data=np.full(ONE, 0.5, "<f4").tobytes()), 400, "wrong_length",
         ["needs 512"]),
        (record(ONE, data=np.full(ONE, np.nan, "<f4").tobytes()), 400, "non_finite", ["NaN"]),
        (record(ONE, data=np.full(ONE, -np.inf, "<f4").tobytes()), 400, "non_finite",
         ["infinite"]),
        (record(ONE, data=np.full(ONE, 1001.0, "<f4").tobytes()), 400, "out_of_range",
         ["+-1000"]),
    ],
    ids=["empty", "short_fixed_header", "short_dims", "json_body", "next_version",
         "float64", "int32", "rank_2", "rank_4", "wrong_side", "absurd_rank", "empty_batch",
         "batch_over_max", "batch_of_4e9", "one_float_short", "trailing_bytes",
         "half_the_data", "nan", "minus_infinity", "out_of_range"],
)  # fmt: skip
def test_bad_body_is_refused_with_its_reason(body: bytes, status: int, reason: str,
                                             words: list[str]) -> None:  # fmt: skip
    error = refusal(body)
    assert (error.status, error.reason) == (status, reason), error
    for word in words:
        assert word in error.message, error.message
    assert error.to_json() == {"error": error.message, "reason": reason}


def test_body_over_the_limit_is_413_before_anything_is_read() -> None:
    body = encode_binary_request(images(4))
    error = refusal(body, ServingLimits(max_body_bytes=len(body) - 1))
    assert (error.status, error.reason) == (413, "body_too_large")
    assert error.message == f"body of {len(body)} bytes exceeds {len(body) - 1}"


def test_limits_and_value_checks_read_as_in_the_json_codec() -> None:
    """The shared checks give the JSON codec's very messages."""
    limits = ServingLimits(max_batch=2)
    for json_body, binary_body in [
        ({"instances": [[[0.5] * SIDE] * SIDE] * 3}, encode_binary_request(images(3))),
        ({"instances": [[[1e4] * SIDE] * SIDE]}, record(ONE, data=np.full(ONE, 1e4, "<f4")
                                                         .tobytes())),
    ]:  # fmt: skip
        with pytest.raises(PayloadError) as from_json:
            decode_request(json_body, SPEC, limits)
        assert refusal(binary_body, limits) == from_json.value


@pytest.mark.parametrize("count", [1, 64])
def test_round_trip_of_a_reply(count: int) -> None:
    logits = np.random.default_rng(1).normal(size=(count, SPEC.num_classes)).astype(np.float32)
    body = encode_binary_predictions(logits)

    assert len(body) == (16 + 8 + count * 10 * 4) + (16 + 4 + count * 4)
    got, classes = decode_binary_predictions(body, count, SPEC.num_classes)
    np.testing.assert_array_equal(got, logits)
    assert classes.dtype == np.int64
    np.testing.assert_array_equal(classes, logits.argmax(axis=1))


def reply_parts(logits: np.ndarray, classes: np.ndarray) -> bytes:
    n, c = logits.shape
    return (record((n, c), data=logits.astype("<f4").tobytes())
            + record((n,), b"INT32", classes.astype("<i4").tobytes()))  # fmt: skip


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "cut short"),
        (reply_parts(np.eye(2, 10), np.array([0, 1]))[:-1], "needs 8 data bytes"),
        (reply_parts(np.eye(2, 10), np.array([0, 1])) + b"x", "has 9"),
        (reply_parts(np.eye(3, 10), np.array([0, 1, 2])), "expected FP32 [2, 10]"),
        (reply_parts(np.eye(2, 10), np.array([0, 2])), "arg-max"),
        (reply_parts(np.full((2, 10), np.nan), np.array([0, 0])), "non-finite"),
        (record((2, 10), data=np.eye(2, 10, dtype="<f4").tobytes()), "cut short"),
        (record((2, 10), data=np.eye(2, 10, dtype="<f4").tobytes())
         + record((2,), data=np.zeros(2, "<f4").tobytes()), "expected INT32 [2]"),
        (b'{"predictions": []}', "DNT1"),
    ],
    ids=["empty", "short_classes", "trailing_byte", "three_rows", "wrong_class", "nan",
         "no_classes", "float_classes", "json_reply"],
)  # fmt: skip
def test_malformed_reply_is_a_value_error(body: bytes, words: str) -> None:
    with pytest.raises(ValueError) as caught:
        decode_binary_predictions(body, 2, SPEC.num_classes)
    assert words in str(caught.value)


def test_the_dispatch_maps_bare_media_types_to_both_codecs() -> None:
    assert WIRE_CODECS == {"application/json": JSON_WIRE, BINARY_CONTENT_TYPE: BINARY_WIRE}
    assert media_type("Application/VND.digitnet.tensor; v=1") == BINARY_CONTENT_TYPE
    assert media_type(None) == ""


@pytest.mark.parametrize("codec", [JSON_WIRE, BINARY_WIRE], ids=lambda c: c.name)
def test_each_wire_codec_round_trips_through_both_halves(codec) -> None:
    sent = images(3)
    decoded, fmt = codec.decode_request(codec.encode_request(sent), SPEC, LIMITS)
    np.testing.assert_array_equal(decoded, sent)
    logits = np.random.default_rng(2).normal(size=(3, 10)).astype(np.float32)
    got, classes = codec.decode_reply(codec.encode_reply(logits, fmt), 3, 10)
    np.testing.assert_array_equal(got, logits)
    np.testing.assert_array_equal(classes, logits.argmax(axis=1))
