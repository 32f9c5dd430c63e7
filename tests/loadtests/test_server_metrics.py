"""Server-side timings from Prometheus text: counter and histogram deltas over a point, as
each stack plugin reads its own metrics."""

from __future__ import annotations

import pytest

from loadtests.server_metrics import parse
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
