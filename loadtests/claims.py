"""Claims that survive a rerun: which levels may carry one, and rankings beyond the spread.

Two runs of the same sweep an hour apart moved absolute figures by 20-40% and flipped the
old "most capacity" answer. A conclusion survives that only where the two stacks differ by
more than the spread of their own repeats, so a ranking here compares ranges, not medians:

- a figure measured over windows ranks A ahead of B only when A's worst window beats B's
  best (lower is better: A's max < B's min; higher is better: A's min > B's max);
- an SLO capacity is a bracket [passing rate, failing rate); A ranks ahead of B only when
  A's passing rate exceeds B's failing rate, i.e. the brackets do not overlap.

Otherwise the answer is "no significant difference". Only levels that are stable, not
generator-bound and (closed-loop REST) within the divergence limit of wrk carry a claim
on Locust's figure; a level without wrk still may, said as not cross-checked. Where
Locust's figure cannot carry one but wrk measured the level, the claim rests on wrk's
figure instead (wrk_estimate), said so. Pure functions over the report's level records
(plain dicts) and small dataclasses.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

# The phrase the report uses where ranges overlap, written once so tests and readers can
# find it.
NO_DIFFERENCE = "no significant difference between"


@dataclass(frozen=True)
class Eligibility:
    """Whether one level may be a headline figure and carry a claim, and why not."""

    generator_bound: bool
    exclusions: tuple[str, ...]  # why the level carries no claim (empty: it may)
    caveats: tuple[str, ...]  # said with any claim it carries (e.g. not cross-checked)
    cross_checked: bool | None  # True: agrees with wrk; False: diverges; None: no wrk

    @property
    def headline_ok(self) -> bool:
        """A generator-bound level measured the generator: never a headline figure."""
        return not self.generator_bound

    @property
    def claim_ok(self) -> bool:
        return not self.exclusions


def judge_level(level: Mapping) -> Eligibility:
    """Reads one aggregated level record against the claim rules.

    Args:
        level: a report level record: mode, protocol, generator_bound (True/False/None),
            generator_reason, generator_saturated (the old CPU gate), stable (None where
            the run did not judge it),
            stability_reason, divergence (wrk.ClientDivergence.to_json() or None),
            wrk_skipped (why wrk did not run, or None).

    Returns:
        The verdict. Unknowns (uncalibrated, no stability verdict, no wrk) are caveats,
        not exclusions: they are neither a pass nor a flag, and the report says so.
    """
    exclusions: list[str] = []
    caveats: list[str] = []
    bound = level.get("generator_bound") is True
    if bound:
        exclusions.append(f"generator-bound ({level.get('generator_reason') or 'see rule'})")
    elif level.get("generator_bound") is None:
        caveats.append("generator share unknown (uncalibrated)")
    if level.get("generator_saturated"):
        exclusions.append("generator CPU saturated")
    if level.get("stable") is False:
        exclusions.append(f"unstable ({level.get('stability_reason') or 'windows disagree'})")
    cross_checked: bool | None = None
    # wrk runs beside closed-loop REST levels; a gRPC level is not cross-checked either,
    # and says so (its wrk_skipped gives the reason).
    if level.get("mode") == "closed":
        divergence = level.get("divergence")
        if divergence:
            cross_checked = not divergence.get("flagged")
            if not cross_checked:
                exclusions.append(f"diverges from wrk ({divergence.get('reason')})")
        else:
            why = level.get("wrk_skipped") or "wrk not run for this level"
            caveats.append(f"not cross-checked with wrk: {why}")
    return Eligibility(bound, tuple(exclusions), tuple(caveats), cross_checked)


@dataclass(frozen=True)
class Estimate:
    """One target's figure with the range its repeats spread over.

    For a capacity, `low` is the highest passing rate (0 when none passed) and `high` the
    lowest failing rate (infinity when every rate tried passed).
    """

    name: str
    value: float  # the figure itself (median of the windows, or the passing rate)
    low: float
    high: float
    detail: str = ""  # how the report writes the figure and its range
    caveats: tuple[str, ...] = ()


def window_estimate(
    name: str, record: Mapping, key: str, detail: str = "", caveats: Sequence[str] = ()
) -> Estimate | None:
    """An Estimate of `key` from a level record's median and its min-max over windows.

    Args:
        name: the target's name.
        record: a level record with `key`, and `key`_min / `key`_max where repeats ran.
        key: the figure, e.g. "p50_ms" or "rps".

    Returns:
        The estimate, or None when the record has no such figure.
    """
    value = record.get(key)
    if value is None:
        return None
    low = record.get(f"{key}_min")
    high = record.get(f"{key}_max")
    return Estimate(
        name,
        float(value),
        float(low if low is not None else value),
        float(high if high is not None else value),
        detail,
        tuple(caveats),
    )


# A level whose wrk ran more than once (profile.wrk_repeats) has a spread of its own: a
# claim on wrk's figure carries the min-max of its runs, as one on Locust's carries its
# windows'. A level measured by one wrk run (runs made before the repeats) has none: it
# is given the relative spread of its Locust windows (the machine's noise at that load),
# and at least the divergence limit.
WRK_MIN_SPREAD = 0.15


def _wrk_figure(run: Mapping, key: str) -> float | None:
    value = run.get("goodput_rps") if key == "rps" else run.get(key)
    errors = sum(run.get(k) or 0 for k in ("status_errors", "timeouts", "socket_errors"))
    return None if not value or errors else float(value)


def wrk_estimate(
    name: str, level: Mapping, key: str, unit: str, why: Sequence[str] = ()
) -> Estimate | None:
    """An Estimate of `key` from the wrk runs beside a closed-loop level, for a level
    whose Locust figure carries no claim (`why`: its exclusions).

    Args:
        name: the target's name.
        level: a level record with wrk (WrkResult.to_json()), wrk_runs (every run, or
            None), and the Locust windows' `key`, `key`_min and `key`_max.
        key: "p50_ms" or "rps".
        unit: how the report writes the figure ("ms", "req/s").
        why: why Locust's own figure was left out, said with the claim.

    Returns:
        The estimate, or None where wrk did not run or a run did not complete every
        request.
    """
    runs = level.get("wrk_runs") or ([level["wrk"]] if level.get("wrk") else [])
    values = [_wrk_figure(run, key) for run in runs]
    if not values or any(v is None for v in values):
        return None
    digits = 0 if key == "rps" else 2
    connections = f"{level.get('users')} connection{'s' if level.get('users') != 1 else ''}"
    if len(values) > 1:
        value, low, high = statistics.median(values), min(values), max(values)
        detail = (f"wrk {value:.{digits}f} {unit}, runs {low:.{digits}f}–{high:.{digits}f} at "
                  f"{connections}")  # fmt: skip
    else:
        value = values[0]
        spread = WRK_MIN_SPREAD
        median, lo, hi = (level.get(k) for k in (key, f"{key}_min", f"{key}_max"))
        if median and lo is not None and hi is not None:
            spread = max(spread, (hi - lo) / 2 / median)
        low, high = value * (1 - spread), value * (1 + spread)
        detail = f"wrk {value:.{digits}f} {unit} ±{spread:.0%} at {connections}"
    caveats = (f"by wrk: Locust's figure {'; '.join(why)}",) if why else ("by wrk",)
    return Estimate(name, float(value), float(low), float(high), detail, caveats)


def capacity_estimate(
    name: str,
    passing_rate: float | None,
    failing_rate: float | None,
    detail: str = "",
    caveats: Sequence[str] = (),
) -> Estimate:
    """An Estimate of an SLO capacity from its bracket [passing_rate, failing_rate)."""
    low = float(passing_rate) if passing_rate is not None else 0.0
    high = float(failing_rate) if failing_rate is not None else math.inf
    return Estimate(name, low, low, high, detail, tuple(caveats))


def ahead(a: Estimate, b: Estimate, higher_is_better: bool) -> bool:
    """Whether `a` beats `b` by more than the spread of their repeats.

    Lower is better: a's worst (max) is below b's best (min). Higher is better: a's worst
    (min) is above b's best (max); for capacities, a's passing rate above b's failing rate.
    """
    return a.low > b.high if higher_is_better else a.high < b.low


@dataclass(frozen=True)
class Ranking:
    """The best target, every target not significantly behind it, and the rest."""

    leaders: tuple[Estimate, ...]  # the best first; the others overlap it
    behind: tuple[Estimate, ...]  # each significantly behind the best
    higher_is_better: bool

    @property
    def winner(self) -> Estimate | None:
        """The one target ahead of all others beyond their spread, if there is one."""
        if len(self.leaders) == 1 and self.behind:
            return self.leaders[0]
        return None


def rank(estimates: Sequence[Estimate], higher_is_better: bool) -> Ranking:
    """Ranks targets on one figure, keeping only differences beyond their spread.

    Args:
        estimates: one per target (none generator-bound, unstable or divergent: the
            caller filters with judge_level).
        higher_is_better: True for throughput and capacity, False for latency.

    Returns:
        The best by its figure, the targets whose range overlaps it (no significant
        difference), and those behind it beyond the spread.
    """
    if not estimates:
        return Ranking((), (), higher_is_better)
    ordered = sorted(estimates, key=lambda e: -e.value if higher_is_better else e.value)
    best = ordered[0]
    leaders = [best] + [e for e in ordered[1:] if not ahead(best, e, higher_is_better)]
    behind = [e for e in ordered[1:] if ahead(best, e, higher_is_better)]
    return Ranking(tuple(leaders), tuple(behind), higher_is_better)


def _described(estimate: Estimate) -> str:
    text = f"{estimate.name} ({estimate.detail})" if estimate.detail else estimate.name
    if estimate.caveats:
        text += " [" + "; ".join(estimate.caveats) + "]"
    return text


def _names(estimates: Sequence[Estimate], describe: Callable[[Estimate], str]) -> str:
    parts = [describe(e) for e in estimates]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _hoist_caveats(ranking: Ranking) -> tuple[Ranking, tuple[str, ...]]:
    """Caveats every ranked target shares, said once for the line rather than per target
    (an old run without wrk would otherwise repeat "not cross-checked" for each)."""
    everyone = ranking.leaders + ranking.behind
    if len(everyone) < 2:
        return ranking, ()
    shared = tuple(c for c in everyone[0].caveats if all(c in e.caveats for e in everyone))
    if not shared:
        return ranking, ()

    def strip(group: tuple[Estimate, ...]) -> tuple[Estimate, ...]:
        return tuple(
            replace(e, caveats=tuple(c for c in e.caveats if c not in shared)) for e in group
        )

    return Ranking(strip(ranking.leaders), strip(ranking.behind), ranking.higher_is_better), shared


def claim_line(title: str, ranking: Ranking, excluded: Sequence[str] = ()) -> str:
    """The report's sentence for one ranking.

    Args:
        title: what is ranked, e.g. "Lowest latency at light load".
        ranking: rank()'s result.
        excluded: "target: why" for each target left out of the ranking.

    Returns:
        One Markdown bullet: the winner and whom it beats, or "no significant difference
        between A and B", or that nothing qualifies; then who was left out and why.
    """
    left_out = f" Left out: {'; '.join(excluded)}." if excluded else ""
    ranking, shared = _hoist_caveats(ranking)
    left_out = (f" All of them: {'; '.join(shared)}." if shared else "") + left_out
    if not ranking.leaders:
        return f"- **{title}**: no level qualifies for a claim.{left_out}"
    if len(ranking.leaders) == 1 and not ranking.behind:
        return (
            f"- **{title}**: {_described(ranking.leaders[0])}, the only target with a level "
            f"that qualifies: nothing to rank it against.{left_out}"
        )
    winner = ranking.winner
    if winner is not None:
        return (
            f"- **{title}**: {_described(winner)}, ahead of "
            f"{_names(ranking.behind, _described)} beyond the spread of their repeats."
            f"{left_out}"
        )
    line = f"- **{title}**: {NO_DIFFERENCE} {_names(ranking.leaders, _described)}"
    line += ": their ranges overlap"
    if ranking.behind:
        both = "both" if len(ranking.leaders) == 2 else "all"
        line += f"; {both} ahead of {_names(ranking.behind, _described)}"
    return line + "." + left_out


def legacy_bracket(
    open_points: Sequence[Mapping], slo_p99_ms: float
) -> tuple[float | None, float | None]:
    """A capacity bracket from the fixed open-loop fractions of runs made before the
    search: the highest offered rate that met the objective, and the lowest rate above it
    that did not (None where there is none).

    Args:
        open_points: aggregated open-loop level records (rate, p99_ms, failures,
            generator_saturated).
        slo_p99_ms: the p99 objective.

    Returns:
        (passing rate, failing rate).
    """

    def passed(p: Mapping) -> bool:
        return (
            p.get("p99_ms") is not None
            and p["p99_ms"] <= slo_p99_ms
            and not p.get("failures")
            and not p.get("generator_saturated")
        )

    rated = sorted((p for p in open_points if p.get("rate")), key=lambda p: p["rate"])
    passing = max((p["rate"] for p in rated if passed(p)), default=None)
    failing = min(
        (p["rate"] for p in rated if not passed(p) and (passing is None or p["rate"] > passing)),
        default=None,
    )
    return passing, failing
