"""Builds summary.json, REPORT.md and the PNG plots of a run from its saved data.

python -m loadtests.report results/<run-id>      # what `make report RUN=...` runs

A run folder holds points.jsonl (one line per Locust window) and environment.json, and,
from runs of loadtests.sweep on: floors.jsonl (the generator against the null server),
levels.jsonl (stability and wrk per closed-loop level), capacity.jsonl (the SLO
capacity bracket per target) and framework_floor.jsonl (each stack's no-op twin beside its
predict path, loadtests.framework_floor; own_code.jsonl, our code in process beside it,
loadtests.own_code). Every section fed by a newer file says "not measured in
this run" where the file is absent, so older runs still render.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.markdown import fmt
from loadtests import (
    analysis,
    calibration,
    claims,
    coldstart,
    framework_floor,
    gpu_report,
    own_code,
)
from loadtests.analysis import series
from loadtests.devices import UNREPORTED
from loadtests.plots import plot_baselines, plot_curves, plot_resources
from loadtests.records import record_files
from services.registry import STACK_MODULES, load_stack

NOT_MEASURED = "not measured in this run"
# The figures of each load level kept in summary.json (and used by the report).
SUMMARY_KEYS = (
    "stack", "protocol", "device", "batch_size", "mode", "users", "rate", "rps",
    "images_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms", "requests", "failures",
    "key_rejected", "generator_cpu_pct", "generator_busiest_process_cpu_pct",
    "generator_saturated",
    "server_cpu_pct", "server_rss_mb",
    "repeats", "rps_min", "rps_max", "p50_ms_min", "p50_ms_max", "p99_ms_min", "p99_ms_max",
    "server_p50_ms", "server_queue_ms", "server_total_ms", "server_runtime_ms",
    "generator_share", "generator_tail_share", "generator_ceiling_used", "generator_bound",
    "generator_calibrated", "generator_reason", "lateness_p50_ms", "lateness_p99_ms",
    "generator_fell_behind", "pool_wait_p99_ms", "neighbours_cpu_pct",
    "stable", "stability_reason", "windows", "wrk", "wrk_runs", "wrk_skipped", "divergence",
    "served_device", "batch_hist", "batch_mean", "batch_rows_hist", *analysis.ROW_SUMS,
)  # fmt: skip
# What identifies a load level, in points.jsonl and levels.jsonl alike.
LEVEL_FIELDS = ("stack", "protocol", "device", "batch_size", "mode", "users", "rate")
# The gunicorn worker-class trade-off as measured on the 2-core build machine (shared
# NOTES, "Measuring the measurer"): wrk, 8 connections, batch 1.
WORKER_CLASS_NOTE = (
    "gunicorn's worker class trades slow-client protection against tail fairness under "
    "saturation. With `gevent` a slow client costs a socket, not a worker (with `gthread`, "
    "32 slow clients starved normal requests); under saturation gevent's tail is the longer "
    "one (measured on the build machine by wrk, 8 connections: gevent p90 28 ms, p99 80 ms "
    'vs sync p99 6.3 ms, gthread p99 7.0 ms; shared NOTES, "Measuring the measurer").'
)


@dataclass
class RunData:
    """Everything a run folder holds; the newer files are empty lists where absent."""

    env: dict
    points: list[dict]  # every Locust window: closed-loop levels and capacity trials
    baselines: list[dict]
    floors: list[dict]
    levels: list[dict]
    capacity: list[dict]
    # wrk against a Flask stack with each gunicorn worker class (loadtests.sweep).
    worker_classes: list[dict] = field(default_factory=list)

    @property
    def slo(self) -> float:
        return float(self.env.get("slo_p99_ms", 50.0))

    @property
    def sweep_points(self) -> list[dict]:
        """Windows of load levels; capacity trials are reported with their bracket."""
        return [p for p in self.points if p.get("phase") != "capacity"]


def read_jsonl(path: Path) -> list[dict]:
    """One dict per non-empty line; [] where the file does not exist."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, records: Sequence[dict]) -> None:
    """`records` as read_jsonl reads them, one JSON line each, replacing the file."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def load_run(run_dir: Path) -> RunData:
    """Reads a run folder, recomputing each window's figures from its raw records."""
    env = json.loads((run_dir / "environment.json").read_text())
    points = read_jsonl(run_dir / "points.jsonl")
    baselines_file = run_dir / "baselines.json"
    baselines = json.loads(baselines_file.read_text()) if baselines_file.exists() else []
    for point in points:
        refresh_from_raw(point, run_dir / "raw", float(env.get("warmup_s", 0.0)))
    return RunData(
        env,
        points,
        baselines,
        read_jsonl(run_dir / "floors.jsonl"),
        read_jsonl(run_dir / "levels.jsonl"),
        read_jsonl(run_dir / "capacity.jsonl"),
        read_jsonl(run_dir / "worker_classes.jsonl"),
    )


def refresh_from_raw(point: dict, raw_dir: Path, warmup_s: float) -> None:
    """Recomputes a point's latency and throughput from its per-request records, when
    they were kept, so a report rebuilt later uses the current analysis."""
    files = record_files(raw_dir / point["raw"]) if point.get("raw") else []
    if files:
        records = analysis.read_records(files)
        # Each point's own timing: floor runs and capacity trials have their own windows.
        point.update(analysis.point_stats(records, point.get("warmup_s", warmup_s),
                                          point["batch_size"], point.get("duration_s")))


def level_key(record: dict) -> tuple:
    return (
        record["stack"],
        record["protocol"],
        record.get("device", "cpu"),
        record["batch_size"],
        record["mode"],
        record.get("users"),
        record.get("rate"),
    )


def generator_figures(group: Sequence[dict]) -> dict:
    """A level's generator figures from its windows: medians of the shares, and the
    level is generator-bound when any window was (unknown when any window was)."""
    out: dict = {}
    for key in ("generator_share", "generator_tail_share", "generator_ceiling_used",
                "lateness_p50_ms"):  # fmt: skip
        values = [p[key] for p in group if p.get(key) is not None]
        out[key] = float(np.median(values)) if values else None
    for key in ("lateness_p99_ms", "pool_wait_p99_ms", "neighbours_cpu_pct"):  # worst window
        values = [p[key] for p in group if p.get(key) is not None]
        out[key] = max(values) if values else None
    verdicts = [p.get("generator_bound") for p in group]
    if any(v is True for v in verdicts):
        out["generator_bound"] = True
    elif verdicts and all(v is False for v in verdicts):
        out["generator_bound"] = False
    else:
        out["generator_bound"] = None
    calibrated = [p["generator_calibrated"] for p in group if "generator_calibrated" in p]
    out["generator_calibrated"] = all(calibrated) if calibrated else None
    bound = [p for p in group if p.get("generator_bound")]
    reasons = [p.get("generator_reason") for p in bound or group if p.get("generator_reason")]
    out["generator_reason"] = reasons[0] if reasons else None
    out["generator_fell_behind"] = any(p.get("generator_fell_behind") for p in group)
    return out


