"""Prometheus endpoints read before and after a load point.

The difference of cumulative counters over the point gives the server's own view (queue
time, inference time per request) beside the client's latency; which counters mean what
is the stack plugin's business (`server_timings`).
"""

from __future__ import annotations

import re

import requests

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)")

def scrape(url: str, timeout_s: float = 5.0) -> dict[str, float]:
    """Sums every sample of each metric name (labels folded); {} if unreachable."""
    try:
        text = requests.get(url, timeout=timeout_s).text
    except requests.RequestException:
        return {}
    return parse(text)


def parse(text: str) -> dict[str, float]:
    """Sums every sample of each metric name in Prometheus text (labels folded)."""
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
