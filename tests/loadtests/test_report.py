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
