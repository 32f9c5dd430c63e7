"""wrk runs: the Lua script, the statistics line, the Locust-vs-wrk comparison, and what
wrk really sends (checked by a small recording server)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from digitnet.codec import BATCH_HEADER
from loadtests.wrk import (
    BATCHES_MARKER,
    DIVERGENCE_LIMIT,
    JSON_MARKER,
    compare_clients,
    lua_string,
    parse_batches,
    parse_output,
    parse_timings,
    render_lua,
    run_wrk,
    timings_run,
    wrk_available,
)
from tests.http_fixture import base_url, serving

WRK_OK, WRK_REASON = wrk_available()
needs_wrk = pytest.mark.skipif(not WRK_OK, reason=WRK_REASON)

STATS = {
    "requests": 20000, "duration_us": 2_000_000, "bytes": 1_000_000,
    "connect_errors": 0, "read_errors": 1, "write_errors": 0, "status_errors": 100,
    "timeouts": 2, "p50_us": 410.0, "p90_us": 700.5, "p99_us": 2800.0, "min_us": 90.0,
    "max_us": 9000.0, "mean_us": 450.0,
}  # fmt: skip
SAMPLE_OUTPUT = (
    "Running 2s test @ http://127.0.0.1:8000/\n  1 threads and 8 connections\n"
    f"{JSON_MARKER}{json.dumps(STATS)}\nRequests/sec:  10000.00\n"
)


def test_available_names_the_install_script_when_missing(monkeypatch) -> None:
    monkeypatch.setattr("loadtests.wrk.wrk_binary", lambda: None)
    ok, reason = wrk_available()
    assert not ok
    assert "scripts/install_tools.sh" in reason


def test_lua_string_escapes_quotes_backslashes_and_binary() -> None:
    assert lua_string(b'{"a": 1}') == '"{\\034a\\034: 1}"'
    assert lua_string(b"\\\x00\xff9") == '"\\092\\000\\2559"'


def test_script_sets_method_body_and_headers_but_not_wrks_own() -> None:
    script = render_lua(
        b"{}", {"Content-Type": "application/json", "Host": "x", "Content-Length": "2"}
    )
    assert 'wrk.method = "POST"' in script
    assert 'wrk.body = "{}"' in script
    assert 'wrk.headers["Content-Type"] = "application/json"' in script
    assert "Host" not in script and "Content-Length" not in script
    assert "function done(summary, latency, requests)" in script
    assert "latency:percentile(99)" in script
    assert JSON_MARKER in script


def test_parse_reads_the_json_line_in_ms_and_per_second() -> None:
    result = parse_output(SAMPLE_OUTPUT, "http://127.0.0.1:8000/", 8, 1, cores=[1])
    assert result.duration_s == 2.0
    assert result.rps == 10000.0
    assert result.goodput_rps == (20000 - 100) / 2.0
    assert (result.p50_ms, result.p90_ms, result.p99_ms) == (0.41, 0.7005, 2.8)
    assert result.max_ms == 9.0
    assert result.status_errors == 100
    assert result.socket_errors == 3
    assert result.errors == 103
    assert result.cores == (1,)
    point = result.as_point()
    assert point["rps"] == result.goodput_rps
    assert point["failures"] == 103
    assert result.to_json()["socket_errors"] == 3


def test_parse_without_the_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="WRK_JSON"):
        parse_output("Running 1s test\n", "u", 1, 1)


def test_clients_that_agree_are_not_flagged() -> None:
    verdict = compare_clients({"rps": 2300.0, "p50_ms": 3.1}, {"rps": 2450.0, "p50_ms": 3.1})
    assert not verdict.flagged
    assert verdict.rps == pytest.approx(2300 / 2450 - 1)
    assert verdict.p50 == pytest.approx(0.0)


def test_locust_far_below_wrk_is_flagged() -> None:
    # TorchServe at 8 connections in NOTES.md: Locust ~2.5k req/s, wrk ~4.2k.
    verdict = compare_clients({"rps": 2500.0, "p50_ms": 2.7}, {"rps": 4200.0, "p50_ms": 1.6})
    assert verdict.flagged
    assert verdict.rps == pytest.approx(2500 / 4200 - 1)
    assert "req/s" in verdict.reason and "p50" in verdict.reason


def test_p50_alone_can_flag() -> None:
    verdict = compare_clients({"rps": 1000.0, "p50_ms": 0.6}, {"rps": 1000.0, "p50_ms": 0.4})
    assert verdict.flagged
    assert "p50" in verdict.reason and "req/s" not in verdict.reason


def test_the_limit_is_fifteen_percent_either_way() -> None:
    assert DIVERGENCE_LIMIT == 0.15
    wrk = {"rps": 1000.0, "p50_ms": 1.0}
    for below, above in ((1140.0, 1160.0), (860.0, 840.0)):
        assert not compare_clients({"rps": below, "p50_ms": 1.0}, wrk).flagged
        assert compare_clients({"rps": above, "p50_ms": 1.0}, wrk).flagged


def test_nothing_to_compare_is_flagged() -> None:
    verdict = compare_clients({"rps": 100.0, "p50_ms": 1.0}, {"rps": 0.0, "p50_ms": None})
    assert verdict.flagged
    assert verdict.rps is None


class Answering(BaseHTTPRequestHandler):
    """A keep-alive server's replies: `ok` with the status and headers asked for."""

    protocol_version = "HTTP/1.1"
    # Headers and body are two writes: without this, a reply can wait for a delayed ACK.
    disable_nagle_algorithm = True

    def answer(self, status: int = 200, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "2")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_args) -> None:
        pass


