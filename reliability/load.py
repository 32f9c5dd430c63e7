"""Bounded load loops that keep every request they send.

Each request becomes a `Sample` (when it started and ended, and its outcome); nothing is
dropped, so a fault run can say exactly how many requests failed and when. Replies are
checked against the answer key (harness.payload), so a wrong answer is a failure too.

  closed loop: N threads, each sends its next request when the last one returns.
  open loop: requests scheduled at a fixed rate; a late request is sent at once and its
             latency counts from its scheduled time (no coordinated omission).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from harness.payload import PayloadSet, check_json_reply
from reliability.client import (
    OK,
    OTHER,
    REFUSED,
    WRONG_ANSWER,
    Connection,
    Endpoint,
    Reply,
    http_kind,
)

# Hard cap on any loop, whatever its caller asks: nothing here may run unbounded.
MAX_RUN_S = 3600.0
# A client whose connection was refused waits this long before the next try, as real
# clients back off; without it a stopped server is hammered with thousands of connects.
REFUSED_BACKOFF_S = 0.02


@dataclass(frozen=True)
class Sample:
    """One request: times in seconds on the loop's clock (time.monotonic())."""

    start_s: float
    end_s: float
    kind: str
    scheduled_s: float | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.kind == OK

    @property
    def latency_s(self) -> float:
        return self.end_s - (self.scheduled_s if self.scheduled_s is not None else self.start_s)


def judge(reply: Reply, payloads: PayloadSet, batch) -> tuple[str, str]:
    """(kind, error): OK only for a 200 whose body is the right answer for `batch`."""
    if reply.kind != http_kind(200):
        return reply.kind, reply.error or reply.body[:200].decode(errors="replace")
    try:
        document = json.loads(reply.body)
    except ValueError as err:
        return WRONG_ANSWER, f"reply is not JSON: {err}"
    problem = check_json_reply(batch, document, payloads.spec.num_classes)
    return (WRONG_ANSWER, problem) if problem else (OK, "")


@dataclass
class Recorder:
    """Thread-safe list of samples (list.append is atomic in CPython; the lock documents
    the intent and keeps snapshots consistent)."""

    samples: list[Sample] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, sample: Sample) -> None:
        with self._lock:
            self.samples.append(sample)

    def snapshot(self) -> list[Sample]:
        with self._lock:
            return list(self.samples)


def send_one(conn: Connection, payloads: PayloadSet, scheduled_s: float | None = None) -> Sample:
    batch = payloads.next()
    start = time.monotonic()
    reply = conn.post(batch.body)
    end = time.monotonic()
    kind, error = judge(reply, payloads, batch)
    return Sample(start, end, kind, scheduled_s, error)


class ClosedLoop:
    """`clients` threads sending back to back until stop() (or `max_s`)."""

    def __init__(
        self,
        endpoint: Endpoint,
        payloads: PayloadSet,
        clients: int,
        timeout_s: float,
        fresh_connections: bool = False,
        max_s: float = MAX_RUN_S,
    ) -> None:
        self.endpoint = endpoint
        self.payloads = payloads
        self.clients = clients
        self.timeout_s = timeout_s
        self.fresh = fresh_connections
        self.deadline = time.monotonic() + min(max_s, MAX_RUN_S)
        self.recorder = Recorder()
        self._stop = threading.Event()
        # Start time of the request each client has in flight (None between requests).
        self._inflight: dict[int, float | None] = {i: None for i in range(clients)}
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"closed-{i}", daemon=True)
            for i in range(clients)
        ]

    def oldest_in_flight(self) -> float | None:
        """Start time of the oldest request still waiting for its answer, if any."""
        starts = [start for start in self._inflight.values() if start is not None]
        return min(starts, default=None)

    def _run(self, client: int) -> None:
        conn = Connection(self.endpoint, self.timeout_s, fresh=self.fresh)
        try:
            while not self._stop.is_set() and time.monotonic() < self.deadline:
                self._inflight[client] = time.monotonic()
                try:
                    sample = send_one(conn, self.payloads)
                except Exception as err:  # noqa: BLE001 - a client must never die silently
                    now = time.monotonic()
                    sample = Sample(now, now, OTHER, None, repr(err))
                    conn.close()
                finally:
                    self._inflight[client] = None
                self.recorder.add(sample)
                if sample.kind == REFUSED:
                    self._stop.wait(REFUSED_BACKOFF_S)
        finally:
            conn.close()

    def start(self) -> ClosedLoop:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[Sample]:
        """Stops sending, waits for the requests in flight, returns every sample."""
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout_s + 5.0)
        return self.recorder.snapshot()

    def __enter__(self) -> ClosedLoop:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_open_loop(
    endpoint: Endpoint,
    payloads: PayloadSet,
    rate: float,
    duration_s: float,
    senders: int,
    timeout_s: float,
    on_tick: Callable[[float], None] | None = None,
) -> list[Sample]:
    """Sends round(rate x duration) requests at `rate` per second from `senders` threads.

    Args:
        on_tick: called about once a second with the elapsed time (progress printing).

    Returns:
        One sample per scheduled request, in no particular order.
    """
    if rate <= 0 or duration_s <= 0:
        raise ValueError(f"rate and duration must be positive, got {rate}, {duration_s}")
    duration_s = min(duration_s, MAX_RUN_S)
    total = int(round(rate * duration_s))
    recorder = Recorder()
    lock = threading.Lock()
    next_index = [0]
    begin = time.monotonic() + 0.2

    def sender() -> None:
        conn = Connection(endpoint, timeout_s)
        try:
            while True:
                with lock:
                    index = next_index[0]
                    next_index[0] += 1
                if index >= total:
                    return
                scheduled = begin + index / rate
                delay = scheduled - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                recorder.add(send_one(conn, payloads, scheduled_s=scheduled))
        finally:
            conn.close()

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(senders)]
    for thread in threads:
        thread.start()
    last_tick = begin
    while any(thread.is_alive() for thread in threads):
        for thread in threads:
            thread.join(0.2)
        now = time.monotonic()
        if on_tick is not None and now - last_tick >= 1.0:
            on_tick(now - begin)
            last_tick = now
    samples = recorder.snapshot()
    if len(samples) != total:
        raise RuntimeError(f"open loop lost requests: {len(samples)} of {total} recorded")
    return samples


def outcome_counts(samples: list[Sample]) -> dict[str, int]:
    return dict(sorted(Counter(sample.kind for sample in samples).items()))


def latency_ms(samples: list[Sample]) -> dict[str, float | None]:
    """p50, p99 and max latency of the successful samples, in milliseconds."""
    values = np.asarray([s.latency_s for s in samples if s.ok]) * 1000.0
    if len(values) == 0:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "max_ms": float(values.max()),
    }
