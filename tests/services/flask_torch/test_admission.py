"""Admission control of the Flask app: the bound's derivation, the gate on its own, the
app in-process (a request held by a loading model fills a bound of one), and the real
gunicorn + gevent stack refusing part of a concurrent burst with 503 while every
sequential request succeeds."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
import requests

from digitnet.artifacts import ArtifactPaths
from digitnet.clients import FLASK_LIVE_PATH, FLASK_READY_PATH
from digitnet.data import DigitsSplit
from digitnet.spec import AdmissionPolicy
from harness.lifecycle import RunningStack, start_stack
from loadtests.profiles import PROFILES
from services.flask_torch.app import (
    ADMISSION_KEY,
    OVERLOADED_REASON,
    AdmissionGate,
    create_app,
)
from services.flask_torch.predictor import TorchScriptModel
from services.flask_torch.settings import Settings
from tests.services.burst import check_a_bounded_stack
from tests.services.flask_torch.test_app import (
    WAIT_S,
    GatedLoaderDouble,
    image_rows,
    post_json_text,
)

ADMIT_ENV = [
    "DIGITNET_ADMISSION", "DIGITNET_ADMIT_ORDER", "DIGITNET_ADMIT_OBJECTIVE_MS",
    "DIGITNET_ADMIT_QUEUE_SHARE",
    "DIGITNET_ADMIT_SERVICE_MS", "DIGITNET_ADMIT_MEASURE", "DIGITNET_ADMIT_MIN_LIMIT",
    "DIGITNET_ADMIT_LIMIT", "DIGITNET_ADMIT_RETRY_AFTER_S",
]
HTTP_TIMEOUT_S = 10.0
# Concurrent requests per burst against a bound of one request per worker, and how many
# bursts at most until one is refused (the first almost always is).
BURST = 24
MAX_BURSTS = 10


def wait_for(check, what: str) -> None:
    """Polls `check` until it holds (bounded by WAIT_S): waits for a state, not a time."""
    stop = threading.Event()
    for _ in range(int(WAIT_S / 0.01)):
        if check():
            return
        stop.wait(0.01)
    raise AssertionError(f"never happened: {what}")


# --- the bound ------------------------------------------------------------------------------


def test_bound_is_the_objectives_queue_share_over_the_service_time() -> None:
    policy = AdmissionPolicy(objective_ms=50.0, queue_share=0.5, service_ms=1.0)
    assert policy.bound() == 25
    assert policy.bound(0.5) == 50  # a faster worker queues more
    assert policy.bound(10.0) == 2  # never below min_limit
    assert policy.bound(None) == 25  # nothing measured yet: the configured service time
    assert AdmissionPolicy(limit=3).bound(0.01) == 3  # a fixed bound ignores the derivation


def test_the_objective_is_the_load_tests_objective() -> None:
    assert {p.slo_p99_ms for p in PROFILES.values()} == {AdmissionPolicy().objective_ms}


def test_policy_reads_its_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ADMIT_ENV:
        monkeypatch.delenv(name, raising=False)
    assert AdmissionPolicy.from_env() == AdmissionPolicy()
    monkeypatch.setenv("DIGITNET_ADMISSION", "on")
    monkeypatch.setenv("DIGITNET_ADMIT_OBJECTIVE_MS", "100")
    monkeypatch.setenv("DIGITNET_ADMIT_SERVICE_MS", "4")
    monkeypatch.setenv("DIGITNET_ADMIT_LIMIT", "7")
    monkeypatch.setenv("DIGITNET_ADMIT_RETRY_AFTER_S", "2")
    policy = Settings.from_env().admission
    assert (policy.enabled, policy.objective_ms, policy.service_ms) == (True, 100.0, 4.0)
    assert (policy.limit, policy.retry_after_s) == (7, 2)


@pytest.mark.parametrize("field,value", [("objective_ms", 0.0), ("service_ms", -1.0),
                                         ("queue_share", 1.5), ("min_limit", 0),
                                         ("limit", -1)])
def test_policy_refuses_nonsense(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        AdmissionPolicy(**{field: value})


# --- the gate on its own (threads) -----------------------------------------------------------


def queue_second(gate: AdmissionGate) -> tuple[threading.Thread, threading.Event]:
    """A second request entering `gate` from another thread while the first holds the
    turn, returned once it is queued; its event is set when it gets the turn (it leaves
    at once)."""
    second_in = threading.Event()

    def second() -> None:
        assert gate.enter()
        second_in.set()
        gate.leave(None)

    thread = threading.Thread(target=second)
    thread.start()
    wait_for(lambda: gate.inside == 2, "the second request queued")
    return thread, second_in


def test_gate_admits_up_to_its_bound_in_arrival_order_and_refuses_the_next() -> None:
    gate = AdmissionGate(AdmissionPolicy(enabled=True, limit=2))
    order: list[str] = []
    assert gate.enter()  # first: its turn at once
    second_in = threading.Event()

    def second() -> None:
        assert gate.enter()  # queued behind the first
        order.append("second")
        second_in.set()
        gate.leave(None)

    thread = threading.Thread(target=second)
    thread.start()
    try:
        wait_for(lambda: gate.inside == 2, "the second request queued")
        assert not gate.enter()  # a third finds the worker full: refused at once
        assert gate.refused == 1
        assert not second_in.is_set()  # still waiting for the first's turn
        order.append("first")
    finally:
        gate.leave(None)
        thread.join(WAIT_S)
    assert order == ["first", "second"]
    assert gate.inside == 0
    assert gate.enter()  # room again
    gate.leave(None)


def test_an_idle_worker_alone_with_its_connection_takes_the_turn_without_the_hand_off() -> None:
    handed: list[object] = []

    def next_loop_turn(fn) -> None:  # stands in for gevent's: records, then runs it
        handed.append(fn)
        fn()

    alone = [True]
    gate = AdmissionGate(AdmissionPolicy(enabled=True, limit=2), next_loop_turn,
                         lambda: alone[0])  # fmt: skip
    assert gate.enter() and gate.inside == 1
    assert handed == []  # its turn at once: nothing else could be waiting
    # Busy: the next request queues and gets its turn through the hand-off, alone or not.
    thread, second_in = queue_second(gate)
    try:
        assert not gate.enter() and gate.refused == 1  # the bound holds as before
    finally:
        gate.leave(None)
        thread.join(WAIT_S)
    assert second_in.is_set() and len(handed) == 1 and gate.inside == 0
    # With other connections open, an idle worker hands over as before.
    alone[0] = False
    assert gate.enter()
    assert len(handed) == 2
    gate.leave(None)


def test_gate_bound_follows_the_measured_service_time() -> None:
    gate = AdmissionGate(AdmissionPolicy(enabled=True, objective_ms=50.0, queue_share=0.5,
                                         service_ms=1.0))
    assert gate.bound == 25
    for _ in range(200):
        assert gate.enter()
        gate.leave(0.005)  # 5 ms per request
    assert gate.service_ms == pytest.approx(5.0, rel=0.01)
    assert gate.bound == 5
    fixed = AdmissionGate(AdmissionPolicy(enabled=True, measure=False))
    assert fixed.enter()
    fixed.leave(0.005)
    assert fixed.service_ms == AdmissionPolicy().service_ms


# --- the app in-process ----------------------------------------------------------------------


def test_a_full_worker_answers_503_with_retry_after_and_the_json_reason(
    settings: Settings, split: DigitsSplit
) -> None:
    """A bound of one, held by a request waiting for the (gated) model load: the next
    predict is refused at once, probes are not, and the held one is answered."""
    bounded = dataclasses.replace(settings, load_wait_s=WAIT_S,
                                  admission=AdmissionPolicy(enabled=True, limit=1, retry_after_s=3))
    loader = GatedLoaderDouble()
    model = TorchScriptModel(bounded, loader=loader)
    app = create_app(bounded, model=model)
    gate = app.extensions[ADMISSION_KEY]
    body = json.dumps({"instances": image_rows(split)})
    held: list = []
    holder = threading.Thread(target=lambda: held.append(post_json_text(app.test_client(), body)))
    try:
        assert loader.entered.wait(WAIT_S)
        holder.start()
        wait_for(lambda: gate.inside == 1, "the first request admitted")
        refused = post_json_text(app.test_client(), body)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "3"
        assert refused.get_json()["reason"] == OVERLOADED_REASON
        assert "holds 1 request(s)" in refused.get_json()["error"]
        assert "retry after 3 s" in refused.get_json()["error"]
        assert set(refused.get_json()) == {"error", "reason"}
        client = app.test_client()
        assert client.get(FLASK_LIVE_PATH).status_code == 200
        assert client.get(FLASK_READY_PATH).get_json()["reason"] == "model_not_ready"
    finally:
        loader.release.set()
        holder.join(WAIT_S)
    (answer,) = held
    assert answer.status_code == 200, answer.get_data(as_text=True)
    for _ in range(5):  # one at a time: never refused
        assert post_json_text(app.test_client(), body).status_code == 200
    assert gate.inside == 0


def test_bad_requests_leave_the_gate_and_admission_can_be_switched_off(
    settings: Settings, loaded_model: TorchScriptModel, split: DigitsSplit
) -> None:
    bounded = dataclasses.replace(settings, admission=AdmissionPolicy(enabled=True, limit=1))
    app = create_app(bounded, model=loaded_model)
    client = app.test_client()
    assert post_json_text(client, b'{"instances": [1,, 2]}').status_code == 400
    assert app.extensions[ADMISSION_KEY].inside == 0
    assert post_json_text(client, json.dumps({"instances": image_rows(split)})).status_code == 200
    off = create_app(dataclasses.replace(settings, admission=AdmissionPolicy(enabled=False,
                                                                             order=False)),
                     model=loaded_model)  # fmt: skip
    assert ADMISSION_KEY not in off.extensions
    assert post_json_text(off.test_client(), json.dumps({"instances": image_rows(split)})
                          ).status_code == 200


def test_by_default_the_gate_only_orders_and_never_refuses(
    settings: Settings, loaded_model: TorchScriptModel, split: DigitsSplit
) -> None:
    assert (AdmissionPolicy().enabled, AdmissionPolicy().order) == (False, True)
    app = create_app(dataclasses.replace(settings, admission=AdmissionPolicy(limit=1)),
                     model=loaded_model)  # fmt: skip
    gate = app.extensions[ADMISSION_KEY]
    # limit=1 would refuse a second request; ordering alone ignores it.
    assert gate.bound > 10**9
    gate.enter()  # a request holding the worker's turn
    try:
        assert gate.inside == 1
        other = threading.Thread(target=lambda: (gate.enter(), gate.leave(None)))
        other.start()
        deadline = time.monotonic() + 10
        while gate.inside < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gate.inside == 2 and gate.refused == 0  # queued behind it, not refused
    finally:
        gate.leave(None)
    other.join(10)
    assert gate.inside == 0 and gate.refused == 0
    assert post_json_text(app.test_client(), json.dumps({"instances": image_rows(split)})
                          ).status_code == 200


# --- the real stack: gunicorn, gevent, one worker ---------------------------------------------


@pytest.fixture(scope="module")
def bounded_stack(artifacts: ArtifactPaths,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    env = {"DIGITNET_ADMISSION": "on", "DIGITNET_ADMIT_LIMIT": "1", "FLASK_TORCH_WORKERS": "1"}
    with ExitStack() as exits:
        yield start_stack("flask_torch", artifacts, tmp_path_factory.mktemp("admission"),
                          exits, env=env)


@pytest.mark.integration
def test_real_stack_refuses_part_of_a_burst_and_answers_every_sequential_request(
    bounded_stack: RunningStack, artifacts: ArtifactPaths, split: DigitsSplit
) -> None:
    check_a_bounded_stack(bounded_stack, artifacts.torchscript, split.test_images[:64],
                          BURST, MAX_BURSTS, HTTP_TIMEOUT_S)  # fmt: skip
    base = bounded_stack.rest.base_url.rstrip("/")
    assert requests.get(base + FLASK_LIVE_PATH, timeout=HTTP_TIMEOUT_S).status_code == 200


def test_under_backlog_the_gate_measures_turn_to_turn_not_compute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a request queued, the next turn's start minus this one's is the cost folded
    in (parsing, writing and refusing included), not the compute time the request
    reports; a fake clock makes it exact."""
    clock = [100.0]
    monkeypatch.setattr("services.flask_torch.app.time.monotonic", lambda: clock[0])
    gate = AdmissionGate(AdmissionPolicy(enabled=True, limit=4, service_ms=1.0))
    assert gate.enter()
    thread, second_in = queue_second(gate)
    clock[0] += 0.020  # the first turn took 20 ms of the worker
    gate.leave(0.0001)  # while it reports 0.1 ms of compute
    assert second_in.wait(WAIT_S)
    thread.join(WAIT_S)
    assert gate.service_ms == pytest.approx(1.0 + 0.05 * (20.0 - 1.0))
