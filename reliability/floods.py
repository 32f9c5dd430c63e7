"""Floods of connections and of big bodies, held while normal clients run (issue 12).

One server per stack, four phases of `duration_s`; in each, normal clients (closed loop,
a fresh connection per request, so each must be accepted anew) are measured:

  baseline  nothing else
  idle      `idle_connections` keep-alive connections, each left idle after one answered
            request (a client pool gone quiet, or someone holding sockets)
  slow      `slow_clients` connections sending their body one byte per `byte_interval_s`
            (the "slow POST" attack), never finishing within the phase
  big       `big_clients` closed-loop senders of the largest batch (ServingLimits), half
            of them padding the body to the body limit, and one sender one byte over it

Judged per stack:
  normal    under idle and slow: no normal request failed, p99 at most `max_p99_ratio`
            times baseline
  workers   none lost: the worker set (where the stack has one) is the same processes
            after every phase as before, so a crash or a kernel OOM kill shows
  fds       bounded: the server tree's peak at most baseline + the connections held +
            FD_SLACK (the slow phase's, whose requests are in flight, times the fds the
            stack holds per request: ServingStack.fds_per_request, 3 behind a proxy), and
            back within FD_SLACK of baseline once they are closed
  big       clean: every answer right, 413 (over the limit only) or 503 (refused); RSS
            bounded: its peak in the phase's second half at most RSS_PLATEAU above the
            first half's (the bodies in flight are held, not accumulated); and stated: the
            growth over baseline per big sender, in copies of a max-size body (each
            request in flight may be held several times: bytes read, parsed rows, array,
            tensor; TorchServe also in its JVM frontend, whose heap is capped by vmargs)

The server's own defences show as figures, not failures: idle connections it closed
(its keep-alive timeout) and slow senders it cut off or answered (a request timeout).
"""

from __future__ import annotations

import http.client
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import psutil

from digitnet.codec import JSON_CONTENT_TYPE
from digitnet.spec import ServingLimits
from harness.lifecycle import RunningStack
from harness.payload import Batch, PayloadSet
from reliability.client import OK, Endpoint, endpoint_of, http_kind
from reliability.load import ClosedLoop, Sample, latency_ms, outcome_counts
from reliability.overload import MIB, UsageSampler
from reliability.report import verdict_checks
from reliability.settings import FloodSettings

# File descriptors a server may open beyond the connections held (logs, pipes, epoll,
# a worker's restart) before the count is "unbounded".
FD_SLACK = 64
# How long closed connections may take to leave the server's fd table.
FD_SETTLE_S = 5.0
# RSS in a big flood's second half may exceed its first half's peak by this share, or
# by RSS_PLATEAU_MIB where that is more (a garbage collector's sawtooth), and no more.
RSS_PLATEAU = 0.05
RSS_PLATEAU_MIB = 16.0
CONNECT_TIMEOUT_S = 10.0
PHASES = ("baseline", "idle", "slow", "big")


class PaddedPayloads:
    """`payloads` with every body padded with JSON whitespace to `size` bytes: the same
    request (and answer) at the largest body a client may send, or one byte over it."""

    def __init__(self, payloads: PayloadSet, size: int) -> None:
        self.spec = payloads.spec
        self._payloads = payloads
        self.size = size

    def next(self) -> Batch:
        batch = self._payloads.next()
        return replace(batch, body=batch.body + b" " * max(0, self.size - len(batch.body)))


