"""The real Ray Serve stack, started once for the module through harness.lifecycle on
loopback ports with non-default batching knobs: answers equal in-process TorchScript and
the answer key, bad input gets the Flask app's 4xx, the knobs reach @serve.batch, only
loopback addresses listen, and stop leaves no process of the run behind."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
import torch

from digitnet.artifacts import ArtifactPaths
from digitnet.codec import (
    APP_STAGE,
    BATCH_HEADER,
    DEVICE_HEADER,
    INFERENCE_TIME_HEADER,
    JSON_CONTENT_TYPE,
    STAGE_HEADER,
    encode_request,
    parse_server_timing,
)
from digitnet.data import DigitsSplit
from digitnet.torchscript import load_torchscript
from harness.lifecycle import RunningStack, skipped_reason, start_stack
from reliability.matrix import BAD_REQUESTS, BadRequest, good_body
from services.process import LOOPBACK, usable_cores
from services.ray_serve.launch import (
    STACK,
    TEMP_DIR_FILE,
    run_dir_of,
    run_processes,
)
from services.ray_serve.settings import DEPLOYMENT_NAME
from tests.services.binary_check import check_binary_against_json

pytestmark = pytest.mark.integration

ATOL = 1e-5
HTTP_TIMEOUT_S = 30.0
# Not the spec's defaults (8 requests, 2 ms), so that seeing them in the replica proves
# they came from the environment.
BATCH_SIZE = 3
BATCH_DELAY_MS = 7.0


@pytest.fixture(scope="module")
def running(artifacts: ArtifactPaths, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[RunningStack]:  # fmt: skip
    reason = skipped_reason(STACK)
    if reason is not None:
        pytest.skip(reason)
    run_dir = tmp_path_factory.mktemp("ray_serve-run")
    with ExitStack() as exits, pytest.MonkeyPatch.context() as patch:
        patch.setenv("DIGITNET_BATCH_SIZE", str(BATCH_SIZE))
        patch.setenv("DIGITNET_BATCH_DELAY_MS", str(BATCH_DELAY_MS))
        # Pinned to every usable core: exercises the taskset path without taking CPU away.
        running = start_stack(STACK, artifacts, run_dir, exits, cores=usable_cores())
        patch.undo()
        temp_dir = Path((run_dir / TEMP_DIR_FILE).read_text())
        yield running
    # ExitStack closed: STACK.stop ran.
    assert not running.server.alive()
    assert run_processes(running.server.pid) == [], "Ray processes of this run remain"
    assert not temp_dir.exists()
    assert (run_dir / "ray-logs").is_dir()


def post(running: RunningStack, body: bytes, content_type: str | None = JSON_CONTENT_TYPE,
         path: str | None = None, method: str = "POST") -> requests.Response:  # fmt: skip
    headers = {"Content-Type": content_type} if content_type else {}
    url = running.server.endpoints["http"] + (path or running.rest.path)
    return requests.request(method, url, data=body, headers=headers, timeout=HTTP_TIMEOUT_S)


def test_predictions_match_torchscript_and_the_answer_key(
    running: RunningStack, artifacts: ArtifactPaths, split: DigitsSplit
) -> None:
    images = split.test_images
    batches = range(0, len(images), 64)
    parts = [running.rest.predict(images[start : start + 64]) for start in batches]
    logits = np.concatenate([p[0] for p in parts])
    classes = np.concatenate([p[1] for p in parts])

    with torch.inference_mode():
        expected = load_torchscript(artifacts.torchscript)(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(logits, expected, atol=ATOL, rtol=0)
    key = json.loads(artifacts.reference_predictions.read_text())
    np.testing.assert_array_equal(classes, np.asarray(key["classes"]))
    np.testing.assert_allclose(logits, np.asarray(key["logits"]), atol=ATOL, rtol=0)


def test_concurrent_requests_each_get_their_own_rows(
    running: RunningStack, artifacts: ArtifactPaths, split: DigitsSplit
) -> None:
    """Requests merged into one batch (sizes 1..4, more of them than a batch holds) are
    split back correctly: every reply holds exactly its own images' answers."""
    key = np.asarray(json.loads(artifacts.reference_predictions.read_text())["classes"])
    starts = [(start, 1 + start % 4) for start in range(0, 96, 4)]

    def one(start_size: tuple[int, int]) -> tuple[int, np.ndarray]:
        start, size = start_size
        return start, running.rest.predict(split.test_images[start : start + size])[1]

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(one, starts))
    for (start, size), (_, classes) in zip(starts, answers, strict=True):
        np.testing.assert_array_equal(classes, key[start : start + size])