def aggregate(points: list[dict], levels: Sequence[dict] = ()) -> list[dict]:
    """One record per (stack, protocol, device, batch, mode, level), windows merged,
    with the level's stability verdict and wrk cross-check from levels.jsonl."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for point in points:
        groups[level_key(point)].append(point)
    verdicts = {level_key(level): level for level in levels}
    merged = []
    for key, group in groups.items():
        record = analysis.aggregate_repeats(group)
        for name in ("server_queue_ms", "server_total_ms", "server_runtime_ms", "server_p50_ms"):
            values = sorted(p[name] for p in group if p.get(name) is not None)
            record[name] = values[len(values) // 2] if values else None
        record.update(generator_figures(group))
        level = verdicts.get(key, {})
        for name in ("stable", "stability_reason", "windows", "wrk", "wrk_runs",
                     "wrk_skipped", "divergence"):  # fmt: skip
            record[name] = level.get(name)
        merged.append({k: record.get(k) for k in SUMMARY_KEYS})
    return sorted(
        merged,
        key=lambda r: (
            r["stack"],
            r["protocol"],
            r["device"],
            r["batch_size"],
            r["mode"],
            r["users"] or 0,
            r["rate"] or 0,
        ),
    )


def floor_path(env: dict, stack: str) -> str | None:
    """The in-process baseline behind `stack`: as the run recorded it, else as its plugin
    declares it (runs made before the environment recorded it)."""
    recorded = env.get("floor_paths", {}).get(stack)
    if recorded:
        return recorded
    return load_stack(stack).floor_path if stack in STACK_MODULES else None


def floor_us(baselines: list[dict], path: str | None, batch: int) -> float | None:
    for row in baselines:
        if row["path"] == path and row["batch_size"] == batch:
            return row["p50_us"]
    return None


def users_words(users: int | None) -> str:
    return f"{users} user" if users == 1 else f"{users} users"


def level_checks(record: dict) -> str:
    """What the claim rules say about one level, in a few words ("–" when nothing)."""
    verdict = claims.judge_level(record)
    parts = [f"⚠ {why}" for why in verdict.exclusions]
    if verdict.cross_checked:
        parts.append("agrees with wrk")
    elif record.get("mode") == "closed" and record.get("wrk_skipped"):
        parts.append(f"no wrk: {record['wrk_skipped']}")
    return "; ".join(parts) or "–"


def capacity_of(name: str, capacity: Sequence[dict]) -> dict | None:
    return next((row for row in capacity if row.get("target") == name), None)


def headline(
    records: list[dict],
    baselines: list[dict],
    slo_ms: float,
    env: dict | None = None,
    capacity: Sequence[dict] = (),
) -> list[dict]:
    """One row per closed-loop batch-1 target. Generator-bound levels are left out of
    every figure; capacity comes from the search's bracket, else (older runs) from the
    best open-loop level, else the best closed-loop level."""
    rows = []
    for name, curve in series(records, "closed", 1).items():
        stack, protocol, device = name.split("/")
        curve = sorted(curve, key=lambda r: r["users"])
        usable = [r for r in curve if claims.judge_level(r).headline_ok]
        left_out = [f"{users_words(r['users'])}: generator-bound" for r in curve
                    if r not in usable]  # fmt: skip
        row: dict = {"target": name, "left_out": left_out}
        row.update(capacity_figures(name, records, slo_ms, capacity))
        path = floor_path(env or {}, stack)
        floor = floor_us(baselines, path, 1)
        row.update({"floor_path": path, "floor_p50_us": floor})
        if not usable:
            row.update({key: None for key in (
                "p50_ms_1_user", "p99_ms_1_user", "lowest_users", "peak_rps", "peak_users",
                "knee_users", "knee_rps", "overhead_x_in_process")})  # fmt: skip
            row["checks"] = "every level generator-bound"
            rows.append(row)
            continue
        knee_index = analysis.knee([r["users"] for r in usable], [r["rps"] for r in usable])
        single = usable[0]
        peak = max(usable, key=lambda r: r["rps"])
        checks = [f"lowest: {level_checks(single)}"]
        if peak is not single:
            checks.append(f"peak: {level_checks(peak)}")
        checks = [c for c in checks if not c.endswith(": –")]
        if left_out:
            checks.append("left out: " + ", ".join(left_out))
        row.update({
            "p50_ms_1_user": single["p50_ms"],
            "p99_ms_1_user": single["p99_ms"],
            "lowest_users": single["users"],
            "peak_rps": peak["rps"],
            "peak_users": peak["users"],
            "knee_users": usable[knee_index]["users"] if knee_index is not None else None,
            "knee_rps": usable[knee_index]["rps"] if knee_index is not None else None,
            "overhead_x_in_process": (single["p50_ms"] * 1000 / floor) if floor else None,
            "checks": "; ".join(checks) or "–",
        })  # fmt: skip
        rows.append(row)
    return rows


def capacity_figures(
    name: str, records: list[dict], slo_ms: float, capacity: Sequence[dict]
) -> dict:
    """The headline's "max req/s under the p99 objective" and its bracket."""
    row = capacity_of(name, capacity)
    if row is not None:
        passing, failing = row.get("passing"), row.get("failing")
        return {
            "max_rps_under_slo": passing["rate"] if passing else None,
            "max_rps_under_slo_mode": "open",
            "capacity_failing_rps": failing["rate"] if failing else None,
            "capacity_source": "search",
            "capacity_generator_limited": generator_limited(row),
            "capacity_precision_reached": row.get("precision_reached"),
            "capacity_trials": row.get("n_trials", len(row.get("trials", []))),
        }
    # Older runs: capacity under the objective comes from open-loop points where the run
    # has them: a closed loop slows its clients down with the server and flatters the tail.
    mine = [r for r in records if f"{r['stack']}/{r['protocol']}/{r['device']}" == name
            and r["batch_size"] == 1 and claims.judge_level(r).headline_ok]  # fmt: skip
    opened = [r for r in mine if r["mode"] == "open"]
    best = analysis.max_rps_under_slo(opened or mine, slo_ms)
    _, failing = claims.legacy_bracket(opened, slo_ms) if opened else (None, None)
    return {
        "max_rps_under_slo": best["rps"] if best else None,
        "max_rps_under_slo_mode": best["mode"] if best else None,
        "capacity_failing_rps": failing,
        "capacity_source": ("open-loop levels" if opened else "closed-loop levels")
        if best
        else None,
        "capacity_precision_reached": None,
        "capacity_trials": None,
    }


def capacity_text(h: dict) -> str:
    """A headline's capacity cell: the bracket where the search ran."""
    passing, failing = h.get("max_rps_under_slo"), h.get("capacity_failing_rps")
    if h.get("capacity_source") == "search":
        if h.get("capacity_generator_limited"):
            floor = f"≥ {passing:.0f}" if passing is not None else "not measured"
            return f"{floor} (generator-limited above)"
        if passing is None:
            return f"below {fmt(failing, 0)} (no rate passed)"
        if failing is None:
            return f"≥ {passing:.0f} (every rate tried passed)"
        return f"{passing:.0f}–{failing:.0f} (bracket)"
    if passing is None:
        return "–"
    return f"{passing:.0f} ({h.get('max_rps_under_slo_mode') or '–'})"


# --- sections ---------------------------------------------------------------------------


def intro_section(run_dir: Path, env: dict) -> list[str]:
    arrivals = env.get("arrivals") or {}
    spacing = (
        f"{arrivals.get('kind')} arrivals (seed {arrivals.get('seed')})"
        if arrivals
        else "requests scheduled at a fixed rate"
    )
    windows = (
        f"repeated until its last {env['stability']['min_windows']} windows agree (at most "
        f"{env['stability']['max_windows']})"
        if env.get("stability")
        else f"repeated {env.get('repeats')} times"
    )
    return [
        f"# Serving comparison: {run_dir.name}",
        "",
        f"Profile `{env.get('profile')}`: each point runs {env.get('warmup_s')} s of warm-up "
        f"(discarded) then {env.get('duration_s')} s measured, {windows}; tables show the "
        "median of the windows with the min–max spread. Percentiles come from every "
        "request's own latency, not from Locust's rounded percentiles. Every reply is "
        "checked against the answer key (a wrong class or logits off by >1e-4 is a failure).",
        "",
        "- **closed** loop: N users each send the next request when the last returns "
        "(throughput is what the server allows).",
        f"- **open** loop: {spacing}; latency counts from the scheduled start, so queueing "
        "behind a slow request is not hidden (no coordinated omission).",
        "- **wrk** (the closed loop's cross-check, and the sweeps' levels): its percentiles "
        "are wrk's, which it corrects for coordinated omission (loadtests/wrk.py): a reply "
        "slower than twice the mean interval between a connection's requests adds samples "
        "below it, so a few stalled replies show as a tail Locust's closed loop lacks.",
    ]


