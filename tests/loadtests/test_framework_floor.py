"""The framework floor: the split of a served p50 (pure), its report section, and the phase
against a real flask_torch server with its no-op twin (structure only, never a timing)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from digitnet.codec import APP_STAGE, STAGE_HEADER, server_timing
from harness.lifecycle import running_stack
from loadtests import framework_floor
from loadtests.framework_floor import (
    FloorPlan,
    attribution,
    model_ms,
    served_split,
    split_latency,
    summarize_runs,
)
from loadtests.null_server import nginx_available
from loadtests.wrk import wrk_available
from services.process import usable_cores
from services.registry import load_stack, stack_names
from services.torchserve import metrics
from tests.http_fixture import base_url, serving

BASELINES = [{"path": "TorchScript", "batch_size": 1, "p50_us": 30.0},
             {"path": "TorchScript", "batch_size": 8, "p50_us": 90.0}]  # fmt: skip


def wrk_run(p50_ms: float, p99_ms: float, errors: int = 0) -> dict:
    return {"p50_ms": p50_ms, "p99_ms": p99_ms, "goodput_rps": 1000.0 / p50_ms,
            "status_errors": errors, "socket_errors": 0}  # fmt: skip


def test_the_served_p50_splits_into_floor_our_code_and_model() -> None:
    split = split_latency(0.500, 0.250, 0.030)
    assert split["framework_floor_ms"] == 0.250 and split["model_ms"] == 0.030
    assert split["our_code_ms"] == pytest.approx(0.220)
    assert split["our_code_raw_ms"] == pytest.approx(0.220)
    assert split["our_code_negative"] is False


def test_a_negative_remainder_is_clamped_and_flagged() -> None:
    split = split_latency(0.260, 0.250, 0.030)
    assert split["our_code_ms"] == 0.0
    assert split["our_code_raw_ms"] == pytest.approx(-0.020)
    assert split["our_code_negative"] is True


def test_without_a_model_figure_there_is_no_split_of_our_code() -> None:
    split = split_latency(0.5, 0.25, None)
    assert split["our_code_ms"] is None and split["our_code_negative"] is False
    assert split["framework_floor_ms"] == 0.25


SERVED = {"model_ms": 0.160, "stages_ms": {"decode": 0.060, "model": 0.160}, "probes": 300}


def test_the_split_with_the_model_as_served_moves_its_context_penalty_out_of_our_code() -> None:
    split = served_split(0.600, 0.200, 0.035, SERVED)
    assert split["model_served_ms"] == 0.160
    assert split["our_code_served_ms"] == pytest.approx(0.240)
    assert split["context_penalty_ms"] == pytest.approx(0.125)
    assert split["served_stages_ms"] == SERVED["stages_ms"] and split["served_probes"] == 300
    # The two splits account for the same p50.
    classic = split_latency(0.600, 0.200, 0.035)
    assert classic["our_code_raw_ms"] == pytest.approx(
        split["our_code_served_ms"] + split["context_penalty_ms"])


def test_without_served_timings_the_served_split_is_empty() -> None:
    split = served_split(0.6, 0.2, 0.035, {})
    assert split["model_served_ms"] is None and split["our_code_served_ms"] is None
    assert split["context_penalty_ms"] is None and split["served_stages_ms"] == {}
    assert served_split(0.6, 0.2, None, SERVED)["context_penalty_ms"] is None


def test_the_served_p50_is_attributed_stage_by_stage() -> None:
    # The HTTP server times itself (http-read, app-after, http-write) on both paths.
    predict = {"decode": 0.05, "queue": 0.03, "model": 0.15, "encode": 0.02, "app": 0.40,
               "http-read": 0.11, "app-after": 0.03, "http-write": 0.09}  # fmt: skip
    noop = {"app": 0.07, "http-read": 0.06, "app-after": 0.02, "http-write": 0.05}
    whole = attribution(0.70, 0.22, 0.08, predict, noop)
    assert whole["method"] == framework_floor.MEASURED
    # wrk and the loopback: the twin's p50 less its own span, 0.22 - (0.06+0.07+0.02+0.05).
    assert whole["stages_ms"]["client and network"] == pytest.approx(0.02)
    assert whole["stages_ms"]["HTTP server"] == pytest.approx(0.20)  # read + write
    # The app's time and its teardown after the reply, less its stages: 0.43 - 0.25.
    assert whole["stages_ms"]["app outside stages"] == pytest.approx(0.18)
    assert set(whole["stages_ms"]) == {"client and network", "HTTP server",
                                       "app outside stages", "decode", "queue", "model",
                                       "encode"}  # fmt: skip
    assert whole["unattributed_ms"] == pytest.approx(0.70 - 0.02 - 0.20 - 0.43)
    assert whole["named_share"] == pytest.approx(1 - 0.05 / 0.70)
    assert whole["http_ms"] == {"http-read": 0.11, "app-after": 0.03, "http-write": 0.09}
    assert whole["null_p50_ms"] == 0.08
    # Named beyond the p50: the remainder is negative and counts against the share alike.
    over = attribution(0.60, 0.22, None, predict, noop)
    assert over["unattributed_ms"] == pytest.approx(-0.05)
    assert over["named_share"] == pytest.approx(1 - 0.05 / 0.60)


def test_without_http_stages_the_http_servers_share_comes_from_the_twin() -> None:
    stages = {"decode": 0.05, "queue": 0.03, "model": 0.15, "encode": 0.02}
    whole = attribution(0.70, 0.22, 0.08, {**stages, "app": 0.40}, {"app": 0.10})
    assert whole["method"] == framework_floor.FROM_TWIN
    assert whole["stages_ms"]["client and network"] == 0.08
    assert whole["stages_ms"]["HTTP server"] == pytest.approx(0.04)  # 0.22 - 0.08 - 0.10
    assert whole["stages_ms"]["app outside stages"] == pytest.approx(0.15)  # 0.40 - 0.25
    assert whole["unattributed_ms"] == pytest.approx(0.70 - 0.08 - 0.04 - 0.40)
    assert whole["named_share"] == pytest.approx(1 - 0.18 / 0.70)
    # One path's HTTP stages alone are not enough for the measured method.
    partial = attribution(0.70, 0.22, 0.08, {**stages, "app": 0.40, "http-read": 0.1},
                          {"app": 0.10})  # fmt: skip
    assert partial["method"] == framework_floor.FROM_TWIN
    # A stack that does not time its whole app, or no null server: no attribution.
    assert attribution(0.7, 0.22, 0.08, {**stages, "app": 0.40}, {}) is None
    assert attribution(0.7, 0.22, 0.08, stages, {"app": 0.10}) is None
    assert attribution(0.7, 0.22, None, {**stages, "app": 0.40}, {"app": 0.10}) is None


def test_with_the_servers_counters_its_share_splits_into_front_queue_and_worker() -> None:
    # TorchServe: the handler times its span and stages, the frontend counts its job.
    stages = {"decode": 0.05, "convert": 0.01, "model": 0.15, "encode": 0.02}
    burst = {"bursts": 96, "clean": 40, "burst": 5, "client_p50_ms": 1.04}
    predict_counted = {"queue_ms": 0.02, "total_ms": 0.70, "worker_ms": 0.33, **burst}
    noop_counted = {"queue_ms": 0.01, "total_ms": 0.35, "worker_ms": 0.30, **burst}
    whole = attribution(0.97, 0.53, 0.08, {**stages, "app": 0.30}, {"app": 0.02},
                        (predict_counted, noop_counted))  # fmt: skip
    assert whole["method"] == framework_floor.FROM_COUNTERS
    assert list(whole["stages_ms"]) == ["client and network", "HTTP front", "job queue",
                                        "worker protocol", "app outside stages", *stages]
    assert whole["stages_ms"]["client and network"] == 0.08
    # The twin's p50 less the client's share and the twin's time in its job.
    assert whole["stages_ms"]["HTTP front"] == pytest.approx(0.53 - 0.08 - 0.35)
    assert whole["stages_ms"]["job queue"] == 0.02
    assert whole["stages_ms"]["worker protocol"] == 0.33
    assert whole["stages_ms"]["app outside stages"] == pytest.approx(0.30 - 0.23)
    assert whole["unattributed_ms"] == pytest.approx(0.97 - 0.08 - 0.10 - 0.02 - 0.33 - 0.30)
    assert whole["counted"] == {"predict": predict_counted, "noop": noop_counted}
    # Counters on one path only: the twin's method, as without any.
    half = attribution(0.97, 0.53, 0.08, {**stages, "app": 0.30}, {"app": 0.02},
                       (predict_counted, None))  # fmt: skip
    assert half["method"] == framework_floor.FROM_TWIN
    md = framework_floor._attributed(whole)
    assert "HTTP front 0.100, job queue 0.020, worker protocol 0.330" in md
    assert "the server's own counters, read around bursts of back-to-back requests" in md
    assert "below 0" not in md
    # With wrk's p50 beside it, the line says how the bursts' pace compares.
    assert ("40 of 96 predict bursts clean; a burst's request took 1.040 at the median "
            "against wrk's 0.970") in framework_floor._attributed(whole, 0.97)
    # A twin whose job time exceeds its p50 less the client's: the front comes out below 0,
    # and the line says what that means.
    slow = attribution(0.97, 0.40, 0.08, {**stages, "app": 0.30}, {"app": 0.02},
                       (predict_counted, noop_counted))  # fmt: skip
    assert slow["stages_ms"]["HTTP front"] == pytest.approx(0.40 - 0.08 - 0.35)
    assert "HTTP front below 0: the figures it is the difference of" in (
        framework_floor._attributed(slow))


def test_the_server_span_needs_the_app_and_every_http_stage() -> None:
    http = {"http-read": 0.1, "app-after": 0.02, "http-write": 0.08}
    assert framework_floor.server_span(0.4, http) == pytest.approx(0.6)
    assert framework_floor.server_span(None, http) is None
    assert framework_floor.server_span(0.4, {"http-read": 0.1, "http-write": 0.08}) is None
    app, stages, got = framework_floor.split_timings({"app": 0.4, "model": 0.1, **http})
    assert (app, stages, got) == (0.4, {"model": 0.1}, http)


def test_near_capacity_the_http_servers_share_is_given_and_the_rest_is_measured() -> None:
    whole = framework_floor.attributed(12.0, {"client and network": 0.06, "HTTP server": 0.08},
                                       11.5, {"decode": 0.05, "queue": 11.0, "model": 0.2})
    assert list(whole["stages_ms"])[:3] == ["client and network", "HTTP server",
                                             "app outside stages"]  # fmt: skip
    assert whole["stages_ms"]["HTTP server"] == 0.08
    assert whole["stages_ms"]["app outside stages"] == pytest.approx(0.25)
    assert whole["unattributed_ms"] == pytest.approx(12.0 - 0.06 - 0.08 - 11.5)
    assert whole["named_share"] == pytest.approx(1 - 0.36 / 12.0)


def test_near_capacity_the_worker_protocol_is_the_mean_job_beyond_queue_and_handler() -> None:
    mean = {"server_requests": 400, "server_queue_ms": 1.4, "server_total_ms": 3.0}
    assert framework_floor.worker_protocol_ms(mean, 0.6) == pytest.approx(1.0)


def test_runs_give_medians_and_their_spread() -> None:
    summary = summarize_runs([wrk_run(0.4, 1.0), wrk_run(0.5, 2.0, errors=2),
                              wrk_run(0.6, 3.0)])  # fmt: skip
    assert summary["p50_ms"] == 0.5 and summary["p99_ms"] == 2.0
    assert (summary["p50_ms_min"], summary["p50_ms_max"]) == (0.4, 0.6)
    assert summary["spread"] == pytest.approx(0.4)
    assert summary["errors"] == 2 and summary["runs"] == 3


def test_the_model_figure_is_the_batch_1_baseline_on_the_cpu_only() -> None:
    assert model_ms(BASELINES, "TorchScript", "cpu") == (0.030, "")
    value, why = model_ms(BASELINES, "TorchScript", "cuda")
    assert value is None and "CPU" in why
    value, why = model_ms(BASELINES, "SavedModel signature", "cpu")
    assert value is None and "SavedModel signature" in why


def test_the_report_section_has_one_row_per_stack_and_says_what_was_skipped() -> None:
    measured = framework_floor.record(
        "flask_torch", "cpu", ("/v1/models/digitnet:predict", "/v1/models/digitnet:noop"),
        [wrk_run(0.5, 0.9)], [wrk_run(0.25, 0.4)], (0.03, ""), "TorchScript",
        FloorPlan(runs=1, duration_s=3), SERVED)  # fmt: skip
    negative = {**measured, "stack": "torchserve", "our_code_ms": 0.0,
                "our_code_raw_ms": -0.1, "our_code_negative": True}  # fmt: skip
    gone = framework_floor.skipped("tf_serving", "cpu", "no twin here")
    md = "\n".join(framework_floor.markdown([measured, negative, gone]))
    assert "## Framework floor and our own overhead" in md
    assert ("| flask_torch | cpu | 0.500 (0.900) | 0.250 (0.400) | 0.250 | 0.220 | 0.030 "
            "| 0.090 | 0.160 | 1 × 3 s | 0%/0% | 0 |") in md
    assert ("- flask_torch/cpu: the server's own stages (median ms over 300 requests): "
            "decode 0.060, model 0.160; 0.220 of the predict p50's 0.500 (44%) named") in md
    assert "| torchserve | cpu |" in md and "raw -0.100" in md
    assert "- tf_serving/cpu: **not measured**: no twin here" in md


def test_the_latency_preset_is_held_against_its_own_floor_in_the_report() -> None:
    plan = FloorPlan(runs=1, duration_s=3)
    paths = ("/predictions/digitnet", "/predictions/digitnet-noop")
    near = framework_floor.record("torchserve", "cpu", paths, [wrk_run(1.2, 7.0)],
                                  [wrk_run(0.8, 6.0)], (0.03, ""), "TorchScript", plan)
    far = framework_floor.record("torchserve", "cpu", paths, [wrk_run(2.5, 7.0)],
                                 [wrk_run(1.0, 6.0)], (0.03, ""), "TorchScript", plan)
    default = framework_floor.record("torchserve", "cpu", paths, [wrk_run(7.0, 12.0)],
                                     [wrk_run(6.2, 11.0)], (0.03, ""), "TorchScript", plan)
    md = "\n".join(framework_floor.markdown([default, {**near, "preset": "latency"}]))
    assert "| torchserve | cpu | 7.000 (12.000) |" in md
    assert "| torchserve (`latency` batching preset) | cpu | 1.200 (7.000) |" in md
    assert ("- torchserve/cpu under the `latency` batching preset (no batching): predict p50 "
            "1.200 ms at one connection, 1.50× its own no-op floor under the same preset "
            "(0.800 ms); goal ≤ 2×: met.") in md
    md = "\n".join(framework_floor.markdown([{**far, "preset": "latency"}]))
    assert "2.50× its own no-op floor" in md and "goal ≤ 2×: **not met**" in md
    # Only the latency preset's row is held to the goal.
    assert "under the same preset" not in "\n".join(framework_floor.markdown([default]))


def test_every_stack_declares_a_twin() -> None:
    with_twin = {name for name in stack_names() if load_stack(name).noop_env is not None}
    assert with_twin == {"flask_torch", "flask_tf", "torchserve", "ray_serve", "tf_serving"}


@pytest.mark.integration
def test_the_phase_measures_a_real_flask_server_and_its_twin(artifacts, tmp_path) -> None:
    ok, why = wrk_available()
    if not ok:
        pytest.skip(why)
    stack = load_stack("flask_torch")
    plan = FloorPlan(runs=2, duration_s=1, cores=None)
    with running_stack(stack, artifacts, tmp_path / "server", cores=usable_cores()[:1],
                       env=dict(stack.noop_env)) as running:  # fmt: skip
        record = framework_floor.measure_stack(running, "cpu", BASELINES, plan, tmp_path)

    assert record["skipped"] is None
    assert record["noop_path"] == "/v1/models/digitnet:noop"
    assert record["predict_path"] == "/v1/models/digitnet:predict"
    assert len(record["predict_runs"]) == len(record["noop_runs"]) == 2
    for side in ("predict", "noop"):
        assert record[side]["runs"] == 2 and record[side]["errors"] == 0
        assert record[side]["p50_ms"] > 0 and record[side]["rps"] > 0
    assert record["framework_floor_ms"] == record["noop"]["p50_ms"]
    assert record["model_ms"] == 0.030 and record["our_code_raw_ms"] is not None
    # The Flask app times its forward pass and names its stages in every reply.
    assert record["served_probes"] == framework_floor.SERVED_PROBES
    assert record["model_served_ms"] > 0
    assert set(record["served_stages_ms"]) == {"decode", "queue", "convert", "model", "encode"}
    assert record["served_stages_ms"]["model"] == record["model_served_ms"]
    # Attributed: the server's timings read under wrk on both paths, the app's stages and
    # gunicorn's own (services/flask_torch/http_timing.py) among them.
    timed = record["timings_under_wrk"]
    http = {"http-read", "app-after", "http-write"}
    assert set(timed["predict"]) == {"decode", "queue", "convert", "model", "encode", "app",
                                     *http}  # fmt: skip
    assert set(timed["noop"]) == {"app", *http}
    assert all(n > 0 for _, n in timed["predict"].values())
    whole = record["attribution"]
    assert whole["method"] == framework_floor.MEASURED
    assert list(whole["stages_ms"])[:3] == ["client and network", "HTTP server",
                                             "app outside stages"]  # fmt: skip
    assert whole["stages_ms"]["HTTP server"] == pytest.approx(
        timed["predict"]["http-read"][0] + timed["predict"]["http-write"][0])
    assert whole["named_share"] <= 1.0
    if nginx_available()[0]:
        assert record["null"]["runs"] == 2 and record["null"]["errors"] == 0
        assert whole["null_p50_ms"] == record["null"]["p50_ms"]
    # Again near capacity: the same runs and timings at NEAR_CAPACITY connections.
    near = record["near_capacity"]
    if nginx_available()[0]:
        assert near["connections"] == framework_floor.NEAR_CAPACITY
        assert near["predict"]["runs"] == 2 and near["predict"]["errors"] == 0
        near_timed = near["timings_under_wrk"]["predict"]
        assert set(near_timed) == set(timed["predict"])
        assert near["null"]["runs"] == 2
        # The HTTP server's share is its own stages at that concurrency.
        assert near["attribution"]["method"] == framework_floor.MEASURED
        assert near["attribution"]["stages_ms"]["HTTP server"] == pytest.approx(
            near_timed["http-read"][0] + near_timed["http-write"][0])
        assert near["attribution"]["stages_ms"]["client and network"] == (
            near["null"]["p50_ms"])
        assert near["attribution"]["stages_ms"]["queue"] >= 0.0
        md = "\n".join(framework_floor.markdown([record]))
        assert (f"- flask_torch/cpu near capacity, at {framework_floor.NEAR_CAPACITY} "
                "connections: predict p50") in md
        assert "the HTTP server's own stages; HTTP read" in md


@pytest.mark.integration
def test_a_server_started_without_its_twin_is_skipped_with_the_reason(artifacts,
                                                                     tmp_path) -> None:
    with running_stack("flask_torch", artifacts, tmp_path, cores=usable_cores()[:1]) as running:
        assert running.stack.noop_path(running.server) is None
        record = framework_floor.measure_stack(running, "cpu", BASELINES,
                                               FloorPlan(1, 1), tmp_path)  # fmt: skip
    assert "without its no-op twin" in record["skipped"]


@pytest.mark.integration
def test_a_batching_stack_is_measured_again_under_the_latency_preset(artifacts,
                                                                      tmp_path) -> None:
    ok, why = wrk_available()
    if not ok:
        pytest.skip(why)
    plan = FloorPlan(runs=1, duration_s=1, cores=None, server_cores=usable_cores()[:1])
    stacks = [load_stack("flask_torch"), load_stack("torchserve")]
    # The servers' folder is tmp_path itself: TorchServe's socket path has a length limit.
    (record,) = framework_floor.preset_floors(stacks, artifacts, BASELINES, plan,
                                              tmp_path / "raw", tmp_path)  # fmt: skip
    # Flask never batches across requests, so only TorchServe runs again, twin included.
    assert record["stack"] == "torchserve" and record["preset"] == "latency"
    assert record["skipped"] is None, record["skipped"]
    assert record["noop_path"] != record["predict_path"]
    for side in ("predict", "noop"):
        assert record[side]["runs"] == 1 and record[side]["errors"] == 0
    assert record["framework_floor_ms"] == record["noop"]["p50_ms"] > 0
    # The handler names its span and stages, the frontend counts each request's job: the
    # p50 is attributed from both, read around bursts of back-to-back requests (the client's
    # share is the null server's, so only with nginx).
    assert set(record["timings_under_wrk"]["noop"]) == {"app"}
    assert set(record["timings_under_wrk"]["predict"]) == {"decode", "convert", "model",
                                                            "encode", "app"}  # fmt: skip
    if nginx_available()[0]:
        whole = record["attribution"]
        assert whole["method"] == framework_floor.FROM_COUNTERS
        for side in ("predict", "noop"):
            counted = whole["counted"][side]
            assert counted["bursts"] == framework_floor.COUNTER_BURSTS
            assert 0 <= counted["queue_ms"] <= counted["total_ms"]
            assert counted["worker_ms"] is not None
        # Near capacity the job queue is the counters' mean over the timed run.
        near = record["near_capacity"]
        assert near["attribution"]["method"] == framework_floor.FROM_COUNTERS_MEAN
        assert near["counted_mean"]["server_requests"] > 0
        assert near["attribution"]["stages_ms"]["job queue"] == (
            near["counted_mean"]["server_queue_ms"])
        # And the worker protocol the mean job beyond its queue and the handler's span.
        app_ms = near["timings_under_wrk"]["predict"]["app"][0]
        assert near["attribution"]["stages_ms"]["worker protocol"] == pytest.approx(
            framework_floor.worker_protocol_ms(near["counted_mean"], app_ms))
    # The server ran under the preset: batching off in the registration it was given.
    config = (tmp_path / "torchserve-latency" / "config.properties").read_text()
    assert '"batchSize":1' in config.replace(" ", ""), config


class CountingServer(BaseHTTPRequestHandler):
    """A server that counts its jobs as TorchServe's frontend does: each predict request
    adds JOB_US to the total and QUEUE_US to the queue counter and names an app span of
    APP_MS; `failing` answers the next predict requests with 500 (counted all the same),
    the requests numbered in `slow` take SLOW_S more, in its job as on the client's clock."""

    JOB_US, QUEUE_US, APP_MS, SLOW_S = 900.0, 30.0, 0.4, 0.05
    protocol_version = "HTTP/1.1"
    counts = {"requests": 0, "inference_us": 0.0, "queue_us": 0.0}
    failing = 0
    slow: frozenset[int] = frozenset()  # these requests (1, 2, ...) take SLOW_S more

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        counts = type(self).counts
        counts["requests"] += 1
        counts["inference_us"] += self.JOB_US
        if counts["requests"] in type(self).slow:
            time.sleep(self.SLOW_S)
            counts["inference_us"] += self.SLOW_S * 1e6
        counts["queue_us"] += self.QUEUE_US
        status = 200
        if type(self).failing:
            type(self).failing -= 1
            status = 500
        self._reply(status, b"{}", {STAGE_HEADER: server_timing({APP_STAGE: self.APP_MS / 1e3})})

    def do_GET(self) -> None:  # noqa: N802
        type(self).counts["reads"] = type(self).counts.get("reads", 0) + 1
        text = "".join(f"# TYPE {name} counter\n{name} {type(self).counts[key]}\n"
                       for key, name in metrics.COUNTERS.items())  # fmt: skip
        self._reply(200, text.encode(), {})

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def counting() -> Iterator[tuple[str, type[CountingServer]]]:
    handler = type("Handler", (CountingServer,), {"counts": {"requests": 0, "inference_us": 0.0,
                                                             "queue_us": 0.0}})  # fmt: skip
    with serving(handler) as server:
        yield base_url(server), handler


