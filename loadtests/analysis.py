"""Figures from per-request records: percentiles, throughput, knee, SLO capacity.

Pure functions over numpy arrays and plain dicts, so the report can be rebuilt from
saved raw data and tested without a server.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# A generator process above this share of its cores was busy enough to delay requests:
# its figures measure the generator, not the server.
GENERATOR_SATURATED_PCT = 90.0
# A failed request's error text when the server answered with a status other than 200.
HTTP_ERROR = re.compile(r"(?:HTTP|answered) (\d{3})\b")
# Statuses that say the client's credential was refused, not that the server failed.
KEY_REJECTED = frozenset({401, 403})
# TorchServe 0.12 refuses a wrong or expired key with 400 and this text.
TORCHSERVE_KEY_REFUSED = "token authorization failed"
# Requests that start in the last half second overlap Locust's own stop sequence, which
# holds them for ~50 ms: cut, like the warm-up, so the generator's shutdown is not
# reported as the server's tail latency.
COOLDOWN_S = 0.5
# The knee: the first level after which more load buys less than this throughput gain.
KNEE_MIN_GAIN = 0.10
# Open loop: a point whose send lateness has a p99 above this share of the p99 objective
# measured the generator falling behind its schedule, not the server: a late send hides
# the queueing it should have caused. Send lateness is the generator's own part: actual
# send minus the later of the scheduled start and the moment a user was free. A slot that
# fell due while all users were busy waited for the server (pool wait), which is queueing
# in front of the server and counts in latency, not against the generator.
LATENESS_SHARE_OF_SLO = 0.10


@dataclass(frozen=True)
class Records:
    start_s: np.ndarray
    latency_ms: np.ndarray
    service_ms: np.ndarray
    ok: np.ndarray
    server_ms: np.ndarray  # NaN where the server sent no timing
    pool_wait_ms: np.ndarray  # open loop: a due slot's wait for a free user; else 0
    batch_requests: np.ndarray  # requests in the reply's forward pass; NaN if not said
    # The HTTP status a failed request got (its error starts "HTTP <status>"), else 0.
    status: np.ndarray
    # Whether the server refused the request's credential (key_refused).
    key_refused: np.ndarray


def read_records(paths: Iterable[Path]) -> Records:
    """Concatenates the per-process CSV files of one load point."""
    rows: list[list[str]] = []
    for path in paths:
        with open(path, newline="") as handle:
            reader = csv.reader(handle)
            next(reader, None)
            rows.extend(reader)
    if not rows:
        empty = np.zeros(0)
        return Records(empty, empty, empty, empty.astype(bool), empty, empty, empty,
                       empty.astype(np.int64), empty.astype(bool))
    table = list(zip(*rows, strict=False))
    # Files written before pool_wait_ms existed have six columns: no wait recorded.
    pool_wait = table[6] if len(table) > 6 else ("",) * len(rows)
    batch_requests = table[7] if len(table) > 7 else ("",) * len(rows)
    errors = table[5]
    statuses = [failure_status(e) for e in errors]
    return Records(
        start_s=np.asarray(table[0], dtype=np.float64),
        latency_ms=np.asarray(table[1], dtype=np.float64),
        service_ms=np.asarray(table[2], dtype=np.float64),
        ok=np.asarray(table[3], dtype=np.int64).astype(bool),
        server_ms=np.asarray([float(v) if v else np.nan for v in table[4]], dtype=np.float64),
        pool_wait_ms=np.asarray([float(v) if v else 0.0 for v in pool_wait], dtype=np.float64),
        batch_requests=np.asarray([float(v) if v else np.nan for v in batch_requests],
                                  dtype=np.float64),  # fmt: skip
        status=np.asarray(statuses, dtype=np.int64),
        key_refused=np.asarray([key_refused(e, code) for e, code in zip(errors, statuses,
                                                                        strict=True)],
                               dtype=bool),
    )


def key_refused(error: str, status: int | None = None) -> bool:
    """Whether a failed request's error says its credential was refused: 401 or 403, or
    TorchServe 0.12's answer to a wrong or expired key (400, "Token Authorization failed").
    `status`: the error's failure_status, when already read."""
    code = failure_status(error) if status is None else status
    return code in KEY_REJECTED or TORCHSERVE_KEY_REFUSED in error.lower()


def failure_status(error: str) -> int:
    """The HTTP status of a failed request's error ("HTTP 401: ...", the locustfile's
    failure text), 0 for any other error or none."""
    match = HTTP_ERROR.search(error)
    return int(match.group(1)) if match else 0


