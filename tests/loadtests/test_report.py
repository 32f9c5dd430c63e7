"""The report is rebuilt from saved raw data alone."""

from __future__ import annotations

import json

import pytest

from loadtests.report import write_report

REQUIRED = ("stack", "protocol", "device", "batch_size", "mode", "users", "rate", "rps",
            "p50_ms", "p95_ms", "p99_ms", "max_ms", "requests", "failures",
            "generator_cpu_pct", "server_cpu_pct", "server_rss_mb")  # fmt: skip


def point(stack, mode, users, rps, p99, rate=None, repeat=0, batch=1, saturated=False):
    return {
        "stack": stack, "protocol": "rest", "device": "cpu", "batch_size": batch,
        "mode": mode, "users": users, "rate": rate, "repeat": repeat, "rps": rps,
        "images_per_s": rps * batch, "p50_ms": p99 / 3, "p95_ms": p99 / 1.5, "p99_ms": p99,
        "max_ms": p99 * 2, "requests": int(rps * 8), "failures": 0,
        "generator_cpu_pct": 40.0, "generator_saturated": saturated,
        "server_cpu_pct": 95.0, "server_rss_mb": 300.0,
    }  # fmt: skip


def saved_run(tmp_path):
    points = []
    for stack, scale in (("torchserve", 1.2), ("flask_torch", 1.0)):
        for repeat in range(2):
            for users, rps, p99 in ((1, 400, 4), (4, 1200, 8), (16, 1300, 30)):
                rps_seen = rps * scale + repeat
                points.append(point(stack, "closed", users, rps_seen, p99, repeat=repeat))
            points.append(point(stack, "open", 32, 650 * scale, 12, rate=650 * scale,
                                repeat=repeat))
            points.append(point(stack, "closed", 4, 500, 20, batch=8, repeat=repeat,
                                saturated=stack == "flask_torch"))
    (tmp_path / "points.jsonl").write_text("\n".join(json.dumps(p) for p in points) + "\n")
    (tmp_path / "environment.json").write_text(json.dumps({
        "profile": "quick", "warmup_s": 2, "duration_s": 8, "repeats": 2, "slo_p99_ms": 25,
        "server_cores": [0], "generator_cores": [1], "cpu_model": "test cpu",
        "versions": {"torch": "x"}, "skipped": {"tf_serving": "no binary"},
    }))  # fmt: skip
    (tmp_path / "baselines.json").write_text(json.dumps([
        {"path": "TorchScript", "batch_size": 1, "p50_us": 40.0, "p99_us": 50.0},
        {"path": "Keras eager call", "batch_size": 1, "p50_us": 1500.0, "p99_us": 1600.0},
        {"path": "SavedModel signature", "batch_size": 1, "p50_us": 170.0, "p99_us": 200.0},
    ]))  # fmt: skip
    return tmp_path


def test_report_from_saved_data(tmp_path):
    run = saved_run(tmp_path)
    report = write_report(run).read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert "environment" in summary
    assert len(summary["points"]) == 10  # 2 stacks x 5 levels, repeats merged
    for record in summary["points"]:
        assert all(key in record for key in REQUIRED), record
    heads = {h["target"]: h for h in summary["headline"]}
    # Capacity under the 25 ms objective comes from the open-loop point (780 req/s, p99
    # 12 ms), not from the closed loop's 1440 req/s at 4 users.
    assert heads["torchserve/rest/cpu"]["max_rps_under_slo"] == pytest.approx(780)
    assert heads["torchserve/rest/cpu"]["max_rps_under_slo_mode"] == "open"
    assert heads["flask_torch/rest/cpu"]["knee_users"] == 4
    # p50 at one user is 4/3 ms against a 40 us TorchScript call.
    assert heads["flask_torch/rest/cpu"]["overhead_x_in_process"] == pytest.approx(
        (4 / 3) * 1000 / 40.0
    )
    assert "tf_serving | **skipped**: no binary" in report
    assert "generator saturated" in report
    assert "## Which to choose when" in report
    assert "## CPU vs GPU" not in report  # one device only
    for image in ("latency_vs_throughput.png", "open_loop_latency.png",
                  "in_process_baselines.png", "server_resources.png"):
        data = (run / image).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", image
        assert f"]({image})" in report