def test_counters_are_read_around_bursts_of_back_to_back_requests(counting) -> None:
    url, handler = counting
    got = framework_floor.counter_spans(f"{url}/predictions/m", b"{}", {}, f"{url}/metrics",
                                        metrics.breakdown, bursts=3, burst=4)  # fmt: skip
    assert got is not None
    # A warm-up burst, then 3 read: each burst's difference is the mean of its 4 requests.
    assert handler.counts["requests"] == 4 * 4
    # One read before the first burst, then one between bursts: the read that closes a
    # burst opens the next (this server counts a request before it answers it).
    assert handler.counts["reads"] == 1 + 4
    assert (got["bursts"], got["burst"]) == (3, 4) and 0 <= got["clean"] <= 3
    assert got["client_p50_ms"] > 0
    assert got["total_ms"] == pytest.approx(0.9) and got["queue_ms"] == pytest.approx(0.03)
    # The job less its queue and the replies' own app span.
    assert got["worker_ms"] == pytest.approx(0.9 - 0.03 - 0.4)


def test_a_burst_with_a_failed_request_is_left_out(counting) -> None:
    url, handler = counting
    handler.failing = 4 + 1  # the warm-up burst, then one request of the first read burst
    got = framework_floor.counter_spans(f"{url}/predictions/m", b"{}", {}, f"{url}/metrics",
                                        metrics.breakdown, bursts=3, burst=4)  # fmt: skip
    assert got is not None and got["bursts"] == 2


