"""What the body codec changes once served: each stack that speaks more than JSON
(ServingStack.codecs) measured with every codec it accepts, the same server and wrk levels
(`make codecs`, after the in-process loadtests.codecs; issue 11 part 7).

Per stack and codec: p50/p99 at one connection and the capacity under the objective
(loadtests.closed_wrk), one server start per stack so the codecs meet the same process.

    python -m loadtests.codecs_served --artifacts artifacts --out results/<run-id>
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path

from digitnet.artifacts import ArtifactPaths
from digitnet.spec import ModelSpec
from digitnet.wire import CODECS_BY_NAME
from harness.lifecycle import START_ERRORS, did_not_start, skipped_reason, start_stack
from loadtests import splits
from loadtests.closed_wrk import (
    SLO_P99_MS,
    capacity_cell,
    capacity_under_objective,
    wrk_levels,
)
from loadtests.runner import split_cores
from loadtests.splits import SplitFiles
from services.process import usable_cores
from services.registry import load_stack, stack_names
from services.stack import CPU

SERVED_FILE = "codecs_served.jsonl"
MARKDOWN_FILE = "CODECS_SERVED.md"
CONNECTIONS = (1, 4, 16)


def measure_stack(name: str, paths: ArtifactPaths, cores: tuple[list[int], list[int]],
                  runs: int, duration_s: int, run_dir: Path) -> list[dict]:  # fmt: skip
    """Every codec the stack accepts, against one running server."""
    stack = load_stack(name)
    records = []
    with ExitStack() as exits:
        running = start_stack(stack, paths, run_dir / name, exits, cores=cores[0],
                              env=stack.device_env(CPU))  # fmt: skip
        for codec_name in stack.codecs:
            levels = wrk_levels(running, CONNECTIONS, runs, duration_s, cores[1], run_dir,
                                CODECS_BY_NAME[codec_name])  # fmt: skip
            capacity = capacity_under_objective(levels, SLO_P99_MS)
            records.append({
                "stack": name, "codec": codec_name,
                "p50_1_ms": levels[0]["p50_ms"], "p99_1_ms": levels[0]["p99_ms"],
                "capacity_rps": None if capacity is None else capacity["rps"],
                "capacity_connections": None if capacity is None else capacity["connections"],
                "levels": levels,
            })  # fmt: skip
    return records


def markdown(records: Sequence[Mapping], skipped: Mapping[str, str]) -> list[str]:
    md = ["# Codecs served: JSON against the binary body on the same server", "",
          "wrk at 1, 4 and 16 connections, batch 1 (one real digit). Capacity: the most "
          f"req/s of a level whose p99 ≤ {SLO_P99_MS:g} ms (closed loop).", "",
          "| stack | codec | p50 at 1 conn. ms | p99 at 1 conn. ms | capacity req/s "
          "(connections) | req/s at 1 / 4 / 16 conn. |", "|" + " --- |" * 6]  # fmt: skip
    for r in records:
        cap = capacity_cell(r)
        rates = " / ".join(f"{lv['rps']:.0f}" for lv in r["levels"])
        md.append(f"| {r['stack']} | {r['codec']} | {r['p50_1_ms']:.3f} | {r['p99_1_ms']:.3f} "
                  f"| {cap} | {rates} |")  # fmt: skip
    md += [f"- {name}: **not run**: {why}" for name, why in skipped.items()]
    return md


def run(paths: ArtifactPaths, out: Path, stacks: Sequence[str], runs: int,
        duration_s: int) -> list[dict]:  # fmt: skip
    files = SplitFiles(out, SERVED_FILE, MARKDOWN_FILE)
    cores = split_cores(usable_cores())
    records: list[dict] = []
    skipped: dict[str, str] = {}
    started = time.monotonic()
    for name in stacks:
        stack = load_stack(name)
        reason = skipped_reason(stack) or (
            None if len(stack.codecs) > 1 else f"accepts {', '.join(stack.codecs)} only")
        if reason is not None:
            skipped[name] = reason
            continue
        try:
            measured = measure_stack(name, paths, cores, runs, duration_s, out / "servers")
        except START_ERRORS as err:
            skipped[name] = did_not_start(err)
            continue
        for record in measured:
            records.append(record)
            files.append(record)
            print(f"codecs: {name} {record['codec']}: p50 {record['p50_1_ms']:.3f} ms at one "
                  f"connection [{time.monotonic() - started:.0f} s]", flush=True)  # fmt: skip
    files.write_markdown(markdown(records, skipped))
    return records


def main() -> None:
    parser = splits.arguments(__doc__.splitlines()[0], "codecs")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    args, stacks = splits.parse(parser, "codecs", stack_names())
    run(ArtifactPaths(args.artifacts, ModelSpec.from_env()), args.out, stacks, args.runs,
        args.duration)
    print(f"codecs: wrote {args.out / MARKDOWN_FILE}", flush=True)


if __name__ == "__main__":
    main()
