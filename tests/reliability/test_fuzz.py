"""Property-based fuzzing of request validation on the real servers: whatever body and
Content-Type arrive, the answer is 200 with one prediction per image or a 4xx JSON error
with a reason, never a 5xx or a stack trace, and the stack keeps answering correctly.

The strategies stay close to valid requests (the right keys, shapes around 8 x 8, odd
leaves such as NaN, 400-digit integers and strings) so that they reach deep validation
paths rather than dying at the JSON parser; digitnet/codec's own fuzz covers raw bytes.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digitnet.codec import JSON_CONTENT_TYPE
from harness.lifecycle import RunningStack
from harness.payload import check_prediction
from reliability.client import Connection, endpoint_of
from reliability.matrix import HUGE_INTEGER, SIDE
from reliability.robustness import LEAK_MARKERS, error_document

pytestmark = pytest.mark.integration

EXAMPLES = 60
TIMEOUT_S = 30.0

leaf = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.just(HUGE_INTEGER),  # spliced in as a raw literal below
    st.sampled_from(["0.5", "", None, True, False]),
    st.lists(st.floats(0, 1), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
pixel = st.one_of(st.floats(0, 1), st.floats(0, 1), leaf)
row = st.lists(pixel, min_size=SIDE - 1, max_size=SIDE + 1)
image = st.lists(row, min_size=SIDE - 1, max_size=SIDE + 1)
instances = st.one_of(st.lists(image, max_size=3), leaf, image)
document = st.one_of(
    st.fixed_dictionaries({"instances": instances}),
    st.dictionaries(st.sampled_from(["instances", "instance", "inputs", "signature_name"]),
                    instances, max_size=3),
    instances,
)


def encode(value: object) -> bytes:
    text = json.dumps(value, allow_nan=True)
    # A JSON number too large for float64 cannot come from json.dumps of a Python float.
    return text.replace(json.dumps(HUGE_INTEGER), HUGE_INTEGER).encode()


bodies = st.one_of(
    document.map(encode),
    # Valid-looking JSON cut anywhere: truncated uploads.
    st.tuples(document.map(encode), st.floats(0, 1)).map(
        lambda pair: pair[0][: int(len(pair[0]) * pair[1])]
    ),
)
content_types = st.sampled_from(
    [JSON_CONTENT_TYPE, JSON_CONTENT_TYPE, "application/json; charset=utf-8", "text/plain",
     None]
)


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=bodies, content_type=content_types)
def test_any_request_gets_predictions_or_a_named_4xx(
    running: RunningStack, body: bytes, content_type: str | None
) -> None:
    reply = Connection(endpoint_of(running), TIMEOUT_S, fresh=True).post(body, content_type)

    text = reply.body.decode(errors="replace")
    assert not any(marker.lower() in text.lower() for marker in LEAK_MARKERS), text[:300]
    assert reply.status is not None, reply
    if reply.status == 200:
        sent = json.loads(body)
        assert len(json.loads(reply.body)["predictions"]) == len(sent["instances"])
    else:
        assert 400 <= reply.status < 500, text[:300]
        error = error_document(reply.body, reply.content_type)
        assert error is not None and error.get("reason"), text[:300]


def test_stack_answers_correctly_after_the_fuzzing(running: RunningStack) -> None:
    assert running.ready(30.0)
    assert check_prediction(running.rest, running.payloads()) is None
