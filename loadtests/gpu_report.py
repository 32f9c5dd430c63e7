"""The report's GPU parts: the run's card label, and per CUDA load level the GPU's own
counters beside the server's CPU, with what bounded the level.

A GPU server with few CPUs measures its JSON front end, not the GPU: a level at 30 % GPU
utilization whose server uses every core it was given is CPU-bound, and a faster GPU would
not move it. The rule below says which of the two ran out, from figures each point
recorded (loadtests.gpu_telemetry's summary and the server's CPU).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence

from harness.markdown import fmt

# The rule: GPU-bound from this utilization up (NVML's figure is the share of time a kernel
# ran, so 100 % can still leave SMs idle, and 80 % means the GPU is rarely waiting) ...
GPU_BOUND_UTIL_PCT = 80.0
# ... CPU-bound when the server uses this share of its cores while the GPU idles more
# than half the time ...
FRONT_END_CPU_SHARE = 0.90
GPU_IDLE_UTIL_PCT = 50.0
GPU_BOUND = "GPU-bound"
CPU_BOUND = "CPU-bound (server front end)"
NEITHER = "neither saturated"
UNKNOWN = "unknown (no GPU telemetry)"
# What identifies a CUDA load level (the device is always cuda here).
LEVEL_FIELDS = ("stack", "protocol", "batch_size", "mode", "users", "rate")


def bound_by(gpu_util_pct: float | None, server_cpu_pct: float | None, server_cpus: int) -> str:
    """What bounded a GPU point: the GPU, the server's CPU front end, or neither.

    Args:
        gpu_util_pct: the busiest visible GPU's mean utilization over the point (NVML).
        server_cpu_pct: the server's process tree's mean CPU (100 = one core).
        server_cpus: the cores the server was given.

    Returns:
        GPU_BOUND, CPU_BOUND, NEITHER, or UNKNOWN without GPU telemetry.
    """
    if gpu_util_pct is None:
        return UNKNOWN
    if gpu_util_pct >= GPU_BOUND_UTIL_PCT:
        return GPU_BOUND
    if (server_cpu_pct is not None and gpu_util_pct < GPU_IDLE_UTIL_PCT
            and server_cpu_pct >= FRONT_END_CPU_SHARE * 100.0 * max(1, server_cpus)):
        return CPU_BOUND
    return NEITHER


def rule_text() -> str:
    return (f"{GPU_BOUND} when the busiest GPU's mean utilization is ≥ "
            f"{GPU_BOUND_UTIL_PCT:.0f} %; {CPU_BOUND} when the server's CPU is ≥ "
            f"{FRONT_END_CPU_SHARE:.0%} of its cores and the GPU's utilization < "
            f"{GPU_IDLE_UTIL_PCT:.0f} %; otherwise {NEITHER}")  # fmt: skip


def server_cpus(env: dict) -> int:
    """The cores each server was given: the GPU run's parameter, else the server cores."""
    return int(env.get("server_cpus") or len(env.get("server_cores") or []) or 1)


def busiest(gpu: dict | None, key: str) -> float | None:
    """`key` of the GPU with the highest mean utilization in a point's GPU block: with
    several visible GPUs, the one the server used."""
    gpus = [g for g in (gpu or {}).get("gpus", []) if g.get("util_mean_pct") is not None]
    if not gpus:
        return None
    return max(gpus, key=lambda g: g["util_mean_pct"]).get(key)


def over_windows(group: Sequence[dict], key: str, pick: Callable[[list[float]], float]
                 ) -> float | None:
    """`pick` (median, min or max) of the busiest GPU's `key` over a level's windows."""
    values = [v for v in (busiest(p.get("gpu"), key) for p in group) if v is not None]
    return pick(values) if values else None


