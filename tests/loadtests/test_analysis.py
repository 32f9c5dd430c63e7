"""Figures from per-request records."""

from __future__ import annotations

import numpy as np
import pytest

from loadtests import analysis
from loadtests.records import RequestRecorder


def write_records(path, starts, latencies, ok=None):
    recorder = RequestRecorder(path)
    for i, (start, latency) in enumerate(zip(starts, latencies, strict=True)):
        failed = ok is not None and not ok[i]
        recorder.on_request("POST", "x", latency, 10, exception=RuntimeError("bad") if failed
                            else None, context={}, start_time=start)
    recorder.flush()


def test_warmup_and_cooldown_are_cut_and_percentiles_come_from_raw_latencies(tmp_path):
    # 100 warm-up requests (500 ms), 1000 measured ones, 11 in the stop sequence (900 ms).
    starts = np.concatenate(
        [np.linspace(0, 0.99, 100), 1.0 + np.arange(1000) / 100.0, 11.0 + np.arange(11) / 20]
    )
    latencies = np.concatenate([np.full(100, 500.0), np.arange(1, 1001) / 100.0,
                                np.full(11, 900.0)])  # fmt: skip
    path = tmp_path / "p.csv"
    write_records(path, 1000.0 + starts, latencies)
    stats = analysis.point_stats(analysis.read_records([path]), warmup_s=1.0, batch_size=4)
    assert stats["requests"] == 1000
    assert stats["max_ms"] == pytest.approx(10.0)  # warm-up and stop-sequence requests gone
    measured = latencies[100:1100]
    assert stats["p50_ms"] == pytest.approx(np.percentile(measured, 50), abs=1e-3)
    assert stats["p99_ms"] == pytest.approx(np.percentile(measured, 99), abs=1e-3)
    assert stats["rps"] == pytest.approx(1000 / 10.0, rel=1e-3)
    assert stats["images_per_s"] == pytest.approx(4 * stats["rps"])


def test_failures_are_counted_and_not_in_throughput(tmp_path):
    path = tmp_path / "p.csv"
    write_records(path, [0.0, 1.0, 2.0, 3.0, 3.6], [1.0] * 5, ok=[1, 0, 1, 1, 1])
    stats = analysis.point_stats(analysis.read_records([path]), warmup_s=0.0, batch_size=1)
    assert stats["failures"] == 1
    assert stats["rps"] == pytest.approx(3 / 3.1)


def test_failures_say_their_status_and_a_refused_key_is_told_apart(tmp_path):
    recorder = RequestRecorder(tmp_path / "p.csv")
    errors = [None, "HTTP 401: unauthorized", "HTTP 503: busy", "HTTP 503: busy",
              'HTTP 400: {"code": 400, "message": "Token Authorization failed. Token either '
              'incorrect, expired, or not provided correctly"}',
              'HTTP 400: {"error": "bad input"}', "ConnectionResetError(104)", *[None] * 8]
    for i, error in enumerate(errors):
        recorder.on_request("POST", "x", 1.0, 10, context={}, start_time=float(i) / 2,
                            exception=RuntimeError(error) if error else None)
    recorder.flush()
    stats = analysis.point_stats(analysis.read_records([tmp_path / "p.csv"]), warmup_s=0.0,
                                 batch_size=1)
    assert stats["failures"] == 6
    assert stats["failure_statuses"] == {"400": 2, "401": 1, "503": 2}
    assert stats["key_rejected"] == 2  # the 401 and TorchServe's token refusal


def test_open_loop_latency_counts_from_the_scheduled_start(tmp_path):
    recorder = RequestRecorder(tmp_path / "p.csv")
    recorder.on_request("POST", "x", 2.0, 1, context={"scheduled_s": 10.0}, start_time=10.5)
    recorder.flush()
    records = analysis.read_records([tmp_path / "p.csv"])
    assert records.latency_ms[0] == pytest.approx(502.0)
    assert records.service_ms[0] == pytest.approx(2.0)


def test_send_lateness_is_split_into_pool_wait_and_the_generators_own(tmp_path):
    # 100 requests: each went out 5 ms after its slot; for the first 50, 4 ms of that was
    # waiting for a free user (every user busy with the server), 1 ms the generator's.
    # (The cool-down cuts the last few.)
    recorder = RequestRecorder(tmp_path / "p.csv")
    for i in range(100):
        slot = 100.0 + i / 10
        context = {"scheduled_s": slot, "pool_wait_ms": 4.0 if i < 50 else 0.0}
        recorder.on_request("POST", "x", 2.0, 1, context=context, start_time=slot + 0.005)
    recorder.flush()
    stats = analysis.point_stats(analysis.read_records([tmp_path / "p.csv"]), warmup_s=0.0,
                                 batch_size=1)  # fmt: skip
    assert stats["p50_ms"] == pytest.approx(7.0, abs=1e-3)  # latency still from the slot
    assert stats["pool_wait_p99_ms"] == pytest.approx(4.0, abs=1e-3)
    assert stats["lateness_p99_ms"] == pytest.approx(5.0, abs=1e-3)  # the rest
    assert stats["lateness_p50_ms"] == pytest.approx(1.0, abs=1e-3)  # the first 50's
    assert stats["pool_wait_share"] == pytest.approx(50 / stats["requests"])


