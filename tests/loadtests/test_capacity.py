"""SLO capacity search against simulated servers whose capacity under the SLO is known."""

from __future__ import annotations

import math

import pytest

from loadtests.capacity import (
    DEFAULT_PRECISION,
    MAX_ERROR_RATE,
    initial_bracket,
    judge,
    search_capacity,
)

SLO_MS = 50.0


class QueueServer:
    """A single-server queue: p99 = service / (1 - rate / capacity), infinite at or above
    capacity. Under the objective it holds up to capacity * (1 - service / slo)."""

    def __init__(self, capacity: float, service_ms: float, requests_per_s: float = 10.0):
        self.capacity = capacity
        self.service_ms = service_ms
        self.requests_per_s = requests_per_s
        self.rates: list[float] = []

    @property
    def known(self) -> float:
        return self.capacity * (1 - self.service_ms / SLO_MS)

    def __call__(self, rate: float) -> dict:
        self.rates.append(rate)
        load = rate / self.capacity
        p99 = self.service_ms / (1 - load) if load < 1 else math.inf
        return {"p99_ms": p99, "requests": int(rate * self.requests_per_s), "failures": 0}


def mm1(mu: float) -> tuple:
    """M/M/1: sojourn time is exponential with rate mu - lambda, so its p99 is
    ln(100) / (mu - lambda); under the objective lambda <= mu - ln(100) / slo."""

    def measure(rate: float) -> dict:
        p99_s = math.log(100) / (mu - rate) if rate < mu else math.inf
        return {"p99_ms": p99_s * 1000, "requests": 10_000, "failures": 0}

    return measure, mu - math.log(100) / (SLO_MS / 1000)


def assert_brackets(bracket, known: float, precision: float = DEFAULT_PRECISION) -> None:
    assert bracket.passing is not None and bracket.failing is not None
    assert bracket.passing.rate <= known < bracket.failing.rate
    assert bracket.width <= precision
    assert bracket.precision_reached
    assert bracket.passing.passed and not bracket.failing.passed


@pytest.mark.parametrize("capacity,service_ms", [(4900.0, 1.5), (2400.0, 3.0), (140, 7.0)])
def test_bisection_brackets_the_known_capacity(capacity: float, service_ms: float) -> None:
    server = QueueServer(capacity, service_ms)
    lo, hi = initial_bracket(closed_peak_rps=capacity * 0.9)
    bracket = search_capacity(server, SLO_MS, lo, hi)
    assert_brackets(bracket, server.known)
    assert len(bracket.trials) == len(server.rates) <= 12
    assert [t.rate for t in bracket.trials] == server.rates


def test_mm1_capacity_is_bracketed_to_a_finer_precision() -> None:
    measure, known = mm1(mu=3000.0)
    bracket = search_capacity(measure, SLO_MS, 500.0, 4000.0, precision=0.01, max_trials=20)
    assert_brackets(bracket, known, precision=0.01)


def test_the_bracket_keeps_each_ends_figures() -> None:
    server = QueueServer(1000.0, 2.0)
    bracket = search_capacity(server, SLO_MS, 250.0, 1500.0)
    assert bracket.passing.p99_ms <= SLO_MS < bracket.failing.p99_ms
    assert bracket.passing.figures["requests"] == bracket.passing.requests
    data = bracket.to_json()
    assert data["n_trials"] == len(bracket.trials)
    assert data["passing"]["rate"] == bracket.passing.rate
    assert data["width"] == pytest.approx(bracket.width)


def test_a_high_end_that_passes_is_raised_until_it_fails() -> None:
    server = QueueServer(10_000.0, 1.0)  # the closed-loop peak badly underestimated it
    bracket = search_capacity(server, SLO_MS, 500.0, 1000.0, max_trials=20, max_rate=50_000)
    assert_brackets(bracket, server.known)
    assert max(server.rates) > 1000.0


def test_a_low_end_that_fails_is_lowered_until_it_passes() -> None:
    server = QueueServer(100.0, 5.0)
    bracket = search_capacity(server, SLO_MS, 500.0, 1000.0, max_trials=20)
    assert_brackets(bracket, server.known)