def test_a_burst_holding_a_slow_request_is_left_out_of_the_medians(counting) -> None:
    url, handler = counting
    # One request in each of the first three bursts read (after the warm-up's 4): most
    # bursts, but few requests, so the median request stays a fast one.
    handler.slow = frozenset({6, 10, 14})
    got = framework_floor.counter_spans(f"{url}/predictions/m", b"{}", {}, f"{url}/metrics",
                                        metrics.breakdown, bursts=5, burst=4)  # fmt: skip
    assert got is not None and (got["bursts"], got["clean"]) == (5, 2)
    # The clean bursts' means, untouched by the 50 ms requests (over all five, the median
    # burst would hold one).
    assert got["total_ms"] == pytest.approx(0.9) and got["worker_ms"] == pytest.approx(0.47)


def test_make_floors_skips_a_stack_that_cannot_run_here(artifacts, tmp_path) -> None:
    stack = load_stack("tf_serving")
    ok, reason = stack.available()
    if ok:
        pytest.skip("tensorflow_model_server is installed: nothing to skip")
    assert framework_floor.main(["--stacks", "tf_serving", "--artifacts", str(artifacts.root),
                                 "--into-run", str(tmp_path)]) == 0  # fmt: skip
    records = [json.loads(line) for line in
               (tmp_path / framework_floor.FLOOR_FILE).read_text().splitlines()]  # fmt: skip
    # Once, with how to get it, and no preset run of a server that cannot start.
    assert [(r["stack"], r["skipped"]) for r in records] == [("tf_serving", reason)]
    assert not (tmp_path / "servers").exists()


