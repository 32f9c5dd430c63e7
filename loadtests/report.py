"""Builds summary.json, REPORT.md and the PNG plots of a run from its saved data.

python -m loadtests.report results/<run-id>      # what `make report RUN=...` runs
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from harness.markdown import fmt
from loadtests import analysis
from services.registry import STACK_MODULES, load_stack

SUMMARY_KEYS = (
    "stack", "protocol", "device", "batch_size", "mode", "users", "rate", "rps",
    "images_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms", "requests", "failures",
    "generator_cpu_pct", "generator_saturated", "server_cpu_pct", "server_rss_mb",
    "repeats", "rps_min", "rps_max", "p99_ms_min", "p99_ms_max", "server_p50_ms",
    "server_queue_ms", "server_total_ms", "server_runtime_ms",
)  # fmt: skip


def load_run(run_dir: Path) -> tuple[dict, list[dict], list[dict]]:
    env = json.loads((run_dir / "environment.json").read_text())
    points_file = run_dir / "points.jsonl"
    points = [json.loads(line) for line in points_file.read_text().splitlines() if line.strip()]
    baselines_file = run_dir / "baselines.json"
    baselines = json.loads(baselines_file.read_text()) if baselines_file.exists() else []
    for point in points:
        refresh_from_raw(point, run_dir / "raw", float(env.get("warmup_s", 0.0)))
    return env, points, baselines


def refresh_from_raw(point: dict, raw_dir: Path, warmup_s: float) -> None:
    """Recomputes a point's latency and throughput from its per-request records, when
    they were kept, so a report rebuilt later uses the current analysis."""
    raw = raw_dir / point.get("raw", "")
    if point.get("raw") and raw.is_file():
        records = analysis.read_records([raw])
        point.update(analysis.point_stats(records, warmup_s, point["batch_size"]))


def aggregate(points: list[dict]) -> list[dict]:
    """One record per (stack, protocol, device, batch, mode, level), repeats merged."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for point in points:
        key = (
            point["stack"],
            point["protocol"],
            point.get("device", "cpu"),
            point["batch_size"],
            point["mode"],
            point.get("users"),
            point.get("rate"),
        )
        groups[key].append(point)
    merged = []
    for group in groups.values():
        record = analysis.aggregate_repeats(group)
        for key in ("server_queue_ms", "server_total_ms", "server_runtime_ms", "server_p50_ms"):
            values = sorted(p[key] for p in group if p.get(key) is not None)
            record[key] = values[len(values) // 2] if values else None
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


def series(records: list[dict], mode: str, batch: int) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r["mode"] == mode and r["batch_size"] == batch:
            out[f"{r['stack']}/{r['protocol']}/{r['device']}"].append(r)
    return out


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


def headline(records: list[dict], baselines: list[dict], slo_ms: float,
             env: dict | None = None) -> list[dict]:
    rows = []
    for name, curve in series(records, "closed", 1).items():
        stack, protocol, device = name.split("/")
        curve = sorted(curve, key=lambda r: r["users"])
        knee_index = analysis.knee([r["users"] for r in curve], [r["rps"] for r in curve])
        mine = [r for r in records if r["stack"] == stack and r["protocol"] == protocol
                and r["device"] == device and r["batch_size"] == 1]  # fmt: skip
        # Capacity under the objective comes from open-loop points where the run has them:
        # a closed loop slows its clients down with the server and flatters the tail.
        opened = [r for r in mine if r["mode"] == "open"]
        best = analysis.max_rps_under_slo(opened or mine, slo_ms)
        single = curve[0]
        path = floor_path(env or {}, stack)
        floor = floor_us(baselines, path, 1)
        rows.append({
            "target": name,
            "p50_ms_1_user": single["p50_ms"],
            "p99_ms_1_user": single["p99_ms"],
            "peak_rps": max(r["rps"] for r in curve),
            "knee_users": curve[knee_index]["users"] if knee_index is not None else None,
            "knee_rps": curve[knee_index]["rps"] if knee_index is not None else None,
            "max_rps_under_slo": best["rps"] if best else None,
            "max_rps_under_slo_mode": best["mode"] if best else None,
            "overhead_x_in_process": (single["p50_ms"] * 1000 / floor) if floor else None,
            "floor_path": path,
            "floor_p50_us": floor,
        })  # fmt: skip
    return rows


def plot_curves(records: list[dict], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    closed = series(records, "closed", 1)
    if closed:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
        for name, curve in sorted(closed.items()):
            curve = sorted(curve, key=lambda r: r["users"])
            x = [r["rps"] for r in curve]
            for axis, key in zip(axes, ("p50_ms", "p99_ms"), strict=True):
                axis.plot(x, [r[key] for r in curve], marker="o", label=name)
                for r in curve:
                    axis.annotate(
                        f"{r['users']}u",
                        (r["rps"], r[key]),
                        fontsize=7,
                        textcoords="offset points",
                        xytext=(3, 3),
                    )
        for axis, key in zip(axes, ("p50", "p99"), strict=True):
            axis.set_xlabel("throughput (requests/s)")
            axis.set_ylabel(f"{key} latency (ms)")
            axis.set_title(f"Closed loop, batch 1: {key} vs throughput (labels: users)")
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "latency_vs_throughput.png", dpi=110)
        plt.close(fig)
        written.append("latency_vs_throughput.png")
    opened = series(records, "open", 1)
    if opened:
        fig, axis = plt.subplots(figsize=(7, 4.8))
        for name, curve in sorted(opened.items()):
            curve = sorted(curve, key=lambda r: r["rate"])
            (line,) = axis.plot(
                [r["rate"] for r in curve],
                [r["p99_ms"] for r in curve],
                marker="o",
                label=f"{name} p99",
            )
            axis.plot(
                [r["rate"] for r in curve],
                [r["p50_ms"] for r in curve],
                marker=".",
                linestyle="--",
                color=line.get_color(),
                label=f"{name} p50",
            )
        axis.set_xlabel("offered rate (requests/s)")
        axis.set_ylabel("latency from scheduled start (ms)")
        axis.set_yscale("log")
        axis.set_title("Open loop, batch 1: latency vs offered rate")
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "open_loop_latency.png", dpi=110)
        plt.close(fig)
        written.append("open_loop_latency.png")
    return written