def test_gpu_rows_get_their_own_columns(tmp_path):
    run = saved_run(tmp_path)
    gpu = [point("torchserve", "closed", u, r, p) | {"device": "cuda"}
           for u, r, p in ((1, 900, 3), (4, 3000, 5))]
    with open(run / "points.jsonl", "a") as handle:
        handle.write("\n".join(json.dumps(p) for p in gpu) + "\n")
    report = write_report(run).read_text()
    assert "## CPU vs GPU" in report
    assert "| torchserve/rest | cuda | 1.00 | 3000 |" in report


def test_rebuilt_report_recomputes_figures_from_raw_records(tmp_path):
    from loadtests.records import RequestRecorder

    run = saved_run(tmp_path)
    raw = run / "raw"
    recorder = RequestRecorder(raw / "ts.csv")
    for i in range(200):  # 2 ms each, 50 req/s for 4 s; the first 2 s are warm-up
        recorder.on_request("POST", "x", 2.0, 1, context={}, start_time=100.0 + i * 0.02)
    recorder.flush()
    points = [json.loads(line) for line in (run / "points.jsonl").read_text().splitlines()]
    points[0]["raw"] = "ts.csv"  # torchserve, closed, 1 user, repeat 0: stale figures
    (run / "points.jsonl").write_text("\n".join(json.dumps(p) for p in points) + "\n")
    summary_points = json.loads(
        (write_report(run).parent / "summary.json").read_text()
    )["raw_points"]
    refreshed = summary_points[0]
    assert refreshed["p99_ms"] == pytest.approx(2.0)
    assert refreshed["rps"] == pytest.approx(50.0, rel=0.05)


# --- runs of loadtests.sweep: floors, levels with wrk, capacity brackets ------------------

SLO = 50.0
FLOOR_RULE = "A point is generator-bound when ... (rule text from calibration.rule_text())."


def window(stack, users, rps, p50, p99, repeat, protocol="rest", share=0.05, used=0.1,
           bound=False, phase="sweep", mode="closed", rate=None, lateness=0.0):
    """One Locust window as the sweep writes it; drift and neighbours repeat every three."""
    k = repeat % 3
    return point(stack, mode, users, rps, p99, rate=rate, repeat=repeat) | {
        "protocol": protocol, "p50_ms": p50, "phase": phase,
        "generator_share": share, "generator_tail_share": share / 2,
        "generator_ceiling_used": used, "generator_bound": bound,
        "generator_calibrated": True,
        "generator_reason": ("generator floor is 35% of p50 (limit 25%)" if bound
                             else "generator share and ceiling within limits"),
        "lateness_p50_ms": lateness / 2, "lateness_p99_ms": lateness,
        "generator_fell_behind": lateness > 0.1 * SLO, "arrivals": "poisson", "seed": 7,
        "neighbours_cpu_pct": 0.2 + k * 0.3, "generator_processes": 1,
        "neighbours_cpu_by_stack": {"ray_serve": 0.1 + k * 0.2, "torchserve": 0.1 + k * 0.1},
        "drift": {"calibration_before_us": 1000.0 + 50 * k,
                  "calibration_after_us": 1020.0 + 40 * k,
                  "calibration_change": 0.02 - 0.01 * k, "steal_share": 0.001 * k,
                  "drift_interval_s": 11.0},
    }  # fmt: skip


def wrk_result(rps, p50, p90, p99):
    return {"url": "http://127.0.0.1:1/x", "connections": 1, "threads": 1, "duration_s": 5.0,
            "requests": int(rps * 5), "rps": rps, "goodput_rps": rps, "p50_ms": p50,
            "p90_ms": p90, "p99_ms": p99, "max_ms": p99 * 2, "mean_ms": p50,
            "status_errors": 0, "connect_errors": 0, "read_errors": 0, "write_errors": 0,
            "timeouts": 0, "socket_errors": 0, "cores": [1]}  # fmt: skip


def level(stack, users, windows, protocol="rest", stable=True, reason="within ±10%", tool=None,
          skipped=None):
    """A levels.jsonl line; the divergence is computed from the windows' medians, as the
    sweep does (loadtests.wrk.compare_clients)."""
    from statistics import median

    from loadtests.wrk import compare_clients

    divergence = None
    if tool is not None:
        locust = {k: median(w[k] for w in windows) for k in ("rps", "p50_ms")}
        divergence = compare_clients(locust, {"rps": tool["goodput_rps"],
                                              "p50_ms": tool["p50_ms"]}).to_json()
    return {"stack": stack, "protocol": protocol, "device": "cpu", "batch_size": 1,
            "mode": "closed", "users": users, "rate": None, "stable": stable,
            "stability_reason": reason, "windows": len(windows), "wrk": tool,
            "wrk_skipped": skipped, "divergence": divergence}  # fmt: skip