class ProxiedServer(BaseHTTPRequestHandler):
    """A server whose handler is behind a slow front, as Serve's replica is behind its
    proxy: each request waits FRONT_S before the handler, whose span (APP_MS, named in
    Server-Timing) holds none of it; every `fail_every`-th request answers 503."""

    FRONT_S, APP_MS = 0.004, 1.0
    protocol_version = "HTTP/1.1"
    replies = 0
    fail_every = 0
    close_after = 0  # closes each connection after this many replies (0: never)

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(self.FRONT_S)
        type(self).replies += 1
        self.on_this_connection = getattr(self, "on_this_connection", 0) + 1
        failing = self.fail_every and self.replies % self.fail_every == 0
        body = b"{}"
        self.send_response(503 if failing else 200)
        self.send_header(STAGE_HEADER, server_timing({APP_STAGE: self.APP_MS / 1e3}))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.close_after and self.on_this_connection == self.close_after:
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def test_our_client_times_each_requests_stay_outside_its_handler() -> None:
    handler = type("Handler", (ProxiedServer,), {"replies": 0, "fail_every": 5})
    with serving(handler) as server:
        got = framework_floor.outside_handler(base_url(server) + "/predict", b"{}",
                                              {"Content-Type": "application/json"}, 3, 0.5)
    assert got is not None and got["connections"] == 3
    # Every reply counted once: a 503 as failed, the others with their span.
    assert got["requests"] + got["failed"] == handler.replies
    assert got["failed"] == handler.replies // 5 and got["requests"] > 0
    # The front's wait is outside the handler's span, and the round trip holds both.
    assert got["outside_ms"] >= ProxiedServer.FRONT_S * 1000 - ProxiedServer.APP_MS
    assert got["client_p50_ms"] == pytest.approx(got["outside_ms"] + ProxiedServer.APP_MS,
                                                 abs=0.5)  # fmt: skip


