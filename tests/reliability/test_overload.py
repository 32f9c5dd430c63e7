"""Overload: the arithmetic (goodput, refusals, lateness, recovery, goals) on synthetic
shots, capacity read from a bench run, and a short end-to-end run on flask_torch."""

from __future__ import annotations

import dataclasses
import json
from contextlib import ExitStack
from pathlib import Path

import pytest

from digitnet.artifacts import ArtifactPaths
from harness.lifecycle import start_stack
from reliability import openloop
from reliability.client import OK, RESET, http_kind
from reliability.load import Sample
from reliability.overload import (
    GENERATOR,
    MET,
    MISSED,
    NOT_APPLICABLE,
    OVERLOAD_ENV,
    Shot,
    capacity_from_run,
    check_generator_cpu,
    generator_figures,
    guard_line,
    judge_goals,
    level_figures,
    overload,
    phase_figures,
    piecewise_schedule,
    recovery_s,
    split_cores,
    timeline,
)
from reliability.report import overload_markdown
from reliability.settings import OverloadSettings, from_env
from services.process import usable_cores

OBJECTIVE_MS = 50.0
SETTINGS = OverloadSettings(levels=(2.0,), phase_s=1.0, recovery_s=1.0, recovery_window_s=0.25,
                            recovered_share=0.99, objective_ms=OBJECTIVE_MS,
                            max_generator_late_ms=5.0)


def test_the_run_says_whether_admission_control_is_on(monkeypatch) -> None:
    monkeypatch.setitem(OVERLOAD_ENV, "DIGITNET_ADMISSION", "on")
    assert "admission control on" in guard_line()
    assert "Ray Serve's in its HAProxy" in guard_line()
    monkeypatch.setitem(OVERLOAD_ENV, "DIGITNET_ADMISSION", "off")
    assert "admission control OFF" in guard_line()


def shot(scheduled: float, latency_ms: float, kind: str = OK, late_ms: float = 0.0,
         pool_ms: float = 0.0) -> Shot:
    """A request scheduled at `scheduled` s, picked by a sender `pool_ms` after its slot,
    sent `late_ms` after that, answered `latency_ms` after its slot."""
    picked = scheduled + pool_ms / 1000.0 if pool_ms else scheduled - 0.001
    start = max(scheduled, picked) + late_ms / 1000.0
    end = scheduled + latency_ms / 1000.0
    return Shot(Sample(start, max(start, end), kind, scheduled, "" if kind == OK else kind),
                picked)


def one_second_of_overload() -> list[Shot]:
    """100 requests in 1 s: 80 right within the objective, 10 right but late, 5 refused in
    1 ms, 5 reset."""
    shots = []
    for i in range(100):
        t = i / 100
        if i < 80:
            shots.append(shot(t, 10.0))
        elif i < 90:
            shots.append(shot(t, 80.0))
        elif i < 95:
            shots.append(shot(t, 1.0, http_kind(503)))
        else:
            shots.append(shot(t, 3.0, RESET))
    return shots


def test_goodput_counts_right_answers_within_the_objective() -> None:
    figures = phase_figures(one_second_of_overload(), 0.0, 1.0, offered_rps=100.0,
                            capacity_rps=50.0, objective_ms=OBJECTIVE_MS)
    assert figures["requests"] == 100
    assert figures["goodput_rps"] == pytest.approx(80.0)
    assert figures["goodput_share"] == pytest.approx(80.0 / 50.0)
    assert figures["accepted"] == 90 and figures["accepted_late"] == 10
    assert figures["accepted_p50_ms"] == pytest.approx(10.0)
    assert figures["accepted_p99_ms"] == pytest.approx(80.0)
    assert figures["errors"] == 5 and figures["error_kinds"] == {RESET: 5}


def test_refusals_are_counted_and_timed_from_the_send() -> None:
    shots = [shot(i / 10, 30.0, http_kind(503), late_ms=20.0) for i in range(10)]
    shots += [shot(0.05 + i / 10, 2.0, http_kind(429)) for i in range(10)]
    figures = phase_figures(shots, 0.0, 1.0, 20.0, 10.0, OBJECTIVE_MS)
    assert figures["refusals"] == 20 and figures["refusals_per_s"] == pytest.approx(20.0)
    # 10 ms from the send for the late-sent ones (30 ms from the slot), 2 ms for the rest.
    assert figures["refusal_p50_ms"] == pytest.approx(6.0)
    assert figures["refusal_p99_ms"] == pytest.approx(10.0, abs=0.01)
    assert figures["errors"] == 0 and figures["goodput_rps"] == 0.0