def trial(rate, p99, passed, reason="meets the objective", lateness=0.5, invalid=False):
    figures = {"rate": rate, "p50_ms": p99 / 3, "p99_ms": p99, "rps": rate * 0.99,
               "lateness_p99_ms": lateness, "pool_wait_p99_ms": p99 / 10,
               "generator_share": 0.04, "generator_fell_behind": lateness > 0.1 * SLO}  # fmt: skip
    return {"rate": rate, "p99_ms": p99, "requests": int(rate * 6), "failures": 0,
            "passed": passed, "reason": reason, "invalid": invalid, "figures": figures}


def bracket(target, peak, trials, passing, failing):
    stack, protocol, device = target.split("/")
    by_rate = {t["rate"]: t for t in trials}
    return {"target": target, "stack": stack, "protocol": protocol, "device": device,
            "slo_p99_ms": SLO, "closed_peak_rps": peak, "passing": by_rate[passing],
            "failing": by_rate[failing], "trials": trials, "n_trials": len(trials),
            "precision": 0.05, "precision_reached": True, "width": failing / passing - 1,
            "reason": "capacity within 5%"}  # fmt: skip


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def sweep_run(tmp_path, calibrated=True):
    """A run as loadtests.sweep writes it, with one of each flag:

    - flask_torch at 1 user is generator-bound (share 35%); at 16 users unstable, and wrk
      sees gevent's saturation tail (p90 28, p99 80 ms) that Locust does not;
    - torchserve at 16 users is off wrk by -39% in req/s (flagged);
    - torchserve/grpc has no wrk (gRPC), so its claim is not cross-checked;
    - capacity brackets [1800, 1890) for Flask and [2400, 2520) for TorchServe.
    """
    figures = {  # (stack, protocol, users) -> windows' (rps, p50, p99), generator fields
        ("flask_torch", "rest", 1): ([(1000, 0.60, 4.0), (1050, 0.62, 4.2), (1100, 0.64, 4.4)],
                                     {"share": 0.35, "used": 0.2, "bound": True}),
        ("flask_torch", "rest", 4): ([(2000, 1.9, 5.0), (2050, 2.0, 5.2), (2100, 2.1, 5.4)], {}),
        ("flask_torch", "rest", 16): ([(2300, 7.0, 20), (2700, 6.0, 40), (2100, 8.0, 25)], {}),
        ("torchserve", "rest", 1): ([(140, 6.6, 11), (145, 6.7, 12), (150, 6.8, 13)], {}),
        ("torchserve", "rest", 4): ([(1950, 1.95, 6.0), (2000, 2.0, 6.2), (2150, 2.05, 6.4)],
                                    {}),
        ("torchserve", "rest", 16): ([(2500, 6.2, 9), (2550, 6.3, 9.5), (2600, 6.4, 10)], {}),
        ("torchserve", "grpc", 1): ([(300, 3.0, 5), (310, 3.1, 5.5), (320, 3.2, 6)], {}),
    }  # fmt: skip
    points, windows_of = [], {}
    for (stack, protocol, users), (values, extra) in figures.items():
        windows_of[stack, protocol, users] = [
            window(stack, users, rps, p50, p99, i, protocol=protocol, **extra)
            for i, (rps, p50, p99) in enumerate(values)
        ]
        points += windows_of[stack, protocol, users]
    flask_trials = [
        trial(525, 6, True), trial(3150, 300, False, "p99 300.0 ms > 50 ms"),
        trial(1286, 8, True),
        trial(2012, 40, False, "invalid: the generator fell behind its schedule (send "
              "lateness p99 9.0 ms)", lateness=9.0, invalid=True),
        trial(1608, 10, True), trial(1800, 30, True),
        trial(1890, 62, False, "p99 62.0 ms > 50 ms"),
    ]  # fmt: skip
    torch_trials = [
        trial(650, 7, True), trial(3900, 900, False, "p99 900.0 ms > 50 ms"),
        trial(2400, 35, True), trial(2709, 120, False, "p99 120.0 ms > 50 ms"),
        trial(2520, 70, False, "p99 70.0 ms > 50 ms"),
    ]  # fmt: skip
    for target, trials in (("flask_torch", flask_trials), ("torchserve", torch_trials)):
        points += [window(target, 32, t["rate"], t["p99_ms"] / 3, t["p99_ms"], i,
                          phase="capacity", mode="open", rate=t["rate"],
                          lateness=t["figures"]["lateness_p99_ms"])
                   for i, t in enumerate(trials)]  # fmt: skip
    write_jsonl(tmp_path / "points.jsonl", points)
    write_jsonl(tmp_path / "levels.jsonl", [
        level("flask_torch", 1, windows_of["flask_torch", "rest", 1],
              tool=wrk_result(2200, 0.40, 0.6, 2.9)),
        level("flask_torch", 4, windows_of["flask_torch", "rest", 4],
              tool=wrk_result(2100, 1.95, 3.0, 6.0)),
        level("flask_torch", 16, windows_of["flask_torch", "rest", 16], stable=False,
              reason="unstable after 3 windows: rps spreads ±17% around its median (> ±10%)",
              tool=wrk_result(2450, 6.5, 28.0, 80.0)),
        level("torchserve", 1, windows_of["torchserve", "rest", 1],
              tool=wrk_result(150, 6.5, 8.0, 10.0)),
        level("torchserve", 4, windows_of["torchserve", "rest", 4],
              tool=wrk_result(2050, 1.98, 3.0, 6.5)),
        level("torchserve", 16, windows_of["torchserve", "rest", 16],
              tool=wrk_result(4200, 3.8, 6.0, 8.5)),
        level("torchserve", 1, windows_of["torchserve", "grpc", 1], protocol="grpc",
              skipped="gRPC: wrk speaks HTTP only"),
    ])  # fmt: skip
    write_jsonl(tmp_path / "capacity.jsonl", [
        bracket("flask_torch/rest/cpu", 2050, flask_trials, 1800, 1890),
        bracket("torchserve/rest/cpu", 2550, torch_trials, 2400, 2520),
    ])  # fmt: skip
    if calibrated:
        write_jsonl(tmp_path / "floors.jsonl", [
            {"target": f"{stack}/rest/cpu", "batch_size": 1, "mode": mode, "users": users,
             "rate": rate, "p50_ms": p50, "p99_ms": p50 * 2.5, "rps": rps, "requests": 1000}
            for stack in ("flask_torch", "torchserve")
            for mode, users, rate, p50, rps in (
                ("closed", 1, None, 0.21, 5200.0), ("closed", 4, None, 0.45, 8600.0),
                ("closed", 16, None, 1.5, 9700.0), ("open", 32, 800.0, 0.3, 800.0))
        ])  # fmt: skip
    (tmp_path / "environment.json").write_text(json.dumps({
        "profile": "quick", "warmup_s": 2, "duration_s": 8, "repeats": 3, "slo_p99_ms": SLO,
        "server_cores": [0], "generator_cores": [1], "cpu_model": "test cpu",
        "generator_processes": 1, "generator_note": "one generator core: Locust runs as one "
        "process", "arrivals": {"kind": "poisson", "seed": 7},
        "tools": {"nginx": "nginx version: nginx/1.22.1" if calibrated else
                  "missing: nginx is not installed: run scripts/install_tools.sh",
                  "wrk": "wrk 4.1.0 [epoll] Copyright (C) 2012 Will Glozer"},
        "calibrated": calibrated,
        "calibration_reason": "calibrated against nginx answering each stack's own reply"
        if calibrated else "nginx is missing, so the generator was not calibrated: "
        "nginx is not installed: run scripts/install_tools.sh",
        "generator_rule": FLOOR_RULE, "divergence_limit": 0.15,
        "lateness_share_of_slo": 0.10, "max_error_rate": 0.001,
        "stability": {"min_windows": 3, "max_windows": 4, "tolerance": 0.10,
                      "min_requests": 1000},
        "capacity_search": {"precision": 0.05, "max_trials": 8}, "interleaved": True,
        "neighbour_note": "every stack runs for the whole sweep, idle on the server cores",
        "servers": {"flask_torch/cpu": {"worker_processes": 1, "worker_class": "gevent"},
                    "torchserve/cpu": {"worker_processes": 1}},
        "skipped": {},
    }))  # fmt: skip
    (tmp_path / "baselines.json").write_text(json.dumps([
        {"path": "TorchScript", "batch_size": 1, "p50_us": 40.0, "p99_us": 50.0}]))
    return tmp_path


