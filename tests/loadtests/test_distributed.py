"""Locust's distributed mode (loadtests/distributed.py, loadtests/worker.py): a master
started by run_point, worker processes kept by the supervisor loop, settings sent with
the spawn, records sent back as messages. Real Locust processes on 127.0.0.1, against a
real Flask server."""

from __future__ import annotations

import csv
import json
import math
import threading
import time
from contextlib import ExitStack
from types import SimpleNamespace

import psutil
import pytest

from harness.lifecycle import start_stack
from loadtests import distributed, runner
from loadtests.analysis import read_records
from loadtests.profiles import PROFILES
from loadtests.records import COLUMNS, record_files
from loadtests.settings import Mode
from services.process import LOOPBACK, free_port, usable_cores
from tests.loadtests.locust_workers import supervised_workers

SMOKE = PROFILES["smoke"]


# --- the pieces, without Locust -----------------------------------------------------------


def test_settings_travel_as_one_argument_and_only_loadtest_variables():
    environ = {"LOADTEST_PATH": "/predict", "LOADTEST_HEADERS": '{"a": "b"}', "HOME": "/root"}
    payload = distributed.settings_payload(environ)
    assert json.loads(payload) == {"LOADTEST_PATH": "/predict", "LOADTEST_HEADERS": '{"a": "b"}'}
    mine: dict[str, str] = {"LOADTEST_PATH": "/old"}
    assert distributed.adopt_settings(payload, mine)
    assert mine["LOADTEST_PATH"] == "/predict"
    assert not distributed.adopt_settings("", mine)
    with pytest.raises(ValueError):
        distributed.adopt_settings(json.dumps({"PATH": "/bin"}), {})
    with pytest.raises(ValueError):
        distributed.adopt_settings(json.dumps(["LOADTEST_X"]), {})


def test_forwarded_records_are_collected_per_worker_and_files_say_who_reported(tmp_path):
    collector = distributed.RecordCollector()

    def deliver(_type, data):
        # As Locust's message carries it: msgpack turns tuples into lists.
        collector.on_message(msg=SimpleNamespace(data=json.loads(json.dumps(data))))

    row = ("1.0", "2.0", "2.0", 1, "", "", "", "")
    distributed.forward(deliver, 0, [row] * 5, 42.0, chunk=2)  # three chunks and a marker
    distributed.forward(deliver, 1, [], 3.0)
    assert collector.wait(2, timeout_s=0.1, sleep=lambda _s: None)
    records = tmp_path / "point.csv"
    summary = collector.write(records, expected=3)
    assert summary["missing"] == [2]
    by_index = {w["index"]: w for w in summary["workers"]}
    assert by_index[0]["requests"] == 5 and by_index[0]["complete"]
    assert by_index[0]["cpu_pct"] == 42.0
    assert by_index[1]["requests"] == 0 and by_index[1]["complete"]
    assert [p.name for p in record_files(records)] == ["point.w0.csv", "point.w1.csv"]
    with open(tmp_path / "point.w0.csv") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == COLUMNS and len(rows) == 6
    assert "sent no records" in distributed.workers_problem(summary)
    assert distributed.workers_problem(distributed.read_workers(tmp_path / "none.csv"))


def test_a_worker_whose_rows_went_missing_is_named():
    collector = distributed.RecordCollector()
    collector.on_message(msg=SimpleNamespace(data={"index": 0, "rows": [["1"]]}))
    collector.on_message(msg=SimpleNamespace(data={"index": 0, "done": True, "rows_total": 2}))
    summary = {"expected": 1, "missing": [],
               "workers": [{"index": 0, "complete": False}]}  # fmt: skip
    assert "fewer records" in distributed.workers_problem(summary)


def test_a_master_needs_a_worker():
    with pytest.raises(ValueError):
        distributed.Workers(0)
    args = distributed.Workers(3, port=6000, bind_host=LOOPBACK).master_args()
    assert args[:6] == ["--master", "--master-bind-host", LOOPBACK, "--master-bind-port",
                        "6000", "--expect-workers"]  # fmt: skip


# --- real Locust ---------------------------------------------------------------------------


