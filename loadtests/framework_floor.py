"""Each framework's floor and our own overhead, measured in the same run.

For every running stack with a no-op twin (ServingStack.noop_path: the same server,
config, port and headers answering a fixed reply without decoding or running the model),
wrk at one connection on the predict path and on the no-op path, interleaved (predict,
no-op, predict, no-op, ...) so a drift of the machine hits both alike. Its served p50 is
then split, with the in-process batch-1 p50 of its floor_path from the run's
baselines.json:

    framework floor = no-op p50
    model           = in-process p50 (CPU rows only: the baselines run on the CPU)
    our code        = predict p50 - framework floor - model   (clamped at 0, flagged)

One connection, because the split is about one request's latency, not about queueing.
Written to framework_floor.jsonl (floors.jsonl is the load generator's floor); the sweep
runs it right after the levels of each device (loadtests/sweep.py), the report renders it
(`markdown`).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from digitnet.codec import JSON_CONTENT_TYPE
from harness.lifecycle import RunningStack
from harness.payload import PayloadSet
from loadtests import wrk
from loadtests.runner import targets_of
from services.stack import CPU, REST

FLOOR_FILE = "framework_floor.jsonl"
CONNECTIONS = 1
# One discarded second per path before the timed runs: the twin has not answered yet
# (TorchServe's twin workers, Ray's twin batch queue) while the predict path is warm.
WARMUP_S = 1
PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class FloorPlan:
    """How long the phase runs per stack (loadtests.profiles: framework_floor_*)."""

    runs: int
    duration_s: int
    cores: Sequence[int] | None = None


def split_latency(predict_p50_ms: float, noop_p50_ms: float,
                  model_ms: float | None) -> dict:  # fmt: skip
    """The served p50 as framework floor + our code + model (ms).

    Returns:
        framework_floor_ms, model_ms, our_code_ms (never below 0, None without a model
        figure), our_code_raw_ms (the unclamped difference) and our_code_negative: True
        when the twin and the model alone take longer than the prediction, i.e. the
        figures disagree by more than our code costs (noise, or a floor measured apart).
    """
    raw = None if model_ms is None else predict_p50_ms - noop_p50_ms - model_ms
    return {
        "framework_floor_ms": noop_p50_ms,
        "model_ms": model_ms,
        "our_code_ms": None if raw is None else max(0.0, raw),
        "our_code_raw_ms": raw,
        "our_code_negative": raw is not None and raw < 0,
    }


def summarize_runs(runs: Sequence[dict]) -> dict:
    """Median p50 and p99 over wrk runs, and their spread: (max - min) / median of the
    runs' p50, the figure a reader weighs a difference of two p50s against."""
    p50s = [r["p50_ms"] for r in runs]
    p50 = statistics.median(p50s)
    return {
        "p50_ms": p50,
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "p50_ms_min": min(p50s),
        "p50_ms_max": max(p50s),
        "spread": (max(p50s) - min(p50s)) / p50 if p50 > 0 else None,
        "rps": statistics.median(r["goodput_rps"] for r in runs),
        "errors": sum(r["status_errors"] + r["socket_errors"] for r in runs),
        "runs": len(runs),
    }


def model_ms(baselines: Sequence[dict], path: str, device: str) -> tuple[float | None, str]:
    """The in-process batch-1 p50 (ms) of `path` for a server on `device`, and why not
    when there is none."""
    if device != CPU:
        return None, f"in-process baselines run on the CPU, not {device}"
    for row in baselines:
        if row["path"] == path and row["batch_size"] == 1:
            return row["p50_us"] / 1000.0, ""
    return None, f"no batch-1 {path!r} row in baselines.json"


def record(stack: str, device: str, paths: tuple[str, str], predict: Sequence[dict],
           noop: Sequence[dict], model: tuple[float | None, str], floor_path: str,
           plan: FloorPlan) -> dict:  # fmt: skip
    """One stack's line of framework_floor.jsonl, from its wrk runs (WrkResult.to_json)."""
    got, noop_got = summarize_runs(predict), summarize_runs(noop)
    return {
        "stack": stack, "protocol": REST, "device": device, "connections": CONNECTIONS,
        "duration_s": plan.duration_s, "predict_path": paths[0], "noop_path": paths[1],
        "predict": got, "noop": noop_got, "model_path": floor_path,
        "model_reason": model[1],
        **split_latency(got["p50_ms"], noop_got["p50_ms"], model[0]),
        "predict_runs": list(predict), "noop_runs": list(noop), "skipped": None,
    }  # fmt: skip


def skipped(stack: str, device: str, reason: str) -> dict:
    return {"stack": stack, "protocol": REST, "device": device, "skipped": reason}


