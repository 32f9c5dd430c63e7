"""Reliability runs against the locally started stacks.

  python -m reliability matrix            # `make robustness`: bad input x stack -> status
  python -m reliability faults            # `make faults`: kill a worker, SIGTERM, slow clients
  python -m reliability soak --duration 600   # `make soak`
  python -m reliability overload          # `make overload`: 1.5x, 2x, 5x capacity, then 50%
  python -m reliability floods            # `make floods`: idle, slow and big-body floods
  python -m reliability audit             # `make audit`: pip-audit of requirements.lock

Each run starts the stacks it needs on free 127.0.0.1 ports, stops them afterwards, prints
its table and writes results/<kind>/<timestamp>/ (JSON + Markdown). With --into-run
results/<run-id> the JSON is also copied there, and `make report RUN=...` includes it
(overload also takes each stack's capacity from that run's capacity.jsonl).
Exit status 1 when any check failed (the table says which), 0 otherwise; overload states
where each stack stands against issue 12's goals and fails on a missed one only with
--strict.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

from digitnet.artifacts import DEFAULT_ARTIFACTS, ArtifactPaths
from harness.artifacts import ensure_artifacts
from harness.lifecycle import RunningStack, running_stacks, skipped_reason, start_stack
from harness.paths import timestamped_dir
from reliability import report
from reliability.settings import (
    FaultSettings,
    FloodSettings,
    MatrixSettings,
    OverloadSettings,
    SlowClientSettings,
    SoakSettings,
    from_env,
)
from services.process import usable_cores
from services.registry import load_stack, parse_stacks, stack_names

SCENARIOS = ("kill", "sigterm", "slow")


def write_results(kind: str, files: dict[str, dict], markdown: list[str], md_name: str,
                  into_run: Path | None) -> Path:
    """results/<kind>/<timestamp>/ with each JSON file and the Markdown; returns the folder."""
    out = timestamped_dir(kind)
    for name, data in files.items():
        text = json.dumps(data, indent=2) + "\n"
        (out / name).write_text(text)
        if into_run is not None:
            (into_run / report.RUN_SUBDIR).mkdir(parents=True, exist_ok=True)
            (into_run / report.RUN_SUBDIR / name).write_text(text)
    (out / md_name).write_text("\n".join(markdown) + "\n")
    return out


def run_matrix(paths: ArtifactPaths, stacks: list[str], into_run: Path | None) -> int:
    from reliability.robustness import FAIL, run_matrix, skipped_cells, to_json

    settings = from_env(MatrixSettings, "MATRIX")
    cells = []
    with tempfile.TemporaryDirectory(prefix="robustness-") as tmp:
        with running_stacks(paths, Path(tmp), stacks) as (running, skipped):
            for stack in running:
                print(f"robustness: {stack.name} ...", flush=True)
                cells += run_matrix(stack, settings)
    for name, reason in skipped.items():
        cells += skipped_cells(name, list(load_stack(name).protocols), reason)
    data = to_json(cells, skipped)
    md = report.matrix_markdown(data)
    out = write_results("robustness", {report.MATRIX_FILE: data}, md, "MATRIX.md", into_run)
    print("\n".join(md))
    print(f"robustness: wrote {out}")
    return 1 if any(cell.verdict == FAIL for cell in cells) else 0


def run_faults(paths: ArtifactPaths, stacks: list[str], scenarios: list[str],
               into_run: Path | None) -> int:
    from reliability.faults import kill_worker, sigterm
    from reliability.slow_clients import slow_clients

    fault_settings = from_env(FaultSettings, "FAULT")
    slow_settings = from_env(SlowClientSettings, "SLOW")
    faults: dict = {"kill_worker": [], "sigterm": [], "skipped": {}}
    slow: dict = {"runs": [], "skipped": {}}
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
        for name in stacks:
            reason = skipped_reason(name)
            if reason is not None:
                faults["skipped"][name] = slow["skipped"][name] = reason
                continue
            if "kill" in scenarios or "slow" in scenarios:
                with ExitStack() as exits:
                    running = start_stack(name, paths, Path(tmp) / name, exits)
                    if "slow" in scenarios:
                        print(f"faults: {name} slow clients ...", flush=True)
                        slow["runs"].append(slow_clients(running, slow_settings))
                    if "kill" in scenarios:
                        print(f"faults: {name} kill a worker ...", flush=True)
                        faults["kill_worker"].append(kill_worker(running, fault_settings))
            if "sigterm" in scenarios:
                print(f"faults: {name} SIGTERM ...", flush=True)
                faults["sigterm"].append(
                    sigterm(name, paths, Path(tmp) / f"{name}-sigterm", fault_settings))
    md = report.faults_markdown(faults) + report.slow_clients_markdown(slow)
    md += [f"- **{name} skipped**: {why}" for name, why in faults["skipped"].items()]
    files = {report.FAULTS_FILE: faults, report.SLOW_CLIENTS_FILE: slow}
    out = write_results("faults", files, md, "FAULTS.md", into_run)
    print("\n".join(md))
    print(f"faults: wrote {out}")
    failed = [k for k in faults["kill_worker"] if k.get("applicable") and not k["recovered"]]
    failed += [t for t in faults["sigterm"] if not (
        t["in_flight_finished"] and t["new_refused_cleanly"] and t["exited_within_grace"])]
    failed += [r for r in slow["runs"] if not r["not_starved"]]
    return 1 if failed else 0


def each_running(paths: ArtifactPaths, stacks: list[str], kind: str, skipped: dict[str, str],
                 **options) -> Iterator[RunningStack]:
    """Each stack this machine can run, started on free ports (start_stack's `options`:
    cores, env), yielded, then stopped; the others' reasons go into `skipped`."""
    with tempfile.TemporaryDirectory(prefix=f"{kind}-") as tmp:
        for name in stacks:
            reason = skipped_reason(name)
            if reason is not None:
                skipped[name] = reason
                continue
            with ExitStack() as exits:
                yield start_stack(name, paths, Path(tmp) / name, exits, **options)


