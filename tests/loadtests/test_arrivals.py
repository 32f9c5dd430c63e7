"""Open-loop schedules: rate, seed and spacing of loadtests.arrivals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loadtests.arrivals import ArrivalKind, ArrivalPlan, ArrivalSchedule, arrival_offsets

RATE = 1000.0
DURATION_S = 10.0
EXPECTED = RATE * DURATION_S
# A Poisson count has standard deviation sqrt(mean); five of them is a bound a correct
# generator breaks about once in 3.5 million seeds.
BOUND = 5 * math.sqrt(EXPECTED)


@pytest.mark.parametrize("seed", range(20))
def test_poisson_count_is_within_statistical_bounds(seed: int) -> None:
    offsets = arrival_offsets(RATE, DURATION_S, seed)
    assert abs(len(offsets) - EXPECTED) < BOUND


def test_poisson_gaps_are_exponential() -> None:
    gaps = np.diff(arrival_offsets(RATE, DURATION_S, seed=7))
    # Exponential gaps: mean 1/rate and coefficient of variation 1 (constant spacing: 0).
    assert gaps.mean() == pytest.approx(1 / RATE, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)
    # P(gap > 3/rate) = e^-3 for exponential gaps.
    assert (gaps > 3 / RATE).mean() == pytest.approx(math.exp(-3), abs=0.01)


def test_offsets_are_sorted_and_inside_the_duration() -> None:
    for kind in ArrivalKind:
        offsets = arrival_offsets(RATE, DURATION_S, seed=1, kind=kind)
        assert np.all(np.diff(offsets) >= 0)
        assert offsets[0] >= 0
        assert offsets[-1] < DURATION_S


def test_same_seed_same_schedule() -> None:
    first = arrival_offsets(RATE, DURATION_S, seed=42)
    again = arrival_offsets(RATE, DURATION_S, seed=42)
    np.testing.assert_array_equal(first, again)


def test_different_seed_different_schedule() -> None:
    first = arrival_offsets(RATE, DURATION_S, seed=42)
    other = arrival_offsets(RATE, DURATION_S, seed=43)
    shortest = min(len(first), len(other))
    assert not np.array_equal(first[:shortest], other[:shortest])


def test_constant_spacing_is_exact() -> None:
    offsets = arrival_offsets(250.0, 2.0, seed=0, kind="constant")
    assert len(offsets) == 500
    np.testing.assert_array_equal(offsets, np.arange(500) / 250.0)
    np.testing.assert_allclose(np.diff(offsets), 1 / 250.0, rtol=1e-12)


def test_constant_spacing_ignores_the_seed() -> None:
    np.testing.assert_array_equal(
        arrival_offsets(100.0, 1.0, seed=1, kind=ArrivalKind.CONSTANT),
        arrival_offsets(100.0, 1.0, seed=2, kind=ArrivalKind.CONSTANT),
    )


@pytest.mark.parametrize("rate", [0.0, -1.0, math.inf, math.nan])
def test_rate_must_be_positive_and_finite(rate: float) -> None:
    with pytest.raises(ValueError):
        arrival_offsets(rate, 1.0, seed=0)


def test_empty_duration_gives_an_empty_schedule() -> None:
    assert len(arrival_offsets(100.0, 0.0, seed=0)) == 0


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError):
        arrival_offsets(100.0, 1.0, seed=0, kind="bursty")


def test_process_shares_split_the_rate_and_the_seed() -> None:
    plan = ArrivalPlan(rate=RATE, duration_s=DURATION_S, seed=100)
    shares = [plan.for_process(i, 4) for i in range(4)]
    assert [s.rate for s in shares] == [RATE / 4] * 4
    assert [s.seed for s in shares] == [100, 101, 102, 103]
    merged = np.sort(np.concatenate([s.offsets() for s in shares]))
    assert abs(len(merged) - EXPECTED) < BOUND
    # Independent Poisson processes merge into a Poisson process at the full rate.
    gaps = np.diff(merged)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)
    assert not np.array_equal(shares[0].offsets()[:100], shares[1].offsets()[:100])


@pytest.mark.parametrize("index,processes", [(-1, 2), (2, 2), (0, 0)])
def test_process_index_out_of_range(index: int, processes: int) -> None:
    with pytest.raises(ValueError):
        ArrivalPlan(10.0, 1.0, 0).for_process(index, processes)


def test_plan_records_its_settings() -> None:
    assert ArrivalPlan(10.0, 2.0, 5, ArrivalKind.CONSTANT).to_json() == {
        "rate": 10.0,
        "duration_s": 2.0,
        "seed": 5,
        "kind": "constant",
    }


def test_schedule_hands_out_slots_from_its_origin_then_runs_out() -> None:
    plan = ArrivalPlan(rate=10.0, duration_s=0.5, seed=0, kind=ArrivalKind.CONSTANT)
    schedule = ArrivalSchedule(plan, clock=lambda: 1000.0)
    slots = [schedule.next_slot() for _ in range(5)]
    assert slots == pytest.approx([1000.0, 1000.1, 1000.2, 1000.3, 1000.4])
    assert schedule.remaining() == 0
    assert schedule.next_slot() is None


def test_schedule_follows_the_plans_offsets() -> None:
    plan = ArrivalPlan(rate=50.0, duration_s=1.0, seed=3)
    schedule = ArrivalSchedule(plan, origin=0.0)
    slots = []
    while (slot := schedule.next_slot()) is not None:
        slots.append(slot)
    np.testing.assert_array_equal(np.asarray(slots), plan.offsets())
