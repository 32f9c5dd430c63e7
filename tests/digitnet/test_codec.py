"""The one payload schema: what it accepts, and the 4xx it names for what it refuses."""

from __future__ import annotations

import json
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digitnet import codec
from digitnet.codec import (
    PayloadError,
    RequestFormat,
    decode_predictions,
    decode_request,
    decode_request_format,
    encode_predictions,
    encode_predictions_json,
    encode_request,
    parse_server_timing,
    server_timing,
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


# --- TF Serving's columnar format ------------------------------------------------------
# util/json_tensor.cc (FillPredictRequestFromJson): "inputs" holds the whole batch tensor,
# bare when the signature has one input or under its alias; the response mirrors the format.


def columnar(images, named: bool = False) -> bytes:
    batch = encode_request(images)["instances"]
    return json.dumps({"inputs": {"images": batch} if named else batch}).encode()


@pytest.mark.parametrize("named", [False, True], ids=["bare", "named"])
def test_columnar_request_decodes_to_the_same_images_as_a_row_request(named):
    images = np.random.default_rng(1).random((3, 8, 8), dtype=np.float32)
    decoded, fmt = decode_request_format(columnar(images, named), SPEC, LIMITS)
    assert fmt is RequestFormat.COLUMNAR
    np.testing.assert_array_equal(decoded, images)
    np.testing.assert_array_equal(decode_request(columnar(images, named), SPEC, LIMITS), images)


def test_row_request_reports_the_row_format():
    _, fmt = decode_request_format(body(GOOD), SPEC, LIMITS)
    assert fmt is RequestFormat.ROW


@pytest.mark.parametrize(
    ("payload", "status", "reason", "words"),
    [
        # TF Serving refuses this pair too ("expecting only one of 'inputs' or 'instances'").
        ({"instances": GOOD, "inputs": GOOD}, 400, "wrong_schema", "only one of"),
        ({"inputs": GOOD, "extra": 1}, 400, "wrong_schema", "'extra'"),
        ({"inputs": {"pixels": GOOD}}, 400, "wrong_schema", "'pixels'"),
        ({"inputs": {"images": GOOD, "x": GOOD}}, 400, "wrong_schema", "'x'"),
        ({"inputs": {}}, 400, "wrong_schema", '"images"'),
        ({"inputs": 3}, 400, "wrong_schema", '"inputs" must be a list'),
        ({"inputs": {"images": "abc"}}, 400, "wrong_schema", '"inputs.images" must be a list'),
        ({"inputs": []}, 400, "empty_batch", "empty"),
        ({"inputs": GOOD * 5}, 413, "batch_too_large", "maximum of 4"),
        # Rows of one image without its batch axis (3 rows: within LIMITS.max_batch).
        ({"inputs": GOOD[0][:3]}, 400, "wrong_shape", "inputs[0][0] must be a list"),
        ({"inputs": {"images": [[[0.5] * 7] * 8]}}, 400, "wrong_shape", "inputs.images[0][0]"),
        ({"inputs": [[["0.5"] * 8] * 8]}, 400, "wrong_dtype", "str"),
        ({"inputs": [[[float("inf")] * 8] * 8]}, 400, "non_finite", "finite"),
        ({"inputs": [[[1e9] * 8] * 8]}, 400, "out_of_range", "within"),
    ],
)
def test_bad_columnar_requests_are_refused_with_a_named_problem(payload, status, reason, words):
    for form in (payload, json.dumps(payload).encode()):
        error = refusal(form)
        assert (error.status, error.reason) == (status, reason), error.message
        assert words in error.message


def test_row_messages_are_unchanged_by_the_columnar_format():
    """Clients and the reliability matrix match on these texts."""
    assert refusal({"instance": GOOD}).message == (
        "body must have exactly one key \"instances\"; got ['instance']"
    )
    assert refusal({"instances": "x"}).message == '"instances" must be a list of images'
    assert refusal([1]).message == 'body must be a JSON object {"instances": [...]}'


def test_columnar_predictions_round_trip():
    logits = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5]], dtype=np.float32)
    encoded = json.loads(json.dumps(encode_predictions(logits, RequestFormat.COLUMNAR)))
    assert encoded == {"outputs": {"logits": logits.tolist(), "classes": [1, 0]}}
    decoded, classes = decode_predictions(encoded, 2, 3)
    np.testing.assert_array_equal(decoded, logits)
    assert classes.tolist() == [1, 0]
    assert encode_predictions(logits) == encode_predictions(logits, RequestFormat.ROW)


