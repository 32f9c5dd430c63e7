"""Faults under load on the real stacks: a killed worker, SIGTERM, slow clients.

The assertions are about outcomes, not speed: every request is accounted for, the
service replaces a killed worker by itself, and nothing times out or answers wrongly.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from digitnet.artifacts import ArtifactPaths
from harness.lifecycle import RunningStack, skipped_reason, start_stack
from reliability.client import OK, OTHER, REFUSED, RESET, TIMEOUT, WRONG_ANSWER, http_kind
from reliability.faults import kill_worker, sigterm
from reliability.settings import FaultSettings, SlowClientSettings
from reliability.slow_clients import slow_clients
from services.registry import stack_names

pytestmark = pytest.mark.integration

FAULTS = FaultSettings(clients=4, lead_s=1.0, tail_s=1.0, recovery_timeout_s=60.0,
                       request_timeout_s=10.0, inflight_body_s=1.5, inflight_requests=2)
# More slow connections than gthread's 2 workers x 4 threads; 3 s of normal traffic.
SLOW = SlowClientSettings(slow_clients=32, byte_interval_s=0.25, duration_s=3.0,
                          request_timeout_s=5.0, normal_clients=2)
# What a client may see while a worker dies: its connection reset (gunicorn), or the
# frontend's "Worker died" (TorchServe answers 507 for the requests that worker held).
KILL_FAILURES = {RESET, http_kind(500), http_kind(503), http_kind(507)}


def test_killed_worker_is_replaced_and_every_request_is_accounted_for(
    running: RunningStack,
) -> None:
    if not running.stack.workers(running.server):
        pytest.skip(f"{running.name}: {running.stack.workers_not_applicable}")
    result = kill_worker(running, FAULTS)

    assert result["recovered"], result
    assert result["worker_replaced"] and result["ready_again"] and result["correct_after"]
    assert result["workers_after"] == result["workers_before"]
    assert result["failed_before_kill"] == 0
    assert result["failed_after_recovery"] == 0 and result["requests_after_recovery"] > 0
    assert sum(result["outcomes"].values()) == result["requests"]
    # A request never answered is allowed only where the stack names why (an upstream
    # defect), only for requests sent before the worker set was whole again, and at most
    # one per client (a client waits for its own timeout, far longer than the recovery).
    allowed = KILL_FAILURES | ({TIMEOUT} if running.stack.lost_on_worker_death else set())
    assert set(result["outcomes"]) - {OK} <= allowed, result["outcomes"]
    assert result["lost"] == result["outcomes"].get(TIMEOUT, 0) <= FAULTS.clients, result
    assert result["lost_sent_after_recovery"] == 0, result
    assert bool(result["lost_why"]) == bool(result["lost"]), result


def test_slow_clients_do_not_starve_the_others(running: RunningStack) -> None:
    result = slow_clients(running, SLOW)

    # The attack held for the whole run: every slow connection was still trickling.
    assert result["slow_still_open_at_end"] == SLOW.slow_clients, result
    assert result["requests"] > 0
    assert result["not_starved"], result


def test_slow_clients_starve_a_thread_per_connection_server(
    artifacts: ArtifactPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same scenario against gunicorn's gthread worker (what the Flask stack used
    before): it must fail there, or the test above proves nothing."""
    monkeypatch.setenv("GUNICORN_CMD_ARGS", "--worker-class gthread --threads 4")
    with ExitStack() as exits:
        stack = start_stack("flask_torch", artifacts, tmp_path, exits)
        assert "Using worker: gthread" in stack.server.log_tail(200)
        result = slow_clients(stack, SLOW)
    assert not result["not_starved"], result
    assert result["outcomes"].get("timeout", 0) > 0


@pytest.mark.parametrize("name", [s for s in stack_names() if s != "tf_serving"])
def test_sigterm_during_load(
    name: str, artifacts: ArtifactPaths, tmp_path_factory: pytest.TempPathFactory
) -> None:
    reason = skipped_reason(name)
    if reason is not None:
        pytest.skip(reason)
    result = sigterm(name, artifacts, tmp_path_factory.mktemp(f"{name}-sigterm"), FAULTS)

    assert result["exited_within_grace"], result
    seen = set(result["after_signal"]) | set(result["in_flight"])
    # Nothing hangs and nothing answers wrongly: a request either succeeds or fails
    # visibly (refused, reset, an error status).
    assert not seen & {TIMEOUT, WRONG_ANSWER, OTHER}, result
    if name.startswith("flask_"):
        # gunicorn lets every accepted request finish, slow uploads included.
        assert result["in_flight_finished"], result
        # After the drain every new connection is refused. The only resets allowed: a
        # client's one connection caught in the accept queue when the listener closed.
        assert result["after_signal"].get(RESET, 0) <= FAULTS.clients, result
    # TorchServe does not drain (its in-flight requests fail): the report records it.
    # Once the server is gone, a new connection is refused, not left hanging.
    assert result["after_signal"].get(REFUSED, 0) > 0, result
