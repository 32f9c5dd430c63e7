"""Cold start: process start to ready, and the first requests after ready, per stack.

  python -m loadtests.coldstart --repeats 5                # `make coldstart`
  python -m loadtests.coldstart --into-run results/<run-id>  # also into a bench run

Each repeat starts the stack from nothing on free loopback ports (pinned to the server
cores), measures the wall time from the spawn to its own readiness (the model answering,
not the port open), then times the first request (a new connection, as a client after a
rollout sends it), the second (the same connection) and a tenth, and stops the stack.
Where the plugin can turn its warm-up off (`warmup_off_env`), every repeat runs twice,
with and without it, so the report shows what the warm-up buys the first request and what
it costs the start; where it cannot, the plugin says why.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import psutil

from digitnet.artifacts import DEFAULT_ARTIFACTS, ArtifactPaths
from harness.artifacts import ensure_artifacts
from harness.lifecycle import START_ERRORS, skipped_reason, start_failure, start_stack
from harness.paths import timestamped_dir
from harness.payload import PayloadSet, check_json_reply
from loadtests.runner import split_cores
from services.process import pinned, usable_cores
from services.registry import load_stack, parse_stacks, stack_names
from services.stack import ServingStack

COLDSTART_FILE = "coldstart.jsonl"
DEFAULT_REPEATS = 5
# Requests timed after ready: the first, the second, and this one, by then warm.
WARM_REQUEST = 10
# How often a start is asked whether it is ready: its time to ready is only as fine as
# this. The stacks' own intervals (0.1-0.25 s, ServingStack.ready_poll_s) would round every
# start up to the next ask and compare stacks at different resolutions (Ray Serve read
# 10.53 s in 9 of 10 starts, one 0.25 s ask early in the tenth). Each ask is a request
# the starting server answers on its own cores: at this interval, a few % of one core.
READY_POLL_S = 0.02


def tree_rss_mb(pid: int) -> float | None:
    """Resident memory of a process and all its descendants, in MiB (None if gone)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def warmup_modes(stack: ServingStack) -> list[bool]:
    """True (as configured) always; False too where the plugin can turn warm-up off."""
    return [True, False] if stack.warmup_off_env is not None else [True]


def measure_once(stack: ServingStack, paths: ArtifactPaths, run_dir: Path, cores: list[int],
                 warmup: bool, repeat: int) -> dict:
    """One start from nothing: seconds to ready, the first requests' latency, memory."""
    env = {} if warmup else dict(stack.warmup_off_env or {})
    batch = PayloadSet(paths.spec, 1, paths.reference_predictions, limit=1).batches[0]
    with ExitStack() as exits:
        spawned = time.perf_counter()
        running = start_stack(stack, paths, run_dir, exits, cores=cores, env=env,
                              ready_poll_s=READY_POLL_S)  # fmt: skip
        ready_s = time.perf_counter() - spawned
        rss_mb = tree_rss_mb(running.server.pid)
        client = running.rest
        if client is None:
            raise RuntimeError(f"{stack.name} offers no REST client to time requests with")
        latencies_ms, problems = [], []
        for _ in range(WARM_REQUEST):
            sent = time.perf_counter()
            response = client.post_raw(batch.images)
            latencies_ms.append((time.perf_counter() - sent) * 1000.0)
            problem = (f"HTTP {response.status_code}" if response.status_code != 200
                       else check_json_reply(batch, response.json(), paths.spec.num_classes))
            if problem:
                problems.append(problem)
        stopping = time.perf_counter()
    stop_s = time.perf_counter() - stopping
    return {
        "stack": stack.name, "repeat": repeat, "warmup": warmup,
        "ready_s": ready_s, "ready_poll_s": READY_POLL_S, "stop_s": stop_s,
        "rss_mb_at_ready": rss_mb,
        "first_ms": latencies_ms[0], "second_ms": latencies_ms[1],
        "warm_ms": latencies_ms[-1], "problems": problems, "start_error": None,
    }  # fmt: skip


def failed_start(stack: ServingStack, warmup: bool, repeat: int, error: Exception) -> dict:
    """The record of a start that never got ready: no figures, and why."""
    return {"stack": stack.name, "repeat": repeat, "warmup": warmup, "ready_s": None,
            "stop_s": None, "rss_mb_at_ready": None, "first_ms": None, "second_ms": None,
            "warm_ms": None, "problems": [], "start_error": start_failure(error)}  # fmt: skip


def measure(stacks: list[str], paths: ArtifactPaths, out: Path, cores: list[int], repeats: int,
            client_cores: list[int] | None = None) -> tuple[list[dict], dict[str, str]]:
    """Every stack that can run here, `repeats` times per warm-up mode, interleaved so a
    drift of the machine spreads over all of them; appended to out/coldstart.jsonl. The
    servers start on `cores`; this process, which waits for them and times their first
    requests, runs on `client_cores` meanwhile (the generator's, as in a bench run)."""
    plugins, skipped = [], {}
    for name in stacks:
        reason = skipped_reason(name)
        if reason is None:
            plugins.append(load_stack(name))
        else:
            skipped[name] = reason
    records = []
    with tempfile.TemporaryDirectory(prefix="coldstart-") as tmp, pinned(client_cores):
        for repeat in range(repeats):
            for stack in plugins:
                for warmup in warmup_modes(stack):
                    run_dir = Path(tmp) / f"{stack.name}-{repeat}-{int(warmup)}"
                    try:
                        record = measure_once(stack, paths, run_dir, cores, warmup, repeat)
                    except START_ERRORS as err:
                        # A start that fails is a finding of its own (Ray Serve's node
                        # start timed out once in 18 starts here): kept, and the phase
                        # goes on with the other starts, never lost with the whole run.
                        record = failed_start(stack, warmup, repeat, err)
                    records.append(record)
                    with open(out / COLDSTART_FILE, "a") as handle:
                        handle.write(json.dumps(record) + "\n")
                    print(f"coldstart: {stack.name} warm-up {'on ' if warmup else 'off'} "
                          f"#{repeat}: {_progress(record)}", flush=True)  # fmt: skip
    return records, skipped


