"""A short end-to-end sweep (seconds per window) against a real Flask server: the
generator's floor against nginx, a level cross-checked by wrk, the SLO capacity search,
every window annotated. Skipped, with the reason, where nginx or wrk is missing."""

from __future__ import annotations

import json

import pytest

from loadtests.null_server import nginx_available
from loadtests.profiles import PROFILES
from loadtests.sweep import sweep
from loadtests.wrk import wrk_available

pytestmark = pytest.mark.integration


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_smoke_sweep_calibrates_cross_checks_and_searches(artifacts, tmp_path,
                                                            monkeypatch) -> None:  # fmt: skip
    for ok, why in (nginx_available(), wrk_available()):
        if not ok:
            pytest.skip(why)
    from loadtests import sweep as sweep_module

    real_start = sweep_module.start_stack

    def start_stack(stack, *args, **kwargs):
        # A second stack whose start never gets ready, as Ray Serve's once did here.
        if stack.name == "flask_tf":
            raise RuntimeError("flask_tf: not ready in time\n(the server's log tail)")
        return real_start(stack, *args, **kwargs)

    monkeypatch.setattr(sweep_module, "start_stack", start_stack)
    sweep(PROFILES["smoke"], ["flask_torch", "flask_tf"], artifacts, tmp_path, ["cpu"],
          baselines=lambda run: None)  # fmt: skip

    env = json.loads((tmp_path / "environment.json").read_text())
    # The stack that did not start is skipped with its reason; the bench went on without it.
    assert env["skipped"]["flask_tf/cpu"] == "did not start: flask_tf: not ready in time"
    assert list(env["servers"]) == ["flask_torch/cpu"]
    assert env["calibrated"] is True and env["interleaved"] is True
    assert env["arrivals"] == {"kind": "poisson", "seed": 0}
    assert env["servers"]["flask_torch/cpu"]["worker_class"] == "gevent"
    floors = lines(tmp_path / "floors.jsonl")
    assert {(f["mode"], f["users"]) for f in floors} >= {("closed", 2), ("open", 4)}
    assert all(f["rps"] > 0 and f["p50_ms"] > 0 for f in floors)

    (level,) = lines(tmp_path / "levels.jsonl")
    assert level["wrk"]["requests"] > 0 and level["wrk"]["socket_errors"] == 0
    assert level["divergence"]["limit"] == 0.15 and level["wrk_skipped"] is None
    # wrk ran the profile's repeats; the level shows the run with the median goodput.
    assert len(level["wrk_runs"]) == PROFILES["smoke"].wrk_repeats == 2
    assert level["wrk"] in level["wrk_runs"]

    # The framework floor ran on the same server, which was started with its twin on.
    assert env["servers"]["flask_torch/cpu"]["noop_path"] == "/v1/models/digitnet:noop"
    (floor,) = lines(tmp_path / "framework_floor.jsonl")
    assert floor["stack"] == "flask_torch" and floor["skipped"] is None
    assert floor["predict"]["runs"] == floor["noop"]["runs"] == 1
    # Then the same app in process (loadtests.own_code), the profile's iterations.
    (own,) = lines(tmp_path / "own_code.jsonl")
    assert own["stack"] == "flask_torch" and own["skipped"] is None, own["skipped"]
    assert own["iterations"] == PROFILES["smoke"].own_code_iterations

    (search,) = lines(tmp_path / "capacity.jsonl")
    assert search["n_trials"] >= 1 and search["trials"][0]["rate"] > 0
    points = lines(tmp_path / "points.jsonl")
    assert {p["phase"] for p in points} == {"sweep", "capacity"}
    for point in points:
        assert point["requests"] > 0 and point["failures"] == 0, point
        assert point["generator_reason"] and "calibration_change" in point["drift"]
    closed = next(p for p in points if p["phase"] == "sweep")
    # Calibrated at the same load: the share is a real number, not "uncalibrated".
    assert closed["generator_calibrated"] and closed["generator_share"] > 0
    opened = [p for p in points if p["phase"] == "capacity"]
    assert all(p["arrivals"] == "poisson" and p["lateness_p99_ms"] >= 0
               and p["pool_wait_p99_ms"] >= 0 for p in opened)  # fmt: skip