def section(report, title):
    """The text of one `## title` section of REPORT.md."""
    start = report.index(f"## {title}")
    end = report.find("\n## ", start + 3)
    return report[start:end if end != -1 else None]


def line_with(text, *needles):
    (line,) = [x for x in text.splitlines() if all(n in x for n in needles)]
    return line


def test_environment_shows_the_generator_floor_tools_drift_and_neighbours(tmp_path):
    report = write_report(sweep_run(tmp_path)).read_text()
    env = section(report, "Environment")
    assert "| flask_torch/rest/cpu | 1 | closed | 1 | – | 0.210 | 0.525 | 5200 | 1000 |" in env
    assert "| torchserve/rest/cpu | 1 | open | 32 | 800 | 0.300 | 0.750 | 800 | 1000 |" in env
    assert "Calibrated: calibrated against nginx answering each stack's own reply." in env
    assert f"**Generator-bound rule.** {FLOOR_RULE}" in env
    assert "| generator processes | 1: one generator core: Locust runs as one process |" in env
    assert "| open-loop arrivals | poisson, seed 7 |" in env
    assert "| wrk | wrk 4.1.0" in env and "| nginx | nginx version" in env
    # Drift: the loop took 1000-1100 us over the run (windows 0-2 of every level).
    assert "the loop took 1000–1100 µs, so absolute figures may have drifted by about 10%" in env
    assert "changed by +0% to +2% within a window" in env
    assert "highest CPU steal share was 0.2%" in env
    assert "highest CPU while a point ran: 0.8% of one core" in env
    assert "(median 0.5%). Every stack runs for the whole sweep, idle on the server cores." in env
    # And whose it was, the busiest first.
    assert ("Each idle neighbour, median (highest) % of one core while another stack's point "
            "ran: ray_serve 0.3 (0.5), torchserve 0.2 (0.3).") in env