@pytest.mark.parametrize(
    ("outputs", "words"),
    [
        ({"logits": [[0.1, 2.0, -1.0]]}, "'classes'"),
        ([[0.1, 2.0, -1.0]], "must map"),
        ({"logits": [[0.1, 2.0, -1.0]], "classes": [1, 1]}, "expected 1 classes"),
        ({"logits": [[0.1, 2.0, -1.0]], "classes": [0]}, "arg-max"),
        ({"logits": [[0.1, 2.0]], "classes": [1]}, "shape"),
    ],
)
def test_malformed_columnar_predictions_are_errors(outputs, words):
    with pytest.raises(ValueError, match=words):
        decode_predictions({"outputs": outputs}, 1, 3)


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


def _outcome(raw: bytes):
    try:
        return decode_request_format(raw, SPEC, LIMITS)[0].tolist()
    except PayloadError as err:
        return (err.status, err.reason, err.message)


def _standard_library_outcome(raw: bytes):
    def refuse(_raw):
        raise codec.orjson.JSONDecodeError("forced", "", 0)

    with mock.patch.object(codec.orjson, "loads", refuse):
        return _outcome(raw)


_texts = st.one_of(
    json_values.map(lambda v: json.dumps({"instances": v} if not isinstance(v, dict) else v)),
    st.sampled_from(['{"instances": [NaN]}', '{"instances": [1e400]}', '{"instances": "\\ud800"}',
                     '{"instances": [' + "9" * 400 + "]}", '\ufeff{"instances": []}',
                     '{"instances": [[[0.5]]]} x', '{"instances": [1,]}',
                     # Beyond 64 bits orjson reads a float, the standard library an int.
                     '{"instances": [-9223372036854775809]}',
                     '{"instances": [[[18446744073709551616]]]}',
                     '{"instances": [[[0.1234567890123456789]]]}']),
)


@settings(max_examples=300, deadline=None)
@given(_texts, st.binary(max_size=3))
def test_the_fast_parser_answers_every_body_as_the_standard_library_does(text, tail):
    # Every outcome, images or the exact refusal, is the standard library's alone.
    for raw in (text.encode(), text.encode() + tail):
        assert _outcome(raw) == _standard_library_outcome(raw)


def test_what_only_the_standard_library_reads_is_still_accepted():
    # orjson refuses an escaped lone surrogate; the fallback parses it, then the schema
    # names the problem exactly as before.
    err = refusal(b'{"instances": [[["\\ud800"]]]}')
    assert (err.status, err.reason) == (400, "wrong_shape")


@pytest.mark.parametrize("fmt", list(RequestFormat))
def test_reply_bytes_carry_the_same_float32_logits_in_either_format(fmt):
    logits = np.random.default_rng(3).standard_normal((3, 10)).astype(np.float32)
    raw = encode_predictions_json(logits, fmt)
    decoded, classes = decode_predictions(json.loads(raw), 3, 10)
    assert np.array_equal(decoded, logits) and np.array_equal(classes, logits.argmax(axis=1))
    # Shortest round-trip float32 text: fewer bytes than the float64 repr of tolist().
    assert len(raw) < len(json.dumps(encode_predictions(logits, fmt), separators=(",", ":")))


def test_server_timing_round_trips_and_skips_what_it_cannot_read():
    header = server_timing({"decode": 0.000041, "model": 0.0003})
    assert header == "decode;dur=0.041, model;dur=0.300"
    assert parse_server_timing(header) == {"decode": 0.041, "model": 0.3}
    assert parse_server_timing('cache;desc="hit", db;dur=x, app;dur=2.5;desc=a') == {"app": 2.5}
    assert parse_server_timing(None) == {}