def test_only_shots_scheduled_in_the_phase_count() -> None:
    shots = [shot(0.5, 5.0), shot(1.5, 5.0), shot(-0.1, 5.0)]
    assert phase_figures(shots, 0.0, 1.0, 1.0, 1.0, OBJECTIVE_MS)["requests"] == 1


def test_generator_lateness_is_split_from_the_pool_wait() -> None:
    shots = [shot(i / 100, 5.0, late_ms=1.0) for i in range(99)]
    shots.append(shot(0.995, 30.0, pool_ms=20.0, late_ms=1.0))
    figures = generator_figures(shots, 100.0, 0.0, max_late_ms=5.0)
    assert figures["own_late_p99_ms"] == pytest.approx(1.0)
    assert figures["pool_wait_p99_ms"] > 0.0
    assert figures["pool_waited_share"] == pytest.approx(0.01)
    assert figures["held"] and "waiting on the server for 1.0%" in figures["note"]
    late = generator_figures([shot(i / 100, 5.0, late_ms=12.0) for i in range(100)], 100.0,
                             0.0, max_late_ms=5.0)
    assert not late["held"] and "could not hold 100 req/s" in late["note"]


def windows(goods: list[tuple[int, int]]) -> list[dict]:
    return [{"t_s": i * 0.5, "requests": n, "good": g, "refused": 0, "late": 0, "errors": 0}
            for i, (g, n) in enumerate(goods)]


def test_recovery_is_the_start_of_the_last_run_of_good_windows() -> None:
    assert recovery_s(windows([(100, 100)] * 4), 0.99) == 0.0
    assert recovery_s(windows([(10, 100), (50, 100), (100, 100), (100, 100)]), 0.99) == 1.0
    # Bad again after a good window: recovery restarts.
    assert recovery_s(windows([(100, 100), (10, 100), (100, 100)]), 0.99) == 1.0
    assert recovery_s(windows([(100, 100), (100, 100), (10, 100)]), 0.99) is None
    assert recovery_s(windows([(0, 0), (100, 100)]), 0.99) == 0.0  # no request: no harm


def test_timeline_sorts_shots_into_windows_by_schedule() -> None:
    shots = [shot(0.1, 5.0), shot(0.3, 80.0), shot(0.6, 1.0, http_kind(503)),
             shot(0.7, 2.0, RESET), shot(1.2, 5.0)]
    rows = timeline(shots, 0.0, 1.0, 0.5, OBJECTIVE_MS)
    assert [(r["requests"], r["good"], r["late"], r["refused"], r["errors"]) for r in rows] == [
        (2, 1, 1, 0, 0), (2, 0, 0, 1, 1)]


def synthetic_level(bad_drop_windows: int, late_ms: float = 0.0) -> dict:
    """2x of a 50 req/s capacity for 1 s (100 requests, half refused), then 25 req/s for
    1 s whose first `bad_drop_windows` quarter-seconds time out."""
    shots = [shot(i / 100, 10.0 if i % 2 else 2.0, OK if i % 2 else http_kind(503),
                  late_ms=late_ms) for i in range(100)]
    for i in range(25):
        t = 1.0 + i / 25
        bad = t < 1.0 + 0.25 * bad_drop_windows
        shots.append(shot(t, 5000.0 if bad else 5.0, "timeout" if bad else OK))
    return level_figures(shots, 0.0, 2.0, 50.0, SETTINGS)


def test_a_level_reports_goodput_refusals_and_recovery() -> None:
    level = synthetic_level(bad_drop_windows=2)
    assert level["offered_rps"] == 100.0 and level["requests"] == 100
    assert level["goodput_rps"] == pytest.approx(50.0) and level["goodput_share"] == 1.0
    assert level["refusals_per_s"] == pytest.approx(50.0)
    assert level["drop"]["requests"] == 25 and level["drop"]["errors"] > 0
    assert level["recovery_s"] == pytest.approx(0.5) and level["recovered"]
    assert level["generator"]["held"]
    assert len(level["timeline"]) == 8  # 2 s in quarter-second windows
    json.dumps(level)