def environment_section(data: RunData) -> list[str]:
    env, slo = data.env, data.slo
    md = [
        "",
        "## Environment",
        "",
        "| what | value |",
        "| --- | --- |",
        f"| CPU | {env.get('cpu_model')} ({env.get('cores_usable')} usable cores) |",
        f"| GPU | {env.get('gpu') or 'none (CPU-only run)'} |",
        f"| pinning | servers on cores {env.get('server_cores')}, Locust on cores "
        f"{env.get('generator_cores')} ({env.get('pinning', 'taskset')}) |",
        f"| git commit | {env.get('git_commit')} |",
        f"| model | {env.get('model')} |",
        f"| p99 objective | {slo:g} ms |",
    ]
    if "generator_processes" in env:
        md.append(f"| generator processes | {env['generator_processes']}: "
                  f"{env.get('generator_note', '')} |")  # fmt: skip
    if env.get("arrivals"):
        md.append(f"| open-loop arrivals | {env['arrivals'].get('kind')}, seed "
                  f"{env['arrivals'].get('seed')} |")  # fmt: skip
    for tool, line in (env.get("tools") or {}).items():
        shown = f"**{line}**" if str(line).startswith("missing") else line
        md.append(f"| {tool} | {shown} |")
    if "interleaved" in env:
        md.append("| level order | " + ("interleaved: each level runs every stack in turn"
                  if env["interleaved"] else "one stack after another") + " |")  # fmt: skip
    if env.get("stability"):
        s = env["stability"]
        md.append(f"| stability rule | last {s.get('min_windows')} windows within "
                  f"±{s.get('tolerance', 0):.0%} in req/s and p99 (at most "
                  f"{s.get('max_windows')} windows, ≥ {s.get('min_requests')} requests "
                  "each) |")  # fmt: skip
    if env.get("capacity_search"):
        c = env["capacity_search"]
        md.append(f"| SLO capacity search | bisection to {c.get('precision', 0):.0%}, at most "
                  f"{c.get('max_trials')} trials; errors ≤ "
                  f"{env.get('max_error_rate', 0.001):.1%} |")  # fmt: skip
    for name, version in env.get("versions", {}).items():
        md.append(f"| {name} | {version} |")
    for stack, settings in env.get("servers", {}).items():
        md.append(f"| {stack} server | {settings} |")
    for stack, reason in env.get("skipped", {}).items():
        md.append(f"| {stack} | **skipped**: {reason} |")
    md += calibration_section(data)
    md += drift_section(data)
    md += neighbours_section(data)
    return md


def calibration_status(env: dict) -> str:
    if "calibrated" not in env:
        return f"Generator calibration: {NOT_MEASURED}."
    reason = env.get("calibration_reason") or "no reason recorded"
    if not env["calibrated"]:
        return f"**UNCALIBRATED: {reason}**"
    return f"Calibrated: {reason}."


def calibration_section(data: RunData) -> list[str]:
    """The generator's own floor against the null server, and the generator-bound rule."""
    env = data.env
    md = ["", "### The generator's floor (Locust against the null server)", "",
          calibration_status(env)]  # fmt: skip
    if env.get("generator_rule"):
        md += ["", f"**Generator-bound rule.** {env['generator_rule']}"]
    if not data.floors:
        md += ["", f"Floor table: {NOT_MEASURED}."]
        return md
    md += [
        "",
        "nginx answering each stack's exact reply, the same Locust user class: what the "
        "generator alone costs at each load. Closed loop, its req/s is the generator's "
        "ceiling at that concurrency.",
        "",
        "| target | batch | mode | users | rate req/s | floor p50 ms | floor p99 ms | "
        "req/s (ceiling) | requests |",
        "|" + " --- |" * 9,
    ]
    for f in sorted(data.floors, key=lambda f: (f["target"], f.get("batch_size", 1),
                                                f.get("mode") != "closed", f.get("users") or 0,
                                                f.get("rate") or 0)):  # fmt: skip
        md.append(
            f"| {f['target']} | {f.get('batch_size')} | {f.get('mode')} | {f.get('users')} | "
            f"{fmt(f.get('rate'), 0)} | {fmt(f.get('p50_ms'), 3)} | {fmt(f.get('p99_ms'), 3)} "
            f"| {fmt(f.get('rps'), 0)} | {fmt(f.get('requests'))} |"
        )
    return md


def drift_summary(points: Sequence[dict]) -> dict | None:
    """The machine's drift over the run, from the calibration loop and CPU steal read
    around each window; None when no window recorded it."""
    drifts = [p["drift"] for p in points if p.get("drift")]
    if not drifts:
        return None

    def known(key: str) -> list[float]:
        return [d[key] for d in drifts if d.get(key) is not None]

    changes, steal = known("calibration_change"), known("steal_share")
    loop = [t for t in known("calibration_before_us") + known("calibration_after_us") if t > 0]
    return {
        "windows": len(drifts),
        "change_min": min(changes) if changes else None,
        "change_max": max(changes) if changes else None,
        "steal_max": max(steal) if steal else None,
        "loop_us_min": min(loop) if loop else None,
        "loop_us_max": max(loop) if loop else None,
        "run_spread": max(loop) / min(loop) - 1.0 if loop else None,
    }


def drift_section(data: RunData) -> list[str]:
    summary = drift_summary(data.points)
    md = ["", "### Machine drift over the run", ""]
    if summary is None:
        return md + [f"Drift: {NOT_MEASURED}."]
    md.append(
        f"Over {summary['windows']} windows, the fixed calibration loop's time changed by "
        f"{pct(summary['change_min'], signed=True)} to "
        f"{pct(summary['change_max'], signed=True)} within a window; the highest CPU "
        f"steal share was {pct(summary['steal_max'], digits=1)}."
    )
    if summary["run_spread"] is not None:
        md.append(
            f"Across the whole run the loop took {summary['loop_us_min']:.0f}–"
            f"{summary['loop_us_max']:.0f} µs, so absolute figures may have drifted by about "
            f"{summary['run_spread']:.0%}; the levels were "
            + ("interleaved across stacks, so drift hit every stack alike, and "
               if data.env.get("interleaved") else "")
            + "rankings below count only differences beyond the spread of the repeats."
        )  # fmt: skip
    return md


def neighbours_section(data: RunData) -> list[str]:
    values = [p["neighbours_cpu_pct"] for p in data.points
              if p.get("neighbours_cpu_pct") is not None]  # fmt: skip
    md = ["", "### Idle neighbours on the server cores", ""]
    if not values:
        return md + [f"Neighbours' CPU: {NOT_MEASURED}."]
    note = (data.env.get("neighbour_note") or "").rstrip(".")
    md.append(
        f"The other stacks' highest CPU while a point ran: {max(values):.1f}% of one core "
        f"(median {float(np.median(values)):.1f}%)."
        + (f" {note[0].upper()}{note[1:]}." if note else "")
    )
    by_stack: dict[str, list[float]] = {}
    for p in data.points:
        for name, cpu in (p.get("neighbours_cpu_by_stack") or {}).items():
            if cpu is not None:
                by_stack.setdefault(name, []).append(cpu)
    if by_stack:
        # Whose it was: a stack's processes that keep busy while idle (a control loop, a
        # status poll) take the server's core from every other stack's points.
        shares = sorted(((float(np.median(v)), max(v), name) for name, v in by_stack.items()),
                        reverse=True)  # fmt: skip
        md.append("")
        md.append("Each idle neighbour, median (highest) % of one core while another stack's "
                  "point ran: " + ", ".join(f"{name} {median:.1f} ({top:.1f})"
                                             for median, top, name in shares) + ".")
    return md