class Recorder(Answering):
    """Keeps what wrk sent; answers 503 when asked to, to count status errors."""

    seen: list[tuple[str, str, dict, bytes]] = []
    status = 200

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if len(self.seen) < 5:
            self.seen.append((self.command, self.path, dict(self.headers), body))
        self.answer(self.status)


@pytest.fixture
def recorder() -> Iterator[tuple[str, type[Recorder]]]:
    handler = type("Handler", (Recorder,), {"seen": [], "status": 200})
    with serving(handler) as server:
        yield base_url(server), handler


@pytest.mark.integration
@needs_wrk
def test_wrk_sends_the_exact_body_and_headers(recorder) -> None:
    url, handler = recorder
    body = b'{"instances": [[0.0, 1.5]], "q": "a\\"b"}\x00\xff\n'
    result = run_wrk(
        f"{url}/predictions/digitnet",
        body,
        {"Content-Type": "application/json", "Authorization": "Bearer k"},
        connections=1,
        duration_s=1,
        timeout_s=5,
    )
    method, path, headers, sent = handler.seen[0]
    assert (method, path, sent) == ("POST", "/predictions/digitnet", body)
    assert headers["Content-Type"] == "application/json"
    assert headers["Authorization"] == "Bearer k"
    assert result.requests > 0
    assert result.errors == 0
    assert result.goodput_rps > 0


@pytest.mark.integration
@needs_wrk
def test_wrk_counts_error_statuses(recorder) -> None:
    url, handler = recorder
    handler.status = 503
    result = run_wrk(url + "/", b"{}", {}, connections=1, duration_s=1, timeout_s=5)
    assert result.requests > 0
    assert result.status_errors == result.requests
    assert result.goodput_rps == 0.0


def test_bad_settings_are_refused() -> None:
    if not WRK_OK:
        pytest.skip(WRK_REASON)
    with pytest.raises(ValueError):
        run_wrk("http://127.0.0.1:1/", b"", {}, connections=1, duration_s=1, threads=2)


def test_the_timings_line_gives_each_stage_its_median_and_count() -> None:
    from loadtests.wrk import TIMINGS_MARKER

    out = f'Running...\n{TIMINGS_MARKER}{{"decode": [0.045000, 1500], "app": [0.410000, 1500]}}\n'
    assert parse_timings(out) == {"decode": (0.045, 1500), "app": (0.41, 1500)}
    assert parse_timings("no timings here\n") == {}
    script = render_lua(b"{}", {"Content-Type": "application/json"}, timings=True)
    # Flat per-stage lists: wrk's thread:get crashes on nested tables.
    assert 'thread:get("timing_" .. name)' in script and "function response(" in script
    assert "function response(" not in render_lua(b"{}", {})


class Batching(Answering):
    """Answers as a batching server would: every third reply names a pass of 3, the
    others 1; every fifth names a count wrk must not take (not a number)."""

    replies = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).replies += 1
        shared = "junk" if self.replies % 5 == 0 else "3" if self.replies % 3 == 0 else "1"
        self.answer(200, ((BATCH_HEADER, shared), ("Server-Timing", "app;dur=0.250")))


@pytest.mark.integration
@needs_wrk
def test_a_timings_run_counts_the_replies_by_the_pass_they_name() -> None:
    handler = type("Handler", (Batching,), {"replies": 0})
    with serving(handler) as server:
        out = timings_run(base_url(server) + "/", b"{}", {}, connections=2, duration_s=1)
    counts = parse_batches(out)
    assert set(counts) == {1, 3}
    named = handler.replies - handler.replies // 5
    # wrk may stop with a reply or two unread at the end of its duration.
    assert named - 2 <= sum(counts.values()) <= named
    assert counts[1] > counts[3] > 0
    assert parse_timings(out)["app"][0] == pytest.approx(0.25)


def test_without_the_batches_line_there_are_no_counts() -> None:
    assert parse_batches("WRK_TIMINGS {}\n") == {}
    assert parse_batches(f'{BATCHES_MARKER}{{"1": 7, "8": 16}}\n') == {1: 7, 8: 16}


class SlowFirst(Answering):
    """Answers each connection's first request after STALL_S, the others at once: a
    worker that accepts late, as the Flask stacks' gevent workers did."""

    STALL_S = 0.3

    def setup(self) -> None:
        super().setup()
        self.first = True

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.first:
            self.first = False
            time.sleep(self.STALL_S)
        self.answer()


@pytest.mark.integration
@needs_wrk
def test_wrks_percentiles_are_corrected_for_coordinated_omission() -> None:
    """Four slow replies among thousands: fewer than 1% of the replies, yet wrk's p99 is
    among them, for its correction adds ~stall / interval samples below each (the module
    docstring). If a wrk did not correct, its p99 would be a fast reply's."""
    with serving(SlowFirst) as server:
        result = run_wrk(base_url(server) + "/", b"{}", {}, connections=4, duration_s=3,
                         timeout_s=5)  # fmt: skip
    stall_ms = SlowFirst.STALL_S * 1000.0
    assert result.requests > 800 and result.timeouts == 0  # 4 slow ones under 0.5%
    assert result.max_ms >= stall_ms
    assert result.p99_ms > stall_ms / 2
