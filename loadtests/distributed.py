"""Locust's distributed mode across machines: a master in the coordinating process's pod,
worker processes elsewhere (worker pods in a cluster), sharing no disk.

What a local run passes through the environment and the disk has to travel over
Locust's own master-worker channel instead:
- the point's settings (LOADTEST_*: route, headers, batch, rate, seed, ...) go to the
  workers in Locust's spawn message, as one custom argument (Locust sends the master's
  custom arguments with every spawn); a worker adopts them before its users start;
- each worker's per-request records come back to the master as messages when the master
  tells it the run time is over (FLUSH), with the worker's own CPU over the point and a
  closing marker; the master waits for every worker's marker, then writes one CSV per
  worker beside the point's records path (RequestRecorder's layout, so record_files()
  finds them) and a workers file
  (`<stem>.workers.json`: each worker's host, CPU and request count, and the workers
  that never reported).

The locustfile wires these to Locust's events; loadtests.runner starts the master
(`--master --expect-workers N`) and reads the workers file; loadtests.worker keeps a
worker process running in each worker pod.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import gevent
import psutil

from loadtests.records import write_records

# The custom argument carrying the settings (argparse turns its dashes into underscores).
SETTINGS_ARG = "--digitnet-settings"
SETTINGS_ATTR = "digitnet_settings"
SETTINGS_PREFIX = "LOADTEST_"
MESSAGE = "digitnet_records"
# Master -> workers at the end of the run time: stop the users and send the records. A
# headless master quits its workers without stopping them first, and a worker's records
# arriving with its quit would come after the master stopped listening.
FLUSH = "digitnet_flush"
# Rows per message: a 60 s window at thousands of requests a second is a few hundred
# thousand rows; chunks keep each message (msgpack over ZeroMQ) a few MB.
CHUNK_ROWS = 20_000
# How long the master waits, after its workers stopped, for their closing markers.
COLLECT_TIMEOUT_S = 60.0
# What Locust's master logs when its --expect-workers never all connected.
WORKERS_MISSING = "Gave up waiting for workers to connect"
# The master's ZeroMQ port (Locust's default), also the k8s Service's.
MASTER_PORT = 5557


@dataclass(frozen=True)
class Workers:
    """Where a point's Locust runs as a master for `count` worker processes elsewhere."""

    count: int
    port: int = MASTER_PORT
    # Where the master listens: every address in a pod (the workers come through a
    # Service); 127.0.0.1 for workers on this machine (tests).
    bind_host: str = "*"
    # How long a master waits for all its workers (they restart between points).
    wait_s: float = 180.0

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"a distributed run needs at least one worker, got {self.count}")

    def master_args(self) -> list[str]:
        return ["--master", "--master-bind-host", self.bind_host,
                "--master-bind-port", str(self.port), "--expect-workers", str(self.count),
                "--expect-workers-max-wait", f"{self.wait_s:g}"]  # fmt: skip


def settings_payload(environ: Mapping[str, str]) -> str:
    """The point's LOADTEST_* variables as one JSON argument for the workers."""
    return json.dumps({k: v for k, v in environ.items() if k.startswith(SETTINGS_PREFIX)},
                      sort_keys=True)  # fmt: skip


def adopt_settings(payload: str, environ: dict[str, str] | None = None) -> bool:
    """Takes the master's LOADTEST_* variables as this worker's own (a worker process
    serves one point and is then replaced; loadtests.worker). Returns False for an empty
    payload (a master that sent none: a local --processes run shares the environment).

    Raises:
        ValueError: for a payload that is not a JSON object of LOADTEST_* strings.
    """
    if not payload:
        return False
    values = json.loads(payload)
    if not isinstance(values, dict) or not all(
            isinstance(k, str) and k.startswith(SETTINGS_PREFIX) and isinstance(v, str)
            for k, v in values.items()):
        raise ValueError(f"{SETTINGS_ARG} must be a JSON object of LOADTEST_* strings")
    (os.environ if environ is None else environ).update(values)
    return True


def workers_file(records: Path) -> Path:
    return records.with_name(f"{records.stem}.workers.json")


def worker_records_file(records: Path, index: int) -> Path:
    """Where the master writes worker `index`'s rows: `<stem>.w<index>.csv`, a name
    record_files() collects like a local process's `<stem>.<pid>.csv`."""
    return records.with_name(f"{records.stem}.w{index}{records.suffix}")