def pct(value: float | None, signed: bool = False, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}%}" if signed else f"{value:.{digits}%}"


def headline_section(heads: list[dict], slo: float) -> list[str]:
    md = ["", "## Headline (closed loop, batch 1)", ""]
    md += [
        "Generator-bound levels are left out of every figure here (rule under Environment); "
        "a level flagged ⚠ (unstable, or off wrk by more than the limit) is shown but "
        "carries no claim.",
        "",
        "| stack/protocol/device | p50 ms, lowest load | p99 ms, lowest load | peak req/s | knee "
        f"(users, req/s) | max req/s with p99 ≤ {slo:g} ms | p50 vs in-process floor "
        "| checks |",
        "|" + " --- |" * 8,
    ]
    for h in heads:
        overhead = (
            (f"{h['overhead_x_in_process']:.0f}x {h['floor_path']} ({h['floor_p50_us']:.0f} µs)")
            if h["overhead_x_in_process"]
            else "–"
        )
        knee = f"{h['knee_users']}, {h['knee_rps']:.0f}" if h["knee_users"] else "not reached"
        lowest = f" ({h['lowest_users']}u)" if h.get("lowest_users") not in (None, 1) else ""
        md.append(
            f"| {h['target']} | {fmt(h['p50_ms_1_user'])}{lowest} | {fmt(h['p99_ms_1_user'])} "
            f"| {fmt(h['peak_rps'], 0)} | {knee} | {capacity_text(h)} | {overhead} | "
            f"{h['checks']} |"
        )
    return md


def capacity_section(data: RunData) -> list[str]:
    """The SLO capacity bracket per target, and every trial of its search."""
    env, slo = data.env, data.slo
    md = ["", "## SLO capacity (open loop, batch 1, by search)", ""]
    if not data.capacity:
        return md + [
            f"Capacity search: {NOT_MEASURED} (the headline's capacity, where shown, comes "
            "from the best open-loop level)."
        ]
    share = env.get("lateness_share_of_slo", analysis.LATENESS_SHARE_OF_SLO)
    md += [
        f"Bisection over the offered rate for the highest one whose p99 is ≤ {slo:g} ms with "
        f"errors ≤ {env.get('max_error_rate', 0.001):.1%}. A trial whose send lateness p99 "
        f"exceeds {share:.0%} of the objective ({share * slo:g} ms: the generator fell behind "
        "its schedule) is invalid: it measured the generator. A trial that misses the "
        "objective where the generator alone could explain it (its own p99 at that rate over "
        f"{calibration.FLOOR_P99_SHARE_OF_SLO:.0%} of the objective, or over "
        f"{calibration.CEILING_USED_LIMIT:.0%} of its ceiling used) is invalid too; a trial "
        "that meets the objective passes whatever the generator's share, since the generator "
        "only adds latency. Send lateness is the generator's own: from the later of the "
        "scheduled start and a user coming free, to the send. The pool wait (a due request "
        "waiting for a free user while the server held them all) is queueing in front of the "
        "server and counts in latency.",
        "",
        "| target | capacity lies in (req/s) | highest passing: p99 ms, errors | lowest failing:"
        " p99 ms, errors, why | precision | trials |",
        "|" + " --- |" * 6,
    ]
    for row in sorted(data.capacity, key=lambda r: r["target"]):
        passing, failing = row.get("passing"), row.get("failing")
        if passing and failing:
            where = f"[{passing['rate']:.0f}, {failing['rate']:.0f})"
        elif passing:
            where = f"≥ {passing['rate']:.0f} (no rate failed)"
        elif failing:
            where = f"< {failing['rate']:.0f} (no rate passed)"
        else:
            where = "–"
        width = row.get("width")
        precision = (
            f"{'reached' if row.get('precision_reached') else '**not reached**'}: width "
            f"{pct(width, digits=1)} (goal {pct(row.get('precision'))})"
        )
        md.append(
            f"| {row['target']} | {where} | {trial_figures(passing)} | "
            f"{trial_figures(failing, why=True)} | {precision} | "
            f"{row.get('n_trials', len(row.get('trials', [])))}: {row.get('reason', '')} |"
        )
    for row in sorted(data.capacity, key=lambda r: r["target"]):
        md += ["", f"### {row['target']}: capacity trials", ""]
        md += [
            "| # | offered req/s | achieved req/s | p50 ms | p99 ms | requests | failures | "
            "send lateness p99 ms | pool wait p99 ms | generator share | verdict |",
            "|" + " --- |" * 11,
        ]
        for i, trial in enumerate(row.get("trials", []), 1):
            figures = trial.get("figures") or {}
            behind = trial_fell_behind(trial, slo, share)
            verdict = "passed" if trial.get("passed") else f"failed: {trial.get('reason')}"
            lateness = fmt(figures.get("lateness_p99_ms"))
            if behind:
                lateness += " ⚠ generator fell behind"
            md.append(
                f"| {i} | {trial['rate']:.0f} | {fmt(figures.get('rps'), 0)} | "
                f"{fmt(as_float(figures.get('p50_ms')))} | {fmt(as_float(trial.get('p99_ms')))} | "
                f"{trial.get('requests')} | {trial.get('failures')} | {lateness} | "
                f"{fmt(figures.get('pool_wait_p99_ms'))} | "
                f"{pct(figures.get('generator_share'))} | {verdict} |"
            )
    return md


def as_float(value) -> float | None:
    """A figure as a float, so fmt() gives it its decimals even where JSON held an int."""
    return None if value is None else float(value)


def trial_fell_behind(trial: dict, slo: float, share: float) -> bool:
    """Whether the generator fell behind its schedule in a capacity trial: as the sweep
    recorded it, else from the trial's send lateness."""
    figures = trial.get("figures") or {}
    if figures.get("generator_fell_behind") is not None:
        return bool(figures["generator_fell_behind"])
    lateness = figures.get("lateness_p99_ms")
    return lateness is not None and lateness > share * slo


def trial_figures(trial: dict | None, why: bool = False) -> str:
    if trial is None:
        return "–"
    errors = trial["failures"] / trial["requests"] if trial.get("requests") else None
    text = (f"{trial['rate']:.0f} req/s: p99 {fmt(as_float(trial.get('p99_ms')))}, errors "
            f"{pct(errors, digits=2)}")  # fmt: skip
    return text + (f", {trial.get('reason')}" if why else "")


def worker_classes(env: dict) -> dict[str, str]:
    """stack -> gunicorn worker class, for the servers that recorded one (keys are
    "stack" or "stack/device")."""
    out = {}
    for key, settings in env.get("servers", {}).items():
        if isinstance(settings, dict) and settings.get("worker_class"):
            out[key.split("/")[0]] = settings["worker_class"]
    return out


