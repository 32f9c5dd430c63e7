"""Claims that survive a rerun: eligibility of a level, and rankings beyond the spread."""

from __future__ import annotations

import math

from loadtests import claims
from loadtests.claims import Estimate


def level(**fields) -> dict:
    base = {"mode": "closed", "protocol": "rest", "generator_bound": False, "stable": True,
            "divergence": {"rps": -0.02, "p50": 0.01, "flagged": False,
                           "reason": "within 15% of wrk", "limit": 0.15}}  # fmt: skip
    return base | fields


def test_a_stable_calibrated_level_that_agrees_with_wrk_carries_a_claim() -> None:
    verdict = claims.judge_level(level())
    assert verdict.claim_ok and verdict.headline_ok
    assert verdict.cross_checked is True and verdict.caveats == ()


def test_a_generator_bound_level_is_neither_headline_nor_claim() -> None:
    verdict = claims.judge_level(level(generator_bound=True, generator_reason="floor 35%"))
    assert not verdict.headline_ok and not verdict.claim_ok
    assert verdict.exclusions == ("generator-bound (floor 35%)",)


def test_unstable_divergent_or_saturated_levels_are_headlines_but_not_claims() -> None:
    unstable = claims.judge_level(level(stable=False, stability_reason="rps ±17%"))
    divergent = claims.judge_level(level(divergence={"flagged": True, "reason": "req/s -39%"}))
    saturated = claims.judge_level(level(generator_saturated=True))
    for verdict in (unstable, divergent, saturated):
        assert verdict.headline_ok and not verdict.claim_ok
    assert unstable.exclusions == ("unstable (rps ±17%)",)
    assert divergent.exclusions == ("diverges from wrk (req/s -39%)",)
    assert divergent.cross_checked is False


def test_unknowns_are_caveats_not_exclusions() -> None:
    # An old run: no generator verdict, no stability verdict, no wrk.
    old = claims.judge_level({"mode": "closed", "protocol": "rest"})
    assert old.claim_ok and old.cross_checked is None
    assert old.caveats == ("generator share unknown (uncalibrated)",
                           "not cross-checked with wrk: wrk not run for this level")
    grpc = claims.judge_level(level(protocol="grpc", divergence=None,
                                    wrk_skipped="gRPC: wrk speaks HTTP only"))
    assert grpc.claim_ok
    assert grpc.caveats == ("not cross-checked with wrk: gRPC: wrk speaks HTTP only",)
    # Open-loop levels have no wrk beside them: nothing to say.
    assert claims.judge_level(level(mode="open", divergence=None)).caveats == ()


def estimate(name: str, low: float, high: float) -> Estimate:
    return Estimate(name, (low + high) / 2, low, high)


def test_overlapping_ranges_give_no_significant_difference() -> None:
    ranking = claims.rank([estimate("A", 0.50, 0.60), estimate("B", 0.58, 0.70)], False)
    assert ranking.winner is None
    assert [e.name for e in ranking.leaders] == ["A", "B"] and ranking.behind == ()
    line = claims.claim_line("Lowest latency", ranking)
    assert line == "- **Lowest latency**: no significant difference between A and B: their " \
        "ranges overlap."  # fmt: skip


def test_separated_ranges_rank() -> None:
    # Lower is better: A's slowest window (0.55) beats B's fastest (0.58).
    ranking = claims.rank([estimate("B", 0.58, 0.70), estimate("A", 0.50, 0.55)], False)
    assert ranking.winner is not None and ranking.winner.name == "A"
    assert claims.claim_line("Lowest latency", ranking) == (
        "- **Lowest latency**: A, ahead of B beyond the spread of their repeats."
    )
    # Higher is better: A's lowest window (2100) above B's highest (2000).
    ranking = claims.rank([estimate("B", 1900, 2000), estimate("A", 2100, 2200)], True)
    assert ranking.winner.name == "A"


def test_ranges_that_touch_are_not_a_difference() -> None:
    ranking = claims.rank([estimate("A", 0.50, 0.58), estimate("B", 0.58, 0.70)], False)
    assert ranking.winner is None


def test_ties_at_the_top_and_a_third_behind_both() -> None:
    ranking = claims.rank(
        [estimate("A", 2000, 2100), estimate("B", 1950, 2150), estimate("C", 300, 320)], True
    )
    line = claims.claim_line("Peak", ranking, ["D at 16 users: unstable"])
    assert line == (
        "- **Peak**: no significant difference between A and B: their ranges overlap; both "
        "ahead of C. Left out: D at 16 users: unstable."
    )


def test_capacity_brackets_rank_only_when_they_do_not_overlap() -> None:
    torchserve = claims.capacity_estimate("torchserve", 2400, 2520)
    flask = claims.capacity_estimate("flask", 1800, 1890)
    assert claims.rank([flask, torchserve], True).winner.name == "torchserve"
    # Flask's bracket [1800, 2500) reaches into TorchServe's: no significant difference.
    wide = claims.capacity_estimate("flask", 1800, 2500)
    assert claims.rank([wide, torchserve], True).winner is None
    # Every rate passed: the bracket is open upwards, so nothing ranks above it.
    open_ended = claims.capacity_estimate("flask", 1800, None)
    assert open_ended.high == math.inf
    assert claims.rank([open_ended, torchserve], True).winner is None
    # No rate passed: its capacity lies below its lowest failing rate.
    none_passed = claims.capacity_estimate("flask", None, 500)
    assert claims.rank([none_passed, torchserve], True).winner.name == "torchserve"


