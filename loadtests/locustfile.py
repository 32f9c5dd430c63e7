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

import json
import os
import sys
import time

import gevent
from locust import FastHttpUser, User, constant, events, task
from locust.exception import StopUser
from locust.runners import STATE_MISSING, MasterRunner, WorkerRunner

from digitnet.codec import BATCH_HEADER, INFERENCE_TIME_HEADER, JSON_CONTENT_TYPE
from digitnet.spec import ModelSpec
from harness.payload import PayloadSet, check_answer, check_json_reply
from loadtests import distributed
from loadtests.arrivals import ArrivalKind, ArrivalPlan, ArrivalSchedule
from loadtests.records import RequestRecorder
from loadtests.settings import LoadSettings, Mode

SETTINGS = LoadSettings.from_env()
SPEC = ModelSpec.from_env()

recorder = RequestRecorder(SETTINGS.records, SETTINGS.processes)
events.request.add_listener(recorder.on_request)

_payloads: PayloadSet | None = None


def payloads() -> PayloadSet:
    global _payloads  # noqa: PLW0603 - one answer key per process, built on first use
    if _payloads is None:
        _payloads = PayloadSet(SPEC, SETTINGS.batch_size, SETTINGS.reference,
                               limit=1 if SETTINGS.single_batch else None)  # fmt: skip
    return _payloads


_schedule: ArrivalSchedule | None = None
_process_index = 0


def schedule() -> ArrivalSchedule:
    """Open loop: this process's share of the run's arrival plan, generated up front from
    the recorded seed (MLPerf LoadGen's Server scenario): Poisson by default, constant
    spacing as an option. With P generator processes each takes rate / P and seed + its
    index, so the merged schedule is again Poisson at the whole rate."""
    global _schedule  # noqa: PLW0603 - one schedule per process, built on first use
    if _schedule is None:
        plan = ArrivalPlan(SETTINGS.rate, SETTINGS.schedule_s, SETTINGS.seed,
                           ArrivalKind(SETTINGS.arrivals))  # fmt: skip
        _schedule = ArrivalSchedule(plan.for_process(_process_index, SETTINGS.processes))
    return _schedule


def wait_for_slot() -> dict:
    """The request's context: closed loop, empty. Open loop: sleeps until the next slot
    and returns it as scheduled_s, with pool_wait_ms, how long the slot had already been
    due when this user came free to take it.

    A slot that falls due while every user is busy waits for a free user: that wait is
    the server's doing (it holds the users), like a queue in front of it, and its latency
    counts from the slot. Only the rest of a send's lateness, from the later of the slot
    and the user's free moment to the actual send, is the generator's own.

    Raises:
        StopUser: once the schedule is used up (the run is over for this user).
    """
    if SETTINGS.mode is not Mode.OPEN:
        return {}
    slot = schedule().next_slot()
    if slot is None:
        raise StopUser()
    free = time.time()
    delay = slot - free
    if delay > 0:
        gevent.sleep(delay)
    return {"scheduled_s": slot, "pool_wait_ms": max(0.0, -delay) * 1000.0}


def request_name() -> str:
    return f"{SETTINGS.target}/b{SETTINGS.batch_size}"


class VerifiedReplies:
    """Every reply is checked against the answer key, but a reply byte-identical to one
    already checked for the same batch is known right: a bytes comparison instead of a
    JSON parse and numpy checks per request, which was half of the generator's own cost
    (its floor against the null server). Any other reply is checked in full."""

    # Distinct right replies kept per batch: a server that batches dynamically may answer
    # the same images with logits differing in the last bits, batch by batch.
    KEEP = 4

    def __init__(self) -> None:
        self.known: dict[int, list[bytes]] = {}

    def check(self, batch, content: bytes) -> str | None:
        """None when `content` is a right reply for `batch`, else what is wrong."""
        known = self.known.setdefault(id(batch), [])
        if content in known:
            return None
        try:
            body = json.loads(content)
        except ValueError:
            return "reply is not JSON"
        problem = check_json_reply(batch, body, SPEC.num_classes)
        if problem is None and len(known) < self.KEEP:
            known.append(content)
        return problem


verified_replies = VerifiedReplies()


class RestPredictUser(FastHttpUser):
    """POSTs the shared JSON payload to LOADTEST_PATH with LOADTEST_HEADERS and checks the
    reply against the answer key."""

    wait_time = constant(0)

    @task
    def predict(self) -> None:
        batch = payloads().next()
        context = wait_for_slot()
        # Read per request, not at import: a distributed worker learns them at its spawn.
        with self.client.post(
            SETTINGS.path,
            data=batch.body,
            headers={"Content-Type": JSON_CONTENT_TYPE, **SETTINGS.headers},
            name=request_name(),
            context=context,
            catch_response=True,
        ) as response:
            # Locust fires the event with its own merged copy of `context`.
            meta = response.request_meta["context"]
            meta["server_ms"] = response.headers.get(INFERENCE_TIME_HEADER, "")
            meta["batch_requests"] = response.headers.get(BATCH_HEADER, "")
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            problem = verified_replies.check(batch, response.content)
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