def test_replies_name_their_device_and_the_requests_of_their_pass(
    running: RunningStack, split: DigitsSplit
) -> None:
    body = json.dumps(encode_request(split.test_images[:1])).encode()
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda _: post(running, body), range(32)))
    assert all(reply.status_code == 200 for reply in replies)
    assert {reply.headers[DEVICE_HEADER] for reply in replies} == {"cpu"}
    shared = [int(reply.headers[BATCH_HEADER]) for reply in replies]
    # @serve.batch's bound holds, whatever it merged under this concurrency.
    assert all(1 <= n <= BATCH_SIZE for n in shared), shared
    # Each names the replica's stages and its span, which holds them all; the model stage
    # is the forward pass the inference header gives.
    for reply in replies:
        stages = parse_server_timing(reply.headers[STAGE_HEADER])
        assert list(stages) == ["decode", "queue", "model", "encode", APP_STAGE]
        assert stages["model"] == float(reply.headers[INFERENCE_TIME_HEADER])
        assert stages[APP_STAGE] >= sum(stages.values()) - stages[APP_STAGE] - 0.003


def test_the_columnar_format_is_answered_in_kind(running: RunningStack, split) -> None:
    images = split.test_images[:2]
    body = json.dumps({"inputs": encode_request(images)["instances"]}).encode()
    reply = post(running, body)
    assert reply.status_code == 200, reply.text
    assert set(reply.json()["outputs"]) == {"logits", "classes"}
    assert float(reply.headers["X-Inference-Time-Ms"]) >= 0


@pytest.fixture(scope="module")
def flask_client(artifacts: ArtifactPaths):
    """The Flask app (services/flask_torch) in-process: the answers to match."""
    from services.flask_torch.app import create_app
    from services.flask_torch.predictor import TorchScriptModel
    from services.flask_torch.settings import Settings

    settings = Settings(model_path=artifacts.torchscript, spec=artifacts.spec,
                        warmup_iterations=1)  # fmt: skip
    model = TorchScriptModel(settings)
    model.load()
    return create_app(settings, model).test_client()


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=lambda case: case.name)
def test_bad_input_gets_the_flask_apps_4xx(running: RunningStack, flask_client,
                                           case: BadRequest) -> None:  # fmt: skip
    reply = post(running, case.body, case.content_type)
    headers = {"Content-Type": case.content_type} if case.content_type else {}
    flask = flask_client.post(running.rest.path, data=case.body, headers=headers)

    assert reply.status_code == flask.status_code == case.status, reply.text[:300]
    assert reply.headers["Content-Type"].startswith(JSON_CONTENT_TYPE)
    document = reply.json()
    assert document["reason"] == flask.get_json()["reason"] == case.reason
    assert case.needle in document["error"]
    assert post(running, good_body()).status_code == 200


@pytest.mark.parametrize(
    ("path", "method", "status", "reason"),
    [
        ("/v1/models/other:predict", "POST", 404, "model_not_found"),
        ("/v1/models/digitnet:predict", "GET", 405, "method_not_allowed"),
        ("/v1/models/digitnet", "POST", 405, "method_not_allowed"),
        ("/v2/nothing", "GET", 404, "not_found"),
    ],
)
def test_routes_and_methods_answer_like_the_flask_app(
    running: RunningStack, flask_client, path: str, method: str, status: int, reason: str
) -> None:
    reply = post(running, good_body(), path=path, method=method)
    flask = flask_client.open(path, method=method, data=good_body(),
                              headers={"Content-Type": JSON_CONTENT_TYPE})  # fmt: skip
    assert reply.status_code == flask.status_code == status, reply.text[:300]
    assert reply.json()["reason"] == flask.get_json()["reason"] == reason
    if status == 405:
        # Flask adds its implicit HEAD and OPTIONS; the method to use is in both.
        allowed = {m.strip() for m in reply.headers["Allow"].split(",")}
        assert allowed <= {m.strip() for m in flask.headers["Allow"].split(",")}


def test_model_status_is_tf_serving_like(running: RunningStack) -> None:
    reply = requests.get(running.server.endpoints["http"] + "/v1/models/digitnet",
                         timeout=HTTP_TIMEOUT_S)  # fmt: skip
    assert reply.status_code == 200
    (version,) = reply.json()["model_version_status"]
    assert version["state"] == "AVAILABLE" and version["version"] == "1"


def test_the_batching_knobs_reach_serve_batch(running: RunningStack) -> None:
    status = STACK.serve_status(running.server)
    # Read back from a replica's @serve.batch, not from what was asked for.
    assert status["batching"]["max_batch_size"] == BATCH_SIZE
    assert status["batching"]["batch_wait_timeout_s"] == pytest.approx(BATCH_DELAY_MS / 1000)
    deployment = status["settings"]["deployment"]
    # Consistent with @serve.batch: a replica may hold at least a full set of batches.
    assert deployment["max_ongoing_requests"] >= (
        BATCH_SIZE * status["batching"]["max_concurrent_batches"])
    assert deployment["user_config"]["max_batch_size"] == BATCH_SIZE


