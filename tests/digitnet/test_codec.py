"""The one payload schema: what it accepts, and the 4xx it names for what it refuses."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digitnet.codec import (
    PayloadError,
    decode_predictions,
    decode_request,
    encode_predictions,
    encode_request,
)
from digitnet.spec import ModelSpec, ServingLimits

SPEC = ModelSpec()
LIMITS = ServingLimits(max_batch=4, max_body_bytes=20_000)
GOOD = [[[0.5] * 8 for _ in range(8)]]


def body(instances) -> bytes:
    return json.dumps({"instances": instances}).encode()


def refusal(payload) -> PayloadError:
    with pytest.raises(PayloadError) as caught:
        decode_request(payload, SPEC, LIMITS)
    return caught.value


def test_round_trip_of_a_good_request():
    images = np.random.default_rng(0).random((3, 8, 8), dtype=np.float32)
    decoded = decode_request(json.dumps(encode_request(images)), SPEC, LIMITS)
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, images)


def test_integers_are_accepted_as_pixels():
    decoded = decode_request(body([[[1] * 8] * 8]), SPEC, LIMITS)
    assert decoded.shape == (1, 8, 8) and decoded.dtype == np.float32


def test_already_parsed_bodies_are_validated_too():
    assert decode_request({"instances": GOOD}, SPEC, LIMITS).shape == (1, 8, 8)
    assert refusal({"instances": [[[float("nan")] * 8] * 8]}).reason == "non_finite"
    for parsed in ([1, 2], 3.5, None, True):
        assert refusal(parsed).reason == "wrong_schema"


@pytest.mark.parametrize(
    ("payload", "status", "reason", "words"),
    [
        (b'{"instances": [[[0.5', 400, "malformed_json", "malformed JSON"),
        (b"not json at all", 400, "malformed_json", "malformed JSON"),
        (b"\xff\xfe", 400, "malformed_json", "UTF-8"),
        (b"[1, 2]", 400, "wrong_schema", "JSON object"),
        (b'{"instance": []}', 400, "wrong_schema", "instance"),
        (b'{"instances": [], "extra": 1}', 400, "wrong_schema", "extra"),
        (b'{"instances": {"a": 1}}', 400, "wrong_schema", "list of images"),
        (body([]), 400, "empty_batch", "empty"),
        (body(GOOD * 5), 413, "batch_too_large", "maximum of 4"),
        (body([[0.5] * 8]), 400, "wrong_shape", "instances[0]"),
        (body([[[0.5] * 7] * 8]), 400, "wrong_shape", "instances[0][0]"),
        (body([[[[0.5]] * 8] * 8]), 400, "wrong_dtype", "numbers"),
        (body([[["0.5"] * 8] * 8]), 400, "wrong_dtype", "str"),
        (body([[[None] * 8] * 8]), 400, "wrong_dtype", "null"),
        (body([[[True] * 8] * 8]), 400, "wrong_dtype", "bool"),
        (b'{"instances": [[' + b",".join([b"[NaN,0,0,0,0,0,0,0]"] * 8) + b"]]}",
         400, "non_finite", "NaN"),
        (b'{"instances": [[' + b",".join([b"[Infinity,0,0,0,0,0,0,0]"] * 8) + b"]]}",
         400, "non_finite", "Infinity"),
        (body([[[1e300] * 8] * 8]), 400, "out_of_range", "within"),
        (b'{"instances": [[' + b",".join([b"[1e999,0,0,0,0,0,0,0]"] * 8) + b"]]}",
         400, "non_finite", "infinite"),
        (b"[" * 100_000 + b"]" * 100_000, 413, "body_too_large", "exceeds"),
        (b"[" * 5000 + b"]" * 5000, 400, "too_deep", "too deep"),
    ],
)
def test_bad_requests_are_refused_with_a_named_problem(payload, status, reason, words):
    error = refusal(payload)
    assert (error.status, error.reason) == (status, reason)
    assert words in error.message
    assert json.loads(json.dumps(error.to_json()))["error"] == error.message


def test_predictions_round_trip_and_check_classes():
    logits = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5]], dtype=np.float32)
    encoded = json.loads(json.dumps(encode_predictions(logits)))
    decoded, classes = decode_predictions(encoded, 2, 3)
    np.testing.assert_array_equal(decoded, logits)
    assert classes.tolist() == [1, 0]
    encoded["predictions"][0]["classes"] = 2
    with pytest.raises(ValueError, match="arg-max"):
        decode_predictions(encoded, 2, 3)
    with pytest.raises(ValueError, match="expected 3"):
        decode_predictions(encode_predictions(logits), 3, 3)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=9)
    | st.dictionaries(st.text(max_size=9), children, max_size=3),
    max_leaves=80,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_value_is_accepted_as_valid_images_or_refused_with_4xx(value):
    payload = {"instances": value} if not isinstance(value, dict) else value
    try:
        images = decode_request(payload, SPEC, LIMITS)
    except PayloadError as err:
        assert 400 <= err.status < 500 and err.message
    else:
        assert images.shape[1:] == (8, 8) and np.all(np.isfinite(images))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_escape_as_another_exception(raw):
    try:
        decode_request(raw, SPEC, LIMITS)
    except PayloadError as err:
        assert 400 <= err.status < 500
