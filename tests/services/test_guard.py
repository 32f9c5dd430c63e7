"""The nginx front (services/guard.py): its config, accepted by nginx itself, and a real
flask_torch behind it refusing a burst in C while answering the rest, probes and limits
as without it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests

from digitnet.artifacts import ArtifactPaths
from digitnet.clients import FLASK_PREDICT_PATH, FLASK_READY_PATH
from digitnet.codec import encode_request
from digitnet.data import DigitsSplit
from digitnet.spec import AdmissionPolicy, ServingLimits
from harness.lifecycle import RunningStack, start_stack
from reliability.client import Endpoint, TricklingPost
from services.guard import (
    GUARD_ENV,
    NGINX,
    guard_from_env,
    guard_inflight,
    make_temp_dirs,
    nginx_binary,
    render_nginx_conf,
)
from services.process import free_port, port_is_free, wait_until
from tests.services.burst import bursts_until_refused, check_refusal

JSON_HEADERS = {"Content-Type": "application/json"}
HTTP_TIMEOUT_S = 30.0
needs_nginx = pytest.mark.skipif(nginx_binary() is None,
                                 reason="nginx is not installed: run `make tools`")


def test_guard_is_off_unless_asked_and_names_are_checked(monkeypatch) -> None:
    monkeypatch.delenv(GUARD_ENV, raising=False)
    assert guard_from_env() == "off"
    monkeypatch.setenv(GUARD_ENV, " NGINX ")
    assert guard_from_env() == NGINX
    monkeypatch.setenv(GUARD_ENV, "haproxy")
    with pytest.raises(ValueError, match="DIGITNET_GUARD"):
        guard_from_env()


def test_inflight_is_every_workers_admission_bound() -> None:
    policy = AdmissionPolicy(objective_ms=50.0, queue_share=0.5, service_ms=1.0)
    assert guard_inflight(policy, 2) == 2 * 25
    assert guard_inflight(AdmissionPolicy(limit=3), 4) == 12


@needs_nginx
def test_rendered_config_is_accepted_by_nginx(tmp_path: Path) -> None:
    policy, limits = AdmissionPolicy(retry_after_s=2), ServingLimits()
    conf = render_nginx_conf("127.0.0.1:1", "unix:/nonexistent.sock", 7, policy, limits,
                             tmp_path)
    assert "max_conns=7;" in conf
    assert f"client_max_body_size {limits.max_body_bytes};" in conf
    assert "Retry-After 2 always" in conf
    (tmp_path / "nginx.conf").write_text(conf)
    make_temp_dirs(tmp_path)
    checked = subprocess.run([nginx_binary(), "-t", "-p", str(tmp_path), "-e",
                              str(tmp_path / "e.log"), "-c", str(tmp_path / "nginx.conf")],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr


# --- a real stack behind it: one worker, one request inside at a time -----------------------


@pytest.fixture(scope="module")
def guarded(artifacts: ArtifactPaths,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    if nginx_binary() is None:
        pytest.skip("nginx is not installed: run `make tools`")
    env = {GUARD_ENV: NGINX, "DIGITNET_ADMISSION": "on", "DIGITNET_ADMIT_LIMIT": "1",
           "FLASK_TORCH_WORKERS": "1"}
    with ExitStack() as exits:
        yield start_stack("flask_torch", artifacts, tmp_path_factory.mktemp("guarded"), exits,
                          env=env)


@pytest.mark.integration
def test_the_front_refuses_part_of_a_burst_in_c_and_answers_the_rest(
    guarded: RunningStack, split: DigitsSplit
) -> None:
    url = guarded.rest.url
    body = json.dumps(encode_request(split.test_images[:64])).encode()
    refused, answered = bursts_until_refused(url, body, 16, 5, HTTP_TIMEOUT_S)
    for answer in refused:
        # nginx's answer, not the app's: the app never saw these requests.
        assert answer.headers["Server"] == "nginx"
        check_refusal(answer, 1, "overloaded")
        assert answer.headers["Content-Type"] == "application/json"
        assert "1 request(s) in flight" in answer.json()["error"]
    logits = np.asarray([p["logits"] for p in answered[0].json()["predictions"]])
    assert logits.shape == (64, 10)


@pytest.mark.integration
def test_behind_the_front_limits_and_probes_answer_as_without_it(
    guarded: RunningStack, split: DigitsSplit, limits: ServingLimits
) -> None:
    url = guarded.rest.url
    base = url.split("/v1/", 1)[0]
    too_large = requests.post(url, data=b" " * (limits.max_body_bytes + 1),
                              headers=JSON_HEADERS, timeout=HTTP_TIMEOUT_S)
    assert too_large.status_code == 413 and too_large.json() == {
        "error": f"request body exceeds the maximum of {limits.max_body_bytes} bytes",
        "reason": "body_too_large"}
    bad = requests.post(url, data=b'{"instances": [[1, 2]]}', headers=JSON_HEADERS,
                        timeout=HTTP_TIMEOUT_S)
    assert bad.status_code == 400 and bad.json()["reason"] == "wrong_shape"
    assert requests.get(base + FLASK_READY_PATH, timeout=HTTP_TIMEOUT_S).status_code == 200
    config = guarded.stack.serving_config(guarded.server)
    assert config["front"] == NGINX and config["workers"] == 1


@needs_nginx
@pytest.mark.integration
def test_stopping_the_stack_stops_its_front(artifacts: ArtifactPaths, tmp_path: Path) -> None:
    with ExitStack() as exits:
        running = start_stack("flask_torch", artifacts, tmp_path / "run", exits,
                              env={GUARD_ENV: NGINX, "FLASK_TORCH_WORKERS": "1"})
        tree = psutil.Process(running.server.pid).children(recursive=True)
        fronts = [p for p in tree if p.name() == "nginx"]
        assert fronts, [p.name() for p in tree]
        assert len(running.stack.workers(running.server)) == 1
        port = int(running.rest.url.split(":")[2].split("/")[0])
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in fronts)
    assert port_is_free(port)


@pytest.mark.integration
def test_slow_uploads_hold_no_place_behind_the_front(guarded: RunningStack,
                                                     split: DigitsSplit) -> None:
    """The bound counts requests nginx has handed to the app, not bodies still arriving:
    with more slow senders than places (one here), other requests are still answered."""
    url = guarded.rest.url
    endpoint = Endpoint.of(guarded.rest)
    body = json.dumps(encode_request(split.test_images[:1])).encode()
    stop = threading.Event()
    slow = [TricklingPost(endpoint, body, chunk=1, interval_s=0.2, timeout_s=30.0, stop=stop)
            for _ in range(4)]
    try:
        for client in slow:
            client.start()
        for client in slow:
            assert client.connected.wait(10.0)
        time.sleep(0.5)
        for _ in range(5):
            answer = requests.post(url, data=body, headers=JSON_HEADERS, timeout=HTTP_TIMEOUT_S)
            assert answer.status_code == 200, answer.text[:200]
    finally:
        stop.set()
        for client in slow:
            client.join(10.0)


@needs_nginx
@pytest.mark.integration
def test_the_front_runs_as_an_unprivileged_user(artifacts: ArtifactPaths,
                                                split: DigitsSplit) -> None:
    """As in the image (uid 10001, no root anywhere): gunicorn's master starts nginx as
    itself, everything it writes goes under /tmp, answers pass, stopping stops both."""
    setpriv = shutil.which("setpriv")
    repo = Path(__file__).resolve().parents[2]
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to drop to an unprivileged user")
    drop = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    if subprocess.run([*drop, sys.executable, "-c", "import flask, torch"],
                      capture_output=True, timeout=60).returncode != 0:
        pytest.skip("this venv does not run as an unprivileged user here")
    # The model where that user can read it (pytest's own folders are root's alone).
    shared = Path(tempfile.mkdtemp(prefix="digitnet-unprivileged-"))
    shared.chmod(0o755)
    model = shared / artifacts.torchscript.name
    shutil.copyfile(artifacts.torchscript, model)
    model.chmod(0o644)
    port = free_port()
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "PYTHONPATH": str(repo),
           "FLASK_TORCH_MODEL_PATH": str(model),
           "FLASK_TORCH_BIND": f"127.0.0.1:{port}", "FLASK_TORCH_WORKERS": "1",
           "FLASK_TORCH_THREADS": "1", GUARD_ENV: NGINX}
    server = subprocess.Popen(
        [*drop, str(Path(sys.executable).parent / "gunicorn"), "-c",
         "services/flask_torch/gunicorn.conf.py", "services.flask_torch.app:create_app()"],
        cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(url + FLASK_READY_PATH, timeout=2).ok, 60.0,
                   "the unprivileged server to be ready", interval_s=0.5,
                   alive=lambda: server.poll() is None)
        body = json.dumps(encode_request(split.test_images[:1]))
        reply = requests.post(url + FLASK_PREDICT_PATH.format(name=artifacts.spec.name), data=body,
                              headers=JSON_HEADERS, timeout=HTTP_TIMEOUT_S)
        assert reply.status_code == 200, reply.text
        fronts = [p for p in psutil.Process(server.pid).children(recursive=True)
                  if p.name() == "nginx"]
        assert fronts and {p.uids().effective for p in fronts} == {65534}
    finally:
        server.send_signal(signal.SIGTERM)
        _, errors = server.communicate(timeout=30)
        shutil.rmtree(shared, ignore_errors=True)
    assert server.returncode == 0, errors.decode()[-2000:]
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in fronts)
