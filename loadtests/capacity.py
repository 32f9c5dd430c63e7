"""SLO capacity by search: the highest offered rate whose p99 meets the objective.

Four fixed fractions of the closed-loop peak only say that capacity lies somewhere in a
25-point gap. Here the offered (open-loop) rate is bisected instead, between a rate that
passes and one that fails, until the failing rate is within a stated relative precision
of the passing one. The result is the bracket itself: the highest passing and the lowest
failing rate, each with its figures, so the report can say "capacity lies in [a, b)".

A trial passes when its p99 meets the objective, at most 0.1% of its requests failed, it
completed at least one request, and it was valid. A point where the generator fell behind
its schedule measures the generator: it is invalid whatever its figures. A point that
missed the objective where the generator alone could explain the miss (its floor or its
ceiling) is invalid too; one that met the objective stands, since the generator only
adds latency. An invalid trial counts as failing and its reason is kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

# The objective: errors at most 0.1% of requests.
MAX_ERROR_RATE = 0.001
# Relative precision: the lowest failing rate is at most 5% above the highest passing one,
# finer than the run-to-run spread (±10%) the stability rule accepts.
DEFAULT_PRECISION = 0.05
# The search starts at a quarter of the closed-loop peak, which an open loop meets
# comfortably (the old lowest fraction), and at 1.5x the peak: open-loop capacity rarely
# exceeds the closed-loop peak, but a closed-loop peak the generator held down (Locust ran
# 40% below wrk on TorchServe) must still fall inside the bracket.
LO_FRACTION_OF_PEAK = 0.25
HI_FACTOR_OF_PEAK = 1.5
# When the high end passes, it is raised by this factor until a rate fails or the cap.
EXPAND_FACTOR = 1.5
# When the low end fails, it is lowered by this factor until a rate passes or the floor.
SHRINK_FACTOR = 4.0
# From [0.25, 1.5] x peak to 5% takes 6 bisections plus the 2 ends; 12 leaves room for a
# few expansions while keeping the quick profile's time bounded.
DEFAULT_MAX_TRIALS = 12


@dataclass(frozen=True)
class Trial:
    """One measured offered rate and whether it met the objective."""

    rate: float
    p99_ms: float | None
    requests: int
    failures: int
    passed: bool
    reason: str
    invalid: bool = False
    figures: Mapping = field(default_factory=dict)  # everything `measure` returned

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 1.0

    def to_json(self) -> dict:
        return {**asdict(self), "figures": dict(self.figures)}


def judge(
    rate: float, result: Mapping, slo_p99_ms: float, max_error_rate: float = MAX_ERROR_RATE
) -> Trial:
    """Turns one measurement into a Trial: passed or not, and why.

    Args:
        rate: the offered rate that was measured.
        result: p99_ms, requests, failures; optionally invalid (bool) and invalid_reason,
            and suspect_reason: why a miss may be the generator's, which makes the trial
            invalid only if it misses the objective.
        slo_p99_ms: the p99 objective in ms.
        max_error_rate: the largest share of failed requests that still passes.

    Returns:
        The trial, with the first reason it failed (or "meets the objective").
    """
    requests = int(result.get("requests", 0))
    failures = int(result.get("failures", 0))
    p99 = result.get("p99_ms")
    invalid = bool(result.get("invalid", False))
    if invalid:
        reason = f"invalid: {result.get('invalid_reason') or 'flagged by the measurement'}"
    elif requests == 0:
        reason = "no request completed"
    elif failures / requests > max_error_rate:
        reason = f"error rate {failures / requests:.2%} > {max_error_rate:.1%}"
    elif p99 is None or not math.isfinite(p99):
        reason = "no p99"
    elif p99 > slo_p99_ms:
        reason = f"p99 {p99:.1f} ms > {slo_p99_ms:g} ms"
    else:
        reason = "meets the objective"
    passed = reason == "meets the objective"
    suspect = result.get("suspect_reason")
    if not passed and not invalid and suspect:
        invalid = True
        reason = f"invalid: {reason}, but {suspect}"
    return Trial(rate, p99, requests, failures, passed, reason, invalid, dict(result))


@dataclass(frozen=True)
class Bracket:
    """Where the capacity under the objective lies: in [passing.rate, failing.rate)."""

    passing: Trial | None  # highest rate that passed; None if none did
    failing: Trial | None  # lowest rate above it that failed; None if all passed to the cap
    trials: tuple[Trial, ...]
    precision: float
    precision_reached: bool
    reason: str

    @property
    def width(self) -> float | None:
        """failing / passing - 1, the bracket's relative width (None if open-ended)."""
        if self.passing is None or self.failing is None:
            return None
        return self.failing.rate / self.passing.rate - 1.0

    def to_json(self) -> dict:
        return {
            "passing": self.passing.to_json() if self.passing else None,
            "failing": self.failing.to_json() if self.failing else None,
            "trials": [t.to_json() for t in self.trials],
            "n_trials": len(self.trials),
            "precision": self.precision,
            "precision_reached": self.precision_reached,
            "width": self.width,
            "reason": self.reason,
        }