def test_its_serving_config_is_what_a_replica_reports(running: RunningStack) -> None:
    # The fair fight's and the batching sweep's configuration tables read this.
    config = STACK.serving_config(running.server)
    status = STACK.serve_status(running.server)
    assert config["max_batch_size"] == BATCH_SIZE
    assert config["batch_wait_ms"] == pytest.approx(BATCH_DELAY_MS)
    assert config["torch_threads"] == status["batching"]["torch_threads"]
    assert config["replicas"] == status["settings"]["replicas"]
    # Read from the process that holds the inference port, not from the settings.
    assert status["settings"]["ingress"] == "haproxy"
    assert config["ingress"] == "haproxy"
    # Floods bounds the fds of slow requests by it: client, HAProxy -> replica, replica.
    assert STACK.fds_per_request(running.server) == 3
    # Read from a replica process's environment: ours runs without Ray's metrics
    # pipeline, whose exporter then never opens the metrics export port.
    assert status["settings"]["ray_metrics"] is False
    assert config["ray_metrics"] == "off"
    assert running.ports["metrics"] not in {port for _, port, _ in listening(running)}


def test_the_driver_freezes_what_start_up_left(running: RunningStack) -> None:
    # Its full collections paused every request on the shared core (server.py).
    assert STACK.serve_status(running.server)["frozen_objects"] > 0


def test_replicas_times_threads_fit_the_cores(running: RunningStack) -> None:
    status = STACK.serve_status(running.server)
    replicas = status["settings"]["replicas"]
    threads = status["batching"]["torch_threads"]
    assert replicas * threads <= len(usable_cores())
    assert status["settings"]["num_cpus"] == replicas * threads
    workers = STACK.workers(running.server)
    assert len(workers) == replicas
    # Every Ray process runs on the cores the server was given.
    for proc in run_processes(running.server.pid):
        assert set(proc.cpu_affinity()) <= set(usable_cores())


def test_ready_means_running_replicas_that_answer(running: RunningStack) -> None:
    status = STACK.serve_status(running.server)
    app = status["application"]
    assert app["status"] == "RUNNING"
    states = app["deployments"][DEPLOYMENT_NAME]["replica_states"]
    assert states.get("RUNNING") == status["settings"]["replicas"]
    assert STACK.model_ready(running.server)
    assert running.ready(5.0)


def is_loopback(ip: str) -> bool:
    """127.0.0.1, ::1, or 127.0.0.1 as an IPv6 socket shows it (::ffff:127.0.0.1)."""
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def listening(running: RunningStack) -> set[tuple[str, int, str | None]]:
    """(address, port, role) of every listening socket of the run's processes."""
    found = set()
    for proc in run_processes(running.server.pid):
        try:
            connections = proc.net_connections(kind="inet")
        except psutil.Error:
            continue
        for conn in connections:
            if conn.status == psutil.CONN_LISTEN:
                found.add((conn.laddr.ip, conn.laddr.port, STACK.process_role(proc)))
    return found


def test_only_loopback_addresses_listen(running: RunningStack) -> None:
    """Dashboard off, every Ray address on 127.0.0.1: nothing listens beyond loopback."""
    sockets = listening(running)
    # Ours: HAProxy holds the inference port (its stats page and exporter were rewritten
    # to loopback by haproxy_loopback.sh, else they listen on every interface).
    assert (LOOPBACK, running.ports["http"], "haproxy") in sockets
    assert len(sockets) > 5, sockets  # GCS, raylet, agents, replica, HAProxy's own ports
    exposed = {entry for entry in sockets if not is_loopback(entry[0])}
    assert not exposed, exposed


def test_every_process_of_the_run_has_a_role(running: RunningStack) -> None:
    """Soak groups memory by these roles; the run's processes are all found."""
    roles = {STACK.process_role(p) for p in run_processes(running.server.pid)}
    assert {"server (ray driver)", "gcs", "raylet", "serve controller", "serve proxy",
            "serve replica", "haproxy", "haproxy manager"} <= roles, roles  # fmt: skip
    assert run_dir_of(running.server).joinpath("serve_status.json").exists()


def test_the_binary_client_gets_the_json_clients_logits(running: RunningStack,
                                                        split: DigitsSplit) -> None:  # fmt: skip
    check_binary_against_json(running.rest, split.test_images)