def test_goals_are_judged_unless_the_generator_could_not_hold_the_rate() -> None:
    level = synthetic_level(bad_drop_windows=2)
    verdicts = {g["goal"]: g["verdict"] for g in judge_goals([level], OBJECTIVE_MS)}
    assert verdicts == {"goodput >= 90% of capacity": MET, "accepted p99 <= 50 ms": MET,
                        "refusal p99 < 5 ms": MET, "recovery <= 2 s": MET}
    never = synthetic_level(bad_drop_windows=4)  # still timing out at the end
    assert not never["recovered"]
    assert {g["goal"]: g["verdict"] for g in judge_goals([never], OBJECTIVE_MS)}[
        "recovery <= 2 s"] == MISSED
    late = synthetic_level(bad_drop_windows=0, late_ms=20.0)
    assert {g["verdict"] for g in judge_goals([late], OBJECTIVE_MS)} == {GENERATOR}
    quiet = dataclasses.replace(SETTINGS, levels=(1.5,))
    level15 = level_figures([shot(i / 75, 5.0) for i in range(75)], 0.0, 1.5, 50.0, quiet)
    goals = judge_goals([level15], OBJECTIVE_MS)
    assert [g["goal"] for g in goals][0] == "accepted p99 <= 50 ms"  # no goodput goal at 1.5x
    assert {g["goal"]: g["verdict"] for g in goals}["refusal p99 < 5 ms"] == NOT_APPLICABLE


def test_a_generator_busy_for_most_of_a_core_measures_itself() -> None:
    level = {**synthetic_level(bad_drop_windows=0), "generator_cpu_pct": 99.0}
    check_generator_cpu(level)
    assert not level["generator"]["held"] and "99% of a core" in level["generator"]["note"]
    assert {g["verdict"] for g in judge_goals([level], OBJECTIVE_MS)} == {GENERATOR}
    calm = {**synthetic_level(bad_drop_windows=0), "generator_cpu_pct": 40.0}
    check_generator_cpu(calm)
    assert calm["generator"]["held"]


def test_markdown_has_a_row_per_level_and_the_goals() -> None:
    level = {**synthetic_level(bad_drop_windows=2), "server_cpu_pct": 99.0,
             "server_rss_mib": 300.0, "generator_cpu_pct": 40.0}
    run = {"stack": "some_stack", "capacity_rps": 50.0, "capacity_source": "synthetic",
           "objective_ms": OBJECTIVE_MS, "server_cores": [0], "generator_cores": [1],
           "levels": [level], "goals": judge_goals([level], OBJECTIVE_MS), "missed": []}
    md = "\n".join(overload_markdown({"runs": [run], "skipped": {"other": "not here"}}))
    assert "| 2x | Python, 1 s | 100 |" in md
    assert "| 2x | recovery <= 2 s | 0.50 (met) | – | Python | met |" in md
    assert "**other skipped**: not here" in md
    checked = {**synthetic_level(bad_drop_windows=0), "server_cpu_pct": 99.0,
               "server_rss_mib": 300.0, "generator_cpu_pct": 3.0}
    both = {**level, "independent": checked}
    run.update(levels=[both], goals=judge_goals([both], OBJECTIVE_MS))
    md = "\n".join(overload_markdown({"runs": [run]}))
    assert "| 2x | Python, 1 s | 100 |" in md and "| 2x | C, 1 s | 100 |" in md
    assert "| 2x | recovery <= 2 s | 0.50 (met) | 0.00 (met) | C | met |" in md


def test_goals_are_judged_on_the_independent_client_where_it_held_its_rate() -> None:
    python = synthetic_level(bad_drop_windows=4)  # not recovered by the Python figures
    steady = synthetic_level(bad_drop_windows=0)
    goals = {g["goal"]: g for g in judge_goals([{**python, "independent": steady}],
                                               OBJECTIVE_MS)}
    recovery = goals["recovery <= 2 s"]
    assert recovery["verdict"] == MET and recovery["by"] == "openloop"
    assert recovery["python"]["verdict"] == MISSED and recovery["independent"]["verdict"] == MET
    # An independent client that could not hold the rate does not judge: Python does.
    late = synthetic_level(bad_drop_windows=0, late_ms=20.0)
    goals = {g["goal"]: g for g in judge_goals([{**python, "independent": late}],
                                               OBJECTIVE_MS)}
    assert goals["recovery <= 2 s"]["verdict"] == MISSED
    assert goals["recovery <= 2 s"]["by"] == "python"
    assert goals["recovery <= 2 s"]["independent"]["verdict"] == GENERATOR


def test_schedule_segments_are_back_to_back() -> None:
    offsets, starts = piecewise_schedule([(100.0, 2.0), (10.0, 1.0)])
    assert len(offsets) == 210 and starts == [0.0, 2.0]
    assert offsets[199] < 2.0 <= offsets[200] and offsets == sorted(offsets)
    with pytest.raises(ValueError):
        piecewise_schedule([(0.0, 1.0)])