def flask_section(data: RunData, records: list[dict]) -> list[str]:
    """The worker-class trade-off, with this run's tail under saturation (wrk)."""
    md = ["", "## Flask: gunicorn's worker class and the tail under saturation", ""]
    classes = worker_classes(data.env)
    if not classes:
        return md + [f"Worker class: {NOT_MEASURED}."]
    md += [WORKER_CLASS_NOTE, ""]
    md += [
        "| stack | worker class | highest closed-loop level | wrk req/s | wrk p90 ms | "
        "wrk p99 ms | Locust p99 ms (same level) |",
        "|" + " --- |" * 7,
    ]
    sentences = []
    for stack, worker in sorted(classes.items()):
        curve = [r for r in records if r["stack"] == stack and r["mode"] == "closed"
                 and r["batch_size"] == 1 and r["protocol"] == "rest"]  # fmt: skip
        if not curve:
            md.append(f"| {stack} | {worker} | – | – | – | – | – |")
            continue
        cpu = [r for r in curve if r["device"] == "cpu"] or curve
        top = max(cpu, key=lambda r: r["users"])
        tool = top.get("wrk")
        if tool:
            md.append(
                f"| {stack} | {worker} | {top['users']} users | {fmt(tool.get('goodput_rps'), 0)}"
                f" | {fmt(tool.get('p90_ms'))} | {fmt(tool.get('p99_ms'))} | "
                f"{fmt(top['p99_ms'])} |"
            )
            measured = (
                f"in this run wrk measured p90 {fmt(tool.get('p90_ms'))} ms and p99 "
                f"{fmt(tool.get('p99_ms'))} ms at {top['users']} connections, where Locust "
                f"read p99 {fmt(top['p99_ms'])} ms (its own per-request cost leaves the "
                "server idle gaps)"
            )
        else:
            why = top.get("wrk_skipped") or f"wrk {NOT_MEASURED}"
            md.append(f"| {stack} | {worker} | {top['users']} users | {why} | – | – | "
                      f"{fmt(top['p99_ms'])} |")  # fmt: skip
            measured = f"its saturation tail was not measured by wrk in this run ({why})"
        if "gevent" in worker:
            sentences.append(
                f"- {stack} runs `gevent`, chosen for slow-client protection; its tail under "
                f"saturation is the price: {measured}."
            )
        else:
            sentences.append(
                f"- {stack} runs `{worker}`, not the project's default `gevent`: {measured}."
            )
    return md + [""] + sentences + worker_class_comparison(data.worker_classes)


def worker_class_comparison(runs: list[dict]) -> list[str]:
    """The same stack and load under each gunicorn worker class, measured by wrk: the
    data the configured class is chosen from."""
    measured = [r for r in runs if r.get("wrk")]
    if not measured:
        return []
    stack, connections = measured[0]["stack"], measured[0]["connections"]
    md = [
        "",
        f"Each worker class on {stack}, wrk at {connections} connections (batch 1), one "
        "after the other on the same cores:",
        "",
        "| worker class | configured | wrk req/s | wrk p50 ms | wrk p90 ms | wrk p99 ms |",
        "|" + " --- |" * 6,
    ]
    for run in measured:
        w = run["wrk"]
        md.append(f"| {run['worker_class']} | {'yes' if run.get('configured') else 'no'} | "
                  f"{fmt(w.get('goodput_rps'), 0)} | {fmt(w.get('p50_ms'))} | "
                  f"{fmt(w.get('p90_ms'))} | {fmt(w.get('p99_ms'))} |")  # fmt: skip
    configured = next((r for r in measured if r.get("configured")), None)
    if configured:
        tails = {r["worker_class"]: r["wrk"]["p99_ms"] for r in measured}
        best = min(tails, key=tails.get)
        md += ["", (
            f"- The default stays `{configured['worker_class']}`: "
            + (f"its saturation tail is the shortest here (p99 {fmt(tails[best])} ms)"
               if best == configured["worker_class"] else
               f"its saturation tail (p99 {fmt(tails[configured['worker_class']])} ms) is "
               f"longer than `{best}`'s ({fmt(tails[best])} ms), the price of slow-client "
               "protection: with a thread or a process per connection, 32 slow clients "
               "starved normal requests (`make faults`), while gevent gives each a socket. "
               f"Behind a buffering proxy that absorbs slow clients, `{best}` is the choice "
               "for tail latency by this run")
            + "."
        )]
    return md


def choose_when(
    heads: list[dict],
    records: list[dict],
    baselines: list[dict],
    capacity: Sequence[dict] = (),
    slo_ms: float | None = None,
) -> list[str]:
    """Plain sentences drawn from the figures, not from opinion; rankings only where the
    difference exceeds the spread of the repeats (loadtests.claims)."""
    if not heads:
        return ["No closed-loop data: nothing to recommend."]
    lines = [
        "Two targets are ranked only where they differ by more than the spread of their "
        "windows (for capacity: where the brackets do not overlap); otherwise the answer is "
        f'"{claims.NO_DIFFERENCE} ...". A level that is generator-bound, unstable, or off '
        "wrk by more than the limit carries no claim on Locust's figure; where wrk measured "
        "it, the claim rests on wrk's figure instead (marked \"by wrk\"): the median of "
        "its runs, ranked beyond their min–max (a run with one wrk run per level: the spread "
        f"of Locust's windows, at least ±{claims.WRK_MIN_SPREAD:.0%}).",
        "",
    ]
    lines += ranked_claims(records, capacity, slo_ms)
    for h in heads:
        if h["overhead_x_in_process"]:
            at = "" if h["lowest_users"] == 1 else f" (at {users_words(h['lowest_users'])})"
            lines.append(
                f"- {h['target']}: served p50{at} is {h['overhead_x_in_process']:.0f}x the "
                f"in-process {h['floor_path']} call ({h['floor_p50_us']:.0f} µs), so its "
                "latency is HTTP, serialisation and queueing, not the model."
            )
    closed = series(records, "closed", 1)
    for name, curve in sorted(closed.items()):
        usable = [r for r in curve if claims.judge_level(r).claim_ok]
        if not usable:
            continue
        low = min(usable, key=lambda r: r["users"])
        queue = low.get("server_queue_ms")
        if queue and low["p50_ms"] and queue > 0.4 * low["p50_ms"]:
            lines.append(
                f"- {name}: at {users_words(low['users'])}, {queue:.1f} of its "
                f"{low['p50_ms']:.1f} ms p50 is queueing in the server (waiting for the "
                "dynamic batch to fill): "
                "for latency-bound, low-concurrency traffic lower maxBatchDelay/batchSize."
            )
    for row in sorted(capacity, key=lambda r: r["target"]):
        peak = row.get("closed_peak_rps")
        passing, failing = row.get("passing"), row.get("failing")
        if peak and passing:
            upper = f", below {failing['rate']:.0f}" if failing else ""
            lines.append(
                f"- {row['target']}: under open-loop arrivals it meets the objective up to "
                f"{passing['rate']:.0f} req/s{upper} ({passing['rate'] / peak:.0%} of its "
                f"closed-loop peak of {peak:.0f} req/s). Closed loops hide queueing; size for "
                "the open-loop figure when traffic does not slow down for the server."
            )
    if not capacity:
        for name, curve in sorted(series(records, "open", 1).items()):
            top = max(curve, key=lambda r: r["rate"] or 0)
            peak = max(closed.get(name, []), key=lambda r: r["rps"], default=None)
            if peak and top["p99_ms"] and peak["p99_ms"]:
                lines.append(
                    f"- {name} under open-loop arrivals at {top['rate']:.0f} req/s (near its "
                    f"closed-loop peak): p99 {top['p99_ms']:.1f} ms, against "
                    f"{peak['p99_ms']:.1f} ms in the closed loop at peak. Closed loops hide "
                    "queueing; size for the open-loop figure when traffic does not slow down "
                    "for the server."
                )
    for name, curve in sorted(series(records, "closed", 8).items()):
        usable = [r for r in curve if claims.judge_level(r).claim_ok and r["images_per_s"]]
        if not usable:
            continue
        top = max(usable, key=lambda r: r["images_per_s"])
        lines.append(
            f"- {name} with batch 8 moves {top['images_per_s']:.0f} images/s "
            f"({top['users']} users): client-side batching multiplies image throughput "
            "when the caller can wait for a batch."
        )
    graph = {r["path"]: r["p50_us"] for r in baselines if r["batch_size"] == 1}
    if "Keras eager call" in graph and "SavedModel signature" in graph:
        lines.append(
            f"- Static vs dynamic graphs (batch 1, in-process): Keras eager "
            f"{graph['Keras eager call']:.0f} µs, tf.function {graph.get('tf.function', 0):.0f}"
            f" µs, SavedModel signature {graph['SavedModel signature']:.0f} µs, TF1 Session "
            f"{graph.get('tf.compat.v1 Session (static graph)', 0):.0f} µs; torch eager "
            f"{graph.get('torch eager', 0):.0f} µs, TorchScript {graph.get('TorchScript', 0):.0f}"
            " µs. Graph mode pays off in TF (eager dispatch is costly); in torch the gap is "
            "small for a model this size."
        )
    return lines