def level_rows(points: Sequence[dict], env: dict) -> list[dict]:
    """One row per CUDA load level: the windows' medians (extremes for peaks and clocks)
    of the GPU's counters and the server's CPU, and what bounded the level."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for point in points:
        if point.get("device") == "cuda":
            groups[tuple(point.get(k) for k in LEVEL_FIELDS)].append(point)
    cpus = server_cpus(env)
    rows = []
    for key, group in groups.items():
        util = over_windows(group, "util_mean_pct", statistics.median)
        cpus_used = [p["server_cpu_pct"] for p in group if p.get("server_cpu_pct") is not None]
        cpu = statistics.median(cpus_used) if cpus_used else None
        reasons = sorted({p["gpu"]["reason"] for p in group
                          if p.get("gpu") and p["gpu"].get("reason")})  # fmt: skip
        if not any(p.get("gpu") for p in group):
            reasons = ["no GPU block in points.jsonl (a run made before GPU telemetry)"]
        rows.append({
            **dict(zip(LEVEL_FIELDS, key, strict=True)),
            "windows": len(group),
            "gpu_util_mean_pct": util,
            "gpu_util_max_pct": over_windows(group, "util_max_pct", max),
            "gpu_memory_max_mib": over_windows(group, "memory_max_mib", max),
            "gpu_power_mean_w": over_windows(group, "power_mean_w", statistics.median),
            "sm_clock_min_mhz": over_windows(group, "sm_clock_min_mhz", min),
            "sm_clock_max_mhz": over_windows(group, "sm_clock_max_mhz", max),
            "server_cpu_pct": cpu,
            "server_cpus": cpus,
            "bound_by": bound_by(util, cpu, cpus),
            "telemetry_missing": "; ".join(reasons) or None,
        })  # fmt: skip
    return sorted(rows, key=lambda r: (r["stack"], r["protocol"], r["batch_size"], r["mode"],
                                       r["users"] or 0, r["rate"] or 0))  # fmt: skip


def header(env: dict) -> list[str]:
    """The line under the report's title that labels a GPU run (gpu_run in
    environment.json, written by loadtests.gpu_bench); [] for other runs."""
    run = env.get("gpu_run")
    if not run:
        return []
    return ["", f"**GPU run** on {run.get('label')}; torch {run.get('torch')} built for CUDA "
            f"{run.get('torch_cuda')}; {run.get('server_cpus')} CPU cores per GPU server."]


def section(points: Sequence[dict], env: dict) -> list[str]:
    """Markdown: the GPU per CUDA load level, or [] when the run has no CUDA point."""
    rows = level_rows(points, env)
    if not rows:
        return []
    cpus = server_cpus(env)
    md = ["", "## GPU per load level (CUDA points)", "",
          "NVML sampled every GPU visible to the servers while each window ran "
          "(loadtests.gpu_telemetry); figures are the windows' medians, peaks their maxima. "
          f"Bounded by: {rule_text()}.", "",
          "| level | windows | GPU util % mean (max) | GPU memory MiB max | power W mean | "
          f"SM clock MHz | server CPU % (of {cpus} cores) | bounded by |",
          "|" + " --- |" * 8]  # fmt: skip
    for r in rows:
        level = (f"{r['stack']} / {r['protocol']} / batch {r['batch_size']} / {r['mode']} "
                 + (f"u{r['users']}" if r["mode"] == "closed" else f"r{fmt(r['rate'], 0)}"))
        if r["gpu_util_mean_pct"] is None:
            util = f"no telemetry: {r['telemetry_missing'] or 'no sample'}"
        else:
            util = f"{fmt(r['gpu_util_mean_pct'], 0)} ({fmt(r['gpu_util_max_pct'], 0)})"
        md.append(f"| {level} | {r['windows']} | {util} | {fmt(r['gpu_memory_max_mib'], 0)} | "
                  f"{fmt(r['gpu_power_mean_w'], 0)} | {fmt(r['sm_clock_min_mhz'], 0)}–"
                  f"{fmt(r['sm_clock_max_mhz'], 0)} | {fmt(r['server_cpu_pct'], 0)} | "
                  f"{r['bound_by']} |")  # fmt: skip
    return md
