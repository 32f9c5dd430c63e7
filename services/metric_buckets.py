"""A histogram's buckets in a scrape: how loadtests.server_metrics.parse keeps them apart
(its other samples are summed by name, labels folded) and how a stack plugin's
server_timings reads them back. Here, not in loadtests, because the plugins read them.
"""

from __future__ import annotations

from collections.abc import Mapping

BUCKET_SUFFIX = "_bucket"


def bucket_key(name: str, bound: float) -> str:
    """Where a scrape keeps one bucket of histogram sample `name` (a _bucket sample),
    whatever digits the server printed its bound with."""
    return f'{name}{{le="{bound:g}"}}'


def buckets(totals: Mapping[str, float], histogram: str) -> dict[float, float]:
    """The cumulative bucket counts of `histogram` (its name without _bucket) in a scrape,
    by upper bound in increasing order (inf last); {} when it has none."""
    prefix = f'{histogram}{BUCKET_SUFFIX}{{le="'
    found = {float(key[len(prefix):-2]): count for key, count in totals.items()
             if key.startswith(prefix)}  # fmt: skip
    return dict(sorted(found.items()))