def level_estimate(name: str, level: dict, key: str, unit: str) -> claims.Estimate | None:
    """One closed-loop level's figure for a ranking: Locust's windows where the level
    carries a claim, else wrk's run beside it (claims.wrk_estimate), else None."""
    verdict = claims.judge_level(level)
    if not verdict.claim_ok:
        return claims.wrk_estimate(name, level, key, unit, verdict.exclusions)
    digits = 0 if key == "rps" else 2
    return claims.window_estimate(
        name, level, key, caveats=verdict.caveats,
        detail=f"{'' if key == 'rps' else 'p50 '}{fmt(level[key], digits)} {unit}, windows "
               f"{fmt(level[f'{key}_min'], digits)}–{fmt(level[f'{key}_max'], digits)} at "
               f"{users_words(level['users'])}")  # fmt: skip


def ranked_claims(records: list[dict], capacity: Sequence[dict], slo_ms: float | None) -> list[str]:
    """The three rankings: latency at light load, peak throughput, capacity."""
    light: list[claims.Estimate] = []
    peak: list[claims.Estimate] = []
    light_out: list[str] = []
    peak_out: list[str] = []
    for name, curve in sorted(series(records, "closed", 1).items()):
        curve = sorted(curve, key=lambda r: r["users"])
        low = curve[0]
        if estimate := level_estimate(name, low, "p50_ms", "ms"):
            light.append(estimate)
        else:
            light_out.append(f"{name} at {users_words(low['users'])}: "
                             + "; ".join(claims.judge_level(low).exclusions))  # fmt: skip
        # The peak is the best level, each level on Locust's figure where it qualifies
        # and on wrk's where only wrk's does.
        tops = [(r, level_estimate(name, r, "rps", "req/s")) for r in curve]
        peak_out += [f"{name} at {users_words(r['users'])}: "
                     + "; ".join(claims.judge_level(r).exclusions)
                     for r, e in tops if e is None]  # fmt: skip
        if found := [e for _, e in tops if e is not None]:
            peak.append(max(found, key=lambda e: e.value))
    lines = [
        claims.claim_line("Lowest latency at light load",
                          claims.rank(light, False), light_out),
        claims.claim_line("Highest throughput on this hardware (batch 1, closed loop)",
                          claims.rank(peak, True), peak_out),
    ]  # fmt: skip
    estimates, left_out = capacity_estimates(records, capacity, slo_ms)
    if estimates or left_out:
        lines.append(claims.claim_line("Most capacity under the p99 objective",
                                       claims.rank(estimates, True), left_out))  # fmt: skip
    return lines


def capacity_estimates(
    records: list[dict], capacity: Sequence[dict], slo_ms: float | None
) -> tuple[list[claims.Estimate], list[str]]:
    """One capacity bracket per target: the search's, else (older runs) one read from
    the fixed open-loop levels; and the targets left out, with why."""
    estimates, left_out = [], []
    if capacity:
        for row in sorted(capacity, key=lambda r: r["target"]):
            passing, failing = row.get("passing"), row.get("failing")
            caveats = [] if row.get("precision_reached") else ["precision not reached"]
            if generator_limited(row):
                # Only a lower bound: above it the generator, not the server, failed.
                estimates.append(claims.capacity_estimate(
                    row["target"], passing["rate"] if passing else None, None,
                    f"≥ {passing['rate']:.0f} req/s" if passing else "nothing passed",
                    ["generator-limited above it"]))  # fmt: skip
                continue
            estimates.append(claims.capacity_estimate(
                row["target"], passing["rate"] if passing else None,
                failing["rate"] if failing else None, bracket_words(passing, failing),
                caveats))  # fmt: skip
        return estimates, left_out
    if slo_ms is None:
        return [], []
    for name, curve in sorted(series(records, "open", 1).items()):
        usable = [r for r in curve if claims.judge_level(r).claim_ok]
        if not usable:
            left_out.append(f"{name}: no open-loop level qualifies")
            continue
        passing, failing = claims.legacy_bracket(usable, slo_ms)
        estimates.append(claims.capacity_estimate(
            name, passing, failing, bracket_words({"rate": passing} if passing else None,
                                                  {"rate": failing} if failing else None),
            ["fixed open-loop fractions, not a search"]))  # fmt: skip
    return estimates, left_out


def generator_limited(row: dict) -> bool:
    """The search's lowest failing rate failed because of the generator (it was bound by
    its own cost or fell behind its schedule): the bracket is then only a lower bound on
    the server's capacity."""
    failing = row.get("failing")
    return bool(failing and failing.get("invalid"))


def bracket_words(passing: dict | None, failing: dict | None) -> str:
    if passing and failing:
        return f"[{passing['rate']:.0f}, {failing['rate']:.0f}) req/s"
    if passing:
        return f"≥ {passing['rate']:.0f} req/s, no rate failed"
    if failing:
        return f"< {failing['rate']:.0f} req/s, no rate passed"
    return "nothing measured"


def generator_cpu_cell(row: dict) -> str:
    """The generator's CPU, and its busiest process's where that is not the whole of it
    (Locust with --processes: one starved process is hidden in the sum)."""
    total, busiest = row.get("generator_cpu_pct"), row.get("generator_busiest_process_cpu_pct")
    if busiest is None or total is None or busiest >= total - 0.5:
        return fmt(total, 0)
    return f"{fmt(total, 0)} (busiest process {fmt(busiest, 0)})"


def level_table(rows: list[dict], level_key: str, with_wrk: bool = False) -> list[str]:
    """One row per level: Locust's figures, the generator's share, stability, and (with
    `with_wrk`, closed loop) wrk's figures and the divergence beside them."""
    header = (
        f"| {level_key} | req/s (min–max) | images/s | p50 ms (min–max) | p95 ms | "
        "p99 ms (min–max) | max ms | requests | failures | gen share / ceiling used | "
        "stable | gen CPU % | server CPU % | server RSS MiB |"
    )
    columns = 14
    if level_key == "rate":
        header += " send lateness p99 ms |"
        columns += 1
    if with_wrk:
        header += " wrk req/s | wrk p50 / p99 ms | Locust vs wrk |"
        columns += 3
    lines = [header, "|" + " --- |" * columns]
    for r in rows:
        flag = " ⚠ generator saturated" if r["generator_saturated"] else ""
        if r.get("key_rejected"):
            flag += (f" ⚠ key rejected ({r['key_rejected']} requests: the server's key "
                     "changed mid-run)")
        line = (
            f"| {fmt(r[level_key], 0)}{flag} | {fmt(r['rps'], 0)} ({fmt(r['rps_min'], 0)}–"
            f"{fmt(r['rps_max'], 0)}) | {fmt(r['images_per_s'], 0)} | {fmt(r['p50_ms'])} "
            f"({fmt(r['p50_ms_min'])}–{fmt(r['p50_ms_max'])}) | "
            f"{fmt(r['p95_ms'])} | {fmt(r['p99_ms'])} ({fmt(r['p99_ms_min'])}–"
            f"{fmt(r['p99_ms_max'])}) | {fmt(r['max_ms'])} | {r['requests']} | "
            f"{r['failures']} | {generator_cell(r)} | {stability_cell(r)} | "
            f"{generator_cpu_cell(r)} | "
            f"{fmt(r['server_cpu_pct'], 0)} | {fmt(r['server_rss_mb'], 0)} |"
        )
        if level_key == "rate":
            behind = " ⚠ generator fell behind" if r.get("generator_fell_behind") else ""
            line += f" {fmt(r.get('lateness_p99_ms'))}{behind} |"
        if with_wrk:
            line += " " + " | ".join(wrk_cells(r)) + " |"
        lines.append(line)
    return lines


