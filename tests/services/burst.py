"""A burst of concurrent POSTs, shared by the tests of every bound that refuses part of
one: the Flask app's admission gate, the nginx front, Ray Serve's HAProxy."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import requests
import torch

from digitnet.codec import OVERLOADED_REASON, decode_predictions, encode_request
from digitnet.spec import AdmissionPolicy
from digitnet.torchscript import load_torchscript
from harness.lifecycle import RunningStack

JSON_HEADERS = {"Content-Type": "application/json"}


def burst(url: str, body: bytes, count: int, timeout_s: float) -> list[requests.Response]:
    """`count` JSON POSTs of `body` released together, each on its own connection; the
    answers in the order they came."""
    barrier = threading.Barrier(count)
    answers: list[requests.Response] = []
    lock = threading.Lock()

    def one() -> None:
        barrier.wait(timeout_s)
        response = requests.post(url, data=body, headers=JSON_HEADERS, timeout=timeout_s)
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(2 * timeout_s)
    return answers


def bursts_until_refused(url: str, body: bytes, count: int, bursts: int, timeout_s: float
                         ) -> tuple[list[requests.Response], list[requests.Response]]:  # fmt: skip
    """Bursts of `count` until one held both a refusal (503) and an answer (200), at most
    `bursts`: (refused, answered) over all of them. Every answer is a 200 or a 503."""
    refused: list[requests.Response] = []
    answered: list[requests.Response] = []
    for _ in range(bursts):
        answers = burst(url, body, count, timeout_s)
        assert len(answers) == count
        assert all(a.status_code in (200, 503) for a in answers), [a.text for a in answers]
        refused += [a for a in answers if a.status_code == 503]
        answered += [a for a in answers if a.status_code == 200]
        if refused and answered:
            break
    assert refused, f"no 503 in {bursts} bursts of {count}"
    assert answered, f"no 200 in {bursts} bursts of {count}"
    return refused, answered


def check_refusal(answer: requests.Response, retry_after_s: int, reason: str) -> None:
    """A refusal as every bound of ours answers it: 503, JSON naming the reason, and
    Retry-After."""
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == str(retry_after_s)
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json()["reason"] == reason


def check_a_bounded_stack(running: RunningStack, torchscript: Path, images: np.ndarray,
                          count: int, bursts: int, timeout_s: float) -> None:  # fmt: skip
    """A stack under a tiny admission bound: bursts of `count` requests for `images` (a
    full batch computes a while) are partly refused with our 503, every answer that came
    equals the TorchScript model's, and one at a time every request is answered right."""
    body = json.dumps(encode_request(images)).encode()
    with torch.inference_mode():
        expected = load_torchscript(torchscript)(torch.from_numpy(images)).numpy()
    refused, answered = bursts_until_refused(running.rest.url, body, count, bursts, timeout_s)
    for answer in refused:
        check_refusal(answer, AdmissionPolicy().retry_after_s, OVERLOADED_REASON)
    for answer in answered:
        logits, _ = decode_predictions(answer.json(), len(images), expected.shape[1])
        np.testing.assert_allclose(logits, expected, atol=1e-4)
    workers = {p.pid for p in running.stack.workers(running.server)}
    for _ in range(20):
        logits, _classes = running.rest.predict(images[:2])
        np.testing.assert_allclose(logits, expected[:2], atol=1e-4)
    # The same workers answered throughout: refusing lost none.
    assert {p.pid for p in running.stack.workers(running.server)} == workers
    assert running.ready(timeout_s)
