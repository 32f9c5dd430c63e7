"""Generator floor arithmetic: shares, ceiling used, the generator-bound rule."""

from __future__ import annotations

import pytest

from loadtests.calibration import (
    CEILING_USED_LIMIT,
    FLOOR_P99_SHARE_OF_SLO,
    GENERATOR_SHARE_LIMIT,
    GeneratorFloor,
    annotate,
    assess_point,
    ceiling_for,
    ceiling_used,
    failure_cause,
    find_floor,
    generator_share,
    rule_text,
)

USER = "FlaskRestUser"
# Locust FastHttpUser against nginx on one core (NOTES.md): 5.2k req/s at 1 user (p50
# 0.19 ms), 8.6k at 8 (p50 1 ms); open loop at 500 and 1500 req/s with 16 users.
FLOORS = [
    GeneratorFloor(USER, 1, None, p50_ms=0.19, p99_ms=0.5, rps=5200.0),
    GeneratorFloor(USER, 8, None, p50_ms=1.0, p99_ms=2.0, rps=8600.0),
    GeneratorFloor(USER, 16, None, p50_ms=1.8, p99_ms=3.5, rps=9000.0),
    GeneratorFloor(USER, 16, 500.0, p50_ms=0.2, p99_ms=0.6, rps=500.0),
    GeneratorFloor(USER, 16, 1500.0, p50_ms=0.4, p99_ms=1.6, rps=1500.0),
    GeneratorFloor("TorchServeRestUser", 1, None, p50_ms=0.25, p99_ms=0.7, rps=4000.0),
]


def closed(users: int, rps: float, p50: float, p99: float = 10.0) -> dict:
    return {
        "mode": "closed",
        "users": users,
        "rate": None,
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
    }


def test_share_and_ceiling_arithmetic() -> None:
    assert generator_share(0.19, 0.6) == pytest.approx(0.19 / 0.6)
    assert ceiling_used(2600.0, 5200.0) == 0.5
    assert generator_share(None, 1.0) is None
    assert generator_share(0.2, 0.0) is None
    assert ceiling_used(100.0, 0.0) is None


def test_a_slow_server_is_not_generator_bound() -> None:
    # TorchServe at 1 user: p50 ~7 ms, ~140 req/s.
    verdict = assess_point(closed(1, 140.0, 7.0), "TorchServeRestUser", FLOORS)
    assert verdict.calibrated
    assert verdict.generator_share == pytest.approx(0.25 / 7.0)
    assert verdict.ceiling_used == pytest.approx(140.0 / 4000.0)
    assert verdict.generator_bound is False


def test_a_large_floor_share_bounds_the_point() -> None:
    # Flask at 1 user, as Locust measured it: 1.2k req/s, p50 0.6 ms.
    verdict = assess_point(closed(1, 1200.0, 0.6), USER, FLOORS)
    assert verdict.generator_share == pytest.approx(0.19 / 0.6)
    assert verdict.generator_share > GENERATOR_SHARE_LIMIT
    assert verdict.ceiling_used < CEILING_USED_LIMIT
    assert verdict.generator_bound is True
    assert "of p50" in verdict.reason


def test_using_much_of_the_ceiling_bounds_the_point() -> None:
    verdict = assess_point(closed(8, 5000.0, 20.0), USER, FLOORS)
    assert verdict.generator_share == pytest.approx(0.05)
    assert verdict.ceiling_used == pytest.approx(5000 / 8600)
    assert verdict.generator_bound is True
    assert "ceiling" in verdict.reason


def test_limits_are_strict_inequalities() -> None:
    at_limits = closed(8, CEILING_USED_LIMIT * 8600.0, 1.0 / GENERATOR_SHARE_LIMIT)
    verdict = assess_point(at_limits, USER, FLOORS)
    assert verdict.generator_share == pytest.approx(GENERATOR_SHARE_LIMIT)
    assert verdict.generator_bound is False


def test_floor_lookup_matches_user_class_and_users() -> None:
    assert find_floor(FLOORS, USER, 8).p50_ms == 1.0
    assert find_floor(FLOORS, USER, 4) is None
    assert find_floor(FLOORS, "TfServingGrpcUser", 1) is None
    assert ceiling_for(FLOORS, USER, 16) == 9000.0


