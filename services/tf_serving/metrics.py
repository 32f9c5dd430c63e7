"""TF Serving's own timings and batches from its Prometheus metrics (monitoring.config
enables them).

Latency histograms in microseconds, summed over labels: request_latency spans the whole
request in the server (parsing, batching queue, run), runtime_latency only the session run
of the signature.

With --enable_batching, its batching session keeps two histograms of rows
(tensorflow_serving/batching/batching_util.h, buckets 1, 2, 4, ... 8192): input_batch_size,
the rows of each request it takes in, and processed_batch_size, the rows of each batch it
runs (padded to allowed_batch_sizes, which we never set, so the rows it formed). Their
buckets are the batches it formed, in ranges of rows; with their sums, the requests per
batch. They count every model the server batches: the load runs send traffic to one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from services.metric_buckets import buckets

HISTOGRAMS = {
    "request": ":tensorflow:serving:request_latency",
    "runtime": ":tensorflow:serving:runtime_latency",
}
PASS_ROWS = ":tensorflow:serving:batching_session:processed_batch_size"
REQUEST_ROWS = ":tensorflow:serving:batching_session:input_batch_size"


def _delta(before: Mapping[str, float], after: Mapping[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def breakdown(before: Mapping[str, float], after: Mapping[str, float]) -> dict | None:
    """Mean server-side request and model-run milliseconds per request over a point, and
    the batches it formed (batches()); None when it answered no request."""

    def mean_ms(histogram: str) -> float | None:
        count = _delta(before, after, f"{histogram}_count")
        total = _delta(before, after, f"{histogram}_sum")
        return total / count / 1000.0 if count > 0 else None

    request_ms = mean_ms(HISTOGRAMS["request"])
    if request_ms is None:
        return None
    return {"server_total_ms": request_ms, "server_runtime_ms": mean_ms(HISTOGRAMS["runtime"]),
            **batches(before, after)}  # fmt: skip


# A bound past every row count: the last bucket (TF's DBL_MAX, or +Inf) is open-ended.
OPEN_BOUND = 2.0**53


def rows_label(low: float, high: float) -> str:
    """The whole row counts a bucket (low, high] holds: "1", "3-4", "8193+"."""
    first = math.floor(low) + 1
    if high >= OPEN_BOUND:
        return f"{first}+"
    last = math.floor(high)
    return str(last) if first == last else f"{first}-{last}"


def batches(before: Mapping[str, float], after: Mapping[str, float]) -> dict:
    """The batches the batching session ran over a point: batch_rows_hist (rows range ->
    batches, empty ranges left out, in increasing order) and the sums that give requests
    per batch (loadtests.analysis.merge_batches); {} when it ran none (batching off)."""
    passes = _delta(before, after, f"{PASS_ROWS}_count")
    requests = _delta(before, after, f"{REQUEST_ROWS}_count")
    if passes <= 0 or requests <= 0:
        return {}
    start, end = buckets(before, PASS_ROWS), buckets(after, PASS_ROWS)
    hist, below, low = {}, 0.0, 0.0
    for bound, cumulative in end.items():
        got = (cumulative - start.get(bound, 0.0)) - below
        below += got
        if got > 0:
            hist[rows_label(low, bound)] = round(got)
        low = bound
    return {
        "batch_rows_hist": hist,
        "batch_rows": _delta(before, after, f"{PASS_ROWS}_sum"),
        "batch_passes": passes,
        "request_rows": _delta(before, after, f"{REQUEST_ROWS}_sum"),
        "request_count": requests,
    }