def test_a_connection_the_server_closes_stops_and_is_counted() -> None:
    handler = type("Handler", (ProxiedServer,), {"replies": 0, "close_after": 3})
    with serving(handler) as server:
        got = framework_floor.outside_handler(base_url(server) + "/predict", b"{}", {}, 2, 0.5)
    # Each connection's three replies are kept; its next request finds it closed.
    assert got is not None
    assert (got["requests"], got["failed"]) == (6, 2) and handler.replies == 6


@pytest.mark.integration
def test_near_capacity_a_front_without_timers_is_read_by_our_own_client(tmp_path) -> None:
    if not (wrk_available()[0] and nginx_available()[0]):
        pytest.skip("needs wrk and nginx")
    handler = type("Handler", (ProxiedServer,), {"replies": 0, "fail_every": 0})
    plan = FloorPlan(runs=1, duration_s=1, cores=None)
    with serving(handler) as server:
        near = framework_floor.near_capacity(base_url(server) + "/predict", b"{}",
                                             {"Content-Type": "application/json"}, plan,
                                             tmp_path, {"HTTP server": 0.5}, connections=2)
    whole = near["attribution"]
    assert whole["method"] == framework_floor.FROM_OWN_CLIENT
    outside = whole["outside"]
    assert outside["connections"] == 2 and outside["requests"] > 0
    # The server's share at this load: the requests' time outside the handler less the
    # client's (the null server's p50), not the 0.5 ms it was at one connection.
    assert whole["stages_ms"]["HTTP server"] == pytest.approx(
        outside["outside_ms"] - near["null"]["p50_ms"])
    line = framework_floor._near_line({"stack": "x", "device": "cpu", "near_capacity": near})
    assert f"{outside['requests']} of our requests at 2 connections" in line