def run_soak(paths: ArtifactPaths, stacks: list[str], settings: SoakSettings,
             into_run: Path | None) -> int:
    from reliability.soak import soak

    data: dict = {"runs": [], "skipped": {}}
    for running in each_running(paths, stacks, "soak", data["skipped"]):
        print(f"soak: {running.name} at {settings.rate:g} req/s for {settings.duration_s:g} s",
              flush=True)
        data["runs"].append(soak(running, settings, progress=True))
    md = report.soak_markdown(data)
    out = write_results("soak", {report.SOAK_FILE: data}, md, "SOAK.md", into_run)
    print("\n".join(md))
    print(f"soak: wrote {out}")
    return 0 if all(run["passed"] for run in data["runs"]) else 1


def run_overload(paths: ArtifactPaths, stacks: list[str], settings: OverloadSettings,
                 into_run: Path | None, strict: bool, measure_capacity: bool) -> int:
    from reliability.overload import (
        OVERLOAD_ENV,
        capacity_from_run,
        guard_line,
        overload,
        split_cores,
    )

    server_cores, generator_cores = split_cores(usable_cores())
    print(f"overload: servers on cores {server_cores}, the generator on cores "
          f"{generator_cores}; {guard_line()}", flush=True)
    data: dict = {"runs": [], "skipped": {}, "guard": guard_line()}
    for running in each_running(paths, stacks, "overload", data["skipped"],
                                cores=server_cores if server_cores != generator_cores else None,
                                env=OVERLOAD_ENV):
        capacity = (capacity_from_run(into_run, running.name)
                    if into_run is not None and not measure_capacity else None)
        try:
            data["runs"].append(overload(running, settings, capacity, server_cores,
                                         generator_cores,
                                         progress=lambda line: print(line, flush=True)))
        except ValueError as err:  # a stack offering no REST endpoint
            data["skipped"][running.name] = str(err)
    md = report.overload_markdown(data)
    out = write_results("overload", {report.OVERLOAD_FILE: data}, md, "OVERLOAD.md", into_run)
    print("\n".join(md))
    print(f"overload: wrote {out}")
    missed = [f"{run['stack']} {m}" for run in data["runs"] for m in run["missed"]]
    if missed:
        print("overload: goals missed: " + "; ".join(missed))
    return 1 if strict and missed else 0