def test_open_loop_floor_is_exact_or_interpolated_never_extrapolated() -> None:
    assert find_floor(FLOORS, USER, 16, 500.0).p50_ms == 0.2
    middle = find_floor(FLOORS, USER, 16, 1000.0)
    assert middle.p50_ms == pytest.approx(0.3)
    assert middle.p99_ms == pytest.approx(1.1)
    assert middle.rate == 1000.0
    assert find_floor(FLOORS, USER, 16, 2000.0) is None
    assert find_floor(FLOORS, USER, 16, 100.0) is None


def test_open_loop_point_uses_the_rate_floor_and_the_closed_ceiling() -> None:
    point = {
        "mode": "open",
        "users": 16,
        "rate": 1000.0,
        "rps": 990.0,
        "p50_ms": 2.0,
        "p99_ms": 8.0,
    }
    verdict = assess_point(point, USER, FLOORS)
    assert verdict.generator_share == pytest.approx(0.3 / 2.0)
    assert verdict.tail_share == pytest.approx(1.1 / 8.0)
    assert verdict.ceiling_used == pytest.approx(990.0 / 9000.0)
    assert verdict.generator_bound is False


def test_a_missed_objective_is_the_generators_only_where_its_floor_or_ceiling_explains_it():
    slo = 50.0
    fast_server = {"mode": "open", "users": 16, "rate": 1000.0, "rps": 990.0,
                   "p50_ms": 0.5, "p99_ms": 80.0}  # fmt: skip
    (annotated,) = annotate([fast_server], [USER], FLOORS)
    # Its p50 is mostly the generator's (bound by the share rule), but the generator's own
    # p99 at 1000 req/s (1.1 ms) cannot explain a p99 of 80 ms: the miss is the server's.
    assert annotated["generator_bound"] is True
    assert annotated["generator_floor_p99_ms"] == pytest.approx(1.1)
    assert failure_cause(annotated, slo) is None
    slow_generator = {**annotated, "generator_floor_p99_ms": FLOOR_P99_SHARE_OF_SLO * slo + 1}
    assert "own p99" in failure_cause(slow_generator, slo)
    busy = {**annotated, "generator_ceiling_used": CEILING_USED_LIMIT + 0.01}
    assert "ceiling" in failure_cause(busy, slo)
    uncalibrated = {**fast_server, "generator_floor_p99_ms": None,
                    "generator_ceiling_used": None}  # fmt: skip
    assert failure_cause(uncalibrated, slo) is None


def test_without_floors_a_point_is_uncalibrated_not_passed() -> None:
    verdict = assess_point(closed(1, 1200.0, 0.6), USER, [])
    assert not verdict.calibrated
    assert verdict.generator_bound is None
    assert verdict.reason.startswith("uncalibrated")


def test_floor_from_a_null_server_point() -> None:
    point = {
        "mode": "open",
        "users": 16,
        "rate": 500,
        "rps": 498.0,
        "p50_ms": 0.2,
        "p99_ms": 0.6,
        "requests": 5000,
    }
    floor = GeneratorFloor.from_point(point, USER)
    assert floor == GeneratorFloor(USER, 16, 500.0, 0.2, 0.6, 498.0, 5000)
    closed_floor = GeneratorFloor.from_point(closed(8, 8600.0, 1.0, 2.0), USER)
    assert closed_floor.closed and closed_floor.rps == 8600.0


def test_annotate_adds_fields_and_keeps_the_originals() -> None:
    points = [closed(1, 1200.0, 0.6), closed(1, 140.0, 7.0)]
    out = annotate(points, [USER, "TorchServeRestUser"], FLOORS)
    assert [p["generator_bound"] for p in out] == [True, False]
    assert out[0]["rps"] == 1200.0
    assert "generator_share" not in points[0]
    with pytest.raises(ValueError):
        annotate(points, [USER], FLOORS)


def test_rule_text_states_both_limits() -> None:
    text = rule_text()
    assert f"{GENERATOR_SHARE_LIMIT:.0%}" in text and f"{CEILING_USED_LIMIT:.0%}" in text