def test_everything_fails() -> None:
    def broken(rate: float) -> dict:
        return {"p99_ms": 5.0, "requests": 1000, "failures": 1000}

    bracket = search_capacity(broken, SLO_MS, 100.0, 1000.0, min_rate=1.0)
    assert bracket.passing is None
    assert bracket.failing is not None and bracket.failing.rate <= 100.0
    assert not bracket.precision_reached
    assert "no rate passed" in bracket.reason
    assert all(not t.passed for t in bracket.trials)


def test_everything_passes_up_to_the_cap() -> None:
    def idle(rate: float) -> dict:
        return {"p99_ms": 1.0, "requests": 1000, "failures": 0}

    bracket = search_capacity(idle, SLO_MS, 100.0, 1000.0, max_rate=3000.0, max_trials=20)
    assert bracket.failing is None
    assert bracket.passing.rate == 3000.0
    assert not bracket.precision_reached
    assert "cap" in bracket.reason
    assert bracket.width is None


def test_running_out_of_trials_says_so() -> None:
    server = QueueServer(1000.0, 2.0)
    bracket = search_capacity(server, SLO_MS, 100.0, 5000.0, max_trials=4)
    assert len(bracket.trials) == 4
    assert not bracket.precision_reached
    assert bracket.passing.rate <= server.known < bracket.failing.rate
    assert "trials ran out" in bracket.reason


def test_errors_above_the_limit_fail_even_with_a_good_p99() -> None:
    def shedding(rate: float) -> dict:
        # Sheds load above 800 req/s: fast 503s, the p99 stays low.
        failures = 0 if rate <= 800 else int(rate)
        return {"p99_ms": 2.0, "requests": int(rate * 10), "failures": failures}

    bracket = search_capacity(shedding, SLO_MS, 200.0, 1200.0)
    assert_brackets(bracket, 800.0)
    assert "error rate" in bracket.failing.reason


def test_a_generator_that_fell_behind_counts_as_failing_and_is_recorded() -> None:
    server = QueueServer(5000.0, 1.0)

    def measure(rate: float) -> dict:
        result = server(rate)
        if rate > 2000:  # the generator cannot keep this schedule
            result.update(invalid=True, invalid_reason="send lateness p99 20 ms")
        return result

    bracket = search_capacity(measure, SLO_MS, 500.0, 7500.0)
    assert_brackets(bracket, 2000.0)
    assert bracket.failing.invalid
    assert "send lateness" in bracket.failing.reason


def test_a_suspect_trial_is_invalid_only_when_it_misses_the_objective() -> None:
    suspect = "the generator's own p99 at this rate is 30.0 ms"
    met = judge(1.0, {"p99_ms": 20.0, "requests": 1000, "failures": 0,
                      "suspect_reason": suspect}, SLO_MS)  # fmt: skip
    assert met.passed and not met.invalid
    missed = judge(1.0, {"p99_ms": 80.0, "requests": 1000, "failures": 0,
                         "suspect_reason": suspect}, SLO_MS)  # fmt: skip
    assert not missed.passed and missed.invalid
    assert "p99 80.0 ms > 50 ms" in missed.reason and suspect in missed.reason
    plain = judge(1.0, {"p99_ms": 80.0, "requests": 1000, "failures": 0,
                        "suspect_reason": None}, SLO_MS)  # fmt: skip
    assert not plain.passed and not plain.invalid


def test_judge_rules() -> None:
    assert judge(1.0, {"p99_ms": 50.0, "requests": 1000, "failures": 1}, SLO_MS).passed
    assert not judge(1.0, {"p99_ms": 50.1, "requests": 1000, "failures": 0}, SLO_MS).passed
    assert not judge(1.0, {"p99_ms": 1.0, "requests": 1000, "failures": 2}, SLO_MS).passed
    assert not judge(1.0, {"p99_ms": None, "requests": 0, "failures": 0}, SLO_MS).passed
    assert MAX_ERROR_RATE == 0.001


@pytest.mark.parametrize("lo,hi", [(0.0, 1.0), (10.0, 10.0), (20.0, 10.0)])
def test_bad_brackets_are_refused(lo: float, hi: float) -> None:
    with pytest.raises(ValueError):
        search_capacity(QueueServer(100.0, 1.0), SLO_MS, lo, hi)


def test_initial_bracket_from_the_closed_loop_peak() -> None:
    assert initial_bracket(2000.0) == (500.0, 3000.0)
    with pytest.raises(ValueError):
        initial_bracket(0.0)