def test_an_uncalibrated_run_says_so_plainly(tmp_path):
    report = write_report(sweep_run(tmp_path, calibrated=False)).read_text()
    assert ("**UNCALIBRATED: nginx is missing, so the generator was not calibrated: nginx is "
            "not installed: run scripts/install_tools.sh**") in report  # fmt: skip
    assert "Floor table: not measured in this run." in report
    assert "| nginx | **missing: nginx is not installed" in report


def test_a_generator_bound_level_is_flagged_and_never_a_headline_or_claim(tmp_path):
    run = sweep_run(tmp_path)
    report = write_report(run).read_text()
    heads = {h["target"]: h for h in json.loads((run / "summary.json").read_text())["headline"]}
    flask = heads["flask_torch/rest/cpu"]
    # Flask's 1-user level (p50 0.62 ms) is the generator's: the headline starts at 4 users.
    assert flask["lowest_users"] == 4 and flask["p50_ms_1_user"] == pytest.approx(2.0)
    assert "left out: 1 user: generator-bound" in flask["checks"]
    levels = section(report, "Every load level")
    flask_rows = levels[levels.index("### flask_torch / rest / cpu / batch 1 / closed"):]
    assert "| 35% / 20% ⚠ generator-bound |" in line_with(flask_rows, "| 1 | 1050 (1000–1100)")
    assert "| 5% / 10% |" in line_with(flask_rows, "| 4 | 2050 (2000–2100)")
    light = line_with(section(report, "Which to choose when"), "Lowest latency at light load")
    # Locust's figure there carries no claim; wrk's, measured beside it, does, said so.
    assert light.startswith("- **Lowest latency at light load**: flask_torch/rest/cpu (wrk "
                            "0.40 ms ±15% at 1 connection) [by wrk: Locust's figure "
                            "generator-bound")  # fmt: skip
    assert "p50 0.62" not in light


def test_wrk_column_sits_beside_locust_and_marks_divergence(tmp_path):
    report = write_report(sweep_run(tmp_path)).read_text()
    levels = section(report, "Every load level")
    torch_rows = levels[levels.index("### torchserve / rest / cpu / batch 1 / closed"):]
    agreed = line_with(torch_rows, "| 4 | 2000 (1950–2150)")
    assert agreed.endswith("| 2050 | 1.98 / 6.50 | req/s -2%, p50 +1% |")
    diverged = line_with(torch_rows, "| 16 | 2550 (2500–2600)")
    assert diverged.endswith("| 4200 | 3.80 / 8.50 | req/s -39%, p50 +66% ⚠ > 15% |")
    # A flagged level carries no claim on Locust's figure: TorchServe's peak rests on the
    # wrk run beside its 16-user level instead, said so.
    peak = line_with(section(report, "Which to choose when"), "Highest throughput")
    expected = ("- **Highest throughput on this hardware (batch 1, closed loop)**: torchserve/"
                "rest/cpu (wrk 4200 req/s ±15% at 16 connections) [by wrk: Locust's figure "
                "diverges from wrk (req/s differs by -39%")  # fmt: skip
    assert peak.startswith(expected)
    heads = section(report, "Headline")
    assert "peak: ⚠ diverges from wrk" in line_with(heads, "| torchserve/rest/cpu |")


