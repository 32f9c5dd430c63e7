"""Locust users, one per protocol: every stack is reached through them.

Run one user class per process, against one server:
  LOADTEST_PATH=/v1/models/digitnet:predict locust -f loadtests/locustfile.py \
      --headless -u 8 -r 8 -t 30s --host http://127.0.0.1:8000 RestPredictUser
Settings come from the environment (loadtests/settings.py); `make loadtest` and the
runner set them from the stack plugin's clients (route, headers, token), so nothing here
names a stack. The REST user uses FastHttpUser; the gRPC user (TF Serving's
PredictionService protocol) fires Locust's request events itself, Locust's documented
pattern for other protocols. Every reply is checked against the answer key: a wrong or
malformed answer is a failure, not a fast success.
"""

from __future__ import annotations

import time

import gevent
from locust import FastHttpUser, User, constant, events, task

from digitnet.codec import JSON_CONTENT_TYPE
from digitnet.spec import ModelSpec
from harness.payload import PayloadSet, check_answer, check_json_reply
from loadtests.records import RequestRecorder
from loadtests.settings import LoadSettings, Mode

SETTINGS = LoadSettings.from_env()
SPEC = ModelSpec.from_env()
SERVER_TIME_HEADER = "X-Inference-Time-Ms"

recorder = RequestRecorder(SETTINGS.records)
events.request.add_listener(recorder.on_request)
events.test_stop.add_listener(recorder.flush)

_payloads: PayloadSet | None = None


def payloads() -> PayloadSet:
    global _payloads  # noqa: PLW0603 - one answer key per process, built on first use
    if _payloads is None:
        _payloads = PayloadSet(SPEC, SETTINGS.batch_size, SETTINGS.reference)
    return _payloads


class ArrivalSchedule:
    """Open loop: one shared timetable of request starts at SETTINGS.rate per second.

    A user takes the next slot and sleeps until it; when every user is busy, slots fall
    due unserved and their latency keeps counting from the slot time.
    """

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.origin: float | None = None
        self.taken = 0

    def next_slot(self) -> float:
        if self.origin is None:
            self.origin = time.time()
        slot = self.origin + self.taken * self.interval
        self.taken += 1
        return slot


schedule = ArrivalSchedule(SETTINGS.rate)


def wait_for_slot() -> float | None:
    """Closed loop: None at once. Open loop: sleeps until the next slot and returns it."""
    if SETTINGS.mode is not Mode.OPEN:
        return None
    slot = schedule.next_slot()
    delay = slot - time.time()
    if delay > 0:
        gevent.sleep(delay)
    return slot


def request_name() -> str:
    return f"{SETTINGS.target}/b{SETTINGS.batch_size}"


class RestPredictUser(FastHttpUser):
    """POSTs the shared JSON payload to LOADTEST_PATH with LOADTEST_HEADERS and checks the
    reply against the answer key."""

    wait_time = constant(0)
    path = SETTINGS.path
    headers = SETTINGS.headers

    @task
    def predict(self) -> None:
        batch = payloads().next()
        context = {"scheduled_s": wait_for_slot()}
        with self.client.post(
            self.path,
            data=batch.body,
            headers={"Content-Type": JSON_CONTENT_TYPE, **self.headers},
            name=request_name(),
            context=context,
            catch_response=True,
        ) as response:
            # Locust fires the event with its own merged copy of `context`.
            response.request_meta["context"]["server_ms"] = response.headers.get(
                SERVER_TIME_HEADER, ""
            )
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            try:
                body = response.json()
            except ValueError:
                response.failure("reply is not JSON")
                return
            problem = check_json_reply(batch, body, SPEC.num_classes)
            if problem:
                response.failure(problem)


_grpc_gevent_ready = False


def enable_grpc_under_gevent() -> None:
    """grpc's own threads would block gevent's loop; this makes them cooperate (once,
    before the first channel)."""
    global _grpc_gevent_ready  # noqa: PLW0603
    if not _grpc_gevent_ready:
        import grpc.experimental.gevent as grpc_gevent

        grpc_gevent.init_gevent()
        _grpc_gevent_ready = True


@events.init.add_listener
def prepare_before_the_clock_starts(environment, **_kwargs) -> None:
    """Loads the answer key, and for gRPC tensorflow and gevent's gRPC support, before
    Locust's run time starts: seconds of imports inside the first task would eat a short
    run and stall every user at once."""
    payloads()
    if any(cls.__name__ == "TfServingGrpcUser" for cls in environment.user_classes):
        enable_grpc_under_gevent()
        import tensorflow  # noqa: F401
        from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: F401
    # gevent's loop caches "now" and has not run during these seconds of imports: without
    # a refresh, Locust's --run-time timer (spawn_later) counts from the stale time and
    # ends the run that much early (a 3 s run measured 1.4 s here).
    gevent.get_hub().loop.update_now()


class TfServingGrpcUser(User):
    """PredictionService.Predict over gRPC, reported through Locust's request event."""

    wait_time = constant(0)

    def on_start(self) -> None:
        from digitnet.clients import TfServingGrpcClient

        enable_grpc_under_gevent()
        target = SETTINGS.grpc_target or self.host.split("://")[-1]
        self.grpc = TfServingGrpcClient(target, SPEC)
        # Encoded once per batch: the generator's CPU goes to sending, as for REST.
        self.requests: dict[int, object] = {}

    def on_stop(self) -> None:
        self.grpc.close()

    @task
    def predict(self) -> None:
        batch = payloads().next()
        context = {"scheduled_s": wait_for_slot()}
        request = self.requests.get(id(batch))
        if request is None:
            request = self.requests[id(batch)] = self.grpc.build_request(batch.images)
        started = time.time()
        clock = time.perf_counter()
        exception = None
        try:
            logits, classes = self.grpc.read_reply(self.grpc.send(request), len(batch.images))
            problem = check_answer(batch, logits, classes)
            if problem:
                exception = AssertionError(problem)
        except Exception as err:  # noqa: BLE001 - any failure is a failed request
            exception = err
        events.request.fire(
            request_type="grpc",
            name=request_name(),
            response_time=(time.perf_counter() - clock) * 1000.0,
            response_length=0,
            exception=exception,
            context=context,
            start_time=started,
        )
