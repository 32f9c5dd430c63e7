"""The independent C client (reliability/openloop.c): built from source, run against a small
HTTP/1.1 server on 127.0.0.1 whose every reply kind it must time and classify: answers and
refusals on kept-alive connections, chunked replies, a server that closes, one that
answers too late, nothing listening."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from reliability import openloop
from reliability.client import OK, REFUSED, RESET, TIMEOUT, Endpoint, http_kind
from reliability.overload import Shot, generator_figures, piecewise_schedule
from tests.http_fixture import serving

BODY = b'{"instances": [[0.5]]}'


class Handler(BaseHTTPRequestHandler):
    """Replies by path: /ok 200; /busy 503 every other request; /chunked 200 in chunks;
    /close 200 then closes (saying so); /quiet-close 200 then closes without saying so;
    /slow answers after 1 s; /cut closes without a reply."""

    protocol_version = "HTTP/1.1"
    count = 0
    lock = threading.Lock()

    def log_message(self, *args: object) -> None:
        pass

    def reply(self, status: int, body: bytes, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        received = self.rfile.read(int(self.headers["Content-Length"]))
        assert received == BODY and self.headers["X-Token"] == "secret"
        with Handler.lock:
            Handler.count += 1
            n = Handler.count
        if self.path == "/ok":
            self.reply(200, b'{"classes": [1]}')
        elif self.path == "/busy":
            self.reply(503 if n % 2 else 200, b'{"error": "busy"}')
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b'{"classes"', b": [1]}"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/close":
            self.reply(200, b"{}", close=True)
        elif self.path == "/quiet-close":
            self.reply(200, b"{}")
            self.close_connection = True
        elif self.path == "/slow":
            time.sleep(1.0)
            self.reply(200, b"{}")
        elif self.path == "/cut":
            self.close_connection = True


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    if openloop.binary()[0] is None:
        pytest.skip(openloop.binary()[1])
    with serving(Handler) as httpd:
        yield httpd.server_address


def run(address: tuple[str, int], path: str, rate: float = 200.0, seconds: float = 0.5,
        timeout_s: float = 2.0, max_conns: int = 1024) -> tuple[float, list, dict]:
    endpoint = Endpoint(address[0], address[1], path, {"X-Token": "secret"})
    offsets, _ = piecewise_schedule([(rate, seconds)])
    return openloop.run(endpoint, BODY, "application/json", offsets, timeout_s, max_conns)


def kinds(records: list) -> Counter:
    return Counter(sample.kind for sample, _ in records)


def test_answers_go_out_on_schedule_over_kept_alive_connections(server) -> None:
    begin, records, summary = run(server, "/ok", rate=400.0, seconds=1.0)
    assert kinds(records) == {OK: 400}
    # Slots 2.5 ms apart: scheduled times are the schedule, in order, and nothing went out
    # before its slot; a server answering in well under a slot needs few connections.
    for i, (sample, picked) in enumerate(records):
        assert sample.scheduled_s == pytest.approx(begin + i / 400.0, abs=1e-6)
        assert sample.scheduled_s <= picked <= sample.start_s <= sample.end_s
    assert summary["opened"] < 50 and summary["unfinished"] == 0
    assert summary["cpu_s"] >= 0
    shots = [Shot(sample, picked) for sample, picked in records]
    assert generator_figures(shots, 400.0, begin, max_late_ms=50.0)["held"]


def test_refusals_are_told_apart_by_status(server) -> None:
    _, records, _ = run(server, "/busy")
    counted = kinds(records)
    assert set(counted) == {OK, http_kind(503)} and sum(counted.values()) == 100
    assert abs(counted[OK] - counted[http_kind(503)]) <= 2
    assert all(s.error == "HTTP 503" for s, _ in records if s.kind != OK)


@pytest.mark.parametrize("path", ["/chunked", "/close", "/quiet-close"])
def test_chunked_replies_and_closing_servers_are_whole_answers(server, path: str) -> None:
    _, records, summary = run(server, path)
    assert kinds(records) == {OK: 100}
    if path != "/chunked":
        assert summary["opened"] + summary["retried"] >= 90  # a connection per request


def test_a_reply_later_than_the_timeout_is_a_timeout(server) -> None:
    _, records, _ = run(server, "/slow", rate=20.0, seconds=0.25, timeout_s=0.2)
    assert kinds(records) == {TIMEOUT: 5}
    for sample, _ in records:
        assert 0.2 <= sample.end_s - sample.start_s < 0.5


def test_slots_that_never_get_a_connection_time_out_unsent(server) -> None:
    # One connection, held by a reply slower than the timeout: the later slots wait for it
    # and those still waiting after the timeout are given up, so every slot ends (a
    # server that holds every connection once left requests open past the hard end).
    _, records, summary = run(server, "/slow", rate=40.0, seconds=0.5, timeout_s=0.1,
                              max_conns=1)
    assert kinds(records) == {TIMEOUT: 20} and summary["unfinished"] == 0
    unsent = [(s, picked) for s, picked in records if picked - s.scheduled_s > 0.1]
    assert unsent, "every slot got a connection"
    for sample, picked in unsent:
        assert sample.start_s == sample.scheduled_s and sample.end_s == picked


def test_a_connection_closed_without_a_reply_is_a_reset(server) -> None:
    _, records, _ = run(server, "/cut", rate=20.0, seconds=0.25)
    assert kinds(records) == {RESET: 5}


def test_nothing_listening_is_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    if openloop.binary()[0] is None:
        pytest.skip(openloop.binary()[1])
    _, records, _ = run(("127.0.0.1", port), "/ok", rate=20.0, seconds=0.25)
    assert kinds(records) == {REFUSED: 5}


def test_records_parse_into_samples() -> None:
    text = ("0\t10.0\t10.0\t10.001\t10.003\t200\tok\n"
            "1\t10.5\t10.6\t10.6\t10.601\t503\thttp\n"
            "2\t11.0\t11.0\t11.0\t16.0\t0\ttimeout\n"
            "# summary\topened=2\tretried=1\tunfinished=0\n")
    records, summary = openloop.parse_records(text)
    assert summary == {"opened": 2, "retried": 1, "unfinished": 0}
    (ok, picked), (refused, late_pick), (timed_out, _) = records
    assert ok.kind == OK and ok.latency_s == pytest.approx(0.003) and picked == 10.0
    assert refused.kind == http_kind(503) and late_pick == 10.6 and refused.error == "HTTP 503"
    assert timed_out.kind == TIMEOUT
    with pytest.raises(ValueError):
        openloop.parse_records("0\t1\t2\n")
    with pytest.raises(ValueError):
        openloop.parse_records("0\t1\t1\t1\t1\t0\tstrange\n")


def test_a_changed_source_builds_a_new_binary(tmp_path, monkeypatch) -> None:
    if openloop.compiler() is None:
        pytest.skip(openloop.HINT)
    source = tmp_path / "openloop.c"
    source.write_bytes(openloop.SOURCE.read_bytes())
    monkeypatch.setattr(openloop, "SOURCE", source)
    monkeypatch.setattr(openloop, "BUILD_ROOT", tmp_path / "build")
    first, _ = openloop.binary()
    source.write_bytes(source.read_bytes() + b"\n/* changed */\n")
    second, _ = openloop.binary()
    assert first != second and first.exists() and second.exists()
    source.write_text("this is not C")
    built, why = openloop.binary()
    assert built is None and "could not build" in why
