"""The stability rule: last three windows within ±10%, and enough requests for a p99."""

from __future__ import annotations

import pytest

from loadtests.stability import (
    DEFAULT_MAX_TRIALS,
    agreement,
    relative_spread,
    run_until_stable,
)


def windows_from(figures: list[tuple[float, float, int]]):
    """A run_window that replays (rps, p99_ms, requests) and records the indexes asked."""
    asked: list[int] = []

    def run_window(index: int) -> dict:
        asked.append(index)
        rps, p99, requests = figures[index]
        return {"rps": rps, "p99_ms": p99, "requests": requests}

    return run_window, asked


def test_three_agreeing_windows_are_stable_at_once() -> None:
    run, asked = windows_from([(1000, 5.0, 10_000), (1050, 5.3, 10_500), (980, 4.8, 9_800)])
    result = run_until_stable(run)
    assert result.stable
    assert asked == [0, 1, 2]
    assert result.median("rps") == 1000
    assert result.median("p99_ms") == 5.0
    assert result.spread("rps") == pytest.approx(0.05)


def test_a_slow_start_is_dropped_once_the_last_three_agree() -> None:
    run, asked = windows_from(
        [(600, 20.0, 6_000), (1000, 5.0, 10_000), (1020, 5.1, 10_200), (990, 5.2, 9_900)]
    )
    result = run_until_stable(run)
    assert result.stable
    assert asked == [0, 1, 2, 3]
    assert [w["rps"] for w in result.last] == [1000, 1020, 990]
    assert len(result.windows) == 4


def test_a_p99_that_keeps_jumping_is_unstable_after_max_trials() -> None:
    figures = [(1000, 5.0 if i % 2 else 9.0, 10_000) for i in range(10)]
    run, asked = windows_from(figures)
    result = run_until_stable(run)
    assert not result.stable
    assert len(asked) == DEFAULT_MAX_TRIALS
    assert "p99_ms" in result.reason and "unstable" in result.reason
    assert result.enough_requests


def test_throughput_outside_ten_percent_is_unstable() -> None:
    run, _ = windows_from([(1000, 5.0, 10_000), (1120, 5.0, 11_200), (1000, 5.0, 10_000)])
    result = run_until_stable(run, max_trials=3)
    assert not result.stable
    assert "rps" in result.reason


def test_exactly_ten_percent_still_agrees() -> None:
    assert agreement(
        [{"rps": 100, "p99_ms": 1}, {"rps": 110, "p99_ms": 1}, {"rps": 90, "p99_ms": 1}], 0.10
    )[0]


def test_too_few_requests_is_flagged_and_stops() -> None:
    run, asked = windows_from([(90, 5.0, 300)] * 10)  # 900 between the last three
    result = run_until_stable(run)
    assert not result.stable
    assert not result.enough_requests
    assert asked == [0, 1, 2]
    assert "too few requests" in result.reason and "lengthen" in result.reason


def test_the_last_windows_pool_their_requests_for_the_p99() -> None:
    # A slow server at one user: 400 requests a window, 1200 between the last three.
    run, asked = windows_from([(80, 9.0, 400)] * 10)
    result = run_until_stable(run)
    assert result.stable and result.enough_requests
    assert asked == [0, 1, 2]


def test_no_throughput_is_not_stable() -> None:
    run, _ = windows_from([(0, 5.0, 1000)] * 3)
    result = run_until_stable(run, max_trials=3)
    assert not result.stable
    assert "zero" in result.reason


def test_result_records_its_verdict() -> None:
    run, _ = windows_from([(1000, 5.0, 10_000)] * 3)
    data = run_until_stable(run).to_json()
    assert data["stable"] and data["trials"] == 3
    assert data["rps_median"] == 1000 and data["p99_ms_spread"] == 0.0


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        run_until_stable(lambda i: {}, min_windows=3, max_trials=2)


def test_relative_spread() -> None:
    assert relative_spread([90, 100, 110]) == pytest.approx(0.1)
    assert relative_spread([]) is None
    assert relative_spread([0, 0]) is None