def probe(url: str, body: bytes, headers: dict[str, str]) -> str | None:
    """Why the path cannot be measured (not a 200), or None."""
    try:
        response = requests.post(url, data=body, headers=headers, timeout=PROBE_TIMEOUT_S)
    except requests.RequestException as err:
        return f"{url}: {err}"
    if response.status_code != 200:
        return f"{url}: HTTP {response.status_code}: {response.text[:200]}"
    return None


def interleaved(urls: tuple[str, str], body: bytes, headers: dict[str, str], plan: FloorPlan,
                script_dir: Path) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """wrk runs alternating between the two URLs, after a discarded warm-up on each."""

    def one(url: str, seconds: int) -> dict:
        return wrk.run_wrk(url, body, headers, CONNECTIONS, seconds, cores=plan.cores,
                           script_dir=script_dir).to_json()  # fmt: skip

    for url in reversed(urls):
        one(url, WARMUP_S)
    runs: tuple[list[dict], list[dict]] = ([], [])
    for _ in range(plan.runs):
        for index, url in enumerate(urls):
            runs[index].append(one(url, plan.duration_s))
    return runs


def measure_stack(running: RunningStack, device: str, baselines: Sequence[dict],
                  plan: FloorPlan, script_dir: Path) -> dict:  # fmt: skip
    """The phase for one running stack: its record, or why it was skipped."""
    stack = running.stack
    noop_path = stack.noop_path(running.server)
    if noop_path is None:
        why = stack.noop_why if stack.noop_env is None else (
            "started without its no-op twin (noop_env)")
        return skipped(stack.name, device, why)
    ok, reason = wrk.wrk_available()
    if not ok:
        return skipped(stack.name, device, reason)
    target = next((t for t in targets_of(running, device) if t.protocol == REST), None)
    if target is None:
        return skipped(stack.name, device, "no REST client: wrk speaks HTTP only")
    body = PayloadSet(running.paths.spec, 1, running.paths.reference_predictions,
                      limit=1).batches[0].body  # fmt: skip
    headers = {"Content-Type": JSON_CONTENT_TYPE, **target.headers}
    urls = (target.url, target.host.rstrip("/") + noop_path)
    problems = [p for p in (probe(url, body, headers) for url in urls) if p]
    if problems:
        return skipped(stack.name, device, "; ".join(problems))
    predict, noop = interleaved(urls, body, headers, plan, script_dir)
    return record(stack.name, device, (target.path, noop_path), predict, noop,
                  model_ms(baselines, stack.floor_path, device), stack.floor_path, plan)


# --- the report's section -----------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _row(r: dict) -> str:
    p, n = r["predict"], r["noop"]
    ours = _ms(r["our_code_ms"])
    if r["our_code_negative"]:
        ours += f" (raw {r['our_code_raw_ms']:+.3f}: floor + model exceed the prediction)"
    spread = "/".join("–" if s["spread"] is None else f"{s['spread']:.0%}" for s in (p, n))
    errors = p["errors"] + n["errors"]
    return (f"| {r['stack']} | {r['device']} | {_ms(p['p50_ms'])} ({_ms(p['p99_ms'])}) "
            f"| {_ms(n['p50_ms'])} ({_ms(n['p99_ms'])}) | {_ms(r['framework_floor_ms'])} "
            f"| {ours} | {_ms(r['model_ms'])} | {p['runs']} × {r['duration_s']} s | {spread} "
            f"| {errors} |")  # fmt: skip


def markdown(records: Sequence[dict]) -> list[str]:
    """The report's "Framework floor and our own overhead" section."""
    md = [
        "",
        "## Framework floor and our own overhead",
        "",
        "wrk at one connection, batch 1, on each stack's predict path and on its no-op "
        "twin (the same server, config, port and headers answering a fixed reply the size "
        "of a prediction, without decoding the body or running the model), interleaved. "
        "The served p50 splits into framework floor (the twin's p50) + our code + model "
        "(the in-process batch-1 p50 of the stack's floor path); ms, p99 in brackets. "
        "Spread: (max − min) / median of the runs' p50, predict/no-op: a difference "
        "smaller than that is noise.",
        "",
    ]
    measured = [r for r in records if not r.get("skipped")]
    if measured:
        md += ["| stack | device | predict p50 (p99) | no-op p50 (p99) | framework floor "
               "| our code | model | runs | spread | errors |",
               "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        md += [_row(r) for r in measured]
    for r in measured:
        if r["model_ms"] is None:
            md.append(f"- {r['stack']}/{r['device']}: no model figure, so no split: "
                      f"{r['model_reason']}.")
    for r in records:
        if r.get("skipped"):
            md.append(f"- {r['stack']}/{r['device']}: **not measured**: {r['skipped']}")
    return md
