"""Stable points: repeat a measurement window until the last few agree.

As Triton's perf_analyzer does, a point is done when its last windows agree: here the
last three, within ±10% of their median in both throughput and p99. A point that never
settles within the allowed trials is flagged unstable, never averaged into a claim. A p99
needs enough requests behind it: the windows the verdict rests on must hold at least 1000
between them (their 99th percentiles then rest on ten or more requests together, and
their agreement shows that each window's own p99 was not one outlier). A point with fewer
is flagged too, with the advice to lengthen the window rather than repeat it: a slow
server at one user (TorchServe's dynamic batch delay, about 80 req/s) fills only a few
hundred requests in a window.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# The rule: the last three windows agree within ±10%.
DEFAULT_MIN_WINDOWS = 3
DEFAULT_TOLERANCE = 0.10
# Twice the minimum: enough for a drifting point to settle after a slow start, while a
# quick profile on 2 cores still ends in about 20 minutes.
DEFAULT_MAX_TRIALS = 6
# The 99th percentile of 1000 requests rests on its 10 slowest: fewer makes it one or two
# outliers.
MIN_P99_REQUESTS = 1000
# The figures that must agree, as named in the runner's point records.
STABLE_KEYS = ("rps", "p99_ms")


def relative_spread(values: Sequence[float]) -> float | None:
    """Largest |value - median| / median, or None when the median is not positive."""
    if not values:
        return None
    median = float(np.median(values))
    if median <= 0:
        return None
    return max(abs(v - median) for v in values) / median


def agreement(
    windows: Sequence[Mapping], tolerance: float, keys: Sequence[str] = STABLE_KEYS
) -> tuple[bool, str]:
    """Whether `windows` agree within ±tolerance of their median in every key.

    Returns:
        (agree, reason): the reason names the first figure that disagrees, and by how much.
    """
    for key in keys:
        values = [w.get(key) for w in windows]
        if any(v is None for v in values):
            return False, f"a window has no {key}"
        spread = relative_spread([float(v) for v in values])
        if spread is None:
            return False, f"{key} is zero"
        if spread > tolerance:
            return False, f"{key} spreads ±{spread:.0%} around its median (> ±{tolerance:.0%})"
    return True, f"last {len(windows)} windows within ±{tolerance:.0%} in {', '.join(keys)}"


@dataclass(frozen=True)
class StableResult:
    """Every window run for one point, and whether its last ones agreed."""

    windows: tuple[dict, ...]
    stable: bool
    reason: str
    enough_requests: bool
    min_windows: int = DEFAULT_MIN_WINDOWS
    tolerance: float = DEFAULT_TOLERANCE

    @property
    def last(self) -> tuple[dict, ...]:
        """The windows the verdict rests on."""
        return self.windows[-self.min_windows :]

    def median(self, key: str) -> float | None:
        """Median of `key` over the last windows (the point's figure when stable)."""
        values = [w[key] for w in self.last if w.get(key) is not None]
        return float(np.median(values)) if values else None

    def spread(self, key: str) -> float | None:
        """Relative spread of `key` over the last windows."""
        values = [float(w[key]) for w in self.last if w.get(key) is not None]
        return relative_spread(values)

    def to_json(self) -> dict:
        return {
            "stable": self.stable,
            "reason": self.reason,
            "enough_requests": self.enough_requests,
            "trials": len(self.windows),
            "min_windows": self.min_windows,
            "tolerance": self.tolerance,
            **{f"{key}_median": self.median(key) for key in STABLE_KEYS},
            **{f"{key}_spread": self.spread(key) for key in STABLE_KEYS},
        }


def run_until_stable(
    run_window: Callable[[int], Mapping],
    min_windows: int = DEFAULT_MIN_WINDOWS,
    max_trials: int = DEFAULT_MAX_TRIALS,
    tolerance: float = DEFAULT_TOLERANCE,
    min_requests: int = MIN_P99_REQUESTS,
) -> StableResult:
    """Runs windows until the last `min_windows` agree, or `max_trials` are spent.

    Args:
        run_window: measures one window, given its index (0, 1, ...); returns at least
            rps, p99_ms and requests.
        min_windows: how many of the latest windows must agree.
        max_trials: most windows to run.
        tolerance: allowed relative distance of each window from the median.
        min_requests: fewest requests the last `min_windows` windows need between them
            for their p99 to count.

    Returns:
        The windows and the verdict. Stops early, flagged, when the last windows hold
        fewer than `min_requests` requests between them: more windows of the same length
        would not give the p99 more requests.
    """
    if min_windows < 1 or max_trials < min_windows:
        raise ValueError("need 1 <= min_windows <= max_trials")
    windows: list[dict] = []
    reason = "no window run"

    def result(stable: bool, why: str, enough: bool = True) -> StableResult:
        return StableResult(tuple(windows), stable, why, enough, min_windows, tolerance)

    for index in range(max_trials):
        windows.append(dict(run_window(index)))
        if len(windows) < min_windows:
            continue
        last = windows[-min_windows:]
        requests = sum(int(w.get("requests", 0)) for w in last)
        if requests < min_requests:
            return result(
                False,
                f"too few requests for a p99: {requests} < {min_requests} in the last "
                f"{min_windows} window{'s' if min_windows > 1 else ''}; lengthen the window",
                enough=False,
            )
        agree, reason = agreement(last, tolerance)
        if agree:
            return result(True, reason)
    return result(False, f"unstable after {len(windows)} windows: {reason}")