def load_grpc() -> None:
    enable_grpc_under_gevent()
    import tensorflow  # noqa: F401
    from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: F401


# A worker of a distributed run (`locust --worker`, loadtests.worker) learns its user
# class only at its spawn, and is counted ready by the master as soon as it connects,
# before the init event: gRPC's imports (seconds) are made here, before it connects,
# rather than between the master's start and the first request.
if "--worker" in sys.argv:
    load_grpc()


@events.init_command_line_parser.add_listener
def add_arguments(parser) -> None:
    parser.add_argument(distributed.SETTINGS_ARG, default="", include_in_web_ui=False,
                        help="LOADTEST_* settings as JSON, from a distributed master to its "
                        "workers (set by the master itself; loadtests/distributed.py)")


collector = distributed.RecordCollector()
clock = distributed.ProcessClock()


@events.init.add_listener
def prepare_before_the_clock_starts(environment, **_kwargs) -> None:
    """Loads the answer key, and for gRPC tensorflow and gevent's gRPC support, before
    Locust's run time starts: seconds of imports inside the first task would eat a short
    run and stall every user at once. Notes this process's index among the generator
    processes (Locust's --processes workers), for its share of the arrival plan.

    A distributed master (LOADTEST_DISTRIBUTED) sends the point's settings with its spawn
    message and collects its workers' records; it runs no users itself."""
    global _process_index  # noqa: PLW0603
    _process_index = getattr(environment.runner, "worker_index", 0) or 0
    runner = environment.runner
    if SETTINGS.distributed and isinstance(runner, MasterRunner):
        setattr(environment.parsed_options, distributed.SETTINGS_ATTR,
                distributed.settings_payload(os.environ))
        runner.register_message(distributed.MESSAGE, collector.on_message)
        events.test_stop.add_listener(collect_from_workers)
        return
    if isinstance(runner, WorkerRunner) and "--worker" in sys.argv:
        events.test_start.add_listener(adopt_the_masters_settings)
        events.test_stop.add_listener(send_records_to_master)
        # The stop runs in its own greenlet: stopping the users waits for them.
        runner.register_message(distributed.FLUSH, lambda environment, **_: runner.stop(),
                                concurrent=True)  # fmt: skip
        return
    events.test_stop.add_listener(recorder.flush)
    payloads()
    if any(cls.__name__ == "TfServingGrpcUser" for cls in environment.user_classes):
        load_grpc()
    # gevent's loop caches "now" and has not run during these seconds of imports: without
    # a refresh, Locust's --run-time timer (spawn_later) counts from the stale time and
    # ends the run that much early (a 3 s run measured 1.4 s here).
    gevent.get_hub().loop.update_now()


def adopt_the_masters_settings(environment, **_kwargs) -> None:
    """A distributed worker, at its spawn: the point's settings from the master's custom
    argument, then the answer key for them, before any user starts."""
    global SETTINGS, _payloads, _schedule, _process_index  # noqa: PLW0603
    payload = getattr(environment.parsed_options, distributed.SETTINGS_ATTR, "")
    if distributed.adopt_settings(payload):
        SETTINGS = LoadSettings.from_env()
        _payloads = _schedule = None
        # Rows are kept here and sent at the stop; the path is the master's to write.
        recorder.path, recorder.processes = SETTINGS.records, SETTINGS.processes
    _process_index = getattr(environment.runner, "worker_index", 0) or 0
    payloads()
    clock.start()


def send_records_to_master(environment, **_kwargs) -> None:
    """A distributed worker, at its stop: its rows and its CPU to the master, before it
    tells the master it stopped (messages from one worker arrive in order)."""
    rows, recorder.rows = recorder.rows, []
    distributed.forward(environment.runner.send_message, _process_index, rows,
                        clock.cpu_pct())


def collect_from_workers(environment, **_kwargs) -> None:
    """The distributed master, at the end of its run time: tells its workers to stop and
    send their records, waits for every worker's, then writes them
    (loadtests.distributed.RecordCollector)."""
    expected = environment.parsed_options.expect_workers
    runner = environment.runner
    runner.send_message(distributed.FLUSH)

    def lost() -> set[int]:
        return {runner.get_worker_index(c.id) for c in runner.clients.values()
                if c.state == STATE_MISSING}  # fmt: skip

    if not collector.wait(expected, lost=lost):
        print(f"locust master: only {len(collector.done)} of {expected} workers sent their "
              "records", file=sys.stderr, flush=True)
    if SETTINGS.records is not None:
        collector.write(SETTINGS.records, expected)


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
        context = wait_for_slot()
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
