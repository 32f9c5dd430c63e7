"""Short real load runs (seconds): Locust against a real gunicorn server, and against a
deliberately wrong server to prove that wrong answers count as failures."""

from __future__ import annotations

import json
import os
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler

import pytest

from digitnet.codec import DEVICE_HEADER
from harness.lifecycle import start_stack
from loadtests import runner
from loadtests.profiles import PROFILES
from loadtests.report import write_report
from loadtests.settings import Mode
from services.process import usable_cores
from services.registry import load_stack
from tests.http_fixture import base_url, serving

pytestmark = pytest.mark.integration
SMOKE = PROFILES["smoke"]


def test_closed_and_open_points_against_real_flask(artifacts, tmp_path):
    server_cores, generator_cores = runner.split_cores(usable_cores())
    raw = tmp_path / "raw"
    raw.mkdir()
    with ExitStack() as exits:
        running = start_stack("flask_torch", artifacts, tmp_path, exits, cores=server_cores)
        (target,) = runner.targets_of(running)
        closed = runner.run_point(target, runner.Load(Mode.CLOSED, 2, 2), SMOKE, artifacts,
                                  raw, generator_cores, repeat=0)
        opened = runner.run_point(target, runner.Load(Mode.OPEN, 1, 4, rate=50), SMOKE,
                                  artifacts, raw, generator_cores, repeat=0)
    for point in (closed, opened):
        assert point["requests"] > 0 and point["failures"] == 0, point
        assert point["p50_ms"] <= point["p99_ms"] <= point["max_ms"]
        assert point["server_rss_mb"] > 0 and point["server_p50_ms"] is not None
        assert point["served_device"] == "cpu"
        # gunicorn's workers never batch across requests, and their replies say so.
        assert point["batch_hist"] == {"1": point["requests"] - point["failures"]}
    assert closed["images_per_s"] == pytest.approx(2 * closed["rps"])
    # 50 req/s offered for ~1.5 s measured: the schedule, not the server, sets the pace.
    assert opened["rps"] == pytest.approx(50, rel=0.3)
    (tmp_path / "points.jsonl").write_text(json.dumps(closed) + "\n" + json.dumps(opened) + "\n")
    (tmp_path / "environment.json").write_text(json.dumps({"profile": "smoke"}))
    assert "flask_torch / rest / cpu / batch 2 / closed loop" in write_report(tmp_path).read_text()


class WrongAnswers(BaseHTTPRequestHandler):
    """A broken server for this test only: well-formed replies with the wrong class."""

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        logits = [10.0] + [0.0] * 9
        reply = {"predictions": [{"logits": logits, "classes": 0} for _ in body["instances"]]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        # As the server it stands in for does: the device read-back lets the point run.
        self.send_header(DEVICE_HEADER, "cpu")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_wrong_answers_are_failures_not_fast_successes(artifacts, tmp_path):
    with serving(WrongAnswers) as server:
        client = load_stack("flask_torch").remote_client("rest", base_url(server), artifacts.spec)
        target = runner.target_for(load_stack("flask_torch"), client, server_pid=os.getpid())
        point = runner.run_point(target, runner.Load(Mode.CLOSED, 1, 1), SMOKE, artifacts,
                                 tmp_path, usable_cores()[-1:], repeat=0)
    # Digit 0 is right about a tenth of the time; every other reply must count as failed.
    assert point["requests"] > 0
    assert point["failures"] >= 0.7 * point["requests"]


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_tf_serving_users_against_the_protocol_double(artifacts, spec, tmp_path, protocol):
    """The TF Serving Locust users (REST and gRPC) run and check replies. The server here is
    the PROTOCOL TEST DOUBLE: this tests our users, and its figures are not TF Serving's."""
    from services.process import free_port
    from tests.doubles.tf_serving_protocol_double import TfServingProtocolDouble

    with TfServingProtocolDouble(
        artifacts.savedmodel, spec.name, spec.version, free_port(), free_port()
    ) as double:
        stack = load_stack("tf_serving")
        url = double.rest_url if protocol == "rest" else double.grpc_target
        target = runner.target_for(stack, stack.remote_client(protocol, url, spec),
                                   server_pid=os.getpid())
        point = runner.run_point(target, runner.Load(Mode.CLOSED, 2, 2), SMOKE, artifacts,
                                 tmp_path, usable_cores()[-1:], repeat=0)
    assert point["requests"] > 0 and point["failures"] == 0, point
    assert point["stack"] == "tf_serving" and point["protocol"] == protocol
