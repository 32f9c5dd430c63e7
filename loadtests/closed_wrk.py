"""Closed-loop wrk levels against one running stack, and the capacity they show under the
latency objective: the shared measurement of the model-size and batching-policy sweeps.

A closed loop's capacity under the objective (the most req/s of a level whose p99 meets
it) is a lower bound of `make bench`'s open-loop SLO capacity: a closed loop waits for each
reply before sending the next request, so it never queues more than its connections.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from digitnet.wire import JSON_WIRE, WireCodec
from harness.lifecycle import RunningStack
from loadtests import analysis, wrk
from loadtests.runner import one_image_body, targets_of
from loadtests.server_metrics import scrape
from services.stack import CPU, REST

SLO_P99_MS = 50.0
# How the sweeps' reports name the p99 they check (loadtests/wrk.py says why).
WRK_P99_NOTE = ("wrk's p99, which wrk corrects for coordinated omission: a few stalled "
                "replies weigh as the requests an open loop would have sent meanwhile")


def capacity_under_objective(levels: Sequence[Mapping], slo_p99_ms: float) -> dict | None:
    """The level with the most goodput whose p99 meets the objective without errors, or
    None if none does.

    Args:
        levels: {"connections", "p99_ms", "rps", "errors"} per wrk level.
    """
    meeting = [lv for lv in levels if lv["p99_ms"] <= slo_p99_ms and not lv["errors"]]
    return max(meeting, key=lambda lv: lv["rps"], default=None)


def capacity_below(record: Mapping) -> float | None:
    """The rate a record's capacity lies below where no level met the objective: a stack
    whose p99 misses it already at one back-to-back connection has a capacity below that
    level's req/s, which only an open-loop search (`make bench`) can find. None where a
    level met it or the first level was not one connection."""
    if record.get("capacity_rps") is not None:
        return None
    first = (record.get("levels") or [{}])[0]
    return first.get("rps") if first.get("connections") == 1 else None


def capacity_cell(record: Mapping) -> str:
    """A record's capacity for a report table: "req/s (connections)", or why there is none
    (capacity_below)."""
    if record["capacity_rps"] is not None:
        return f"{record['capacity_rps']:.0f} ({record['capacity_connections']})"
    below = capacity_below(record)
    if below is not None:
        return (f"none meets the objective: below one connection's {below:.0f} req/s "
                "(`make bench` searches it open-loop)")
    return "none meets the objective"


def passes_per_level(levels: Sequence[Mapping]) -> str:
    """Requests per forward pass at each level (level_batches), "1.0 / 4.0 / 8.0", – where
    the server said nothing."""
    return " / ".join("–" if lv.get("batch_mean") is None else f"{lv['batch_mean']:.1f}"
                      for lv in levels)  # fmt: skip


def formed(level: Mapping) -> str:
    """The passes a level formed, `size×passes` (`rows rows×batches` where the server
    counts rows), or – when the server said nothing."""
    if level.get("batch_hist"):
        return ", ".join(f"{size}×{n}" for size, n in level["batch_hist"].items())
    if level.get("batch_rows_hist"):
        return ", ".join(f"{rows} rows×{n}" for rows, n in level["batch_rows_hist"].items())
    return "–"


def rest_request(running: RunningStack, codec: WireCodec = JSON_WIRE
                 ) -> tuple[str, bytes, dict[str, str]]:  # fmt: skip
    """(URL, batch-1 body of a real digit in `codec`, headers) of the stack's REST predict
    path."""
    target = next(t for t in targets_of(running, CPU) if t.protocol == REST)
    headers = {"Content-Type": codec.content_type, **target.headers}
    if codec is JSON_WIRE:
        return target.url, one_image_body(running.paths), headers
    from digitnet.data import load_split

    image = load_split(running.paths.spec).test_images[:1]
    return target.url, codec.encode_request(image), headers


def wrk_levels(running: RunningStack, connections: Sequence[int], runs: int, duration_s: int,
               cores: Sequence[int], script_dir: Path, codec: WireCodec = JSON_WIRE,
               batches: bool = False) -> list[dict]:  # fmt: skip
    """Per level: the median p50/p99/req/s of `runs` wrk runs after a discarded second,
    each request a batch-1 body in `codec`; with `batches`, the forward passes the server
    formed at that level too (level_batches)."""
    url, body, headers = rest_request(running, codec)
    levels = []
    for count in connections:
        wrk.run_wrk(url, body, headers, count, 1, cores=cores, script_dir=script_dir)
        got = [wrk.run_wrk(url, body, headers, count, duration_s, cores=cores,
                           script_dir=script_dir).to_json() for _ in range(runs)]  # fmt: skip
        levels.append({
            "connections": count,
            "p50_ms": statistics.median(r["p50_ms"] for r in got),
            "p99_ms": statistics.median(r["p99_ms"] for r in got),
            "rps": statistics.median(r["goodput_rps"] for r in got),
            "errors": sum(r["status_errors"] + r["socket_errors"] for r in got),
            "p50_ms_runs": [r["p50_ms"] for r in got],
            **(level_batches(running, (url, body, headers), count, duration_s, cores,
                             script_dir) if batches else {}),
        })  # fmt: skip
    return levels


def level_batches(running: RunningStack, request: tuple[str, bytes, Mapping[str, str]],
                  connections: int, duration_s: int, cores: Sequence[int],
                  script_dir: Path) -> dict:  # fmt: skip
    """The forward passes the server formed at one level (analysis.batch_summary's fields,
    or rows_summary's): one more wrk run, in timings mode (its reply callback costs wrk,
    so it is never a reported run), counting the passes its replies name
    (digitnet.codec.BATCH_HEADER), with the server's own metrics read around it for a
    stack whose replies name none (TF Serving counts its batches in rows). {} when the
    server says nothing."""
    metrics_url = running.stack.metrics_url(running.server)
    before = scrape(metrics_url) if metrics_url else {}
    out = wrk.timings_run(*request, connections, duration_s, cores, script_dir)
    counts = wrk.parse_batches(out)
    if counts:
        return analysis.passes_from_counts(counts)
    after = scrape(metrics_url) if metrics_url else {}
    return analysis.merge_batches([running.stack.server_timings(before, after)])
