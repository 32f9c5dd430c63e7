"""Each framework's floor and our own overhead, measured in the same run.

For every running stack with a no-op twin (ServingStack.noop_path: the same server,
config, port and headers answering a fixed reply without decoding or running the model),
wrk at one connection on the predict path and on the no-op path, interleaved (predict,
no-op, predict, no-op, ...) so a drift of the machine hits both alike. Its served p50 is
then split, with the in-process batch-1 p50 of its floor_path from the run's
baselines.json:

    framework floor = no-op p50
    model           = in-process p50 (CPU rows only: the baselines run on the CPU)
    our code        = predict p50 - framework floor - model   (clamped at 0, flagged)

The in-process p50 is the model in a hot loop. Served at one connection the same forward
pass runs after the core idled between requests and after the web stack ran, and it costs
several times more (measured: TorchScript 36 us in a loop, 165 us inside the Flask
worker). So after the wrk runs `SERVED_PROBES` sequential requests read the server's own
timing of the forward pass (INFERENCE_TIME_HEADER) and of its stages (STAGE_HEADER), and
the split is given twice where a stack reports them:

    model as served     = median forward-pass time the server reported
    our code as served  = predict p50 - framework floor - model as served
    context penalty     = model as served - in-process p50 (the hot loop's optimism)

Where a stack times its whole app too (APP_STAGE: our Flask app), the served p50 is then
attributed stage by stage, each from its own measurement. Where its HTTP server times
itself as well (HTTP_STAGES: the Flask stacks' gunicorn worker, services/flask_torch/
http_timing.py: from the kernel's receipt of the request to its reply's last bytes sent),
the method is MEASURED:

    client and network  = the twin's p50 - the twin's own span (http-read + app +
                          app-after + http-write): what lies outside any server's work,
                          wrk's own cost and the loopback, which know nothing of the path
    HTTP server         = http-read + http-write on the predict path itself (gunicorn and
                          gevent: the wait for the worker and its wake-up, the recv,
                          parse and environ; the status line, headers and sendall)
    app outside stages  = the app's time + app-after - its named stages (Flask's dispatch,
                          hooks and teardown, our untimed code: reading the body, headers)
    decode, queue, convert, model, encode   the app's own stage timers
    unattributed        = predict p50 - all of the above (medians of different requests
                          need not add up: shown, never hidden)

Where the server times neither its HTTP stages nor anything but its handler, yet counts
its own job queue and request time (FROM_COUNTERS: TorchServe, whose frontend is Java; our
handler names its span and stages like the Flask app), the counters are read between
COUNTER_BURSTS bursts of COUNTER_BURST back-to-back requests on one keep-alive connection,
as wrk sends them at one connection (see COUNTER_BURST for why not around single
requests, and why one read between bursts): each difference a mean over its burst, the
median over the clean bursts (no request in them slow, as the client timed them):

    client and network  = the null server's p50 (an upper bound, as below)
    HTTP front          = the twin's p50 - the null server's - the twin's time in its job
                          (Netty's HTTP work outside the job: parse, job creation, write)
    job queue           = the predict path's job queue
    worker protocol     = its job time - queue - the handler's span (the replies' own),
                          burst by burst (the frontend's worker thread, the socket to the
                          Python worker, the worker's message codec)
    app outside stages, the handler's stages, unattributed   as above

The null server (nginx answering the same reply from C) is measured beside it: its p50
holds wrk's cost and the loopback and also nginx's own span (the wake-up of the server's
idle core among it), which on the predict path is the HTTP server's stage, so it bounds
the client's share from above. Without the HTTP stages (FROM_TWIN), the client's share is
the null server's p50 and the HTTP server's the twin's p50 less that and the twin's app
time, which missed the predict path's costlier HTTP work (http_timing's docstring).

One connection, because the split is about one request's latency, not about queueing.
Where the attribution applies it is measured again near capacity, at NEAR_CAPACITY
connections (the quick profile's top batch-1 level, past every stack's throughput knee
on a 2-core box): wrk on the predict path, the server's timings and the null server at
that concurrency, where the queue stage (the admission gate's wait for the worker's turn)
takes its share; the client's share is the null server's p50 there, the HTTP server's its
own stages there (`near_capacity` in the record); where the server counts its jobs, the job
queue and the worker protocol are the counters' means over the timed run there; where it
has neither (Ray Serve's proxy: FROM_OWN_CLIENT), the HTTP server's share is the time
each request spends outside its handler, a client of ours at that concurrency timing each
round trip less the span its handler names in the same reply (outside_handler), less
the client's share, and the report sets that client's median round trip beside wrk's.
Where a stack batches across requests (ServingStack.server_batching), its twin waits for
a batch as its predict path does, so the default policy's floor is mostly that wait. The
stack is then started again, twin included, under the `latency` batching preset
(digitnet.spec.BATCHING_PRESETS: batching off) and measured the same way: the record
carries "preset", and the report holds its p50 against its own no-op floor
(LATENCY_FLOOR_GOAL: TorchServe's latency preset should answer within 2x of it).
Written to framework_floor.jsonl (floors.jsonl is the load generator's floor); the sweep
runs it right after the levels of each device (loadtests/sweep.py), the report renders it
(`markdown`).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests

from digitnet.artifacts import ArtifactPaths
from digitnet.codec import (
    APP_AFTER_STAGE,
    APP_STAGE,
    HTTP_READ_STAGE,
    HTTP_STAGES,
    HTTP_WRITE_STAGE,
    INFERENCE_TIME_HEADER,
    JSON_CONTENT_TYPE,
    STAGE_HEADER,
    parse_server_timing,
)
from digitnet.spec import LATENCY_PRESET, batching_preset
from harness.lifecycle import (
    START_ERRORS,
    RunningStack,
    did_not_start,
    skipped_reason,
    start_stack,
)
from harness.payload import PayloadSet
from loadtests import own_code, wrk
from loadtests.batching import environment
from loadtests.null_server import NullServer, capture_reply, nginx_available
from loadtests.runner import targets_of
from loadtests.server_metrics import scrape
from services.process import pinned
from services.stack import CPU, REST, ServingStack

FLOOR_FILE = "framework_floor.jsonl"
CONNECTIONS = 1
# The second attribution's concurrency: the quick profile's largest batch-1 closed level.
NEAR_CAPACITY = 16
# One discarded second per path before the timed runs: the twin has not answered yet
# (TorchServe's twin workers, Ray's twin batch queue) while the predict path is warm.
WARMUP_S = 1
PROBE_TIMEOUT_S = 10.0
# Sequential requests after the wrk runs whose replies carry the server's own timings; the
# first SERVED_SKIP are discarded (a fresh connection, the first after wrk's).
SERVED_PROBES = 300
SERVED_SKIP = 20
# The goal for a batching stack's p50 under the latency preset (digitnet.spec, where it is
# measured again) against its own no-op floor there (the fair-fight issue: "TorchServe's
# latency preset should answer at one user within 2x its own no-op floor").
LATENCY_FLOOR_GOAL = 2.0
# How an attribution got its client's and HTTP server's shares (its "method"): the
# server's own HTTP stages on the path (MEASURED), the twin's p50 less the null server's
# and the twin's app time (FROM_TWIN, where the server does not time its HTTP stages), or,
# near capacity, its HTTP work at one connection (FROM_ONE_CONNECTION, where nothing
# better is read there).
MEASURED = "measured"
FROM_TWIN = "from the twin"
FROM_ONE_CONNECTION = "from one connection"
# Or, where the server counts its own queue and request time (TorchServe's frontend
# counters, services/torchserve/metrics.py), from those counters read around bursts.
FROM_COUNTERS = "from the server's counters"
# Near capacity, the job queue's share as its mean over the timed run (see near_capacity).
FROM_COUNTERS_MEAN = "from the server's counters, the queue a mean"
# Near capacity, where the server times neither its HTTP stages nor its queue (Ray Serve's
# proxy): the HTTP server's share from this process's own requests at that concurrency,
# each one's round trip less the span its handler named (outside_handler).
FROM_OWN_CLIENT = "from our own client's requests"
# What the report's attribution line says of each method.
METHOD_NOTES = {MEASURED: "the HTTP server's own stages",
                FROM_TWIN: "the HTTP server from the twin",
                FROM_ONE_CONNECTION: "the HTTP server's work at one connection",
                FROM_COUNTERS: "the server's own counters, read around bursts of "
                               "back-to-back requests",
                FROM_COUNTERS_MEAN: "the HTTP front as at one connection, the job "
                                    "queue and the job's time beyond it the counters' "
                                    "means over the run",
                FROM_OWN_CLIENT: "the HTTP server's share at this load: each request's "
                                 "round trip less its handler's span, by a client of "
                                 "ours at the same concurrency"}  # fmt: skip
# Bursts of back-to-back requests with the server's counters read between them (the read
# that closes one burst opens the next): a burst's difference of a cumulative counter is
# the mean of its requests. One read between bursts, not one before and one after each,
# because a scrape slows the request after it (measured, TorchServe under the latency
# preset, three rounds: a burst's median request 0.84 / 0.78 / 0.74 ms with two reads
# between bursts, 0.79 / 0.75 / 0.73 with one, wrk's p50 0.73 / 0.70 / 0.73; clean bursts
# 45 / 44 / 86 of 96 against 64 / 79 / 86; a burst's first request after a scrape
# 0.92-1.01 ms, the others 0.74-0.80, in bursts of 10). Not single requests with a scrape
# between each: those run after the server idled for the scrape, a colder context than
# wrk's (measured, TorchServe under the latency preset, one run: job total 2.0 ms a
# request read around single requests, 1.12 around bursts of 10, 0.90 around bursts of 50,
# wrk's p50 1.08 ms; the in-process phase, loadtests/own_code.py, shows what an idle gap
# costs). A mean holds every slow request of its burst, and the p50 none: so only the
# clean bursts count, those whose slowest request, as the client timed it, took at most
# CLEAN_BURST_FACTOR x the median request (measured, the same server, three rounds: worker
# protocol 1.47 / 0.49 / 0.44 ms over all bursts of 25, 0.57 / 0.47 / 0.48 over the clean
# bursts of 10); where none is clean, every burst counts and the record says so. Short
# bursts and a factor of 2, because TorchServe's tail is heavy (its p90 is 3-4x its median
# at one connection): of 960 requests in bursts of 10, 15-22 of 96 bursts were clean at
# 1.5x; in bursts of 5 at 2x, 75-96 of 192. The counters are updated just after each reply
# is sent, so the read after a burst is retried until they have moved by the whole burst.
COUNTER_BURSTS = 96
COUNTER_BURST = 5
CLEAN_BURST_FACTOR = 2.0
COUNTER_READS = 50
COUNTER_READ_PAUSE_S = 0.001
# The counters' stages of a served request, in the attribution's order: the frontend's
# HTTP work outside its job (the twin's p50 less the client's share and the twin's time
# in the job), the job queue (the wait for a worker, or a batch), and the worker protocol
# (the job's time less its queue and the handler's span: the frontend's worker thread,
# the socket to the Python worker and back, the worker's own message codec).
HTTP_FRONT = "HTTP front"
JOB_QUEUE = "job queue"
WORKER_PROTOCOL = "worker protocol"
# The HTTP server's whole share, where the server's own stages or its twin give it.
HTTP_SERVER = "HTTP server"
# The server's shares of an attribution (outside the client's and the app's), by method.
SERVER_SHARES = (HTTP_SERVER, HTTP_FRONT, JOB_QUEUE, WORKER_PROTOCOL)


@dataclass(frozen=True)
class FloorPlan:
    """How long the phase runs per stack (loadtests.profiles: framework_floor_*), wrk's
    cores (`cores`, which this process's own clients are pinned to as well: the served
    probes, the counters' bursts) and the null server's (`server_cores`: the servers')."""

    runs: int
    duration_s: int
    cores: Sequence[int] | None = None
    server_cores: Sequence[int] | None = None


def split_latency(predict_p50_ms: float, noop_p50_ms: float,
                  model_ms: float | None) -> dict:  # fmt: skip
    """The served p50 as framework floor + our code + model (ms).

    Returns:
        framework_floor_ms, model_ms, our_code_ms (never below 0, None without a model
        figure), our_code_raw_ms (the unclamped difference) and our_code_negative: True
        when the twin and the model alone take longer than the prediction, i.e. the
        figures disagree by more than our code costs (noise, or a floor measured apart).
    """
    raw = None if model_ms is None else predict_p50_ms - noop_p50_ms - model_ms
    return {
        "framework_floor_ms": noop_p50_ms,
        "model_ms": model_ms,
        "our_code_ms": None if raw is None else max(0.0, raw),
        "our_code_raw_ms": raw,
        "our_code_negative": raw is not None and raw < 0,
    }


def served_split(predict_p50_ms: float, noop_p50_ms: float, in_process_ms: float | None,
                 served: dict) -> dict:  # fmt: skip
    """The split with the model as the server timed it (see the module docstring).

    Args:
        served: served_timings()'s record; its model_ms may be None (the stack does not
            time its forward pass in its replies).

    Returns:
        model_served_ms, our_code_served_ms (unclamped: None without a served model figure),
        context_penalty_ms (None without both model figures) and the server's stages.
    """
    model = served.get("model_ms")
    ours = None if model is None else predict_p50_ms - noop_p50_ms - model
    penalty = None if model is None or in_process_ms is None else model - in_process_ms
    return {"model_served_ms": model, "our_code_served_ms": ours,
            "context_penalty_ms": penalty, "served_stages_ms": served.get("stages_ms", {}),
            "served_probes": served.get("probes", 0)}  # fmt: skip


def served_timings(url: str, body: bytes, headers: dict[str, str],
                   probes: int = SERVED_PROBES) -> dict:  # fmt: skip
    """Medians of the server's own forward-pass time and stage times (ms) over `probes`
    sequential requests; model_ms None when its replies carry no INFERENCE_TIME_HEADER."""
    model: list[float] = []
    stages: dict[str, list[float]] = {}
    with requests.Session() as session:
        for index in range(probes + SERVED_SKIP):
            reply = session.post(url, data=body, headers=headers, timeout=PROBE_TIMEOUT_S)
            if index < SERVED_SKIP or reply.status_code != 200:
                continue
            if INFERENCE_TIME_HEADER in reply.headers:
                model.append(float(reply.headers[INFERENCE_TIME_HEADER]))
            for name, ms in parse_server_timing(reply.headers.get(STAGE_HEADER)).items():
                stages.setdefault(name, []).append(ms)
    app = stages.pop(APP_STAGE, [])
    for name in HTTP_STAGES:
        stages.pop(name, None)
    return {"model_ms": statistics.median(model) if model else None,
            "stages_ms": {name: statistics.median(v) for name, v in stages.items()},
            "app_ms": statistics.median(app) if app else None,
            "probes": max(len(model), len(app))}  # fmt: skip


def split_timings(timed: dict[str, float]) -> tuple[float | None, dict[str, float],
                                                  dict[str, float]]:  # fmt: skip
    """A path's server timings (stage -> ms) as the app's whole time (None: not timed),
    the app's named stages and the HTTP server's own (HTTP_STAGES)."""
    stages = dict(timed)
    app = stages.pop(APP_STAGE, None)
    http = {name: stages.pop(name) for name in HTTP_STAGES if name in stages}
    return app, stages, http


def measured_shares(app_ms: float | None, http: dict[str, float]) -> tuple[float, float] | None:
    """The HTTP server's share (http-read + http-write) and the app's with its teardown
    (app + app-after), in ms, from a path's own stages; None without them all."""
    if server_span(app_ms, http) is None:
        return None
    return (http[HTTP_READ_STAGE] + http[HTTP_WRITE_STAGE], app_ms + http[APP_AFTER_STAGE])


def server_span(app_ms: float | None, http: dict[str, float]) -> float | None:
    """The server's own span of a request (ms), the kernel's receipt of it to its reply's
    last bytes sent: http-read + app + app-after + http-write; None without them all."""
    if app_ms is None or any(name not in http for name in HTTP_STAGES):
        return None
    return app_ms + sum(http[name] for name in HTTP_STAGES)


def attribution(predict_p50_ms: float, noop_p50_ms: float, null_p50_ms: float | None,
                predict_timed: dict[str, float], noop_timed: dict[str, float],
                counted: tuple[dict | None, dict | None] = (None, None)) -> dict | None:
    """The served p50 stage by stage (see the module docstring), in ms, with what is left
    unattributed, the share named and the method; None where the server does not time
    its whole app, or (without its HTTP stages) the twin's or the null server's is missing.

    Args:
        predict_timed, noop_timed: each path's server timings under wrk, stage -> ms.
        counted: each path's counter_spans() (None: the server counts nothing), which
            split the server's share where it does not time its HTTP stages."""
    app, stages, http = split_timings(predict_timed)
    noop_app, _, noop_http = split_timings(noop_timed)
    shares, noop_span = measured_shares(app, http), server_span(noop_app, noop_http)
    if shares is not None and noop_span is not None:
        got = attributed(predict_p50_ms, {"client and network": noop_p50_ms - noop_span,
                                          HTTP_SERVER: shares[0]}, shares[1], stages)
        return {**got, "method": MEASURED, "http_ms": http, "null_p50_ms": null_p50_ms}
    if app is None or noop_app is None or null_p50_ms is None:
        return None
    predict_counted, noop_counted = counted
    if predict_counted is not None and noop_counted is not None:
        server = {"client and network": null_p50_ms,
                  HTTP_FRONT: noop_p50_ms - null_p50_ms - noop_counted["total_ms"],
                  JOB_QUEUE: predict_counted["queue_ms"],
                  WORKER_PROTOCOL: predict_counted["worker_ms"]}  # fmt: skip
        return {**attributed(predict_p50_ms, server, app, stages), "method": FROM_COUNTERS,
                "counted": {"predict": predict_counted, "noop": noop_counted}}  # fmt: skip
    got = attributed(predict_p50_ms, {"client and network": null_p50_ms,
                                      HTTP_SERVER: noop_p50_ms - null_p50_ms - noop_app},
                     app, stages)  # fmt: skip
    return {**got, "method": FROM_TWIN}


def attributed(predict_p50_ms: float, outside_app_ms: Mapping[str, float], app_ms: float,
               stages_ms: dict[str, float]) -> dict:  # fmt: skip
    """attribution()'s arithmetic, with the shares outside the app given (the client's
    first, then the server's), in order."""
    stages = {
        **outside_app_ms,
        "app outside stages": app_ms - sum(stages_ms.values()),
        **stages_ms,
    }
    left = predict_p50_ms - sum(stages.values())
    return {"stages_ms": stages, "unattributed_ms": left,
            "named_share": 1.0 - abs(left) / predict_p50_ms if predict_p50_ms > 0 else None}


def counter_spans(url: str, body: bytes, headers: dict[str, str], metrics_url: str,
                  breakdown: Callable[[Mapping, Mapping], dict],
                  bursts: int = COUNTER_BURSTS,
                  burst: int = COUNTER_BURST) -> dict | None:  # fmt: skip
    """Medians (ms) over the clean bursts of `bursts` bursts of `burst` back-to-back
    requests of the server's own spans, from its cumulative counters read between bursts
    (see COUNTER_BURST): queue_ms and total_ms (breakdown()'s server_queue_ms
    and server_total_ms, the burst's means), and worker_ms, the total less the queue and
    the mean of the replies' own APP_STAGE (the handler's span), burst by burst. None where
    the counters give no queue and total per burst (a server that counts nothing, or none
    that moved)."""
    read: list[tuple[dict, Burst]] = []
    connection = KeepAlive(url, body, headers)
    try:
        before = scrape(metrics_url)
        for index in range(bursts + 1):  # the first burst warms the connection up
            sent = _burst(connection, burst)
            got, after = counted_since(before, metrics_url, breakdown, burst)
            if got is None and not read and index > 0:
                break  # its counters do not move with its requests: nothing to read
            if index > 0 and got is not None and sent is not None:
                read.append((got, sent))
            # The read that closed this burst opens the next: a scrape slows the request
            # after it, so one between bursts keeps them nearer wrk's pace (COUNTER_BURST).
            before = after if got is not None else scrape(metrics_url)
    finally:
        connection.close()
    if not read:
        return None
    typical = statistics.median(s for _, sent in read for s in sent.client_ms)
    clean = [(got, sent) for got, sent in read
             if max(sent.client_ms) <= CLEAN_BURST_FACTOR * typical]  # fmt: skip
    used = clean or read
    worker = [worker_protocol_ms(got, statistics.fmean(sent.app_ms))
              for got, sent in used if sent.app_ms]  # fmt: skip
    return {"queue_ms": statistics.median(got["server_queue_ms"] for got, _ in used),
            "total_ms": statistics.median(got["server_total_ms"] for got, _ in used),
            "worker_ms": statistics.median(worker) if worker else None,
            "bursts": len(read), "clean": len(clean), "burst": burst,
            "client_p50_ms": typical}  # fmt: skip


@dataclass(frozen=True)
class Burst:
    """One burst's requests as the client saw them: each one's time from its send to its
    reply read whole, and the replies' APP_STAGE (empty where the server names none)."""

    client_ms: list[float]
    app_ms: list[float]


class KeepAlive:
    """One keep-alive HTTP/1.1 connection that sends one fixed POST and reads each reply
    whole, with as little Python as it can between the two: the client's time between a
    reply and the next request is time the server idles, and wrk's is tens of us
    (measured, TorchServe under the latency preset: bursts through http.client ran at a
    client p50 of 1.41 ms against wrk's 1.09, through a bare socket as wrk's). Replies
    must carry a Content-Length (every server here sends one)."""

    def __init__(self, url: str, body: bytes, headers: Mapping[str, str]) -> None:
        target = urlsplit(url)
        lines = [f"POST {target.path} HTTP/1.1", f"Host: {target.netloc}",
                 f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
        self._request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        self._sock = socket.create_connection((target.hostname, target.port),
                                              timeout=PROBE_TIMEOUT_S)  # fmt: skip
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._left = b""

    def post(self) -> tuple[int, dict[str, str]]:
        """Sends the request, reads its reply whole: (status, header fields, lower-case)."""
        self._sock.sendall(self._request)
        data = self._left
        while b"\r\n\r\n" not in data:
            data += self._recv()
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *field_lines = head.decode("latin-1").split("\r\n")
        fields = {}
        for line in field_lines:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if "content-length" not in fields:
            raise ValueError(f"a reply without Content-Length: {status_line!r}")
        length = int(fields["content-length"])
        while len(rest) < length:
            rest += self._recv()
        self._left = rest[length:]
        return int(status_line.split()[1]), fields

    def _recv(self) -> bytes:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        return chunk

    def close(self) -> None:
        self._sock.close()


def _burst(connection: KeepAlive, count: int) -> Burst | None:
    """`count` POSTs back to back, each reply read whole before the next is sent; None if
    one was not a 200 (the burst's counters then hold a request unlike the others; all
    are sent, so the counters still move by `count`)."""
    client: list[float] = []
    apps: list[float] = []
    failed = False
    for _ in range(count):
        started = time.perf_counter()
        status, fields = connection.post()
        client.append((time.perf_counter() - started) * 1000.0)
        failed = failed or status != 200
        app = parse_server_timing(fields.get(STAGE_HEADER.lower())).get(APP_STAGE)
        if app is not None:
            apps.append(app)
    return None if failed or len(apps) not in (0, count) else Burst(client, apps)


def counted_since(before: Mapping[str, float], metrics_url: str,
                  breakdown: Callable[[Mapping, Mapping], dict],
                  requests_sent: int) -> tuple[dict | None, dict]:  # fmt: skip
    """breakdown() of the `requests_sent` requests sent since `before`, read until its
    counters moved by all of them (they are updated just after each reply leaves), and the
    read it came from; None and the last read if they never do."""
    after: dict = {}
    for _ in range(COUNTER_READS):
        after = scrape(metrics_url)
        got = breakdown(before, after)
        if (got and got.get("server_requests") == requests_sent
                and got.get("server_total_ms", 0) > 0 and "server_queue_ms" in got):
            return got, after
        time.sleep(COUNTER_READ_PAUSE_S)
    return None, after


def summarize_runs(runs: Sequence[dict]) -> dict:
    """Median p50 and p99 over wrk runs, and their spread: (max - min) / median of the
    runs' p50, the figure a reader weighs a difference of two p50s against."""
    p50s = [r["p50_ms"] for r in runs]
    p50 = statistics.median(p50s)
    return {
        "p50_ms": p50,
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "p50_ms_min": min(p50s),
        "p50_ms_max": max(p50s),
        "spread": (max(p50s) - min(p50s)) / p50 if p50 > 0 else None,
        "rps": statistics.median(r["goodput_rps"] for r in runs),
        "errors": sum(r["status_errors"] + r["socket_errors"] for r in runs),
        "runs": len(runs),
    }


def model_ms(baselines: Sequence[dict], path: str, device: str) -> tuple[float | None, str]:
    """The in-process batch-1 p50 (ms) of `path` for a server on `device`, and why not
    when there is none."""
    if device != CPU:
        return None, f"in-process baselines run on the CPU, not {device}"
    for row in baselines:
        if row["path"] == path and row["batch_size"] == 1:
            return row["p50_us"] / 1000.0, ""
    return None, f"no batch-1 {path!r} row in baselines.json"


def record(stack: str, device: str, paths: tuple[str, str], predict: Sequence[dict],
           noop: Sequence[dict], model: tuple[float | None, str], floor_path: str,
           plan: FloorPlan, served: dict | None = None,
           under_wrk: tuple[dict, dict] = ({}, {}), null: Sequence[dict] = (),
           counted: tuple[dict | None, dict | None] = (None, None)) -> dict:  # fmt: skip
    """One stack's line of framework_floor.jsonl, from its wrk runs (WrkResult.to_json),
    served_timings()'s record (None: not probed), the server's timings under wrk on the
    predict and no-op paths (wrk.server_timings: stage -> (ms, replies); empty: not
    read), wrk's runs against the null server (none: not measured) and each path's
    counter_spans() (None: the server counts nothing per request)."""
    got, noop_got = summarize_runs(predict), summarize_runs(noop)
    null_got = summarize_runs(null) if null else None
    served = served or {}
    predict_timed, noop_timed = ({k: v[0] for k, v in t.items()} for t in under_wrk)
    return {
        "null": null_got, "timings_under_wrk": {"predict": under_wrk[0], "noop": under_wrk[1]},
        "attribution": attribution(got["p50_ms"], noop_got["p50_ms"],
                                   null_got["p50_ms"] if null_got else None,
                                   predict_timed, noop_timed, counted),
        "stack": stack, "protocol": REST, "device": device, "connections": CONNECTIONS,
        "duration_s": plan.duration_s, "predict_path": paths[0], "noop_path": paths[1],
        "predict": got, "noop": noop_got, "model_path": floor_path,
        "model_reason": model[1],
        **split_latency(got["p50_ms"], noop_got["p50_ms"], model[0]),
        **served_split(got["p50_ms"], noop_got["p50_ms"], model[0], served),
        "predict_runs": list(predict), "noop_runs": list(noop), "skipped": None,
    }  # fmt: skip


def skipped(stack: str, device: str, reason: str) -> dict:
    return {"stack": stack, "protocol": REST, "device": device, "skipped": reason}


def probe(url: str, body: bytes, headers: dict[str, str]) -> str | None:
    """Why the path cannot be measured (not a 200), or None."""
    try:
        response = requests.post(url, data=body, headers=headers, timeout=PROBE_TIMEOUT_S)
    except requests.RequestException as err:
        return f"{url}: {err}"
    if response.status_code != 200:
        return f"{url}: HTTP {response.status_code}: {response.text[:200]}"
    return None


def interleaved(urls: tuple[str, ...], body: bytes, headers: dict[str, str], plan: FloorPlan,
                script_dir: Path,
                connections: int = CONNECTIONS) -> tuple[list[dict], ...]:  # fmt: skip
    """wrk runs alternating between the URLs, after a discarded warm-up on each: plan.runs
    runs per URL, in the URLs' order."""

    def one(url: str, seconds: int) -> dict:
        return wrk.run_wrk(url, body, headers, connections, seconds, cores=plan.cores,
                           script_dir=script_dir).to_json()  # fmt: skip

    for url in reversed(urls):
        one(url, WARMUP_S)
    runs: tuple[list[dict], ...] = tuple([] for _ in urls)
    for _ in range(plan.runs):
        for index, url in enumerate(urls):
            runs[index].append(one(url, plan.duration_s))
    return runs


def measure_stack(running: RunningStack, device: str, baselines: Sequence[dict],
                  plan: FloorPlan, script_dir: Path) -> dict:  # fmt: skip
    """The phase for one running stack: its record, or why it was skipped."""
    stack = running.stack
    noop_path = stack.noop_path(running.server)
    if noop_path is None:
        why = stack.noop_why if stack.noop_env is None else (
            "started without its no-op twin (noop_env)")
        return skipped(stack.name, device, why)
    ok, reason = wrk.wrk_available()
    if not ok:
        return skipped(stack.name, device, reason)
    target = next((t for t in targets_of(running, device) if t.protocol == REST), None)
    if target is None:
        return skipped(stack.name, device, "no REST client: wrk speaks HTTP only")
    body = PayloadSet(running.paths.spec, 1, running.paths.reference_predictions,
                      limit=1).batches[0].body  # fmt: skip
    headers = {"Content-Type": JSON_CONTENT_TYPE, **target.headers}
    urls = (target.url, target.host.rstrip("/") + noop_path)
    problems = [p for p in (probe(url, body, headers) for url in urls) if p]
    if problems:
        return skipped(stack.name, device, "; ".join(problems))
    predict, noop = interleaved(urls, body, headers, plan, script_dir)
    # This process's own clients run on wrk's cores too, never beside the server.
    with pinned(plan.cores):
        served = served_timings(target.url, body, headers)
    under_wrk: tuple[dict, dict] = ({}, {})
    null: list[dict] = []
    counted: tuple[dict | None, dict | None] = (None, None)
    metrics_url = stack.metrics_url(running.server)
    counters = None if metrics_url is None else (metrics_url, stack.server_timings)
    if served["app_ms"] is not None:
        under_wrk = tuple(wrk.server_timings(url, body, headers, CONNECTIONS, plan.duration_s,
                                             cores=plan.cores, script_dir=script_dir)
                          for url in urls)  # fmt: skip
        null = null_runs(target.url, body, headers, plan, script_dir)
        if counters is not None:
            with pinned(plan.cores):
                counted = tuple(counter_spans(url, body, headers, *counters) for url in urls)
    got = record(stack.name, device, (target.path, noop_path), predict, noop,
                 model_ms(baselines, stack.floor_path, device), stack.floor_path, plan,
                 served, under_wrk, null, counted)  # fmt: skip
    near = None
    if got["attribution"] is not None:
        server = {name: ms for name, ms in got["attribution"]["stages_ms"].items()
                  if name in SERVER_SHARES}  # fmt: skip
        near = near_capacity(target.url, body, headers, plan, script_dir, server,
                             counters if got["attribution"]["method"] == FROM_COUNTERS
                             else None)  # fmt: skip
    return {**got, "near_capacity": near}


def measure_preset(stack: ServingStack, paths: ArtifactPaths, baselines: Sequence[dict],
                   plan: FloorPlan, script_dir: Path, server_dir: Path,
                   preset: str = LATENCY_PRESET, device: str = CPU) -> dict:  # fmt: skip
    """The stack started afresh with its twin under the batching preset `preset` on
    plan.server_cores, measured as measure_stack does; its record carries "preset"."""
    env = {**dict(stack.noop_env or {}), **stack.device_env(device)}
    # The launchers read the policy from this process's environment (batching.environment).
    with ExitStack() as exits, environment(batching_preset(preset).env()):
        try:
            running = start_stack(stack, paths, server_dir / f"{stack.name}-{preset}", exits,
                                  cores=plan.server_cores, env=env)  # fmt: skip
        except (*START_ERRORS, ValueError) as err:
            got = skipped(stack.name, device,
                          did_not_start(err, f"the {preset!r} batching preset"))
        else:
            got = measure_stack(running, device, baselines, plan, script_dir)
    return {**got, "preset": preset}


def preset_floors(stacks: Sequence[ServingStack], paths: ArtifactPaths,
                  baselines: Sequence[dict], plan: FloorPlan, script_dir: Path,
                  server_dir: Path, device: str = CPU) -> list[dict]:  # fmt: skip
    """measure_preset for each of `stacks` that batches across requests and has a twin."""
    batching = [s for s in stacks if s.server_batching and s.noop_env is not None]
    return [measure_preset(stack, paths, baselines, plan, script_dir, server_dir,
                           device=device) for stack in batching]  # fmt: skip


def near_capacity(url: str, body: bytes, headers: dict[str, str], plan: FloorPlan,
                  script_dir: Path, server_ms: Mapping[str, float],
                  counters: tuple[str, Callable[[Mapping, Mapping], dict]] | None = None,
                  connections: int = NEAR_CAPACITY) -> dict:  # fmt: skip
    """The predict p50 attributed again at `connections`: wrk's runs on the predict path,
    the server's timings under wrk and the null server, all at that concurrency. The
    client's share is the null server's p50 there (nginx's own work included: an upper
    bound); the HTTP server's is its own stages at that concurrency where it times them
    (http-read then holds the wait in the socket for the busy worker), else its work at
    one connection (`server_ms`, the server's shares there by name): the twin has no
    admission gate, so at this concurrency it queues unfairly under gevent (a p50 of 0.3
    ms beside a p99 of 200 ms, measured) and its p50 says nothing of the work. Where the
    server counts its job queue (`counters`: its metrics URL and breakdown), the queue's
    share is its mean over the timed run, read from the counters around it: under load
    no request can be read alone (method FROM_COUNTERS_MEAN), and the worker protocol's
    is the mean job less that queue and the handler's span (worker_protocol_ms)."""
    (predict,) = interleaved((url,), body, headers, plan, script_dir, connections)
    before = scrape(counters[0]) if counters else {}
    timed = wrk.server_timings(url, body, headers, connections, plan.duration_s,
                               cores=plan.cores, script_dir=script_dir)  # fmt: skip
    mean = counters[1](before, scrape(counters[0])) if counters else {}
    null = null_runs(url, body, headers, plan, script_dir, connections)
    got = summarize_runs(predict)
    null_got = summarize_runs(null) if null else None
    app_ms, stages, http = split_timings({k: v[0] for k, v in timed.items()})
    server, method = dict(server_ms), FROM_ONE_CONNECTION
    shares = measured_shares(app_ms, http)
    outside = None
    if shares is not None:
        server, app_ms, method = {HTTP_SERVER: shares[0]}, shares[1], MEASURED
    elif JOB_QUEUE in server and mean.get("server_queue_ms") is not None:
        server[JOB_QUEUE], method = mean["server_queue_ms"], FROM_COUNTERS_MEAN
        if app_ms is not None and WORKER_PROTOCOL in server:
            server[WORKER_PROTOCOL] = worker_protocol_ms(mean, app_ms)
    elif set(server) == {HTTP_SERVER} and null_got is not None:
        with pinned(plan.cores):
            outside = outside_handler(url, body, headers, connections, plan.duration_s)
        if outside is not None:
            server = {HTTP_SERVER: outside["outside_ms"] - null_got["p50_ms"]}
            method = FROM_OWN_CLIENT
    whole = None
    if app_ms is not None and null_got is not None:
        whole = {**attributed(got["p50_ms"], {"client and network": null_got["p50_ms"],
                                              **server}, app_ms, stages),
                 "method": method, "http_ms": http, "outside": outside}  # fmt: skip
    return {"connections": connections, "predict": got, "null": null_got,
            "timings_under_wrk": {"predict": timed}, "server_ms": server,
            "counted_mean": mean or None, "attribution": whole}  # fmt: skip


def outside_handler(url: str, body: bytes, headers: Mapping[str, str], connections: int,
                    seconds: float) -> dict | None:  # fmt: skip
    """Each request's time outside its handler, at `connections` concurrency: this
    process's own keep-alive connections, one thread each, sending back to back for
    `seconds`, each request's round trip less the span its handler named (APP_STAGE) in
    the same reply (a burst of one, _burst). Per request, so no figure is a difference of
    figures read apart: the median (ms) over the replies with status 200 that named their
    span, the round trip's median beside it (how close our client's pace came to wrk's),
    and the counts; None when no reply named its span."""
    trips: list[tuple[float, float]] = []
    failed = 0
    deadline = time.perf_counter() + seconds
    lock = threading.Lock()

    def one_connection() -> None:
        nonlocal failed
        try:
            connection = KeepAlive(url, body, headers)
        except OSError:
            with lock:
                failed += 1
            return
        try:
            while time.perf_counter() < deadline:
                sent = _burst(connection, 1)
                with lock:
                    if sent is None or not sent.app_ms:
                        failed += 1
                    else:
                        trips.append((sent.client_ms[0], sent.app_ms[0]))
        except (OSError, ValueError):
            # A connection the server closed (or a reply it cut): this one stops, counted.
            with lock:
                failed += 1
        finally:
            connection.close()

    workers = [threading.Thread(target=one_connection) for _ in range(connections)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if not trips:
        return None
    return {"outside_ms": statistics.median(trip - span for trip, span in trips),
            "client_p50_ms": statistics.median(trip for trip, _ in trips),
            "requests": len(trips), "failed": failed, "connections": connections}


def worker_protocol_ms(mean: Mapping[str, float], app_ms: float) -> float:
    """The worker protocol's share: the counters' mean job less its mean queue and the
    handler's span over the same requests (a burst's, at one connection; near capacity
    the timed run's, the span its median there). Near capacity not the one-connection
    figure: under a batching load one job's trip to the worker carries the whole batch,
    both ways (measured, TorchServe's default preset at 16 connections: 1.03 ms against
    0.54 at one connection, which left 0.83 of a 3.45 ms p50 unattributed)."""
    return mean["server_total_ms"] - mean["server_queue_ms"] - app_ms


def null_runs(url: str, body: bytes, headers: dict[str, str], plan: FloorPlan,
              script_dir: Path, connections: int = CONNECTIONS) -> list[dict]:
    """wrk at `connections` against the null server answering the stack's own reply
    (client and network, with a minimal C server), plan.runs times; none without nginx."""
    ok, _why = nginx_available()
    if not ok:
        return []
    reply = capture_reply(url, body, headers)
    with NullServer(reply, script_dir / "null-server-floor", cores=plan.server_cores) as null:
        (runs,) = interleaved((null.url + urlsplit(url).path,), body, headers, plan,
                              script_dir, connections)
    return runs


# --- the report's section -----------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _label(r: dict) -> str:
    preset = r.get("preset")
    return r["stack"] if preset is None else f"{r['stack']} (`{preset}` batching preset)"


def _preset_line(r: dict) -> str | None:
    """The preset's p50 against its own no-op floor, and the goal."""
    if r.get("preset") != LATENCY_PRESET or not r.get("framework_floor_ms"):
        return None
    ratio = r["predict"]["p50_ms"] / r["framework_floor_ms"]
    verdict = "met" if ratio <= LATENCY_FLOOR_GOAL else "**not met**"
    return (f"- {r['stack']}/{r['device']} under the `{LATENCY_PRESET}` batching preset "
            f"(no batching): predict p50 {r['predict']['p50_ms']:.3f} ms at one connection, "
            f"{ratio:.2f}× its own no-op floor under the same preset "
            f"({r['framework_floor_ms']:.3f} ms); goal ≤ {LATENCY_FLOOR_GOAL:g}×: {verdict}.")


def _row(r: dict) -> str:
    p, n = r["predict"], r["noop"]
    ours = _ms(r["our_code_ms"])
    if r["our_code_negative"]:
        ours += f" (raw {r['our_code_raw_ms']:+.3f}: floor + model exceed the prediction)"
    spread = "/".join("–" if s["spread"] is None else f"{s['spread']:.0%}" for s in (p, n))
    errors = p["errors"] + n["errors"]
    return (f"| {_label(r)} | {r['device']} | {_ms(p['p50_ms'])} ({_ms(p['p99_ms'])}) "
            f"| {_ms(n['p50_ms'])} ({_ms(n['p99_ms'])}) | {_ms(r['framework_floor_ms'])} "
            f"| {ours} | {_ms(r['model_ms'])} | {_ms(r.get('our_code_served_ms'))} "
            f"| {_ms(r.get('model_served_ms'))} | {p['runs']} × {r['duration_s']} s "
            f"| {spread} | {errors} |")  # fmt: skip


def _attributed(whole: dict, wrk_p50_ms: float | None = None) -> str:
    parts = ", ".join(f"{name} {ms:.3f}" for name, ms in whole["stages_ms"].items())
    http = whole.get("http_ms") or {}
    notes = [METHOD_NOTES[whole["method"]]] if whole.get("method") in METHOD_NOTES else []
    outside = whole.get("outside")
    if outside is not None and wrk_p50_ms is not None:
        notes.append(f"{outside['requests']} of our requests at {outside['connections']} "
                     f"connections, {outside['outside_ms']:.3f} outside the handler at the "
                     f"median, their round trip {outside['client_p50_ms']:.3f} against "
                     f"wrk's {wrk_p50_ms:.3f}")  # fmt: skip
    bursts = (whole.get("counted") or {}).get("predict")
    if bursts and bursts.get("client_p50_ms") is not None and wrk_p50_ms is not None:
        # The counters are read in bursts of this process's own, not under wrk: how close
        # their pace came to wrk's says how far the shares read there carry to its p50.
        notes.append(f"{bursts['clean']} of {bursts['bursts']} predict bursts clean; a "
                     f"burst's request took {bursts['client_p50_ms']:.3f} at the median "
                     f"against wrk's {wrk_p50_ms:.3f}")  # fmt: skip
    if HTTP_READ_STAGE in http and HTTP_WRITE_STAGE in http:
        notes.append(f"HTTP read {http[HTTP_READ_STAGE]:.3f} + write "
                     f"{http[HTTP_WRITE_STAGE]:.3f}")  # fmt: skip
    if whole.get("method") == MEASURED and whole.get("null_p50_ms") is not None:
        notes.append(f"the null server's p50 {whole['null_p50_ms']:.3f}, nginx's own span "
                     f"included, bounds the client's share")  # fmt: skip
    negative = [name for name, ms in whole["stages_ms"].items() if ms < 0]
    if negative:
        # A share that is a difference of figures read apart (wrk's p50s, the counters'
        # burst means, which a slow request in a burst raises) is negative
        # where they disagree by more than it is: its size bounds their disagreement.
        notes.append(f"{', '.join(negative)} below 0: the figures it is the difference of, "
                     "read apart, disagree by at least that much")  # fmt: skip
    noted = f" ({'; '.join(notes)})" if notes else ""
    return (f"{parts}; unattributed {whole['unattributed_ms']:+.3f}: "
            f"{whole['named_share']:.0%} named{noted}")


def _near_line(r: dict) -> str | None:
    near = r.get("near_capacity")
    if not near or not near.get("attribution"):
        return None
    return (f"- {_label(r)}/{r['device']} near capacity, at {near['connections']} "
            f"connections: predict p50 {near['predict']['p50_ms']:.3f} "
            f"({near['predict']['rps']:.0f} req/s) attributed the same way, the client's "
            f"share the null server's p50 there: "
            f"{_attributed(near['attribution'], near['predict']['p50_ms'])}.")


def _stages_line(r: dict) -> str | None:
    whole = r.get("attribution")
    if whole:
        return (f"- {_label(r)}/{r['device']}, the predict p50 {r['predict']['p50_ms']:.3f} "
                f"attributed (ms; the server's own timings are medians under wrk at one "
                f"connection): {_attributed(whole, r['predict']['p50_ms'])}.")
    stages = r.get("served_stages_ms")
    if not stages:
        return None
    named = sum(stages.values())
    parts = ", ".join(f"{name} {ms:.3f}" for name, ms in stages.items())
    return (f"- {_label(r)}/{r['device']}: the server's own stages (median ms over "
            f"{r['served_probes']} requests): {parts}; {named:.3f} of the predict p50's "
            f"{r['predict']['p50_ms']:.3f} ({named / r['predict']['p50_ms']:.0%}) named, the "
            "rest is the framework's and the network's.")


def markdown(records: Sequence[dict]) -> list[str]:
    """The report's "Framework floor and our own overhead" section."""
    md = [
        "",
        "## Framework floor and our own overhead",
        "",
        "wrk at one connection, batch 1, on each stack's predict path and on its no-op "
        "twin (the same server, config, port and headers answering a fixed reply the size "
        "of a prediction, without decoding the body or running the model; TF Serving's, "
        "a second, trivial SavedModel, as TF Serving decodes every body into tensors "
        "before a model runs), interleaved. "
        "The served p50 splits into framework floor (the twin's p50) + our code + model "
        "(the in-process batch-1 p50 of the stack's floor path, a hot loop); ms, p99 in "
        "brackets. The last two columns split it again with the model as the server timed "
        "it in its replies (the same forward pass, after the core idled and the web stack "
        "ran: several times the hot loop's figure), the fairer share of our code. "
        "Spread: (max − min) / median of the runs' p50, predict/no-op: a difference "
        "smaller than that is noise. Where a server times its whole app (our Flask app), "
        "the line under the table attributes the predict p50 stage by stage, the server's "
        "timings read under wrk at one connection: HTTP server (gunicorn's own stages on "
        "the predict path: from the kernel's receipt of the request to the app, and from "
        "the app's return to its reply's last bytes sent), the app outside its stages and "
        "the app's stages; client and network is the twin's p50 less the twin's own span "
        "timed the same way (wrk and the loopback, outside any server), and the null "
        "server's p50 (nginx answering the same reply) bounds it from above; what is left "
        "is shown as unattributed. Where the server counts its own job queue and request "
        "time instead (TorchServe's frontend counters), they are read once between each two "
        f"of {COUNTER_BURSTS} bursts of {COUNTER_BURST} back-to-back requests on one "
        "connection, as wrk sends them (each burst's difference a mean of its requests, "
        "the median over the clean bursts, those whose slowest request took at most "
        f"{CLEAN_BURST_FACTOR:g}× the median one): the HTTP front is the twin's p50 less the null "
        "server's and the twin's time in its job, the job queue the predict path's, the "
        "worker protocol its job time less queue and the handler's span (the socket to the "
        "Python worker and back), the client's share the null server's p50. A stack that "
        "batches across requests "
        "waits for a batch on its twin too, so it is started again under the "
        f"`{LATENCY_PRESET}` batching preset (batching off, twin included) and measured "
        "the same way: its own row, and a line holding its p50 against that floor "
        f"(goal ≤ {LATENCY_FLOOR_GOAL:g}×).",
        "",
    ]
    made = next((r["made"] for r in records if r.get("made")), None)
    if made:
        md += [f"Measured apart from the bench's levels, by {made}", ""]
    measured = [r for r in records if not r.get("skipped")]
    if measured:
        md += ["| stack | device | predict p50 (p99) | no-op p50 (p99) | framework floor "
               "| our code | model in process | our code as served | model as served | runs "
               "| spread | errors |",
               "|" + " --- |" * 12]  # fmt: skip
        md += [_row(r) for r in measured]
        md += [line for r in measured
               for line in (_stages_line(r), _near_line(r), _preset_line(r)) if line]
    for r in measured:
        if r["model_ms"] is None:
            md.append(f"- {r['stack']}/{r['device']}: no model figure, so no split: "
                      f"{r['model_reason']}.")
    for r in records:
        if r.get("skipped"):
            md.append(f"- {_label(r)}/{r['device']}: **not measured**: {r['skipped']}")
    return md


# --- `make floors`: this phase alone, into a bench run -----------------------------------


def main(argv: list[str] | None = None) -> int:
    """Starts each stack with its no-op twin on the servers' cores and measures its floor
    and attribution, as `make bench` does after its levels; with --into-run, its
    framework_floor.jsonl is replaced (the run's baselines.json gives the model figure) and
    `make report RUN=` renders it."""
    from digitnet.artifacts import DEFAULT_ARTIFACTS
    from harness.artifacts import ensure_artifacts
    from harness.paths import timestamped_dir
    from loadtests.environment import provenance
    from loadtests.profiles import PROFILES
    from loadtests.report import write_jsonl
    from loadtests.runner import split_cores
    from services.process import usable_cores
    from services.registry import load_stack, parse_stacks, stack_names

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=parse_stacks, default=stack_names())
    parser.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS)
    parser.add_argument("--into-run", type=Path, default=None)
    args = parser.parse_args(argv)
    paths = ensure_artifacts(args.artifacts)
    out = args.into_run or timestamped_dir("floors")
    out.mkdir(parents=True, exist_ok=True)
    profile = PROFILES["quick"]
    server_cores, generator_cores = split_cores(usable_cores())
    plan = FloorPlan(profile.framework_floor_runs, profile.framework_floor_s,
                     generator_cores, server_cores)  # fmt: skip
    baselines_file = out / "baselines.json"
    baselines = json.loads(baselines_file.read_text()) if baselines_file.exists() else []
    # Taken now, as the splits do: the report says this section was measured apart.
    made = provenance()
    records = []
    here = []
    for name in args.stacks:
        stack = load_stack(name)
        reason = stack.noop_why if stack.noop_env is None else skipped_reason(stack)
        if reason is not None:
            records.append(skipped(name, CPU, reason))
            continue
        here.append(stack)
        with ExitStack() as exits:
            try:
                running = start_stack(stack, paths, out / "servers" / "floors" / name, exits,
                                      cores=server_cores, env=dict(stack.noop_env))
            except START_ERRORS as err:
                records.append(skipped(name, CPU, did_not_start(err)))
                continue
            records.append(measure_stack(running, CPU, baselines, plan, out / "raw"))
        print(f"floors: {name} done", flush=True)
    for got in preset_floors(here, paths, baselines, plan, out / "raw",
                             out / "servers" / "floors"):  # fmt: skip
        records.append(got)
        print(f"floors: {got['stack']} under the {got['preset']!r} batching preset done",
              flush=True)  # fmt: skip
    records = [{**r, "made": f"`make floors`: {made}"} for r in records]
    write_jsonl(out / FLOOR_FILE, records)
    print("\n".join(markdown(records)))
    print(f"floors: wrote {out / FLOOR_FILE}")
    # Then why our code's share is what it is: the same app in process (loadtests.own_code).
    own = own_code.measure_all([load_stack(name) for name in args.stacks], paths,
                               server_cores, f"`make floors`: {made}")  # fmt: skip
    write_jsonl(out / own_code.OWN_CODE_FILE, own)
    print("\n".join(own_code.markdown(own, records)))
    print(f"floors: wrote {out / own_code.OWN_CODE_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
