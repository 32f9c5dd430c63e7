"""Keeps every request Locust makes, so percentiles come from raw latencies (Locust's own
percentiles are rounded to 1 ms below 100 ms) and warm-up can be cut out afterwards."""

from __future__ import annotations

import csv
import os
from pathlib import Path

# pool_wait_ms (open loop: how long a due slot waited for a free user) and batch_requests
# (the requests that shared the reply's forward pass, from the server's BATCH_HEADER) come
# last, so files written before they existed still read.
COLUMNS = ("start_s", "latency_ms", "service_ms", "ok", "server_ms", "error", "pool_wait_ms",
           "batch_requests")


class RequestRecorder:
    """A Locust `request` event listener that buffers rows and writes them at test stop.

    latency_ms is what a client waiting for the answer saw: in open-loop runs it counts
    from the request's scheduled start, not from when a free user finally sent it.
    """

    def __init__(self, path: Path | None, processes: int = 1) -> None:
        self.path = path
        self.processes = processes
        self.rows: list[tuple] = []

    def file_for(self, pid: int) -> Path:
        """Where one process writes: `path` itself, or with several generator processes
        (Locust's --processes) one file per process beside it (`<stem>.<pid>.csv`);
        record_files() finds them all."""
        if self.processes <= 1 or self.path is None:
            return self.path
        return self.path.with_name(f"{self.path.stem}.{pid}{self.path.suffix}")

    def on_request(
        self,
        request_type,
        name,
        response_time,
        response_length,
        exception=None,
        context=None,
        start_time=None,
        **_kwargs,
    ) -> None:
        if self.path is None or start_time is None:
            return
        context = context or {}
        scheduled = context.get("scheduled_s")
        latency = response_time
        if scheduled is not None:
            latency = (start_time - scheduled) * 1000.0 + response_time
        error = "" if exception is None else str(exception).replace("\n", " ")[:200]
        self.rows.append(
            (
                f"{start_time:.6f}",
                f"{latency:.3f}",
                f"{response_time:.3f}",
                int(exception is None),
                context.get("server_ms", ""),
                error,
                "" if context.get("pool_wait_ms") is None else f"{context['pool_wait_ms']:.3f}",
                context.get("batch_requests", ""),
            )
        )

    def flush(self, **_kwargs) -> None:
        if self.path is None:
            return
        write_records(self.file_for(os.getpid()), self.rows)
        self.rows = []


def write_records(path: Path, rows: list) -> None:
    """A records CSV: the COLUMNS header, then `rows` (a process's own, or those a
    distributed worker sent its master, loadtests/distributed.py)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(rows)


def record_files(path: Path) -> list[Path]:
    """Every file a point's processes wrote for `path` (see RequestRecorder.file_for)."""
    files = [path] if path.exists() else []
    return files + sorted(path.parent.glob(f"{path.stem}.*{path.suffix}"))
