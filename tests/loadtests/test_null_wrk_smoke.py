"""End to end: wrk against the nginx null server, as the generator-floor and cross-check
steps run them (1 connection, 1 s, loopback only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from loadtests.null_server import FixedReply, NullServer, nginx_available
from loadtests.wrk import compare_clients, run_wrk, wrk_available
from services.process import usable_cores

pytestmark = pytest.mark.integration

REPLY = FixedReply(
    body=json.dumps({"predictions": [[0.01] * 9 + [0.91]], "classes": [9]}).encode(),
    headers={"Content-Type": "application/json"},
)
REQUEST = json.dumps({"instances": [[[0.0] * 8] * 8]}).encode()


@pytest.fixture(scope="module")
def tools() -> None:
    for available in (nginx_available, wrk_available):
        ok, reason = available()
        if not ok:
            pytest.skip(f"{reason} (scripts/install_tools.sh installs it)")


def test_wrk_against_the_null_server(tools, tmp_path: Path) -> None:
    cores = usable_cores()
    # Server and client on different cores where there are two, as the runner pins them.
    server_cores, client_cores = (cores[:1], cores[-1:]) if len(cores) > 1 else (None, None)
    with NullServer(REPLY, tmp_path / "nginx", cores=server_cores) as server:
        url = f"{server.url}/predictions/digitnet"
        reply = requests.post(
            url, data=REQUEST, timeout=5, headers={"Content-Type": "application/json"}
        )
        result = run_wrk(
            url,
            REQUEST,
            {"Content-Type": "application/json"},
            connections=1,
            duration_s=1,
            cores=client_cores,
        )
    assert reply.status_code == 200
    assert reply.content == REPLY.body
    assert reply.headers["Content-Type"] == "application/json"
    assert result.rps > 0
    assert result.requests > 0
    assert result.errors == 0
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms
    # wrk compared with itself: no divergence, nothing flagged.
    assert not compare_clients(result.as_point(), result).flagged
