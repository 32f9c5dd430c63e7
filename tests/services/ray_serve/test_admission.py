"""Admission control of the real Ray Serve stack (DIGITNET_ADMISSION=on, as `make overload`
and `make floods` run it), with a bound of one running and one queued request: HAProxy
refuses part of a concurrent burst with our JSON 503 and Retry-After while every sequential
request is answered right, a client trickling its body holds no place at the replica, and
a body over the limit gets the app's 413 from HAProxy."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
import torch

from digitnet.artifacts import ArtifactPaths
from digitnet.codec import decode_predictions, encode_request
from digitnet.data import DigitsSplit
from digitnet.spec import AdmissionPolicy, ServingLimits
from digitnet.torchscript import load_torchscript
from harness.lifecycle import RunningStack, skipped_reason, start_stack
from services.guard import OVERLOADED_REASON, too_large_document
from services.ray_serve.launch import STACK, read_status

pytestmark = pytest.mark.integration

HTTP_TIMEOUT_S = 30.0
JSON_HEADERS = {"Content-Type": "application/json"}
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


def _burst(url: str, body: bytes, count: int) -> list[requests.Response]:
    """`count` POSTs released together, each on its own connection."""
    barrier = threading.Barrier(count)
    answers: list[requests.Response] = []
    lock = threading.Lock()

    def one() -> None:
        barrier.wait(HTTP_TIMEOUT_S)
        response = requests.post(url, data=body, headers=JSON_HEADERS, timeout=HTTP_TIMEOUT_S)
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(2 * HTTP_TIMEOUT_S)
    return answers


def test_the_server_runs_with_the_bound(bounded: RunningStack) -> None:
    deployment = read_status(bounded.server)["settings"]["deployment"]
    assert deployment["max_ongoing_requests"] == 1
    assert deployment["max_queued_requests"] == 1
    assert deployment["backpressure_config"]["status_code"] == 503


def test_a_burst_is_partly_refused_and_every_sequential_request_answered(
    bounded: RunningStack, artifacts: ArtifactPaths, split: DigitsSplit
) -> None:
    url = bounded.rest.url
    images = split.test_images[:64]  # a full batch: each request computes a while
    body = json.dumps(encode_request(images)).encode()
    with torch.inference_mode():
        expected = load_torchscript(artifacts.torchscript)(torch.from_numpy(images)).numpy()
    refused: list[requests.Response] = []
    answered: list[requests.Response] = []
    for _ in range(MAX_BURSTS):
        answers = _burst(url, body, BURST)
        assert len(answers) == BURST
        assert all(a.status_code in (200, 503) for a in answers), [a.text for a in answers]
        refused += [a for a in answers if a.status_code == 503]
        answered += [a for a in answers if a.status_code == 200]
        if refused:
            break
    assert refused, f"no 503 in {MAX_BURSTS} bursts of {BURST} against a bound of two"
    assert answered, "a bound of two still admits requests"
    for answer in refused:
        assert answer.headers["Retry-After"] == str(AdmissionPolicy().retry_after_s)
        assert answer.headers["Content-Type"].startswith("application/json")
        assert answer.json()["reason"] == OVERLOADED_REASON
    for answer in answered:
        logits, _ = decode_predictions(answer.json(), len(images), artifacts.spec.num_classes)
        np.testing.assert_allclose(logits, expected, atol=1e-4)
    for _ in range(20):
        logits, _classes = bounded.rest.predict(images[:2])
        np.testing.assert_allclose(logits, expected[:2], atol=1e-4)
    assert bounded.ready(HTTP_TIMEOUT_S)


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
    assert answer.json() == too_large_document(limits)
    # HAProxy's answer, not the replica's (uvicorn names itself in every reply).
    assert "server" not in {name.lower() for name in answer.headers}
    logits, _classes = bounded.rest.predict(split.test_images[:1])
    assert logits.shape == (1, 10)
