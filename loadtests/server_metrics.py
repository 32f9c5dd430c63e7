"""Server-side timings from Prometheus endpoints, read before and after a load point.

The difference of cumulative counters over the point gives the server's own view
(queue time, inference time per request) to set beside the client's latency.
"""

from __future__ import annotations

import re

import requests

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)")

# TorchServe 0.12 frontend metrics (metrics_mode=prometheus), cumulative per model.
TORCHSERVE_COUNTERS = {
    "requests": "ts_inference_requests_total",
    "inference_us": "ts_inference_latency_microseconds",
    "queue_us": "ts_queue_latency_microseconds",
}


def scrape(url: str, timeout_s: float = 5.0) -> dict[str, float]:
    """Sums every sample of each metric name (labels folded); {} if unreachable."""
    try:
        text = requests.get(url, timeout=timeout_s).text
    except requests.RequestException:
        return {}
    totals: dict[str, float] = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            name, _labels, value = match.groups()
            try:
                totals[name] = totals.get(name, 0.0) + float(value)
            except ValueError:
                continue
    return totals


def torchserve_breakdown(before: dict[str, float], after: dict[str, float]) -> dict | None:
    """Mean milliseconds per request over a point: queue (waiting for a worker or for the
    batch to fill) and total (request received to response sent, queue included; the
    counter sums whole-job times, which the measured figures confirm: total > queue)."""
    delta = {
        key: after.get(name, 0.0) - before.get(name, 0.0)
        for key, name in TORCHSERVE_COUNTERS.items()
    }
    if delta["requests"] <= 0:
        return None
    return {
        "server_requests": int(delta["requests"]),
        "server_queue_ms": delta["queue_us"] / delta["requests"] / 1000.0,
        "server_total_ms": delta["inference_us"] / delta["requests"] / 1000.0,
    }


# TF Serving (monitoring.config enables Prometheus): histograms in microseconds, summed
# over labels. request_latency spans the whole request in the server (parsing, batching
# queue, run); runtime_latency only the session run of the signature.
TF_SERVING_HISTOGRAMS = {
    "request": ":tensorflow:serving:request_latency",
    "runtime": ":tensorflow:serving:runtime_latency",
}


def tf_serving_breakdown(before: dict[str, float], after: dict[str, float]) -> dict | None:
    """Mean server-side request and model-run milliseconds per request over a point."""
    def mean_ms(histogram: str) -> float | None:
        count = after.get(f"{histogram}_count", 0.0) - before.get(f"{histogram}_count", 0.0)
        total = after.get(f"{histogram}_sum", 0.0) - before.get(f"{histogram}_sum", 0.0)
        return total / count / 1000.0 if count > 0 else None

    request_ms = mean_ms(TF_SERVING_HISTOGRAMS["request"])
    if request_ms is None:
        return None
    return {"server_total_ms": request_ms,
            "server_runtime_ms": mean_ms(TF_SERVING_HISTOGRAMS["runtime"])}  # fmt: skip


def breakdown(stack: str, before: dict[str, float], after: dict[str, float]) -> dict:
    """The server's own timings for `stack` over a point ({} when it exposes none)."""
    if stack == "torchserve":
        return torchserve_breakdown(before, after) or {}
    if stack == "tf_serving":
        return tf_serving_breakdown(before, after) or {}
    return {}
