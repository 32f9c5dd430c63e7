"""k8s/cluster.py's collector against a fake kubectl (tests/k8s/fake_kubectl.py on the
KUBECTL seam k8s.validate.kubectl() reads): results stream out after each point, survive
the pod's failure, and a hung collection ends at its deadline with a clear message."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from k8s import cluster

POD = "loadtest-cpu-20260101-000000-abcde"
RUN = "loadtest-cpu-20260101-000000"


class FakePod:
    """The load generator pod as the fake kubectl sees it."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.results = state / "fs" / POD / "results"
        self.run_dir = self.results / RUN
        (self.run_dir / "raw").mkdir(parents=True)
        (state / "pods").mkdir()
        self.set_phase("Running")

    def set_phase(self, phase: str, reason: str = "", message: str = "") -> None:
        status = {"phase": phase, **({"reason": reason} if reason else {}),
                  **({"message": message} if message else {})}  # fmt: skip
        doc = {"metadata": {"name": POD}, "status": status}
        (self.state / "pods" / f"{POD}.json").write_text(json.dumps(doc))

    def measure_point(self, n: int) -> None:
        with (self.run_dir / "points.jsonl").open("a") as points:
            points.write(json.dumps({"point": n}) + "\n")
        (self.run_dir / "raw" / f"point-{n}.csv").write_text(f"latency_ms\n{n}.5\n")

    def evict(self) -> None:
        """The kubelet evicts the pod: its emptyDir, and every result in it, is gone."""
        self.set_phase("Failed", "Evicted", "The node was low on resource: ephemeral-storage.")
        for path in sorted(self.results.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()

    def calls(self) -> list[str]:
        return (self.state / "calls.log").read_text().splitlines()


@pytest.fixture
def pod(tmp_path, monkeypatch) -> FakePod:
    state = tmp_path / "cluster"
    state.mkdir()
    fake = tmp_path / "bin" / "kubectl"
    fake.parent.mkdir()
    script = Path(__file__).with_name("fake_kubectl.py")
    fake.write_text(f'#!/bin/sh\nexec {sys.executable} {script} "$@"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("KUBECTL", str(fake))
    monkeypatch.setenv("FAKE_K8S", str(state))
    return FakePod(state)


def scripted(steps: list[Callable[[], object]]) -> Callable[[float], None]:
    """A `sleep` for collect(): each call runs the next step (what happens in the pod
    meanwhile), then returns at once."""
    pending = list(steps)

    def sleep(_seconds: float) -> None:
        if pending:
            pending.pop(0)()

    return sleep


def local_points(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "points.jsonl").read_text().splitlines()]


def test_points_copied_before_an_eviction_survive_it(pod, tmp_path):
    run_dir = tmp_path / "results" / RUN
    pod.measure_point(1)
    # Round 1 copies point 1; then point 2 is measured and copied; then point 3 is
    # measured, but the pod is evicted before the next look.
    steps = [lambda: pod.measure_point(2), lambda: (pod.measure_point(3), pod.evict())]
    collection = cluster.collect(POD, RUN, run_dir, deadline_s=60, poll_s=0,
                                 sleep=scripted(steps))  # fmt: skip
    assert collection.state == cluster.POD_FAILED
    assert collection.points == 2
    assert local_points(run_dir) == [{"point": 1}, {"point": 2}]
    assert sorted(p.name for p in (run_dir / "raw").iterdir()) == ["point-1.csv", "point-2.csv"]
    assert not pod.run_dir.exists()  # the pod's copy is gone: only ours is left
    assert "Evicted" in collection.message and "ephemeral-storage" in collection.message
    assert f"2 point(s) kept in {run_dir}" in collection.message
    # Streamed as a compressed tar through exec, the second time only what changed since.
    tars = [c for c in pod.calls() if " tar czf - " in c]
    assert len(tars) == 2 and "--newer-mtime" not in tars[0] and "--newer-mtime=@" in tars[1]


def test_a_deleted_pod_is_named_and_what_was_copied_stays(pod, tmp_path):
    run_dir = tmp_path / "results" / RUN
    pod.measure_point(1)
    steps = [lambda: (pod.state / "pods" / f"{POD}.json").unlink()]
    collection = cluster.collect(POD, RUN, run_dir, 60, poll_s=0, sleep=scripted(steps))
    assert collection.state == cluster.POD_FAILED and "was deleted" in collection.message
    assert local_points(run_dir) == [{"point": 1}]


def test_a_finished_sweep_is_copied_whole_and_the_pod_told_to_exit(pod, tmp_path):
    run_dir = tmp_path / "results" / RUN
    pod.measure_point(1)

    def finish() -> None:
        pod.measure_point(2)
        (pod.run_dir / "environment.json").write_text("{}\n")
        (pod.results / f"{RUN}.complete").write_text("ok\n")

    collection = cluster.collect(POD, RUN, run_dir, 60, poll_s=0, sleep=scripted([finish]))
    assert collection.state == cluster.COMPLETE and collection.points == 2
    assert (run_dir / "environment.json").read_text() == "{}\n"
    assert (pod.results / f"{RUN}.collected").exists()


def test_a_failed_sweep_keeps_its_partial_data_and_says_so(pod, tmp_path):
    run_dir = tmp_path / "results" / RUN
    pod.measure_point(1)
    (pod.results / f"{RUN}.failed").write_text("Traceback ...\n")
    collection = cluster.collect(POD, RUN, run_dir, 60, poll_s=0, sleep=scripted([]))
    assert collection.state == cluster.SWEEP_FAILED
    assert "the sweep failed" in collection.message and local_points(run_dir) == [{"point": 1}]


def test_the_deadline_ends_a_hung_collection_with_a_clear_message(pod, tmp_path):
    run_dir = tmp_path / "results" / RUN
    pod.measure_point(1)
    # After the first copy every exec hangs (a dropped connection that never errors).
    step = scripted([lambda: (pod.state / "hang").touch()])
    start = time.monotonic()
    collection = cluster.collect(POD, RUN, run_dir, deadline_s=4, poll_s=0.2,
                                 sleep=lambda s: (step(s), time.sleep(s)))
    took = time.monotonic() - start
    assert collection.state == cluster.DEADLINE
    assert took < 30, f"collect ignored its deadline ({took:.0f} s)"
    assert "collection deadline of 4 s passed" in collection.message
    assert "no answer within" in collection.message  # the hung kubectl call is named
    assert f"make k8s-collect RUN_ID={RUN}" in collection.message
    assert local_points(run_dir) == [{"point": 1}]


def test_a_cut_stream_changes_nothing_already_copied(pod, tmp_path, monkeypatch):
    run_dir = tmp_path / "results" / RUN
    pod.measure_point(1)
    assert cluster.copy_results(POD, RUN, run_dir, None, 30) is not None
    before = (run_dir / "points.jsonl").read_text()
    pod.measure_point(2)
    real_tar = cluster.kubectl_to_file

    def cut(args, dest, timeout):
        real_tar(args, dest, timeout)
        dest.write_bytes(dest.read_bytes()[: dest.stat().st_size // 2])

    # The pod dies halfway through sending its archive.
    monkeypatch.setattr(cluster, "kubectl_to_file", cut)
    with pytest.raises(cluster.ClusterError, match="incomplete results stream"):
        cluster.copy_results(POD, RUN, run_dir, None, 30)
    assert (run_dir / "points.jsonl").read_text() == before
    assert not (run_dir / "raw" / "point-2.csv").exists()


def test_the_run_records_how_it_came_home(tmp_path):
    run_dir = tmp_path / RUN
    cluster.record_collection(run_dir, POD, cluster.Collection(cluster.POD_FAILED, 3, "evicted"))
    record = json.loads((run_dir / cluster.COLLECTION_FILE).read_text())
    assert record["state"] == "pod-failed" and record["points"] == 3 and record["pod"] == POD


def test_the_collector_deadline_follows_the_jobs_own():
    job = {"spec": {"activeDeadlineSeconds": 36000}}
    assert cluster.job_deadline_s(job) == 36000 + cluster.COLLECT_GRACE_S


def test_a_node_that_stops_reporting_is_waited_for_not_given_up(pod, tmp_path):
    run_dir = tmp_path / "results" / RUN
    pod.measure_point(1)

    def back_and_done() -> None:
        pod.set_phase("Running")
        (pod.results / f"{RUN}.complete").write_text("ok\n")

    steps = [lambda: pod.set_phase("Unknown"), back_and_done]
    collection = cluster.collect(POD, RUN, run_dir, 60, poll_s=0, sleep=scripted(steps))
    assert collection.state == cluster.COMPLETE and collection.points == 1


def torchserve_pods(*pods: tuple[str, int]) -> str:
    return json.dumps({"items": [
        {"metadata": {"name": name}, "status": {"containerStatuses": [{"restartCount": n}]}}
        for name, n in pods]})


def test_a_torchserve_restart_puts_its_new_key_into_the_secret(monkeypatch):
    """KeyWatch: a new pod or a higher restart count refreshes the Secret once; a failed
    refresh (the restarted server not ready yet) is tried again the next round."""
    answers = [torchserve_pods(("ts-a", 0))]
    monkeypatch.setattr(cluster, "run_kubectl", lambda *args, **kw: answers[-1])
    refreshed: list[int] = []
    failing = [True]

    def refresh_token() -> None:
        if failing[0]:
            failing[0] = False
            raise cluster.ClusterError("error: container not running")
        refreshed.append(1)

    monkeypatch.setattr(cluster, "refresh_token", refresh_token)
    watch = cluster.KeyWatch()
    watch()
    assert refreshed == []  # nothing changed
    answers.append(torchserve_pods(("ts-a", 1)))  # the container restarted
    with pytest.raises(cluster.ClusterError):
        watch()  # not ready: collect() retries on its next round
    watch()
    assert refreshed == [1]
    watch()
    assert refreshed == [1]  # once per restart
    answers.append(torchserve_pods(("ts-b", 0)))  # a new pod
    watch()
    assert refreshed == [1, 1]


def test_the_collector_runs_its_round_hook_while_the_sweep_runs(pod, tmp_path):
    run_dir = tmp_path / "results" / RUN
    rounds: list[int] = []
    steps = [lambda: pod.measure_point(1),
             lambda: (pod.results / f"{RUN}.complete").write_text("ok\n")]
    collection = cluster.collect(POD, RUN, run_dir, 60, poll_s=0, sleep=scripted(steps),
                                 each_round=lambda: rounds.append(1))
    assert collection.state == cluster.COMPLETE and len(rounds) == 2
