"""loadtests.cluster, the in-cluster sweep: its parsing and cgroup reading, then a real
smoke run against real Flask and TorchServe servers on loopback (as the Job would run it
against Services), and the TorchServe key handling of k8s/cluster.py on a real key file."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import pytest
import requests

from harness.lifecycle import start_stack
from harness.payload import PayloadSet
from k8s import cluster as k8s_cluster
from loadtests import cluster, runner, sweep
from loadtests.null_server import nginx_available
from loadtests.profiles import PROFILES
from loadtests.records import record_files
from loadtests.report import write_report
from loadtests.runner import Load
from loadtests.settings import Mode
from services.process import free_port, usable_cores
from tests.loadtests.locust_workers import supervised_workers


def test_targets_are_parsed_like_the_job_passes_them(spec):
    rest = cluster.parse_target("flask_torch/rest=http://flask-torch:8000/", "cuda", spec).target
    assert (rest.stack, rest.protocol, rest.host) == (
        "flask_torch", "rest", "http://flask-torch:8000")  # fmt: skip
    assert rest.server_pid is None and rest.metrics_url is None and rest.device == "cuda"
    assert rest.env["LOADTEST_PATH"] == "/v1/models/digitnet:predict"
    grpc = cluster.parse_target("tf_serving/grpc=tf-serving:8500", "cpu", spec).target
    assert grpc.env["LOADTEST_GRPC_TARGET"] == "tf-serving:8500"
    assert grpc.host == "http://tf-serving:8500" and grpc.user_class == "TfServingGrpcUser"
    ts = cluster.parse_target("torchserve/rest=http://torchserve:8080", "cpu", spec,
                              {"torchserve": "k3y"}).target
    # The token travels as data: the header the stack's own client sends.
    assert json.loads(ts.env["LOADTEST_HEADERS"]) == {"Authorization": "Bearer k3y"}


def test_a_changed_key_file_rebuilds_the_target_with_the_new_key(spec, tmp_path):
    key_file = tmp_path / "inference-key"
    key_file.write_text("old-key\n")
    texts = ["torchserve/rest=http://torchserve:8080", "flask_torch/rest=http://flask:8000"]
    secrets = cluster.parse_secret_files([f"torchserve={key_file}"])
    refresh = cluster.KeyRefresher(texts, "cpu", spec,
                                   cluster.secret_paths([f"torchserve={key_file}"]), secrets)
    torchserve = cluster.parse_target(texts[0], "cpu", spec, secrets).target
    flask = cluster.parse_target(texts[1], "cpu", spec, secrets).target
    assert refresh(torchserve) is torchserve and refresh(flask) is flask
    key_file.write_text("new-key\n")
    fresh = refresh(torchserve)
    assert json.loads(fresh.env["LOADTEST_HEADERS"]) == {"Authorization": "Bearer new-key"}
    assert fresh.headers == {"Authorization": "Bearer new-key"}
    # Later calls with the target the sweep holds get the rebuilt one.
    assert refresh(torchserve) is fresh and refresh(flask) is flask
    key_file.unlink()  # a Secret being swapped: keep the key in use
    assert refresh(torchserve) is fresh


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("flask_torch/rest", "stack/protocol=url"),
        ("flask_torch=http://x:1", "stack/protocol=url"),
        ("torchserve/grpc=x:1", "does not serve grpc"),
        ("torchserve/rest=http://torchserve:8080", "inference key"),
    ],
)
def test_bad_targets_are_refused_with_the_reason(text, message, spec):
    with pytest.raises(ValueError, match=message):
        cluster.parse_target(text, "cpu", spec)


def test_the_cpu_limit_is_read_from_the_cgroup(tmp_path):
    (tmp_path / "cpu.max").write_text("200000 100000\n")
    assert cluster.cgroup_cpus(tmp_path) == 2.0
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cluster.cgroup_cpus(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cluster.cgroup_cpus(v1) == 1.5
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cluster.cgroup_cpus(v1) is None
    assert cluster.cgroup_cpus(tmp_path / "absent") is None


def test_the_pod_holds_until_the_results_are_collected(tmp_path):
    assert cluster.hold(tmp_path, "run", hold_s=0.2, poll_s=0.05) is False
    marker = tmp_path / f"run{cluster.COLLECTED_SUFFIX}"
    timer = threading.Timer(0.2, marker.touch)
    timer.start()
    started = time.monotonic()
    assert cluster.hold(tmp_path, "run", hold_s=30, poll_s=0.05) is True
    assert time.monotonic() - started < 30
    timer.join()


@pytest.fixture(scope="module")
def servers(artifacts, tmp_path_factory):
    """Real Flask and TorchServe on loopback, on the server cores."""
    run_dir = tmp_path_factory.mktemp("servers")
    server_cores, _ = runner.split_cores(usable_cores())
    with ExitStack() as exits:
        running = {}
        for stack in ("flask_torch", "torchserve"):
            running[stack] = start_stack(stack, artifacts, run_dir / stack, exits,
                                         cores=server_cores)
        yield running


def key_file_of(running) -> str:
    return (running.server.log_path.parent / "key_file.json").read_text()


def sweep_in_cluster(servers, artifacts, tmp_path, run_id: str, device: str,
                     *extra_targets: str, options: tuple[str, ...] = ()) -> tuple[int, str]:
    """cluster.main against the local flask_torch and torchserve as if they were pods,
    TorchServe's real inference key in the Secret's file; (exit code, the key)."""
    (flask,) = runner.targets_of(servers["flask_torch"])
    (torchserve,) = runner.targets_of(servers["torchserve"])
    key, _stale = k8s_cluster.inference_key(
        key_file_of(servers["torchserve"]), datetime.now(UTC), timedelta(0))  # fmt: skip
    token_file = tmp_path / "inference-key"
    token_file.write_text(key + "\n")
    targets = [f"flask_torch/rest={flask.host}", f"torchserve/rest={torchserve.host}",
               *extra_targets]  # fmt: skip
    code = cluster.main([
        "--out", str(tmp_path / "results"), "--run-id", run_id, "--profile", "smoke",
        "--device", device, *[arg for t in targets for arg in ("--target", t)],
        "--secret-file", f"torchserve={token_file}", "--artifacts", str(artifacts.root),
        "--ready-timeout-s", "2", "--hold-s", "0", *options,
    ])  # fmt: skip
    return code, key


@pytest.mark.integration
def test_a_smoke_sweep_writes_what_the_report_needs(servers, artifacts, tmp_path):
    (flask,) = runner.targets_of(servers["flask_torch"])
    (torchserve,) = runner.targets_of(servers["torchserve"])
    # Nothing listens at :9: the target is skipped with its reason, the rest still run.
    code, key = sweep_in_cluster(servers, artifacts, tmp_path, "k8s-smoke", "cpu",
                                 "tf_serving/rest=http://127.0.0.1:9")  # fmt: skip
    # The Secret's content is the inference key read from TorchServe's real key file.
    assert json.loads(torchserve.env["LOADTEST_HEADERS"]) == {"Authorization": f"Bearer {key}"}
    out = tmp_path / "results"
    assert code == 0
    assert (out / f"k8s-smoke{cluster.COMPLETE_SUFFIX}").exists()
    run_dir = out / "k8s-smoke"
    points = [json.loads(line) for line in (run_dir / "points.jsonl").read_text().splitlines()]
    assert {(p["stack"], p["mode"]) for p in points} == {
        ("flask_torch", "closed"), ("flask_torch", "open"),
        ("torchserve", "closed"), ("torchserve", "open"),
    }  # fmt: skip
    for point in points:
        assert point["requests"] > 0 and point["failures"] == 0, point
        assert point["device"] == "cpu" and point["server_cpu_pct"] is None
        assert point["served_device"] == "cpu"
        # One record file per Locust process (--processes: one per CPU of the pod's quota).
        assert record_files(run_dir / "raw" / point["raw"]), point["raw"]
        assert point["generator_processes"] == runner.generator_processes(
            usable_cores(), cluster.cgroup_cpus() or float(len(usable_cores())))
    env = json.loads((run_dir / "environment.json").read_text())
    assert "connection" in env["skipped"]["tf_serving/rest/cpu"].lower()
    # The generator was calibrated in the pod against the null server, per REST target.
    if nginx_available()[0]:
        assert env["calibrated"] is True and "in the Locust pod" in env["calibration_reason"]
        floors = [json.loads(line) for line in
                  (run_dir / "floors.jsonl").read_text().splitlines()]
        assert {f["target"] for f in floors} == {"flask_torch/rest/cpu", "torchserve/rest/cpu"}
        assert all(f["requests"] > 0 for f in floors)
    else:
        assert env["calibrated"] is False and "nginx" in env["calibration_reason"]
    assert env["targets"]["flask_torch/rest/cpu"] == flask.host
    report = write_report(run_dir).read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {h["target"] for h in summary["headline"]} == {"flask_torch/rest/cpu",
                                                         "torchserve/rest/cpu"}  # fmt: skip
    assert "tf_serving/rest/cpu | **skipped**" in report


@pytest.mark.integration
def test_a_distributed_sweep_runs_its_windows_on_the_workers(servers, artifacts, tmp_path):
    """--workers: every window's users run in the worker processes (two loops of
    loadtests.worker on loopback, as the worker pods), TorchServe's key travelling to them
    with the settings; each point names its workers and their CPU."""
    port = free_port()
    with supervised_workers(2, port, tmp_path):
        code, _key = sweep_in_cluster(
            servers, artifacts, tmp_path, "k8s-distributed", "cpu",
            options=("--workers", "2", "--master-port", str(port),
                     "--master-bind-host", "127.0.0.1"))  # fmt: skip
    assert code == 0
    run_dir = tmp_path / "results" / "k8s-distributed"
    points = [json.loads(line) for line in (run_dir / "points.jsonl").read_text().splitlines()]
    assert {p["stack"] for p in points} == {"flask_torch", "torchserve"}
    for point in points:
        assert point["requests"] > 0 and point["failures"] == 0, point
        assert point["generator_processes"] == 2
        workers = point["generator_workers"]
        assert len(workers) == 2 and sum(w["requests"] for w in workers) >= point["requests"]
        assert point["generator_busiest_process_cpu_pct"] >= max(w["cpu_pct"] for w in workers)
        assert {f.name.rsplit(".", 2)[1] for f in record_files(run_dir / "raw" / point["raw"])
                if f.name.count(".") == 2} <= {"w0", "w1"}  # fmt: skip
    env = json.loads((run_dir / "environment.json").read_text())
    assert "2 Locust worker processes" in env["generator_cores"]
    write_report(run_dir)


@pytest.mark.integration
def test_gpu_points_on_servers_computing_on_the_cpu_are_refused(servers, artifacts, tmp_path):
    # Both pods answer, as a GPU pod whose server fell back to its CPU does.
    code, _key = sweep_in_cluster(servers, artifacts, tmp_path, "k8s-cuda", "cuda")
    assert code == 0
    out = tmp_path / "results"
    run_dir = out / "k8s-cuda"
    assert (run_dir / "points.jsonl").read_text() == ""
    skipped = json.loads((run_dir / "environment.json").read_text())["skipped"]
    for key in ("flask_torch/rest/cuda", "torchserve/rest/cuda"):
        assert skipped[key].startswith("REFUSED") and "'cpu'" in skipped[key], skipped


@pytest.mark.integration
def test_a_wrong_torchserve_key_is_skipped_not_measured(servers, artifacts, tmp_path):
    (torchserve,) = runner.targets_of(servers["torchserve"])
    target = cluster.parse_target(f"torchserve/rest={torchserve.host}", "cpu", artifacts.spec,
                                  {"torchserve": "wrong-key"})
    payloads = PayloadSet(artifacts.spec, 1, artifacts.reference_predictions)
    skipped = cluster.wait_for_answers([target], payloads, timeout_s=0.5, poll_s=0.1)
    assert "HTTP 400" in skipped["torchserve/rest/cpu"]


@pytest.mark.integration
def test_the_key_renewal_script_replaces_the_inference_key(servers, artifacts):
    running = servers["torchserve"]
    key_path = running.server.log_path.parent / "key_file.json"
    (client,) = running.clients
    old_key, _ = k8s_cluster.inference_key(key_path.read_text(), datetime.now(UTC), timedelta(0))
    script = k8s_cluster.renew_key_script(str(key_path), running.server.endpoints["management"])
    subprocess.run([sys.executable, "-"], input=script, text=True, check=True, timeout=30)
    new_key, stale = k8s_cluster.inference_key(key_path.read_text(), datetime.now(UTC),
                                               k8s_cluster.TOKEN_MIN_VALID)  # fmt: skip
    assert new_key != old_key and not stale
    url = client.url
    body = {"instances": [[[0.0] * 8] * 8]}
    assert requests.post(url, json=body, headers={"Authorization": f"Bearer {new_key}"},
                         timeout=10).status_code == 200  # fmt: skip
    assert requests.post(url, json=body, headers={"Authorization": f"Bearer {old_key}"},
                         timeout=10).status_code == 400  # fmt: skip


@pytest.mark.integration
def test_a_rotated_key_is_noticed_and_the_next_window_uses_the_new_one(servers, artifacts,
                                                                        tmp_path, monkeypatch):
    """TorchServe rotates its key (as a restart does) mid-run: a window sent with the old
    key says so (key_rejected); the next window, whose device read-back is refused too,
    waits for the Secret's file to change and runs with the new key."""
    running = servers["torchserve"]
    (torchserve,) = runner.targets_of(running)
    key_path = running.server.log_path.parent / "key_file.json"
    old_key, _ = k8s_cluster.inference_key(key_path.read_text(), datetime.now(UTC), timedelta(0))
    token_file = tmp_path / "inference-key"
    token_file.write_text(old_key + "\n")
    text = f"torchserve/rest={torchserve.host}"
    item = f"torchserve={token_file}"
    secrets = cluster.parse_secret_files([item])
    target = cluster.parse_target(text, "cpu", artifacts.spec, secrets).target
    refresh = cluster.KeyRefresher([text], "cpu", artifacts.spec, cluster.secret_paths([item]),
                                   secrets)
    (tmp_path / "run" / "raw").mkdir(parents=True)
    run = sweep.Run(PROFILES["smoke"], artifacts, tmp_path / "run", [], usable_cores(),
                    runner.Progress(3, 1.0), refresh=refresh)
    load = Load(Mode.CLOSED, 1, 1)
    # A window whose requests meet the rotation: the old key is refused from then on.
    rotate = threading.Timer(PROFILES["smoke"].warmup_s + 0.5, lambda: subprocess.run(
        [sys.executable, "-"], check=True, timeout=30, text=True,
        input=k8s_cluster.renew_key_script(str(key_path), running.server.endpoints["management"])))
    rotate.start()
    try:
        stale = sweep.window(run, target, load, run.profile, 0, "sweep")
    finally:
        rotate.join()
    assert stale["key_rejected"] > 0 and stale["key_rejected"] == stale["failures"], stale
    new_key, _ = k8s_cluster.inference_key(key_path.read_text(), datetime.now(UTC), timedelta(0))
    assert new_key != old_key
    # The next window's read-back is refused; the Secret changes a little later.
    monkeypatch.setattr(sweep, "KEY_POLL_S", 0.2)
    threading.Timer(1.0, lambda: token_file.write_text(new_key + "\n")).start()
    fresh = sweep.window(run, target, load, run.profile, 1, "sweep")
    assert fresh["requests"] > 0 and fresh["failures"] == 0 and fresh["key_rejected"] == 0
    # Without a new key the window stops the run with the reason.
    monkeypatch.setattr(sweep, "KEY_WAIT_S", 0.5)
    subprocess.run([sys.executable, "-"], check=True, timeout=30, text=True,
                   input=k8s_cluster.renew_key_script(str(key_path),
                                                      running.server.endpoints["management"]))
    with pytest.raises(RuntimeError, match="refuses our key"):
        sweep.window(run, target, load, run.profile, 2, "sweep")