def test_capacity_comes_from_a_bench_runs_passing_trial(tmp_path: Path) -> None:
    records = [
        {"stack": "a", "protocol": "grpc", "device": "cpu", "passing": {"rate": 9.0}},
        {"stack": "a", "protocol": "rest", "device": "cpu", "closed_peak_rps": 1089.9,
         "passing": {"rate": 725.9, "p99_ms": 26.7}},
        {"stack": "b", "protocol": "rest", "device": "cpu", "passing": None},
        {"stack": "c", "protocol": "rest", "device": "cpu", "closed_peak_rps": 761.0,
         "passing": {"rate": 99.3, "p99_ms": 14.9}},
    ]
    (tmp_path / "capacity.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    rate, source = capacity_from_run(tmp_path, "a")
    assert rate == 725.9 and "capacity.jsonl" in source and "may not overload" not in source
    assert "may not overload the server" in capacity_from_run(tmp_path, "c")[1]
    assert capacity_from_run(tmp_path, "b") is None
    assert capacity_from_run(tmp_path / "nowhere", "a") is None


def test_cores_split_like_the_load_runner() -> None:
    assert split_cores([0, 1]) == ([0], [1])
    assert split_cores([0, 1, 2, 3, 4, 5, 6, 7]) == ([0, 1, 2, 3, 4, 5], [6, 7])
    assert split_cores([3]) == ([3], [3])


def test_levels_are_overridable_as_a_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OVERLOAD_LEVELS", "2,5")
    monkeypatch.setenv("OVERLOAD_PHASE_S", "3")
    settings = from_env(OverloadSettings, "OVERLOAD")
    assert settings.levels == (2.0, 5.0) and settings.phase_s == 3.0
    monkeypatch.setenv("OVERLOAD_LEVELS", "fast")
    with pytest.raises(ValueError, match="OVERLOAD_LEVELS"):
        from_env(OverloadSettings, "OVERLOAD")


# --- end to end ------------------------------------------------------------------------------

# A couple of seconds per phase: enough to see refusals and a drop, short enough for CI.
SMOKE = OverloadSettings(levels=(2.0,), phase_s=2.0, recovery_s=2.0, warmup_s=0.5,
                         capacity_clients=4, capacity_s=2.0, senders=32,
                         request_timeout_s=5.0, sample_interval_s=0.25,
                         check_phase_s=1.0, check_recovery_s=1.0)


@pytest.mark.integration
def test_short_overload_run_on_flask_torch(artifacts: ArtifactPaths, tmp_path: Path) -> None:
    server_cores, generator_cores = split_cores(usable_cores())
    shared = server_cores == generator_cores
    with ExitStack() as exits:
        running = start_stack("flask_torch", artifacts, tmp_path / "run", exits,
                              cores=None if shared else server_cores, env=OVERLOAD_ENV)
        result = overload(running, SMOKE, None, server_cores, generator_cores,
                          progress=lambda line: None)
        assert running.ready(10.0), "the stack did not survive the overload"
    assert result["capacity_rps"] > 0 and "closed-loop peak" in result["capacity_source"]
    (level,) = result["levels"]
    assert level["requests"] == round(2.0 * result["capacity_rps"] * SMOKE.phase_s)
    assert level["drop"]["requests"] == round(0.5 * result["capacity_rps"] * SMOKE.recovery_s)
    # Every answer was right, or a refusal: overload never breaks a request.
    assert level["errors"] == 0, level["error_examples"]
    assert level["drop"]["errors"] == 0, level["drop"]["error_examples"]
    assert level["accepted"] + level["refusals"] == level["requests"]
    assert level["server_cpu_pct"] is not None and level["server_rss_mib"] > 0
    assert {g["verdict"] for g in result["goals"]} <= {MET, MISSED, GENERATOR, NOT_APPLICABLE}
    # The same level again from the C client: the same accounting, nothing broken.
    if openloop.binary()[0] is None:
        assert result["independent_note"] and "independent" not in level
    else:
        checked = level["independent"]
        assert checked["requests"] == round(2.0 * result["capacity_rps"] * 1.0)
        assert checked["errors"] == 0 and checked["drop"]["errors"] == 0, checked["error_kinds"]
        assert checked["accepted"] + checked["refusals"] == checked["requests"]
        assert checked["generator_cpu_pct"] > 0
    json.dumps(result)
    assert "### flask_torch" in "\n".join(overload_markdown({"runs": [result]}))