def generator_cell(r: dict) -> str:
    if r.get("generator_calibrated") is False:
        return "uncalibrated"
    if r.get("generator_share") is None and r.get("generator_ceiling_used") is None:
        return "–"
    cell = f"{pct(r.get('generator_share'))} / {pct(r.get('generator_ceiling_used'))}"
    if r.get("generator_bound"):
        cell += " ⚠ generator-bound"
    return cell


def stability_cell(r: dict) -> str:
    if r.get("stable") is None:
        return "–"
    if r["stable"]:
        return f"yes ({r.get('windows')} windows)"
    return f"⚠ unstable: {r.get('stability_reason')}"


def wrk_cells(r: dict) -> list[str]:
    """wrk req/s, p50 / p99, and the divergence; the reason where wrk did not run."""
    tool = r.get("wrk")
    if not tool:
        why = r.get("wrk_skipped") or NOT_MEASURED
        return [f"wrk skipped: {why}", "–", "–"]
    divergence = r.get("divergence") or {}
    if divergence:
        limit = divergence.get("limit", 0.15)
        cell = (f"req/s {pct(divergence.get('rps'), signed=True)}, p50 "
                f"{pct(divergence.get('p50'), signed=True)}")  # fmt: skip
        if divergence.get("flagged"):
            cell += f" ⚠ > {limit:.0%}"
    else:
        cell = "–"
    rps = fmt(tool.get("goodput_rps", tool.get("rps")), 0)
    runs = r.get("wrk_runs") or []
    if len(runs) > 1:  # the run shown is the median one; its neighbours give the range
        goodput = [run.get("goodput_rps", run.get("rps")) or 0 for run in runs]
        rps += f" ({fmt(min(goodput), 0)}–{fmt(max(goodput), 0)}, {len(runs)} runs)"
    return [rps, f"{fmt(tool.get('p50_ms'))} / {fmt(tool.get('p99_ms'))}", cell]  # fmt: skip


def levels_section(data: RunData, records: list[dict]) -> list[str]:
    md = ["", "## Every load level", ""]
    has_levels = bool(data.levels)
    if not has_levels:
        md += [f"Stability verdicts and the independent client (wrk): {NOT_MEASURED}.", ""]
    else:
        md += [
            "Gen share: the generator's floor p50 over the level's p50; ceiling used: the "
            "level's req/s over the generator's ceiling at the same users (rule under "
            "Environment). Locust vs wrk: Locust's median window relative to wrk at the "
            f"same connections; ⚠ beyond ±{data.env.get('divergence_limit', 0.15):.0%}.",
            "",
        ]
    for (stack, protocol, device, batch, mode), rows in group_rows(records).items():
        md += [f"### {stack} / {protocol} / {device} / batch {batch} / {mode} loop", ""]
        md += level_table(rows, "users" if mode == "closed" else "rate",
                          with_wrk=has_levels and mode == "closed")  # fmt: skip
        md.append("")
    return md


def flags_section(data: RunData, records: list[dict]) -> list[str]:
    md = ["", "## Flags", ""]
    saturated = [r for r in records if r["generator_saturated"]]
    md.append(
        f"- {len(saturated)} load level(s) had a saturated load generator "
        "(marked ⚠ above; their latency includes the generator's own queueing)."
        if saturated
        else "- No point saturated the load generator."
    )
    bound = [r for r in records if r.get("generator_bound")]
    unstable = [r for r in records if r.get("stable") is False]
    diverged = [r for r in records if (r.get("divergence") or {}).get("flagged")]
    behind = [
        t
        for row in data.capacity
        for t in row.get("trials", [])
        if trial_fell_behind(
            t, data.slo, data.env.get("lateness_share_of_slo", analysis.LATENESS_SHARE_OF_SLO)
        )
    ]
    if "calibrated" in data.env:
        md.append(f"- {len(bound)} load level(s) generator-bound (shown, never a headline or "
                  "a claim).")  # fmt: skip
    if data.levels:
        md.append(f"- {len(unstable)} load level(s) unstable (windows disagreed; no claim).")
        md.append(f"- {len(diverged)} load level(s) off wrk beyond the divergence limit "
                  "(no claim).")  # fmt: skip
    if data.capacity:
        md.append(f"- {len(behind)} capacity trial(s) where the generator fell behind its "
                  "schedule (counted as failing).")  # fmt: skip
    failures = sum(r["failures"] or 0 for r in records)
    md.append(f"- Failed requests over the whole run: {failures}.")
    md.append(device_check_line(records))
    devices = {r["device"] for r in records}
    if devices == {"cpu"}:
        md.append("- CPU only: no GPU rows (run `make bench` on a GPU machine to add them).")
    return md


def device_check_line(records: list[dict]) -> str:
    """Where each target's server said it computed, read back before every point (a point
    whose server computed elsewhere than asked was refused and is not in the records)."""
    served: dict[str, set[str]] = {}
    for r in records:
        said = r.get("served_device") or "not read back (a run made before the check)"
        served.setdefault(f"{r['stack']}/{r['protocol']}/{r['device']}", set()).add(said)
    shown = "; ".join(f"{key} → {', '.join(sorted(said))}" for key, said in sorted(served.items()))
    note = (" (`unreported`: the server's replies name no device, so it is not verified)"
            if any(UNREPORTED in said for said in served.values()) else "")
    return ("- Device each server computed on, read back from a reply before every point: "
            f"{shown}{note}.")


def write_report(run_dir: Path, extra_sections: list[str] | None = None) -> Path:
    """Writes summary.json, REPORT.md and the plots into `run_dir`; returns REPORT.md.

    Args:
        extra_sections: Markdown lines appended to the report (tools.report adds the
            reliability runs' sections this way, so loadtests never imports reliability).
    """
    data = load_run(run_dir)
    env, slo = data.env, data.slo
    starts = coldstart.read_records(run_dir)
    floors = read_jsonl(run_dir / framework_floor.FLOOR_FILE)
    own = read_jsonl(run_dir / own_code.OWN_CODE_FILE)
    records = aggregate(data.sweep_points, data.levels)
    heads = headline(records, data.baselines, slo, env, data.capacity)
    summary = {"environment": env, "slo_p99_ms": slo, "headline": heads, "points": records,
               "baselines": data.baselines, "floors": data.floors, "capacity": data.capacity,
               "drift": drift_summary(data.points), "raw_points": data.points,
               "coldstart": coldstart.summarize(starts),
               "framework_floor": floors, "own_code": own,
               "gpu_levels": gpu_report.level_rows(data.sweep_points, env)}  # fmt: skip
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    images = plot_curves(records, run_dir, slo, data.floors, data.capacity)
    images += plot_baselines(data.baselines, run_dir) + plot_resources(records, run_dir)

    md = intro_section(run_dir, env) + gpu_report.header(env)
    md += environment_section(data)
    md += headline_section(heads, slo)
    md += capacity_section(data)
    md += framework_by_server(heads, env)
    md += device_comparison(heads)
    md += flask_section(data, records)
    md += ["", "## Which to choose when", ""]
    md += choose_when(heads, records, data.baselines, data.capacity, slo)
    for image in images:
        md += ["", f"![{image}]({image})"]
    md += levels_section(data, records)
    md += gpu_report.section(data.sweep_points, env)
    md += server_view(records)
    md += batches_section(records)
    md += ["## In-process baselines (one thread, server cores)", ""]
    md += ["| path | batch | p50 µs | p99 µs |", "| --- | --- | --- | --- |"]
    for row in data.baselines:
        md.append(
            f"| {row['path']} | {row['batch_size']} | {row['p50_us']:.1f} | {row['p99_us']:.1f} |"
        )
    if floors:
        md += framework_floor.markdown(floors)
        md += own_code.markdown(own, floors) or [f"Our own code in process: {NOT_MEASURED}.", ""]
    if starts:
        md += coldstart.markdown(starts)
    md += flags_section(data, records)
    if extra_sections:
        md += ["", *extra_sections]
    (run_dir / "REPORT.md").write_text("\n".join(md) + "\n")
    return run_dir / "REPORT.md"