def run_floods(paths: ArtifactPaths, stacks: list[str], settings: FloodSettings,
               into_run: Path | None) -> int:
    from reliability.floods import floods
    from reliability.overload import OVERLOAD_ENV, guard_line, split_cores
    from services.process import pinned

    server_cores, generator_cores = split_cores(usable_cores())
    print(f"floods: servers on cores {server_cores}, the clients on cores {generator_cores}; "
          f"{guard_line()}", flush=True)
    data: dict = {"runs": [], "skipped": {}, "server_cores": server_cores,
                  "generator_cores": generator_cores, "guard": guard_line()}
    for running in each_running(paths, stacks, "floods", data["skipped"],
                                cores=server_cores if server_cores != generator_cores else None,
                                env=OVERLOAD_ENV):
        with pinned(generator_cores):
            data["runs"].append(floods(running, settings,
                                       progress=lambda line: print(line, flush=True)))
    md = report.floods_markdown(data)
    out = write_results("floods", {report.FLOODS_FILE: data}, md, "FLOODS.md", into_run)
    print("\n".join(md))
    print(f"floods: wrote {out}")
    return 0 if all(run["passed"] for run in data["runs"]) else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Settings: MATRIX_*, FAULT_*, SLOW_*, SOAK_*, OVERLOAD_*, FLOOD_* variables "
               "(reliability/settings.py)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {
        "matrix": sub.add_parser("matrix", help="every bad input on every stack"),
        "faults": sub.add_parser("faults", help="kill a worker, SIGTERM, slow clients"),
        "soak": sub.add_parser("soak", help="fixed rate for a long while, memory watched"),
        "overload": sub.add_parser("overload", help="1.5x, 2x, 5x capacity, then 50%%: "
                                   "goodput, refusals, recovery"),
        "floods": sub.add_parser("floods", help="idle and slow connection floods, big "
                                 "bodies, held while normal clients run"),
    }
    commands["faults"].add_argument("--scenarios", default=",".join(SCENARIOS),
                                    help=f"comma-separated subset of {','.join(SCENARIOS)}")
    soak_defaults = from_env(SoakSettings, "SOAK")
    commands["soak"].add_argument("--duration", type=float, default=soak_defaults.duration_s,
                                  help="seconds per stack (SOAK_DURATION_S)")
    commands["soak"].add_argument("--rate", type=float, default=soak_defaults.rate,
                                  help="requests per second (SOAK_RATE)")
    overload_defaults = from_env(OverloadSettings, "OVERLOAD")
    commands["overload"].add_argument(
        "--phase", type=float, default=overload_defaults.phase_s,
        help="seconds per overload level (OVERLOAD_PHASE_S)")
    commands["overload"].add_argument(
        "--strict", action="store_true", help="exit 1 when a stack misses one of the goals")
    commands["overload"].add_argument(
        "--measure-capacity", action="store_true",
        help="measure a closed-loop peak even when --into-run has a capacity.jsonl")
    for command in commands.values():
        command.add_argument("--stacks", default=",".join(stack_names()))
        command.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS)
        command.add_argument("--into-run", type=Path, default=None,
                             help="also copy the JSON into this load-test run folder")
    audit = sub.add_parser("audit", help="pip-audit of requirements.lock, with triage")
    audit.add_argument("--requirements", type=Path, default=Path("requirements.lock"))
    args = parser.parse_args()
    if args.command == "audit":
        from tools.audit import main as audit_main

        return audit_main(args.requirements)
    try:
        stacks = parse_stacks(args.stacks)
    except ValueError as err:
        parser.error(str(err))
    paths = ensure_artifacts(args.artifacts)
    runs: dict[str, Callable[[], int]] = {
        "matrix": lambda: run_matrix(paths, stacks, args.into_run),
        "faults": lambda: run_faults(paths, stacks, args.scenarios.split(","), args.into_run),
        "soak": lambda: run_soak(
            paths, stacks,
            dataclasses.replace(soak_defaults, duration_s=args.duration, rate=args.rate,
                                # Warm-up is a fifth of a short run, 60 s of a long one.
                                warmup_s=min(soak_defaults.warmup_s, args.duration / 5)),
            args.into_run),
        "overload": lambda: run_overload(
            paths, stacks, dataclasses.replace(overload_defaults, phase_s=args.phase),
            args.into_run, args.strict, args.measure_capacity),
        "floods": lambda: run_floods(paths, stacks, from_env(FloodSettings, "FLOOD"),
                                     args.into_run),
    }  # fmt: skip
    return runs[args.command]()


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
