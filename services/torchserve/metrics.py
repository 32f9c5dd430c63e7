"""TorchServe 0.12's own timings from its Prometheus metrics (metrics_mode=prometheus).

The difference of cumulative counters over a load point gives the server's view (queue
time, time per request) to set beside the client's latency.
"""

from __future__ import annotations

from collections.abc import Mapping

METRICS_PATH = "/metrics"
# Frontend counters, cumulative per model, as TorchServe names them.
COUNTERS = {
    "requests": "ts_inference_requests_total",
    "inference_us": "ts_inference_latency_microseconds",
    "queue_us": "ts_queue_latency_microseconds",
}
# prometheus_client's parser (loadtests.server_metrics.parse) names a counter's sample
# <family>_total, whatever the server wrote: TorchServe declares the two latency counters
# `# TYPE ... counter` without the suffix, so they are read back as ..._total. Read as
# the server wrote them, every latency figure was 0.00 (reference runs up to 20261205-172102).
COUNTER_SUFFIX = "_total"


def counter(values: Mapping[str, float], name: str) -> float:
    """The counter `name` from parsed samples, under the name the server wrote or the one
    prometheus_client's parser gives it; 0 when absent."""
    if name in values:
        return values[name]
    return values.get(name + COUNTER_SUFFIX, 0.0)


def breakdown(before: Mapping[str, float], after: Mapping[str, float]) -> dict | None:
    """Mean milliseconds per request over a point: queue (waiting for a worker or for the
    batch to fill) and total (request received to response sent, queue included; the
    counter sums whole-job times, which the measured figures confirm: total > queue)."""
    delta = {key: counter(after, name) - counter(before, name)
             for key, name in COUNTERS.items()}  # fmt: skip
    if delta["requests"] <= 0:
        return None
    return {
        "server_requests": int(delta["requests"]),
        "server_queue_ms": delta["queue_us"] / delta["requests"] / 1000.0,
        "server_total_ms": delta["inference_us"] / delta["requests"] / 1000.0,
    }
