"""Overload: open-loop load at 1.5x, 2x and 5x a stack's capacity, then a drop to 50%.

Per level, one schedule generated up front: `phase_s` at the overload rate, then
`recovery_s` at `recovery_fraction` of capacity, back to back (no gap, so a backlog left
by the overload shows in the drop). Latency counts from each request's scheduled time.
Reported per level:

  goodput     replies that were right and within the objective, per second of the phase
  refusals    503 (or 429) answers per second, and how fast they came (p99 from the send:
              the server's answer time, without the generator's own lateness)
  accepted    p50 / p99 of the right answers, from the schedule
  errors      every other outcome (timeouts, resets, 5xx other than 503, wrong answers)
  server      CPU (100 = one core) and peak RSS of the server's process tree
  recovery    seconds from the drop until every window of `recovery_window_s` holds at
              least `recovered_share` good replies (None: not within the drop phase)
  generator   its own lateness (sent after the slot although a sender was free) and the
              pool wait (every sender busy with an unanswered request: the server's);
              when its own lateness p99 exceeds `max_generator_late_ms` the level is the
              generator's, not the server's, and is not judged
  independent the same level again from the C client (reliability/openloop.py), shorter
              (check_phase_s, check_recovery_s): one epoll loop times what the Python
              threads time through the GIL; it checks statuses, the Python one answers.
              The goals are judged on its figures where it held its rate (the better
              timer), else on the Python generator's; the report shows both

Capacity: the SLO capacity of a `make bench` run (its capacity.jsonl, read as JSON) when
one is given, else a closed-loop peak measured on the spot; the output says which. The
server and the generator run on different cores (taskset for the server, this process's
affinity for the generator), split as the load runner splits them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from digitnet.codec import JSON_CONTENT_TYPE
from digitnet.env import env_bool
from harness.lifecycle import RunningStack
from harness.payload import PayloadSet
from loadtests.analysis import GENERATOR_SATURATED_PCT
from reliability import openloop
from reliability.client import OTHER, Connection, Endpoint, endpoint_of, http_kind
from reliability.load import MAX_RUN_S, ClosedLoop, Sample, outcome_counts, send_one
from reliability.settings import OverloadSettings
from services.guard import GUARD_ENV, NGINX, OFF, nginx_binary
from services.process import pinned

MIB = 2**20
# Answers that say "not now" rather than "broken": TorchServe's full job queue and our
# admission control answer 503; 429 is the other common way to say it.
REFUSAL_KINDS = frozenset({http_kind(503), http_kind(429)})
# The first scheduled request goes out this long after the schedule is built.
START_DELAY_S = 0.2
# Issue 12's goals: goodput as a share of capacity at these multiples; refusals answered
# within REFUSAL_P99_GOAL_MS; back to normal within RECOVERY_GOAL_S of the drop; and the
# accepted requests' p99 within the objective at every level.
GOODPUT_GOALS = {2.0: 0.9, 5.0: 0.8}
REFUSAL_P99_GOAL_MS = 5.0
RECOVERY_GOAL_S = 2.0
MET, MISSED, GENERATOR, NOT_APPLICABLE = "met", "missed", "the generator's", "n/a"
# Below this share of requests that waited for a free sender, the wait is not worth a note.
POOL_NOTE_SHARE = 0.01
# Which client a goal was judged on.
PYTHON, INDEPENDENT = "python", "openloop"
CAPACITY_FILE = "capacity.jsonl"
# A run's SLO capacity this far below its closed-loop peak is flagged in the output.
PEAK_WARNING_RATIO = 2.0

# Overload measures the servers as they would run in production under it: with admission
# control on (off by default: digitnet/spec.py AdmissionPolicy says why) in the servers we
# own and in Ray Serve's HAProxy (services/ray_serve/settings.py haproxy_env), and the
# Flask stacks behind the nginx front that refuses for them in C (services/guard.py) where
# nginx is installed, unless DIGITNET_ADMISSION / DIGITNET_GUARD say otherwise. TorchServe
# ignores both.
OVERLOAD_ENV = {
    "DIGITNET_ADMISSION": os.environ.get("DIGITNET_ADMISSION", "on"),
    GUARD_ENV: os.environ.get(GUARD_ENV) or (NGINX if nginx_binary() else OFF),
}


def guard_line() -> str:
    """Which front the servers we own run behind, and why; and whether admission control
    is on (the Flask apps and Ray Serve's HAProxy bound what they hold)."""
    admission = ("admission control on (DIGITNET_ADMISSION; Ray Serve's in its HAProxy)"
                 if env_bool("DIGITNET_ADMISSION", False, OVERLOAD_ENV)
                 else "admission control OFF (DIGITNET_ADMISSION): nothing bounds the queues")
    if OVERLOAD_ENV[GUARD_ENV] == NGINX:
        return f"the Flask stacks behind the nginx front (services/guard.py); {admission}"
    why = ("nginx is not installed: `make tools`" if nginx_binary() is None
           else f"{GUARD_ENV}={OVERLOAD_ENV[GUARD_ENV]}")
    return (f"the Flask stacks WITHOUT the nginx front ({why}): refusals cost Python time; "
            f"{admission}")


def split_cores(cores: list[int]) -> tuple[list[int], list[int]]:
    """(server cores, generator cores): the load runner's rule (loadtests.runner, which
    reliability must not import): a quarter of the cores for the generator, one at least;
    with a single core both share it."""
    if len(cores) < 2:
        return cores, cores
    generator = max(1, len(cores) // 4)
    return cores[:-generator], cores[-generator:]


# --- the schedule and the sender pool -----------------------------------------------------


@dataclass(frozen=True)
class Shot:
    """One scheduled request: its Sample (times on time.monotonic()) and when a sender was
    free to take it (`picked_s`)."""

    sample: Sample
    picked_s: float

    @property
    def scheduled_s(self) -> float:
        scheduled = self.sample.scheduled_s
        return scheduled if scheduled is not None else self.sample.start_s

    @property
    def pool_wait_s(self) -> float:
        """How long the slot waited for a free sender (all were waiting on the server)."""
        return max(0.0, self.picked_s - self.scheduled_s)

    @property
    def own_late_s(self) -> float:
        """How late the generator itself sent it: after the slot and after a sender was free
        (its sleep overshoot, the GIL, its CPU)."""
        return max(0.0, self.sample.start_s - max(self.scheduled_s, self.picked_s))


def piecewise_schedule(segments: Sequence[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Send offsets (s from the start) for consecutive (rate, seconds) segments, evenly
    spaced within each, and each segment's start offset.

    Raises:
        ValueError: for a non-positive rate or duration, or more than MAX_RUN_S in all.
    """
    offsets: list[float] = []
    starts: list[float] = []
    at = 0.0
    for rate, seconds in segments:
        if rate <= 0 or seconds <= 0:
            raise ValueError(f"rate and duration must be positive, got {rate}, {seconds}")
        starts.append(at)
        offsets += [at + i / rate for i in range(int(round(rate * seconds)))]
        at += seconds
    if at > MAX_RUN_S:
        raise ValueError(f"schedule of {at:.0f} s exceeds the {MAX_RUN_S:.0f} s cap")
    return offsets, starts


def run_schedule(endpoint: Endpoint, payloads: PayloadSet, offsets: Sequence[float],
                 senders: int, timeout_s: float) -> tuple[float, list[Shot]]:
    """Sends one request per offset from `senders` threads (each its own keep-alive
    connection, waiting for each reply); a slot nobody is free for goes out when a sender
    is. Returns the start time (monotonic) the offsets count from, and every shot."""
    begin = time.monotonic() + START_DELAY_S
    lock = threading.Lock()
    next_index = [0]
    shots: list[Shot] = []

    def sender() -> None:
        conn = Connection(endpoint, timeout_s)
        try:
            while True:
                picked = time.monotonic()
                with lock:
                    index = next_index[0]
                    next_index[0] += 1
                if index >= len(offsets):
                    return
                scheduled = begin + offsets[index]
                delay = scheduled - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                try:
                    sample = send_one(conn, payloads, scheduled_s=scheduled)
                except Exception as err:  # noqa: BLE001 - a sender must never die silently
                    now = time.monotonic()
                    sample = Sample(now, now, OTHER, scheduled, repr(err))
                    conn.close()
                with lock:
                    shots.append(Shot(sample, picked))
        finally:
            conn.close()

    threads = [threading.Thread(target=sender, name=f"overload-{i}", daemon=True)
               for i in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if len(shots) != len(offsets):
        raise RuntimeError(f"overload lost requests: {len(shots)} of {len(offsets)} recorded")
    return begin, shots


# --- what the server used ------------------------------------------------------------------


class UsageSampler:
    """Every `interval_s`: CPU seconds, RSS and open file descriptors of the server's
    process tree, and this process's CPU seconds (the generator), on time.monotonic()."""

    def __init__(self, server_pid: int, interval_s: float) -> None:
        self.root = psutil.Process(server_pid)
        self.me = psutil.Process()
        self.interval_s = interval_s
        # t, cpu s, MiB, own cpu s, file descriptors
        self.samples: list[tuple[float, float, float, float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="overload-usage", daemon=True)

    def read(self) -> tuple[float, float, float, float, int]:
        cpu = rss = 0.0
        fds = 0
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        for proc in procs:
            try:
                times = proc.cpu_times()
                cpu += times.user + times.system
                rss += proc.memory_info().rss / MIB
                fds += proc.num_fds()
            except psutil.Error:
                continue
        own = self.me.cpu_times()
        return time.monotonic(), cpu, rss, own.user + own.system, fds

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append(self.read())

    def usage(self, start_s: float, end_s: float) -> dict:
        """Server CPU % (100 = one core), its peak RSS and open file descriptors, and the
        generator's CPU % between the samples nearest inside [start_s, end_s]; None where
        fewer than two fell there."""
        inside = [s for s in self.samples if start_s <= s[0] <= end_s]
        if len(inside) < 2:
            return {"server_cpu_pct": None, "server_rss_mib": None, "server_fds": None,
                    "generator_cpu_pct": None}
        (t0, cpu0, _, own0, _), (t1, cpu1, _, own1, _) = inside[0], inside[-1]
        return {"server_cpu_pct": 100.0 * (cpu1 - cpu0) / (t1 - t0),
                "server_rss_mib": max(s[2] for s in inside),
                "server_fds": max(s[4] for s in inside),
                "generator_cpu_pct": 100.0 * (own1 - own0) / (t1 - t0)}

    def __enter__(self) -> UsageSampler:
        self.samples.append(self.read())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- the arithmetic (pure: tested on synthetic shots) ---------------------------------------


def _pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values), q)) if len(values) else None


def is_good(shot: Shot, objective_ms: float) -> bool:
    """A right answer within the objective, counted from the schedule."""
    return shot.sample.ok and shot.sample.latency_s * 1000.0 <= objective_ms


def is_refusal(shot: Shot) -> bool:
    return shot.sample.kind in REFUSAL_KINDS


def in_window(shots: Sequence[Shot], start_s: float, end_s: float) -> list[Shot]:
    """The shots scheduled in [start_s, end_s)."""
    return [s for s in shots if start_s <= s.scheduled_s < end_s]


def check_generator_cpu(level: dict) -> None:
    """Marks a level the generator's when the generator (one process: the Python one holds
    the GIL, the C one is one loop) was busy for GENERATOR_SATURATED_PCT of a core: then
    every sender waiting is not the server's doing alone (its replies wait to be read), so
    the pool wait cannot clear it. Found by the C client: at 5x TorchServe the Python
    generator, at 99% CPU with no lateness of its own, timed a collapse (0% goodput, 7 s
    p50) where the C client at 43% measured 94% goodput."""
    cpu = level.get("generator_cpu_pct")
    gen = level["generator"]
    if cpu is None or cpu < GENERATOR_SATURATED_PCT or not gen["held"]:
        return
    gen["held"] = False
    gen["note"] = (f"was busy {cpu:.0f}% of a core: replies waited for it to read them, so "
                   "its figures measure the generator, not the server")


def generator_figures(shots: Sequence[Shot], offered_rps: float, start_s: float,
                      max_late_ms: float) -> dict:
    """The generator's own lateness and pool wait, the rate it actually sent at, and
    whether it held the offered rate (its own lateness p99 within `max_late_ms`)."""
    own = [s.own_late_s * 1000.0 for s in shots]
    pool = [s.pool_wait_s * 1000.0 for s in shots]
    last_start = max((s.sample.start_s for s in shots), default=start_s)
    span = last_start - start_s
    own_p99 = _pct(own, 99)
    held = own_p99 is not None and own_p99 <= max_late_ms
    pool_share = sum(1 for p in pool if p > max_late_ms) / len(pool) if pool else 0.0
    if not shots:
        note = "nothing was sent"
    elif not held:
        note = (f"could not hold {offered_rps:.0f} req/s: its own lateness p99 {own_p99:.1f} ms "
                f"> {max_late_ms:g} ms (this level measures the generator, not the server)")
    elif pool_share >= POOL_NOTE_SHARE:
        note = (f"found every sender waiting on the server for {pool_share:.1%} of the "
                "requests: those went out late (latency still counts from the schedule)")
    else:
        note = "held the offered rate"
    return {"sent_rps": len(shots) / span if span > 0 else None,
            "own_late_p50_ms": _pct(own, 50), "own_late_p99_ms": own_p99,
            "pool_wait_p99_ms": _pct(pool, 99), "pool_waited_share": pool_share,
            "held": held, "note": note}


def phase_figures(shots: Sequence[Shot], start_s: float, seconds: float, offered_rps: float,
                  capacity_rps: float, objective_ms: float) -> dict:
    """Goodput, refusals, accepted latency and other errors of the shots scheduled in
    [start_s, start_s + seconds)."""
    phase = in_window(shots, start_s, start_s + seconds)
    good = [s for s in phase if is_good(s, objective_ms)]
    refused = [s for s in phase if is_refusal(s)]
    accepted = [s.sample.latency_s * 1000.0 for s in phase if s.sample.ok]
    others = [s for s in phase if not s.sample.ok and not is_refusal(s)]
    goodput = len(good) / seconds
    return {
        "offered_rps": offered_rps,
        "requests": len(phase),
        "goodput_rps": goodput,
        "goodput_share": goodput / capacity_rps if capacity_rps > 0 else None,
        "refusals": len(refused),
        "refusals_per_s": len(refused) / seconds,
        # From the send, not the schedule: how fast the server says no.
        "refusal_p50_ms": _pct([(s.sample.end_s - s.sample.start_s) * 1000.0 for s in refused], 50),
        "refusal_p99_ms": _pct([(s.sample.end_s - s.sample.start_s) * 1000.0 for s in refused], 99),
        "accepted": len(accepted),
        "accepted_late": sum(1 for ms in accepted if ms > objective_ms),
        "accepted_p50_ms": _pct(accepted, 50),
        "accepted_p99_ms": _pct(accepted, 99),
        "errors": len(others),
        "error_kinds": outcome_counts([s.sample for s in others]),
        "error_examples": sorted({s.sample.error for s in others if s.sample.error})[:3],
    }


def timeline(shots: Sequence[Shot], start_s: float, end_s: float, window_s: float,
             objective_ms: float) -> list[dict]:
    """Per window of `window_s` (by scheduled time, from `start_s`): how many requests,
    how many good, refused, late (right but past the objective) and failed otherwise."""
    count = max(1, math.ceil((end_s - start_s) / window_s - 1e-9))
    rows = [{"t_s": round(i * window_s, 3), "requests": 0, "good": 0, "refused": 0, "late": 0,
             "errors": 0} for i in range(count)]
    for shot in shots:
        index = int((shot.scheduled_s - start_s) // window_s)
        if not 0 <= index < count:
            continue
        row = rows[index]
        row["requests"] += 1
        if is_good(shot, objective_ms):
            row["good"] += 1
        elif is_refusal(shot):
            row["refused"] += 1
        elif shot.sample.ok:
            row["late"] += 1
        else:
            row["errors"] += 1
    return rows


def recovery_s(windows: Sequence[dict], share: float) -> float | None:
    """Seconds from the first window until the service is back for good: the start of
    the first window from which every window's good share is at least `share` (windows
    without requests count as good). None when the last window is not good: not
    recovered within the windows given."""
    recovered_at: float | None = None
    for row in windows:
        ok = row["requests"] == 0 or row["good"] / row["requests"] >= share
        if not ok:
            recovered_at = None
        elif recovered_at is None:
            recovered_at = row["t_s"]
    return recovered_at


def level_figures(shots: Sequence[Shot], begin_s: float, multiple: float, capacity_rps: float,
                  settings: OverloadSettings) -> dict:
    """Everything one level reports, from its shots (`begin_s`: where the offsets count
    from; the overload phase first, then the drop)."""
    offered = multiple * capacity_rps
    drop_s = begin_s + settings.phase_s
    end_s = drop_s + settings.recovery_s
    overload = in_window(shots, begin_s, drop_s)
    windows = timeline(shots, drop_s, end_s, settings.recovery_window_s, settings.objective_ms)
    recovery = recovery_s(windows, settings.recovered_share)
    return {
        "multiple": multiple,
        "phase_s": settings.phase_s,
        **phase_figures(shots, begin_s, settings.phase_s, offered, capacity_rps,
                        settings.objective_ms),
        "generator": generator_figures(overload, offered, begin_s,
                                       settings.max_generator_late_ms),
        "drop": {
            "rate": settings.recovery_fraction * capacity_rps,
            "seconds": settings.recovery_s,
            **phase_figures(shots, drop_s, settings.recovery_s,
                            settings.recovery_fraction * capacity_rps, capacity_rps,
                            settings.objective_ms),
        },
        "recovery_s": recovery,
        "recovered": recovery is not None,
        "timeline": timeline(shots, begin_s, end_s, settings.recovery_window_s,
                             settings.objective_ms),
    }


def judge_level(level: dict, objective_ms: float) -> list[dict]:
    """One level's figures (one client's) against issue 12's goals: met, missed, the
    generator's (it could not hold the rate: not judged) or n/a (nothing to judge, e.g. no
    refusal to time)."""
    goals: list[dict] = []

    def add(goal: str, measured, ok: bool | None) -> None:
        if not level["generator"]["held"]:
            verdict = GENERATOR
        elif ok is None:
            verdict = NOT_APPLICABLE
        else:
            verdict = MET if ok else MISSED
        goals.append({"multiple": level["multiple"], "goal": goal, "measured": measured,
                      "verdict": verdict})

    share = GOODPUT_GOALS.get(level["multiple"])
    if share is not None:
        add(f"goodput >= {share:.0%} of capacity", level["goodput_share"],
            level["goodput_share"] is not None and level["goodput_share"] >= share)
    p99 = level["accepted_p99_ms"]
    add(f"accepted p99 <= {objective_ms:g} ms", p99, None if p99 is None else p99 <= objective_ms)
    refusal = level["refusal_p99_ms"]
    add(f"refusal p99 < {REFUSAL_P99_GOAL_MS:g} ms", refusal,
        None if refusal is None else refusal < REFUSAL_P99_GOAL_MS)
    recovery = level["recovery_s"]
    add(f"recovery <= {RECOVERY_GOAL_S:g} s", recovery,
        recovery is not None and recovery <= RECOVERY_GOAL_S)
    return goals


def judge_goals(levels: Sequence[dict], objective_ms: float) -> list[dict]:
    """Every level against the goals, judged (`measured`, `verdict`, `by`) on the C
    client's figures where it ran and held its rate, else on the Python generator's; each
    goal keeps both clients' (`python`, `independent`: measured and verdict)."""
    goals: list[dict] = []
    for level in levels:
        checked = level.get("independent")
        by_python = judge_level(level, objective_ms)
        by_independent = (judge_level(checked, objective_ms) if checked
                          else [None] * len(by_python))
        for python, independent in zip(by_python, by_independent, strict=True):
            judged = independent if independent and independent["verdict"] != GENERATOR else python
            goals.append({
                **python,
                "measured": judged["measured"],
                "verdict": judged["verdict"],
                "by": INDEPENDENT if judged is independent else PYTHON,
                "python": {k: python[k] for k in ("measured", "verdict")},
                "independent": ({k: independent[k] for k in ("measured", "verdict")}
                                if independent else None),
            })
    return goals


def independent_level(endpoint: Endpoint, payloads: PayloadSet, multiple: float,
                      capacity_rps: float, settings: OverloadSettings,
                      usage: UsageSampler) -> dict:
    """One level (and its drop) from the C client, `check_phase_s` + `check_recovery_s`
    long, the same figures as the Python generator's. It sends the first batch of
    `payloads` every time (a fixed-size model costs the same for any image)."""
    check = dataclasses.replace(settings, phase_s=settings.check_phase_s,
                                recovery_s=settings.check_recovery_s)
    offsets, _ = piecewise_schedule([(multiple * capacity_rps, check.phase_s),
                                     (settings.recovery_fraction * capacity_rps,
                                      check.recovery_s)])
    begin, records, summary = openloop.run(
        endpoint, payloads.batches[0].body, JSON_CONTENT_TYPE, offsets,
        settings.request_timeout_s, settings.check_max_conns, START_DELAY_S)
    shots = [Shot(sample, picked) for sample, picked in records]
    level = level_figures(shots, begin, multiple, capacity_rps, check)
    level.update(usage.usage(begin, begin + check.phase_s))
    # The sampler counts this process's CPU; the C client is a child: its own rusage.
    level["generator_cpu_pct"] = 100.0 * summary["cpu_s"] / (check.phase_s + check.recovery_s)
    level.update(client=openloop.NAME, answers_checked=False, client_summary=summary)
    check_generator_cpu(level)
    return level


# --- capacity ------------------------------------------------------------------------------


def capacity_from_run(run_dir: Path, stack: str) -> tuple[float, str] | None:
    """The SLO capacity of `stack` over REST on the CPU in a bench run's capacity.jsonl
    (the highest rate that met the objective), and where it came from; None when the run
    has no such passing trial."""
    path = run_dir / CAPACITY_FILE
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if (record.get("stack"), record.get("protocol"), record.get("device")) != (
                stack, "rest", "cpu"):
            continue
        passing = record.get("passing") or {}
        if passing.get("rate"):
            rate = float(passing["rate"])
            source = (f"SLO capacity from {path} (p99 {passing.get('p99_ms', float('nan')):.1f}"
                      f" ms at {rate:.0f} req/s)")
            peak = record.get("closed_peak_rps")
            if peak and peak > PEAK_WARNING_RATIO * rate:
                # The search stops where a trial fails, and a trial can fail for the
                # generator's sake: then even 5x this rate may not overload the server.
                source += (f"; its closed-loop peak was {peak:.0f} req/s, "
                           f"{peak / rate:.1f}x more: the levels may not overload the server")
            return rate, source
    return None


def closed_loop_peak(endpoint: Endpoint, payloads: PayloadSet, clients: int, seconds: float,
                     timeout_s: float) -> tuple[float, int]:
    """Right answers per second of `clients` back-to-back clients over the last four
    fifths of `seconds` (the first fifth warms the server up); and the requests counted."""
    loop = ClosedLoop(endpoint, payloads, clients, timeout_s, max_s=seconds + timeout_s)
    loop.start()
    started = time.monotonic()
    time.sleep(seconds)
    samples = loop.stop()
    counted = [s for s in samples if s.ok and s.start_s >= started + seconds / 5]
    if not counted:
        raise RuntimeError(f"no right answer in {seconds:g} s of closed-loop load")
    span = max(s.end_s for s in counted) - min(s.start_s for s in counted)
    return len(counted) / span, len(counted)


# --- one stack -----------------------------------------------------------------------------


def overload(running: RunningStack, settings: OverloadSettings,
             capacity: tuple[float, str] | None, server_cores: Sequence[int] | None,
             generator_cores: Sequence[int], progress: Callable[[str], None] = print) -> dict:
    """Measures (or takes) the capacity of `running`, then runs every level; returns the
    figures and the goals."""
    endpoint = endpoint_of(running)
    payloads = running.payloads()
    with pinned(generator_cores), UsageSampler(running.server.pid,
                                               settings.sample_interval_s) as usage:
        if capacity is None:
            started = time.monotonic()
            rps, counted = closed_loop_peak(endpoint, payloads, settings.capacity_clients,
                                            settings.capacity_s, settings.request_timeout_s)
            generator_cpu = usage.usage(started, time.monotonic())["generator_cpu_pct"]
            capacity = rps, (
                f"closed-loop peak measured here ({settings.capacity_clients} clients, "
                f"{settings.capacity_s:g} s, {counted} requests; generator CPU "
                f"{generator_cpu or 0:.0f}%): a peak, not an SLO capacity")
        capacity_rps, source = capacity
        progress(f"overload {running.name}: capacity {capacity_rps:.0f} req/s ({source})")
        low = settings.recovery_fraction * capacity_rps
        if settings.warmup_s > 0:
            offsets, _ = piecewise_schedule([(low, settings.warmup_s)])
            run_schedule(endpoint, payloads, offsets, settings.senders, settings.request_timeout_s)
        checker, checker_note = (None, "left out (check_phase_s is 0)")
        if settings.check_phase_s > 0:
            checker, checker_note = openloop.binary()
        levels = []
        for multiple in settings.levels:
            progress(f"overload {running.name}: {multiple:g}x = {multiple * capacity_rps:.0f} "
                     f"req/s for {settings.phase_s:g} s, then {low:.0f} req/s for "
                     f"{settings.recovery_s:g} s")
            offsets, _ = piecewise_schedule([(multiple * capacity_rps, settings.phase_s),
                                             (low, settings.recovery_s)])
            begin, shots = run_schedule(endpoint, payloads, offsets, settings.senders,
                                        settings.request_timeout_s)
            level = level_figures(shots, begin, multiple, capacity_rps, settings)
            level.update(usage.usage(begin, begin + settings.phase_s))
            check_generator_cpu(level)
            if checker is not None:
                progress(f"overload {running.name}: {multiple:g}x again from the C client "
                         f"for {settings.check_phase_s:g} s + {settings.check_recovery_s:g} s")
                level["independent"] = independent_level(endpoint, payloads, multiple,
                                                         capacity_rps, settings, usage)
            levels.append(level)
    goals = judge_goals(levels, settings.objective_ms)
    return {
        "stack": running.name,
        "capacity_rps": capacity_rps,
        "capacity_source": source,
        "objective_ms": settings.objective_ms,
        "server_cores": list(server_cores) if server_cores else None,
        "generator_cores": list(generator_cores),
        "settings": {name: getattr(settings, name) for name in settings.__dataclass_fields__},
        "levels": levels,
        "independent_client": openloop.NAME if checker is not None else None,
        "independent_note": checker_note if checker is None else None,
        "goals": goals,
        "missed": [f"{g['multiple']:g}x: {g['goal']}" for g in goals if g["verdict"] == MISSED],
    }