def test_a_capacity_trial_the_generator_cannot_explain_is_judged_on_its_figures() -> None:
    from loadtests.capacity import judge
    from loadtests.sweep import trial_result

    slo = 50.0
    # A fast server at low load: the generator's floor is most of its p50 (bound by the
    # share rule), but the trial meets the objective, so it passes.
    bound = {"p99_ms": 3.0, "requests": 600, "failures": 0, "generator_bound": True,
             "generator_floor_p99_ms": 2.0, "generator_ceiling_used": 0.05,
             "generator_fell_behind": False, "lateness_p99_ms": 0.3}  # fmt: skip
    assert judge(100.0, trial_result(bound, slo), slo).passed
    # The same server missing the objective with the generator's p99 at 2 ms: the server's.
    missed = judge(100.0, trial_result({**bound, "p99_ms": 90.0}, slo), slo)
    assert not missed.passed and not missed.invalid
    # A generator that used most of its ceiling could explain the miss: invalid.
    busy = judge(100.0, trial_result({**bound, "p99_ms": 90.0,
                                      "generator_ceiling_used": 0.8}, slo), slo)  # fmt: skip
    assert busy.invalid and "ceiling" in busy.reason
    # A generator behind its schedule measured itself, even where the figures pass.
    behind = judge(100.0, trial_result({**bound, "generator_fell_behind": True,
                                        "lateness_p99_ms": 9.0}, slo), slo)  # fmt: skip
    assert behind.invalid and not behind.passed and "fell behind" in behind.reason


def test_a_trial_the_generator_spoilt_is_measured_again(monkeypatch, tmp_path) -> None:
    import dataclasses

    from loadtests import sweep as sweep_module
    from loadtests.runner import Progress, Target

    measured = []

    def fake_window(run, target, load, profile, repeat, phase):
        measured.append(load.rate)
        # Only the very first measurement: Locust stalled; the server meets 50 ms to 400.
        stalled = len(measured) == 1
        return {"p99_ms": 3.0 if load.rate <= 400 else 90.0, "requests": 1000, "failures": 0,
                "generator_fell_behind": stalled, "lateness_p99_ms": 9.0 if stalled else 0.2}

    monkeypatch.setattr(sweep_module, "window", fake_window)
    profile = dataclasses.replace(PROFILES["smoke"], capacity_max_trials=4, capacity_retries=1)
    run = sweep_module.Run(profile, None, tmp_path, [0], [1], Progress(0, 1.0))
    target = Target("flask_torch", "rest", "http://127.0.0.1:9", {}, None)
    record = sweep_module.search_capacity(run, target, closed_peak_rps=800.0)
    # The spoilt first trial was measured again at the same rate, and the search went on
    # from the server's own figures: a bracket, not a lower bound.
    assert measured[0] == measured[1]
    assert record["passing"] is not None and record["passing"]["passed"]
    assert len(record["trials"]) == len(measured) - 1
    assert not any(t["invalid"] for t in record["trials"])


def test_the_progress_line_never_counts_past_its_total_nor_below_zero(capsys) -> None:
    from loadtests.runner import Progress

    progress = Progress(2, 1.0)
    for _ in range(3):
        progress.point("flask_torch/rest closed-b1-u1 #0", {"rps": 1.0})
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("[  3/3]")
    assert "~ 0.0 min left" in lines[-1] and "-" not in lines[-1].split("elapsed")[1]


def test_the_planned_total_counts_every_level_at_its_most_windows() -> None:
    import dataclasses

    from loadtests.sweep import planned_points

    quick = PROFILES["quick"]
    more = dataclasses.replace(quick, max_windows=quick.max_windows + 1)
    levels = sum(len(users) for users in quick.closed_users.values())
    assert planned_points(more, 1) - planned_points(quick, 1) == levels


def test_each_idle_neighbour_is_sampled_once_by_stack(tmp_path) -> None:
    from loadtests import sweep as sweep_module
    from loadtests.runner import Progress, Target

    run = sweep_module.Run(PROFILES["smoke"], None, tmp_path, [0], [1], Progress(0, 1.0))
    # TF Serving's two protocols are two targets of one server.
    run.neighbours = {"tf_serving/rest/cpu": 5, "tf_serving/grpc/cpu": 5,
                      "flask_torch/rest/cpu": 7, "ray_serve/rest/cpu": 9}  # fmt: skip
    target = Target("flask_torch", "rest", "http://127.0.0.1:9", {}, server_pid=7)
    assert run.others(target) == {"tf_serving": 5, "ray_serve": 9}