def measured_window(
    records: Records,
    warmup_s: float,
    cooldown_s: float = COOLDOWN_S,
    duration_s: float | None = None,
) -> tuple[Records, float]:
    """Keeps requests that started after warm-up and before the run's planned end (and
    the cool-down); returns them and the window length in seconds.

    The window ends `duration_s` after the warm-up, when Locust's run time is up, and at
    the latest `cooldown_s` before the last request start. After the run time, Locust's
    stop sequence gives open-loop users up to --stop-timeout to finish the sleep and the
    request they are in, and its own work stalls their schedule: requests sent then are
    late by up to a tenth of a second, which the generator, not the server, caused.
    """
    if len(records.start_s) == 0:
        return records, 0.0
    begin = records.start_s.min() + warmup_s
    end = records.start_s.max() - cooldown_s
    if duration_s is not None:
        end = min(end, begin + duration_s)
    keep = (records.start_s >= begin) & (records.start_s < end)
    kept = Records(*(getattr(records, f)[keep] for f in Records.__dataclass_fields__))
    return kept, max(0.0, float(end - begin)) if len(kept.start_s) else 0.0


def point_stats(
    records: Records, warmup_s: float, batch_size: int, duration_s: float | None = None
) -> dict:
    """Throughput and latency percentiles of one load point, after warm-up and within the
    planned `duration_s` (see measured_window)."""
    kept, window = measured_window(records, warmup_s, duration_s=duration_s)
    count = len(kept.latency_ms)
    failures = int((~kept.ok).sum())
    if count == 0 or window <= 0:
        return {"requests": count, "failures": failures, "rps": 0.0, "window_s": window}
    lat = kept.latency_ms
    server = kept.server_ms[~np.isnan(kept.server_ms)]
    # Latency counts from the scheduled start, service from the actual send: their
    # difference is how late the request went out (0 in a closed loop), of which the pool
    # wait was the server's (all users busy) and the rest the generator's own lateness.
    late = np.clip(kept.latency_ms - kept.service_ms, 0.0, None)
    pool_wait = np.minimum(kept.pool_wait_ms, late)
    lateness = late - pool_wait
    successes = count - failures
    statuses = Counter(int(v) for v in kept.status[(~kept.ok) & (kept.status > 0)])
    return {
        "requests": count,
        "failures": failures,
        "failure_statuses": {str(code): n for code, n in sorted(statuses.items())},
        # The server refused the credential (TorchServe's key rotates when it restarts).
        "key_rejected": int((~kept.ok & kept.key_refused).sum()),
        "window_s": round(window, 3),
        "rps": successes / window,
        "images_per_s": successes * batch_size / window,
        "p50_ms": float(np.percentile(lat, 50)),
        "p90_ms": float(np.percentile(lat, 90)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
        "max_ms": float(lat.max()),
        "mean_ms": float(lat.mean()),
        "service_p50_ms": float(np.percentile(kept.service_ms, 50)),
        "server_p50_ms": float(np.percentile(server, 50)) if len(server) else None,
        "lateness_p50_ms": float(np.percentile(lateness, 50)),
        "lateness_p99_ms": float(np.percentile(lateness, 99)),
        "pool_wait_p99_ms": float(np.percentile(pool_wait, 99)),
        "pool_wait_share": float((pool_wait > 0).mean()),
        **observed_batches(kept.batch_requests[kept.ok]),
    }


def observed_batches(batch_requests: np.ndarray) -> dict:
    """The forward passes the server formed, from each answered request's count of the
    requests it shared its pass with: k requests each saying k are one pass of k (at the
    window's edges a pass may be cut, so counts are rounded). Empty when the server says
    nothing (TF Serving)."""
    said = batch_requests[~np.isnan(batch_requests)]
    if len(said) == 0:
        return {}
    sizes, requests = np.unique(said.astype(np.int64), return_counts=True)
    return passes_from_counts(dict(zip(sizes.tolist(), requests.tolist(), strict=True)))


def passes_from_counts(replies: Mapping[int, int]) -> dict:
    """batch_summary of the passes behind `replies` (requests sharing a pass, as the
    replies named it -> replies naming it): k replies naming k are one pass of k."""
    return batch_summary({str(k): max(1, round(n / k)) for k, n in replies.items()})


def batch_summary(hist: Mapping[str, int]) -> dict:
    """batch_hist (pass size -> passes, by size) and batch_mean (requests per pass)."""
    hist = dict(sorted(hist.items(), key=lambda item: int(item[0])))
    total = sum(hist.values())
    return {"batch_hist": hist,
            "batch_mean": sum(int(k) * n for k, n in hist.items()) / total}  # fmt: skip


def generator_fell_behind(point: dict, slo_p99_ms: float) -> bool:
    """Open loop: the send lateness p99 exceeds LATENESS_SHARE_OF_SLO of the objective."""
    lateness = point.get("lateness_p99_ms")
    return (
        point.get("mode") == "open"
        and lateness is not None
        and lateness > LATENESS_SHARE_OF_SLO * slo_p99_ms
    )


def aggregate_repeats(points: Sequence[dict]) -> dict:
    """Median of each figure over repeats, with the min-max spread of rps and p99."""
    keys = ("rps", "images_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms")
    merged = dict(points[0])
    for key in keys:
        values = [p[key] for p in points if p.get(key) is not None]
        if values:
            merged[key] = float(np.median(values))
            merged[f"{key}_min"] = float(min(values))
            merged[f"{key}_max"] = float(max(values))
    merged["requests"] = sum(p.get("requests", 0) for p in points)
    merged["failures"] = sum(p.get("failures", 0) for p in points)
    merged["key_rejected"] = sum(p.get("key_rejected", 0) for p in points)
    merged["repeats"] = len(points)
    merged["generator_saturated"] = any(p.get("generator_saturated") for p in points)
    for key in ("generator_cpu_pct", "generator_busiest_process_cpu_pct", "server_cpu_pct",
                "server_rss_mb"):
        values = [p[key] for p in points if p.get(key) is not None]
        if values:
            merged[key] = float(np.median(values))
    merged.update(merge_batches(points))
    return merged


# What a server that counts its batches in rows (TF Serving's batching metrics) gives
# beside its histogram of rows per batch: sums over the point, added up over windows.
ROW_SUMS = ("batch_rows", "batch_passes", "request_rows", "request_count")


def merge_batches(points: Sequence[dict]) -> dict:
    """The windows' observed forward passes added up ({} when no window has them): from
    the replies' counts (batch_hist), or from a server's histogram of rows per batch
    (batch_rows_hist, with ROW_SUMS)."""
    hist: dict[str, int] = {}
    rows: dict[str, int] = {}
    sums = dict.fromkeys(ROW_SUMS, 0.0)
    for point in points:
        for size, passes in (point.get("batch_hist") or {}).items():
            hist[size] = hist.get(size, 0) + passes
        if point.get("batch_rows_hist"):
            for label, passes in point["batch_rows_hist"].items():
                rows[label] = rows.get(label, 0) + passes
            for key in ROW_SUMS:
                sums[key] += point[key]
    if hist:
        return batch_summary(hist)
    return rows_summary(rows, sums) if rows else {}


def rows_summary(hist: Mapping[str, int], sums: Mapping[str, float]) -> dict:
    """batch_rows_hist in increasing rows, the sums, and batch_mean: requests per batch,
    the mean rows per batch over the mean rows per request."""
    ordered = dict(sorted(hist.items(), key=lambda item: int(item[0].split("-")[0].rstrip("+"))))
    per_batch = sums["batch_rows"] / sums["batch_passes"]
    per_request = sums["request_rows"] / sums["request_count"]
    return {"batch_rows_hist": ordered, **sums, "batch_mean": per_batch / per_request}


def knee(levels: Sequence[float], rps: Sequence[float]) -> int | None:
    """Index of the knee of a closed-loop curve: the first level after which raising the
    load gains less than KNEE_MIN_GAIN in throughput (latency then only queues)."""
    for i in range(len(rps) - 1):
        if rps[i] > 0 and (rps[i + 1] - rps[i]) / rps[i] < KNEE_MIN_GAIN * (
            (levels[i + 1] - levels[i]) / levels[i]
        ):
            return i
    return None


def max_rps_under_slo(points: Sequence[dict], slo_p99_ms: float) -> dict | None:
    """The highest-throughput point whose p99 met the objective, with no failures and
    an unsaturated generator."""
    eligible = [
        p
        for p in points
        if p.get("p99_ms") is not None
        and p["p99_ms"] <= slo_p99_ms
        and p.get("failures", 0) == 0
        and not p.get("generator_saturated")
    ]
    return max(eligible, key=lambda p: p["rps"], default=None)


def series(records: Sequence[dict], mode: str, batch: int) -> dict[str, list[dict]]:
    """Records of one mode and batch size, grouped by "stack/protocol/device"."""
    out: dict[str, list[dict]] = {}
    for r in records:
        if r["mode"] == mode and r["batch_size"] == batch:
            out.setdefault(f"{r['stack']}/{r['protocol']}/{r['device']}", []).append(r)
    return out