def _closed(sock: socket.socket) -> bool:
    """The peer closed (or reset) `sock`; an answer waiting to be read is not a close.
    Polled without waiting: a socket with a timeout would otherwise wait for data."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
    if not poller.poll(0):
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class IdleHold:
    """`count` keep-alive connections, each after one answered request, left idle."""

    def __init__(self, endpoint: Endpoint, body: bytes, count: int, timeout_s: float) -> None:
        self.endpoint, self.body, self.count, self.timeout_s = endpoint, body, count, timeout_s
        self.connections: list[http.client.HTTPConnection] = []
        self.answers: Counter[str] = Counter()

    def open(self) -> None:
        headers = {**self.endpoint.headers, "Content-Type": JSON_CONTENT_TYPE}
        for _ in range(self.count):
            conn = http.client.HTTPConnection(self.endpoint.host, self.endpoint.port,
                                              timeout=self.timeout_s)
            try:
                conn.request("POST", self.endpoint.path, body=self.body, headers=headers)
                response = conn.getresponse()
                response.read()
                self.answers[http_kind(response.status)] += 1
            except OSError as err:
                self.answers[type(err).__name__] += 1
                conn.close()
                continue
            self.connections.append(conn)

    def still_open(self) -> int:
        """Held connections the server has not closed."""
        return sum(1 for c in self.connections if c.sock is not None and not _closed(c.sock))

    def close(self) -> None:
        for conn in self.connections:
            conn.close()


class Trickle(threading.Thread):
    """`count` POSTs on their own connections, one body byte each per `interval_s`, from
    one thread (a thread per slow client would cost the generator more than the server).
    A connection the server closes, or answers early, stops there; both are counted."""

    def __init__(self, endpoint: Endpoint, body: bytes, count: int, interval_s: float) -> None:
        super().__init__(name="flood-trickle", daemon=True)
        self.endpoint, self.body, self.count, self.interval_s = endpoint, body, count, interval_s
        self.stop = threading.Event()
        self.connected = threading.Event()
        self.sockets: list[socket.socket] = []
        self.connect_errors: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.closed_by_server = 0
        self._sent = 0

    def _head(self) -> bytes:
        lines = [f"POST {self.endpoint.path} HTTP/1.1", f"Host: {self.endpoint.host}",
                 f"Content-Type: {JSON_CONTENT_TYPE}", f"Content-Length: {len(self.body)}",
                 *(f"{k}: {v}" for k, v in self.endpoint.headers.items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def _drop(self, sock: socket.socket) -> None:
        """The server answered or closed `sock` before its body was complete."""
        try:
            answer = sock.recv(4096, socket.MSG_DONTWAIT)
        except OSError:
            answer = b""
        parts = answer.split(b"\r\n", 1)[0].split()
        if len(parts) > 1 and parts[1].isdigit():
            self.answered[http_kind(int(parts[1]))] += 1
        else:
            self.closed_by_server += 1
        sock.close()
        self.sockets.remove(sock)

    def run(self) -> None:
        head = self._head()
        try:
            for _ in range(self.count):
                try:
                    sock = socket.create_connection((self.endpoint.host, self.endpoint.port),
                                                    timeout=CONNECT_TIMEOUT_S)
                    sock.sendall(head)
                except OSError as err:
                    self.connect_errors[type(err).__name__] += 1
                    continue
                self.sockets.append(sock)
        finally:
            self.connected.set()
        while self._sent < len(self.body) and not self.stop.wait(self.interval_s):
            byte = self.body[self._sent : self._sent + 1]
            self._sent += 1
            poller = select.poll()
            by_fd = {s.fileno(): s for s in self.sockets}
            for fd in by_fd:
                poller.register(fd, select.POLLIN)
            for fd, _ in poller.poll(0):
                self._drop(by_fd[fd])
            for sock in list(self.sockets):
                try:
                    sock.sendall(byte)
                except OSError:
                    self._drop(sock)

    def still_open(self) -> int:
        return sum(1 for s in list(self.sockets) if not _closed(s))

    def close(self) -> None:
        self.stop.set()
        self.join(CONNECT_TIMEOUT_S)
        for sock in self.sockets:
            sock.close()


def _pids(running: RunningStack) -> set[int]:
    """The stack's worker processes, or its server process where it has no workers."""
    workers = running.stack.workers(running.server)
    return {p.pid for p in workers} if workers else {running.server.pid}


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            continue
    return alive


