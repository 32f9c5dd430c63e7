"""The fair fight: each stack out of the box against our configuration, on the same points
(`make fair`, issue 11 part 1).

A comparison of serving stacks says little if one side runs tuned and the other as
shipped, or if the configurations are not disclosed. Here every available stack runs
twice, pinned to the same server cores, with wrk on the generator cores at 1 to 32
connections (loadtests.closed_wrk):

- default: ServingStack.default_preset, the stack as its documentation gives it without
  tuning (gunicorn's sync worker, TorchServe's batchSize 1 and its worker decoding JSON,
  Serve without @serve.batch, TF Serving without --enable_batching);
- ours: the configuration every other run of this project uses.

Each run's configuration is read back from the running server (ServingStack.
serving_config), and the report shows both, what differs, p50/p99 at one connection, the
capacity under the objective and the gain (ours / default). The goal: ours at least
GOAL_GAIN x the default's capacity, or the report says why not.

    python -m loadtests.fair --artifacts artifacts --out results/fair-<time>
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path

from digitnet.artifacts import ArtifactPaths
from digitnet.spec import ModelSpec
from harness.lifecycle import START_ERRORS, did_not_start, skipped_reason, start_stack
from loadtests import splits
from loadtests.batching import environment
from loadtests.closed_wrk import (
    SLO_P99_MS,
    WRK_P99_NOTE,
    capacity_below,
    capacity_cell,
    capacity_under_objective,
    formed,
    passes_per_level,
    wrk_levels,
)
from loadtests.runner import split_cores
from loadtests.splits import SplitFiles
from services.process import usable_cores
from services.registry import load_stack, stack_names
from services.stack import CPU

FAIR_FILE = "fair.jsonl"
MARKDOWN_FILE = "FAIR.md"
CONNECTIONS = (1, 4, 16, 32)
GOAL_GAIN = 1.5
DEFAULT, OURS = "default", "ours"


def gain(ours: Mapping, default: Mapping) -> float | None:
    """Ours' capacity over the default's; None when either has none (no level met the
    objective: then the capacity column says so)."""
    if not ours.get("capacity_rps") or not default.get("capacity_rps"):
        return None
    return ours["capacity_rps"] / default["capacity_rps"]


def gain_at_least(ours: Mapping, default: Mapping) -> float | None:
    """A lower bound of the gain where the default meets the objective at no level but
    ours does: the default's capacity is then below what it served at one connection
    (closed_wrk.capacity_below), so the gain is above ours over that rate. None otherwise."""
    below = capacity_below(default)
    if not ours.get("capacity_rps") or not below:
        return None
    return ours["capacity_rps"] / below


def config_difference(ours: Mapping, default: Mapping) -> dict[str, tuple]:
    """Read-back keys whose values differ: key -> (default's, ours)."""
    keys = dict.fromkeys([*default, *ours])
    return {k: (default.get(k), ours.get(k)) for k in keys if default.get(k) != ours.get(k)}


def measure_preset(name: str, preset: str, paths: ArtifactPaths,
                   cores: tuple[list[int], list[int]], runs: int, duration_s: int,
                   run_dir: Path) -> dict:  # fmt: skip
    stack = load_stack(name)
    env = dict(stack.default_preset or {}) if preset == DEFAULT else {}
    with ExitStack() as exits, environment(env):
        running = start_stack(stack, paths, run_dir / f"{name}-{preset}", exits,
                              cores=cores[0], env=stack.device_env(CPU))  # fmt: skip
        read_back = stack.serving_config(running.server)
        levels = wrk_levels(running, CONNECTIONS, runs, duration_s, cores[1], run_dir,
                            batches=True)  # fmt: skip
    capacity = capacity_under_objective(levels, SLO_P99_MS)
    return {
        "stack": name, "preset": preset, "preset_env": env, "config_read_back": read_back,
        "p50_1_ms": levels[0]["p50_ms"], "p99_1_ms": levels[0]["p99_ms"],
        "capacity_rps": None if capacity is None else capacity["rps"],
        "capacity_connections": None if capacity is None else capacity["connections"],
        "levels": levels,
    }  # fmt: skip


def markdown(records: Sequence[Mapping], skipped: Mapping[str, str],
             same: Mapping[str, str]) -> list[str]:  # fmt: skip
    md = ["# The fair fight: out of the box against ours", "",
          "Closed-loop wrk at 1, 4, 16 and 32 connections, batch 1, the same cores for both. "
          f"Capacity: the most req/s of a level whose p99 ≤ {SLO_P99_MS:g} ms (a closed-loop "
          f"lower bound of the open-loop SLO capacity; {WRK_P99_NOTE}). "
          f"Goal: ours ≥ {GOAL_GAIN:g} × the "
          "default's capacity. Configurations as each running server reported them. "
          "Requests per pass: the forward passes the server formed at each level, counted "
          "in one more wrk run per level from the requests each reply says shared its pass "
          "(never a reported run); `size×passes` at 32 connections.", "",
          "| stack | preset | p50 at 1 conn. ms | p99 at 1 conn. ms | capacity req/s "
          "(connections) | p99 ms at 4 / 16 / 32 conn. | gain | requests per pass at 1 / 4 "
          "/ 16 / 32 conn. | passes formed at 32 conn. |", "|" + " --- |" * 9]  # fmt: skip
    notes: list[str] = []
    for name in dict.fromkeys(r["stack"] for r in records):
        by = {r["preset"]: r for r in records if r["stack"] == name}
        ratio = gain(by[OURS], by[DEFAULT]) if len(by) == 2 else None
        above = gain_at_least(by[OURS], by[DEFAULT]) if len(by) == 2 else None
        for preset in (DEFAULT, OURS):
            r = by.get(preset)
            if r is None:
                continue
            tails = " / ".join(f"{lv['p99_ms']:.1f}" for lv in r["levels"][1:])
            shown = ("" if preset == DEFAULT else f"{ratio:.2f}×" if ratio is not None
                     else f"> {above:.1f}×" if above is not None else "")  # fmt: skip
            passes = f"{passes_per_level(r['levels'])} | {formed(r['levels'][-1])}"
            md.append(f"| {name} | {preset} | {r['p50_1_ms']:.3f} | {r['p99_1_ms']:.3f} "
                      f"| {capacity_cell(r)} | {tails} | {shown} | {passes} |")  # fmt: skip
        if len(by) == 2:
            differs = config_difference(by[OURS]["config_read_back"],
                                        by[DEFAULT]["config_read_back"])  # fmt: skip
            change = "; ".join(f"{k}: {a} → {b}" for k, (a, b) in differs.items())
            env = " ".join(f"{k}={v}" for k, v in by[DEFAULT]["preset_env"].items())
            met = max(ratio or 0.0, above or 0.0) >= GOAL_GAIN
            why = load_stack(name).tuning_limit
            figure = ("" if ratio is None and above is None
                      else f" ({ratio:.2f}×)" if ratio is not None
                      else f" (more than {above:.1f}×: the default met the objective at no "
                           "level, so its capacity is below what it served at one "
                           "connection)")  # fmt: skip
            notes.append(f"- {name}: default = ours with `{env}`; read back: "
                         f"{change or 'no difference the server reports'}. Goal "
                         f"{'met' if met else '**not met**'}{figure}"
                         + ("" if met or not why else f": {why}") + ".")  # fmt: skip
    md += ["", *notes]
    md += [f"- {name}: one configuration only: {why}" for name, why in same.items()]
    md += [f"- {name}: **not run**: {why}" for name, why in skipped.items()]
    return md


def run(paths: ArtifactPaths, out: Path, stacks: Sequence[str], runs: int,
        duration_s: int) -> list[dict]:  # fmt: skip
    files = SplitFiles(out, FAIR_FILE, MARKDOWN_FILE)
    cores = split_cores(usable_cores())
    print(f"fair: servers on cores {cores[0]}, wrk on cores {cores[1]}", flush=True)
    records: list[dict] = []
    skipped: dict[str, str] = {}
    same: dict[str, str] = {}
    started = time.monotonic()
    for name in stacks:
        stack = load_stack(name)
        reason = skipped_reason(stack)
        if reason is not None:
            skipped[name] = reason
            continue
        presets = (DEFAULT, OURS) if stack.default_preset is not None else (OURS,)
        if stack.default_preset is None:
            same[name] = stack.default_preset_why
        for preset in presets:
            try:
                record = measure_preset(name, preset, paths, cores, runs, duration_s,
                                        out / "servers")  # fmt: skip
            except START_ERRORS as err:
                skipped[name] = did_not_start(err, preset)
                continue
            records.append(record)
            files.append(record)
            print(f"fair: {name} {preset}: p50 {record['p50_1_ms']:.3f} ms at one connection, "
                  f"capacity {capacity_cell(record)} [{time.monotonic() - started:.0f} s]",
                  flush=True)  # fmt: skip
    files.write_markdown(markdown(records, skipped, same))
    return records


def main() -> None:
    parser = splits.arguments(__doc__.splitlines()[0], "fair")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    args, stacks = splits.parse(parser, "fair", stack_names())
    run(ArtifactPaths(args.artifacts, ModelSpec.from_env()), args.out, stacks, args.runs,
        args.duration)
    print(f"fair: wrote {args.out / MARKDOWN_FILE}", flush=True)


if __name__ == "__main__":
    main()