def _progress(record: dict) -> str:
    if record.get("start_error"):
        return f"did not start: {record['start_error']}"
    return (f"ready {record['ready_s']:.2f} s, first request {record['first_ms']:.1f} ms, "
            f"second {record['second_ms']:.1f} ms")


def summarize(records: list[dict]) -> list[dict]:
    """Per stack and warm-up mode: median and range over the repeats that started, and
    how many did not (`failed_starts`, with the first one's reason)."""
    groups: dict[tuple[str, bool], list[dict]] = {}
    for r in records:
        groups.setdefault((r["stack"], r["warmup"]), []).append(r)
    rows = []
    for (stack, warmup), group in groups.items():
        failed = [r["start_error"] for r in group if r.get("start_error")]
        row = {"stack": stack, "warmup": warmup, "repeats": len(group),
               "problems": sum(len(r["problems"]) for r in group),
               "failed_starts": len(failed),
               "start_error": failed[0] if failed else None}  # fmt: skip
        for field in ("ready_s", "first_ms", "second_ms", "warm_ms", "rss_mb_at_ready"):
            values = [r[field] for r in group if r.get(field) is not None]
            if values:
                row[field] = {"median": statistics.median(values), "min": min(values),
                              "max": max(values)}  # fmt: skip
        rows.append(row)
    return rows


def _spread(stat: dict | None, digits: int) -> str:
    if not stat:
        return "–"
    return f"{stat['median']:.{digits}f} ({stat['min']:.{digits}f}–{stat['max']:.{digits}f})"


def _resolution(records: list[dict]) -> str:
    """How fine the time to ready is: the interval readiness was asked at."""
    polls = {r.get("ready_poll_s") for r in records if r.get("ready_s") is not None}
    if not polls:
        return ""
    if None in polls:
        # Records from before the interval was recorded: each stack's own then.
        return ("Readiness was asked at each stack's own interval (0.1–0.25 s), so a time "
                "to ready may read up to that much late, and stacks compare at different "
                "resolutions.")
    finest, coarsest = min(polls), max(polls)
    every = (f"{finest * 1000:.0f} ms" if finest == coarsest
             else f"{finest * 1000:.0f}–{coarsest * 1000:.0f} ms")
    return (f"Readiness was asked every {every} (each ask a request the starting server "
            f"answers), so a time to ready reads up to that much late.")


def markdown(records: list[dict], skipped: dict[str, str] | None = None) -> list[str]:
    """The report's cold-start section."""
    rows = summarize(records)
    md = [
        "",
        "## Cold start",
        "",
        "Each stack started from nothing on the server cores, repeated (n below): seconds "
        "from the spawn to its own readiness (the model answering), then the first request "
        "after ready (a new connection), the second and the tenth, in ms; median (min–max). "
        f"Warm-up *off* is the same stack with its warm-up disabled (where it can be). "
        f"{_resolution(records)}",
        "",
        "| stack | warm-up | n | ready s | first request ms | second ms | 10th ms "
        "| RSS at ready MiB | wrong answers |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in sorted(rows, key=lambda r: (r["stack"], not r["warmup"])):
        md.append(
            f"| {row['stack']} | {'on' if row['warmup'] else 'off'} | {row['repeats']} "
            f"| {_spread(row.get('ready_s'), 2)} | {_spread(row.get('first_ms'), 1)} "
            f"| {_spread(row.get('second_ms'), 1)} | {_spread(row.get('warm_ms'), 1)} "
            f"| {_spread(row.get('rss_mb_at_ready'), 0)} | {row['problems']} |"
        )
    for row in sorted(rows, key=lambda r: (r["stack"], not r["warmup"])):
        if row["failed_starts"]:
            md.append(f"- {row['stack']}, warm-up {'on' if row['warmup'] else 'off'}: "
                      f"**{row['failed_starts']} of {row['repeats']} starts never got "
                      f"ready** (the figures above are the others'): {row['start_error']}")
    fixed = sorted({r["stack"] for r in records} - {r["stack"] for r in records
                                                   if not r["warmup"]})  # fmt: skip
    for name in fixed:
        md.append(f"- {name}: warm-up always on: {load_stack(name).warmup_fixed_why}.")
    for name, reason in (skipped or {}).items():
        md.append(f"- {name}: **skipped**: {reason}")
    return md


def read_records(run_dir: Path) -> list[dict]:
    path = run_dir / COLDSTART_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=parse_stacks, default=stack_names())
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    parser.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS)
    parser.add_argument("--into-run", type=Path, default=None,
                        help="a bench run folder: coldstart.jsonl goes there, for its report")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    paths = ensure_artifacts(args.artifacts)
    out = args.into_run or timestamped_dir("coldstart")
    out.mkdir(parents=True, exist_ok=True)
    (out / COLDSTART_FILE).unlink(missing_ok=True)
    # The same split as a bench run: the servers' cores, not the generator's.
    server_cores, generator_cores = split_cores(usable_cores())
    records, skipped = measure(args.stacks, paths, out, server_cores, args.repeats,
                               generator_cores)  # fmt: skip
    md = markdown(records, skipped)
    (out / "COLDSTART.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"coldstart: wrote {out / COLDSTART_FILE}")
    return 1 if any(r["problems"] or r.get("start_error") for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