def plot_baselines(baselines: list[dict], out: Path) -> list[str]:
    if not baselines:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    paths = list(dict.fromkeys(row["path"] for row in baselines))
    batches = sorted({row["batch_size"] for row in baselines})
    fig, axis = plt.subplots(figsize=(10, 4.8))
    width = 0.8 / len(batches)
    for i, batch in enumerate(batches):
        values = [
            next((r["p50_us"] for r in baselines if r["path"] == p and r["batch_size"] == batch), 0)
            for p in paths
        ]
        bars = axis.bar(np.arange(len(paths)) + i * width, values, width, label=f"batch {batch}")
        axis.bar_label(bars, fmt="%.0f", fontsize=7)
    axis.set_xticks(np.arange(len(paths)) + width * (len(batches) - 1) / 2)
    axis.set_xticklabels(paths, rotation=20, ha="right", fontsize=8)
    axis.set_yscale("log")
    axis.set_ylabel("p50 per call (µs, log)")
    axis.set_title("In-process inference, one thread: the floor under every server")
    axis.grid(alpha=0.3, axis="y", which="both")
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "in_process_baselines.png", dpi=110)
    plt.close(fig)
    return ["in_process_baselines.png"]


def plot_resources(records: list[dict], out: Path) -> list[str]:
    closed = series(records, "closed", 1)
    if not closed:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for name, curve in sorted(closed.items()):
        curve = sorted(curve, key=lambda r: r["users"])
        x = [r["rps"] for r in curve]
        axes[0].plot(x, [r["server_cpu_pct"] for r in curve], marker="o", label=name)
        axes[1].plot(x, [r["server_rss_mb"] for r in curve], marker="o", label=name)
    axes[0].set_ylabel("server CPU (% of one core)")
    axes[1].set_ylabel("server resident memory (MiB, all processes)")
    for axis in axes:
        axis.set_xlabel("throughput (requests/s)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    fig.suptitle("Server resources, closed loop, batch 1")
    fig.tight_layout()
    fig.savefig(out / "server_resources.png", dpi=110)
    plt.close(fig)
    return ["server_resources.png"]


def level_table(rows: list[dict], level_key: str) -> list[str]:
    lines = [
        f"| {level_key} | req/s (min–max) | images/s | p50 ms | p95 ms | p99 ms (min–max) "
        "| max ms | requests | failures | gen CPU % | server CPU % | server RSS MiB |",
        "|" + " --- |" * 12,
    ]
    for r in rows:
        flag = " ⚠ generator saturated" if r["generator_saturated"] else ""
        lines.append(
            f"| {fmt(r[level_key], 0)}{flag} | {fmt(r['rps'], 0)} ({fmt(r['rps_min'], 0)}–"
            f"{fmt(r['rps_max'], 0)}) | {fmt(r['images_per_s'], 0)} | {fmt(r['p50_ms'])} | "
            f"{fmt(r['p95_ms'])} | {fmt(r['p99_ms'])} ({fmt(r['p99_ms_min'])}–"
            f"{fmt(r['p99_ms_max'])}) | {fmt(r['max_ms'])} | {r['requests']} | "
            f"{r['failures']} | {fmt(r['generator_cpu_pct'], 0)} | "
            f"{fmt(r['server_cpu_pct'], 0)} | {fmt(r['server_rss_mb'], 0)} |"
        )
    return lines


def choose_when(heads: list[dict], records: list[dict], baselines: list[dict]) -> list[str]:
    """Plain sentences drawn from the figures, not from opinion."""
    lines = []
    if not heads:
        return ["No closed-loop data: nothing to recommend."]
    by_p50 = min(heads, key=lambda h: h["p50_ms_1_user"])
    by_peak = max(heads, key=lambda h: h["peak_rps"])
    lines.append(
        f"- **Lowest latency at light load**: {by_p50['target']} "
        f"(p50 {by_p50['p50_ms_1_user']:.2f} ms at the lowest load level)."
    )
    lines.append(
        f"- **Highest throughput on this hardware**: {by_peak['target']} "
        f"({by_peak['peak_rps']:.0f} req/s at batch 1, closed loop)."
    )
    slo = [h for h in heads if h["max_rps_under_slo"]]
    if slo:
        best = max(slo, key=lambda h: h["max_rps_under_slo"])
        lines.append(
            f"- **Most capacity under the p99 objective**: {best['target']} "
            f"({best['max_rps_under_slo']:.0f} req/s with p99 within the objective, "
            f"{best['max_rps_under_slo_mode']} loop)."
        )
    for h in heads:
        if h["overhead_x_in_process"]:
            lines.append(
                f"- {h['target']}: served p50 is {h['overhead_x_in_process']:.0f}x the "
                f"in-process {h['floor_path']} call ({h['floor_p50_us']:.0f} µs), so its "
                "latency is HTTP, serialisation and queueing, not the model."
            )
    for name, curve in sorted(series(records, "closed", 1).items()):
        low = min(curve, key=lambda r: r["users"])
        queue = low.get("server_queue_ms")
        if queue and low["p50_ms"] and queue > 0.4 * low["p50_ms"]:
            lines.append(
                f"- {name}: at {low['users']} user(s), {queue:.1f} of its {low['p50_ms']:.1f} ms"
                " p50 is queueing in the server (waiting for the dynamic batch to fill): "
                "for latency-bound, low-concurrency traffic lower maxBatchDelay/batchSize."
            )
    closed = series(records, "closed", 1)
    for name, curve in sorted(series(records, "open", 1).items()):
        top = max(curve, key=lambda r: r["rate"] or 0)
        peak = max(closed.get(name, []), key=lambda r: r["rps"], default=None)
        if peak and top["p99_ms"] and peak["p99_ms"]:
            lines.append(
                f"- {name} under open-loop arrivals at {top['rate']:.0f} req/s (near its "
                f"closed-loop peak): p99 {top['p99_ms']:.1f} ms, against {peak['p99_ms']:.1f} ms "
                "in the closed loop at peak. Closed loops hide queueing; size for the open-loop "
                "figure when traffic does not slow down for the server."
            )
    batch8 = series(records, "closed", 8)
    for name, curve in sorted(batch8.items()):
        top = max(curve, key=lambda r: r["images_per_s"] or 0)
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


def write_report(run_dir: Path, extra_sections: list[str] | None = None) -> Path:
    """Writes summary.json, REPORT.md and the plots into `run_dir`; returns REPORT.md.

    Args:
        extra_sections: Markdown lines appended to the report (tools.report adds the
            reliability runs' sections this way, so loadtests never imports reliability).
    """
    env, points, baselines = load_run(run_dir)
    records = aggregate(points)
    slo = float(env.get("slo_p99_ms", 50.0))
    heads = headline(records, baselines, slo, env)
    summary = {"environment": env, "slo_p99_ms": slo, "headline": heads,
               "points": records, "baselines": baselines, "raw_points": points}  # fmt: skip
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    images = plot_curves(records, run_dir) + plot_baselines(baselines, run_dir)
    images += plot_resources(records, run_dir)

    md = [f"# Serving comparison: {run_dir.name}", ""]
    md += [
        f"Profile `{env.get('profile')}`: each point runs {env.get('warmup_s')} s of warm-up "
        f"(discarded) then {env.get('duration_s')} s measured, repeated "
        f"{env.get('repeats')} times; tables show the median of the repeats with the "
        "min–max spread. Percentiles come from every request's own latency, not from "
        "Locust's rounded percentiles. Every reply is checked against the answer key (a "
        "wrong class or logits off by >1e-4 is a failure).",
        "",
        "- **closed** loop: N users each send the next request when the last returns "
        "(throughput is what the server allows).",
        "- **open** loop: requests are scheduled at a fixed rate (a fraction of the "
        "stack's closed-loop peak); latency counts from the scheduled start, so queueing "
        "behind a slow request is not hidden (no coordinated omission).",
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
    for name, version in env.get("versions", {}).items():
        md.append(f"| {name} | {version} |")
    for stack, settings in env.get("servers", {}).items():
        md.append(f"| {stack} server | {settings} |")
    for stack, reason in env.get("skipped", {}).items():
        md.append(f"| {stack} | **skipped**: {reason} |")
    md += ["", "## Headline (closed loop, batch 1)", ""]
    md += [
        "| stack/protocol/device | p50 ms, lowest load | p99 ms, lowest load | peak req/s | knee "
        f"(users, req/s) | max req/s with p99 ≤ {slo:g} ms | p50 vs in-process floor |",
        "|" + " --- |" * 7,
    ]
    for h in heads:
        overhead = (
            (f"{h['overhead_x_in_process']:.0f}x {h['floor_path']} ({h['floor_p50_us']:.0f} µs)")
            if h["overhead_x_in_process"]
            else "–"
        )
        knee = f"{h['knee_users']}, {h['knee_rps']:.0f}" if h["knee_users"] else "not reached"
        md.append(
            f"| {h['target']} | {fmt(h['p50_ms_1_user'])} | {fmt(h['p99_ms_1_user'])} | "
            f"{fmt(h['peak_rps'], 0)} | {knee} | {fmt(h['max_rps_under_slo'], 0)} "
            f"({h['max_rps_under_slo_mode'] or '–'}) | {overhead} |"
        )
    md += framework_by_server(heads, env)
    md += device_comparison(heads)
    md += ["", "## Which to choose when", ""] + choose_when(heads, records, baselines)
    for image in images:
        md += ["", f"![{image}]({image})"]
    md += ["", "## Every load level", ""]
    for (stack, protocol, device, batch, mode), rows in group_rows(records).items():
        md += [f"### {stack} / {protocol} / {device} / batch {batch} / {mode} loop", ""]
        md += level_table(rows, "users" if mode == "closed" else "rate")
        md.append("")
    md += server_view(records)
    md += ["## In-process baselines (one thread, server cores)", ""]
    md += ["| path | batch | p50 µs | p99 µs |", "| --- | --- | --- | --- |"]
    for row in baselines:
        md.append(
            f"| {row['path']} | {row['batch_size']} | {row['p50_us']:.1f} | {row['p99_us']:.1f} |"
        )
    saturated = [r for r in records if r["generator_saturated"]]
    md += ["", "## Flags", ""]
    md.append(
        f"- {len(saturated)} load level(s) had a saturated load generator "
        "(marked ⚠ above; their latency includes the generator's own queueing)."
        if saturated
        else "- No point saturated the load generator."
    )
    failures = sum(r["failures"] or 0 for r in records)
    md.append(f"- Failed requests over the whole run: {failures}.")
    devices = {r["device"] for r in records}
    if devices == {"cpu"}:
        md.append("- CPU only: no GPU rows (run `make bench` on a GPU machine to add them).")
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
        "Each cell: the stack, p50 at the lowest load, peak req/s (closed loop) and max req/s "
        "within the p99 objective. Down a column the server is the same and the framework "
        "changes; along a row the framework is the same and the server changes.",
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
                f"{fmt(h['max_rps_under_slo'], 0)} under objective"
                if h else "– (not run here)"
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