def test_a_skipped_wrk_says_why_and_the_claim_is_not_cross_checked(tmp_path):
    report = write_report(sweep_run(tmp_path)).read_text()
    levels = section(report, "Every load level")
    grpc_rows = levels[levels.index("### torchserve / grpc / cpu / batch 1 / closed"):]
    assert line_with(grpc_rows, "| 1 | 310 (300–320)").endswith(
        "| wrk skipped: gRPC: wrk speaks HTTP only | – | – |")
    light = line_with(section(report, "Which to choose when"), "Lowest latency at light load")
    assert "torchserve/grpc/cpu (p50 3.10 ms, windows 3.00–3.20 at 1 user) [not " \
        "cross-checked with wrk: gRPC: wrk speaks HTTP only]" in light  # fmt: skip
    # Separated ranges rank: both are behind Flask's 0.40 ms (by wrk).
    assert light.index("ahead of") < light.index("torchserve/grpc/cpu")


def test_capacity_bracket_and_headline_capacity_from_it(tmp_path):
    run = sweep_run(tmp_path)
    report = write_report(run).read_text()
    heads = {h["target"]: h for h in json.loads((run / "summary.json").read_text())["headline"]}
    assert heads["torchserve/rest/cpu"]["max_rps_under_slo"] == 2400
    assert heads["torchserve/rest/cpu"]["capacity_failing_rps"] == 2520
    assert heads["torchserve/rest/cpu"]["capacity_source"] == "search"
    assert "| 2400–2520 (bracket) |" in line_with(section(report, "Headline"),
                                                  "| torchserve/rest/cpu |")  # fmt: skip
    capacity = section(report, "SLO capacity")
    row = line_with(capacity, "| flask_torch/rest/cpu | [1800, 1890)")
    assert "| 1800 req/s: p99 30.00, errors 0.00% |" in row
    assert "| 1890 req/s: p99 62.00, errors 0.00%, p99 62.0 ms > 50 ms |" in row
    assert "| reached: width 5.0% (goal 5%) | 7: capacity within 5% |" in row
    behind = line_with(capacity, "| 4 | 2012 |")
    assert "| 9.00 ⚠ generator fell behind |" in behind and "failed: invalid" in behind
    sixth = line_with(capacity, "| 6 | 1800 |")
    assert "| 30.00 | 10800 | 0 | 0.50 | 3.00 | 4% | passed |" in sixth
    # Non-overlapping brackets rank: TorchServe passed 2400, above Flask's failing 1890.
    most = line_with(section(report, "Which to choose when"), "Most capacity")
    assert most.startswith("- **Most capacity under the p99 objective**: torchserve/rest/cpu "
                           "([2400, 2520) req/s), ahead of flask_torch/rest/cpu")  # fmt: skip
    framework = section(report, "Framework x server")
    assert "torchserve: 6.70 ms, 2550 req/s, 2400–2520 (bracket) under objective" in framework


def test_an_unstable_level_is_flagged_and_left_out_of_claims(tmp_path):
    report = write_report(sweep_run(tmp_path)).read_text()
    levels = section(report, "Every load level")
    row = line_with(levels, "| 16 | 2300 (2100–2700)")
    assert "| ⚠ unstable: unstable after 3 windows: rps spreads ±17%" in row
    assert "| yes (3 windows) |" in line_with(levels, "| 4 | 2050 (2000–2100)")
    # Flask's best level is the unstable 16-user one: on wrk's figure (2450 req/s, above
    # its stable 4-user level's 2000-2100), marked as such.
    peak = line_with(section(report, "Which to choose when"), "Highest throughput")
    assert "flask_torch/rest/cpu (wrk 2450 req/s ±15% at 16 connections) [by wrk: Locust's " \
        "figure unstable (unstable after 3 windows: rps spreads ±17%" in peak  # fmt: skip
    assert "2050 req/s, windows 2000–2100" not in peak
    flags = section(report, "Flags")
    assert "- 1 load level(s) unstable" in flags and "- 1 load level(s) generator-bound" in flags
    # Flask at 1 user (generator-bound) and TorchServe at 16 users.
    assert "- 2 load level(s) off wrk beyond the divergence limit" in flags
    assert "- 1 capacity trial(s) where the generator fell behind" in flags


