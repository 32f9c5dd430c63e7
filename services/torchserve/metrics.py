"""TorchServe 0.12's own timings from its Prometheus metrics (metrics_mode=prometheus).

The difference of cumulative counters over a load point gives the server's view (queue
time, time per request) to set beside the client's latency.
"""

from __future__ import annotations

from collections.abc import Mapping

METRICS_PATH = "/metrics"
# Frontend counters, cumulative per model.
COUNTERS = {
    "requests": "ts_inference_requests_total",
    "inference_us": "ts_inference_latency_microseconds",
    "queue_us": "ts_queue_latency_microseconds",
}


def breakdown(before: Mapping[str, float], after: Mapping[str, float]) -> dict | None:
    """Mean milliseconds per request over a point: queue (waiting for a worker or for the
    batch to fill) and total (request received to response sent, queue included; the
    counter sums whole-job times, which the measured figures confirm: total > queue)."""
    delta = {key: after.get(name, 0.0) - before.get(name, 0.0) for key, name in COUNTERS.items()}
    if delta["requests"] <= 0:
        return None
    return {
        "server_requests": int(delta["requests"]),
        "server_queue_ms": delta["queue_us"] / delta["requests"] / 1000.0,
        "server_total_ms": delta["inference_us"] / delta["requests"] / 1000.0,
    }
