"""The real stack: gunicorn with gevent workers, started through STACK like
`make deploy-local` does, on a free loopback port."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import psutil
import pytest
import requests
import torch

from digitnet.artifacts import ArtifactPaths
from digitnet.clients import FLASK_LIVE_PATH, FLASK_READY_PATH, TFS_STATUS_PATH, RestClient
from digitnet.codec import INFERENCE_TIME_HEADER, encode_request
from digitnet.data import DigitsSplit
from digitnet.torchscript import load_torchscript
from harness.lifecycle import start_stack as harness_start_stack
from services.flask_torch.launch import STACK
from services.flask_torch.settings import WORKERS_ENV
from services.process import ServerProcess, free_port, port_is_free
from tests.services.binary_check import check_binary_against_json

pytestmark = pytest.mark.integration

READY_TIMEOUT_S = 120.0
HTTP_TIMEOUT_S = 10.0
JSON_HEADERS = {"Content-Type": "application/json"}


def start_stack(artifacts: ArtifactPaths, run_dir: Path) -> tuple[ServerProcess, int]:
    port = free_port()
    server = STACK.start(artifacts, run_dir, {"http": port})
    try:
        STACK.wait_ready(server, READY_TIMEOUT_S)
    except BaseException:
        STACK.stop(server)
        raise
    return server, port


def still_running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def worker_pids(server: ServerProcess) -> set[int]:
    return {child.pid for child in psutil.Process(server.pid).children()}


@pytest.fixture(scope="module")
def server(
    artifacts: ArtifactPaths, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    running, _ = start_stack(artifacts, tmp_path_factory.mktemp("flask_torch_run"))
    try:
        yield running
    finally:
        STACK.stop(running)


@pytest.fixture(scope="module")
def client(server: ServerProcess, artifacts: ArtifactPaths) -> RestClient:
    (rest,) = STACK.clients(server, artifacts)
    assert isinstance(rest, RestClient)
    return rest


def test_predictions_match_the_torchscript_model(
    client: RestClient, artifacts: ArtifactPaths, split: DigitsSplit, limits
) -> None:
    images = split.test_images[: 2 * limits.max_batch]
    with torch.inference_mode():
        expected = load_torchscript(artifacts.torchscript)(torch.from_numpy(images)).numpy()
    for start in range(0, len(images), limits.max_batch):
        logits, classes = client.predict(images[start : start + limits.max_batch])
        np.testing.assert_allclose(logits, expected[start : start + limits.max_batch], atol=1e-5)
        np.testing.assert_array_equal(
            classes, expected[start : start + limits.max_batch].argmax(axis=1)
        )
    response = client.post_raw(images[:1])
    assert float(response.headers[INFERENCE_TIME_HEADER]) >= 0.0


def test_runs_one_worker_per_core_and_probes_answer(
    server: ServerProcess, artifacts: ArtifactPaths
) -> None:
    base = server.endpoints["http"]
    assert len(worker_pids(server)) == len(psutil.Process(server.pid).cpu_affinity())
    assert requests.get(base + FLASK_LIVE_PATH, timeout=HTTP_TIMEOUT_S).status_code == 200
    assert requests.get(base + FLASK_READY_PATH, timeout=HTTP_TIMEOUT_S).status_code == 200
    status = requests.get(
        base + TFS_STATUS_PATH.format(name=artifacts.spec.name), timeout=HTTP_TIMEOUT_S
    )
    assert status.json()["model_version_status"][0]["state"] == "AVAILABLE"


def _raw_http(port: int, request: bytes) -> bytes:
    """For requests `requests` refuses to send: raw bytes over a loopback socket."""
    with socket.create_connection(("127.0.0.1", port), timeout=HTTP_TIMEOUT_S) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_bad_inputs_get_json_4xx_and_no_worker_is_lost(
    server: ServerProcess, client: RestClient, split: DigitsSplit, artifacts: ArtifactPaths
) -> None:
    base = server.endpoints["http"]
    workers_before = worker_pids(server)
    good = encode_request(split.test_images[:2])["instances"]
    nan_body = json.dumps({"instances": [good[0], [[float("nan")] * 8] * 8]})
    cases = [
        (b'{"instances": [1,, 2]}', JSON_HEADERS, client.path, 400, "malformed_json"),
        (json.dumps({"instances": good})[:-9], JSON_HEADERS, client.path, 400, "malformed_json"),
        (json.dumps({"instance": good}), JSON_HEADERS, client.path, 400, "wrong_schema"),
        (json.dumps({"instances": good[0]}), JSON_HEADERS, client.path, 400, "wrong_shape"),
        (nan_body, JSON_HEADERS, client.path, 400, "non_finite"),
        ('{"instances": []}', JSON_HEADERS, client.path, 400, "empty_batch"),
        (json.dumps({"instances": good * 40}), JSON_HEADERS, client.path, 413, "batch_too_large"),
        (b" " * (4 * 1024 * 1024 + 10), JSON_HEADERS, client.path, 413, "body_too_large"),
        (json.dumps({"instances": good}), {"Content-Type": "text/plain"}, client.path, 415,
         "unsupported_media_type"),
        (json.dumps({"instances": good}), JSON_HEADERS, "/v1/models/other:predict", 404,
         "model_not_found"),
    ]  # fmt: skip
    for body, headers, path, status, reason in cases:
        response = requests.post(base + path, data=body, headers=headers, timeout=HTTP_TIMEOUT_S)
        assert response.status_code == status, (reason, response.text[:300])
        assert response.headers["Content-Type"] == "application/json", reason
        assert response.json()["reason"] == reason
        logits, _ = client.predict(split.test_images[:2])
        assert logits.shape == (2, artifacts.spec.num_classes)
    get_on_predict = requests.get(base + client.path, timeout=HTTP_TIMEOUT_S)
    assert get_on_predict.status_code == 405
    assert get_on_predict.json()["reason"] == "method_not_allowed"
    # A request line over limit_request_line is refused by gunicorn itself, before Flask
    # (so with gunicorn's small HTML page, not our JSON), and the worker survives it.
    answer = _raw_http(
        int(base.rsplit(":", 1)[1]),
        b"GET /" + b"x" * 5000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 414"), answer[:100]
    client.predict(split.test_images[:1])
    assert worker_pids(server) == workers_before, server.log_tail()
    assert "WORKER TIMEOUT" not in server.log_tail(200)


def test_stop_leaves_no_process_and_frees_the_port(
    artifacts: ArtifactPaths, tmp_path: Path
) -> None:
    server, port = start_stack(artifacts, tmp_path)
    processes = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
    assert len(processes) >= 2, "expected a master and at least one worker"
    STACK.stop(server)
    assert [p.pid for p in processes if still_running(p)] == []
    assert port_is_free(port)


def test_the_binary_client_gets_the_json_clients_logits(client: RestClient,
                                                        split: DigitsSplit) -> None:  # fmt: skip
    check_binary_against_json(client, split.test_images)



def test_bodies_over_the_limit_back_to_back_get_413_and_starve_nobody(
    artifacts: ArtifactPaths, tmp_path: Path, split: DigitsSplit, limits
) -> None:
    """gunicorn drains a 413's unread body 1 KiB at a time without yielding; before the
    lingering drain in gunicorn.conf.py's post_request, one connection sending bodies over
    the limit back to back made other requests on its worker time out (one worker here,
    so every request shares it). Each 413 must also arrive whole on a connection that
    stays usable (closing at once instead reset about half of them)."""
    over = b" " * (limits.max_body_bytes + 10)
    with ExitStack() as exits:
        running = harness_start_stack(STACK, artifacts, tmp_path / "run", exits,
                                      env={WORKERS_ENV: "1"})
        url = running.rest.url
        port = int(urlsplit(url).port)
        stop = threading.Event()
        statuses: list[int | str] = []

        def send_over_the_limit() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT_S)
            try:
                while not stop.is_set():
                    try:
                        conn.request("POST", urlsplit(url).path, body=over, headers=JSON_HEADERS)
                        response = conn.getresponse()
                        response.read()
                        statuses.append(response.status)
                    except OSError as err:
                        statuses.append(repr(err))
                        conn.close()
            finally:
                conn.close()

        flood = threading.Thread(target=send_over_the_limit, daemon=True)
        flood.start()
        try:
            for i in range(20):
                body = json.dumps({"instances": split.test_images[i : i + 1].tolist()})
                response = requests.post(url, data=body, headers=JSON_HEADERS, timeout=5.0)
                assert response.status_code == 200, response.text[:200]
        finally:
            stop.set()
            flood.join(2 * HTTP_TIMEOUT_S)
    assert statuses and set(statuses) == {413}, statuses[:10]


def test_replies_carry_the_http_servers_own_stages(server: ServerProcess,
                                                   split: DigitsSplit) -> None:
    # gunicorn's gevent worker times its own part of each request (http_timing.py): the
    # reply's own read, and the previous reply's teardown and write on the same path.
    from digitnet.codec import STAGE_HEADER, parse_server_timing

    body = json.dumps(encode_request(split.test_images[:1]))
    base = urlsplit(server.endpoints["http"])
    connection = http.client.HTTPConnection(base.hostname, base.port, timeout=HTTP_TIMEOUT_S)
    try:
        replies = []
        for _ in range(3):  # one keep-alive connection: one worker
            connection.request("POST", "/v1/models/digitnet:predict", body, JSON_HEADERS)
            reply = connection.getresponse()
            reply.read()
            assert reply.status == 200
            replies.append(parse_server_timing(reply.getheader(STAGE_HEADER)))
    finally:
        connection.close()
    for stages in replies:
        assert "http-read" in stages and stages["http-read"] >= 0.0, replies
        assert stages["app"] > 0.0
    for stages in replies[1:]:
        assert stages["app-after"] >= 0.0 and stages["http-write"] >= 0.0