def stack_kind(env: dict, stack: str) -> dict | None:
    """{"framework", "server"} of `stack`: as the run recorded it, else as its plugin says."""
    recorded = env.get("stack_kinds", {}).get(stack)
    if recorded:
        return recorded
    if stack not in STACK_MODULES:
        return None
    plugin = load_stack(stack)
    return {"framework": plugin.framework, "server": plugin.server_kind}


def framework_by_server(heads: list[dict], env: dict) -> list[str]:
    """The 2x2 (or larger): each framework on its dedicated server and behind our Flask
    app, REST on the CPU, so the framework's effect is separated from the server's."""
    cells: dict[tuple[str, str], dict] = {}
    for h in heads:
        stack, protocol, device = h["target"].split("/")
        kind = stack_kind(env, stack)
        if kind is None or protocol != "rest" or device != "cpu":
            continue
        cells[(kind["framework"], kind["server"])] = {**h, "stack": stack}
    frameworks = sorted({f for f, _ in cells})
    servers = sorted({s for _, s in cells})
    if len(frameworks) < 2 and len(servers) < 2:
        return []
    md = [
        "",
        "## Framework x server (REST, batch 1, CPU)",
        "",
        "Each cell: the stack, p50 at the lowest load, peak req/s (closed loop) and its "
        "capacity within the p99 objective (the search's bracket where the run has one). "
        "Down a column the server is the same and the framework changes; along a row the "
        "framework is the same and the server changes.",
        "",
        "| framework | " + " | ".join(servers) + " |",
        "|" + " --- |" * (len(servers) + 1),
    ]
    for framework in frameworks:
        row = [framework]
        for server in servers:
            h = cells.get((framework, server))
            row.append(
                f"{h['stack']}: {fmt(h['p50_ms_1_user'])} ms, {fmt(h['peak_rps'], 0)} req/s, "
                f"{capacity_text(h)} under objective"
                if h
                else "– (not run here)"
            )
        md.append("| " + " | ".join(row) + " |")
    return md


def device_comparison(heads: list[dict]) -> list[str]:
    """CPU and GPU side by side per stack/protocol, when the run has both."""
    by_target: dict[str, dict[str, dict]] = defaultdict(dict)
    for h in heads:
        stack, protocol, device = h["target"].split("/")
        by_target[f"{stack}/{protocol}"][device] = h
    both = {t: d for t, d in by_target.items() if len(d) > 1}
    if not both:
        return []
    md = [
        "",
        "## CPU vs GPU (closed loop, batch 1)",
        "",
        "| stack/protocol | device | p50 ms, lowest load | peak req/s |",
        "|" + " --- |" * 4,
    ]
    for target, devices in sorted(both.items()):
        for device, h in sorted(devices.items()):
            md.append(
                f"| {target} | {device} | {fmt(h['p50_ms_1_user'])} | {fmt(h['peak_rps'], 0)} |"
            )
    return md


def group_rows(records: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["stack"], r["protocol"], r["device"], r["batch_size"], r["mode"])].append(r)
    return groups


def model_compute_ms(record: dict) -> float | None:
    """Flask's reported compute p50, else TF Serving's mean model-run time."""
    if record["server_p50_ms"] is not None:
        return record["server_p50_ms"]
    return record.get("server_runtime_ms")


def batches_section(records: list[dict]) -> list[str]:
    """The forward passes each server actually formed at each level, from the request
    count its replies name (BATCH_HEADER), or from its own histogram of rows per batch
    (TF Serving): a batching config whose batches never fill shows here at a glance."""
    rows = [r for r in records if r.get("batch_hist") or r.get("batch_rows_hist")]
    if not rows:
        return []
    md = [
        "## Observed batch sizes (requests per forward pass, as the server formed them)",
        "",
        "Each answered request names how many requests shared its forward pass; k requests "
        "naming k are one pass of k. `size×passes`, over the level's measured windows. "
        "Flask never batches across requests (always 1). TF Serving's replies say nothing: "
        "its batching session's own histograms give its batches instead, in ranges of rows "
        "(`rows×batches`; a request of batch n is n rows), and the requests per batch from "
        "their sums (mean rows per batch over mean rows per request).",
        "",
        "| target | batch | mode | level | mean requests per pass | passes formed |",
        "|" + " --- |" * 6,
    ]
    for r in rows:
        level = r["users"] if r["mode"] == "closed" else r["rate"]
        formed = ", ".join(f"{size}×{passes}" for size, passes in r["batch_hist"].items()) \
            if r.get("batch_hist") else ", ".join(
                f"{label} rows×{passes}" for label, passes in r["batch_rows_hist"].items())
        md.append(f"| {r['stack']}/{r['protocol']} | {r['batch_size']} | {r['mode']} | "
                  f"{fmt(level, 0)} | {fmt(r['batch_mean'], 2)} | {formed} |")  # fmt: skip
    md.append("")
    return md


def server_view(records: list[dict]) -> list[str]:
    """Client latency beside the server's own timings, where the server reports them."""
    rows = [r for r in records if r["server_total_ms"] is not None
            or r["server_p50_ms"] is not None]  # fmt: skip
    if not rows:
        return []
    md = [
        "## Where the time goes (client view vs server's own timings)",
        "",
        "TorchServe: mean time per request from its Prometheus counters: queue (waiting for "
        "a worker, or for the dynamic batch to fill: up to maxBatchDelay) and server total "
        "(request received to response sent, queue included). TF Serving: mean request and "
        "model-run (runtime) latency from its Prometheus histograms. Flask: p50 of the model "
        "compute time the app reports in `X-Inference-Time-Ms`. The rest of the client's "
        "latency is HTTP, JSON, the worker hand-off and the network stack.",
        "",
        "| target | batch | mode | level | client p50 ms | server queue ms | "
        "server total ms | model compute ms |",
        "|" + " --- |" * 8,
    ]
    for r in rows:
        level = r["users"] if r["mode"] == "closed" else r["rate"]
        md.append(
            f"| {r['stack']}/{r['protocol']} | {r['batch_size']} | {r['mode']} | "
            f"{fmt(level, 0)} | {fmt(r['p50_ms'])} | {fmt(r['server_queue_ms'])} | "
            f"{fmt(r['server_total_ms'])} | {fmt(model_compute_ms(r), 3)} |"
        )
    md.append("")
    return md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    print(write_report(args.run_dir))


if __name__ == "__main__":
    main()