def _normal_figures(samples: list[Sample]) -> dict:
    return {"requests": len(samples), "failed": sum(1 for s in samples if not s.ok),
            "outcomes": outcome_counts(samples), **latency_ms(samples)}


def _wait_fds(usage: UsageSampler, at_most: int, timeout_s: float) -> int:
    """The server tree's fd count once it is at most `at_most` (or after `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        fds = usage.read()[4]
        if fds <= at_most or time.monotonic() >= deadline:
            return fds
        time.sleep(0.1)


def flood_verdicts(phases: dict, settings: FloodSettings, held: dict[str, int],
                   fds_per_request: int = 1) -> dict:  # fmt: skip
    """Per phase: what was judged and whether it held (pure: tested on synthetic figures).
    `held`: connections each flood phase held open at its start; `fds_per_request`: the
    fds the server holds for each slow client's request in flight (an idle connection's
    is one, its request answered)."""
    base = phases["baseline"]
    base_p99 = base["normal"]["p99_ms"]
    base_fds = base["usage"]["server_fds"] or 0
    verdicts: dict[str, dict] = {}
    for name in ("idle", "slow"):
        phase = phases[name]
        p99 = phase["normal"]["p99_ms"]
        ratio = p99 / base_p99 if p99 is not None and base_p99 else None
        peak = phase["usage"]["server_fds"]
        bound = base_fds + held[name] * (fds_per_request if name == "slow" else 1) + FD_SLACK
        verdicts[name] = {
            "p99_ratio": ratio,
            "normal_ok": phase["normal"]["failed"] == 0 and ratio is not None
            and ratio <= settings.max_p99_ratio,
            "fds_bound": bound,
            "fds_ok": peak is not None and peak <= bound
            and phase["fds_after_close"] <= base_fds + FD_SLACK,
            "workers_ok": not phase["workers_lost"],
        }
    big = phases["big"]
    allowed = {OK, http_kind(503)}
    unclean = {k: n for k, n in big["outcomes"].items() if k not in allowed}
    over_unclean = {k: n for k, n in big["over_limit_outcomes"].items()
                    if k not in {http_kind(413), http_kind(503)}}
    first, second = big["rss_halves_mib"]
    base_rss, peak = base["usage"]["server_rss_mib"], big["usage"]["server_rss_mib"]
    plateau = (None if first is None
               else first + max(RSS_PLATEAU * first, RSS_PLATEAU_MIB))
    verdicts["big"] = {
        "clean": not unclean and not over_unclean,
        "unclean": {**unclean, **{f"over limit {k}": n for k, n in over_unclean.items()}},
        "rss_plateau_mib": plateau,
        "rss_ok": plateau is not None and second is not None and second <= plateau,
        "copies_per_sender": None if base_rss is None or peak is None else
        (peak - base_rss) * MIB / (settings.big_clients * big["max_body_bytes"]),
        "workers_ok": not big["workers_lost"],
    }
    return verdicts


def floods(running: RunningStack, settings: FloodSettings,
           progress: Callable[[str], None] = print) -> dict:
    """Runs the four phases against `running`; returns the figures and the verdicts."""
    endpoint = endpoint_of(running)
    payloads = running.payloads()
    limits = ServingLimits.from_env()
    body = payloads.next().body
    workers = _pids(running)
    phases: dict[str, dict] = {}
    held = {"idle": 0, "slow": 0}

    def measure(name: str, usage: UsageSampler) -> dict:
        progress(f"floods {running.name}: {name}, normal clients for {settings.duration_s:g} s")
        begin = time.monotonic()
        loop = ClosedLoop(endpoint, payloads, settings.normal_clients,
                          settings.request_timeout_s, fresh_connections=True)
        with loop:
            time.sleep(settings.duration_s)
        samples = loop.recorder.snapshot()
        end = time.monotonic()
        middle = (begin + end) / 2
        return {"normal": _normal_figures(samples),
                "usage": usage.usage(begin, end),
                "rss_halves_mib": [usage.usage(begin, middle)["server_rss_mib"],
                                   usage.usage(middle, end)["server_rss_mib"]],
                "workers_lost": sorted(workers - _alive(workers))}

    with UsageSampler(running.server.pid, settings.sample_interval_s) as usage:
        phases["baseline"] = measure("baseline", usage)
        base_fds = phases["baseline"]["usage"]["server_fds"] or 0

        hold = IdleHold(endpoint, body, settings.idle_connections, settings.request_timeout_s)
        try:
            progress(f"floods {running.name}: opening {settings.idle_connections} idle "
                     "keep-alive connections")
            hold.open()
            held["idle"] = hold.still_open()
            phase = measure("idle", usage)
            phase.update(connections=settings.idle_connections, opened=len(hold.connections),
                         first_answers=dict(hold.answers), open_at_start=held["idle"],
                         open_at_end=hold.still_open())
        finally:
            hold.close()
        phase["fds_after_close"] = _wait_fds(usage, base_fds + FD_SLACK, FD_SETTLE_S)
        phases["idle"] = phase

        trickle = Trickle(endpoint, body, settings.slow_clients, settings.byte_interval_s)
        try:
            trickle.start()
            trickle.connected.wait(CONNECT_TIMEOUT_S + settings.slow_clients)
            # Every slow client's first body bytes in, so each holds what it can.
            time.sleep(2 * settings.byte_interval_s)
            held["slow"] = trickle.still_open()
            phase = measure("slow", usage)
            phase.update(connections=settings.slow_clients,
                         byte_interval_s=settings.byte_interval_s,
                         connect_errors=dict(trickle.connect_errors), open_at_start=held["slow"],
                         open_at_end=trickle.still_open(),
                         answered_early=dict(trickle.answered),
                         closed_by_server=trickle.closed_by_server)
        finally:
            trickle.close()
        phase["fds_after_close"] = _wait_fds(usage, base_fds + FD_SLACK, FD_SETTLE_S)
        phases["slow"] = phase

        batch = running.payloads(limits.max_batch)
        padded = PaddedPayloads(running.payloads(limits.max_batch), limits.max_body_bytes)
        over = PaddedPayloads(running.payloads(limits.max_batch), limits.max_body_bytes + 1)
        half = settings.big_clients // 2
        timeout = settings.request_timeout_s
        loops = [ClosedLoop(endpoint, batch, settings.big_clients - half, timeout),
                 ClosedLoop(endpoint, padded, half, timeout),
                 ClosedLoop(endpoint, over, 1, timeout)]
        progress(f"floods {running.name}: {settings.big_clients} senders of batch "
                 f"{limits.max_batch} ({half} padded to {limits.max_body_bytes} bytes), one "
                 "over the limit")
        for loop in loops:
            loop.start()
        try:
            phase = measure("big", usage)
        finally:
            big = [s for loop in loops[:2] for s in loop.stop()]
            over_samples = loops[2].stop()
        phase.update(big_clients=settings.big_clients, max_batch=limits.max_batch,
                     max_body_bytes=limits.max_body_bytes, requests=len(big),
                     outcomes=outcome_counts(big), latency=latency_ms(big),
                     over_limit_outcomes=outcome_counts(over_samples))
        phases["big"] = phase
        settled_rss = usage.read()[2]

    fds_each = running.stack.fds_per_request(running.server)
    verdicts = flood_verdicts(phases, settings, held, fds_each)
    passed = all(all(verdict_checks(verdict)) for verdict in verdicts.values())
    return {"stack": running.name, "settings": {name: getattr(settings, name)
                                                for name in settings.__dataclass_fields__},
            "phases": phases, "verdicts": verdicts, "rss_after_mib": settled_rss,
            "passed": passed}
