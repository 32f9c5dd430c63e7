"""Open-loop arrival schedules, generated up front from a recorded seed.

As in MLPerf LoadGen's Server scenario, the whole timetable of request starts exists
before the first request is sent: Poisson arrivals (exponential gaps) by default, constant
spacing as an option. Latency is then counted from each request's *scheduled* start, so a
generator that falls behind shows up as lateness instead of vanishing from the figures,
and a rerun with the same seed offers the server exactly the same load.

With P generator processes, each process takes rate/P and seed + its index: the merged
schedule is again Poisson at the full rate (a sum of independent Poisson processes), and
no two processes share a timetable.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum

import numpy as np


class ArrivalKind(StrEnum):
    """How request starts are spaced."""

    POISSON = "poisson"  # exponential gaps: independent users, MLPerf's Server scenario
    CONSTANT = "constant"  # exactly 1/rate apart: a metronome, no bursts at all


DEFAULT_KIND = ArrivalKind.POISSON
# Gaps are drawn in blocks of this many times the expected count (plus a few), so one
# draw almost always covers the whole duration and the loop below rarely runs twice.
_DRAW_MARGIN = 1.1


def arrival_offsets(
    rate: float, duration_s: float, seed: int, kind: ArrivalKind | str = DEFAULT_KIND
) -> np.ndarray:
    """The scheduled start of every request, in seconds from the start of the run.

    Args:
        rate: mean arrivals per second (> 0).
        duration_s: length of the schedule; every offset is in [0, duration_s).
        seed: seeds the generator; the same (rate, duration, seed, kind) gives the same
            schedule on every machine. Ignored for constant spacing.
        kind: poisson (exponential gaps, the first arrival one gap after 0) or constant
            (k / rate for k = 0, 1, ...).

    Returns:
        Sorted float64 offsets in seconds.
    """
    kind = ArrivalKind(kind)
    if not rate > 0 or not math.isfinite(rate):
        raise ValueError(f"rate must be a positive finite number, got {rate!r}")
    if duration_s <= 0:
        return np.zeros(0)
    if kind is ArrivalKind.CONSTANT:
        count = math.ceil(duration_s * rate)
        offsets = np.arange(count, dtype=np.float64) / rate
        return offsets[offsets < duration_s]
    rng = np.random.default_rng(seed)
    expected = rate * duration_s
    block = int(expected * _DRAW_MARGIN + 10 * math.sqrt(expected) + 10)
    gaps: list[np.ndarray] = []
    total = 0.0
    while total < duration_s:
        drawn = rng.exponential(1.0 / rate, size=block)
        gaps.append(drawn)
        total += float(drawn.sum())
    offsets = np.cumsum(np.concatenate(gaps))
    return offsets[offsets < duration_s]


@dataclass(frozen=True)
class ArrivalPlan:
    """The settings that define a schedule: recorded with the point so it can be rerun."""

    rate: float
    duration_s: float
    seed: int
    kind: ArrivalKind = DEFAULT_KIND

    def for_process(self, index: int, processes: int) -> ArrivalPlan:
        """This generator process's share: rate / processes, seed + index.

        Args:
            index: the process's index, 0 <= index < processes.
            processes: how many generator processes share the load.

        Returns:
            The plan that process follows.
        """
        if processes < 1 or not 0 <= index < processes:
            raise ValueError(f"process index {index} out of range for {processes} processes")
        return ArrivalPlan(self.rate / processes, self.duration_s, self.seed + index, self.kind)

    def offsets(self) -> np.ndarray:
        """The schedule this plan defines (see arrival_offsets)."""
        return arrival_offsets(self.rate, self.duration_s, self.seed, self.kind)

    def to_json(self) -> dict:
        """The plan as plain values, for the point record and the run summary."""
        return {**asdict(self), "kind": self.kind.value}


class ArrivalSchedule:
    """Hands out the scheduled send times of one process's plan, one slot per request.

    The clock starts at the first `next_slot()` call (or at `origin`, if given). A user
    takes the next slot and sleeps until it; when every user is busy, slots fall due
    unserved, and their latency still counts from the slot time.
    """

    def __init__(
        self,
        plan: ArrivalPlan,
        origin: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.plan = plan
        self.offsets = plan.offsets()
        self.origin = origin
        self.clock = clock
        self.taken = 0

    def next_slot(self) -> float | None:
        """The next scheduled send time (seconds on `clock`), or None once the schedule
        is used up (the run is over: the caller stops sending)."""
        if self.origin is None:
            self.origin = self.clock()
        if self.taken >= len(self.offsets):
            return None
        slot = self.origin + float(self.offsets[self.taken])
        self.taken += 1
        return slot

    def remaining(self) -> int:
        """How many slots have not been handed out yet."""
        return len(self.offsets) - self.taken
