"""Admission control of the real Ray Serve stack (DIGITNET_ADMISSION=on, as `make overload`
and `make floods` run it), with a bound of one running and one queued request: HAProxy
refuses part of a concurrent burst with our JSON 503 and Retry-After while every sequential
request is answered right, a client trickling its body holds no place at the replica, and
a body over the limit gets the app's 413 from HAProxy."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from urllib.parse import urlsplit

import pytest
import requests

from digitnet.artifacts import ArtifactPaths
from digitnet.codec import encode_request, too_large_document
from digitnet.data import DigitsSplit
from digitnet.spec import ServingLimits
from harness.lifecycle import RunningStack, skipped_reason, start_stack
from services.ray_serve.launch import STACK, read_status
from tests.services.burst import JSON_HEADERS, check_a_bounded_stack

pytestmark = pytest.mark.integration

HTTP_TIMEOUT_S = 30.0
# One request runs (batching off), one waits: the rest of a burst is refused.
ENV = {"DIGITNET_ADMISSION": "on", "DIGITNET_ADMIT_LIMIT": "2", "DIGITNET_BATCHING": "off"}
BURST = 24
MAX_BURSTS = 10
# Sequential requests sent while a slow client holds its request open.
WHILE_SLOW = 10


@pytest.fixture(scope="module")
def bounded(artifacts: ArtifactPaths, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[RunningStack]:  # fmt: skip
    reason = skipped_reason(STACK)
    if reason is not None:
        pytest.skip(reason)
    with ExitStack() as exits:
        yield start_stack(STACK, artifacts, tmp_path_factory.mktemp("ray-admission"), exits,
                          env=ENV)  # fmt: skip


def test_the_server_runs_with_the_bound(bounded: RunningStack) -> None:
    deployment = read_status(bounded.server)["settings"]["deployment"]
    assert deployment["max_ongoing_requests"] == 1
    assert deployment["max_queued_requests"] == 1
    assert deployment["backpressure_config"]["status_code"] == 503


def test_a_burst_is_partly_refused_and_every_sequential_request_answered(
    bounded: RunningStack, artifacts: ArtifactPaths, split: DigitsSplit
) -> None:
    check_a_bounded_stack(bounded, artifacts.torchscript, split.test_images[:64], BURST,
                          MAX_BURSTS, HTTP_TIMEOUT_S)  # fmt: skip


def test_a_trickling_body_holds_no_place_at_the_replica(
    bounded: RunningStack, split: DigitsSplit
) -> None:
    """The replica runs one request at a time here: were the slow request handed to it
    before its body arrived, every other request would wait behind it and be refused."""
    body = json.dumps(encode_request(split.test_images[:2])).encode()
    address = urlsplit(bounded.rest.url)
    with socket.create_connection((address.hostname, address.port),
                                  timeout=HTTP_TIMEOUT_S) as slow:  # fmt: skip
        slow.sendall(f"POST {address.path} HTTP/1.1\r\nHost: {address.hostname}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                     f"\r\n".encode() + body[:10])  # fmt: skip
        statuses = [requests.post(bounded.rest.url, data=body, headers=JSON_HEADERS,
                                  timeout=HTTP_TIMEOUT_S).status_code
                    for _ in range(WHILE_SLOW)]  # fmt: skip
        assert statuses == [200] * WHILE_SLOW
        slow.sendall(body[10:])
        assert slow.recv(64).startswith(b"HTTP/1.1 200")


def test_a_body_over_the_limit_gets_the_apps_413_from_haproxy(
    bounded: RunningStack, split: DigitsSplit
) -> None:
    limits = ServingLimits.from_env()
    answer = requests.post(bounded.rest.url, data=b" " * (limits.max_body_bytes + 1),
                           headers=JSON_HEADERS, timeout=HTTP_TIMEOUT_S)  # fmt: skip
    assert answer.status_code == 413
    assert answer.json() == too_large_document(limits.max_body_bytes)
    # HAProxy's answer, not the replica's (uvicorn names itself in every reply).
    assert "server" not in {name.lower() for name in answer.headers}
    logits, _classes = bounded.rest.predict(split.test_images[:1])
    assert logits.shape == (1, 10)
