"""TF Serving's own timings from its Prometheus metrics (monitoring.config enables them).

Histograms in microseconds, summed over labels: request_latency spans the whole request in
the server (parsing, batching queue, run), runtime_latency only the session run of the
signature.
"""

from __future__ import annotations

from collections.abc import Mapping

HISTOGRAMS = {
    "request": ":tensorflow:serving:request_latency",
    "runtime": ":tensorflow:serving:runtime_latency",
}


def breakdown(before: Mapping[str, float], after: Mapping[str, float]) -> dict | None:
    """Mean server-side request and model-run milliseconds per request over a point."""

    def mean_ms(histogram: str) -> float | None:
        count = after.get(f"{histogram}_count", 0.0) - before.get(f"{histogram}_count", 0.0)
        total = after.get(f"{histogram}_sum", 0.0) - before.get(f"{histogram}_sum", 0.0)
        return total / count / 1000.0 if count > 0 else None

    request_ms = mean_ms(HISTOGRAMS["request"])
    if request_ms is None:
        return None
    return {"server_total_ms": request_ms, "server_runtime_ms": mean_ms(HISTOGRAMS["runtime"])}
