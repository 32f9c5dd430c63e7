"""Server-side timings from Prometheus text: counter and histogram deltas over a point, as
each stack plugin reads its own metrics."""

from __future__ import annotations

import math

import pytest

from loadtests.server_metrics import parse
from services.metric_buckets import buckets
from services.registry import load_stack

TORCHSERVE = """# HELP ts_inference_requests_total Total number of inference requests.
# TYPE ts_inference_requests_total counter
ts_inference_requests_total{{model_name="digitnet",model_version="default",}} {n}
ts_inference_latency_microseconds{{model_name="digitnet",model_version="default",}} {total}
ts_queue_latency_microseconds{{model_name="digitnet",model_version="default",}} {queue}
"""

TF_SERVING = """# TYPE :tensorflow:serving:request_latency histogram
:tensorflow:serving:request_latency_bucket{{API="predict",entrypoint="REST",le="10"}} 1
:tensorflow:serving:request_latency_sum{{API="predict",entrypoint="REST"}} {total}
:tensorflow:serving:request_latency_count{{API="predict",entrypoint="REST"}} {n}
:tensorflow:serving:runtime_latency_sum{{API="Predict",runtime="TF1"}} {run}
:tensorflow:serving:runtime_latency_count{{API="Predict",runtime="TF1"}} {n}
"""


def breakdown(stack: str, before: dict, after: dict) -> dict:
    return load_stack(stack).server_timings(before, after)


def test_torchserve_means_per_request_over_the_point():
    before = parse(TORCHSERVE.format(n=100, total=500_000, queue=100_000))
    after = parse(TORCHSERVE.format(n=300, total=1_300_000, queue=500_000))
    figures = breakdown("torchserve", before, after)
    assert figures["server_requests"] == 200
    assert figures["server_total_ms"] == pytest.approx(4.0)
    assert figures["server_queue_ms"] == pytest.approx(2.0)


# As TorchServe 0.12 writes it (a real /metrics reply, trimmed): each counter declared, the
# latency counters without the _total suffix that prometheus_client's parser adds.
TORCHSERVE_TYPED = """# HELP ts_queue_latency_microseconds Torchserve prometheus counter metric
# TYPE ts_queue_latency_microseconds counter
ts_queue_latency_microseconds{{model_name="digitnet",hostname="vm",}} {queue}
# HELP ts_inference_requests_total Torchserve prometheus counter metric with unit: Count
# TYPE ts_inference_requests_total counter
ts_inference_requests_total{{model_name="digitnet",model_version="default",hostname="vm",}} {n}
# TYPE ts_inference_latency_microseconds counter
ts_inference_latency_microseconds{{model_name="digitnet",hostname="vm",}} {total}
"""


def test_torchserve_counters_declared_as_counters_are_read_too():
    before = parse(TORCHSERVE_TYPED.format(n=0, total=0, queue=0))
    after = parse(TORCHSERVE_TYPED.format(n=50, total=235_310.4, queue=115_270.6))
    figures = breakdown("torchserve", before, after)
    assert figures["server_requests"] == 50
    assert figures["server_total_ms"] == pytest.approx(4.706, abs=1e-3)
    assert figures["server_queue_ms"] == pytest.approx(2.305, abs=1e-3)


def test_tf_serving_histograms_give_request_and_runtime_means():
    before = parse(TF_SERVING.format(n=10, total=10_000, run=2_000))
    after = parse(TF_SERVING.format(n=110, total=310_000, run=52_000))
    figures = breakdown("tf_serving", before, after)
    assert figures["server_total_ms"] == pytest.approx(3.0)
    assert figures["server_runtime_ms"] == pytest.approx(0.5)


def test_no_requests_or_no_metrics_give_no_figures():
    same = parse(TORCHSERVE.format(n=5, total=10, queue=1))
    assert breakdown("torchserve", same, same) == {}
    assert breakdown("flask_torch", same, same) == {}
    assert breakdown("tf_serving", {}, {}) == {}