def test_records_written_before_the_pool_wait_column_still_read(tmp_path):
    path = tmp_path / "old.csv"
    path.write_text("start_s,latency_ms,service_ms,ok,server_ms,error\n1.0,7.0,2.0,1,,\n")
    records = analysis.read_records([path])
    assert records.pool_wait_ms.tolist() == [0.0]
    assert records.latency_ms.tolist() == [7.0]
    assert np.isnan(records.batch_requests).all()


def test_forward_passes_are_counted_from_the_requests_that_shared_them(tmp_path):
    # 6 single passes, 2 passes of 3, 1 of 4 (its requests all measured); one failure
    # naming no pass; then a server that says nothing (TF Serving).
    recorder = RequestRecorder(tmp_path / "p.csv")
    said = ["1"] * 6 + ["3"] * 6 + ["4"] * 4
    for i, batch in enumerate(said):
        recorder.on_request("POST", "x", 1.0, 1, context={"batch_requests": batch},
                            start_time=100.0 + i / 10)  # fmt: skip
    recorder.on_request("POST", "x", 1.0, 1, exception=RuntimeError("HTTP 503"),
                        context={"batch_requests": ""}, start_time=101.65)  # fmt: skip
    recorder.flush()
    records = analysis.read_records([tmp_path / "p.csv"])
    batches = analysis.observed_batches(records.batch_requests[records.ok])
    assert batches["batch_hist"] == {"1": 6, "3": 2, "4": 1}
    assert batches["batch_mean"] == pytest.approx(16 / 9)
    assert analysis.observed_batches(np.full(5, np.nan)) == {}


def test_windows_passes_add_up_in_a_level():
    merged = analysis.aggregate_repeats([
        {"rps": 1.0, "batch_hist": {"1": 4, "8": 1}},
        {"rps": 1.0, "batch_hist": {"2": 2, "1": 2}},
        {"rps": 1.0},
    ])  # fmt: skip
    assert merged["batch_hist"] == {"1": 6, "2": 2, "8": 1}
    assert list(merged["batch_hist"]) == ["1", "2", "8"]
    assert merged["batch_mean"] == pytest.approx((6 + 4 + 8) / 9)


def test_a_servers_histograms_of_rows_add_up_in_a_level():
    # Two windows of a server that counts its batches in rows (TF Serving), requests of 2
    # rows: 12 batches holding 64 rows of 32 requests in all.
    def window(hist: dict, *sums: int) -> dict:
        return {"rps": 1.0, "batch_rows_hist": hist,
                **dict(zip(analysis.ROW_SUMS, sums, strict=True))}  # fmt: skip

    merged = analysis.aggregate_repeats([window({"5-8": 2, "2": 4}, 24, 6, 24, 12),
                                         window({"3-4": 4, "2": 2}, 40, 6, 40, 20)])  # fmt: skip
    assert merged["batch_rows_hist"] == {"2": 6, "3-4": 4, "5-8": 2}
    assert list(merged["batch_rows_hist"]) == ["2", "3-4", "5-8"]
    assert [merged[key] for key in analysis.ROW_SUMS] == [64, 12, 64, 32]
    # 64 / 12 rows per batch over 2 rows per request.
    assert merged["batch_mean"] == pytest.approx(64 / 12 / 2)
    assert "batch_hist" not in merged


def test_repeats_are_merged_by_median_with_spread():
    points = [{"rps": r, "p99_ms": p, "requests": 10, "failures": f}
              for r, p, f in [(100, 5, 0), (120, 9, 1), (110, 7, 0)]]
    merged = analysis.aggregate_repeats(points)
    assert (merged["rps"], merged["rps_min"], merged["rps_max"]) == (110, 100, 120)
    assert (merged["p99_ms"], merged["requests"], merged["failures"]) == (7, 30, 1)


def test_knee_is_where_more_load_stops_buying_throughput():
    assert analysis.knee([1, 2, 4, 8, 16], [100, 190, 350, 360, 365]) == 2
    assert analysis.knee([1, 2, 4], [100, 200, 400]) is None


def test_slo_capacity_ignores_failing_and_saturated_points():
    points = [
        {"rps": 100, "p99_ms": 10, "failures": 0},
        {"rps": 300, "p99_ms": 40, "failures": 0},
        {"rps": 500, "p99_ms": 45, "failures": 3},
        {"rps": 600, "p99_ms": 20, "failures": 0, "generator_saturated": True},
        {"rps": 700, "p99_ms": 90, "failures": 0},
    ]
    assert analysis.max_rps_under_slo(points, 50.0)["rps"] == 300
    assert analysis.max_rps_under_slo(points, 5.0) is None


def test_the_window_ends_at_the_planned_run_time(tmp_path):
    """Requests sent during Locust's stop sequence (after the run time, while users finish
    under --stop-timeout) are late because of the generator: they are cut."""
    path = tmp_path / "stop.csv"
    rows = [(t / 10, 5.0, 5.0) for t in range(0, 100)]  # 10 s of requests, 5 ms each
    rows += [(8.0 + t / 100, 120.0, 5.0) for t in range(1, 20)]  # late sends after 8 s
    with open(path, "w") as handle:
        handle.write("start_s,latency_ms,service_ms,ok,server_ms,error\n")
        handle.writelines(f"{s:.3f},{lat},{svc},1,,\n" for s, lat, svc in rows)
    records = analysis.read_records([path])
    whole = analysis.point_stats(records, warmup_s=2.0, batch_size=1)
    planned = analysis.point_stats(records, warmup_s=2.0, batch_size=1, duration_s=6.0)
    assert whole["lateness_p99_ms"] > 100
    assert planned["lateness_p99_ms"] == 0 and planned["window_s"] == 6.0