def initial_bracket(closed_peak_rps: float) -> tuple[float, float]:
    """(lo, hi) to start the search from, as fractions of the closed-loop peak."""
    if closed_peak_rps <= 0:
        raise ValueError("the closed-loop peak must be positive")
    return LO_FRACTION_OF_PEAK * closed_peak_rps, HI_FACTOR_OF_PEAK * closed_peak_rps


def search_capacity(
    measure: Callable[[float], Mapping],
    slo_p99_ms: float,
    lo: float,
    hi: float,
    precision: float = DEFAULT_PRECISION,
    max_trials: int = DEFAULT_MAX_TRIALS,
    max_rate: float | None = None,
    min_rate: float | None = None,
    max_error_rate: float = MAX_ERROR_RATE,
) -> Bracket:
    """Bisects the offered rate for the highest one that meets the objective.

    Measures `lo` and `hi`, moves them until lo passes and hi fails (hi up by
    EXPAND_FACTOR to `max_rate`, lo down by SHRINK_FACTOR to `min_rate`), then measures
    the geometric midpoint until hi / lo - 1 <= precision. Assumes that a rate that fails
    fails at every higher rate; noisy results still give a valid bracket around a rate
    where passing turned to failing.

    Args:
        measure: runs one open-loop point at a rate; returns p99_ms, requests, failures,
            and optionally invalid / invalid_reason.
        slo_p99_ms: the p99 objective in ms.
        lo: a rate expected to pass (e.g. initial_bracket's).
        hi: a rate expected to fail.
        precision: the relative bracket width to reach.
        max_trials: measurements allowed in all.
        max_rate: highest rate ever tried (default 8 x hi).
        min_rate: lowest rate ever tried (default lo / 64).
        max_error_rate: the largest share of failed requests that passes.

    Returns:
        The bracket, every trial in order, and whether the precision was reached.
    """
    if not 0 < lo < hi:
        raise ValueError(f"need 0 < lo < hi, got lo={lo}, hi={hi}")
    if precision <= 0 or max_trials < 2:
        raise ValueError("precision must be > 0 and max_trials >= 2")
    max_rate = max_rate if max_rate is not None else 8 * hi
    min_rate = min_rate if min_rate is not None else lo / 64
    trials: list[Trial] = []

    def run(rate: float) -> Trial:
        trial = judge(rate, measure(rate), slo_p99_ms, max_error_rate)
        trials.append(trial)
        return trial

    def done(passing: Trial | None, failing: Trial | None, reason: str) -> Bracket:
        reached = (
            passing is not None
            and failing is not None
            and failing.rate / passing.rate - 1.0 <= precision
        )
        return Bracket(passing, failing, tuple(trials), precision, reached, reason)

    # Find a passing low end.
    low = run(lo)
    failing: Trial | None = None
    while not low.passed:
        failing = low
        rate = low.rate / SHRINK_FACTOR
        if rate < min_rate:
            return done(None, failing, f"no rate passed down to {low.rate:g} req/s")
        if len(trials) >= max_trials:
            return done(None, failing, "trials ran out before a rate passed")
        low = run(rate)
    passing = low
    # Find a failing high end (unless the low end's search already found one).
    if failing is None:
        rate = hi
        while True:
            if len(trials) >= max_trials:
                return done(passing, None, "trials ran out before a rate failed")
            high = run(rate)
            if not high.passed:
                failing = high
                break
            passing = high
            if rate >= max_rate:
                return done(passing, None, f"every rate passed up to the cap {max_rate:g}")
            rate = min(rate * EXPAND_FACTOR, max_rate)
    # Bisect.
    while failing.rate / passing.rate - 1.0 > precision:
        if len(trials) >= max_trials:
            return done(passing, failing, "trials ran out before the precision was reached")
        middle = run(math.sqrt(passing.rate * failing.rate))
        if middle.passed:
            passing = middle
        else:
            failing = middle
    return done(passing, failing, f"capacity within {precision:.0%}")
