"""The report's PNG plots (matplotlib, Agg): what a reader needs to trust a curve.

Latency plots carry the p99 objective as a line, the min-max spread of the windows as a
band, the generator's own floor (against the null server) as a dashed curve, and wrk's
points beside Locust's. Each function takes the report's records, writes its PNG into
`out` and returns the file names it wrote (none where the run has no such data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from loadtests.analysis import series

OBJECTIVE_STYLE = {"color": "red", "linestyle": ":", "linewidth": 1.2}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _log_y(axis) -> None:
    """A log y axis labelled in plain numbers (1, 2, 5, 10 ...), not powers of ten."""
    from matplotlib.ticker import FuncFormatter

    axis.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    some = FuncFormatter(lambda value, _: f"{value:g}" if f"{value:.0e}"[0] in "25" else "")
    axis.yaxis.set_major_formatter(plain)
    axis.yaxis.set_minor_formatter(some)


def _figure(record: Mapping, key: str, fallback: str) -> float:
    """record[key], else record[fallback], as a float (NaN where neither is known)."""
    value = record.get(key)
    if value is None:
        value = record.get(fallback)
    return float("nan") if value is None else float(value)


def _closed_floors(floors: Sequence[Mapping], target: str) -> dict[int, Mapping]:
    return {
        int(f["users"]): f
        for f in floors
        if f.get("target") == target and f.get("mode") == "closed" and f.get("batch_size") == 1
    }


def plot_curves(
    records: Sequence[Mapping],
    out: Path,
    slo_ms: float | None = None,
    floors: Sequence[Mapping] = (),
    capacity: Sequence[Mapping] = (),
) -> list[str]:
    """Closed loop: p50 and p99 vs throughput per target; open loop: p99 vs offered rate.

    Args:
        records: the report's level records (wrk, when measured, under "wrk").
        out: the run folder.
        slo_ms: the p99 objective, drawn as a horizontal line.
        floors: floors.jsonl lines; closed batch-1 floors are drawn at the throughput of
            the level with the same users (the floor is a function of concurrency).
        capacity: capacity.jsonl lines; their trials make the open-loop plot. Without
            them, the open-loop levels of older runs do.

    Returns:
        The PNG names written.
    """
    written = []
    closed = series(records, "closed", 1)
    if closed:
        written.append(_plot_closed(closed, out, slo_ms, floors))
    if any(c.get("trials") for c in capacity):
        written.append(_plot_capacity(capacity, out, slo_ms))
    else:
        opened = series(records, "open", 1)
        if opened:
            written.append(_plot_open_levels(opened, out, slo_ms))
    return written


def _plot_closed(closed: dict, out: Path, slo_ms: float | None, floors: Sequence[Mapping]) -> str:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    bound_marked = False
    for name, curve in sorted(closed.items()):
        curve = sorted(curve, key=lambda r: r["users"])
        x = [r["rps"] for r in curve]
        floor_by_users = _closed_floors(floors, name)
        for axis, key in zip(axes, ("p50_ms", "p99_ms"), strict=True):
            y = [r[key] for r in curve]
            (line,) = axis.plot(x, y, marker="o", label=f"{name} Locust")
            color = line.get_color()
            low = [_figure(r, f"{key}_min", key) for r in curve]
            high = [_figure(r, f"{key}_max", key) for r in curve]
            if any(lo != hi for lo, hi in zip(low, high, strict=True)):
                axis.fill_between(x, low, high, color=color, alpha=0.18, linewidth=0)
            for r in curve:
                axis.annotate(f"{r['users']}u", (r["rps"], r[key]), fontsize=7,
                              textcoords="offset points", xytext=(3, 3))  # fmt: skip
            bound = [r for r in curve if r.get("generator_bound")]
            if bound:
                axis.scatter([r["rps"] for r in bound], [r[key] for r in bound], s=110,
                             facecolors="none", edgecolors="black", zorder=3,
                             label=None if bound_marked else "generator-bound level")  # fmt: skip
            under = [(r["rps"], floor_by_users[r["users"]][key]) for r in curve
                     if r["users"] in floor_by_users]  # fmt: skip
            if under:
                axis.plot(*zip(*under, strict=True), linestyle="--", color=color, alpha=0.8,
                          label=f"{name} generator floor (null server)")  # fmt: skip
            checked = [r for r in curve if r.get("wrk")]
            if checked:
                axis.scatter([r["wrk"].get("goodput_rps", r["wrk"].get("rps")) for r in checked],
                             [r["wrk"][key] for r in checked], marker="x", s=50, color=color,
                             label=f"{name} wrk")  # fmt: skip
        bound_marked = bound_marked or any(r.get("generator_bound") for r in curve)
    if slo_ms is not None:
        axes[1].axhline(slo_ms, label=f"p99 objective {slo_ms:g} ms", **OBJECTIVE_STYLE)
    for axis, key in zip(axes, ("p50", "p99"), strict=True):
        axis.set_xlabel("throughput (requests/s)")
        axis.set_ylabel(f"{key} latency (ms, log)")
        _log_y(axis)
        axis.set_title(f"Closed loop, batch 1: {key} vs throughput (labels: users)", fontsize=10)
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=7)
    fig.text(0.01, 0.005, "band: min-max over the windows; dashed: the generator alone "
             "against the null server at the same users; x: wrk at the same connections",
             fontsize=7)  # fmt: skip
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out / "latency_vs_throughput.png", dpi=110)
    plt.close(fig)
    return "latency_vs_throughput.png"


def _plot_capacity(capacity: Sequence[Mapping], out: Path, slo_ms: float | None) -> str:
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(8, 5))
    behind_marked = False
    for row in sorted(capacity, key=lambda c: c["target"]):
        trials = sorted((t for t in row.get("trials", []) if t.get("p99_ms") is not None),
                        key=lambda t: t["rate"])  # fmt: skip
        if not trials:
            continue
        (line,) = axis.plot([t["rate"] for t in trials], [t["p99_ms"] for t in trials],
                            linestyle="-", alpha=0.5, label=f"{row['target']} p99")  # fmt: skip
        color = line.get_color()
        passed = [t for t in trials if t.get("passed")]
        failed = [t for t in trials if not t.get("passed")]
        axis.scatter([t["rate"] for t in passed], [t["p99_ms"] for t in passed], color=color,
                     marker="o", zorder=3)  # fmt: skip
        axis.scatter([t["rate"] for t in failed], [t["p99_ms"] for t in failed],
                     facecolors="none", edgecolors=color, marker="o", zorder=3)  # fmt: skip
        behind = [t for t in trials if (t.get("figures") or {}).get("generator_fell_behind")]
        if behind:
            axis.scatter([t["rate"] for t in behind], [t["p99_ms"] for t in behind],
                         marker="v", color="black", zorder=4,
                         label=None if behind_marked else "generator fell behind")  # fmt: skip
            behind_marked = True
        passing, failing = row.get("passing"), row.get("failing")
        if passing and failing:
            axis.axvspan(passing["rate"], failing["rate"], color=color, alpha=0.12)
    return _finish_open_plot(plt, fig, axis, out, slo_ms, "p99 from scheduled start (ms, log)",
                             "Open loop, batch 1: SLO capacity search (filled: passed; "
                             "shaded: the bracket)")  # fmt: skip


def _finish_open_plot(plt, fig, axis, out: Path, slo_ms: float | None, ylabel: str,
                      title: str) -> str:
    """The objective line, axes, legend and file of an open-loop plot."""
    if slo_ms is not None:
        axis.axhline(slo_ms, label=f"p99 objective {slo_ms:g} ms", **OBJECTIVE_STYLE)
    axis.set_xlabel("offered rate (requests/s)")
    axis.set_ylabel(ylabel)
    _log_y(axis)
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "open_loop_latency.png", dpi=110)
    plt.close(fig)
    return "open_loop_latency.png"


def _plot_open_levels(opened: dict, out: Path, slo_ms: float | None) -> str:
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(7, 4.8))
    for name, curve in sorted(opened.items()):
        curve = sorted(curve, key=lambda r: r["rate"])
        rates = [r["rate"] for r in curve]
        (line,) = axis.plot(rates, [r["p99_ms"] for r in curve], marker="o", label=f"{name} p99")
        axis.plot(rates, [r["p50_ms"] for r in curve], marker=".", linestyle="--",
                  color=line.get_color(), label=f"{name} p50")  # fmt: skip
    return _finish_open_plot(plt, fig, axis, out, slo_ms, "latency from scheduled start (ms)",
                             "Open loop, batch 1: latency vs offered rate")


def plot_baselines(baselines: Sequence[Mapping], out: Path) -> list[str]:
    """In-process p50 per path and batch: the floor under every server."""
    if not baselines:
        return []
    import numpy as np

    plt = _pyplot()
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
    _log_y(axis)
    axis.set_ylabel("p50 per call (µs, log)")
    axis.set_title("In-process inference, one thread: the floor under every server")
    axis.grid(alpha=0.3, axis="y", which="both")
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "in_process_baselines.png", dpi=110)
    plt.close(fig)
    return ["in_process_baselines.png"]


def plot_resources(records: Sequence[Mapping], out: Path) -> list[str]:
    """Server CPU and resident memory vs throughput, closed loop, batch 1."""
    closed = series(records, "closed", 1)
    if not closed:
        return []
    plt = _pyplot()
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
