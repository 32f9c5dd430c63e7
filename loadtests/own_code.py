"""Our own code in process: each piece of a batch-1 predict alone, and the same request in
the app's flow, so that the floor table's "our code" can be read.

The framework floor phase (loadtests.framework_floor) finds our code's share of the served
p50 as the issue defines it: the predict path's p50 less the no-op twin's, less the
model's in-process time. Served, that share is several times what our code's pieces cost
one by one. This phase measures where the difference arises, with no HTTP server and no
network: each stack's own code in one process pinned to the servers' cores, called as
loadtests.in_process calls it (a Flask stack's app as a WSGI callable; TorchServe's .mar in
its own Python worker code, without the frontend), the twin beside it.

    alone         each piece in a hot loop: decode (the codec, validation included), the
                  admission gate's enter and leave (Flask), convert and model (split as
                  the stack's own stages split them), encode
    back to back  the predict route's requests, then the twin's, in alternating blocks
                  (as the floor phase's wrk runs alternate): the app's whole path, with
                  nothing else run between requests
    idle gap      the same after an idle gap of IDLE_GAP_S before each request, as a
                  served request arrives after the core waited for wrk's next one

    our code, in the flow = predict - twin - the model alone
                            (the issue's arithmetic, without the HTTP server)

The stages each request reports (STAGE_HEADER) show how every piece grows from alone to
the flow: the same code, run once between a web stack's code and a forward pass instead
of thousands of times in a row.

    python -m loadtests.own_code --stacks flask_torch,torchserve --cores 0
    python -m loadtests.own_code --into-run results/<run-id>     # then make report RUN=...
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from digitnet.artifacts import ArtifactPaths
from digitnet.codec import APP_STAGE, STAGES, parse_server_timing
from digitnet.spec import LATENCY_PRESET
from loadtests.in_process import MODEL, PROBES, Route
from services.stack import ServingStack

REPO_ROOT = Path(__file__).resolve().parents[1]
OWN_CODE_FILE = "own_code.jsonl"
# Served at one connection, the server's core idles while wrk and the loopback turn a
# reply into the next request: tens of us (the floor table's client and network share).
# A sleep that short lasts ~0.1-0.2 ms here (the timer's slack and the wake-up), so the gap
# asked is short and the one measured is recorded: what matters is that the core idles.
IDLE_GAP_S = 0.0001
ITERATIONS = 2000
# A probe loads a model (TF's in seconds) and times 4 x ITERATIONS requests and the pieces:
# about 20 s here. Past this it is stuck, and a bench must go on without it.
PROBE_TIMEOUT_S = 600.0
FLOW_BLOCKS = 4
# The pieces of our code, in the order a request runs them (the gate is the Flask app's
# alone); the model is apart.
OUR_PIECES = ("decode", "gate", "convert", "encode")
BACK_TO_BACK = "back to back"
IDLE_GAP = "after an idle gap"
# The goal the issue sets for our own share at batch 1 on the default model.
GOAL_US = 60.0


def flow(routes: tuple[Route, Route], iterations: int, gap_s: float) -> dict:
    """`iterations` predict requests and as many of the twin's, each after `gap_s` idle (0:
    back to back), in FLOW_BLOCKS alternating blocks as the floor phase's wrk runs
    alternate (a route's requests follow each other, and a drift hits both alike):
    medians in us, the predict replies' stages, and the gap as it lasted."""
    totals: tuple[list[float], list[float]] = ([], [])
    stages: dict[str, list[float]] = {}
    gaps: list[float] = []
    for _block in range(FLOW_BLOCKS):
        for index, route in enumerate(routes):
            for _ in range(max(1, iterations // FLOW_BLOCKS)):
                if gap_s:
                    slept = time.perf_counter()
                    time.sleep(gap_s)
                    gaps.append((time.perf_counter() - slept) * 1e6)
                elapsed, timing = route()
                totals[index].append(elapsed * 1e6)
                if index == 0:
                    for name, ms in parse_server_timing(timing).items():
                        stages.setdefault(name, []).append(ms * 1000.0)
    return {"predict_us": statistics.median(totals[0]), "noop_us": statistics.median(totals[1]),
            "stages_us": {name: statistics.median(v) for name, v in stages.items()},
            "gap_us": statistics.median(gaps) if gaps else 0.0}  # fmt: skip


def probe(stack_name: str, artifacts: Path, iterations: int, gap_s: float) -> dict:
    """In this process (given the environment the stack's server would give): its own
    code built and checked (loadtests.in_process), then the pieces alone and the flow
    both ways."""
    from digitnet.spec import ModelSpec
    from services.registry import load_stack

    stack = load_stack(stack_name)
    got = PROBES[stack.in_process](stack, ArtifactPaths(artifacts, ModelSpec.from_env()))
    return {"alone_us": got.alone(iterations),
            "flow": {BACK_TO_BACK: flow((got.predict, got.twin), iterations, 0.0),
                     IDLE_GAP: flow((got.predict, got.twin), iterations, gap_s)},
            "idle_gap_asked_ms": gap_s * 1000.0, "iterations": iterations}  # fmt: skip


def in_process_stacks(stacks: Sequence[ServingStack]) -> list[ServingStack]:
    """The stacks whose own code this phase can call in process (a probe for their
    `in_process`) beside their no-op twin."""
    return [s for s in stacks if s.in_process in PROBES and s.noop_env is not None]


def measure(stack: ServingStack, paths: ArtifactPaths, cores: Sequence[int],
            made: str | None = None, iterations: int = ITERATIONS,
            gap_s: float = IDLE_GAP_S) -> dict:  # fmt: skip
    """One stack's record, measured in a child process pinned to `cores` with the
    environment its servers get (one worker, one torch thread, the twin on)."""
    base = {"stack": stack.name, "device": "cpu", "made": made}
    try:
        env = stack.app_env(paths, cores, dict(stack.noop_env))
    except FileNotFoundError as err:
        return {**base, "skipped": str(err)}
    argv = [sys.executable, "-m", "loadtests.own_code", "--probe", stack.name,
            "--artifacts", str(paths.root), "--iterations", str(iterations),
            "--idle-gap-ms", str(gap_s * 1000.0), "--cores", ",".join(map(str, cores))]
    try:
        done = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True,
                              cwd=REPO_ROOT, check=False, timeout=PROBE_TIMEOUT_S)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {**base, "skipped": f"probe did not finish within {PROBE_TIMEOUT_S:g} s"}
    if done.returncode != 0:
        # The exception's own line, the last of the traceback: a report line, not a dump.
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        return {**base, "skipped": f"probe failed: {lines[-1][:300]}"}
    return {**base, "skipped": None, **json.loads(done.stdout.strip().splitlines()[-1])}


def measure_all(stacks: Sequence[ServingStack], paths: ArtifactPaths, cores: Sequence[int],
                made: str | None = None, iterations: int = ITERATIONS) -> list[dict]:  # fmt: skip
    """Every stack this phase can call in process (in_process_stacks), one at a time."""
    records = []
    for stack in in_process_stacks(stacks):
        records.append(measure(stack, paths, cores, made, iterations))
        print(f"own code: {stack.name} in process "
              + ("done" if records[-1]["skipped"] is None else
                 f"not measured: {records[-1]['skipped']}"), flush=True)  # fmt: skip
    return records


# --- the arithmetic and the report ----------------------------------------------------


def ours_alone_us(record: Mapping[str, Any]) -> float:
    """Our pieces' hot-loop p50s summed (the model apart)."""
    return sum(us for piece, us in record["alone_us"].items() if piece != MODEL)


def ours_in_flow_us(record: Mapping[str, Any], mode: str) -> float:
    """The issue's arithmetic in process: predict - twin - the model alone."""
    got = record["flow"][mode]
    return got["predict_us"] - got["noop_us"] - record["alone_us"][MODEL]


def _served_ours_us(record: Mapping[str, Any], floors: Sequence[Mapping[str, Any]]
                    ) -> float | None:  # fmt: skip
    """The floor table's our code (us) for the record's stack: its row under the latency
    batching preset where it has one (batching off, as the probe loads the model: a
    served batch wait is in neither the probe nor, at one connection, our code), else
    its plain row."""
    rows = {floor.get("preset"): floor for floor in floors
            if floor.get("stack") == record["stack"] and floor.get("our_code_ms") is not None}
    row = rows.get(LATENCY_PRESET, rows.get(None))
    return None if row is None else row["our_code_ms"] * 1000.0


def _us(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def _us1(value: float | None) -> str:
    # One decimal where a figure is held against the goal: "60, not met" would puzzle.
    return "–" if value is None else f"{value:.1f}"


def _verdict(us: float | None) -> str:
    if us is None:
        return "not measured"
    return "met" if us <= GOAL_US else "not met"


def _stage_growth(record: Mapping[str, Any]) -> str:
    """Each stage alone -> back to back -> after the idle gap, us (the gate alone stands
    for the queue stage: at one request at a time, its wait is the gate's own cost)."""
    parts = []
    for stage in (*STAGES, APP_STAGE):
        alone = record["alone_us"].get("gate" if stage == "queue" else stage)
        seen = [record["flow"][mode]["stages_us"].get(stage) for mode in (BACK_TO_BACK, IDLE_GAP)]
        if all(v is None for v in seen):
            continue
        parts.append(f"{stage} " + " → ".join(_us(v) for v in (alone, *seen)))
    return ", ".join(parts)


def markdown(records: Sequence[Mapping[str, Any]], floors: Sequence[Mapping[str, Any]] = ()
             ) -> list[str]:  # fmt: skip
    """The report's section: per stack, our code alone, in the app's flow and served."""
    if not records:
        return []
    gap = next((r["flow"][IDLE_GAP]["gap_us"] / 1000.0 for r in records if not r.get("skipped")),
               IDLE_GAP_S * 1e3)  # fmt: skip
    lines = [
        "",
        "## Our own code in process: alone, in the app's flow, served",
        "",
        "Why our code's served share is several times what its pieces cost: each stack's "
        "own code in one process pinned to the servers' cores, no HTTP server and no "
        "network (a Flask stack's app called as a WSGI callable; TorchServe's .mar in its "
        "own Python worker code, each request a frame as its frontend sends it), its "
        "no-op twin beside it. *Alone*: each piece of the predict path in a hot loop "
        "(decode with its validation, Flask's admission gate, convert, encode; the model "
        "apart). *Back to back*: the predict path's requests, then the twin's, in "
        "alternating blocks as the floor table's wrk runs; our code = predict − twin − the "
        "model alone, the issue's arithmetic without the HTTP server. *After an idle gap*: "
        f"the same with the core idle before each request ({gap:.2f} ms, the shortest sleep "
        "gives here), as a served request arrives after the core waited for the client. "
        "*Served*: the floor table's our code (wrk), under the `latency` batching preset "
        "where the stack has one (batching off, as the probe loads the model). "
        f"µs, medians; goal for our own share ≤ {GOAL_US:g} µs.",
        "",
        "| stack | our pieces alone | model alone | back to back: predict / twin / our code "
        "| after an idle gap: predict / twin / our code | served: our code |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    notes = []
    for r in records:
        if r.get("skipped"):
            notes.append(f"- {r['stack']}: **not measured**: {r['skipped']}")
            continue
        pieces = ", ".join(f"{p} {r['alone_us'][p]:.1f}" for p in OUR_PIECES
                           if p in r["alone_us"])  # fmt: skip
        cells = [f"{_us(ours_alone_us(r))} ({pieces})", _us(r["alone_us"][MODEL])]
        for mode in (BACK_TO_BACK, IDLE_GAP):
            got = r["flow"][mode]
            cells.append(f"{_us(got['predict_us'])} / {_us(got['noop_us'])} / "
                         f"**{_us(ours_in_flow_us(r, mode))}**")  # fmt: skip
        cells.append(_us(_served_ours_us(r, floors)))
        lines.append(f"| {r['stack']} | " + " | ".join(cells) + " |")
        notes.append(f"- {r['stack']}, each stage alone → back to back → after the idle gap "
                     f"(µs): {_stage_growth(r)}.")  # fmt: skip
        notes.append(f"- {r['stack']}, our own share against the ≤ {GOAL_US:g} µs goal: "
                     + "; ".join(f"{where} {_us1(us)} µs, {_verdict(us)}" for where, us in (
                         ("alone", ours_alone_us(r)),
                         ("back to back", ours_in_flow_us(r, BACK_TO_BACK)),
                         ("after an idle gap", ours_in_flow_us(r, IDLE_GAP)),
                         ("served", _served_ours_us(r, floors)))) + ".")  # fmt: skip
    made = next((r["made"] for r in records if r.get("made")), None)
    return [*lines, "", *notes, *(["", f"Measured by {made}"] if made else []), ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", metavar="STACK", default=None,
                        help="in this process: measure STACK's own code, print JSON")
    parser.add_argument("--stacks", default=None)
    parser.add_argument("--artifacts", type=Path, default=None)
    parser.add_argument("--iterations", type=int, default=ITERATIONS)
    parser.add_argument("--idle-gap-ms", type=float, default=IDLE_GAP_S * 1000.0)
    parser.add_argument("--cores", default="", help="comma-separated CPU ids to pin to")
    parser.add_argument("--into-run", type=Path, default=None,
                        help="replace RUN's own_code.jsonl (its floors give the served column)")
    args = parser.parse_args(argv)
    cores = [int(c) for c in args.cores.split(",") if c]
    if args.probe:
        if cores:
            os.sched_setaffinity(0, set(cores))
        got = probe(args.probe, args.artifacts, args.iterations, args.idle_gap_ms / 1000.0)
        print(json.dumps(got))
        return 0
    from digitnet.artifacts import DEFAULT_ARTIFACTS
    from harness.artifacts import ensure_artifacts
    from loadtests.environment import provenance
    from loadtests.framework_floor import FLOOR_FILE
    from loadtests.report import read_jsonl, write_jsonl
    from loadtests.runner import split_cores
    from services.process import usable_cores
    from services.registry import load_stack, parse_stacks, stack_names

    names = parse_stacks(args.stacks) if args.stacks else stack_names()
    paths = ensure_artifacts(args.artifacts or DEFAULT_ARTIFACTS)
    server_cores = cores or split_cores(usable_cores())[0]
    records = measure_all([load_stack(n) for n in names], paths, server_cores,
                          f"`python -m loadtests.own_code`: {provenance()}")  # fmt: skip
    floors: list[dict] = []
    if args.into_run:
        write_jsonl(args.into_run / OWN_CODE_FILE, records)
        floors = read_jsonl(args.into_run / FLOOR_FILE)
    print("\n".join(markdown(records, floors)))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
