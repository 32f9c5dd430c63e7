"""Batching-policy sweep: the latency/capacity trade-off of server-side batching
(`make batching`, issue 11 part 2).

Every stack that batches (ServingStack.server_batching) is started once per policy of
POLICIES (max batch size x max delay, and off), pinned to the server cores, and wrk on the
generator cores runs closed-loop levels of 1 to 32 connections (loadtests.closed_wrk).
Per policy: p50/p99 at one connection (the latency a lone client sees), and the capacity
under the objective (the most req/s of a level whose p99 meets it). The policies no other
policy beats on both (lower p99 at one connection, more capacity) form the Pareto front;
the picks for two stated objectives are made from it:

- lowest latency at low load: the least p50 at one connection;
- most capacity under the objective: the most req/s whose p99 meets it.

The policy reaches the server the way every run sets it: DIGITNET_BATCH* in the
environment where the stack starts (its launcher generates the server's own config from
it, digitnet.spec.BatchingPolicy).

Written to batching.jsonl, BATCHING.md and batching_pareto.png in the output folder.

    python -m loadtests.batching --artifacts artifacts --out results/batching-<time>
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from digitnet.artifacts import ArtifactPaths
from digitnet.spec import BatchingPolicy, ModelSpec, preset_of
from harness.lifecycle import START_ERRORS, did_not_start, skipped_reason, start_stack
from loadtests import splits
from loadtests.closed_wrk import (
    SLO_P99_MS,
    WRK_P99_NOTE,
    capacity_cell,
    capacity_under_objective,
    formed,
    passes_per_level,
    wrk_levels,
)
from loadtests.runner import split_cores
from loadtests.splits import SplitFiles
from services.process import usable_cores
from services.registry import all_stacks, load_stack
from services.stack import CPU

BATCHING_FILE = "batching.jsonl"
MARKDOWN_FILE = "BATCHING.md"
PLOT_FILE = "batching_pareto.png"
CONNECTIONS = (1, 4, 16, 32)
# Off, then growing batches and waits; 8 x 2 ms is the project's default, 8 x 5 ms the
# default it replaced (digitnet.spec.BATCHING_PRESETS).
POLICIES = (
    BatchingPolicy(enabled=False),
    BatchingPolicy(max_batch_size=4, max_delay_ms=1.0),
    BatchingPolicy(max_batch_size=8, max_delay_ms=2.0),
    BatchingPolicy(max_batch_size=8, max_delay_ms=5.0),
    BatchingPolicy(max_batch_size=16, max_delay_ms=5.0),
    BatchingPolicy(max_batch_size=16, max_delay_ms=10.0),
)


@contextmanager
def environment(extra: Mapping[str, str]) -> Iterator[None]:
    """os.environ with `extra` set inside the block, as it was after it (launchers read the
    policy from the starting process's environment)."""
    saved = {key: os.environ.get(key) for key in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def pareto_front(points: Sequence[Mapping]) -> list[Mapping]:
    """The points no other point dominates: lower-or-equal p99 at one connection and
    higher-or-equal capacity, better in one. A point without capacity (no level met the
    objective) is never on the front."""
    rated = [p for p in points if p["capacity_rps"] is not None]

    def dominates(a: Mapping, b: Mapping) -> bool:
        return (a["p99_1_ms"] <= b["p99_1_ms"] and a["capacity_rps"] >= b["capacity_rps"]
                and (a["p99_1_ms"] < b["p99_1_ms"] or a["capacity_rps"] > b["capacity_rps"]))

    return [p for p in rated if not any(dominates(q, p) for q in rated if q is not p)]


def picks(points: Sequence[Mapping]) -> dict[str, Mapping | None]:
    """The policy for each stated objective, chosen from the Pareto front."""
    front = pareto_front(points)
    return {
        "lowest latency at low load": min(front, key=lambda p: (p["p50_1_ms"], -p["capacity_rps"]),
                                          default=None),
        "most capacity under the objective": max(front, key=lambda p: (p["capacity_rps"],
                                                                       -p["p50_1_ms"]),
                                                 default=None),
    }  # fmt: skip


def measure_policy(name: str, policy: BatchingPolicy, paths: ArtifactPaths,
                   cores: tuple[list[int], list[int]], runs: int, duration_s: int,
                   run_dir: Path) -> dict:  # fmt: skip
    """One stack under one batching policy."""
    stack = load_stack(name)
    with ExitStack() as exits, environment(policy.env()):
        running = start_stack(stack, paths, run_dir / f"{name}-{policy.label.replace(' ', '')}",
                              exits, cores=cores[0], env=stack.device_env(CPU))  # fmt: skip
        read_back = stack.serving_config(running.server)
        levels = wrk_levels(running, CONNECTIONS, runs, duration_s, cores[1], run_dir,
                            batches=True)  # fmt: skip
    capacity = capacity_under_objective(levels, SLO_P99_MS)
    return {
        "stack": name, "policy": policy.label, "enabled": policy.enabled,
        "max_batch_size": policy.max_batch_size, "max_delay_ms": policy.max_delay_ms,
        "p50_1_ms": levels[0]["p50_ms"], "p99_1_ms": levels[0]["p99_ms"],
        "capacity_rps": None if capacity is None else capacity["rps"],
        "capacity_connections": None if capacity is None else capacity["connections"],
        "config_read_back": read_back, "levels": levels,
    }  # fmt: skip


def policy_label(record: Mapping) -> str:
    """The record's policy, with the name of the preset it is (`make ... BATCHING=`)."""
    policy = BatchingPolicy(enabled=record["enabled"], max_batch_size=record["max_batch_size"],
                            max_delay_ms=record["max_delay_ms"])  # fmt: skip
    preset = preset_of(policy)
    return record["policy"] if preset is None else f"{record['policy']} (`{preset}`)"


def _read_back(config: Mapping) -> str:
    return ", ".join(f"{k} {v}" for k, v in config.items()) if config else "not reported"


def markdown(records: Sequence[Mapping], skipped: Mapping[str, str]) -> list[str]:
    md = ["# Batching policy: latency at low load against capacity", "",
          "Closed-loop wrk at 1, 4, 16 and 32 connections, batch 1 per request. Capacity: the "
          f"most req/s of a level whose p99 ≤ {SLO_P99_MS:g} ms (a closed-loop lower bound of "
          f"the open-loop SLO capacity; {WRK_P99_NOTE}). ★: on the Pareto front of p99 at one "
          "connection against capacity. In brackets: the preset that policy is "
          "(`make ... BATCHING=` "
          "or DIGITNET_BATCHING_PRESET picks it for every stack; digitnet/spec.py). "
          "Requests per pass: the forward passes the server formed at each level, read in one "
          "more wrk run per level that counts the requests each reply says shared its pass "
          "(TF Serving: its batching metrics, in rows), never a run whose latency is "
          "reported; `size×passes` at 32 connections.", "",
          f"![p99 against capacity per policy]({PLOT_FILE})",
          ""]  # fmt: skip
    for name in dict.fromkeys(r["stack"] for r in records):
        mine = [r for r in records if r["stack"] == name]
        front = {id(p) for p in pareto_front(mine)}
        md += [f"## {name}", "", "| policy | p50 at 1 conn. ms | p99 at 1 conn. ms "
               "| capacity req/s (connections) | p99 ms at 4 / 16 / 32 conn. | front "
               "| requests per pass at 1 / 4 / 16 / 32 conn. | passes formed at 32 conn. "
               "| as the server reports it |", "|" + " --- |" * 9]  # fmt: skip
        for r in mine:
            cap = capacity_cell(r)
            tails = " / ".join(f"{lv['p99_ms']:.1f}" for lv in r["levels"][1:])
            md.append(f"| {policy_label(r)} | {r['p50_1_ms']:.3f} | {r['p99_1_ms']:.3f} | {cap} "
                      f"| {tails} | {'★' if id(r) in front else ''} "
                      f"| {passes_per_level(r['levels'])} | {formed(r['levels'][-1])} "
                      f"| {_read_back(r.get('config_read_back', {}))} |")  # fmt: skip
        md.append("")
        for objective, pick in picks(mine).items():
            md.append(f"- {objective}: " + ("no policy meets the objective" if pick is None
                      else f"**{policy_label(pick)}** (p50 {pick['p50_1_ms']:.3f} ms at one "
                           f"connection, {pick['capacity_rps']:.0f} req/s)"))  # fmt: skip
        md.append("")
    md += [f"- {name}: **not run**: {why}" for name, why in skipped.items()]
    return md


def plot(records: Sequence[Mapping], out: Path) -> Path:
    from loadtests.plots import _pyplot

    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r["stack"] for r in records):
        mine = [r for r in records if r["stack"] == name and r["capacity_rps"] is not None]
        axis.scatter([r["capacity_rps"] for r in mine], [r["p99_1_ms"] for r in mine],
                     label=name)  # fmt: skip
        for r in mine:
            axis.annotate(r["policy"], (r["capacity_rps"], r["p99_1_ms"]), fontsize=7)
        front = sorted(pareto_front(mine), key=lambda p: p["capacity_rps"])
        axis.plot([p["capacity_rps"] for p in front], [p["p99_1_ms"] for p in front],
                  linestyle="--")  # fmt: skip
    axis.set_xlabel(f"capacity under p99 ≤ {SLO_P99_MS:g} ms (req/s, closed loop)")
    axis.set_ylabel("p99 at one connection (ms)")
    axis.set_title("Batching policy trade-off (dashed: Pareto front)")
    axis.grid(True, alpha=0.3)
    axis.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def run(paths: ArtifactPaths, out: Path, stacks: Sequence[str], runs: int, duration_s: int,
        policies: Sequence[BatchingPolicy] = POLICIES) -> list[dict]:  # fmt: skip
    files = SplitFiles(out, BATCHING_FILE, MARKDOWN_FILE)
    cores = split_cores(usable_cores())
    print(f"batching: servers on cores {cores[0]}, wrk on cores {cores[1]}", flush=True)
    records: list[dict] = []
    skipped: dict[str, str] = {}
    started = time.monotonic()
    for name in stacks:
        reason = skipped_reason(name)
        if reason is not None:
            skipped[name] = reason
            print(f"batching: {name}: skipped ({reason[:80]})", flush=True)
            continue
        for policy in policies:
            try:
                record = measure_policy(name, policy, paths, cores, runs, duration_s,
                                        out / "servers")  # fmt: skip
            except START_ERRORS as err:
                skipped[name] = did_not_start(err, policy.label)
                continue
            records.append(record)
            files.append(record)
            print(f"batching: {name} {policy.label}: p50 {record['p50_1_ms']:.3f} ms at one "
                  f"connection, capacity {capacity_cell(record)} "
                  f"[{time.monotonic() - started:.0f} s]", flush=True)  # fmt: skip
    files.write_markdown(markdown(records, skipped))
    if records:
        plot(records, out / PLOT_FILE)
    return records


def main() -> None:
    parser = splits.arguments(__doc__.splitlines()[0], "batching")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    args, stacks = splits.parse(parser, "batching",
                                [s.name for s in all_stacks() if s.server_batching])
    paths = ArtifactPaths(args.artifacts, ModelSpec.from_env())
    run(paths, args.out, stacks, args.runs, args.duration)
    print(f"batching: wrote {args.out / MARKDOWN_FILE}", flush=True)


if __name__ == "__main__":
    main()
