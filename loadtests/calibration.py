"""The generator's floor, and how much of each measured point is the generator's own.

Before a sweep, each Locust user class runs against the null server (nginx answering the
stack's exact reply, loadtests.null_server) at each concurrency and rate of the profile.
What it measures there is the generator alone: its floor latency (p50, p99) and, closed
loop, its ceiling in req/s at that concurrency. Every point of the sweep is then read
against the floor at the same load:

  generator_share = floor p50 / point p50       (how much of the p50 is the generator's)
  ceiling_used    = point req/s / floor req/s   (how much of the generator's ceiling the
                                                 point used, at the same concurrency)

A point is generator-bound when either exceeds its limit (below). Such a point never
becomes a headline or a claim. Pure functions over point dicts and small dataclasses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

# In a closed loop every user's cycle is the generator's floor plus the server's time, so
# a generator share s lowers the measured req/s by about s against a free client. NOTES.md
# measured shares of 0.29-0.37 where Locust read 40-45% below wrk (Flask at 1 user,
# TorchServe at 8 users) and 0.03 where the two agreed (TorchServe at 1 user): a quarter
# flags the former with margin and keeps the latter. (One half would have passed both
# distorted points.)
GENERATOR_SHARE_LIMIT = 0.25
# The generator is a queue too: at utilisation u its own waiting time is u / (1 - u) of
# its per-request cost, equal to that cost at u = 0.5. Past half its ceiling, its own
# queueing is as large as its own work, and grows steeply from there.
CEILING_USED_LIMIT = 0.5
# An open-loop trial that misses the objective is the generator's failure, not the
# server's, when the generator alone (its floor p99 against the null server at the same
# rate) already takes more than this share of the objective. A trial that meets the
# objective passes whatever the generator's share: the generator only adds latency, and
# in an open loop it cannot lower the offered rate without falling behind its schedule,
# which the send lateness catches.
FLOOR_P99_SHARE_OF_SLO = 0.5
# Two rates closer than this (relative) are the same rate when looking up a floor.
_SAME_RATE = 1e-6


def rule_text() -> str:
    """The generator-bound rule in words, for the report."""
    return (
        "A point is generator-bound when the generator's own floor p50 (measured against "
        f"the null server at the same load) is more than {GENERATOR_SHARE_LIMIT:.0%} of the "
        "point's p50, or when the point's req/s is more than "
        f"{CEILING_USED_LIMIT:.0%} of the generator's ceiling at the same concurrency. "
        "Generator-bound points are shown but never used for a headline or a claim."
    )


@dataclass(frozen=True)
class GeneratorFloor:
    """One user class against the null server at one load: the generator alone."""

    user_class: str
    users: int
    rate: float | None  # None: closed loop
    p50_ms: float
    p99_ms: float
    rps: float  # req/s achieved; closed loop, the generator's ceiling at `users`
    requests: int = 0

    @property
    def closed(self) -> bool:
        return self.rate is None

    @classmethod
    def from_point(cls, point: Mapping, user_class: str) -> GeneratorFloor:
        """A floor from a point record measured against the null server.

        Args:
            point: a runner point record (users, mode, rate, p50_ms, p99_ms, rps).
            user_class: the Locust user class that produced it.

        Returns:
            The floor.
        """
        rate = point.get("rate") if point.get("mode") == "open" else None
        return cls(
            user_class=user_class,
            users=int(point["users"]),
            rate=float(rate) if rate is not None else None,
            p50_ms=float(point["p50_ms"]),
            p99_ms=float(point["p99_ms"]),
            rps=float(point["rps"]),
            requests=int(point.get("requests", 0)),
        )

    def to_json(self) -> dict:
        return asdict(self)


def generator_share(floor_p50_ms: float | None, point_p50_ms: float | None) -> float | None:
    """Share of a point's p50 that is the generator's floor (None when either is unknown).

    Args:
        floor_p50_ms: the generator's p50 against the null server at the same load.
        point_p50_ms: the point's measured p50.

    Returns:
        floor / point; above 1 means the point was faster than the generator's own floor,
        which can only be noise, and counts as generator-bound.
    """
    if floor_p50_ms is None or point_p50_ms is None or point_p50_ms <= 0:
        return None
    return floor_p50_ms / point_p50_ms


def ceiling_used(point_rps: float | None, ceiling_rps: float | None) -> float | None:
    """Fraction of the generator's ceiling (req/s at the same concurrency) a point used.

    Returns:
        point / ceiling, or None when either is unknown or the ceiling is zero.
    """
    if point_rps is None or ceiling_rps is None or ceiling_rps <= 0:
        return None
    return point_rps / ceiling_rps


def find_floor(
    floors: Sequence[GeneratorFloor], user_class: str, users: int, rate: float | None = None
) -> GeneratorFloor | None:
    """The floor at a load: exact for a closed loop; for an open loop the floor at the
    same rate, or interpolated linearly between the two measured rates around it.

    Args:
        floors: every floor measured.
        user_class, users: the point's user class and user count.
        rate: the point's offered rate (None for a closed loop).

    Returns:
        The floor, or None where none was measured (or `rate` lies outside the measured
        rates: extrapolating a generator's floor would be a guess).
    """
    same = [f for f in floors if f.user_class == user_class and f.users == users]
    if rate is None:
        return next((f for f in same if f.closed), None)
    measured = sorted((f for f in same if not f.closed), key=lambda f: f.rate)
    for floor in measured:
        if abs(floor.rate - rate) <= _SAME_RATE * max(rate, 1.0):
            return floor
    below = [f for f in measured if f.rate < rate]
    above = [f for f in measured if f.rate > rate]
    if not below or not above:
        return None
    lo, hi = below[-1], above[0]
    weight = (rate - lo.rate) / (hi.rate - lo.rate)

    def mix(a: float, b: float) -> float:
        return a + weight * (b - a)

    return GeneratorFloor(
        user_class=user_class,
        users=users,
        rate=rate,
        p50_ms=mix(lo.p50_ms, hi.p50_ms),
        p99_ms=mix(lo.p99_ms, hi.p99_ms),
        rps=mix(lo.rps, hi.rps),
    )


def ceiling_for(floors: Sequence[GeneratorFloor], user_class: str, users: int) -> float | None:
    """The generator's ceiling in req/s at `users`: its closed-loop floor's throughput."""
    closed = find_floor(floors, user_class, users)
    return closed.rps if closed is not None else None


@dataclass(frozen=True)
class GeneratorAssessment:
    """How much of one point is the generator's, and whether the generator bounds it."""

    calibrated: bool  # a floor and a ceiling were found for this point's load
    generator_share: float | None
    tail_share: float | None  # floor p99 / point p99: shown, not part of the rule
    floor_p99_ms: float | None
    ceiling_used: float | None
    # None when uncalibrated: unknown, which is neither a pass nor a flag.
    generator_bound: bool | None
    reason: str

    def to_json(self) -> dict:
        return asdict(self)


def assess_point(
    point: Mapping, user_class: str, floors: Sequence[GeneratorFloor]
) -> GeneratorAssessment:
    """Reads one point against the generator's floor at the same load.

    Args:
        point: a runner point record (mode, users, rate, rps, p50_ms, p99_ms).
        user_class: the Locust user class that measured it.
        floors: the floors measured before the sweep (empty when nginx was absent).

    Returns:
        Shares, the ceiling used, and the generator-bound verdict with its reason.
    """
    users = int(point["users"])
    rate = point.get("rate") if point.get("mode") == "open" else None
    floor = find_floor(floors, user_class, users, rate)
    ceiling = ceiling_for(floors, user_class, users)
    share = generator_share(floor.p50_ms if floor else None, point.get("p50_ms"))
    tail = generator_share(floor.p99_ms if floor else None, point.get("p99_ms"))
    used = ceiling_used(point.get("rps"), ceiling)
    floor_p99 = floor.p99_ms if floor else None
    missing = []
    if floor is None:
        missing.append(
            f"no floor for {user_class} at {users} users"
            + (f", {rate:g} req/s" if rate is not None else "")
        )
    if ceiling is None:
        missing.append(f"no ceiling for {user_class} at {users} users")
    if share is None or used is None:
        reason = "uncalibrated: " + ("; ".join(missing) or "the point measured nothing")
        return GeneratorAssessment(False, share, tail, floor_p99, used, None, reason)
    problems = []
    if share > GENERATOR_SHARE_LIMIT:
        problems.append(
            f"generator floor is {share:.0%} of p50 (limit {GENERATOR_SHARE_LIMIT:.0%})"
        )
    if used > CEILING_USED_LIMIT:
        problems.append(
            f"used {used:.0%} of the generator's ceiling (limit {CEILING_USED_LIMIT:.0%})"
        )
    reason = "; ".join(problems) if problems else "generator share and ceiling within limits"
    return GeneratorAssessment(True, share, tail, floor_p99, used, bool(problems), reason)


def failure_cause(point: Mapping, slo_p99_ms: float) -> str | None:
    """Why a capacity trial that missed the objective may have missed it because of the
    generator (None when the generator cannot explain it, or is uncalibrated: then the
    failure is the server's as measured).

    Args:
        point: an annotated open-loop point (generator_floor_p99_ms,
            generator_ceiling_used).
        slo_p99_ms: the p99 objective in ms.
    """
    problems = []
    floor_p99 = point.get("generator_floor_p99_ms")
    if floor_p99 is not None and floor_p99 > FLOOR_P99_SHARE_OF_SLO * slo_p99_ms:
        problems.append(
            f"the generator's own p99 at this rate is {floor_p99:.1f} ms, more than "
            f"{FLOOR_P99_SHARE_OF_SLO:.0%} of the objective"
        )
    used = point.get("generator_ceiling_used")
    if used is not None and used > CEILING_USED_LIMIT:
        problems.append(
            f"used {used:.0%} of the generator's ceiling (limit {CEILING_USED_LIMIT:.0%})"
        )
    return "; ".join(problems) or None


def annotate(
    points: Sequence[Mapping], user_classes: Sequence[str], floors: Sequence[GeneratorFloor]
) -> list[dict]:
    """Copies of `points`, each with its assessment's fields added (prefixed generator_).

    Args:
        points: runner point records.
        user_classes: the user class of each point, in the same order.
        floors: the floors measured before the sweep.

    Returns:
        New dicts: generator_share, generator_tail_share, generator_floor_p99_ms,
        generator_ceiling_used,
        generator_bound, generator_calibrated, generator_reason.
    """
    if len(points) != len(user_classes):
        raise ValueError("one user class per point")
    out = []
    for point, user_class in zip(points, user_classes, strict=True):
        verdict = assess_point(point, user_class, floors)
        out.append(
            {
                **point,
                "generator_share": verdict.generator_share,
                "generator_tail_share": verdict.tail_share,
                "generator_floor_p99_ms": verdict.floor_p99_ms,
                "generator_ceiling_used": verdict.ceiling_used,
                "generator_bound": verdict.generator_bound,
                "generator_calibrated": verdict.calibrated,
                "generator_reason": verdict.reason,
            }
        )
    return out
