"""The capacity a set of closed-loop levels shows under the objective (pure)."""

from __future__ import annotations

from loadtests.closed_wrk import capacity_under_objective


def level(connections: int, rps: float, p99_ms: float, errors: int = 0) -> dict:
    return {"connections": connections, "rps": rps, "p99_ms": p99_ms, "errors": errors}


def test_capacity_is_the_best_level_that_meets_the_objective_without_errors() -> None:
    levels = [level(1, 1500, 1.0), level(4, 2500, 40.0), level(16, 3000, 80.0)]
    assert capacity_under_objective(levels, 50.0)["connections"] == 4
    assert capacity_under_objective([*levels[:1], level(4, 2500, 4.0, errors=3)],
                                    50.0)["connections"] == 1  # fmt: skip
    assert capacity_under_objective([level(1, 10, 90.0)], 50.0) is None


def test_the_capacity_cell_says_why_there_is_none() -> None:
    from loadtests.closed_wrk import capacity_cell

    assert capacity_cell({"capacity_rps": 1500.4, "capacity_connections": 4}) == "1500 (4)"
    missed = {"capacity_rps": None, "levels": [level(1, 56.2, 85.0), level(4, 90, 120)]}
    assert capacity_cell(missed) == ("none meets the objective: below one connection's 56 "
                                     "req/s (`make bench` searches it open-loop)")  # fmt: skip
    assert capacity_cell({"capacity_rps": None, "levels": []}) == "none meets the objective"