@pytest.mark.integration
def test_points_run_on_two_workers_with_their_records_and_cpu(artifacts, tmp_path):
    server_cores, generator_cores = runner.split_cores(usable_cores())
    raw = tmp_path / "raw"
    raw.mkdir()
    port = free_port()
    workers = distributed.Workers(2, port=port, bind_host=LOOPBACK, wait_s=60)
    with ExitStack() as exits:
        running = start_stack("flask_torch", artifacts, tmp_path / "server", exits,
                              cores=server_cores)
        (target,) = runner.targets_of(running)
        loops = exits.enter_context(supervised_workers(2, port, tmp_path))
        closed = runner.run_point(target, runner.Load(Mode.CLOSED, 1, 4), SMOKE, artifacts,
                                  raw, generator_cores, repeat=0, workers=workers)
        # The workers exited with the first master; the loops start fresh ones for the
        # next point, which also checks that the settings are the new point's.
        opened = runner.run_point(target, runner.Load(Mode.OPEN, 2, 8, rate=60), SMOKE,
                                  artifacts, raw, generator_cores, repeat=1, workers=workers)
        assert all(loop.poll() is None for loop in loops)
    for point, name in ((closed, "closed-b1-u4-rep0"), (opened, "open-b2-r60-rep1")):
        files = record_files(raw / f"flask_torch-rest-cpu-{name}.csv")
        # One file per worker, written by the master: both workers had users.
        assert sorted(f.name.rsplit(".", 2)[1] for f in files) == ["w0", "w1"]
        assert point["failures"] == 0 and point["requests"] > 0
        assert point["generator_processes"] == 2
        reported = point["generator_workers"]
        assert sorted(w["index"] for w in reported) == [0, 1]
        assert all(w["requests"] > 0 and w["cpu_pct"] > 0 for w in reported)
        assert point["generator_busiest_process_cpu_pct"] >= max(w["cpu_pct"] for w in reported)
        summary = distributed.read_workers(raw / f"flask_torch-rest-cpu-{name}.csv")
        assert sum(w["requests"] for w in summary["workers"]) == len(read_records(files).ok)
    assert closed["batch_size"] == 1 and opened["batch_size"] == 2
    # Open loop: each worker took half the rate (seed + its index), so together they
    # offered the whole: 60/s over the point's window, within Poisson's spread.
    window = math.ceil(SMOKE.warmup_s + SMOKE.duration_s)  # Locust's --run-time
    offered = len(read_records(record_files(raw / "flask_torch-rest-cpu-open-b2-r60-rep1.csv")).ok)
    assert 0.6 * 60 * window < offered < 1.4 * 60 * window


@pytest.mark.integration
def test_a_point_whose_worker_dies_fails_with_the_worker_named(artifacts, tmp_path):
    """A worker lost mid-point (a pod evicted): the master gets no records from it and
    the point fails, naming it, instead of reporting half the load as the whole."""
    raw = tmp_path / "raw"
    raw.mkdir()
    port = free_port()
    workers = distributed.Workers(2, port=port, bind_host=LOOPBACK, wait_s=60)
    long = runner.Profile(name="long", warmup_s=1.0, duration_s=12.0, repeats=1,
                          closed_users={}, open_users=2, baseline_batches=(),
                          baseline_iterations=0)  # fmt: skip
    with ExitStack() as exits:
        running = start_stack("flask_torch", artifacts, tmp_path / "server", exits)
        (target,) = runner.targets_of(running)
        loops = exits.enter_context(supervised_workers(2, port, tmp_path, ["--max-runs", "1"]))

        server_port = int(target.host.rsplit(":", 1)[1])

        def kill_one_worker():
            """Kills the first loop's worker once its users are sending (it holds a
            connection to the server): mid-point, not while it is still connecting."""
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                for child in psutil.Process(loops[0].pid).children():
                    try:
                        if any(c.raddr and c.raddr.port == server_port
                               for c in child.net_connections("tcp")):  # fmt: skip
                            child.kill()
                            return
                    except psutil.Error:
                        pass
                time.sleep(0.2)

        killer = threading.Thread(target=kill_one_worker)
        killer.start()
        with pytest.raises(RuntimeError, match=r"worker\(s\) \[\d\] of 2 sent no records"):
            runner.run_point(target, runner.Load(Mode.CLOSED, 1, 2), long, artifacts, raw,
                             usable_cores()[-1:], repeat=0, workers=workers)
        killer.join()


@pytest.mark.integration
def test_a_master_whose_workers_never_come_says_so(artifacts, tmp_path):
    """No worker running: the point fails naming the workers, not "locust failed"."""
    raw = tmp_path / "raw"
    raw.mkdir()
    workers = distributed.Workers(1, port=free_port(), bind_host=LOOPBACK, wait_s=2)
    with ExitStack() as exits:
        running = start_stack("flask_torch", artifacts, tmp_path / "server", exits)
        (target,) = runner.targets_of(running)
        with pytest.raises(RuntimeError, match="workers did not all connect within 2 s"):
            runner.run_point(target, runner.Load(Mode.CLOSED, 1, 1), SMOKE, artifacts, raw,
                             usable_cores()[-1:], repeat=0, workers=workers)


def test_local_processes_listen_on_loopback_only_and_a_distributed_master_everywhere():
    """A local --processes run's master must not take the worker pods that connect to the
    load generator's pod between windows."""
    assert runner.spread_args(1) == []
    local = runner.spread_args(2)
    assert local[:4] == ["--processes", "2", "--master-bind-host", LOOPBACK]
    bind = local[local.index("--master-bind-port") + 1]
    assert local[local.index("--master-port") + 1] == bind != str(distributed.MASTER_PORT)
    remote = runner.spread_args(2, distributed.Workers(3))
    assert remote[remote.index("--master-bind-host") + 1] == "*"
    assert remote[remote.index("--expect-workers") + 1] == "3"