def test_flask_section_shows_the_worker_class_tail_measured_by_wrk(tmp_path):
    flask = section(write_report(sweep_run(tmp_path)).read_text(), "Flask")
    assert "| flask_torch | gevent | 16 users | 2450 | 28.00 | 80.00 | 25.00 |" in flask
    assert "gevent p90 28 ms, p99 80 ms vs sync p99 6.3 ms" in flask
    assert "32 slow clients starved normal requests" in flask
    assert ("flask_torch runs `gevent`, chosen for slow-client protection; its tail under "
            "saturation is the price: in this run wrk measured p90 28.00 ms and p99 80.00 ms "
            "at 16 connections, where Locust read p99 25.00 ms") in flask  # fmt: skip


def test_plots_of_a_sweep_run_are_written(tmp_path):
    run = sweep_run(tmp_path)
    report = write_report(run).read_text()
    for image in ("latency_vs_throughput.png", "open_loop_latency.png"):
        assert (run / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", image
        assert f"]({image})" in report


def test_an_old_run_says_what_it_did_not_measure(tmp_path):
    report = write_report(saved_run(tmp_path)).read_text()
    for what in ("Generator calibration", "Floor table", "Drift", "Neighbours' CPU",
                 "Capacity search", "Worker class",
                 "Stability verdicts and the independent client (wrk)"):
        assert f"{what}: not measured in this run" in report, what
    assert "wrk skipped" not in report  # no wrk column without levels.jsonl


def test_the_worker_class_comparison_names_the_shortest_tail_and_the_default() -> None:
    from loadtests.report import worker_class_comparison

    def run(name, configured, p99):
        return {"stack": "flask_torch", "worker_class": name, "configured": configured,
                "connections": 16, "wrk": {"goodput_rps": 600.0, "p50_ms": 20.0,
                                           "p90_ms": p99 / 2, "p99_ms": p99}}  # fmt: skip

    md = "\n".join(worker_class_comparison(
        [run("gevent", True, 105.0), run("sync", False, 69.0), run("gthread", False, 50.0)]))
    assert "| gevent | yes | 600 |" in md and "| gthread | no |" in md
    assert "The default stays `gevent`" in md and "`gthread` is the choice" in md
    assert worker_class_comparison([]) == []


def test_the_wrk_cell_shows_the_median_run_and_the_range_of_the_runs():
    from loadtests.report import wrk_cells

    runs = [{"goodput_rps": r, "p50_ms": 1.0, "p99_ms": 3.0} for r in (900.0, 1000.0, 1100.0)]
    cells = wrk_cells({"wrk": runs[1], "wrk_runs": runs, "divergence": None})
    assert cells[:2] == ["1000 (900–1100, 3 runs)", "1.00 / 3.00"]
    assert wrk_cells({"wrk": runs[1], "divergence": None})[0] == "1000"


def test_observed_batch_sizes_are_shown_only_where_servers_counted_them():
    from loadtests.report import batches_section

    level = {"stack": "torchserve", "protocol": "rest", "batch_size": 1, "mode": "closed",
             "users": 8, "rate": None, "batch_hist": {"1": 10, "8": 5}, "batch_mean": 50 / 15}
    silent = {**level, "stack": "tf_serving", "batch_hist": None, "batch_mean": None}
    md = "\n".join(batches_section([level, silent]))
    assert "| torchserve/rest | 1 | closed | 8 | 3.33 | 1×10, 8×5 |" in md
    assert "tf_serving/rest |" not in md
    assert batches_section([silent]) == []
    # A server that counts its batches in rows (TF Serving's metrics) shows its ranges.
    rows = {**silent, "batch_rows_hist": {"1": 3, "3-4": 2}, "batch_mean": 11 / 5}
    md = "\n".join(batches_section([rows]))
    assert "| tf_serving/rest | 1 | closed | 8 | 2.20 | 1 rows×3, 3-4 rows×2 |" in md