def test_samples_are_read_by_prometheus_clients_parser_labels_folded():
    text = TORCHSERVE.format(n=3, total=9, queue=1) + TORCHSERVE.format(n=4, total=1, queue=1)
    totals = parse(text)
    assert totals["ts_inference_requests_total"] == 7
    with pytest.raises(ValueError):
        parse('{"code": 401, "message": "Token Authorization failed"}')


# The batching session's histograms of rows (TF Serving's batching_util.h: buckets 1, 2, 4,
# ..., 8192 and past it), cumulative as Prometheus buckets are; a bound may be printed
# either way ("2" or "2.0"). b1..b8: the batches of at most 1, 2, 4, 8 rows; rows: their sum.
TF_SERVING_BATCHES = TF_SERVING + """\
# TYPE :tensorflow:serving:batching_session:processed_batch_size histogram
:tensorflow:serving:batching_session:processed_batch_size_bucket{{le="1"}} {b1}
:tensorflow:serving:batching_session:processed_batch_size_bucket{{le="2.0"}} {b2}
:tensorflow:serving:batching_session:processed_batch_size_bucket{{le="4"}} {b4}
:tensorflow:serving:batching_session:processed_batch_size_bucket{{le="8"}} {b8}
:tensorflow:serving:batching_session:processed_batch_size_bucket{{le="16"}} {b8}
:tensorflow:serving:batching_session:processed_batch_size_bucket{{le="1.79769e+308"}} {b8}
:tensorflow:serving:batching_session:processed_batch_size_sum {rows}
:tensorflow:serving:batching_session:processed_batch_size_count {b8}
# TYPE :tensorflow:serving:batching_session:input_batch_size histogram
:tensorflow:serving:batching_session:input_batch_size_bucket{{le="1"}} {n}
:tensorflow:serving:batching_session:input_batch_size_bucket{{le="+Inf"}} {n}
:tensorflow:serving:batching_session:input_batch_size_sum {n}
:tensorflow:serving:batching_session:input_batch_size_count {n}
"""


def _tf_batches(n: int, b1: int, b2: int, b4: int, b8: int, rows: int) -> dict:
    return parse(TF_SERVING_BATCHES.format(n=n, total=1000 * n, run=100 * n, b1=b1, b2=b2,
                                           b4=b4, b8=b8, rows=rows))  # fmt: skip


def test_tf_serving_batches_are_read_from_its_histograms_of_rows() -> None:
    # Before: 10 batches of one row. Over the point: 100 requests of one row each, in 4
    # batches of 1, 6 of 2, 10 of 3-4 and 5 of 5-8 rows (4 + 12 + 36 + 48 = 100 rows).
    before = _tf_batches(n=10, b1=10, b2=10, b4=10, b8=10, rows=10)
    after = _tf_batches(n=110, b1=14, b2=20, b4=30, b8=35, rows=110)
    figures = breakdown("tf_serving", before, after)
    assert figures["server_total_ms"] == pytest.approx(1.0)
    assert figures["batch_rows_hist"] == {"1": 4, "2": 6, "3-4": 10, "5-8": 5}
    assert (figures["batch_rows"], figures["batch_passes"]) == (100, 25)
    assert (figures["request_rows"], figures["request_count"]) == (100, 100)


def test_tf_serving_without_batching_has_no_batch_figures() -> None:
    before = parse(TF_SERVING.format(n=10, total=10_000, run=2_000))
    after = parse(TF_SERVING.format(n=110, total=310_000, run=52_000))
    assert "batch_rows_hist" not in breakdown("tf_serving", before, after)


def test_buckets_are_kept_by_bound_with_other_labels_folded() -> None:
    text = """# TYPE h histogram
h_bucket{model="a",le="1"} 2
h_bucket{model="b",le="1.0"} 1
h_bucket{model="a",le="+Inf"} 5
h_bucket{model="b",le="+Inf"} 1
h_sum 9
h_count 6
"""
    totals = parse(text)
    assert buckets(totals, "h") == {1.0: 3.0, math.inf: 6.0}
    assert totals["h_count"] == 6 and buckets(totals, "missing") == {}
