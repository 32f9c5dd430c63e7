"""The real TorchServe (JVM frontend + Python workers) started by STACK on loopback ports:
parity with in-process TorchScript, named 4xx errors that leave it serving, token auth,
disabled model registration, loopback-only management, and the request size limit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
import torch

from digitnet.artifacts import ArtifactPaths
from digitnet.clients import TORCHSERVE_MODEL_PATH, TORCHSERVE_PREDICT_PATH, bearer
from digitnet.codec import JSON_CONTENT_TYPE
from digitnet.data import DigitsSplit
from digitnet.spec import ModelSpec, ServingLimits
from digitnet.torchscript import load_torchscript
from loadtests.server_metrics import scrape
from reliability.matrix import BAD_REQUESTS, good_body
from services.process import LOOPBACK, ServerProcess, free_port, usable_cores
from services.torchserve.handler import THREADS_ENV
from services.torchserve.healthcheck import model_status
from services.torchserve.launch import (
    STACK,
    TorchServeTokens,
    plan_for,
    read_tokens,
    session_processes,
)
from tests.services.binary_check import check_binary_against_json

pytestmark = pytest.mark.integration

READY_TIMEOUT_S = 180.0
HTTP_TIMEOUT_S = 30.0
ATOL = 1e-5
MAX_BATCH = 64
LOOPBACK_IPS = {LOOPBACK, f"::ffff:{LOOPBACK}"}


@dataclass(frozen=True)
class RunningTorchServe:
    server: ServerProcess
    tokens: TorchServeTokens
    spec: ModelSpec

    @property
    def predict_url(self) -> str:
        return self.server.endpoints["inference"] + TORCHSERVE_PREDICT_PATH.format(
            name=self.spec.name
        )

    def post(self, body: bytes, content_type: str | None = JSON_CONTENT_TYPE,
             token: str | None = None) -> requests.Response:
        headers = bearer(self.tokens.inference if token is None else token)
        if content_type is not None:
            headers["Content-Type"] = content_type
        return requests.post(self.predict_url, data=body, headers=headers,
                             timeout=HTTP_TIMEOUT_S)


@pytest.fixture(scope="module")
def torchserve(
    artifacts: ArtifactPaths, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningTorchServe]:
    ok, why = STACK.available()
    if not ok:
        pytest.skip(why)
    run_dir: Path = tmp_path_factory.mktemp("torchserve-run")
    ports = {name: free_port() for name in STACK.default_ports}
    # Pinned to all usable cores: exercises the taskset path without taking CPU away.
    server = STACK.start(artifacts, run_dir, ports, cores=usable_cores())
    try:
        STACK.wait_ready(server, READY_TIMEOUT_S)
        yield RunningTorchServe(server, read_tokens(run_dir), artifacts.spec)
    finally:
        STACK.stop(server)
    assert not server.alive()
    assert session_processes(server.pid) == [], "TorchServe left processes behind"


def assert_still_serving(torchserve: RunningTorchServe) -> None:
    response = torchserve.post(good_body())
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 2
    assert STACK.model_ready(torchserve.server, torchserve.spec.name)


def test_predictions_match_torchscript_on_test_split(
    torchserve: RunningTorchServe, artifacts: ArtifactPaths, split: DigitsSplit
) -> None:
    (client,) = STACK.clients(torchserve.server, artifacts)
    images = split.test_images
    parts = [client.predict(images[start : start + MAX_BATCH])
             for start in range(0, len(images), MAX_BATCH)]
    logits = np.concatenate([part[0] for part in parts])
    classes = np.concatenate([part[1] for part in parts])

    model = load_torchscript(artifacts.torchscript)
    with torch.inference_mode():
        expected = model(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(logits, expected, atol=ATOL, rtol=0)
    np.testing.assert_array_equal(classes, expected.argmax(axis=1))


# Every bad body of the shared matrix (reliability/matrix.py) is sent to this server, and
# to every other stack, by tests/reliability/test_matrix.py.


def test_multipart_form_body_is_unsupported_media_type(torchserve: RunningTorchServe) -> None:
    # requests builds multipart/form-data; TorchServe splits it into form fields.
    response = requests.post(
        torchserve.predict_url,
        files={"data": ("body.json", good_body(), JSON_CONTENT_TYPE)},
        headers=bearer(torchserve.tokens.inference),
        timeout=HTTP_TIMEOUT_S,
    )
    assert response.status_code == 415, response.text
    assert "multipart/form-data" in response.json()["error"]
    assert_still_serving(torchserve)


def test_body_over_max_request_size_is_refused(
    torchserve: RunningTorchServe, limits: ServingLimits
) -> None:
    """The frontend refuses it (413, empty body: Netty's answer, not the handler's)."""
    (case,) = [case for case in BAD_REQUESTS if case.name == "body_over_max"]
    assert len(case.body) > limits.max_body_bytes
    response = torchserve.post(case.body)
    assert response.status_code == 413
    assert_still_serving(torchserve)


def test_body_at_max_request_size_reaches_the_handler(
    torchserve: RunningTorchServe, limits: ServingLimits
) -> None:
    document = good_body(1)
    padded = document + b" " * (limits.max_body_bytes - len(document))
    response = torchserve.post(padded)
    assert response.status_code == 200, response.text[:300]


@pytest.mark.parametrize("token", ["", "not-the-key"], ids=["missing", "wrong"])
def test_request_without_valid_token_is_refused(torchserve: RunningTorchServe, token) -> None:
    response = torchserve.post(good_body(), token=token)
    assert 400 <= response.status_code < 500
    assert "InvalidKeyException" in response.text


def test_management_key_is_not_an_inference_key(torchserve: RunningTorchServe) -> None:
    response = torchserve.post(good_body(), token=torchserve.tokens.management)
    assert 400 <= response.status_code < 500
    status = requests.get(
        torchserve.server.endpoints["management"]
        + TORCHSERVE_MODEL_PATH.format(name=torchserve.spec.name),
        headers=bearer(torchserve.tokens.inference),
        timeout=HTTP_TIMEOUT_S,
    )
    assert 400 <= status.status_code < 500


@pytest.mark.parametrize("scheme", ["http", "file"])
def test_management_refuses_registering_a_model(torchserve: RunningTorchServe, scheme) -> None:
    # Targets stay on loopback: a free port nobody listens on, or a local path.
    url = (f"http://{LOOPBACK}:{free_port()}/evil.mar" if scheme == "http"
           else "file:///etc/passwd")
    response = requests.post(
        torchserve.server.endpoints["management"] + "/models",
        params={"url": url, "initial_workers": 1},
        headers=bearer(torchserve.tokens.management),
        timeout=HTTP_TIMEOUT_S,
    )
    assert response.status_code == 405, response.text
    listed = requests.get(
        torchserve.server.endpoints["management"] + "/models",
        headers=bearer(torchserve.tokens.management),
        timeout=HTTP_TIMEOUT_S,
    ).json()
    assert [model["modelName"] for model in listed["models"]] == [torchserve.spec.name]


def test_every_port_listens_on_loopback_only(torchserve: RunningTorchServe) -> None:
    ports = {int(url.rsplit(":", 1)[1]) for url in torchserve.server.endpoints.values()}
    listening = [
        conn
        for proc in session_processes(torchserve.server.pid)
        for conn in proc.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    ]
    by_port = {conn.laddr.port: conn.laddr.ip for conn in listening}
    assert ports <= set(by_port), f"not listening: {ports - set(by_port)}"
    assert {by_port[port] for port in ports} <= LOOPBACK_IPS
    assert all(conn.laddr.ip in LOOPBACK_IPS for conn in listening)


def test_metrics_api_serves_prometheus_text(torchserve: RunningTorchServe) -> None:
    torchserve.post(good_body())
    response = requests.get(torchserve.server.endpoints["metrics"] + "/metrics",
                            timeout=HTTP_TIMEOUT_S)
    assert response.status_code == 200
    assert "# TYPE" in response.text and "ts_inference_requests_total" in response.text


def test_the_servers_own_timings_are_read_from_its_metrics(torchserve: RunningTorchServe) -> None:
    # The load runner's path: scrape before and after, the plugin's breakdown of the delta.
    url = STACK.metrics_url(torchserve.server)
    before = scrape(url)
    for _ in range(5):
        assert torchserve.post(good_body()).status_code == 200
    figures = STACK.server_timings(before, scrape(url))
    assert figures["server_requests"] == 5
    # Request received to response sent holds its queue time, and neither is empty.
    assert figures["server_total_ms"] > figures["server_queue_ms"] > 0.0


def test_key_file_holds_all_three_keys(torchserve: RunningTorchServe) -> None:
    keys = json.loads((STACK.run_dir(torchserve.server) / "key_file.json").read_text())
    assert set(keys) == {"management", "inference", "API"}
    assert len({torchserve.tokens.inference, torchserve.tokens.management,
                torchserve.tokens.api}) == 3


def test_workers_threads_and_pinning_follow_the_cores(torchserve: RunningTorchServe) -> None:
    cores = usable_cores()
    plan = plan_for(cores)
    status = model_status(torchserve.server.endpoints["management"], torchserve.spec.name,
                          torchserve.tokens.management)
    assert status["minWorkers"] == status["maxWorkers"] == plan.workers
    assert len(status["workers"]) == plan.workers
    assert plan.workers * plan.threads <= len(cores)
    for worker in status["workers"]:
        assert psutil.Process(int(worker["pid"])).environ()[THREADS_ENV] == str(plan.threads)
    for proc in session_processes(torchserve.server.pid):
        assert sorted(proc.cpu_affinity()) == cores


def test_the_binary_client_gets_the_json_clients_logits(
    torchserve: RunningTorchServe, artifacts: ArtifactPaths, split: DigitsSplit
) -> None:
    (client,) = STACK.clients(torchserve.server, artifacts)
    check_binary_against_json(client, split.test_images)


def test_the_frontend_logs_from_our_config_and_nothing_per_request(
    torchserve: RunningTorchServe,
) -> None:
    """Read back from the JVM's command line; and after requests were answered, no log
    file holds a line per request (TorchServe's built-in config writes several)."""
    assert STACK.serving_config(torchserve.server)["logging"] == "log4j2.xml"
    for _ in range(20):
        assert torchserve.post(good_body()).status_code == 200
    logs = STACK.run_dir(torchserve.server) / "logs"
    access = logs / "access_log.log"
    assert not access.exists() or "POST /predictions" not in access.read_text()
    ts_log = (logs / "ts_log.log").read_text()
    assert "[DEBUG]" not in ts_log and "Backend response time" not in ts_log
