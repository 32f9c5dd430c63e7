"""What bounded each GPU point, and the report's GPU table and label."""

from __future__ import annotations

import json

import pytest

from loadtests import gpu_report
from loadtests.gpu_report import CPU_BOUND, GPU_BOUND, NEITHER, UNKNOWN, bound_by
from loadtests.report import write_report
from tests.loadtests.test_report import point, saved_run


@pytest.mark.parametrize(
    ("util", "cpu", "cpus", "verdict"),
    [
        (80.0, 100.0, 4, GPU_BOUND),  # the GPU threshold is inclusive
        (99.0, 400.0, 4, GPU_BOUND),  # both busy: the GPU is what a faster card would move
        (79.9, 100.0, 4, NEITHER),
        (30.0, 360.0, 4, CPU_BOUND),  # 90 % of 4 cores, GPU mostly idle
        (30.0, 359.0, 4, NEITHER),
        (49.9, 190.0, 2, CPU_BOUND),
        (50.0, 200.0, 2, NEITHER),  # GPU half busy: neither rule holds
        (30.0, 95.0, 1, CPU_BOUND),
        (30.0, None, 2, NEITHER),  # no server CPU (a pod): the front end is not judged
        (None, 400.0, 4, UNKNOWN),
    ],
)
def test_what_bounded_a_gpu_point(util, cpu, cpus, verdict):
    assert bound_by(util, cpu, cpus) == verdict


def gpu_block(*utils, memory=2048.0, power=250.0, reason=None):
    gpus = [{"index": i, "name": "NVIDIA H100", "util_mean_pct": u, "util_max_pct": u + 5,
             "memory_max_mib": memory + i, "power_mean_w": power, "sm_clock_min_mhz": 1700,
             "sm_clock_max_mhz": 1980, "samples": 20} for i, u in enumerate(utils)]  # fmt: skip
    return {"reason": reason, "gpus": [] if reason else gpus}


def cuda_point(users, util_blocks, cpu, repeat=0):
    return point("flask_torch", "closed", users, 1000, 5, repeat=repeat) | {
        "device": "cuda", "server_cpu_pct": cpu, "gpu": util_blocks}


def test_level_rows_take_the_busiest_gpu_and_the_windows_medians():
    points = [
        cuda_point(1, gpu_block(10.0, 90.0), 100.0, 0),
        cuda_point(1, gpu_block(5.0, 84.0, power=300.0), 110.0, 1),
        cuda_point(1, gpu_block(7.0, 86.0), 120.0, 2),
        cuda_point(16, gpu_block(20.0), 380.0),
        point("flask_torch", "closed", 1, 800, 4),  # a CPU point: not a GPU row
    ]
    rows = gpu_report.level_rows(points, {"server_cpus": 4})
    assert [(r["users"], r["windows"]) for r in rows] == [(1, 3), (16, 1)]
    busy, front = rows
    assert busy["gpu_util_mean_pct"] == 86.0 and busy["gpu_util_max_pct"] == 95.0
    assert busy["gpu_memory_max_mib"] == 2049.0 and busy["gpu_power_mean_w"] == 250.0
    assert busy["server_cpu_pct"] == 110.0 and busy["bound_by"] == GPU_BOUND
    assert front["bound_by"] == CPU_BOUND and front["server_cpus"] == 4


def test_a_level_without_telemetry_says_why():
    (row,) = gpu_report.level_rows(
        [cuda_point(1, gpu_block(reason="NVML: driver is not loaded"), 100.0)],
        {"server_cores": [0, 1]})  # fmt: skip
    assert row["bound_by"] == UNKNOWN and row["server_cpus"] == 2
    assert row["telemetry_missing"] == "NVML: driver is not loaded"
    (old,) = gpu_report.level_rows([cuda_point(1, None, 100.0)], {})
    assert "before GPU telemetry" in old["telemetry_missing"]


def test_cpu_runs_get_no_gpu_section_and_no_label():
    assert gpu_report.section([point("flask_torch", "closed", 1, 800, 4)], {}) == []
    assert gpu_report.header({}) == []


def test_the_report_shows_gpu_figures_and_labels_a_gpu_run(tmp_path):
    run = saved_run(tmp_path)
    env = json.loads((run / "environment.json").read_text())
    env.update(server_cpus=4, gpu_run={
        "label": "NVIDIA H100 80GB HBM3 ×1, driver 570.86.15, CUDA 12.8", "torch": "2.11.0",
        "torch_cuda": "13.0", "server_cpus": 4})  # fmt: skip
    (run / "environment.json").write_text(json.dumps(env))
    with open(run / "points.jsonl", "a") as handle:
        for p in (cuda_point(1, gpu_block(92.0), 150.0), cuda_point(16, gpu_block(30.0), 390.0)):
            handle.write(json.dumps(p) + "\n")
    report = write_report(run).read_text()
    assert "**GPU run** on NVIDIA H100 80GB HBM3 ×1, driver 570.86.15, CUDA 12.8" in report
    assert "## GPU per load level (CUDA points)" in report
    assert "| flask_torch / rest / batch 1 / closed u1 | 1 | 92 (97) | 2048 | 250 | " \
        "1700–1980 | 150 | GPU-bound |" in report
    assert "closed u16 | 1 | 30 (35) |" in report and "| CPU-bound (server front end) |" in report
    summary = json.loads((run / "summary.json").read_text())
    assert [r["bound_by"] for r in summary["gpu_levels"]] == [GPU_BOUND, CPU_BOUND]