class ProcessClock:
    """This process's CPU over a point: Locust's workers are single-threaded (gevent), so
    one at 100% of a core has starved its users whatever the others do."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.start()

    def start(self) -> None:
        self.wall = time.monotonic()
        self.cpu = sum(self.process.cpu_times()[:2])

    def cpu_pct(self) -> float:
        wall = time.monotonic() - self.wall
        used = sum(self.process.cpu_times()[:2]) - self.cpu
        return 100.0 * used / wall if wall > 0 else 0.0


def forward(send: Callable[[str, dict], None], index: int, rows: list, cpu_pct: float,
            chunk: int = CHUNK_ROWS) -> None:
    """A worker's records to the master: the rows in chunks, then the closing marker with
    the count sent, the worker's CPU and its host (pod name in a cluster)."""
    for start in range(0, len(rows), chunk):
        send(MESSAGE, {"index": index, "rows": [list(r) for r in rows[start:start + chunk]]})
    send(MESSAGE, {"index": index, "done": True, "rows_total": len(rows),
                   "cpu_pct": round(cpu_pct, 1), "host": socket.gethostname(),
                   "pid": os.getpid()})  # fmt: skip


class RecordCollector:
    """The master's side: rows per worker index as they arrive, each worker's marker, and
    the files written once every worker has closed (or the wait ran out)."""

    def __init__(self) -> None:
        self.rows: dict[int, list] = {}
        self.done: dict[int, dict] = {}

    def on_message(self, environment=None, msg=None, **_kwargs) -> None:
        data = msg.data
        index = int(data["index"])
        if data.get("done"):
            self.done[index] = data
        else:
            self.rows.setdefault(index, []).extend(data["rows"])

    def wait(self, expected: int, timeout_s: float = COLLECT_TIMEOUT_S,
             sleep: Callable[[float], None] = gevent.sleep,
             lost: Callable[[], set[int]] = set) -> bool:
        """Waits (cooperatively: the master's message loop keeps running) until `expected`
        workers have closed, or every one still open is `lost` (Locust's heartbeats have
        marked it missing: a dead worker sends nothing more). Returns whether they all
        closed."""
        deadline = time.monotonic() + timeout_s
        while len(self.done) < expected and time.monotonic() < deadline:
            open_ = set(range(expected)) - set(self.done)
            if open_ <= lost():
                break
            sleep(0.1)
        return len(self.done) >= expected

    def write(self, records: Path, expected: int) -> dict:
        """One CSV per worker beside `records`, and the workers file; returns the latter's
        content."""
        records.parent.mkdir(parents=True, exist_ok=True)
        workers = []
        for index in sorted(set(self.rows) | set(self.done)):
            rows = self.rows.get(index, [])
            write_records(worker_records_file(records, index), rows)
            marker = self.done.get(index, {})
            workers.append({
                "index": index,
                "host": marker.get("host"),
                "pid": marker.get("pid"),
                "cpu_pct": marker.get("cpu_pct"),
                "requests": len(rows),
                # Rows lost in transit: the marker's count and what arrived differ.
                "complete": bool(marker) and marker.get("rows_total") == len(rows),
            })
        summary = {
            "expected": expected,
            "workers": workers,
            "missing": [i for i in range(expected) if i not in self.done],
        }
        workers_file(records).write_text(json.dumps(summary, indent=2) + "\n")
        return summary


def read_workers(records: Path) -> dict | None:
    """The workers file of a distributed point, None when there is none."""
    path = workers_file(records)
    return json.loads(path.read_text()) if path.exists() else None


def workers_problem(summary: dict | None) -> str | None:
    """Why a distributed point's records cannot be trusted, None when every worker
    reported all its rows."""
    if summary is None:
        return "the master wrote no workers file (it did not reach the end of the point)"
    missing = summary.get("missing") or []
    if missing:
        return (f"worker(s) {missing} of {summary['expected']} sent no records (a worker pod "
                "lost mid-point, or its process crashed)")
    partial = [w["index"] for w in summary["workers"] if not w["complete"]]
    if partial:
        return f"worker(s) {partial} sent fewer records than they made"
    return None