def test_shared_caveats_are_said_once_per_line() -> None:
    shared = "not cross-checked with wrk: wrk is not installed"
    ranking = claims.rank([
        Estimate("A", 1.0, 0.9, 1.1, "p50 1.0 ms", (shared,)),
        Estimate("B", 3.0, 2.9, 3.1, "p50 3.0 ms", (shared, "uncalibrated")),
    ], False)  # fmt: skip
    assert claims.claim_line("Lowest latency", ranking) == (
        "- **Lowest latency**: A (p50 1.0 ms), ahead of B (p50 3.0 ms) [uncalibrated] beyond "
        f"the spread of their repeats. All of them: {shared}."
    )


def test_nothing_or_one_target_qualifies() -> None:
    assert claims.claim_line("Peak", claims.rank([], True), ["A: unstable"]) == (
        "- **Peak**: no level qualifies for a claim. Left out: A: unstable."
    )
    line = claims.claim_line("Peak", claims.rank([estimate("A", 1, 2)], True))
    assert "the only target with a level that qualifies" in line


def test_window_estimate_reads_the_spread_of_the_windows() -> None:
    record = {"p50_ms": 2.0, "p50_ms_min": 1.9, "p50_ms_max": 2.1}
    got = claims.window_estimate("A", record, "p50_ms")
    assert (got.value, got.low, got.high) == (2.0, 1.9, 2.1)
    single = claims.window_estimate("A", {"rps": 100.0, "rps_min": None}, "rps")
    assert (single.low, single.high) == (100.0, 100.0)
    assert claims.window_estimate("A", {"rps": None}, "rps") is None


def test_legacy_bracket_from_fixed_open_loop_fractions() -> None:
    points = [
        {"rate": 600, "p99_ms": 10, "failures": 0},
        {"rate": 1200, "p99_ms": 20, "failures": 0},
        {"rate": 1800, "p99_ms": 90, "failures": 0},
        {"rate": 2160, "p99_ms": 300, "failures": 3},
    ]
    assert claims.legacy_bracket(points, 50) == (1200, 1800)
    assert claims.legacy_bracket(points[:2], 50) == (1200, None)
    saturated = [{"rate": 600, "p99_ms": 10, "failures": 0, "generator_saturated": True}]
    assert claims.legacy_bracket(saturated, 50) == (None, 600)


def test_wrk_estimate_takes_the_windows_spread_and_at_least_the_divergence_limit() -> None:
    wrk = {"goodput_rps": 2000.0, "rps": 2100.0, "p50_ms": 0.4, "status_errors": 0}
    level = {"users": 1, "rps": 1000.0, "rps_min": 700.0, "rps_max": 1300.0,
             "p50_ms": 0.6, "p50_ms_min": 0.59, "p50_ms_max": 0.61, "wrk": wrk}  # fmt: skip
    rps = claims.wrk_estimate("flask", level, "rps", "req/s", ["generator-bound (35%)"])
    # Goodput, not every reply; the windows spread ±30%, wider than the 15% floor.
    assert (rps.value, rps.low, rps.high) == (2000.0, 1400.0, 2600.0)
    assert rps.caveats == ("by wrk: Locust's figure generator-bound (35%)",)
    assert rps.detail == "wrk 2000 req/s ±30% at 1 connection"
    p50 = claims.wrk_estimate("flask", level, "p50_ms", "ms")
    assert p50.low == 0.4 * (1 - claims.WRK_MIN_SPREAD) and p50.caveats == ("by wrk",)
    assert claims.wrk_estimate("flask", {**level, "wrk": None}, "rps", "req/s") is None
    failed = {**level, "wrk": {**wrk, "status_errors": 3}}
    assert claims.wrk_estimate("flask", failed, "rps", "req/s") is None


def test_wrk_estimate_with_repeated_runs_carries_their_own_spread() -> None:
    runs = [{"goodput_rps": r, "p50_ms": p, "status_errors": 0}
            for r, p in [(900.0, 1.2), (1000.0, 1.0), (1100.0, 1.1)]]  # fmt: skip
    level = {"users": 4, "rps": 500.0, "rps_min": 100.0, "rps_max": 900.0,
             "wrk": runs[1], "wrk_runs": runs}  # fmt: skip
    rps = claims.wrk_estimate("flask", level, "rps", "req/s", ["unstable"])
    # The median of the runs, ranked on their min-max: Locust's ±80% plays no part.
    assert (rps.value, rps.low, rps.high) == (1000.0, 900.0, 1100.0)
    assert rps.detail == "wrk 1000 req/s, runs 900–1100 at 4 connections"
    p50 = claims.wrk_estimate("flask", level, "p50_ms", "ms")
    assert (p50.value, p50.low, p50.high) == (1.1, 1.0, 1.2)
    # One failed run and the level carries no wrk claim at all.
    broken = [*runs[:2], {**runs[2], "timeouts": 1}]
    assert claims.wrk_estimate("flask", {**level, "wrk_runs": broken}, "rps", "req/s") is None
