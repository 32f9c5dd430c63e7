"""Prometheus endpoints read before and after a load point.

The difference of cumulative counters over the point gives the server's own view (queue
time, inference time per request) beside the client's latency; which counters mean what
is the stack plugin's business (`server_timings`).
"""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families

from services.metric_buckets import BUCKET_SUFFIX, bucket_key


def scrape(url: str, timeout_s: float = 5.0) -> dict[str, float]:
    """Sums every sample of each metric name (labels folded); {} if unreachable."""
    try:
        response = requests.get(url, timeout=timeout_s)
    except requests.RequestException:
        return {}
    # An error page (a stack still starting, an auth failure) carries no metrics.
    return parse(response.text) if response.status_code == 200 else {}


def parse(text: str) -> dict[str, float]:
    """Sums every sample of each metric name in Prometheus text (labels folded), read
    with prometheus_client's own parser (histogram _bucket/_sum/_count samples keep
    their names; a counter's sample is named <family>_total whatever the server wrote,
    so a counter declared without the suffix is read back with it: see
    services/torchserve/metrics.py's counter()). A histogram's buckets are kept apart
    too, each under bucket_key(name, its upper bound), other labels folded:
    services.metric_buckets.buckets() reads them back.

    Raises:
        ValueError: text that is not the Prometheus exposition format.
    """
    totals: dict[str, float] = {}

    def add(name: str, value: float) -> None:
        totals[name] = totals.get(name, 0.0) + value

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            add(sample.name, sample.value)
            if sample.name.endswith(BUCKET_SUFFIX) and "le" in sample.labels:
                add(bucket_key(sample.name, float(sample.labels["le"])), sample.value)
    return totals

